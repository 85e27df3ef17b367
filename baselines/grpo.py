r"""GRPO: group-normalized advantages, clipped ratio, KL estimator in the loss.

Shao et al. (2024), "DeepSeekMath", eq. 3 (outcome supervision, one "token" per response), maximized:

    J(φ) = E_x 1/G Σ_i [ min(ρ_i Â_i, clip(ρ_i, 1−ε, 1+ε) Â_i) − β D̂_KL(i) ],   y_1..y_G ~ π_old(·|x)
    ρ_i = π_φ(y_i|x) / π_old(y_i|x),     Â_i = (r_i − mean(r)) / std(r)         (§4.1.2)
    D̂_KL(i) = π_ref(y_i|x)/π_φ(y_i|x) − log(π_ref(y_i|x)/π_φ(y_i|x)) − 1          (eq. 4: Schulman's k3)

``scale_rewards`` follows TRL: ``"group"`` (divide by the group's std, as in the paper), ``"batch"`` (the
std over the whole batch) or ``"none"`` (no division: Dr. GRPO, Liu et al. 2025). ``num_iterations`` (μ)
gradient steps reuse each batch; ``epsilon`` is the clip range. The KL estimator is configurable
(``kl_estimator``, ``kl_penalty``; :mod:`baselines.pg`). TRL's ``loss_type`` (``grpo``, ``bnpo``, ``dr_grpo``)
only changes how token losses are normalized by response length; responses here are one candidate, so
they coincide and there is no such field.

**Property: GRPO with k3 in the loss does not converge to the tilt.** On-policy (π_old = π_φ, the
sampling distribution not differentiated) the gradient of the k3 term is

    ∇ E_{a~π}[k3(a)] = Σ_a π_a (1 − π_ref,a/π_a) ∇log π_a = −Σ_a π_ref,a ∇log π_a = ∇ KL(π_ref‖π),

the gradient of the *forward* KL. With ``scale_rewards="none"`` GRPO is therefore gradient ascent on
``E_π r − β KL(π_ref‖π)`` (the group mean is a baseline and leaves the expected gradient unchanged).
Stationarity on the simplex, with multiplier λ for ``Σ_a π_a = 1``:

    r_a + β π_ref,a/π_a − λ = 0   ⇒   π_a = β π_ref,a / (λ − r_a),   λ > max_a r_a,  Σ_a π_a = 1,

a heavy-tailed (polynomial, not exponential) reweighting of π_ref — :func:`forward_kl_fixed_point`. It
differs from the tilt ``π_ref e^{r/β}`` of the reverse KL; the tests check that GRPO with exact expected
gradients lands on this point and not on the tilt. With ``scale_rewards="group"`` the reward is divided
by ``std_π(r)``, which moves the fixed point again (β is effectively multiplied by the std).
"""

from __future__ import annotations

from dataclasses import field
from typing import Any

import torch

from baselines.base import config_dataclass
from baselines.pg import PGConfig, PolicyGradientAgent, Rollout, weighted_mean
from tiltenv._validation import check_choice, check_float, check_int

__all__ = ["GRPOConfig", "GRPO", "forward_kl_fixed_point", "SCALE_REWARDS"]

SCALE_REWARDS = ("group", "batch", "none")


@config_dataclass
class GRPOConfig(PGConfig):
    """GRPO (Shao et al. 2024) with TRL's field names."""

    batch_size: int = field(default=64, metadata={"help": "Contexts (prompts) per rollout."})
    num_generations: int = field(default=8, metadata={"help": "G: candidates sampled per context (>= 2)."})
    kl_penalty: str = field(default="loss", metadata={"help": "GRPO puts the KL estimate in the loss ('loss')."})
    kl_estimator: str = field(default="k3", metadata={"help": "Estimator in the loss: k3 (the paper's eq. 4), k1, k2, analytic."})
    epsilon: float = field(default=0.2, metadata={"help": "Clip range ε of the ratio (lower and upper)."})
    scale_rewards: Any = field(
        default="group",
        metadata={"help": "Divide advantages by the std of the 'group', the 'batch', or 'none' (True='group', False='none')."},
    )
    num_iterations: int = field(default=1, metadata={"help": "μ: gradient steps per batch (ratios vs. π_old)."})

    def __post_init__(self) -> None:
        super().__post_init__()
        self.epsilon = check_float("epsilon", self.epsilon, low=0.0, high=1.0, low_open=True, high_open=True)
        if isinstance(self.scale_rewards, bool):
            self.scale_rewards = "group" if self.scale_rewards else "none"
        check_choice("scale_rewards", self.scale_rewards, SCALE_REWARDS)
        self.num_iterations = check_int("num_iterations", self.num_iterations, low=1)


