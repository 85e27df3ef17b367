"""The policy class of the trained baselines: a learned tilt of the reference policy.

    log π(k|x) = log π_ref(k|x) + f_φ(x_k) − log Σ_j π_ref(j|x) e^{f_φ(x_j)}

``f_φ`` scores one candidate: linear (``<w, x>``, no bias: a constant cancels in the softmax) or a small
MLP. The last layer starts at zero, so an untrained policy *is* π_ref (KL = 0). The closed-form optimum of
the KL-regularized objective on a reward ``r`` is ``f = r/β``; with a linear proxy and a linear ``f`` that
optimum lies inside the class, so any gap to it is optimization error.

Example:
    >>> import torch
    >>> from baselines.policy import Policy
    >>> pi = Policy(d=4)
    >>> cand, ref = torch.randn(3, 8, 4), torch.full((3, 8), -torch.log(torch.tensor(8.0)))
    >>> bool(torch.allclose(pi(cand, ref), ref))   # zero-initialized: π = π_ref
    True
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from baselines.base import as_tensor, output_device
from tiltenv._validation import check_choice, check_int

__all__ = ["Policy", "PolicySnapshot", "HEADS", "ACTIVATIONS", "check_head"]

HEADS = ("linear", "mlp")
ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU, "gelu": nn.GELU}


def check_head(head: str, hidden_sizes: Any, activation: str) -> tuple[int, ...]:
    """Validate the policy fields of a config; returns ``hidden_sizes`` as a tuple of ints."""
    check_choice("policy", head, HEADS)
    check_choice("activation", activation, sorted(ACTIVATIONS))
    if isinstance(hidden_sizes, int):
        hidden_sizes = (hidden_sizes,)
    if not isinstance(hidden_sizes, Sequence) or isinstance(hidden_sizes, str):
        raise TypeError(f"hidden_sizes must be a tuple of positive integers (got {hidden_sizes!r}).")
    sizes = tuple(check_int("hidden_sizes[i]", h, low=1) for h in hidden_sizes)
    if head == "mlp" and not sizes:
        raise ValueError("policy='mlp' needs at least one hidden layer in hidden_sizes (e.g. (32, 32)).")
    return sizes


class Policy(nn.Module):
    """``log π = log π_ref + f_φ(x)`` normalized over the K candidates.

    Args:
        d: candidate dimension.
        head: ``"linear"`` or ``"mlp"``.
        hidden_sizes: MLP widths (``head="mlp"``).
        activation: ``"tanh"``, ``"relu"`` or ``"gelu"``.
        seed: seeds the hidden layers' initialization (the output layer starts at zero).
        device: torch device.
    """

    def __init__(
        self,
        d: int,
        head: str = "linear",
        hidden_sizes: Sequence[int] = (32, 32),
        activation: str = "tanh",
        seed: int = 0,
        device: torch.device | str = "cpu",
    ) -> None:
        super().__init__()
        sizes = check_head(head, hidden_sizes, activation)
        self.d, self.head = int(d), head
        gen = torch.Generator().manual_seed(int(seed))
        layers: list[nn.Module] = []
        width = self.d
        if head == "mlp":
            for h in sizes:
                lin = nn.Linear(width, h)
                # PyTorch's default nn.Linear initialization, drawn from our own generator (bit-reproducible)
                bound = 1.0 / width**0.5
                with torch.no_grad():
                    lin.weight.uniform_(-bound, bound, generator=gen)
                    lin.bias.uniform_(-bound, bound, generator=gen)
                layers += [lin, ACTIVATIONS[activation]()]
                width = h
        out = nn.Linear(width, 1, bias=False)
        nn.init.zeros_(out.weight)
        layers.append(out)
        self.net = nn.Sequential(*layers).to(device)

    @property
    def device(self) -> torch.device:
        return self.net[-1].weight.device

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """``f_φ(x)``: ``(..., d)`` → ``(...)``, the learned log-ratio up to the per-context normalizer."""
        return self.net(x).squeeze(-1)

    def forward(self, candidates: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
        """``(C, K, d)``, ``(C, K)`` → ``(C, K)`` log-probabilities (differentiable)."""
        return torch.log_softmax(ref_logp + self.score(candidates), dim=-1)

    @torch.no_grad()
    def log_probs(self, candidates: Any, ref_logp: Any) -> torch.Tensor:
        """Like ``forward`` without gradients, for any input (numpy/torch, any device); output on the input's
        device (CPU for numpy)."""
        out_device = output_device(candidates)
        cand = as_tensor(candidates, self.device)
        ref = as_tensor(ref_logp, self.device)
        if cand.ndim != 3 or ref.shape != cand.shape[:2] or cand.shape[-1] != self.d:
            raise ValueError(
                f"expected candidates (C, K, d={self.d}) and ref_logp (C, K); got {tuple(cand.shape)} and {tuple(ref.shape)}."
            )
        return self(cand, ref).to(out_device)

    def frozen(self) -> "PolicySnapshot":
        return PolicySnapshot(self)


class PolicySnapshot:
    """A frozen copy of a :class:`Policy`: ``snapshot(candidates, ref_logp) -> (C, K)`` log-probabilities."""

    def __init__(self, policy: Policy) -> None:
        self.module = copy.deepcopy(policy).eval().requires_grad_(False)

    def __call__(self, candidates: Any, ref_logp: Any) -> torch.Tensor:
        return self.module.log_probs(candidates, ref_logp)

    policy = __call__

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.module.state_dict()
