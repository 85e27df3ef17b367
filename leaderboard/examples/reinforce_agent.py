"""An example agent submission: REINFORCE with the KL in the reward, in ~30 lines of the public protocol.

Policy class: log π_w(k|x) = log π_ref(k|x) + <w, x_k> − log Z (π_ref at w = 0). Reward of a sampled
candidate: r̂(x_k) − β (log π_w − log π_ref)(k|x) (Ziegler et al. 2019); update: Adam on the
REINFORCE loss with the batch-mean baseline (Williams 1992). Score it with
``tiltenv score leaderboard/examples/reinforce_agent.py`` (the factory ``make_agent`` is the default).
"""
import torch


def _logp(w, candidates, ref_logp):
    x, ref = torch.as_tensor(candidates, dtype=torch.float64), torch.as_tensor(ref_logp, dtype=torch.float64)
    return torch.log_softmax(ref + x @ w, dim=-1)


class LinearTiltREINFORCE:
    def __init__(self, lr=0.05, batch_size=256, seed=0):
        self.lr, self.batch_size, self.seed = lr, batch_size, seed
        self.w = None

    def policy(self, candidates, ref_logp):  # (C, K, d), (C, K) -> (C, K) log-probabilities
        return _logp(self.w.detach(), candidates, ref_logp)

    def fit(self, task, budget, checkpoint):
        gen = torch.Generator().manual_seed(self.seed)
        self.w = torch.zeros(task.d, dtype=torch.float64, requires_grad=True)
        opt = torch.optim.Adam([self.w], lr=self.lr)
        n_updates = budget.proxy_queries // self.batch_size
        marks = budget.checkpoint_marks()  # the scorer's schedule: a checkpoint is due once the queries reach each
        checkpoint(0, self._frozen())
        for update in range(1, n_updates + 1):
            cand, ref = task.sample_contexts(self.batch_size, generator=gen)
            logp = _logp(self.w, cand, ref)
            rows = torch.arange(self.batch_size)
            a = torch.multinomial(logp.detach().exp(), 1, generator=gen).squeeze(1)
            kl = (logp.detach() - ref.double())[rows, a]
            reward = task.proxy_reward(cand[rows, a]).double() - task.beta * kl
            loss = -((reward - reward.mean()) * logp[rows, a]).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            if marks and update * self.batch_size >= marks[0]:
                marks = [m for m in marks if m > update * self.batch_size]
                checkpoint(update * self.batch_size, self._frozen())

    def _frozen(self):
        w = self.w.detach().clone()
        return lambda candidates, ref_logp: _logp(w, candidates, ref_logp)


def make_agent():
    return LinearTiltREINFORCE()