class GRPO(PolicyGradientAgent):
    """GRPO; see the module docstring."""

    name = "grpo"
    config_class = GRPOConfig
    config: GRPOConfig
    min_generations = 2

    def advantages(self, ro: Rollout) -> torch.Tensor:
        """Â = (r − mean_group r) / (std + 1e-4); unbiased std when sampled (as TRL), π-weighted when exact."""
        r, w = ro.rewards, ro.weights
        centred = r - weighted_mean(r, w)
        scale = self.config.scale_rewards
        if scale == "none":
            return centred
        bessel = 1.0 if ro.exact else r.shape[1] / (r.shape[1] - 1)
        if scale == "group":
            std = (weighted_mean(centred**2, w) * bessel).sqrt()
        else:  # "batch": one std over every reward of the batch
            mean_all = weighted_mean(r, w).mean()
            n = r.numel()
            bessel = 1.0 if ro.exact else n / (n - 1)
            std = (weighted_mean((r - mean_all) ** 2, w).mean() * bessel).sqrt()
        return centred / (std + 1e-4)

    def loss(self, logp: torch.Tensor, ro: Rollout, adv: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        adv = self.advantages(ro) if adv is None else adv
        eps = self.config.epsilon
        logp_a, old_a = ro.at_actions(logp), ro.at_actions(ro.old_logp)
        ratio = torch.exp(logp_a - old_a)
        # Shao et al. (2024) eq. 3: −1/G Σ_i min(ρ_i Â_i, clip(ρ_i, 1−ε, 1+ε) Â_i)  (+ β·k3 below)
        surrogate = torch.minimum(ratio * adv, ratio.clamp(1 - eps, 1 + eps) * adv)
        pg_loss = -weighted_mean(surrogate, ro.weights).mean()
        reg = self.divergence_loss(logp, ro)
        clipped = weighted_mean(((ratio - 1).abs() > eps).to(logp.dtype), ro.weights).mean()
        return pg_loss + reg, {"loss": pg_loss.item(), "div_loss": reg.item(), "clip_frac": clipped.item()}

    def update(self, ro: Rollout) -> dict[str, float]:
        adv = self.advantages(ro)
        for _ in range(self.config.num_iterations):
            loss, stats = self.loss(self.net(ro.candidates, ro.ref_logp), ro, adv)
            self.step(loss)
        return {**self.rollout_stats(ro), **stats}


def forward_kl_fixed_point(ref_probs: Any, rewards: Any, beta: float, iters: int = 200) -> torch.Tensor:
    """The maximizer of ``E_π r − β KL(π_ref‖π)``: ``π_k = β π_ref,k / (λ − r_k)`` with ``Σ_k π_k = 1``.

    λ is found by bisection on ``(max r, max r + β]`` (over the support of π_ref), where
    ``Σ_k β π_ref,k/(λ − r_k)`` falls from +∞ to at most 1. Float64.

    Args:
        ref_probs: π_ref, shape ``(..., K)``.
        rewards: r, same shape.
        beta: β > 0.
    Returns:
        probabilities, shape ``(..., K)``, float64.
    """
    ref = torch.as_tensor(ref_probs, dtype=torch.float64)
    r = torch.as_tensor(rewards, dtype=torch.float64)
    if not beta > 0:
        raise ValueError(f"beta must be > 0 (got {beta}).")
    support = ref > 0
    r_max = torch.where(support, r, -torch.inf).amax(-1, keepdim=True)
    lo, hi = r_max.clone(), r_max + beta

    def mass(lam: torch.Tensor) -> torch.Tensor:
        return torch.where(support, beta * ref / (lam - r).clamp_min(1e-300), 0.0).sum(-1, keepdim=True)

    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        too_big = mass(mid) > 1
        lo = torch.where(too_big, mid, lo)
        hi = torch.where(too_big, hi, mid)
    pi = torch.where(support, beta * ref / (hi - r), 0.0)
    return pi / pi.sum(-1, keepdim=True)
