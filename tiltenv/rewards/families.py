"""Gold families: the hidden member of a test-split world (issue 17).

On the leaderboard's **test** split nothing that defines the gold is public beyond the task's *family*. A task
config with ``gold_family=True`` names the family (the one serving its ``link``) and this module states the
ranges; each world then draws, from its own seed (the ``family`` stream), a **member**: the link's shape
parameters, the gold scale ``a``, and the labeler's temperature τ and flip rate ε. The config's own
``link``/``gold_scale``/``label_temp``/``flip_rate`` are the family's centre; the member is never in any public
view (the public config carries no seed, and the member is drawn from the seed).

Families (each member is normalized to mean 0, variance 1 under ``z ~ N(0, 1)`` by the same quadrature as
:mod:`tiltenv.rewards.links`, and has the family's stated Hermite information exponent):

=============  ==========================  =========================================================  ====  ===
family         serves links                member ``raw(z)``                                          k*    gen
=============  ==========================  =========================================================  ====  ===
``hump``       hump                        ``z·exp(-(|z|/s)^q / q)``, ``s = peak`` (z ≥ 0) or          1     1
                                           ``peak·asymmetry`` (z < 0): peaks at ``z = peak``; q sets
                                           how sharply it falls (q = 2, peak 1.5, asymmetry 1: ``hump``)
``monotone``   linear, relu, tanh, step    ``base(z) + m·tanh(κ (z − c))``: non-decreasing               1     1
``hermite3``   he3                         ``tanh((He3 + b·He5/20)/s) − α tanh(z)`` (odd; α zeroes c1)   3     1
``hermite2``   he2, abs                    ``tanh((He2 + b·He4/12)/s)`` (even: c1 = c3 = 0)             2     2
=============  ==========================  =========================================================  ====  ===

Per member, besides the shape: ``gold_scale`` log-uniform in ``[0.7, 1.4] × centre``; ``label_temp`` uniform in
``[0, 0.3]``; ``flip_rate`` uniform in ``[max(0, ε − 0.05), min(0.45, ε + 0.05)]`` (ε the config's).

One implementation, used by the world builders (:mod:`tiltenv.worlds.world`; :mod:`tiltenv.worlds.multiobjective` draws one member per
dimension, from its own ``family`` stream), the analysis tools, the label-ceiling
baseline (which knows the family, not the member) and the tests.

Example:
    >>> from tiltenv.rewards.families import family_of_link, draw_member
    >>> fam = family_of_link("hump")
    >>> sorted(fam.ranges)
    ['asymmetry', 'peak', 'sharpness']
    >>> m = draw_member("hump", 1.0, 0.0, 0.0, seed=7)
    >>> m.link.info_exponent, 0.7 <= m.gold_scale <= 1.4
    (1, True)
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from tiltenv._validation import suggest
from tiltenv.rewards.links import LINKS, Link, _gauss_nodes, _he, _make, get_link

__all__ = ["GoldFamily", "Member", "FAMILIES", "family_of_link", "draw_member", "member_link", "fixed_member",
           "torch_member_link",
           "GOLD_SCALE_RANGE", "LABEL_TEMP_RANGE", "FLIP_RATE_SPREAD"]

#: Multiplicative range of the member's gold scale around the config's (log-uniform).
GOLD_SCALE_RANGE = (0.7, 1.4)
#: Range of the member's labeler temperature τ.
LABEL_TEMP_RANGE = (0.0, 0.3)
#: Half-width of the member's flip rate around the config's (clipped to [0, 0.45]).
FLIP_RATE_SPREAD = 0.05


# Every builder takes floats or (differentiable) 0-dim float64 tensors as parameters.
def _hump_raw(p: dict[str, Any]) -> Callable[[torch.Tensor], torch.Tensor]:
    peak, q, asym = p["peak"], p["sharpness"], p["asymmetry"]

    def raw(z: torch.Tensor) -> torch.Tensor:
        pos = (z >= 0).to(z.dtype)
        s = peak * (pos + (1 - pos) * asym)
        return z * torch.exp(-((z.abs() / s) ** q) / q)

    return raw


def _monotone_raw(base: str) -> Callable[[dict[str, float]], Callable[[torch.Tensor], torch.Tensor]]:
    b = LINKS[base]

    def make(p: dict[str, float]) -> Callable[[torch.Tensor], torch.Tensor]:
        m, k, c = p["mix"], p["kappa"], p["center"]
        return lambda z: b.raw(z) + m * torch.tanh(k * (z - c))

    return make


def _hermite3_raw(p: dict[str, float]) -> Callable[[torch.Tensor], torch.Tensor]:
    b, s = p["b"], p["s"]
    g = lambda z: torch.tanh((_he(3, z) + b * _he(5, z) / 20.0) / s)  # noqa: E731
    z, w = _gauss_nodes(())
    alpha = (g(z) * z * w).sum() / (torch.tanh(z) * z * w).sum()  # zeroes the first Hermite coefficient
    return lambda x: g(x) - alpha.to(x.dtype) * torch.tanh(x)


def _hermite2_raw(p: dict[str, float]) -> Callable[[torch.Tensor], torch.Tensor]:
    b, s = p["b"], p["s"]
    return lambda z: torch.tanh((_he(2, z) + b * _he(4, z) / 12.0) / s)


@dataclass(frozen=True)
class GoldFamily:
    """A family of links: its name, the links it serves, the ranges of its shape parameters (uniform), the
    stated exponents and how a member's raw function is built from its parameters."""

    name: str
    links: tuple[str, ...]
    ranges: dict[str, tuple[float, float]]
    info_exponent: int
    gen_exponent: int
    monotone: bool
    description: str
    build: Callable[[str, dict[str, float]], Callable[[torch.Tensor], torch.Tensor]] = field(repr=False)
    breakpoints: Callable[[str], tuple[float, ...]] = field(repr=False, default=lambda link: ())

    def public(self) -> dict[str, Any]:
        """What the public config's family says: name, ranges (shape and member scalars), exponents."""
        return {"family": self.name, "ranges": dict(self.ranges), "gold_scale_factor": GOLD_SCALE_RANGE,
                "label_temp": LABEL_TEMP_RANGE, "flip_rate_spread": FLIP_RATE_SPREAD,
                "info_exponent": self.info_exponent, "gen_exponent": self.gen_exponent}


