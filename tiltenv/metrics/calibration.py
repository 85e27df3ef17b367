"""Calibration of preference probabilities: part of :mod:`tiltenv.metrics` (conventions in its docstring).

A reward model predicts ``P(a ≻ b) = sigmoid(Δr̂ / τ̂)``; the simulated labeler's true probability is known
(``sigmoid(Δh / τ)`` for Bradley–Terry labels, mixed with flips). These functions compare the two, pair by pair
(1-D arrays over pairs, optional non-negative pair weights).

* :func:`bt_probability` — ``sigmoid(margin / τ)``; ``τ = 0`` is the deterministic step (1/2 at a tie),
  ``τ = inf`` is 1/2 everywhere.
* :func:`reliability_curve` — pairs binned by predicted probability (equal-width bins on [0, 1]): per bin the
  weight, the mean prediction and the mean true probability (Guo et al. 2017's reliability diagram).
* :func:`expected_calibration_error` — ``Σ_b w_b |mean pred_b − mean true_b|`` over those bins (ECE).
* :func:`fit_temperature` — the maximum-likelihood τ̂ of ``sigmoid(margin / τ)`` on labels (soft labels allowed),
  by Newton's method on κ = 1/τ (the NLL is convex in κ); κ ≤ 0 gives τ̂ = inf (the margins carry no signal).
"""

from __future__ import annotations

import math

import torch

from tiltenv.metrics._kernels import as_float64

__all__ = ["bt_probability", "reliability_curve", "expected_calibration_error", "fit_temperature"]


def _pairs(name: str, x) -> torch.Tensor:
    t = as_float64(x).reshape(-1)
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} must be finite (got {int((~torch.isfinite(t)).sum())} non-finite values).")
    return t


def _weights(w, n: int, device) -> torch.Tensor:
    if w is None:
        return torch.full((n,), 1.0 / max(n, 1), dtype=torch.float64, device=device)
    w = _pairs("weights", w).to(device)
    if w.shape[0] != n:
        raise ValueError(f"weights must have one entry per pair ({n}); got {w.shape[0]}.")
    if bool((w < 0).any()) or not float(w.sum()) > 0:
        raise ValueError("weights must be non-negative with a positive sum.")
    return w / w.sum()


def bt_probability(margin, temperature: float) -> torch.Tensor:
    """``sigmoid(margin / τ)`` as float64; ``τ = 0``: 1, 0 or 1/2 by the margin's sign; ``τ = inf``: 1/2."""
    m = _pairs("margin", margin)
    t = float(temperature)
    if math.isnan(t) or t < 0:
        raise ValueError(f"temperature must be in [0, inf] (got {temperature!r}).")
    if t == 0:
        return torch.where(m > 0, 1.0, torch.where(m < 0, 0.0, 0.5)).to(torch.float64)
    if math.isinf(t):
        return torch.full_like(m, 0.5)
    return torch.sigmoid(m / t)


def _check_probs(name: str, p: torch.Tensor) -> None:
    if bool(((p < 0) | (p > 1)).any()):
        raise ValueError(f"{name} must be probabilities in [0, 1] (got min {float(p.min()):g}, max {float(p.max()):g}).")


def reliability_curve(pred, true, n_bins: int = 10, weights=None) -> dict[str, torch.Tensor]:
    """Reliability diagram of predicted vs true preference probabilities.

    Args:
        pred: (n,) predicted probabilities ``P̂(a ≻ b)``; true: (n,) the labeler's true probabilities (or 0/1 labels).
        n_bins: equal-width bins on [0, 1] (the last bin includes 1).
        weights: optional (n,) non-negative pair weights (default: equal).
    Returns:
        dict of (n_bins,) float64 tensors: ``lo``, ``hi`` (bin edges), ``weight`` (share of the pairs' weight),
        ``pred`` and ``true`` (weighted means in the bin; nan for an empty bin).
    """
    p, q = _pairs("pred", pred), _pairs("true", true)
    if p.shape != q.shape:
        raise ValueError(f"pred and true must have the same number of pairs (got {p.shape[0]} and {q.shape[0]}).")
    _check_probs("pred", p)
    _check_probs("true", q)
    if not isinstance(n_bins, int) or isinstance(n_bins, bool) or n_bins < 1:
        raise ValueError(f"n_bins must be an integer >= 1 (got {n_bins!r}).")
    q = q.to(p.device)
    w = _weights(weights, p.shape[0], p.device)
    idx = torch.clamp((p * n_bins).long(), max=n_bins - 1)
    wb = torch.zeros(n_bins, dtype=torch.float64, device=p.device).scatter_add_(0, idx, w)
    sp = torch.zeros_like(wb).scatter_add_(0, idx, w * p)
    sq = torch.zeros_like(wb).scatter_add_(0, idx, w * q)
    safe = torch.where(wb > 0, wb, 1.0)
    edges = torch.linspace(0, 1, n_bins + 1, dtype=torch.float64, device=p.device)
    return {"lo": edges[:-1], "hi": edges[1:], "weight": wb,
            "pred": torch.where(wb > 0, sp / safe, math.nan), "true": torch.where(wb > 0, sq / safe, math.nan)}


def expected_calibration_error(pred, true, n_bins: int = 10, weights=None) -> float:
    """ECE: ``Σ_b weight_b · |mean pred_b − mean true_b|`` over the bins of :func:`reliability_curve`."""
    c = reliability_curve(pred, true, n_bins, weights)
    gap = torch.where(c["weight"] > 0, (c["pred"] - c["true"]).abs(), 0.0)
    return float((c["weight"] * gap).sum())


def fit_temperature(margin, label, weights=None, max_iter: int = 100, tol: float = 1e-12) -> float:
    """Maximum-likelihood temperature τ̂ of ``P(a ≻ b) = sigmoid(margin / τ)`` on (soft) labels.

    Minimizes the weighted NLL ``−Σ w [y log σ(κ m) + (1 − y) log σ(−κ m)]`` over κ = 1/τ ≥ 0 (convex in κ) by
    Newton's method. Returns ``1/κ̂``: ``inf`` when κ̂ ≤ 0 (the margins do not predict the labels), ``0`` when the
    labels are perfectly separated by the margins' sign (κ̂ → ∞).
    """
    m, y = _pairs("margin", margin), _pairs("label", label)
    if m.shape != y.shape:
        raise ValueError(f"margin and label must have the same number of pairs (got {m.shape[0]} and {y.shape[0]}).")
    _check_probs("label", y)
    y = y.to(m.device)
    w = _weights(weights, m.shape[0], m.device)
    g0 = float((w * (0.5 - y) * m).sum())  # gradient at κ = 0
    if g0 >= 0:
        return math.inf
    # a pair whose label disagrees with its margin's sign (or with a zero margin) stops κ at a finite value, unless
    # its weight is 0: a zero-weight pair is a dropped pair
    if not bool(((((m > 0) & (y < 1)) | ((m < 0) & (y > 0)) | (m == 0)) & (w > 0)).any()):
        return 0.0  # separable: the NLL keeps falling as κ grows
    kappa = 0.0
    for _ in range(max_iter):
        s = torch.sigmoid(kappa * m)
        grad = float((w * (s - y) * m).sum())
        hess = float((w * s * (1 - s) * m * m).sum())
        if hess <= 0:
            break
        step = grad / hess
        new = kappa - step
        if new <= 0:
            new = kappa / 2
        kappa = new
        if abs(step) < tol * max(1.0, kappa):
            break
    return math.inf if kappa <= 0 else 1.0 / kappa
