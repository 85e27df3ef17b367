"""Proxy base layer: the :class:`Proxy` module, the registry, the training-data view and the two
label-free / closed-form kinds (``gold``, ``linear``).

Below :mod:`tiltenv.rewards.reward_models` (which registers the learned kinds into :data:`PROXIES`) and
:mod:`tiltenv.rewards.proxies` (the public facade that imports both). Import from :mod:`tiltenv.rewards.proxies`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

import torch

from tiltenv._validation import check_float, check_int, suggest

__all__ = [
    "fit_linear_bt",
    "Proxy",
    "GoldProxy",
    "LinearProxy",
    "TableProxy",
    "ProxySpec",
    "PROXIES",
    "register_proxy",
    "check_proxy",
    "ProxyContext",
]


def _operand(buffer: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A 0-dim float64 buffer as an operand of ``like``: as it is when ``like`` has dimensions (a 0-dim tensor does
    not promote it: the same numbers as ``buffer.to(like.dtype)``, without a cast kernel per call), cast when
    ``like`` is 0-dim itself (two 0-dim tensors would promote to float64)."""
    return buffer if like.dim() else buffer.to(like.dtype)


class Proxy(torch.nn.Module):
    """Base class: ``r̂(x) = (raw(x) - shift) / scale`` with the normalization in buffers."""

    kind: str = "base"

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("shift", torch.zeros((), dtype=torch.float64))
        self.register_buffer("scale", torch.ones((), dtype=torch.float64))

    def raw(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = self.raw(x)
        return (r - _operand(self.shift, r)) / _operand(self.scale, r)

    def set_normalization(self, shift: float, scale: float) -> None:
        if not scale > 0:
            raise ValueError(f"proxy scale must be > 0 (got {scale}); the proxy is constant under π_ref.")
        self.shift.fill_(float(shift))
        self.scale.fill_(float(scale))


class GoldProxy(Proxy):
    """The gold reward itself: ``a · σ*(<θ*, x>)`` (for oracle controls)."""

    kind = "gold"

    def __init__(self, theta: torch.Tensor, link: Callable[[torch.Tensor], torch.Tensor], gold_scale: float) -> None:
        super().__init__()
        self.register_buffer("theta", theta.to(torch.float64).clone())
        self.link = link
        self.gold_scale = float(gold_scale)

    def raw(self, x: torch.Tensor) -> torch.Tensor:
        z = x.to(torch.float64) @ self.theta.to(x.device)
        return (self.gold_scale * self.link(z)).to(x.dtype if x.is_floating_point() else torch.float64)


class LinearProxy(Proxy):
    """``r̂(x) = <w, x> + b``."""

    kind = "linear"

    def __init__(self, w: torch.Tensor, b: float = 0.0) -> None:
        super().__init__()
        self.register_buffer("w", w.to(torch.float64).clone())
        self.register_buffer("b", torch.tensor(float(b), dtype=torch.float64))

    def raw(self, x: torch.Tensor) -> torch.Tensor:
        r = x @ self.w.to(x.dtype)
        return r + _operand(self.b, r)


class TableProxy(Proxy):
    """Explicit arms: returns ``values[k]`` for the arm whose feature row is nearest to ``x``."""

    kind = "table"

    def __init__(self, features: torch.Tensor, values: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("features", features.to(torch.float64).clone())
        self.register_buffer("values", values.to(torch.float64).clone())

    def raw(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features.to(x.device, x.dtype)
        dist = ((x.unsqueeze(-2) - f) ** 2).sum(-1)  # (..., K)
        return self.values.to(x.device, x.dtype)[dist.argmin(-1)]


# --------------------------------------------------------------------------- training data view


@dataclass
class ProxyContext:
    """What a proxy builder may use (it runs in the judge's process).

    Attributes:
        d: candidate dimension.
        theta: the gold direction θ* (only oracle/parametric proxies may read it).
        gold: the gold reward function ``x -> r*(x)``.
        link, gold_scale: the gold's link and scale.
        preferences: :class:`tiltenv.rewards.labels.PreferenceData` (pairwise) or ``None``.
        pointwise: :class:`tiltenv.rewards.labels.PointwiseData` or ``None``.
        seed: integer seed of the proxy-initialization stream.
        device: torch device for training.
    """

    d: int
    theta: torch.Tensor
    gold: Callable[[torch.Tensor], torch.Tensor]
    link: Callable[[torch.Tensor], torch.Tensor]
    gold_scale: float
    preferences: Any
    pointwise: Any
    seed: int
    device: torch.device
    sample_ref: Callable[[int, torch.Generator], tuple[torch.Tensor, torch.Tensor]] | None = None


@dataclass(frozen=True)
class ProxySpec:
    """A registered proxy kind: its options dataclass and its builder."""

    name: str
    options: type
    build: Callable[[Any, ProxyContext], Proxy]
    needs_labels: bool = True
    description: str = ""
    #: ``skeleton(options, d) -> Proxy``: the untrained architecture, for loading cached parameters.
    #: Kinds with a skeleton are trained once per config and cached on disk; the others are instant.
    skeleton: Callable[[Any, int], Proxy] | None = None
    #: Option names that do not change the trained parameters (left out of the cache key).
    cache_ignore: tuple[str, ...] = ()


PROXIES: dict[str, ProxySpec] = {}
#: Proxy kinds that score token sequences (:mod:`tiltenv.worlds.tokens.reward_model`): valid on token tasks only, so not in
#: :data:`PROXIES` (whose kinds score feature vectors).
SEQUENCE_PROXY_KINDS = ("transformer",)


def register_proxy(spec: ProxySpec) -> ProxySpec:
    PROXIES[spec.name] = spec
    return spec


def parse_options(name: str, kwargs: dict[str, Any]):
    """Validate a proxy kind and its keyword arguments; returns the options dataclass instance."""
    if name in SEQUENCE_PROXY_KINDS and name not in PROXIES:
        raise ValueError(f"proxy {name!r} scores token sequences and exists only on token tasks (tiltenv/Tokens-v0, "
                         f"TokenConfig); this task's proxy must be one of {sorted(PROXIES)}.")
    if name not in PROXIES:
        raise ValueError(f"proxy must be one of {sorted(PROXIES)} (got {name!r})." + suggest(name, PROXIES))
    spec = PROXIES[name]
    valid = [f.name for f in fields(spec.options)]
    for key in kwargs:
        if key not in valid:
            raise TypeError(
                f"unknown option {key!r} for proxy {name!r}; valid options are {valid}." + suggest(key, valid)
            )
    return spec.options(**kwargs)


def check_proxy(name: str, kwargs: dict[str, Any]) -> None:
    parse_options(name, kwargs)


# --------------------------------------------------------------------------- gold


@dataclass(frozen=True)
class GoldOptions:
    """The gold proxy has no options."""


def _build_gold(opts: GoldOptions, ctx: ProxyContext) -> Proxy:
    return GoldProxy(ctx.theta, ctx.link, ctx.gold_scale)


register_proxy(ProxySpec("gold", GoldOptions, _build_gold, needs_labels=False, description="The true reward."))


# --------------------------------------------------------------------------- linear Bradley–Terry


@dataclass(frozen=True)
class LinearOptions:
    """Linear BT reward model options."""

    l2: float = 1e-2  # ridge strength λ on ||w||² / 2, relative to the number of labels
    max_iter: int = 50  # Newton iterations (IRLS)
    tol: float = 1e-10  # stop when the Newton decrement falls below this

    def __post_init__(self) -> None:
        object.__setattr__(self, "l2", check_float("proxy_kwargs['l2']", self.l2, low=0.0, low_open=True))
        object.__setattr__(self, "max_iter", check_int("proxy_kwargs['max_iter']", self.max_iter, low=1))
        object.__setattr__(self, "tol", check_float("proxy_kwargs['tol']", self.tol, low=0.0, low_open=True))


def fit_linear_bt(diff: torch.Tensor, y: torch.Tensor, l2: float, max_iter: int = 50, tol: float = 1e-10) -> torch.Tensor:
    """Ridge-regularized logistic regression on pair differences by Newton's method (float64).

    Minimizes ``mean_i [-y_i log σ(<w, Δ_i>) - (1-y_i) log σ(-<w, Δ_i>)] + l2/2 ||w||²`` — the
    Bradley–Terry NLL with ``Δ_i = x_a - x_b`` and ``y_i = 1{a ≻ b}`` (soft labels allowed).

    Args:
        diff: (n, d) pair differences.
        y: (n,) labels in [0, 1].
    Returns:
        w: (d,) float64.
    """
    diff = diff.to(torch.float64)
    y = y.to(torch.float64)
    n, d = diff.shape
    w = torch.zeros(d, dtype=torch.float64, device=diff.device)
    eye = torch.eye(d, dtype=torch.float64, device=diff.device)
    for _ in range(max_iter):
        p = torch.sigmoid(diff @ w)
        grad = diff.T @ (p - y) / n + l2 * w
        hess = (diff.T * (p * (1 - p))) @ diff / n + l2 * eye
        step = torch.linalg.solve(hess, grad)
        w = w - step
        if float(grad @ step) < tol:
            break
    return w


def _build_linear(opts: LinearOptions, ctx: ProxyContext) -> Proxy:
    if ctx.preferences is not None:
        prefs = ctx.preferences
        w = fit_linear_bt(prefs.x_a - prefs.x_b, prefs.label, opts.l2, opts.max_iter, opts.tol)
        return LinearProxy(w)
    pts = ctx.pointwise
    x = pts.x.to(torch.float64)
    xm = x.mean(0)
    ym = pts.y.to(torch.float64).mean()
    xc = x - xm
    n, d = x.shape
    w = torch.linalg.solve(xc.T @ xc / n + opts.l2 * torch.eye(d, dtype=torch.float64), xc.T @ (pts.y.to(torch.float64) - ym) / n)
    return LinearProxy(w, float(ym - xm @ w))


register_proxy(
    ProxySpec("linear", LinearOptions, _build_linear, description="Linear Bradley–Terry reward model (Newton/IRLS).")
)