FAMILIES: dict[str, GoldFamily] = {
    f.name: f
    for f in [
        GoldFamily("hump", ("hump",), {"peak": (1.0, 2.0), "sharpness": (1.5, 3.0), "asymmetry": (0.6, 1.6)}, 1, 1,
                   False, "z·exp(-(|z|/s)^q/q): peak position, sharpness (width) and left/right asymmetry",
                   lambda link, p: _hump_raw(p), lambda link: (0.0,)),
        GoldFamily("monotone", ("linear", "relu", "tanh", "step"), {"mix": (0.0, 1.0), "kappa": (0.5, 3.0),
                   "center": (-1.0, 1.0)}, 1, 1, True, "the base link plus m·tanh(κ(z − c)): non-decreasing",
                   lambda link, p: _monotone_raw(link)(p), lambda link: LINKS[link].breakpoints),
        GoldFamily("hermite3", ("he3",), {"b": (-0.5, 0.5), "s": (2.0, 4.0)}, 3, 1, False,
                   "tanh((He3 + b He5/20)/s) minus the multiple of tanh(z) that zeroes its first Hermite coefficient",
                   lambda link, p: _hermite3_raw(p)),
        GoldFamily("hermite2", ("he2", "abs"), {"b": (-0.5, 0.5), "s": (1.0, 3.0)}, 2, 2, False,
                   "tanh((He2 + b He4/12)/s): even, bounded", lambda link, p: _hermite2_raw(p)),
    ]
}


def family_of_link(link: str) -> GoldFamily:
    """The family serving ``link``."""
    for fam in FAMILIES.values():
        if link in fam.links:
            return fam
    served = sorted(k for f in FAMILIES.values() for k in f.links)
    raise ValueError(f"link {link!r} has no gold family; links with one are {served}." + suggest(str(link), served))


