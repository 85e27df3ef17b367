"""PPO: clipped surrogate, several epochs of minibatches per batch, KL penalty in the reward.

Schulman et al. (2017), "Proximal Policy Optimization Algorithms", eq. 7 (maximized):

    L^CLIP(φ) = Ê[ min(ρ_t Â_t, clip(ρ_t, 1−ε, 1+ε) Â_t) ],   ρ_t = π_φ(a_t|x_t) / π_old(a_t|x_t)

with the RLHF reward of Ziegler et al. (2019) / InstructGPT (Ouyang et al. 2022, eq. 2),
``R = r̂ − β (log π_old(a|x) − log π_ref(a|x))`` (k1; other placements in :mod:`baselines.pg`).

Each episode is one step, so GAE(λ) reduces to ``Â = R − V(x)``; we use the batch mean of ``R`` as ``V``
(no learned critic) and whiten the advantages per batch (``whiten_advantages``), as CleanRL's ``norm_adv``.
Each batch of ``batch_size`` contexts is reused for ``num_epochs`` passes of ``num_minibatches`` shuffled
minibatches; the gradient norm is clipped at ``max_grad_norm`` (CleanRL's default 0.5).
"""

from __future__ import annotations

from dataclasses import field

import torch

from baselines.base import config_dataclass
from baselines.pg import PGConfig, PolicyGradientAgent, Rollout, weighted_mean
from tiltenv._validation import check_float, check_int

__all__ = ["PPOConfig", "PPO"]


@config_dataclass
class PPOConfig(PGConfig):
    """PPO (Schulman et al. 2017) for one-step bandit episodes."""

    learning_rate: float = field(default=0.05, metadata={"help": "Optimizer step size."})
    batch_size: int = field(default=1024, metadata={"help": "Contexts per rollout, split into num_minibatches."})
    max_grad_norm: float | None = field(default=0.5, metadata={"help": "Global gradient-norm clip (None: off)."})
    clip_coef: float = field(default=0.2, metadata={"help": "ε of the clipped ratio (TRL: cliprange)."})
    num_epochs: int = field(default=4, metadata={"help": "Passes over each batch (TRL: num_ppo_epochs)."})
    num_minibatches: int = field(default=4, metadata={"help": "Minibatches per pass (contexts split evenly)."})
    whiten_advantages: bool = field(default=True, metadata={"help": "Normalize advantages to mean 0, std 1 per batch."})

    def __post_init__(self) -> None:
        super().__post_init__()
        self.clip_coef = check_float("clip_coef", self.clip_coef, low=0.0, low_open=True)
        self.num_epochs = check_int("num_epochs", self.num_epochs, low=1)
        self.num_minibatches = check_int("num_minibatches", self.num_minibatches, low=1, high=self.batch_size)
        if not isinstance(self.whiten_advantages, bool):
            raise TypeError(f"whiten_advantages must be True or False (got {self.whiten_advantages!r}).")


class PPO(PolicyGradientAgent):
    """PPO; see the module docstring."""

    name = "ppo"
    config_class = PPOConfig
    config: PPOConfig

    def advantages(self, ro: Rollout) -> torch.Tensor:
        adv = ro.rewards - weighted_mean(ro.rewards, ro.weights).mean()  # one-step GAE with V = batch mean
        if self.config.whiten_advantages:
            std = weighted_mean(adv**2, ro.weights).mean().sqrt()
            adv = adv / (std + 1e-8)
        return adv

    def loss(self, logp: torch.Tensor, ro: Rollout, adv: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        adv = self.advantages(ro) if adv is None else adv
        eps = self.config.clip_coef
        ratio = torch.exp(ro.at_actions(logp) - ro.at_actions(ro.old_logp))
        # Schulman et al. (2017) eq. 7: −min(ρ Â, clip(ρ, 1−ε, 1+ε) Â)
        surrogate = torch.minimum(ratio * adv, ratio.clamp(1 - eps, 1 + eps) * adv)
        pg_loss = -weighted_mean(surrogate, ro.weights).mean()
        reg = self.divergence_loss(logp, ro)
        clipped = weighted_mean(((ratio - 1).abs() > eps).to(logp.dtype), ro.weights).mean()
        return pg_loss + reg, {"loss": pg_loss.item(), "div_loss": reg.item(), "clip_frac": clipped.item()}

    def update(self, ro: Rollout) -> dict[str, float]:
        cfg = self.config
        adv = self.advantages(ro)
        C = ro.rewards.shape[0]
        size = -(-C // cfg.num_minibatches)  # ceil: minibatches of equal size but the last
        for _ in range(cfg.num_epochs):
            perm = torch.randperm(C, generator=self.gen, device=self.device)
            shuffled, shuffled_adv = ro.subset(perm), adv[perm]  # one gather per epoch; minibatches are views
            for start in range(0, C, size):
                mb = shuffled.subset(slice(start, start + size))
                loss, stats = self.loss(self.net(mb.candidates, mb.ref_logp), mb, shuffled_adv[start:start + size])
                self.step(loss)
        return {**self.rollout_stats(ro), **stats}
