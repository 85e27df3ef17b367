"""Shared machinery of the policy-gradient baselines (REINFORCE, RLOO, GRPO, PPO).

Each algorithm file holds its config and its loss; this file holds what they share, readable top to bottom:

1. **Rollout** (:meth:`PolicyGradientAgent.collect`): draw ``batch_size`` fresh contexts from the public task,
   sample ``num_generations`` candidates per context from the current policy, and score them with the proxy
   (each scored candidate is one counted proxy query). The task is used directly rather than through
   ``gym.make`` because group methods (RLOO, GRPO) need several samples of the *same* context.
2. **Reward**: proxy → optional PAR shaping → optional divergence penalty in the reward (detached).
3. **Update**: the algorithm's loss (its own file), plus an optional divergence term in the loss.

Regularization options (every PG agent):

* ``kl_penalty="reward"`` — subtract ``β·k(a)`` from each sampled reward (Ziegler et al. 2019; InstructGPT,
  Ouyang et al. 2022, eq. 2). With ``k1`` this is the exact KL: the expected gradient
  ``E_π[(r − β log π/π_ref) ∇log π] = ∇(E_π r − β KL(π‖π_ref))`` (because ``E_π ∇log π = 0``), whose fixed
  point is the tilt ``π_ref e^{r/β}``.
* ``kl_penalty="loss"`` — add ``β·E_{a~π_old}[k(a)]`` to the loss (GRPO, Shao et al. 2024 eq. 3) with
  Schulman's (2020, "Approximating KL Divergence") estimators of ``log ρ = log π_ref(a) − log π(a)``:
  ``k1 = −log ρ``, ``k2 = ½ (log ρ)²``, ``k3 = (ρ − 1) − log ρ``; or ``analytic``: the exact
  ``KL(π‖π_ref) = Σ_k π_k log(π_k/π_ref,k)`` over the K candidates (``tiltenv.metrics.kl_divergence``, no
  extra queries). On-policy their *gradients* differ (``∇log π_k`` summed under π vanishes):
  ``k1`` → 0 (no regularization at all); ``k2`` → ``∇KL(π‖π_ref)`` (reverse KL, the tilt);
  ``k3`` → ``∇KL(π_ref‖π)`` (forward KL: fixed point ``π ∝ β π_ref/(λ − r)``, see :mod:`baselines.grpo`);
  ``analytic`` → ``∇KL(π‖π_ref)``.
* ``divergence="chi2"`` — χ² instead of KL (Laidlaw et al. 2025, "Correlated Proxies", who argue χ²
  regularization prevents reward hacking where KL does not): in the loss the exact
  ``χ²(π‖π_ref) = Σ_k π_k²/π_ref,k − 1`` (``tiltenv.metrics.chi2_divergence``); in the reward the penalty
  ``2(π(a)/π_ref(a) − 1)``, whose score-function gradient ``E_π[2 (π/π_ref) ∇log π]`` is exactly ``∇χ²``
  (χ² depends on π inside the expectation, hence the 2). Fixed point: the χ² closed form of
  :func:`tiltenv.metrics.chi2_tilt_logp`.
* ``reward_shaping="par"`` — Preference As Reward (Fu et al. 2025, "Reward Shaping to Mitigate Reward
  Hacking in RLHF", the PAR reward): ``r̃(x, y) = 1/M Σ_m σ(r(x, y) − r(x, y_ref^m))`` with ``M = par_ref_samples``
  reference candidates drawn from π_ref (their scoring is counted), i.e. the sigmoid of the reward centred
  on the reference policy's.
* ``exact_expectation=True`` — enumerate all K candidates of each context with weight ``π_old(k|x)``
  instead of sampling: every loss below becomes its exact expectation (K queries per context). Used by the
  tests to check fixed points with exact expected gradients; group statistics (mean, std, leave-one-out)
  become their π-expectations.

Optimizers: ``adam`` or plain ``sgd`` (Razin et al.'s reward-variance theory is about gradient flow, which
Adam's normalization hides).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch

from baselines.base import (
    Agent,
    config_dataclass,
    Checkpointer,
    TrainBudget,
    check_beta,
    check_device,
    check_optimizer,
    finite_or_raise,
    log_spaced_points,
    make_optimizer,
    out_of_time,
    resolve_device,
)
from baselines.policy import Policy, PolicySnapshot, check_head
from tiltenv import metrics as M
from tiltenv._validation import check_footprint, check_choice, check_float, check_int

__all__ = ["PGConfig", "Rollout", "PolicyGradientAgent", "kl_estimate", "weighted_mean", "KL_ESTIMATORS"]

KL_PENALTIES = ("reward", "loss")
KL_ESTIMATORS = ("k1", "k2", "k3", "analytic")
DIVERGENCES = ("kl", "chi2")
SHAPINGS = ("none", "par")


@config_dataclass
class PGConfig:
    """Fields shared by every policy-gradient baseline (each algorithm adds its own)."""

    beta: float | None = field(
        default=None, metadata={"help": "Divergence coefficient β (None: the task's β, the one it is scored at)."}
    )
    learning_rate: float = field(default=0.05, metadata={"help": "Optimizer step size."})
    optimizer: str = field(default="adam", metadata={"help": "'adam' or plain 'sgd' (gradient flow)."})
    momentum: float = field(default=0.0, metadata={"help": "SGD momentum (optimizer='sgd' only)."})
    max_grad_norm: float | None = field(
        default=None, metadata={"help": "Clip the gradient's global norm to this (None: no clipping)."}
    )
    batch_size: int = field(default=256, metadata={"help": "Contexts per rollout (per update)."})
    num_generations: int = field(default=1, metadata={"help": "Candidates sampled per context (k / G)."})
    kl_penalty: str = field(
        default="reward",
        metadata={"help": "Where the divergence goes: 'reward' (β·k subtracted from each sampled reward) or 'loss'."},
    )
    kl_estimator: str = field(
        default="k1",
        metadata={"help": "KL estimator: Schulman's 'k1', 'k2', 'k3', or 'analytic' (exact over the K candidates; loss "
                         "only). Unused with divergence='chi2' (exact χ² in the loss, its score-function penalty in the reward)."},
    )
    divergence: str = field(
        default="kl", metadata={"help": "'kl' or 'chi2' (χ²-regularized, Laidlaw et al. 2025)."}
    )
    reward_shaping: str = field(
        default="none", metadata={"help": "'none' or 'par' (Fu et al. 2025: sigmoid of the reward centred on π_ref's)."}
    )
    par_ref_samples: int = field(
        default=1, metadata={"help": "PAR: reference candidates drawn from π_ref per context (M); counted queries."}
    )
    exact_expectation: bool = field(
        default=False,
        metadata={"help": "Score all K candidates, weight each by π(k|x): exact expected gradients (K queries/context)."},
    )
    policy: str = field(default="linear", metadata={"help": "f_φ of log π = log π_ref + f_φ(x): 'linear' or 'mlp'."})
    hidden_sizes: tuple[int, ...] = field(default=(32, 32), metadata={"help": "MLP hidden widths (policy='mlp')."})
    activation: str = field(default="tanh", metadata={"help": "MLP activation: 'tanh', 'relu' or 'gelu'."})
    seed: int = field(default=0, metadata={"help": "Seeds initialization, contexts and action sampling."})
    device: str = field(default="auto", metadata={"help": "'auto' (CUDA when available), 'cpu', 'cuda' or 'cuda:N'."})

    def __post_init__(self) -> None:
        self.beta = check_beta(self.beta)
        self.learning_rate = check_float("learning_rate", self.learning_rate, low=0.0, low_open=True)
        self.optimizer = check_optimizer(self.optimizer)
        self.momentum = check_float("momentum", self.momentum, low=0.0, high=1.0, high_open=True)
        if self.momentum and self.optimizer != "sgd":
            raise ValueError(f"momentum={self.momentum} only applies to optimizer='sgd' (got optimizer={self.optimizer!r}).")
        if self.max_grad_norm is not None:
            self.max_grad_norm = check_float("max_grad_norm", self.max_grad_norm, low=0.0, low_open=True)
        self.batch_size = check_int("batch_size", self.batch_size, low=1)
        self.num_generations = check_int("num_generations", self.num_generations, low=1)
        check_choice("kl_penalty", self.kl_penalty, KL_PENALTIES)
        check_choice("kl_estimator", self.kl_estimator, KL_ESTIMATORS)
        check_choice("divergence", self.divergence, DIVERGENCES)
        if self.kl_estimator == "analytic" and self.kl_penalty == "reward":
            raise ValueError(
                "kl_estimator='analytic' is the exact KL of a whole context; it belongs in the loss "
                "(kl_penalty='loss'): added to a sampled reward it is a per-context constant with zero expected gradient."
            )
        check_choice("reward_shaping", self.reward_shaping, SHAPINGS)
        self.par_ref_samples = check_int("par_ref_samples", self.par_ref_samples, low=1)
        if not isinstance(self.exact_expectation, bool):
            raise TypeError(f"exact_expectation must be True or False (got {self.exact_expectation!r}).")
        self.hidden_sizes = check_head(self.policy, self.hidden_sizes, self.activation)
        self.seed = check_int("seed", self.seed, low=0, high=2**63 - 1)
        self.device = check_device(self.device)


@dataclass
class Rollout:
    """One batch of experience; ``C`` contexts, ``k`` scored candidates each.

    Attributes:
        candidates: (C, K, d); ref_logp: (C, K).
        old_logp: (C, K) log π at sampling time (detached).
        actions: (C, k) indices of the scored candidates.
        weights: (C, k) each row sums to 1: ``1/k`` when sampled, ``π_old(a|x)`` under ``exact_expectation``.
        proxy: (C, k) proxy rewards of the scored candidates.
        rewards: (C, k) the reward the algorithm maximizes: proxy, PAR-shaped, minus the in-reward penalty.
        exact: whether the candidates were enumerated (``exact_expectation``).
    """

    candidates: torch.Tensor
    ref_logp: torch.Tensor
    old_logp: torch.Tensor
    actions: torch.Tensor
    weights: torch.Tensor
    proxy: torch.Tensor
    rewards: torch.Tensor
    exact: bool

    def at_actions(self, logp: torch.Tensor) -> torch.Tensor:
        """``logp`` (C, K) at the scored candidates → (C, k); 0 where the weight is 0 (an enumerated candidate
        with π = 0 under ``exact_expectation``), so that no ``-inf − (-inf)`` reaches a gradient."""
        return torch.where(self.weights > 0, logp.gather(1, self.actions), 0.0)

    def subset(self, idx: torch.Tensor) -> "Rollout":
        """The rollout restricted to contexts ``idx`` (index tensor: a copy; slice: views)."""
        return Rollout(*(getattr(self, f)[idx] for f in
                         ("candidates", "ref_logp", "old_logp", "actions", "weights", "proxy", "rewards")), self.exact)


def weighted_mean(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``Σ_j w_j x_j`` per context (``x``, ``w``: (C, k); rows of ``w`` sum to 1), keepdim; 0·nan = 0."""
    return torch.where(w > 0, w * x, 0.0).sum(-1, keepdim=True)