@functools.lru_cache(maxsize=256)
def _member_link_cached(link: str, items: tuple[tuple[str, float], ...]) -> Link:
    fam = family_of_link(link)
    params = dict(items)
    raw = fam.build(link, params)
    shown = ", ".join(f"{k}={v:.4g}" for k, v in items)
    return _make(f"{fam.name}[{shown}]", raw, fam.info_exponent, fam.gen_exponent, fam.monotone,
                 f"a member of the {fam.name} family of {link!r}: {fam.description}", fam.breakpoints(link))


def member_link(link: str, params: dict[str, float]) -> Link:
    """The normalized link of the member with shape ``params`` of ``link``'s family (a picklable description)."""
    fam = family_of_link(link)
    if set(params) != set(fam.ranges):
        raise ValueError(f"the {fam.name} family's parameters are {sorted(fam.ranges)} (got {sorted(params)}).")
    return _member_link_cached(link, tuple(sorted((k, float(v)) for k, v in params.items())))


@dataclass(frozen=True)
class Member:
    """One world's gold: the link (normalized), its shape parameters (``{}`` for a fixed link), the gold scale and
    the labeler's temperature and flip rate. ``spec()`` rebuilds it in another process."""

    base: str
    params: dict[str, float]
    link: Link
    gold_scale: float
    label_temp: float
    flip_rate: float

    def spec(self) -> dict[str, Any]:
        return {"base": self.base, "params": dict(self.params), "gold_scale": self.gold_scale,
                "label_temp": self.label_temp, "flip_rate": self.flip_rate}

    @staticmethod
    def from_spec(spec: dict[str, Any]) -> "Member":
        link = member_link(spec["base"], spec["params"]) if spec["params"] else get_link(spec["base"])
        return Member(spec["base"], dict(spec["params"]), link, float(spec["gold_scale"]), float(spec["label_temp"]),
                      float(spec["flip_rate"]))


def fixed_member(link: str, gold_scale: float, label_temp: float, flip_rate: float) -> Member:
    """The member a config with ``gold_family=False`` names: its own link (the registry's), scale and labeler."""
    return Member(link, {}, get_link(link), float(gold_scale), float(label_temp), float(flip_rate))


def draw_member(link: str, gold_scale: float, label_temp: float, flip_rate: float, *, seed: int) -> Member:
    """Draw a world's member of ``link``'s family from ``seed`` (the world's ``family`` stream).

    Args:
        link, gold_scale, flip_rate: the config's values (the family's centre); ``label_temp`` is drawn from
            :data:`LABEL_TEMP_RANGE` whatever the config's.
        seed: the draw's seed.
    """
    fam = family_of_link(link)
    rng = np.random.default_rng(int(seed))
    params = {k: float(rng.uniform(lo, hi)) for k, (lo, hi) in sorted(fam.ranges.items())}
    lo, hi = GOLD_SCALE_RANGE
    a = float(gold_scale) * math.exp(rng.uniform(math.log(lo), math.log(hi)))
    tau = float(rng.uniform(*LABEL_TEMP_RANGE))
    eps = float(rng.uniform(max(0.0, flip_rate - FLIP_RATE_SPREAD), min(0.45, flip_rate + FLIP_RATE_SPREAD)))
    return Member(link, params, member_link(link, params), a, tau, eps)


def torch_member_link(link: str, params: dict[str, torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
    """The normalized member of ``link``'s family with shape ``params`` (0-dim float64 tensors), differentiable in
    them: the same raw function and the same quadrature as :func:`member_link` (for fitting a member by maximum
    likelihood, as the label-ceiling baseline does)."""
    fam = family_of_link(link)
    if set(params) != set(fam.ranges):
        raise ValueError(f"the {fam.name} family's parameters are {sorted(fam.ranges)} (got {sorted(params)}).")
    raw = fam.build(link, params)
    z, w = _gauss_nodes(tuple(fam.breakpoints(link)))
    r = raw(z)
    mean = (r * w).sum()
    std = (((r - mean) ** 2) * w).sum().sqrt()
    return lambda x: (raw(x.to(torch.float64)) - mean) / std
