"""Constrained policy gradient (Lagrangian): maximize one dimension subject to the others not falling below π_ref.

On a multi-objective task (``task.dim_proxy_rewards``) the agent solves

    max_π  V̂_p(π) − β KL(π‖π_ref)    s.t.  V̂_i(π) ≥ V̂_i(π_ref) + margin   for every i ≠ p

(``p = primary``) by the Lagrangian ``L(π, μ) = V̂_p + Σ_{i≠p} μ_i (V̂_i − V̂_i(π_ref) − margin) − β KL`` with μ ≥ 0
(constrained RL as in Altman 1999; RCPO, Tessler et al. 2019; Safe RLHF, Dai et al. 2024, who constrain a
harmlessness cost model while maximizing a helpfulness reward). Each update

1. **primal**: one REINFORCE step (KL in the reward, :mod:`baselines.reinforce`) on the reward
   ``r̂_p + Σ_{i≠p} μ_i r̂_i`` of the sampled candidates;
2. **dual**: ``μ_i ← clip(μ_i − dual_lr · (V̂_i(π) − margin), 0, max_multiplier)``, with ``V̂_i(π)`` the rollout's
   mean of ``r̂_i`` (exact per context under ``exact_expectation``).

``V̂_i(π_ref) = 0``: every reward model of the task is centred under π_ref (the library's normalization), so the
constraint needs no extra queries. The constraint is on the *reward models*: the gold dimension can still fall
below π_ref where a model is wrong (``margin`` > 0 buys slack). ``agent.weights_`` is the final
``(1, μ) / (1 + Σμ)`` (the scalarization the Lagrangian ended at) and ``agent.multipliers_`` μ.

Example:
    >>> import gymnasium as gym, tiltenv
    >>> from baselines.constrained import ConstrainedPG
    >>> from baselines import TrainBudget
    >>> env = gym.make("tiltenv/HelpfulHarmless-v0", d=6, K=8, n_labels=200, n_eval_contexts=64, n_norm_contexts=64)
    >>> agent = ConstrainedPG(device="cpu", batch_size=64).fit(env.unwrapped.task, TrainBudget(proxy_queries=2048))
    >>> agent.multipliers_.shape
    (2,)
"""

from __future__ import annotations

from dataclasses import field
from typing import Any

import numpy as np
import torch

from baselines.base import TrainBudget, config_dataclass
from baselines.pg import Rollout, weighted_mean
from baselines.reinforce import REINFORCE, REINFORCEConfig
from baselines.scalarized import check_mo_task
from tiltenv._validation import check_float, check_int

__all__ = ["ConstrainedPGConfig", "ConstrainedPG"]


@config_dataclass
class ConstrainedPGConfig(REINFORCEConfig):
    """Lagrangian REINFORCE: maximize dimension ``primary`` with every other dimension at least π_ref's."""

    primary: int = field(default=0, metadata={"help": "The dimension to maximize (the others are constrained)."})
    dual_lr: float = field(default=1.0, metadata={"help": "Step size of the multipliers' projected gradient step."})
    margin: float = field(default=0.0, metadata={"help": "Constraint V̂_i(π) ≥ V̂_i(π_ref) + margin (reward-model units)."})
    init_multiplier: float = field(default=0.0, metadata={"help": "Starting value of every multiplier μ_i ≥ 0."})
    max_multiplier: float = field(default=100.0, metadata={"help": "Upper clip of the multipliers."})

    def __post_init__(self) -> None:
        super().__post_init__()
        self.primary = check_int("primary", self.primary, low=0)
        self.dual_lr = check_float("dual_lr", self.dual_lr, low=0.0)
        self.margin = check_float("margin", self.margin)
        self.init_multiplier = check_float("init_multiplier", self.init_multiplier, low=0.0)
        self.max_multiplier = check_float("max_multiplier", self.max_multiplier, low=0.0, low_open=True)
        if self.reward_shaping != "none":
            raise ValueError("ConstrainedPG scalarizes the per-dimension rewards itself; reward_shaping must be 'none'.")


class ConstrainedPG(REINFORCE):
    """Lagrangian constrained REINFORCE on a multi-objective task; see the module docstring."""

    name = "constrained_pg"
    config_class = ConstrainedPGConfig
    config: ConstrainedPGConfig

    def fit(self, task: Any, budget: TrainBudget | None = None, checkpoint=None) -> "ConstrainedPG":
        self._check_task(task)
        check_mo_task(task, None, type(self).__name__)
        m = task.n_objectives
        if self.config.primary >= m:
            raise ValueError(f"primary={self.config.primary} but the task has {m} objectives (0..{m - 1}).")
        self.m_ = m
        mu = np.full(m, self.config.init_multiplier)
        mu[self.config.primary] = 0.0
        self.multipliers_ = mu
        return super().fit(task, budget, checkpoint)

    @property
    def weights_(self) -> np.ndarray:
        coef = self._coef()
        return coef / coef.sum()

    def _coef(self) -> np.ndarray:
        coef = self.multipliers_.copy()
        coef[self.config.primary] = 1.0
        return coef

    def score_actions(self, task: Any, chosen: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """The Lagrangian reward ``r̂_primary + Σ_i μ_i r̂_i`` of the sampled candidates; also records each
        dimension's proxy value under the sampling policy, V̂_i(π), for the dual step."""
        dims = task.dim_proxy_rewards(chosen).to(torch.float32)  # (C, k, m)
        coef = torch.as_tensor(self._coef(), dtype=torch.float32, device=dims.device)
        self._dim_values = torch.stack([weighted_mean(dims[..., i], weights).mean() for i in range(dims.shape[-1])])
        return (dims * coef).sum(-1)

    def update(self, rollout: Rollout) -> dict[str, float]:
        stats = super().update(rollout)
        cfg = self.config
        v = self._dim_values.double().cpu().numpy()
        mu = np.clip(self.multipliers_ - cfg.dual_lr * (v - cfg.margin), 0.0, cfg.max_multiplier)
        mu[cfg.primary] = 0.0
        self.multipliers_ = mu
        return {**stats, **{f"proxy_dim{i}": float(v[i]) for i in range(len(v))},
                **{f"multiplier_dim{i}": float(mu[i]) for i in range(len(mu)) if i != cfg.primary}}
