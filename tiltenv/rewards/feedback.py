"""Where labels come from, beyond the human Bradley–Terry labeler: AI feedback and a shifted label distribution.

Both run in the judge's process while the world is built (:func:`tiltenv.worlds.world.make_world`).

**AI feedback** (``label_kind="ai"``, RLAIF). The labeler is a *model*: a linear Bradley–Terry reward model
``ŵ`` fit (:func:`~tiltenv.rewards.proxy_base.fit_linear_bt`) on ``ai_labeler_labels`` pairs labeled by the task's human
labeler (its temperature, flips and bias), with a self-preference bias toward a style direction ``s ⟂ θ*``::

    P_AI(a ≻ b) = sigmoid(h_AI(x_a) − h_AI(x_b)),   h_AI(x) = <ŵ, x> + ai_bias · ||ŵ|| · <s, x>

(the labeler's own BT probability, so ``ai_bias = 1`` weighs style as much as its learned reward). The task's
``n_labels`` pairs are drawn from π_ref like human ones and labeled by it. Each AI label costs ``ai_label_cost``
(0.001 by default), a human one ``human_label_cost`` (1): :attr:`tiltenv.TaskConfig.label_cost`.

**Distribution shift** (``shift_length_scale < 1``). The labels' contexts keep only a fraction of their spread
along a hidden length-like direction ``ℓ = cos γ θ* + sin γ θ⊥'`` (γ = ``shift_length_angle``): the labelers only
ever compared responses of about the same "length", so the proxy never saw the gold's dependence on it at the
lengths an optimized policy reaches. Pairs are then drawn from π_ref over those contexts (the label policy).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tiltenv.rewards.labels import PreferenceData, make_preferences
from tiltenv.rewards.proxy_base import fit_linear_bt

__all__ = ["AILabeler", "fit_ai_labeler", "make_ai_preferences", "compress_along"]


@dataclass(frozen=True)
class AILabeler:
    """A labeler model: ``h_AI(x) = <w, x> + bias ||w|| <style, x>`` (float64)."""

    w: torch.Tensor
    style: torch.Tensor
    bias: float

    def utility(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(torch.float64)
        h = x @ self.w.to(x.device)
        if self.bias != 0.0:
            h = h + self.bias * float(self.w.norm()) * (x @ self.style.to(x.device))
        return h


def fit_ai_labeler(seed_prefs: PreferenceData, style: torch.Tensor, bias: float, l2: float = 1e-2) -> AILabeler:
    """Fit the labeler's reward model on its gold-labeled pairs (ridge BT, Newton) and attach its style bias."""
    w = fit_linear_bt(seed_prefs.x_a - seed_prefs.x_b, seed_prefs.label, l2)
    return AILabeler(w, style.to(torch.float64), float(bias))


def make_ai_preferences(
    candidates: torch.Tensor,
    ref_logp: torch.Tensor,
    labeler: AILabeler,
    *,
    generator: torch.Generator,
) -> PreferenceData:
    """One π_ref pair per context labeled by the AI labeler's own BT probability (temperature 1, no flips)."""
    return make_preferences(candidates, ref_logp, labeler.utility, temperature=1.0, flip_rate=0.0, generator=generator)


def compress_along(candidates: torch.Tensor, direction: torch.Tensor, scale: float) -> torch.Tensor:
    """``x + (scale − 1) <ℓ, x> ℓ``: keep ``scale`` of every candidate's spread along the unit direction ``ℓ``."""
    if scale == 1.0:
        return candidates
    ell = direction.to(candidates.device, candidates.dtype)
    return candidates + (scale - 1.0) * (candidates @ ell).unsqueeze(-1) * ell
