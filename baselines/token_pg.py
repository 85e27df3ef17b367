r"""Token-level policy gradient over sampled responses: REINFORCE, RLOO, GRPO and PPO on a token task.

The policy is an autoregressive network initialized **at** π_ref (``task.make_policy()``: the π_ref GRU's
architecture and weights, so step 0 is π_ref exactly). Each update draws ``batch_size`` fresh prompts, samples
``num_generations`` responses per prompt token by token from the current policy, scores each full response
with the proxy (one counted query each) and takes one optimizer step per ``num_iterations``. The KL to π_ref is
applied as TRL applies it, per token, with Schulman's estimators of ``log ρ_t = log π_ref(y_t|·) − log π(y_t|·)``
(:func:`baselines.pg.kl_estimate`):

* ``kl_penalty="reward"`` (REINFORCE, RLOO; TRL's RLOO/PPO): the sequence reward is
  ``R = r̂ − β Σ_t k(log ρ_t)`` (detached). With ``k1`` the expected gradient is exactly
  ``∇(E_π r̂ − β KL(π‖π_ref))`` (the sequence KL is the sum of the per-token ones), fixed point the tilt.
* ``kl_penalty="loss"`` (GRPO; TRL's GRPOTrainer): ``β k(log ρ_t)`` with the current, differentiable
  ``log π`` is added to each token's loss. With ``k3`` (the default, Shao et al. eq. 4) its on-policy gradient is
  ``β Σ_t E_{y_<t∼π} ∇KL(π_ref(·|y_<t) ‖ π(·|y_<t))``: the forward KL per prefix (cf. :mod:`baselines.grpo`).

Per algorithm (one sample ``y_i`` of a prompt's group; ``log π(y) = Σ_t log π(y_t|·)``):

* ``reinforce`` (Williams 1992): loss ``−(R_i − b) log π(y_i)``, ``b`` the batch mean of ``R``;
* ``rloo`` (Ahmadian et al. 2024): ``b_i`` the mean ``R`` of the other ``k − 1`` samples of the prompt;
* ``ppo`` (Schulman et al. 2017; TRL's PPOTrainer): per-token rewards (``−β k1_t`` at every token, the proxy at
  the last), GAE over tokens (``gamma``, ``lam``) with a critic (π_ref's GRU body and a zero-initialized value
  head, :class:`TokenCritic`), whitened advantages, the clipped per-token surrogate and ``vf_coef`` × the
  critic's squared error;
* ``grpo`` (Shao et al. 2024, eq. 3): ``Â_i = (R_i − mean_g R) / (std_g R + 1e-4)`` (``scale_rewards``), per token
  ``−min(ρ_t Â_i, clip(ρ_t, 1−ε, 1+ε) Â_i)`` with ``ρ_t = π(y_t|·)/π_old(y_t|·)``, averaged over the L tokens
  (TRL's ``loss_type="grpo"``; every response has length L).

``exact_expectation=True`` replaces the samples of each prompt by **all** V^L responses weighted by
``π_old(y|c)`` (V^L queries a prompt): every loss becomes its exact expectation — the tests' check that the
sampled gradient is unbiased for the exact one on a tiny world.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import field
from typing import Any

import torch

from baselines.base import check_beta, check_optimizer, config_dataclass, finite_or_raise, log_spaced_points, make_optimizer
from baselines.pg import kl_estimate
from tiltenv._validation import check_choice, check_float, check_int
from tiltenv.worlds.tokens.tree import all_responses, sample_responses, token_logp
from tiltenv.worlds.world import torch_generator

__all__ = ["TokenPGConfig", "TokenPG", "TOKEN_ALGORITHMS", "token_pg_loss", "gae", "TokenCritic"]

TOKEN_ALGORITHMS = ("reinforce", "rloo", "grpo", "ppo")


@config_dataclass
class TokenPGConfig:
    """Token-level policy gradient (module docstring). ``kl_penalty``/``kl_estimator`` default by algorithm:
    ``reward``/``k1`` for REINFORCE and RLOO, ``loss``/``k3`` for GRPO (TRL's choices)."""

    algorithm: str = field(default="rloo", metadata={"help": f"One of {TOKEN_ALGORITHMS}."})
    beta: float | None = field(default=None, metadata={"help": "KL coefficient β (None: the task's β)."})
    learning_rate: float = field(default=0.01, metadata={"help": "Optimizer step size."})
    optimizer: str = field(default="adam", metadata={"help": "'adam' or plain 'sgd'."})
    batch_size: int = field(default=32, metadata={"help": "Prompts per update."})
    num_generations: int = field(default=4, metadata={"help": "Responses sampled per prompt (k / G); ≥ 2 for rloo, grpo."})
    kl_penalty: str | None = field(default=None, metadata={"help": "'reward' or 'loss' (None: by algorithm)."})
    kl_estimator: str | None = field(default=None, metadata={"help": "'k1', 'k2' or 'k3' (None: by algorithm)."})
    epsilon: float = field(default=0.2, metadata={"help": "GRPO clip range ε."})
    scale_rewards: str = field(default="group", metadata={"help": "GRPO: divide by the 'group' std, 'batch' std or 'none'."})
    num_iterations: int = field(default=1, metadata={"help": "Gradient steps per batch (ratios vs π_old)."})
    gamma: float = field(default=1.0, metadata={"help": "PPO: discount over tokens (TRL's default 1)."})
    lam: float = field(default=0.95, metadata={"help": "PPO: GAE λ (TRL's default 0.95)."})
    vf_coef: float = field(default=0.1, metadata={"help": "PPO: weight of the critic's squared error (TRL's default 0.1)."})
    exact_expectation: bool = field(default=False, metadata={"help": "All V^L responses weighted by π_old (exact "
                                                                     "expected gradients; V^L queries a prompt)."})
    seed: int = field(default=0, metadata={"help": "Seeds prompts and sampling."})

    def __post_init__(self) -> None:
        check_choice("algorithm", self.algorithm, TOKEN_ALGORITHMS)
        self.beta = check_beta(self.beta)
        self.learning_rate = check_float("learning_rate", self.learning_rate, low=0.0, low_open=True)
        self.optimizer = check_optimizer(self.optimizer)
        self.batch_size = check_int("batch_size", self.batch_size, low=1)
        low = 2 if self.algorithm in ("rloo", "grpo") and not self.exact_expectation else 1
        self.num_generations = check_int("num_generations", self.num_generations, low=low)
        if self.kl_penalty is None:
            self.kl_penalty = "loss" if self.algorithm == "grpo" else "reward"
        self.gamma = check_float("gamma", self.gamma, low=0.0, high=1.0)
        self.lam = check_float("lam", self.lam, low=0.0, high=1.0)
        self.vf_coef = check_float("vf_coef", self.vf_coef, low=0.0)
        check_choice("kl_penalty", self.kl_penalty, ("reward", "loss"))
        if self.kl_estimator is None:
            self.kl_estimator = "k3" if self.kl_penalty == "loss" else "k1"
        check_choice("kl_estimator", self.kl_estimator, ("k1", "k2", "k3"))
        self.epsilon = check_float("epsilon", self.epsilon, low=0.0, high=1.0, low_open=True, high_open=True)
        check_choice("scale_rewards", self.scale_rewards, ("group", "batch", "none"))
        self.num_iterations = check_int("num_iterations", self.num_iterations, low=1)
        if not isinstance(self.exact_expectation, bool):
            raise TypeError(f"exact_expectation must be True or False (got {self.exact_expectation!r}).")
        self.seed = check_int("seed", self.seed, low=0, high=2**63 - 1)


def gae(rewards: torch.Tensor, values: torch.Tensor, gamma: float, lam: float) -> torch.Tensor:
    """Generalized advantage estimation over tokens (Schulman et al. 2016): ``δ_t = r_t + γ V_{t+1} − V_t``
    (``V_L = 0``), ``A_t = Σ_k (γλ)^k δ_{t+k}``. rewards, values: (..., L) -> advantages (..., L)."""
    L = rewards.shape[-1]
    nxt = torch.cat([values[..., 1:], torch.zeros_like(values[..., :1])], -1)
    delta = rewards + gamma * nxt - values
    adv = torch.zeros_like(delta)
    running = torch.zeros_like(delta[..., 0])
    for t in range(L - 1, -1, -1):
        running = delta[..., t] + gamma * lam * running
        adv[..., t] = running
    return adv


class TokenCritic(torch.nn.Module):
    """PPO's value model: π_ref's GRU body (a copy) with a zero-initialized linear value head; ``values(prompts,
    responses)`` is V(c, y_<t) for t = 0..L-1, (N, L) float64."""

    def __init__(self, ref: Any) -> None:
        super().__init__()
        self.body = ref.copy_trainable()
        self.value = torch.nn.Linear(ref.hidden, 1)
        with torch.no_grad():
            self.value.weight.zero_()
            self.value.bias.zero_()

    def values(self, state: torch.Tensor, responses: torch.Tensor) -> torch.Tensor:
        out = []
        for t in range(responses.shape[1]):
            out.append(self.value(state).squeeze(-1))
            if t + 1 < responses.shape[1]:
                state = self.body.advance(state, responses[:, t])
        return torch.stack(out, 1).to(torch.float64)


def token_pg_loss(cfg: TokenPGConfig, beta: float, tok_lp: torch.Tensor, old_tok: torch.Tensor, ref_tok: torch.Tensor,
                  proxy: torch.Tensor, weights: torch.Tensor, values: torch.Tensor | None = None,
                  old_values: torch.Tensor | None = None) -> torch.Tensor:
    """The loss of one batch, laid out as ``(B prompts, k samples)`` groups.

    Args:
        tok_lp: (B, k, L) current per-token log π (differentiable); old_tok: (B, k, L) at sampling (detached);
        ref_tok: (B, k, L) log π_ref; proxy: (B, k) proxy rewards; weights: (B, k), rows summing to 1
        (``1/k`` when sampled; ``π_old(y|c)`` under ``exact_expectation``).
    """
    w = weights
    if cfg.algorithm == "ppo":
        return _ppo_loss(cfg, beta, tok_lp, old_tok, ref_tok, proxy, w, values,
                         values.detach() if old_values is None else old_values)
    mean = lambda x: (w * x).sum(-1, keepdim=True)  # noqa: E731 (the group's (weighted) mean)
    R = proxy.to(torch.float64)
    if cfg.kl_penalty == "reward":
        R = R - beta * kl_estimate(ref_tok - old_tok, cfg.kl_estimator).sum(-1)
    k = R.shape[1]
    exact = cfg.exact_expectation
    if cfg.algorithm == "reinforce":
        A = R - mean(R).mean()
    elif cfg.algorithm == "rloo":
        A = R - (mean(R) if exact else (R.sum(-1, keepdim=True) - R) / (k - 1))
    else:
        A = R - mean(R)
        if cfg.scale_rewards == "group":
            A = A / (mean((R - mean(R)) ** 2).sqrt() if exact else R.std(-1, keepdim=True)) .add(1e-4)
        elif cfg.scale_rewards == "batch":
            A = A / (R.std() + 1e-4)
    A = A.detach()
    if cfg.algorithm == "grpo":
        ratio = (tok_lp - old_tok).exp()
        surr = torch.minimum(ratio * A[..., None], ratio.clamp(1 - cfg.epsilon, 1 + cfg.epsilon) * A[..., None])
        per_token = -surr
        if cfg.kl_penalty == "loss":
            per_token = per_token + beta * kl_estimate(ref_tok - tok_lp, cfg.kl_estimator)
        per_sample = per_token.mean(-1)
    else:
        per_sample = -A * tok_lp.sum(-1)
        if cfg.kl_penalty == "loss":
            per_sample = per_sample + beta * kl_estimate(ref_tok - tok_lp, cfg.kl_estimator).sum(-1)
    return (w * per_sample).sum(-1).mean()


def _ppo_loss(cfg: TokenPGConfig, beta: float, tok_lp, old_tok, ref_tok, proxy, w, values, v_old) -> torch.Tensor:
    """PPO with per-token rewards (TRL's PPOTrainer): ``r_t = −β k(log ρ_t)`` at every token plus the proxy at the
    last, GAE advantages (whitened over the batch), the clipped surrogate per token and the critic's squared error
    against the returns ``A_t + V_t`` (``vf_coef``)."""
    rewards = torch.zeros_like(old_tok)
    if cfg.kl_penalty == "reward":
        rewards = rewards - beta * kl_estimate(ref_tok - old_tok, cfg.kl_estimator)
    rewards[..., -1] += proxy.to(torch.float64)
    adv = gae(rewards, v_old, cfg.gamma, cfg.lam)
    returns = adv + v_old
    m = (w[..., None] * adv).sum((-1, -2), keepdim=True).mean() / adv.shape[-1]  # weighted batch mean, then whiten
    sd = ((w[..., None] * (adv - m) ** 2).sum((-1, -2)).mean() / adv.shape[-1]).sqrt()
    A = ((adv - m) / (sd + 1e-8)).detach()
    ratio = (tok_lp - old_tok).exp()
    per_token = -torch.minimum(ratio * A, ratio.clamp(1 - cfg.epsilon, 1 + cfg.epsilon) * A)
    if cfg.kl_penalty == "loss":
        per_token = per_token + beta * kl_estimate(ref_tok - tok_lp, cfg.kl_estimator)
    per_token = per_token + cfg.vf_coef * 0.5 * (values - returns) ** 2
    return (w * per_token.mean(-1)).sum(-1).mean()


class TokenPG:
    """REINFORCE / RLOO / GRPO on a :class:`~tiltenv.worlds.tokens.TokenTask` (module docstring).

    ``fit(task, proxy_queries, checkpoint)`` (``proxy_queries`` an int or a :class:`baselines.TrainBudget`, whose
    ``checkpoint_marks()`` are then among the checkpoint points: the leaderboard's protocol) trains ``self.model`` (a GRU initialized at π_ref); ``checkpoint(step,
    policy)`` is called at log-spaced query counts (and step 0) with a frozen copy, which
    ``world.judge.evaluate`` scores exactly.

    Example:
        >>> from tiltenv import make_world
        >>> from tiltenv.worlds.tokens import TokenConfig
        >>> world = make_world(TokenConfig(V=4, L=3, n_labels=300, n_eval_contexts=8, n_norm_contexts=8))
        >>> agent = TokenPG(TokenPGConfig(algorithm="rloo", learning_rate=0.02)).fit(world.task, proxy_queries=1024)
        >>> res = world.judge.evaluate(agent.model)
        >>> res["proxy_value"] > world.judge.evaluate(world.task.ref_model)["proxy_value"]
        True
    """

    def __init__(self, config: TokenPGConfig | None = None, **kwargs: Any) -> None:
        if config is not None and kwargs:
            raise TypeError("pass a TokenPGConfig or keyword fields, not both.")
        self.config = config if config is not None else TokenPGConfig(**kwargs)
        self.model: Any = None
        self.history: list[dict[str, float]] = []

    def fit(self, task: Any, proxy_queries: int = 65_536, checkpoint: Callable[[int, Any], None] | None = None,
            n_checkpoints: int = 12, wall_time: float | None = None) -> "TokenPG":
        cfg = self.config
        marks: list[int] = []
        if callable(getattr(proxy_queries, "checkpoint_marks", None)):  # a TrainBudget (the leaderboard's protocol)
            budget = proxy_queries
            proxy_queries, n_checkpoints, marks = budget.proxy_queries, budget.n_checkpoints, budget.checkpoint_marks()
            wall_time = budget.wall_time if wall_time is None else wall_time
        proxy_queries = check_int("proxy_queries", proxy_queries, low=1)
        beta = task.beta if cfg.beta is None else cfg.beta
        self.model = model = task.make_policy()
        ref = task.ref_model
        self.critic = critic = TokenCritic(ref) if cfg.algorithm == "ppo" else None
        params = list(model.parameters()) + (list(critic.parameters()) if critic is not None else [])
        opt = make_optimizer(params, cfg.optimizer, cfg.learning_rate)
        g = torch_generator(cfg.seed)
        V, L = task.V, task.L
        per_update = cfg.batch_size * (V**L if cfg.exact_expectation else cfg.num_generations)
        # query counts to checkpoint at: log-spaced, plus the scorer's marks (budget.checkpoint_marks()) when given
        pending = sorted(set(log_spaced_points(proxy_queries, n_checkpoints, first=per_update)) | set(marks))
        if checkpoint is not None:
            checkpoint(0, self.snapshot())
        used, start = 0, time.perf_counter()
        while used + per_update <= proxy_queries:
            prompts = task.sample_prompts(cfg.batch_size, generator=g)
            if cfg.exact_expectation:
                ys = all_responses(V, L).repeat(cfg.batch_size, 1)
                rep = prompts.repeat_interleave(V**L, 0)
            else:
                rep = prompts.repeat_interleave(cfg.num_generations, 0)
                ys, _ = sample_responses(model, rep, L, g)
            k = ys.shape[0] // cfg.batch_size
            proxy = task.reward(rep, ys).reshape(cfg.batch_size, k)
            with torch.no_grad():  # each prompt is read once, its state shared by its k responses
                ref_tok = token_logp(ref, rep, ys, state=ref.initial_state(prompts).repeat_interleave(k, 0))
                ref_tok = ref_tok.reshape(cfg.batch_size, k, L)
            old_tok = old_values = None
            for _ in range(cfg.num_iterations):
                state = model.initial_state(prompts).repeat_interleave(k, 0)
                tok_lp = token_logp(model, rep, ys, state=state).reshape(cfg.batch_size, k, L)
                if old_tok is None:  # π_old: the policy the responses were sampled from (this first pass)
                    old_tok = tok_lp.detach()
                    weights = (old_tok.sum(-1).exp() if cfg.exact_expectation
                               else torch.full((cfg.batch_size, k), 1.0 / k, dtype=torch.float64))
                values = None
                if critic is not None:
                    cstate = critic.body.initial_state(prompts).repeat_interleave(k, 0)
                    values = critic.values(cstate, ys).reshape(cfg.batch_size, k, L)
                    if old_values is None:  # advantages and returns from the critic at sampling time (TRL)
                        old_values = values.detach()
                loss = token_pg_loss(cfg, beta, tok_lp, old_tok, ref_tok, proxy, weights, values, old_values)
                finite_or_raise(loss, "the token policy-gradient loss")
                opt.zero_grad()
                loss.backward()
                opt.step()
            used += per_update
            self.history.append({"queries": used, "loss": float(loss.detach()), "proxy": float((weights * proxy).sum(-1).mean())})
            last = used + per_update > proxy_queries
            if checkpoint is not None and ((pending and used >= pending[0]) or last):
                checkpoint(used, self.snapshot())
            while pending and pending[0] <= used:
                pending.pop(0)
            if wall_time is not None and time.perf_counter() - start > wall_time:
                break
        return self

    def snapshot(self) -> Any:
        """A frozen copy of the current policy."""
        return copy.deepcopy(self.model).requires_grad_(False).eval()
