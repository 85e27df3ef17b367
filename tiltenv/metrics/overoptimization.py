"""Overoptimization (Gao et al., 2023): part of :mod:`tiltenv.metrics` (conventions in its docstring)."""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field

import numpy as np
import torch

from tiltenv.metrics._kernels import _short

__all__ = ["GaoFit", "gao_fit", "OveroptimizationReport", "overoptimization"]


# --------------------------------------------------------------------------------------------------
# Overoptimization (Gao et al., 2023)
# --------------------------------------------------------------------------------------------------

_GAO_FORMS = ("bon", "rl")
#: Relative size below which a fitted β is rounding noise (see :func:`gao_fit`).
_GAO_BETA_RTOL = 1e-9


@dataclass(frozen=True)
class GaoFit:
    """Least-squares fit of Gao et al.'s overoptimization law, with ``d = sqrt(KL)``.

    ``form="bon"``: ``gold_gain ≈ d (alpha − beta d)``; ``form="rl"``:
    ``gold_gain ≈ d (alpha − beta log d)``. ``d_star`` is the ``d`` at which the fitted curve
    peaks (``inf`` when ``beta <= 0``: the fit never turns down; for ``bon`` clipped at 0 when
    ``alpha <= 0``). ``r2`` is ``1 − SSE / Σ (y − ȳ)²`` over the fitted points (``nan`` if the gains
    are all equal).
    """

    form: str
    alpha: float
    beta: float
    r2: float
    d_star: float

    @property
    def kl_star(self) -> float:
        """KL at the fitted peak, ``d_star²``."""
        return self.d_star**2

    def predict(self, kl) -> np.ndarray:
        """Fitted gold gain at the given KL values (array-like, ≥ 0)."""
        d = np.sqrt(np.maximum(np.asarray(kl, dtype=np.float64), 0.0))
        if self.form == "bon":
            return d * (self.alpha - self.beta * d)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(d > 0, d * (self.alpha - self.beta * np.log(np.where(d > 0, d, 1.0))), 0.0)


def _curve(x, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    try:
        a = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a 1-D array of real numbers (got {_short(x)})") from None
    if a.ndim != 1:
        raise ValueError(f"{name} must be 1-D (got shape {a.shape})")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} must be finite (found {a[~np.isfinite(a)][0]})")
    return a


def _kl_curve(kl) -> np.ndarray:
    a = _curve(kl, "kl")
    if (a < -1e-9).any():
        raise ValueError(f"kl must be >= 0 (got {float(a.min())!r})")
    return np.maximum(a, 0.0)


def gao_fit(kl, gold_gain, form: str) -> GaoFit:
    """Fit Gao et al.'s (2023) scaling law for reward-model overoptimization, no intercept.

    ``d = sqrt(KL)``; ``"bon"``: ``gold_gain ≈ d (α − β d)`` (all points);
    ``"rl"``: ``gold_gain ≈ d (α − β log d)`` (points with ``d > 0`` only). ``gold_gain`` is the
    gold value minus the gold value at KL = 0.

    Args:
        kl: KL values ≥ 0, shape ``(N,)``.
        gold_gain: gold gains, shape ``(N,)``.
        form: ``"bon"`` or ``"rl"``.

    Returns:
        :class:`GaoFit` with ``d_star = max(0, α/(2β))`` (bon) or ``exp(α/β − 1)`` (rl); ``inf``
        if β ≤ 0. A β whose term ``|β|·max|x₂|`` (``x₂ = d²`` or ``d log d``) is at most 1e-9 of
        ``max|gold_gain|`` is rounding noise of the least-squares solve (a straight line fits β ≈ ±1e-17
        depending on the BLAS): it is reported as exactly 0, with ``d_star = inf``.

    Raises:
        ValueError: on an unknown ``form``, mismatched lengths, negative/non-finite values, or fewer
            than 2 distinct positive KL values.
    """
    if form not in _GAO_FORMS:
        close = difflib.get_close_matches(str(form), _GAO_FORMS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"form must be one of {_GAO_FORMS} (got {form!r}){hint}")
    k = _kl_curve(kl)
    y = _curve(gold_gain, "gold_gain")
    if k.shape != y.shape:
        raise ValueError(f"kl and gold_gain must have the same length (got {k.size} and {y.size})")
    d = np.sqrt(k)
    if form == "rl":
        m = d > 0
        d, y = d[m], y[m]
        X = np.stack([d, -d * np.log(d)], axis=1)
    else:
        X = np.stack([d, -d * d], axis=1)
    if np.unique(d[d > 0]).size < 2:
        raise ValueError(
            f"gao_fit needs at least 2 distinct points with kl > 0 (got {np.unique(d[d > 0]).size})"
        )
    coef, *_ = np.linalg.lstsq(X, y, rcond=None)
    alpha, beta = float(coef[0]), float(coef[1])
    resid = y - X @ coef
    sse = float(resid @ resid)
    sst = float(((y - y.mean()) ** 2).sum())
    r2 = 1.0 - sse / sst if sst > 0 else math.nan
    # A β within rounding of zero at the data's scale is no turning point: its term β·x₂ is below
    # _GAO_BETA_RTOL of the gains everywhere on the data (a peak, if any, lies ≳ 1/_GAO_BETA_RTOL times
    # beyond the largest d fitted), and its sign is whatever the BLAS's rounding made it.
    if abs(beta) * float(np.abs(X[:, 1]).max()) <= _GAO_BETA_RTOL * float(np.abs(y).max()):
        beta = 0.0
    if beta <= 0:
        d_star = math.inf
    elif form == "bon":
        d_star = max(0.0, alpha / (2.0 * beta))
    else:
        d_star = math.exp(alpha / beta - 1.0) if alpha / beta - 1.0 < 709 else math.inf
    return GaoFit(form=form, alpha=alpha, beta=beta, r2=r2, d_star=d_star)


