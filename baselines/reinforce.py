"""REINFORCE with the KL penalty in the reward.

Williams (1992), "Simple statistical gradient-following algorithms for connectionist reinforcement
learning", §4: the REINFORCE update with a reinforcement baseline b:

    ∇J ≈ 1/C Σ_x (R(x, a) − b) ∇_φ log π_φ(a|x),   a ~ π_φ(·|x)

with the KL-shaped reward of Ziegler et al. (2019) / InstructGPT (Ouyang et al. 2022, eq. 2)

    R(x, a) = r̂(x, a) − β (log π(a|x) − log π_ref(a|x))            (k1, detached)

whose expected gradient is exactly ``∇(E_π r̂ − β KL(π‖π_ref))``: its fixed point is the tilt
``π_ref e^{r̂/β}`` (tested with exact expected gradients). ``b`` is the batch mean of ``R`` (a constant
per batch, so the estimator stays unbiased up to O(1/C)). The shared rollout and regularization options
(KL in the loss with k1/k2/k3/analytic, χ², PAR, sgd/adam) are documented in :mod:`baselines.pg`.

Example:
    >>> import gymnasium as gym, tiltenv
    >>> from baselines import REINFORCE, TrainBudget
    >>> env = gym.make("tiltenv/SingleIndex-v0", d=4, K=8, n_labels=200, n_eval_contexts=128)
    >>> agent = REINFORCE(device="cpu").fit(env.unwrapped.task, TrainBudget(proxy_queries=4096))
    >>> tiltenv.evaluate(agent, env)["gold_value"] > tiltenv.evaluate(lambda c, r: r, env)["gold_value"]
    True
"""

from __future__ import annotations

from dataclasses import field

import torch

from baselines.base import config_dataclass
from baselines.pg import PGConfig, PolicyGradientAgent, Rollout, weighted_mean
from tiltenv._validation import check_choice

__all__ = ["REINFORCEConfig", "REINFORCE"]


@config_dataclass
class REINFORCEConfig(PGConfig):
    """REINFORCE (Williams 1992) with the KL in the reward by default."""

    baseline: str = field(
        default="mean", metadata={"help": "Reinforcement baseline b: 'mean' (batch mean of R) or 'none'."}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice("baseline", self.baseline, ("mean", "none"))


class REINFORCE(PolicyGradientAgent):
    """REINFORCE; see the module docstring."""

    name = "reinforce"
    config_class = REINFORCEConfig
    config: REINFORCEConfig

    def loss(self, logp: torch.Tensor, ro: Rollout) -> tuple[torch.Tensor, dict[str, float]]:
        R = ro.rewards
        b = weighted_mean(R, ro.weights).mean() if self.config.baseline == "mean" else 0.0
        logp_a = ro.at_actions(logp)
        # Williams (1992), REINFORCE with baseline: −(R − b) log π(a|x), averaged over samples (weights) and contexts
        pg_loss = -weighted_mean((R - b) * logp_a, ro.weights).mean()
        reg = self.divergence_loss(logp, ro)
        return pg_loss + reg, {"loss": pg_loss.item(), "div_loss": reg.item()}
