"""Tilt: the closed-form optimum of the regularized objective on the proxy (no training).

KL (Rafailov et al. 2023, "Direct Preference Optimization", eq. 4; Korbak et al. 2022, "RL with KL
penalties is better viewed as Bayesian inference"): the maximizer of ``E_π r̂ − β KL(π‖π_ref)`` is

    π*_β(k|x) = π_ref(k|x) e^{r̂(x_k)/β} / Z_β(x)                   (``tiltenv.metrics.tilt_logp``)

χ² (Laidlaw et al. 2025, "Correlated Proxies: A New Definition and Improved Mitigation for Reward
Hacking", who regularize with χ² instead of KL): the maximizer of ``E_π r̂ − β χ²(π‖π_ref)``,
``χ² = Σ_k π_k²/π_ref,k − 1``. Stationarity of the Lagrangian with multiplier λ for ``Σ π = 1`` and
``π ≥ 0`` (KKT) gives ``r̂_k − 2β π_k/π_ref,k − λ = 0`` on the support, i.e.

    π_k = π_ref,k (r̂_k − λ)_+ / (2β),    Σ_k π_ref,k (r̂_k − λ)_+ = 2β,

a *truncated linear* reweighting of π_ref (candidates with r̂ ≤ λ get probability 0): :func:`tiltenv.metrics.chi2_tilt_logp`
finds λ exactly by sorting (as sparsemax does). Unlike the exponential tilt it never puts more than
``π_ref,k (r̂_k − λ)/(2β)`` on a candidate, however large its proxy reward.

The agent scores candidates with the proxy when its policy is called (deployment); those scores are not
counted against the training budget (``count=False``), and ``fit`` spends nothing. :func:`beta_sweep`
builds the agents of a β sweep (the frontier that any trained agent is compared against).

Example:
    >>> import gymnasium as gym, tiltenv
    >>> from baselines import Tilt
    >>> env = gym.make("tiltenv/Hump-v0", n_eval_contexts=64)
    >>> agent = Tilt(beta=0.3).fit(env.unwrapped.task)
    >>> round(tiltenv.evaluate(agent, env)["normalized_score"], 2) > 0
    True
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import field
from typing import Any

import torch

from baselines.base import Agent, TrainBudget, as_tensor, output_device, check_beta, check_device, resolve_device, config_dataclass
from tiltenv import metrics as M
from tiltenv._validation import check_choice

# The χ²-regularized closed form is a formula, so it lives with the others in tiltenv.metrics.
chi2_tilt_logp = M.chi2_tilt_logp

__all__ = ["TiltConfig", "Tilt", "chi2_tilt_logp", "beta_sweep"]


@config_dataclass
class TiltConfig:
    """Closed-form tilt of π_ref by the proxy."""

    beta: float | None = field(
        default=None, metadata={"help": "Temperature β of the tilt (None: the task's β; 0: argmax of the proxy)."}
    )
    divergence: str = field(
        default="kl", metadata={"help": "'kl' (π_ref e^{r/β}) or 'chi2' (π_ref (r − λ)_+/(2β), Laidlaw et al. 2025)."}
    )
    device: str = field(default="auto", metadata={"help": "'auto' (CUDA when available), 'cpu', 'cuda' or 'cuda:N'."})

    def __post_init__(self) -> None:
        self.beta = check_beta(self.beta)
        check_choice("divergence", self.divergence, ("kl", "chi2"))
        if self.divergence == "chi2" and self.beta == 0:
            raise ValueError("divergence='chi2' needs beta > 0 (β = 0 is the proxy's argmax: use divergence='kl').")
        self.device = check_device(self.device)


class Tilt(Agent):
    """Closed-form tilt on the proxy; see the module docstring."""

    name = "tilt"
    config_class = TiltConfig
    config: TiltConfig

    def fit(self, task: Any, budget: TrainBudget | None = None, checkpoint=None) -> "Tilt":
        self._check_task(task)
        self._budget(budget)
        self.task = task
        self.device = resolve_device(self.config.device)
        self.beta_ = float(task.beta if self.config.beta is None else self.config.beta)
        self._checkpoint_once(checkpoint)
        return self

    @torch.no_grad()
    def policy(self, candidates: Any, ref_logp: Any) -> torch.Tensor:
        if not hasattr(self, "task"):
            raise RuntimeError("Tilt.policy() called before fit().")
        out_device = output_device(candidates)
        cand = as_tensor(candidates, self.device)
        ref = as_tensor(ref_logp, self.device, torch.float64)
        r = self.task.proxy_reward(cand, count=False)
        if self.config.divergence == "chi2":
            logp = chi2_tilt_logp(ref, r, self.beta_)
        else:
            logp = M.tilt_logp(ref, r, self.beta_)
        return logp.to(out_device)

    def snapshot(self) -> "Tilt":
        return copy.copy(self)  # the closed form has no parameters; share the (read-only) task


def beta_sweep(task: Any, betas: Sequence[float], divergence: str = "kl", device: str = "auto") -> list[Tilt]:
    """Fitted :class:`Tilt` agents, one per β (a sweep of the closed form along the proxy's tilt path)."""
    return [Tilt(TiltConfig(beta=float(b), divergence=divergence, device=device)).fit(task) for b in betas]
