"""Link functions σ* of the single-index gold reward ``r*(x) = a · σ*(<θ*, x>)``.

Every link is a :class:`Link`: a raw function of ``z`` plus its Hermite information exponent ``k*``
(index of the first non-zero Hermite coefficient) and generative exponent (the smallest information
exponent reachable after any transformation of the label). The registry normalizes every raw function
once, by exact Gaussian quadrature, to mean 0 and variance 1 under ``z ~ N(0, 1)`` — one base
implementation shared by all presets (Open Bandit Pipeline's style).

Example:
    >>> import torch
    >>> from tiltenv.rewards.links import get_link
    >>> link = get_link("relu")
    >>> round(float(link(torch.zeros(1, dtype=torch.float64))[0]), 4)  # (0 - 1/sqrt(2 pi)) / sqrt(1/2 - 1/(2 pi))
    -0.6838
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from tiltenv._validation import suggest

__all__ = ["Link", "LINKS", "get_link", "gaussian_expectation", "hermite_coefficients", "HUMP_PEAK"]

#: ``z`` at which the ``hump`` link peaks.
HUMP_PEAK = 1.5


@functools.lru_cache(maxsize=None)
def _legendre(order: int) -> tuple[np.ndarray, np.ndarray]:
    return np.polynomial.legendre.leggauss(order)


@functools.lru_cache(maxsize=None)
def _gauss_nodes(breakpoints: tuple[float, ...], order: int = 48, half_width: int = 14):
    """Gauss–Legendre nodes/weights for ``∫ f(z) φ(z) dz`` split at the kinks of ``f``.

    Unit panels, split again at every non-smooth point, make the rule accurate to double precision for
    piecewise-smooth integrands (relu, abs, step) and steep ones (he3); beyond ±14 the Gaussian mass is
    below 1e-44.
    """
    edges = sorted({*range(-half_width, half_width + 1), *map(float, breakpoints)})
    x, w = _legendre(order)
    zs, ws = [], []
    for a, b in zip(edges[:-1], edges[1:]):
        zs.append(0.5 * (b - a) * x + 0.5 * (b + a))
        ws.append(0.5 * (b - a) * w)
    z = np.concatenate(zs)
    wt = np.concatenate(ws) * np.exp(-0.5 * z**2) / math.sqrt(2 * math.pi)
    return torch.from_numpy(z), torch.from_numpy(wt)


def gaussian_expectation(f: Callable[[torch.Tensor], torch.Tensor], breakpoints: tuple[float, ...] = ()) -> float:
    """``E f(z)`` for ``z ~ N(0, 1)`` by piecewise Gauss–Legendre quadrature (float64)."""
    z, w = _gauss_nodes(tuple(breakpoints))
    return float((f(z) * w).sum())


def _he(n: int, z: torch.Tensor) -> torch.Tensor:
    """Probabilists' Hermite polynomial He_n(z) by the three-term recurrence."""
    h0, h1 = torch.ones_like(z), z
    if n == 0:
        return h0
    for k in range(1, n):
        h0, h1 = h1, z * h1 - k * h0
    return h1


@dataclass(frozen=True)
class Link:
    """A normalized link ``σ*`` with its exponents.

    Attributes:
        name: registry key.
        raw: unnormalized function of a float64/float32 torch tensor.
        info_exponent: Hermite information exponent k* of the link.
        gen_exponent: generative exponent (Damian et al. 2024).
        monotone: whether σ* is non-decreasing (no overoptimization is possible under a monotone gold
            and a proxy that ranks by the same direction).
        description: one line.
        breakpoints: points where ``raw`` is not smooth (for exact quadrature).
        mean, std: normalization constants, ``σ*(z) = (raw(z) - mean) / std``.
    """

    name: str
    raw: Callable[[torch.Tensor], torch.Tensor]
    info_exponent: int
    gen_exponent: int
    monotone: bool
    description: str
    breakpoints: tuple[float, ...] = ()
    mean: float = field(default=0.0)
    std: float = field(default=1.0)

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        return (self.raw(z) - self.mean) / self.std

    def hermite(self, n_max: int = 5) -> np.ndarray:
        """Normalized Hermite coefficients ``c_n = E[σ*(z) He_n(z)] / sqrt(n!)`` for n = 0..n_max."""
        return hermite_coefficients(self, n_max)


def hermite_coefficients(f: Callable[[torch.Tensor], torch.Tensor] | Link, n_max: int = 5) -> np.ndarray:
    bps = f.breakpoints if isinstance(f, Link) else ()
    return np.array(
        [gaussian_expectation(lambda z, n=n: f(z) * _he(n, z), bps) / math.sqrt(math.factorial(n))
         for n in range(n_max + 1)]
    )


def _squashed_he3(z: torch.Tensor) -> torch.Tensor:
    return torch.tanh((z**3 - 3 * z) / 3.0)


# The multiple of tanh that cancels the squashed He3's first Hermite coefficient.
_HE3_TANH = gaussian_expectation(lambda z: _squashed_he3(z) * z) / gaussian_expectation(lambda z: torch.tanh(z) * z)


def _make(name, raw, k, g, monotone, description, breakpoints=()) -> Link:
    mean = gaussian_expectation(raw, breakpoints)
    var = gaussian_expectation(lambda z: (raw(z) - mean) ** 2, breakpoints)
    return Link(name, raw, k, g, monotone, description, tuple(breakpoints), mean, math.sqrt(var))


LINKS: dict[str, Link] = {
    link.name: link
    for link in [
        _make("linear", lambda z: z, 1, 1, True, "σ(z) = z."),
        _make("relu", torch.relu, 1, 1, True, "max(z, 0), normalized.", (0.0,)),
        _make("tanh", torch.tanh, 1, 1, True, "tanh(z), normalized."),
        _make("step", lambda z: (z > 0).to(z.dtype), 1, 1, True, "1{z > 0}, normalized (= sign z).", (0.0,)),
        _make("he2", lambda z: z**2 - 1, 2, 2, False, "He2(z) = z^2 - 1 (even: weighting cannot help)."),
        _make(
            "he3",
            lambda z: _squashed_he3(z) - _HE3_TANH * torch.tanh(z),
            3,
            1,
            False,
            "tanh(He3(z)/3) minus the multiple of tanh(z) that zeroes its first Hermite coefficient "
            "(bounded, so E exp(r/β) is finite).",
        ),
        _make("abs", torch.abs, 2, 2, False, "|z|, normalized.", (0.0,)),
        _make(
            "hump",
            lambda z: z * torch.exp(-0.5 * (z / HUMP_PEAK) ** 2),
            1,
            1,
            False,
            f"z·exp(-z²/(2·{HUMP_PEAK}²)): rises, peaks at z = {HUMP_PEAK}, falls ('too much of a good thing').",
        ),
    ]
}


def get_link(name: str) -> Link:
    """Look up a link by name; a wrong name gets the valid ones and the closest match."""
    try:
        return LINKS[name]
    except (KeyError, TypeError):
        raise ValueError(f"link must be one of {sorted(LINKS)} (got {name!r})." + suggest(str(name), LINKS)) from None
