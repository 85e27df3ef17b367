"""Linear scalarization on a multi-objective task: tilt and policy gradient on ``w·r̂``.

On a :class:`tiltenv.worlds.multiobjective.MultiObjectiveTask` each candidate has m per-dimension reward models
``r̂_1..r̂_m`` (``task.dim_proxy_rewards``). Linear scalarization picks weights ``w`` on the simplex and optimizes
``w·r̂`` — the classical way to reach a point of the Pareto front (every point of a convex front is the optimum of
some ``w``). ``weights=None`` uses the task's own aggregation weights (per context type; learned ones when the
task's weights are hidden), i.e. the task's proxy.

* :class:`ScalarizedTilt` — the closed form ``π ∝ π_ref e^{(w·r̂)/β}``; with gold reward models and the β whose KL
  is κ, it is exactly the Pareto-front point of weight ``w`` at budget κ (:func:`tiltenv.metrics.pareto_front`).
* :class:`ScalarizedPG` — :class:`~baselines.reinforce.REINFORCE` (KL in the reward) on ``w·r̂``.

``agent.weights_`` holds the weights it scalarizes (``(m,)``), for :func:`tiltenv.metrics.front_gap`.

Example:
    >>> import gymnasium as gym, tiltenv
    >>> from baselines.scalarized import ScalarizedTilt
    >>> env = gym.make("tiltenv/HelpfulHarmless-v0", d=6, K=8, n_labels=200, n_eval_contexts=64, n_norm_contexts=64)
    >>> agent = ScalarizedTilt(weights=(1.0, 0.0), beta=0.5).fit(env.unwrapped.task)
    >>> m = tiltenv.evaluate(agent, env)
    >>> m["gold_gain_dim0"] > 0 > m["gold_gain_dim1"]     # all weight on helpful: harmless gets worse (cos -0.5)
    True
"""

from __future__ import annotations

import copy
from dataclasses import field
from typing import Any

import numpy as np
import torch

from baselines.base import Agent, TrainBudget, as_tensor, output_device, check_beta, check_device, resolve_device, config_dataclass
from baselines.reinforce import REINFORCE, REINFORCEConfig
from tiltenv import metrics as M

__all__ = ["ScalarizedTiltConfig", "ScalarizedTilt", "ScalarizedPGConfig", "ScalarizedPG", "ScalarizedTaskView",
           "check_weights", "check_mo_task"]


def check_weights(weights: Any, name: str = "weights") -> tuple[float, ...] | None:
    """``None`` or a tuple of non-negative finite numbers with a positive sum (normalized to sum 1)."""
    if weights is None:
        return None
    try:
        w = np.asarray(weights, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a sequence of numbers (got {weights!r}).") from None
    if w.size < 1 or not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise ValueError(f"{name} must be non-negative numbers with a positive sum (got {w.tolist()}).")
    return tuple(float(x) for x in w / w.sum())


def check_mo_task(task: Any, weights: tuple[float, ...] | None, who: str) -> None:
    if not hasattr(task, "dim_proxy_rewards"):
        raise TypeError(f"{who} needs a multi-objective task (tiltenv/HelpfulHarmless-v0, tiltenv/MultiObjective-v0): "
                        f"{type(task).__name__} has no per-dimension reward models.")
    if weights is not None and len(weights) != task.n_objectives:
        raise ValueError(f"{who}: weights has {len(weights)} entries but the task has {task.n_objectives} objectives.")


class ScalarizedTaskView:
    """The public task with ``proxy_reward`` replaced by ``w·r̂`` (counted in the task's budget; everything else
    delegated): any single-objective agent trains on the scalarization through it."""

    def __init__(self, task: Any, weights: tuple[float, ...] | None) -> None:
        self._task = task
        self._w = None if weights is None else torch.tensor(weights, dtype=torch.float64)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._task, name)

    def scalarized(self, candidates: Any, *, count: bool = True) -> torch.Tensor:
        x = torch.as_tensor(candidates)
        r = self._task.dim_proxy_rewards(x, count=count)
        w = self._task.weights_of(x) if self._w is None else self._w.to(r.device)
        return (r * w).sum(-1)

    def proxy_reward(self, candidates: Any, *, count: bool = True) -> torch.Tensor:
        x = torch.as_tensor(candidates)
        return self.scalarized(x, count=count).to(x.dtype if x.is_floating_point() else torch.float32)


def _effective_weights(task: Any, weights) -> np.ndarray:
    return np.asarray(weights if weights is not None else task.weights.mean(0) if task.n_types == 1 else
                      task.weights, dtype=np.float64)


@config_dataclass
class ScalarizedTiltConfig:
    """Closed-form tilt of π_ref by ``w·r̂``."""

    weights: Any = field(default=None, metadata={"help": "Scalarization weights w (m numbers; None: the task's)."})
    beta: float | None = field(default=None, metadata={"help": "Temperature β (None: the task's β; 0: argmax)."})
    device: str = field(default="auto", metadata={"help": "'auto', 'cpu', 'cuda' or 'cuda:N'."})

    def __post_init__(self) -> None:
        self.weights = check_weights(self.weights)
        self.beta = check_beta(self.beta)
        self.device = check_device(self.device)


class ScalarizedTilt(Agent):
    """``π ∝ π_ref e^{(w·r̂)/β}`` on a multi-objective task; see the module docstring."""

    name = "scalarized_tilt"
    config_class = ScalarizedTiltConfig
    config: ScalarizedTiltConfig

    def fit(self, task: Any, budget: TrainBudget | None = None, checkpoint=None) -> "ScalarizedTilt":
        self._check_task(task)
        self._budget(budget)
        check_mo_task(task, self.config.weights, type(self).__name__)
        self.view = ScalarizedTaskView(task, self.config.weights)
        self.device = resolve_device(self.config.device)
        self.beta_ = float(task.beta if self.config.beta is None else self.config.beta)
        self.weights_ = _effective_weights(task, self.config.weights)
        self._checkpoint_once(checkpoint)
        return self

    @torch.no_grad()
    def policy(self, candidates: Any, ref_logp: Any) -> torch.Tensor:
        if not hasattr(self, "view"):
            raise RuntimeError("ScalarizedTilt.policy() called before fit().")
        out_device = output_device(candidates)
        cand = as_tensor(candidates, self.device)
        ref = as_tensor(ref_logp, self.device, torch.float64)
        r = self.view.scalarized(cand, count=False)
        return M.tilt_logp(ref, r, self.beta_).to(out_device)

    def snapshot(self) -> "ScalarizedTilt":
        return copy.copy(self)


@config_dataclass
class ScalarizedPGConfig(REINFORCEConfig):
    """REINFORCE (KL in the reward) on ``w·r̂``."""

    weights: Any = field(default=None, metadata={"help": "Scalarization weights w (m numbers; None: the task's)."})

    def __post_init__(self) -> None:
        super().__post_init__()
        self.weights = check_weights(self.weights)


class ScalarizedPG(REINFORCE):
    """REINFORCE on ``w·r̂``: it trains on a :class:`ScalarizedTaskView` of the task; see the module docstring."""

    name = "scalarized_pg"
    config_class = ScalarizedPGConfig
    config: ScalarizedPGConfig

    def fit(self, task: Any, budget: TrainBudget | None = None, checkpoint=None) -> "ScalarizedPG":
        self._check_task(task)
        check_mo_task(task, self.config.weights, type(self).__name__)
        self.weights_ = _effective_weights(task, self.config.weights)
        return super().fit(ScalarizedTaskView(task, self.config.weights), budget, checkpoint)