def kl_estimate(log_ratio: torch.Tensor, estimator: str) -> torch.Tensor:
    """Schulman (2020) estimators of KL(π‖π_ref) from ``log ρ = log π_ref(a) − log π(a)``, ``a ~ π``."""
    if estimator == "k1":
        return -log_ratio
    if estimator == "k2":
        return 0.5 * log_ratio**2
    if estimator == "k3":
        return torch.expm1(log_ratio) - log_ratio
    raise ValueError(f"kl_estimator must be one of {KL_ESTIMATORS[:3]} for per-sample estimates (got {estimator!r}).")


def _gather_candidates(candidates: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """(C, K, d), (C, k) → (C, k, d)."""
    return candidates.gather(1, actions.unsqueeze(-1).expand(-1, -1, candidates.shape[-1]))


class PolicyGradientAgent(Agent):
    """Rollout / reward / update loop shared by the PG baselines. Subclasses implement :meth:`loss`
    (and may override :meth:`update` for several epochs per batch)."""

    config: PGConfig
    #: Smallest ``num_generations`` the algorithm accepts when sampling (group statistics need 2).
    min_generations: int = 1

    # ------------------------------------------------------------------ protocol
    def fit(self, task: Any, budget: TrainBudget | None = None, checkpoint=None) -> "PolicyGradientAgent":
        cfg, budget = self.config, self._budget(budget)
        self._check_task(task)
        if not cfg.exact_expectation and cfg.num_generations < self.min_generations:
            raise ValueError(
                f"{type(self).__name__} needs num_generations >= {self.min_generations} samples per context "
                f"(got {cfg.num_generations})."
            )
        self.device = resolve_device(cfg.device)
        self.beta_ = float(task.beta if cfg.beta is None else cfg.beta)
        self.K_ = int(task.K)
        # one update holds batch_size contexts of K candidates, the policy's activations over all of them (forward and
        # backward) and the scored rewards: refuse before the allocator does
        width = sum(cfg.hidden_sizes) if cfg.policy == "mlp" else 0
        check_footprint(f"one {type(self).__name__} update", 4 * cfg.batch_size * self.K_ * (task.d + 3 * width + 16),
                        f"batch_size {cfg.batch_size} × K {self.K_} × (d {task.d} + 3 × hidden_sizes {width} + 16) float32",
                        "lower batch_size (or hidden_sizes)")
        self.net = Policy(task.d, cfg.policy, cfg.hidden_sizes, cfg.activation, seed=cfg.seed, device=self.device)
        self.opt = make_optimizer(self.net.parameters(), cfg.optimizer, cfg.learning_rate, cfg.momentum)
        self.gen = torch.Generator(device=self.device).manual_seed(cfg.seed)
        per_update = self.queries_per_update(self.K_)
        if per_update > budget.proxy_queries:
            raise ValueError(
                f"one update of {type(self).__name__} scores {per_update} candidates but the budget allows "
                f"{budget.proxy_queries} proxy queries; lower batch_size/num_generations or raise the budget."
            )
        self.history = []
        points = sorted({*log_spaced_points(budget.proxy_queries, budget.n_checkpoints, first=per_update),
                         *budget.checkpoint_marks()})  # the scorer's marks are due on the leaderboard
        ckpt = Checkpointer(checkpoint, points, every=budget.checkpoint_every)
        q0, started = task.budget.proxy_queries, time.perf_counter()
        used = 0
        ckpt.start(self.snapshot)
        while used + per_update <= budget.proxy_queries and not out_of_time(budget, started):
            rollout = self.collect(task)
            stats = self.update(rollout)
            spent, used = task.budget.proxy_queries - q0 - used, task.budget.proxy_queries - q0
            if spent <= 0:  # an uncounted proxy would never exhaust the budget: fail rather than loop forever
                raise RuntimeError(
                    f"an update of {type(self).__name__} scored {per_update} candidates but task.budget.proxy_queries "
                    f"did not grow: this task's proxy_reward does not count its queries (count=False, or a wrapper "
                    f"that drops counting), so the budget of {budget.proxy_queries} queries would never run out."
                )
            self.history.append({"step": used, **stats})
            ckpt(used, self.snapshot)
        ckpt.finish(used, self.snapshot)
        self.checkpoint_steps = ckpt.steps
        self.fit_time = time.perf_counter() - started
        return self

    def policy(self, candidates: Any, ref_logp: Any) -> torch.Tensor:
        if not hasattr(self, "net"):
            raise RuntimeError(f"{type(self).__name__}.policy() called before fit().")
        return self.net.log_probs(candidates, ref_logp)

    def snapshot(self) -> PolicySnapshot:
        return self.net.frozen()

    def queries_per_update(self, K: int) -> int:
        cfg = self.config
        if cfg.exact_expectation:
            return cfg.batch_size * K
        extra = cfg.par_ref_samples if cfg.reward_shaping == "par" else 0
        return cfg.batch_size * (cfg.num_generations + extra)

    # ------------------------------------------------------------------ 1. rollout
    @torch.no_grad()
    def collect(self, task: Any) -> Rollout:
        cfg, gen = self.config, self.gen
        cand, ref = task.sample_contexts(cfg.batch_size, generator=gen)
        logp = self.net(cand, ref)
        C, K = logp.shape
        if cfg.exact_expectation:
            actions = torch.arange(K, device=self.device).expand(C, K)
            weights = logp.exp()
        else:
            k = cfg.num_generations
            actions = torch.multinomial(logp.exp(), k, replacement=True, generator=gen)
            weights = torch.full((C, k), 1.0 / k, device=self.device)
        proxy = self.score_actions(task, _gather_candidates(cand, actions), weights)
        rewards = self._reward(task, cand, ref, logp, actions, proxy)
        return Rollout(cand, ref, logp, actions, weights, proxy, rewards, cfg.exact_expectation)

    def score_actions(self, task: Any, chosen: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """The proxy reward of the sampled candidates ``chosen`` ``(C, k, d)`` (``weights``: their sampling weights);
        agents that shape the reward differently (e.g. per-dimension, :mod:`baselines.constrained`) override this."""
        return task.proxy_reward(chosen).to(torch.float32)

    # ------------------------------------------------------------------ 2. reward
    def _reward(self, task, cand, ref, logp, actions, proxy) -> torch.Tensor:
        cfg, r = self.config, proxy
        if cfg.reward_shaping == "par":
            # Fu et al. 2025 (PAR): r̃(x, y) = 1/M Σ_m σ(r(x, y) − r(x, y_ref^m)), y_ref^m ~ π_ref
            if cfg.exact_expectation:  # all K candidates are scored already: the π_ref expectation is exact
                ref_r, ref_w = proxy, ref.exp()
            else:
                idx = torch.multinomial(ref.exp(), cfg.par_ref_samples, replacement=True, generator=self.gen)
                ref_r = task.proxy_reward(_gather_candidates(cand, idx)).to(torch.float32)
                ref_w = torch.full_like(ref_r, 1.0 / cfg.par_ref_samples)
            r = (torch.sigmoid(r.unsqueeze(-1) - ref_r.unsqueeze(-2)) * ref_w.unsqueeze(-2)).sum(-1)
        if cfg.kl_penalty == "reward" and self.beta_ > 0:
            lp_a, ref_a = logp.gather(1, actions), ref.gather(1, actions)
            if cfg.divergence == "chi2":
                penalty = 2.0 * torch.expm1(lp_a - ref_a)  # 2(π/π_ref − 1): its score-function gradient is ∇χ²
            else:
                penalty = kl_estimate(ref_a - lp_a, cfg.kl_estimator)
            r = r - self.beta_ * torch.where(torch.isfinite(lp_a), penalty, 0.0)
        return r

    # ------------------------------------------------------------------ 3. update
    def loss(self, logp: torch.Tensor, rollout: Rollout) -> tuple[torch.Tensor, dict[str, float]]:
        """The algorithm's loss on a rollout, given the current ``logp`` (C, K) (with gradients)."""
        raise NotImplementedError

    def divergence_loss(self, logp: torch.Tensor, ro: Rollout) -> torch.Tensor:
        """``β·D`` for ``kl_penalty='loss'`` (0 otherwise): exact (``analytic``, χ²) or a sampled estimator."""
        cfg = self.config
        if cfg.kl_penalty != "loss" or self.beta_ == 0:
            return logp.new_zeros(())
        if cfg.divergence == "chi2":
            d = M.chi2_divergence(logp, ro.ref_logp, per_context=True).mean()
        elif cfg.kl_estimator == "analytic":
            d = M.kl_divergence(logp, ro.ref_logp, per_context=True).mean()
        else:
            log_ratio = ro.at_actions(ro.ref_logp) - ro.at_actions(logp)
            d = weighted_mean(kl_estimate(log_ratio, cfg.kl_estimator), ro.weights).mean()
        return self.beta_ * d.to(logp.dtype)

    def update(self, rollout: Rollout) -> dict[str, float]:
        """One gradient step on the whole rollout (REINFORCE, RLOO); PPO and GRPO override it."""
        loss, stats = self.loss(self.net(rollout.candidates, rollout.ref_logp), rollout)
        self.step(loss)
        return {**self.rollout_stats(rollout), **stats}

    def step(self, loss: torch.Tensor) -> None:
        finite_or_raise(loss, f"{type(self).__name__} loss")
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.config.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.net.parameters(), self.config.max_grad_norm)
        self.opt.step()

    @staticmethod
    def rollout_stats(ro: Rollout) -> dict[str, float]:
        """What the agent logs each update (no gold): the mean proxy reward and the mean shaped reward."""
        return {
            "proxy": weighted_mean(ro.proxy, ro.weights).mean().item(),
            "reward": weighted_mean(ro.rewards, ro.weights).mean().item(),
        }