@dataclass(frozen=True)
class OveroptimizationReport:
    """Summary of a gold-vs-KL curve (an agent's snapshots, or a tilt / best-of-n sweep).

    Attributes:
        peak_gold: highest gold value on the curve.
        final_gold: gold value at the largest KL.
        drop: ``peak_gold − final_gold`` (≥ 0).
        kl_at_peak: KL of the (lowest-KL) point attaining the peak.
        peak_index: index of that point in the caller's original order.
        final_index: index of the final point (the largest KL; the last of ties) in the caller's original order.
        proxy_rising_while_gold_falls: proxy at the final point exceeds proxy at the peak while
            gold dropped by more than ``tol`` (False when no proxy was given).
        overoptimized: ``drop > tol`` — decided on the measured drop only, never on a fitted β.
        fits: ``{"bon": GaoFit, "rl": GaoFit}`` on ``(KL, gold − gold at the lowest KL)``; a fit
            that is impossible (fewer than 2 distinct KL > 0 points) is a GaoFit of NaNs.
        tol: the drop threshold that was used.
    """

    peak_gold: float
    final_gold: float
    drop: float
    kl_at_peak: float
    peak_index: int
    final_index: int
    proxy_rising_while_gold_falls: bool
    overoptimized: bool
    fits: dict = field(default_factory=dict)
    tol: float = 0.0


def overoptimization(kl, gold, proxy=None, *, tol: float | None = None) -> OveroptimizationReport:
    """Detect and describe overoptimization along a curve of (KL, gold[, proxy]) points.

    Points are sorted by KL (stably). The peak is the first point of maximal gold; the final
    point is the one with the largest KL. Overoptimization means the measured drop
    ``peak − final`` exceeds ``tol``. A monotone curve is never flagged, even though a Gao fit on it
    can return ``beta > 0``. The fits use ``gold − gold[lowest KL]`` as the gain, so the curve
    should start at π_ref (KL = 0).

    Args:
        kl: KL of each point, shape ``(N,)``, ≥ 0.
        gold: gold value of each point, shape ``(N,)``.
        proxy: optional proxy value of each point, shape ``(N,)``.
        tol: absolute drop threshold. Default: ``1e-6 · (max(gold) − min(gold))``, i.e. a drop
            must exceed a millionth of the curve's gold range (rounding noise of exact metrics is
            far below; pass a larger ``tol`` for noisy, sampled curves).

    Returns:
        :class:`OveroptimizationReport`.

    Raises:
        ValueError: on mismatched lengths, empty input, negative KL, non-finite values,
            negative ``tol``.
    """
    k = _kl_curve(kl)
    g = _curve(gold, "gold")
    if k.size == 0:
        raise ValueError("kl and gold must contain at least one point (got 0)")
    if g.shape != k.shape:
        raise ValueError(f"kl and gold must have the same length (got {k.size} and {g.size})")
    p = None
    if proxy is not None:
        p = _curve(proxy, "proxy")
        if p.shape != k.shape:
            raise ValueError(f"proxy must have the same length as kl (got {p.size} and {k.size})")
    if tol is None:
        tol = 1e-6 * float(g.max() - g.min())
    else:
        tol = float(tol)
        if not tol >= 0:
            raise ValueError(f"tol must be >= 0 (got {tol!r})")
    order = np.argsort(k, kind="stable")
    ks, gs = k[order], g[order]
    ipk = int(np.argmax(gs))
    peak, final = float(gs[ipk]), float(gs[-1])
    drop = peak - final
    over = drop > tol
    rising = bool(p is not None and over and p[order][-1] > p[order][ipk])
    fits = {}
    for form in _GAO_FORMS:
        try:
            fits[form] = gao_fit(ks, gs - gs[0], form)
        except ValueError:
            fits[form] = GaoFit(form, math.nan, math.nan, math.nan, math.nan)
    return OveroptimizationReport(
        peak_gold=peak,
        final_gold=final,
        drop=drop,
        kl_at_peak=float(ks[ipk]),
        peak_index=int(order[ipk]),
        final_index=int(order[-1]),
        proxy_rising_while_gold_falls=rising,
        overoptimized=bool(over),
        fits=fits,
        tol=tol,
    )
