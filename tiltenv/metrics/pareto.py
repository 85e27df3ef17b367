"""Multi-objective exact metrics: part of :mod:`tiltenv.metrics` (conventions in its docstring).

``m`` gold rewards ``r*_1..r*_m`` over the same candidates are given together as ``golds`` of shape
``(m, C, K)`` (or a sequence of ``m`` arrays of shape ``(C, K)``; ``(m, K)`` is one context).

* **Per-dimension values** ``V_i(π) = E_x Σ_k π_k r*_i(x_k)`` and gains ``V_i(π) − V_i(π_ref)``;
  :func:`no_dimension_below_ref` is the check that no gain is negative.
* **Exact Pareto front at a KL budget κ.** The achievable set
  ``A_κ = {(V_1..V_m)(π) : mean KL(π‖π_ref) ≤ κ}`` is convex (V is linear in π, KL convex), so every
  Pareto-optimal point maximizes ``λ·V`` over ``A_κ`` for some weight λ on the simplex, and that maximizer is
  the tilt ``π ∝ π_ref e^{(λ·r*)/β}`` with the one β (shared by all contexts) where the mean KL equals κ
  (β = 0, the argmax of ``λ·r*``, when even that spends less than κ; where ``λ·r*`` then ties within a context at
  a boundary weight such as ``λ = (1, 0)``, the tie is resolved toward the dimensions of weight 0 in turn,
  lexicographically, with the budget left: every returned point is non-dominated). :func:`pareto_front` solves β to
  ~1e-12 relative KL by a safeguarded Newton / bisection on ``log β`` for a whole batch of weights at once
  (``d KL / d log β = −Var_{π_β}(λ·r*) / β²``), then reads every ``V_i`` off the tilt exactly (sums over K).
  The front is exact at each weight; how densely it is traced is the caller's grid (:func:`simplex_grid`).
* :func:`front_support` is ``h_κ(λ) = max_{π ∈ A_κ} λ·V(π)``; weights may differ per context (shape ``(C, m)``:
  context-type-dependent aggregation), then ``h`` is the best mean of ``λ_x·r*`` at mean KL ≤ κ.
* :func:`front_gap` — the gap of a policy to the front **along a weight direction** λ (its own: the weights
  it scalarizes): ``h_{KL(π)}(λ) − λ·V(π) ≥ 0``, zero exactly for the tilts of ``λ·r*``.
* :func:`hypervolume` — the exact hypervolume dominated by a point set above a reference point (recursive
  slicing; exact for any ``m``, polynomial for small sets); :func:`pareto_mask` — the non-dominated points.

Example:
    >>> import torch
    >>> from tiltenv.metrics import pareto_front, hypervolume
    >>> ref = torch.full((1, 3), -torch.log(torch.tensor(3.0, dtype=torch.float64)))
    >>> golds = torch.tensor([[[1.0, 0.0, 0.5]], [[0.0, 1.0, 0.5]]], dtype=torch.float64)   # m=2, C=1, K=3
    >>> front = pareto_front(ref, golds, kl=10.0, weights=[[1, 0], [0.5, 0.5], [0, 1]])   # unconstrained KL
    >>> front.values.round(3).tolist()
    [[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]]
    >>> round(hypervolume(front.values, ref_point=[0.0, 0.0]), 3)
    0.25
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from tiltenv.metrics._kernels import as_float64
from tiltenv.metrics.objective import tilt_logp
from tiltenv.metrics.policy import kl_divergence, policy_value

__all__ = [
    "ParetoFront",
    "dimension_values",
    "dimension_gains",
    "no_dimension_below_ref",
    "simplex_grid",
    "scalarize",
    "pareto_front",
    "front_support",
    "front_gap",
    "pareto_mask",
    "hypervolume",
]


# --------------------------------------------------------------------------------------------------
# inputs
# --------------------------------------------------------------------------------------------------


def _golds(golds: Any, device=None) -> torch.Tensor:
    """``(m, C, K)`` float64 (a ``(m, K)`` input is one context)."""
    if isinstance(golds, (list, tuple)) and golds and not isinstance(golds[0], (int, float)):
        golds = torch.stack([as_float64(g, device, name="golds[i]") for g in golds])
    g = as_float64(golds, device, name="golds")
    if g.ndim == 2:
        g = g.unsqueeze(1)
    if g.ndim != 3 or g.shape[0] < 1:
        raise ValueError(f"golds must have shape (m, C, K) — m gold rewards over the same candidates (got {tuple(g.shape)}).")
    if not bool(torch.isfinite(g).all()):
        raise ValueError("golds must be finite everywhere.")
    return g


def _ref(ref_logp: Any, C: int, K: int, device=None) -> torch.Tensor:
    ref = as_float64(ref_logp, device, name="ref_logp")
    if ref.ndim == 1:
        ref = ref.unsqueeze(0)
    if ref.ndim != 2 or ref.shape[-1] != K or ref.shape[0] not in (1, C):
        raise ValueError(f"ref_logp must have shape (C={C}, K={K}) or (K,) (got {tuple(ref.shape)}).")
    lse = torch.logsumexp(ref, -1)
    if not bool((lse.abs() <= 1e-6).all()):
        raise ValueError(f"ref_logp must be normalized log-probabilities (logsumexp up to {float(lse.abs().max()):.3g} off 0).")
    return ref.expand(C, K)


def _weights(weights: Any, m: int, C: int, *, per_context: bool = True) -> tuple[torch.Tensor, bool]:
    """``(L, m)`` or, when per-context, ``(C, m)``; returns (tensor, one_vector)."""
    w = as_float64(weights, name="weights")
    one = w.ndim == 1
    if one:
        w = w.unsqueeze(0)
    if w.ndim != 2 or w.shape[-1] != m:
        raise ValueError(f"weights must have shape (m={m},) or (n, m={m}) (got {tuple(as_float64(weights).shape)}).")
    if not bool(torch.isfinite(w).all()) or bool((w < 0).any()):
        raise ValueError(f"weights must be finite and non-negative (got {w.tolist()[:4]}).")
    if bool((w.sum(-1) <= 0).any()):
        raise ValueError("every weight vector needs a positive entry (a zero vector scalarizes nothing).")
    return w, one


def _kappa(kl: Any) -> float:
    try:
        k = float(kl)
    except (TypeError, ValueError):
        raise ValueError(f"kl must be a number ≥ 0 (got {kl!r}).") from None
    if math.isnan(k) or k < 0:
        raise ValueError(f"kl must be ≥ 0 (got {kl!r}).")
    return k


# --------------------------------------------------------------------------------------------------
# per-dimension values
# --------------------------------------------------------------------------------------------------


def dimension_values(logp, golds) -> np.ndarray:
    """``(V_1(π), …, V_m(π))``: the gold value of π in every dimension (float64 array of shape ``(m,)``)."""
    g = _golds(golds)
    return np.array([policy_value(logp, g[i]) for i in range(g.shape[0])])


def dimension_gains(logp, ref_logp, golds) -> np.ndarray:
    """``V_i(π) − V_i(π_ref)`` for every dimension (``(m,)``): negative = the dimension got worse than π_ref."""
    g = _golds(golds)
    return np.array([policy_value(logp, g[i]) - policy_value(ref_logp, g[i]) for i in range(g.shape[0])])


def no_dimension_below_ref(logp, ref_logp, golds, tol: float = 0.0) -> bool:
    """Whether every dimension's gold value is at least π_ref's (``min_i gain_i ≥ −tol``)."""
    return bool(dimension_gains(logp, ref_logp, golds).min() >= -float(tol))


# --------------------------------------------------------------------------------------------------
# weights and scalarization
# --------------------------------------------------------------------------------------------------


def simplex_grid(m: int, n: int) -> np.ndarray:
    """Every weight vector of the ``m``-simplex with coordinates in multiples of ``1/n`` (``C(n+m−1, m−1)`` rows)."""
    if not isinstance(m, int) or m < 1 or not isinstance(n, int) or n < 1:
        raise ValueError(f"simplex_grid needs integers m ≥ 1 and n ≥ 1 (got m={m!r}, n={n!r}).")
    rows = [c for c in itertools.product(range(n + 1), repeat=m - 1) if sum(c) <= n]
    return np.array([[*c, n - sum(c)] for c in rows], dtype=np.float64)[::-1] / n


def scalarize(golds, weights) -> torch.Tensor:
    """``λ·r`` per candidate: ``weights`` ``(m,)`` → ``(C, K)``; ``(L, m)`` → ``(L, C, K)``."""
    g = _golds(golds)
    w, one = _weights(weights, g.shape[0], g.shape[1])
    s = torch.einsum("lm,mck->lck", w.to(g.device), g)
    return s[0] if one else s


# --------------------------------------------------------------------------------------------------
# the exact front
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ParetoFront:
    """Points of the exact front at one KL budget, one per weight vector.

    Attributes:
        weights: ``(L, m)`` the weights λ (normalized to sum 1).
        values: ``(L, m)`` ``V_i`` of the tilt of ``λ·r*`` at the budget.
        betas: ``(L,)`` its temperature (0: the argmax already fits in the budget; inf: κ = 0).
        kl: ``(L,)`` its mean KL (= κ unless β = 0).
        support: ``(L,)`` ``λ·values`` = ``h_κ(λ)``.
    """

    weights: np.ndarray
    values: np.ndarray
    betas: np.ndarray
    kl: np.ndarray
    support: np.ndarray


def _tilt_stats(ref: torch.Tensor, S: torch.Tensor, beta: torch.Tensor):
    """Mean KL and mean Var of the tilts of the rows of ``S`` (L, C, K) at ``beta`` (L,), all in (0, inf)."""
    lp = torch.log_softmax(ref + S / beta[:, None, None], dim=-1)
    p = lp.exp()
    alive = p > 0
    kl = torch.where(alive, p * (lp - ref), 0.0).sum(-1).mean(-1)
    v = (p * S).sum(-1, keepdim=True)
    var = (p * (S - v).square()).sum(-1).mean(-1)
    return kl.clamp_min(0.0), var


def _solve_betas(ref: torch.Tensor, S: torch.Tensor, kappa: float, kl_max: torch.Tensor) -> torch.Tensor:
    """β_l with mean KL(π_{β_l}‖π_ref) = κ for every row l with 0 < κ < kl_max[l] (others: NaN, set by the caller)."""
    L = S.shape[0]
    betas = torch.full((L,), math.nan, dtype=torch.float64)
    inner = (kl_max > kappa) & (kappa > 0)
    idx = torch.nonzero(inner).flatten()
    if idx.numel() == 0:
        return betas
    Si = S[idx]
    p_ref = ref.exp()
    mean_ref = (p_ref * Si).sum(-1, keepdim=True)
    var_ref = (p_ref * (Si - mean_ref).square()).sum(-1).mean(-1)
    t = torch.log(torch.sqrt(var_ref.clamp_min(1e-300) / (2.0 * kappa)))  # KL ≈ Var_ref / (2β²) for small KL
    lo = torch.full_like(t, -math.inf)  # KL(lo) > κ
    hi = torch.full_like(t, math.inf)  # KL(hi) < κ
    active = torch.ones_like(t, dtype=torch.bool)
    for _ in range(200):
        if not bool(active.any()):
            break
        kl, var = _tilt_stats(ref, Si, t.exp())
        err = kl - kappa
        above = err > 0
        lo = torch.where(active & above, t, lo)
        hi = torch.where(active & ~above, t, hi)
        beta = t.exp()
        with torch.no_grad():
            slope = -var / beta.square() / kl.clamp_min(1e-300)
            step = -(torch.log(kl.clamp_min(1e-300)) - math.log(kappa)) / slope
        both = torch.isfinite(lo) & torch.isfinite(hi)
        step = torch.where(both, step, step.clamp(-5.0, 5.0))
        tn = t + step
        bad = ~torch.isfinite(tn) | (both & ((tn <= lo) | (tn >= hi)))
        tn = torch.where(bad & both, 0.5 * (lo + hi), tn)
        tn = torch.where(bad & ~both & torch.isinf(hi), t + 2.0, tn)
        tn = torch.where(bad & ~both & torch.isinf(lo), t - 2.0, tn)
        tn = tn.clamp(-700.0, 700.0)
        scale = torch.clamp(t.abs(), min=1.0)
        done = (err.abs() <= 1e-13 * kappa) | (both & ((hi - lo) <= 1e-14 * scale)) | ((tn - t).abs() <= 1e-16 * scale)
        t = torch.where(active & ~done, tn, t)  # a converged row keeps the point it was evaluated at
        active = active & ~done
    betas[idx] = t.exp()
    return betas


def _lexicographic(ref: torch.Tensor, g: torch.Tensor, s: torch.Tensor, kappa: float) -> torch.Tensor:
    """The maximizer of ``mean λ·r`` (``s``, (C, K)) at mean KL ≤ κ when its argmax fits in the budget (β = 0), with
    ties resolved toward the dimensions ``g[0], g[1], …`` (those λ gives weight 0) in turn, lexicographically.

    With β > 0 the maximizer is unique (KL is strictly convex and the budget binds). With β = 0 every policy on the
    argmax sets ``A_x`` of ``s`` within the budget is a maximizer; when a context has several, the tilt's share in
    proportion to π_ref is Pareto-optimal if every weight is positive, but can be dominated in a dimension of weight
    0 (issue 19: K = 3, κ = 0.6, λ = (1, 0)). Among those maximizers, the best ``V_i`` is again a tilt: on π_ref
    restricted to ``A_x`` and renormalized (``π'_ref = π_ref 1_A / Z_x``), since for π on ``A``,
    ``KL(π‖π_ref) = KL(π‖π'_ref) − log Z_x``, the budget left is ``κ + mean log Z_x``.
    """
    cur, budget = ref, float(kappa)
    for i in range(g.shape[0] + 1):
        lp = tilt_logp(cur, s, 0.0)  # the argmax set of s within cur's support, in proportion to cur
        on = lp > -math.inf
        log_z = torch.logsumexp(torch.where(on, cur, -math.inf), -1)  # (C,) ≤ 0
        budget = max(budget + float(log_z.mean()), 0.0)
        cur = lp  # π_ref restricted to the argmax sets, renormalized
        if i == g.shape[0] or budget <= 0.0:
            return cur
        s = g[i]
        kl_max = kl_divergence(tilt_logp(cur, s, 0.0), cur)
        if kl_max > budget:  # the next dimension uses the whole budget left: a unique tilt
            beta = float(_solve_betas(cur, s.unsqueeze(0), budget, torch.tensor([kl_max], dtype=torch.float64))[0])
            return tilt_logp(cur, s, beta)
    return cur


def _front(ref: torch.Tensor, g: torch.Tensor, W: torch.Tensor, kappa: float):
    """Tilts of ``W``-scalarized golds at mean KL κ. ``W``: (L, m) shared or (L, C, m) per context."""
    if W.ndim == 2:
        S = torch.einsum("lm,mck->lck", W, g)
    else:
        S = torch.einsum("lcm,mck->lck", W, g)
    L = S.shape[0]
    # β = 0: the argmax of λ·r within π_ref's support (ties share in proportion to π_ref)
    lp0 = [tilt_logp(ref, S[l], 0.0) for l in range(L)]
    kl_max = torch.tensor([kl_divergence(lp, ref) for lp in lp0], dtype=torch.float64)
    betas = _solve_betas(ref, S, kappa, kl_max)
    logps = []
    for l in range(L):
        if kappa == 0.0:
            betas[l] = math.inf
            logps.append(ref.clone())
        elif not bool(kl_max[l] > kappa):
            betas[l] = 0.0
            zero = (W[l] == 0).all(0) if W.ndim == 3 else W[l] == 0  # the dimensions λ ignores
            logps.append(_lexicographic(ref, g[zero], S[l], kappa))
        else:
            logps.append(tilt_logp(ref, S[l], float(betas[l])))
    lp = torch.stack(logps)  # (L, C, K)
    values = torch.einsum("lck,mck->lm", lp.exp(), g) / g.shape[1]
    kls = np.array([kl_divergence(lp[l], ref) for l in range(L)])
    return lp, values.cpu().numpy(), betas.cpu().numpy(), kls


def pareto_front(ref_logp, golds, kl, weights) -> ParetoFront:
    """The exact Pareto front of ``(V_1..V_m)`` at mean ``KL(π‖π_ref) ≤ kl``, one point per weight vector.

    Args:
        ref_logp: log π_ref, ``(C, K)`` or ``(K,)``.
        golds: ``(m, C, K)`` gold rewards (see the module docstring).
        kl: the budget κ ≥ 0 (mean KL over contexts).
        weights: ``(L, m)`` (or ``(m,)``) non-negative weight vectors; each is normalized to sum 1.
            :func:`simplex_grid` gives a grid over the simplex.
    Returns:
        :class:`ParetoFront`.
    Raises:
        ValueError: on a shape mismatch, unnormalized ``ref_logp``, non-finite golds, negative weights or κ.
    """
    g = _golds(golds)
    m, C, K = g.shape
    ref = _ref(ref_logp, C, K, g.device)
    W, _ = _weights(weights, m, C)
    W = W / W.sum(-1, keepdim=True)
    kappa = _kappa(kl)
    _, values, betas, kls = _front(ref, g, W.to(g.device), kappa)
    Wn = W.cpu().numpy()
    return ParetoFront(Wn, values, betas, kls, (Wn * values).sum(-1))


def front_support(ref_logp, golds, kl, weights) -> float:
    """``h_κ(λ) = max { mean_x λ_x·V_x(π) : mean KL(π‖π_ref) ≤ κ }`` for one weighting λ.

    ``weights``: ``(m,)`` shared by every context, or ``(C, m)``: one weight vector per context (e.g. by its
    context type). Not normalized: ``h`` is linear in λ.
    """
    g = _golds(golds)
    m, C, K = g.shape
    ref = _ref(ref_logp, C, K, g.device)
    w, one = _weights(weights, m, C)
    if not one and w.shape[0] != C:
        raise ValueError(f"per-context weights must have shape (C={C}, m={m}) (got {tuple(w.shape)}).")
    W = w.to(g.device).unsqueeze(0) if one else w.to(g.device).unsqueeze(0)  # (1, m) or (1, C, m)
    if W.ndim == 3:
        S = torch.einsum("lcm,mck->lck", W, g)
    else:
        S = torch.einsum("lm,mck->lck", W, g)
    lp, *_ = _front(ref, g, W, _kappa(kl))
    return float((lp[0].exp() * S[0]).sum(-1).mean())


def front_gap(logp, ref_logp, golds, weights) -> float:
    """Gap of π to the exact front along its weight direction λ: ``h_{KL(π)}(λ) − mean λ·V(π)`` (≥ 0 up to ~1e-10).

    ``weights``: the weights π scalarizes (``(m,)`` or per context ``(C, m)``); with the task's own aggregate
    weights this is the KL-matched gap of the aggregate gold. Zero for every tilt of ``λ·r*``.
    """
    g = _golds(golds)
    m, C, K = g.shape
    ref = _ref(ref_logp, C, K, g.device)
    w, one = _weights(weights, m, C)
    kappa = max(kl_divergence(logp, ref), 0.0)
    s = torch.einsum("m,mck->ck", w[0].to(g.device), g) if one else torch.einsum("cm,mck->ck", w.to(g.device), g)
    return front_support(ref, g, kappa, w[0] if one else w) - policy_value(logp, s)


# --------------------------------------------------------------------------------------------------
# dominance and hypervolume
# --------------------------------------------------------------------------------------------------


def _points(points: Any) -> np.ndarray:
    p = np.asarray(points.detach().cpu() if isinstance(points, torch.Tensor) else points, dtype=np.float64)
    if p.ndim == 1:
        p = p[None, :]
    if p.ndim != 2 or p.shape[1] < 1:
        raise ValueError(f"points must have shape (n, m) (got {p.shape}).")
    if not np.all(np.isfinite(p)):
        raise ValueError("points must be finite.")
    return p


def pareto_mask(points) -> np.ndarray:
    """Boolean mask of the non-dominated rows (maximization; equal rows: the first one is kept)."""
    p = _points(points)
    n = p.shape[0]
    keep = np.ones(n, dtype=bool)
    for i in range(n):
        ge = np.all(p >= p[i], axis=1)
        gt = np.any(p > p[i], axis=1)
        dominated = ge & gt
        same_before = np.all(p == p[i], axis=1) & (np.arange(n) < i)
        keep[i] = not (dominated.any() or same_before.any())
    return keep


def _hv(p: np.ndarray) -> float:
    """Hypervolume of positive points above the origin (recursive slicing over the last coordinate)."""
    n, m = p.shape
    if n == 0:
        return 0.0
    if m == 1:
        return float(p[:, 0].max())
    p = p[pareto_mask(p)]
    order = np.argsort(-p[:, -1], kind="stable")
    p = p[order]
    z = np.append(p[:, -1], 0.0)
    total = 0.0
    for i in range(p.shape[0]):
        h = z[i] - z[i + 1]
        if h > 0:
            total += _hv(p[: i + 1, :-1]) * h
    return total


def hypervolume(points, ref_point) -> float:
    """Exact hypervolume of the region dominated by ``points`` and dominating ``ref_point`` (maximization).

    Points that do not exceed the reference in every coordinate contribute only their part above it.
    Recursive slicing (HSO): exact for any ``m``; cost grows like ``n^(m−1)``, fine for fronts of a few
    hundred points in m ≤ 3.
    """
    p = _points(points)
    r = np.asarray(ref_point, dtype=np.float64).reshape(-1)
    if r.shape[0] != p.shape[1] or not np.all(np.isfinite(r)):
        raise ValueError(f"ref_point must be {p.shape[1]} finite numbers (got {np.asarray(ref_point).tolist()}).")
    q = p - r
    q = q[np.all(q > 0, axis=1)]
    return float(_hv(q))
