"""Simulated labels the proxy learns from (DESIGN §1).

Pairs ``(x_a, x_b)`` are two distinct candidates drawn from π_ref (Gumbel top-2, i.e. sampling without
replacement) in a fresh context each. The Bradley–Terry labeler says ``a ≻ b`` with probability
``sigmoid((h(x_a) - h(x_b)) / τ)`` (``τ = 0``: deterministic, ties broken by a fair coin), utility
``h = r* + λ <v, x>`` (``λ = 0`` by default; ``v ⟂ θ*`` a spurious direction), then every label is flipped
with probability ε. Pointwise labels are ``y = h(x) + noise · N(0, 1)`` for one π_ref draw per context.

The agent sees the resulting tensors (candidates and labels), never utilities or gold values.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

__all__ = ["PreferenceData", "PointwiseData", "make_preferences", "make_pointwise", "sample_from_ref"]


@dataclass(frozen=True)
class PreferenceData:
    """Pairwise preferences.

    Attributes:
        x_a, x_b: (n, d) float32 candidates of each pair.
        label: (n,) float32, 1.0 where ``a ≻ b`` was reported, else 0.0.
        ref_logp_a, ref_logp_b: (n,) float32 log π_ref of each candidate within its own context.
    """

    x_a: torch.Tensor
    x_b: torch.Tensor
    label: torch.Tensor
    ref_logp_a: torch.Tensor
    ref_logp_b: torch.Tensor

    def __len__(self) -> int:
        return int(self.label.shape[0])

    @property
    def chosen(self) -> torch.Tensor:
        """(n, d) the preferred candidate of each pair (TRL's ``chosen``)."""
        return torch.where(self.label.bool().unsqueeze(-1), self.x_a, self.x_b)

    @property
    def rejected(self) -> torch.Tensor:
        """(n, d) the dispreferred candidate of each pair (TRL's ``rejected``)."""
        return torch.where(self.label.bool().unsqueeze(-1), self.x_b, self.x_a)

    @property
    def ref_logp_chosen(self) -> torch.Tensor:
        return torch.where(self.label.bool(), self.ref_logp_a, self.ref_logp_b)

    @property
    def ref_logp_rejected(self) -> torch.Tensor:
        return torch.where(self.label.bool(), self.ref_logp_b, self.ref_logp_a)

    def subset(self, idx: torch.Tensor) -> "PreferenceData":
        return PreferenceData(self.x_a[idx], self.x_b[idx], self.label[idx], self.ref_logp_a[idx], self.ref_logp_b[idx])


@dataclass(frozen=True)
class PointwiseData:
    """Pointwise noisy scores: ``x`` (n, d) float32, ``y`` (n,) float32, ``ref_logp`` (n,) float32."""

    x: torch.Tensor
    y: torch.Tensor
    ref_logp: torch.Tensor

    def __len__(self) -> int:
        return int(self.y.shape[0])


def sample_from_ref(ref_logp: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """Indices of ``k`` distinct candidates per context drawn from π_ref without replacement (Gumbel top-k).

    Args:
        ref_logp: (n, K) log-probabilities.
    Returns:
        (n, k) int64 indices; column 0 is an exact π_ref draw.
    """
    u = torch.rand(ref_logp.shape, generator=generator, dtype=torch.float64, device=ref_logp.device)
    gumbel = -torch.log(-torch.log(u.clamp_min(1e-300)))
    return torch.topk(ref_logp.to(torch.float64) + gumbel, k, dim=-1).indices


def _gather(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """x (n, K, d), idx (n,) -> (n, d)."""
    return x[torch.arange(x.shape[0], device=x.device), idx]


def make_preferences(
    candidates: torch.Tensor,
    ref_logp: torch.Tensor,
    utility: Callable[[torch.Tensor], torch.Tensor],
    *,
    temperature: float,
    flip_rate: float,
    generator: torch.Generator,
) -> PreferenceData:
    """Draw one pair per context and label it with a Bradley–Terry labeler.

    Args:
        candidates: (n, K, d) fresh contexts.
        ref_logp: (n, K) π_ref log-probabilities of those contexts.
        utility: maps (n, d) candidates to (n,) float64 utilities h.
        temperature: τ ≥ 0 (0 = deterministic comparison).
        flip_rate: ε ∈ [0, 0.5).
    """
    idx = sample_from_ref(ref_logp, 2, generator)
    x_a, x_b = _gather(candidates, idx[:, 0]), _gather(candidates, idx[:, 1])
    lp_a = ref_logp.gather(1, idx[:, :1]).squeeze(1)
    lp_b = ref_logp.gather(1, idx[:, 1:]).squeeze(1)
    delta = utility(x_a) - utility(x_b)
    u = torch.rand(delta.shape, generator=generator, dtype=torch.float64, device=delta.device)
    if temperature > 0:
        prob = torch.sigmoid(delta / temperature)
    else:
        prob = torch.where(delta > 0, 1.0, torch.where(delta < 0, 0.0, 0.5)).to(torch.float64)
    label = u < prob
    flips = torch.rand(delta.shape, generator=generator, dtype=torch.float64, device=delta.device) < flip_rate
    label = label ^ flips
    return PreferenceData(x_a, x_b, label.to(torch.float32), lp_a, lp_b)


def make_pointwise(
    candidates: torch.Tensor,
    ref_logp: torch.Tensor,
    utility: Callable[[torch.Tensor], torch.Tensor],
    *,
    noise: float,
    generator: torch.Generator,
) -> PointwiseData:
    """One π_ref draw per context, scored ``y = h(x) + noise · N(0, 1)``."""
    idx = sample_from_ref(ref_logp, 1, generator)[:, 0]
    x = _gather(candidates, idx)
    eps = torch.randn(idx.shape, generator=generator, dtype=torch.float64, device=x.device)
    y = utility(x) + noise * eps
    return PointwiseData(x, y.to(torch.float32), ref_logp.gather(1, idx[:, None]).squeeze(1))
