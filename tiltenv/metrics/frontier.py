"""Gold-tilt frontier: part of :mod:`tiltenv.metrics` (conventions in its docstring)."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

from tiltenv.metrics._kernels import (
    _Batch,
    _beta_vector,
    _full_support,
    _kl_rows,
    _map_rows,
    _support_max,
    _tilt_parts,
    _validate,
)

__all__ = ["tilt_frontier", "frontier_value", "kl_matched_gap"]


# --------------------------------------------------------------------------------------------------
# Gold-tilt frontier
# --------------------------------------------------------------------------------------------------


def _frontier_setup(ref_logp, gold):
    """Validate once; return batch and per-context summary means used by the frontier."""
    b = _Batch(ref_logp=ref_logp, gold=gold)
    ref, r = b.tensors

    def kern(ref, r):
        pi = torch.exp(ref)
        M = _support_max(ref, r)
        _, q0, d0 = _tilt_parts(ref, r, 0.0, M)
        kl0 = (q0 * d0).sum(-1)
        vref = (pi * r).sum(-1)
        varref = (pi * (r - vref.unsqueeze(-1)).square()).sum(-1)
        return pi.sum(-1), r.sum(-1), vref, M.squeeze(-1), kl0, varref

    sr, rs, vref, vmax, kl0, varref = _map_rows(kern, [ref, r], b.C)
    _validate(logps=[(sr, "ref_logp", ref, b.tols[0])], finite=[(rs, "sum of gold rewards", [("gold", r)])])
    return b, float(vref.mean()), float(vmax.mean()), float(kl0.mean()), float(varref.mean())


def _tilt_stats(b: _Batch, betas: Sequence[float]):
    """Mean over contexts of KL(π*_β‖π_ref), V(π*_β) and Var_{π*_β}(r) for each β (no checks)."""
    ref, r = b.tensors
    B = len(betas)

    def kern(ref, r):
        rows = r.shape[0]
        full = _full_support(ref)
        M = _support_max(ref, r, full)
        out = torch.empty((3, max(rows, ref.shape[0]), B), dtype=torch.float64, device=r.device)
        for j, bt in enumerate(betas):
            _, q, d = _tilt_parts(ref, r, float(bt), M, full)
            v = (q * r).sum(-1)
            out[0, :, j] = (q * d).sum(-1)
            out[1, :, j] = v
            out[2, :, j] = (q * (r - v.unsqueeze(-1)).square()).sum(-1)
        return out[0], out[1], out[2]

    kl, v, var = _map_rows(kern, [ref, r], b.C, cost=max(1, B), reduce=True)
    C = b.C
    return (kl / C).cpu().numpy(), (v / C).cpu().numpy(), (var / C).cpu().numpy()


def tilt_frontier(ref_logp, gold, betas):
    """KL and gold value of the gold tilt π*_β at each β (one β shared by all contexts).

    The curve ``β ↦ (mean KL(π*_β‖π_ref), mean V*(π*_β))`` is the Lagrangian solution of
    "maximize mean gold value subject to mean KL ≤ κ"; KL decreases and value decreases in β.

    Args:
        ref_logp: log π_ref, shape ``(C, K)`` or ``(K,)``.
        gold: gold rewards r*, same shape or broadcastable; finite.
        betas: scalar or 1-D array of ``B`` values in ``[0, inf]``.

    Returns:
        ``(kl, value)``: two float64 numpy arrays of shape ``(B,)`` (``(1,)`` for a scalar β).

    Raises:
        ValueError: on negative/NaN ``betas``, shape mismatch, unnormalized ``ref_logp``,
            non-finite ``gold``.
    """
    bs = _beta_vector(betas, "betas")
    b, *_ = _frontier_setup(ref_logp, gold)
    kl, v, _ = _tilt_stats(b, [float(x) for x in bs])
    return np.maximum(kl, 0.0), v


def _frontier_solve(b: _Batch, kappas: np.ndarray, vref, vmax, klmax, varref) -> np.ndarray:
    """Gold value of π*_β with mean KL(π*_β) = κ, for each κ (vectorized safeguarded Newton)."""
    out = np.empty_like(kappas)
    out[kappas <= 0] = vref
    out[kappas >= klmax] = vmax
    inner = np.nonzero((kappas > 0) & (kappas < klmax))[0]
    if inner.size == 0:
        return out
    kap = kappas[inner]
    # Small-KL asymptotics KL ≈ Var_ref / (2 β²) give the starting point.
    scale = math.sqrt(max(varref, 1e-300))
    t = np.log(scale / np.sqrt(2.0 * kap))
    t_lo = np.full_like(kap, -np.inf)  # KL(t_lo) > κ
    t_hi = np.full_like(kap, np.inf)  # KL(t_hi) < κ
    best_v = np.full_like(kap, np.nan)
    best_kl = np.full_like(kap, np.nan)
    best_t = t.copy()
    active = np.ones(kap.size, dtype=bool)
    for _ in range(200):
        idx = np.nonzero(active)[0]
        if idx.size == 0:
            break
        ti = t[idx]
        beta = np.exp(ti)
        kl, v, var = _tilt_stats(b, beta.tolist())
        best_v[idx], best_kl[idx], best_t[idx] = v, kl, ti
        k = kap[idx]
        err = kl - k
        above = err > 0  # KL too large: β must grow
        lo = np.where(above, ti, t_lo[idx])
        hi = np.where(above, t_hi[idx], ti)
        t_lo[idx], t_hi[idx] = lo, hi
        # Newton on log KL as a function of t = log β, with d KL / d t = −Var_{π*}(r) / β².
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            slope = -var / beta**2 / kl
            step = -(np.log(kl) - np.log(k)) / slope
        both = np.isfinite(lo) & np.isfinite(hi)
        step = np.where(both, step, np.clip(step, -10.0, 10.0))
        tn = ti + step
        bad = ~np.isfinite(tn) | (tn <= lo) | (tn >= hi)
        tn = np.where(bad & both, 0.5 * (lo + hi), tn)
        tn = np.where(bad & ~both & ~np.isfinite(hi), ti + 2.0, tn)
        tn = np.where(bad & ~both & ~np.isfinite(lo), ti - 2.0, tn)
        tn = np.clip(tn, -700.0, 700.0)
        scale_t = np.maximum(1.0, np.abs(ti))
        stop = (
            (np.abs(err) <= 1e-14 * k)
            | (both & ((hi - lo) <= 1e-13 * scale_t))
            | (np.abs(tn - ti) <= 1e-15 * scale_t)
        )
        t[idx] = tn
        active[idx] = ~stop
    beta = np.exp(best_t)
    # First-order correction along the frontier, where dV/dKL = β exactly.
    out[inner] = best_v + beta * (kap - best_kl)
    return out


def frontier_value(ref_logp, gold, kl):
    """Best mean gold value any policy reaches with mean KL(π‖π_ref) ≤ κ (the gold-tilt frontier).

    ``V_frontier(κ)`` is the gold value of π*_β where the shared β solves
    ``mean KL(π*_β‖π_ref) = κ`` (KL is decreasing in β; solved to ~1e-14 relative by a safeguarded
    Newton/bisection on log β, with a first-order correction using ``dV/dKL = β``). It is
    nondecreasing and concave in κ. ``κ = 0`` gives ``V*(π_ref)``; any ``κ`` at or beyond the KL of
    the β = 0 tilt (π_ref restricted to the gold argmax, KL = mean ``−log π_ref(argmax set)``) gives
    its value, the mean max of r* over the support of π_ref.

    Args:
        ref_logp: log π_ref, shape ``(C, K)`` or ``(K,)``.
        gold: gold rewards r*, same shape or broadcastable; finite.
        kl: κ ≥ 0 (``inf`` allowed), scalar or 1-D array.

    Returns:
        float for a scalar κ, else a float64 numpy array of the same shape as ``kl``.

    Raises:
        ValueError: on negative/NaN ``kl``, shape mismatch, unnormalized ``ref_logp``,
            non-finite ``gold``.
    """
    scalar = np.ndim(kl) == 0 if not isinstance(kl, torch.Tensor) else kl.ndim == 0
    kap = _beta_vector(kl, "kl")
    b, vref, vmax, klmax, varref = _frontier_setup(ref_logp, gold)
    vals = _frontier_solve(b, kap, vref, vmax, klmax, varref)
    return float(vals[0]) if scalar else vals


def kl_matched_gap(logp, ref_logp, gold) -> float:
    """KL-matched gold gap ``V_frontier(KL(π)) − V*(π)`` (≥ 0 up to ~1e-12).

    How much more gold the best policy spending the same mean KL as π would obtain; 0 for every
    gold tilt. If π leaves the support of π_ref (KL = inf), the frontier value is the mean max of
    gold over that support, and the gap can then be negative.

    Args:
        logp: log π, shape ``(C, K)`` or ``(K,)``.
        ref_logp: log π_ref, same shape or broadcastable.
        gold: gold rewards r*, same shape or broadcastable; finite.

    Returns:
        float.

    Raises:
        ValueError: on shape mismatch, unnormalized log-probabilities, non-finite ``gold``.
    """
    b = _Batch(logp=logp, ref_logp=ref_logp, gold=gold)
    lp, ref, r = b.tensors

    def kern(lp, ref, r):
        p = torch.exp(lp)
        return _kl_rows(lp, p, ref), (p * r).sum(-1), p.sum(-1)

    kl, v, s = _map_rows(kern, [lp, ref, r], b.C)
    _validate(logps=[(s, "logp", lp, b.tols[0])], finite=[(v, "policy value", [("gold", r)])])
    kappa = float(kl.mean())
    bf, vref, vmax, klmax, varref = _frontier_setup(ref, r)
    vf = _frontier_solve(bf, np.array([max(kappa, 0.0)]), vref, vmax, klmax, varref)[0]
    return float(vf - float(v.mean()))
