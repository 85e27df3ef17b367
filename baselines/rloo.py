"""RLOO: REINFORCE with k samples per context and a leave-one-out baseline.

Kool, van Hoof & Welling (2019), "Buy 4 REINFORCE samples, get a baseline for free!", and Ahmadian et al.
(2024), "Back to Basics: Revisiting REINFORCE-Style Optimization for Learning from Human Feedback in LLMs",
the RLOO estimator (§3):

    ∇J ≈ 1/k Σ_i [R(x, y_i) − 1/(k−1) Σ_{j≠i} R(x, y_j)] ∇ log π(y_i|x),   y_1..y_k ~ π(·|x)

Each sample's baseline is the mean reward of the *other* samples of the same context, so it is unbiased
and needs no critic. ``R`` carries the KL penalty in the reward (k1, as in TRL's RLOOTrainer and the
paper), so the fixed point is the tilt ``π_ref e^{r̂/β}``. With ``exact_expectation`` the leave-one-out
mean becomes its k → ∞ limit, ``E_π[R]``. Shared options: :mod:`baselines.pg`.
"""

from __future__ import annotations

from dataclasses import field

import torch

from baselines.base import config_dataclass
from baselines.pg import PGConfig, PolicyGradientAgent, Rollout, weighted_mean

__all__ = ["RLOOConfig", "RLOO"]


@config_dataclass
class RLOOConfig(PGConfig):
    """RLOO (Ahmadian et al. 2024); ``num_generations`` is the paper's k (TRL: ``num_generations``)."""

    batch_size: int = field(default=64, metadata={"help": "Contexts per rollout (per update)."})
    num_generations: int = field(default=4, metadata={"help": "k: samples per context (>= 2)."})


class RLOO(PolicyGradientAgent):
    """RLOO; see the module docstring."""

    name = "rloo"
    config_class = RLOOConfig
    config: RLOOConfig
    min_generations = 2

    def loss(self, logp: torch.Tensor, ro: Rollout) -> tuple[torch.Tensor, dict[str, float]]:
        R = ro.rewards
        if ro.exact:
            baseline = weighted_mean(R, ro.weights)  # k → ∞: the leave-one-out mean is E_π[R]
        else:
            k = R.shape[1]
            baseline = (R.sum(-1, keepdim=True) - R) / (k - 1)  # mean of the other k − 1 samples
        advantages = R - baseline
        # Ahmadian et al. (2024), RLOO: −1/k Σ_i A_i log π(y_i|x)
        pg_loss = -weighted_mean(advantages * ro.at_actions(logp), ro.weights).mean()
        reg = self.divergence_loss(logp, ro)
        return pg_loss + reg, {"loss": pg_loss.item(), "div_loss": reg.item()}
