"""Exact metrics for KL-regularized policy optimization over K candidates (DESIGN.md §3).

This module is the single implementation of every number that the environments, the baselines and
the leaderboard scorer report. All functions are pure (rliable style): arrays in, numbers out, no
state, no randomness except the explicitly seeded bootstrap.

Conventions
-----------
* **Per-context arrays** have shape ``(C, K)``: ``C`` contexts, ``K`` candidates each. A 1-D array of
  shape ``(K,)`` is one context. Arrays passed together must have the same ``K``; their number of
  contexts must agree, except that an array with a single context (shape ``(K,)`` or ``(1, K)``) is
  broadcast to all ``C`` contexts (e.g. one uniform ``ref_logp`` for every context).
* **Inputs** are array-likes: numpy arrays, torch tensors (any device), lists, of any real dtype.
  Everything is computed in torch ``float64`` on the device of the first torch tensor argument (CPU
  otherwise); float64 numpy arrays are used without a copy.
* **Log-probabilities** (``logp``, ``ref_logp``) are normalized over the last axis. ``-inf`` means
  probability 0 and is handled exactly (``0 * log 0 = 0``, ``0 * (-inf) = 0``). They are checked:
  ``|sum(exp(logp)) - 1|`` must be at most 1e-6 for float64 inputs (1e-4 for float32, 3e-2 for
  16-bit floats). Use :func:`log_normalize` to turn logits into log-probabilities.
* **Rewards** (``rewards``, ``gold``, ``proxy``) must be finite everywhere, including candidates
  with zero probability.
* **Aggregates** over contexts are plain means and are returned as Python ``float``; functions with a
  ``per_context=True`` option return the per-context values as a float64 tensor of shape ``(C,)``
  (``(1,)`` for a single 1-D context) instead.
* **beta** (the KL coefficient / tilt temperature) lies in ``[0, inf]``; both ends are handled as
  exact limits, never by plugging in a tiny or huge number.
* Every invalid input raises :class:`ValueError` naming the argument, the offending value or shape and
  the valid range.

Implementation notes: per-context computations run over chunks of contexts (about 2 MB per array on
CPU) so that temporaries stay in cache; there are no Python loops over individual contexts. When an
input tensor requires grad (and grad mode is on), the computation runs in one piece and stays
differentiable.

Definitions (π a policy, π_ref the reference policy, r a reward, β ≥ 0):

* value ``V(π) = E_x Σ_k π_k r_k``
* ``KL(π‖π_ref) = Σ_k π_k (log π_k − log π_ref,k)``; ``χ²(π‖π_ref) = Σ_k π_k²/π_ref,k − 1``
* gold tilt ``π*_β ∝ π_ref e^{r/β}``; soft value ``J*_β = β log Σ_k π_ref,k e^{r_k/β}``
* regularized objective ``J_β(π) = V(π) − β KL(π‖π_ref)``; Gibbs variational principle:
  ``J*_β − J_β(π) = β KL(π‖π*_β) ≥ 0``.
"""

from __future__ import annotations

import difflib
import math
import warnings
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch

__all__ = [
    "as_float64",
    "log_normalize",
    "policy_value",
    "kl_divergence",
    "chi2_divergence",
    "tilt_logp",
    "chi2_tilt_logp",
    "soft_value",
    "regularized_objective",
    "value_gap",
    "normalized_score",
    "tilt_frontier",
    "frontier_value",
    "kl_matched_gap",
    "reward_variance",
    "best_of_n_logp",
    "best_of_n_kl_bound",
    "ranking_accuracy",
    "harm_aware_accuracies",
    "proxy_gold_correlation",
    "iqm",
    "aggregate_mean",
    "stratified_bootstrap_ci",
    "GaoFit",
    "gao_fit",
    "OveroptimizationReport",
    "overoptimization",
]

_INF = float("inf")
_NEG_INF = float("-inf")

#: Elements per array per chunk, by device type. CPU: 2 MB of float64, so temporaries stay in L2/L3 cache.
#: A GPU wants the opposite: one launch per op over the whole batch (a 2 MB chunk is a few µs of work
#: against ~5-10 µs of launch overhead per kernel), so chunks there only bound the temporaries' memory
#: (2^26 float64 = 512 MB per array). Other accelerators (mps, xpu, ...) get the GPU size too.
_CHUNK_ELEMS = {"cpu": 1 << 18, "cuda": 1 << 26}
_CHUNK_ELEMS_CPU = _CHUNK_ELEMS["cpu"]
_CHUNK_ELEMS_DEVICE = _CHUNK_ELEMS["cuda"]

# --------------------------------------------------------------------------------------------------
# Conversion and validation helpers
# --------------------------------------------------------------------------------------------------


def _norm_tol(dtype) -> float:
    """Tolerance on |sum(exp(logp)) - 1| for log-probabilities that arrived in ``dtype``."""
    if isinstance(dtype, torch.dtype):
        low = {torch.float32: 1e-4, torch.float16: 3e-2, torch.bfloat16: 3e-2}
        return low.get(dtype, 1e-6)
    return {np.dtype(np.float32): 1e-4, np.dtype(np.float16): 3e-2}.get(np.dtype(dtype), 1e-6)


def _as_float64_with_dtype(x, device, name):
    if isinstance(x, torch.Tensor):
        if x.is_complex():
            raise ValueError(f"{name} must be real-valued (got complex tensor of dtype {x.dtype})")
        dev = x.device if device is None else torch.device(device)
        return x.to(device=dev, dtype=torch.float64), x.dtype
    try:
        arr = np.asarray(x)
    except (ValueError, TypeError) as exc:  # ragged lists and the like
        raise ValueError(f"{name} must be a real-valued array-like ({exc})") from None
    if arr.dtype.kind not in "biuf":
        raise ValueError(
            f"{name} must be a real-valued numeric array (got dtype {arr.dtype}: {_short(x)})"
        )
    orig = arr.dtype
    if arr.dtype != np.float64:
        arr = arr.astype(np.float64)
    if any(s < 0 for s in arr.strides):
        arr = np.ascontiguousarray(arr)
    if not arr.flags.writeable:
        # torch warns about read-only numpy buffers; metrics never write into their inputs.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            t = torch.from_numpy(arr)
    else:
        t = torch.from_numpy(arr)
    if device is not None:
        t = t.to(device)
    return t, orig


def _short(x) -> str:
    s = repr(x)
    return s if len(s) <= 60 else s[:57] + "..."


def as_float64(x, device=None, *, name: str = "x") -> torch.Tensor:
    """Convert an array-like to a torch float64 tensor, without copying when possible.

    Args:
        x: numpy array, torch tensor, Python scalar or (nested) list of real numbers, any shape.
        device: target device; default: the tensor's own device, or CPU for non-tensors.
        name: argument name used in error messages.

    Returns:
        ``torch.Tensor`` of dtype float64 and the same shape as ``x``. A float64 numpy array (or a
        float64 tensor already on ``device``) shares memory with the input.

    Raises:
        ValueError: if ``x`` is not real-valued numeric (complex, strings, ragged lists, ...).
    """
    return _as_float64_with_dtype(x, device, name)[0]


def _first_device(values):
    for v in values:
        if isinstance(v, torch.Tensor):
            return v.device
    return None


class _Batch:
    """Per-context arrays converted to 2-D float64 tensors with a common K and broadcastable C."""

    __slots__ = ("tensors", "tols", "C", "K", "one_d", "device", "names")

    def __init__(self, **named):
        names = list(named)
        device = _first_device(named.values())
        tensors, tols = [], []
        one_d = True
        for name in names:
            t, dtype = _as_float64_with_dtype(named[name], device, name)
            if t.ndim == 1:
                t = t.unsqueeze(0)
            elif t.ndim == 2:
                one_d = False
            else:
                raise ValueError(
                    f"{name} must have shape (C, K) or (K,) (got shape {tuple(t.shape)})"
                )
            if t.shape[0] == 0 or t.shape[1] == 0:
                raise ValueError(
                    f"{name} must contain at least one context and one candidate "
                    f"(got shape {tuple(t.shape)})"
                )
            tensors.append(t)
            tols.append(_norm_tol(dtype))
        K = tensors[0].shape[1]
        C = max(t.shape[0] for t in tensors)
        for name, t in zip(names, tensors):
            if t.shape[1] != K or t.shape[0] not in (1, C):
                shapes = ", ".join(
                    f"{n} {tuple(named[n].shape) if hasattr(named[n], 'shape') else tuple(tt.shape)}"
                    for n, tt in zip(names, tensors)
                )
                raise ValueError(
                    f"shape mismatch: {shapes}; per-context arrays must share the shape (C, K) "
                    f"(an array with one context, (K,) or (1, K), is broadcast to all C contexts)"
                )
        self.tensors, self.tols, self.C, self.K = tensors, tols, C, K
        self.one_d, self.device, self.names = one_d, tensors[0].device, names

    def __getitem__(self, i):
        return self.tensors[i]


def _needs_grad(tensors) -> bool:
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def _rows_per_chunk(K: int, device: torch.device, cost: int = 1) -> int:
    """Contexts per chunk for rows of ``K`` on ``device`` (``cost``: temporaries per element, relative)."""
    budget = _CHUNK_ELEMS.get(torch.device(device).type, _CHUNK_ELEMS_DEVICE)
    return max(1, budget // max(1, K * cost))


def _cumsum_last(x: torch.Tensor) -> torch.Tensor:
    """``torch.cumsum(x, -1)`` for (rows, K), with a scan suited to the device.

    CPU: the plain innermost scan. Elsewhere, short rows make torch's innermost-dim scan kernel slow
    (on an H100, 12.8 of best-of-n's 15.9 ms at 10^6 × 16 float64): scan the transposed layout along
    its outer dimension instead (one thread per row, K sequential adds, coalesced), at the price of two
    transposing copies. Additions happen in the same order, and infinities stay exact (no matmul).
    """
    if x.device.type == "cpu" or x.ndim != 2:
        return torch.cumsum(x, -1)
    return _cumsum_outer(x)


def _cumsum_outer(x: torch.Tensor) -> torch.Tensor:
    """Row-wise cumsum of (rows, K) as a scan along the outer dimension of the transposed layout."""
    return torch.cumsum(x.t().contiguous(), 0).t()


def _validate(logps=(), finite=()) -> None:
    """All of a metric's input/result checks with one host read (one device sync on a GPU).

    ``logps``: ``(stat, name, arr, tol)`` as :func:`_check_logp`; ``finite``: ``(result, what, named)`` as
    :func:`_check_finite_result`. Only when a check fails are they re-run one by one, in order, to
    raise the precise error.
    """
    flags = [((stat - 1.0).abs() <= tol).all() for stat, _, _, tol in logps]
    flags += [torch.isfinite(res).all() for res, _, _ in finite]
    if not flags:
        return
    if bool(torch.stack(flags).all() if len(flags) > 1 else flags[0]):
        return
    for args in logps:
        _check_logp(*args)
    for args in finite:
        _check_finite_result(*args)


def _map_rows(fn, tensors, C: int, *, cost: int = 1, reduce: bool = False):
    """Apply ``fn`` to chunks of contexts.

    ``fn(*chunks)`` returns a tuple of tensors whose leading dimension is the chunk's number of rows
    (or 1 when they only depend on broadcast inputs). Without ``reduce`` the chunk results are
    written into ``(C, ...)`` outputs; with ``reduce`` they are summed over rows.
    """
    K = tensors[0].shape[-1]
    rows = _rows_per_chunk(K, tensors[0].device, cost)
    if C <= rows or _needs_grad(tensors):
        outs = fn(*tensors)
        if reduce:
            return tuple(o.expand(C, *o.shape[1:]).sum(0) for o in outs)
        return outs
    results = None
    for s in range(0, C, rows):
        e = min(C, s + rows)
        outs = fn(*[t if t.shape[0] == 1 else t[s:e] for t in tensors])
        if reduce:
            outs = [o.expand(e - s, *o.shape[1:]).sum(0) for o in outs]
            results = outs if results is None else [a + b for a, b in zip(results, outs)]
        else:
            if results is None:
                results = [
                    torch.empty((C,) + tuple(o.shape[1:]), dtype=o.dtype, device=o.device)
                    for o in outs
                ]
            for res, o in zip(results, outs):
                res[s:e] = o
    return tuple(results)


def _check_logp(stat: torch.Tensor, name: str, arr: torch.Tensor, tol: float) -> None:
    """``stat`` holds sum(exp(arr)) per context; raise a clear error where it is not 1."""
    ok = (stat - 1.0).abs() <= tol
    if bool(ok.all()):
        return
    i = int((~ok).nonzero()[0, 0])
    row = arr[i] if arr.shape[0] > 1 else arr[0]
    where = f"context {i}" if arr.shape[0] > 1 else "the context"
    if bool(torch.isnan(row).any()):
        msg = f"{name} contains NaN (in {where})"
    elif bool((row == _INF).any()):
        msg = f"{name} contains +inf (in {where}); log-probabilities must be <= 0"
    elif bool((row == _NEG_INF).all()):
        msg = f"{name} gives zero total probability in {where} (every entry is -inf)"
    else:
        msg = (
            f"{name} must hold normalized log-probabilities over the last axis "
            f"(|sum(exp({name})) - 1| <= {tol:g}), but sum(exp({name})) = {float(stat[i]):.10g} "
            f"in {where}; normalize logits with tiltenv.metrics.log_normalize"
        )
    raise ValueError(msg)


def _check_finite_arrays(named) -> None:
    for name, arr in named:
        fin = torch.isfinite(arr)
        if not bool(fin.all()):
            idx = (~fin).nonzero()[0]
            bad = float(arr[tuple(idx)])
            loc = f"context {int(idx[0])}, candidate {int(idx[-1])}" if arr.ndim == 2 else ""
            raise ValueError(f"{name} must be finite (found {bad} at {loc})")


def _check_finite_result(result: torch.Tensor, what: str, named) -> None:
    """A result that must be finite is not: blame a non-finite input, else report an overflow."""
    if bool(torch.isfinite(result).all()):
        return
    _check_finite_arrays(named)
    raise ValueError(
        f"{what} overflowed float64 (inputs are finite but too large in magnitude: "
        f"{', '.join(n for n, _ in named)})"
    )


def _check_beta(beta, name: str = "beta") -> float:
    if isinstance(beta, (torch.Tensor, np.ndarray)) and beta.ndim > 0:
        size = beta.numel() if isinstance(beta, torch.Tensor) else beta.size
        if size != 1:
            raise ValueError(f"{name} must be a scalar (got shape {tuple(beta.shape)})")
        beta = beta.reshape(())
    try:
        b = float(beta)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a real number in [0, inf] (got {_short(beta)})") from None
    if math.isnan(b):
        raise ValueError(f"{name} must be a number in [0, inf] (got nan)")
    if b < 0:
        raise ValueError(f"{name} must be >= 0 (got {b!r})")
    return b


def _beta_vector(betas, name: str = "betas") -> np.ndarray:
    if isinstance(betas, torch.Tensor):
        betas = betas.detach().cpu().numpy()
    try:
        arr = np.asarray(betas, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be real numbers in [0, inf] (got {_short(betas)})") from None
    if arr.ndim > 1:
        raise ValueError(f"{name} must be a scalar or 1-D (got shape {arr.shape})")
    arr = np.atleast_1d(arr)
    if arr.size == 0:
        raise ValueError(f"{name} must contain at least one value (got an empty array)")
    if np.isnan(arr).any():
        raise ValueError(f"{name} must be numbers in [0, inf] (got nan)")
    if (arr < 0).any():
        raise ValueError(f"{name} must be >= 0 (got {float(arr[arr < 0][0])!r})")
    return arr


def _out(result: torch.Tensor, per_context: bool):
    return result if per_context else float(result.mean())


def _shape_out(t: torch.Tensor, one_d: bool) -> torch.Tensor:
    return t[..., 0, :] if one_d else t


# --------------------------------------------------------------------------------------------------
# Row kernels (operate on 2-D chunks; documented via the public functions that use them)
# --------------------------------------------------------------------------------------------------


def _kl_rows(logp, p, ref):
    """Σ_k p (logp − ref) with 0·(anything) = 0 where p = 0; +inf where p > 0 = π_ref.

    ``nan_to_num`` maps exactly the 0·(±inf) and (-inf) − (-inf) cases to 0 (inputs are validated
    NaN-free separately) and is much cheaper than a masked ``where``.
    """
    return torch.nan_to_num(p * (logp - ref), nan=0.0, posinf=_INF, neginf=_NEG_INF).sum(-1)


def _full_support(ref) -> bool:
    """True when no candidate in this chunk has π_ref = 0 (the common fast path)."""
    return bool(ref.amin() > _NEG_INF)


def _support_max(ref, r, full=None):
    """Max of r over the support of π_ref, shape (rows, 1)."""
    if full is None:
        full = _full_support(ref)
    rows = max(ref.shape[0], r.shape[0])
    if full:
        return r.amax(-1, keepdim=True).expand(rows, 1)
    return torch.where(ref > _NEG_INF, r, _NEG_INF).amax(-1, keepdim=True)


def _scaled_gap(r, M, beta: float, full: bool):
    """u = (r − M)/β ≤ 0 (exactly 0 on the argmax; clamped off the support of π_ref)."""
    inv = 1.0 / beta
    u = (r - M) * inv if math.isfinite(inv) else (r - M) / beta
    return u if full else u.clamp(max=0.0)


def _tilt_core(ref, r, beta: float, M, full: bool):
    """For 0 < β < inf: u, z = log π_ref + u, unnormalized weights e = e^z and log S = log Σ e.

    Rows whose sum underflows (the argmax has π_ref below ~1e-280) are recomputed with a
    max-shifted log-sum-exp; for those rows ``e`` is returned already normalized and ``S`` = 1.
    """
    u = _scaled_gap(r, M, beta, full)
    z = ref + u
    e = torch.exp(z)
    S = e.sum(-1, keepdim=True)
    small = (S < 1e-280).squeeze(-1)
    if bool(small.any()):
        lse = torch.logsumexp(z[small], -1, keepdim=True)
        e = e.index_put((small,), torch.exp(z[small] - lse))
        S = S.index_put((small,), torch.ones_like(lse))
        logS = torch.log(S).index_put((small,), lse)
    else:
        logS = torch.log(S)
    return u, z, e, S, logS


def _soft_rows(ref, pi, r, beta: float, M=None, full=None):
    """J*_β = β log Σ π_ref e^{r/β} per row (exact limits at β = 0 and β = inf)."""
    if beta == _INF:
        return (pi * r).sum(-1)
    if full is None:
        full = _full_support(ref)
    if M is None:
        M = _support_max(ref, r, full)
    m = M.squeeze(-1)
    if beta == 0.0:
        return m
    u, _, _, S, logS = _tilt_core(ref, r, beta, M, full)
    J = m + beta * logS.squeeze(-1)
    # S ≈ 1 (β large against the reward spread): log S loses digits; use log1p(Σ π expm1(u)).
    fix = (logS > -1e-3).squeeze(-1)
    if bool(fix.any()):
        pf = pi if pi.shape[0] == 1 else pi[fix]
        a = (pf * torch.expm1(u[fix])).sum(-1)
        J = J.index_put((fix,), m[fix] + beta * torch.log1p(a))
    return J


def _tilt_parts(ref, r, beta: float, M=None, full=None):
    """Tilted policy π*_β per row: (log q, q, d) with d = log q − log π_ref (0 where q = 0)."""
    if beta == _INF:
        return ref, torch.exp(ref), torch.zeros_like(ref)
    if full is None:
        full = _full_support(ref)
    if M is None:
        M = _support_max(ref, r, full)
    if beta == 0.0:
        z = torch.where((r == M) & (ref > _NEG_INF), ref, _NEG_INF)
        lse = torch.logsumexp(z, -1, keepdim=True)
        logq = z - lse
        return logq, torch.exp(logq), torch.where(z > _NEG_INF, -lse, 0.0)
    u, z, e, S, logS = _tilt_core(ref, r, beta, M, full)
    return z - logS, e / S, u - logS


# --------------------------------------------------------------------------------------------------
# Policy metrics
# --------------------------------------------------------------------------------------------------


def log_normalize(logits) -> torch.Tensor:
    """Log-softmax over the last axis: ``logp = logits − logsumexp(logits)``.

    Args:
        logits: shape ``(C, K)`` or ``(K,)``; ``-inf`` entries get probability 0.

    Returns:
        float64 tensor of the same shape holding normalized log-probabilities.

    Raises:
        ValueError: on NaN or ``+inf`` logits, a context whose logits are all ``-inf``, or a bad shape.
    """
    b = _Batch(logits=logits)
    x = b[0]

    def kern(x):
        lse = torch.logsumexp(x, -1, keepdim=True)
        return x - lse, lse.squeeze(-1)

    out, lse = _map_rows(kern, [x], b.C)
    if not bool(torch.isfinite(lse).all()):
        i = int((~torch.isfinite(lse)).nonzero()[0, 0])
        row = x[i]
        if bool(torch.isnan(row).any()):
            raise ValueError(f"logits contains NaN (context {i})")
        if bool((row == _INF).any()):
            raise ValueError(f"logits contains +inf (context {i}); logits must be < +inf")
        raise ValueError(f"logits are all -inf in context {i}; at least one must be finite")
    return _shape_out(out, b.one_d)


def policy_value(logp, rewards, per_context: bool = False):
    """Expected reward of a policy: ``V(π) = E_x Σ_k π_k r_k``.

    Args:
        logp: log π, shape ``(C, K)`` or ``(K,)``, normalized over the last axis.
        rewards: r, same shape (or broadcastable, see module docs); finite.
        per_context: return the per-context values instead of their mean.

    Returns:
        float (mean over contexts), or float64 tensor of shape ``(C,)`` if ``per_context``.

    Raises:
        ValueError: on shape mismatch, unnormalized/NaN ``logp`` or non-finite ``rewards``.
    """
    b = _Batch(logp=logp, rewards=rewards)
    lp, r = b.tensors

    def kern(lp, r):
        p = torch.exp(lp)
        return (p * r).sum(-1), p.sum(-1)

    v, s = _map_rows(kern, [lp, r], b.C)
    _validate(logps=[(s, "logp", lp, b.tols[0])], finite=[(v, "policy value", [("rewards", r)])])
    return _out(v, per_context)


def kl_divergence(logp, ref_logp, per_context: bool = False):
    """Reverse KL divergence ``KL(π‖π_ref) = Σ_k π_k (log π_k − log π_ref,k)``, mean over contexts.

    Terms with ``π_k = 0`` contribute 0. If π puts positive mass on a candidate with
    ``π_ref,k = 0`` the divergence of that context is ``+inf`` (and so is the mean); no error is
    raised for this, since it is a legitimate (infinitely bad) policy.

    Args:
        logp: log π, shape ``(C, K)`` or ``(K,)``.
        ref_logp: log π_ref, same shape or broadcastable.
        per_context: return the per-context values instead of their mean.

    Returns:
        float ≥ 0 (may be ``inf``), or float64 tensor of shape ``(C,)``.

    Raises:
        ValueError: on shape mismatch or unnormalized / NaN log-probabilities.
    """
    b = _Batch(logp=logp, ref_logp=ref_logp)
    lp, ref = b.tensors

    def kern(lp, ref):
        p = torch.exp(lp)
        return _kl_rows(lp, p, ref), p.sum(-1), torch.exp(ref).sum(-1)

    kl, s, sr = _map_rows(kern, [lp, ref], b.C)
    _validate(logps=[(s, "logp", lp, b.tols[0]), (sr, "ref_logp", ref, b.tols[1])])
    return _out(kl, per_context)


def chi2_divergence(logp, ref_logp, per_context: bool = False):
    """Chi-squared divergence ``χ²(π‖π_ref) = Σ_k π_k² / π_ref,k − 1``, mean over contexts.

    ``+inf`` for a context where π puts mass on a candidate with ``π_ref,k = 0``.

    Args:
        logp: log π, shape ``(C, K)`` or ``(K,)``.
        ref_logp: log π_ref, same shape or broadcastable.
        per_context: return the per-context values instead of their mean.

    Returns:
        float ≥ 0 (may be ``inf``), or float64 tensor of shape ``(C,)``.

    Raises:
        ValueError: on shape mismatch or unnormalized / NaN log-probabilities.
    """
    b = _Batch(logp=logp, ref_logp=ref_logp)
    lp, ref = b.tensors

    def kern(lp, ref):
        t = torch.nan_to_num(torch.exp(2.0 * lp - ref), nan=0.0, posinf=_INF)
        return t.sum(-1) - 1.0, torch.exp(lp).sum(-1), torch.exp(ref).sum(-1)

    chi, s, sr = _map_rows(kern, [lp, ref], b.C)
    _validate(logps=[(s, "logp", lp, b.tols[0]), (sr, "ref_logp", ref, b.tols[1])])
    return _out(chi, per_context)


def reward_variance(logp, rewards, per_context: bool = False):
    """Reward variance under the policy, ``Var_{k~π}(r_k)`` per context, mean over contexts.

    Razin et al. ("What makes a reward model a good teacher?"): low reward variance under the
    policy flattens the RLHF objective and slows optimization regardless of accuracy. Pass
    ``logp = ref_logp`` for the variance under π_ref.

    Args:
        logp: log π, shape ``(C, K)`` or ``(K,)``.
        rewards: r, same shape or broadcastable; finite.
        per_context: return the per-context values instead of their mean.

    Returns:
        float ≥ 0, or float64 tensor of shape ``(C,)``.

    Raises:
        ValueError: on shape mismatch, unnormalized ``logp`` or non-finite ``rewards``.
    """
    b = _Batch(logp=logp, rewards=rewards)
    lp, r = b.tensors

    def kern(lp, r):
        p = torch.exp(lp)
        m = (p * r).sum(-1, keepdim=True)
        return (p * (r - m).square()).sum(-1), p.sum(-1)

    var, s = _map_rows(kern, [lp, r], b.C)
    _validate(logps=[(s, "logp", lp, b.tols[0])], finite=[(var, "reward variance", [("rewards", r)])])
    return _out(var, per_context)


# --------------------------------------------------------------------------------------------------
# KL-regularized objective: tilt, soft value, gaps
# --------------------------------------------------------------------------------------------------


def tilt_logp(ref_logp, rewards, beta) -> torch.Tensor:
    """Log-probabilities of the tilted policy ``π*_β ∝ π_ref e^{r/β}`` (the KL-regularized optimum).

    Limits (exact): ``beta = 0`` gives π_ref restricted to the argmax set of r *within the support
    of π_ref* and renormalized (ties share in proportion to π_ref); ``beta = inf`` gives π_ref.
    Computed as ``log π_ref + (r − max r)/β − logsumexp(·)``, so no overflow for any β > 0.

    Args:
        ref_logp: log π_ref, shape ``(C, K)`` or ``(K,)``.
        rewards: r, same shape or broadcastable; finite.
        beta: scalar in ``[0, inf]``, or a 1-D array of ``B`` such values (a sweep).

    Returns:
        float64 tensor of shape ``(C, K)`` (``(K,)`` for 1-D inputs); with a 1-D ``beta`` of length
        ``B``, shape ``(B, C, K)`` (``(B, K)`` for 1-D inputs).

    Raises:
        ValueError: on negative/NaN ``beta``, shape mismatch, unnormalized ``ref_logp``, non-finite
            ``rewards``.
    """
    vector = (isinstance(beta, (torch.Tensor, np.ndarray)) and beta.ndim == 1) or isinstance(
        beta, (list, tuple)
    )
    betas = _beta_vector(beta, "beta") if vector else np.array([_check_beta(beta)])
    b = _Batch(ref_logp=ref_logp, rewards=rewards)
    ref, r = b.tensors
    C, K = b.C, b.K
    results = []
    for j, bt in enumerate(betas):

        def kern(ref, r, bt=float(bt)):
            rows = max(ref.shape[0], r.shape[0])
            if bt == _INF:  # a fresh dense copy, never a view of the caller's array
                logq = ref.expand(rows, K).clone(memory_format=torch.contiguous_format)
            else:
                logq = _tilt_parts(ref, r, bt)[0].expand(rows, K).contiguous()
            return logq, torch.exp(ref).sum(-1), r.sum(-1)

        res = _map_rows(kern, [ref, r], C)
        if j == 0:
            _validate(logps=[(res[1], "ref_logp", ref, b.tols[0])],
                      finite=[(res[2], "sum of rewards", [("rewards", r)])])
        results.append(_shape_out(res[0], b.one_d))
    return torch.stack(results) if vector else results[0]


def chi2_tilt_logp(ref_logp, rewards, beta: float) -> torch.Tensor:
    """Log-probabilities of the χ²-regularized optimum ``π_k = π_ref,k (r_k − λ)_+ / (2β)``.

    The maximizer of ``E_π r − β χ²(π‖π_ref)`` over the simplex (Laidlaw et al. 2025, χ² regularization):
    a truncated linear reweighting of π_ref instead of the exponential tilt.

    Sort the candidates in the support of π_ref by reward, descending; for the top ``j`` the normalizer
    would be ``λ_j = (Σ_{i≤j} π_ref,i r_i − 2β) / Σ_{i≤j} π_ref,i``; the support is the longest prefix
    with ``r_(j) > λ_j`` (a prefix, as for sparsemax), and λ is that prefix's ``λ_j``.

    Args:
        ref_logp: log π_ref, shape ``(C, K)`` or ``(K,)``.
        rewards: r, same shape.
        beta: β > 0.
    Returns:
        float64 log-probabilities (``-inf`` off the support), same shape.
    """
    if not float(beta) > 0:
        raise ValueError(f"beta must be > 0 for the χ² closed form (got {beta}).")
    ref = as_float64(ref_logp, name="ref_logp")
    r = as_float64(rewards, device=ref.device, name="rewards").expand_as(ref)
    p = ref.exp()
    r_masked = torch.where(p > 0, r, -torch.inf)
    rs, idx = r_masked.sort(-1, descending=True)
    ps = p.gather(-1, idx)
    A = torch.cumsum(torch.where(ps > 0, ps * rs, 0.0), -1)
    B = torch.cumsum(ps, -1)
    lam_j = (A - 2.0 * float(beta)) / B.clamp_min(1e-300)
    n_support = (rs > lam_j).sum(-1, keepdim=True).clamp_min(1)
    lam = lam_j.gather(-1, n_support - 1)
    slack = (r - lam).clamp_min(0.0)
    return torch.where((p > 0) & (slack > 0), ref + torch.log(slack / (2.0 * float(beta))), -torch.inf)


def soft_value(ref_logp, rewards, beta, per_context: bool = False):
    """Optimal KL-regularized value ``J*_β = E_x β log Σ_k π_ref,k e^{r_k/β}``.

    ``J*_β = max_π V(π) − β KL(π‖π_ref)``, attained by :func:`tilt_logp`. Limits (exact):
    ``beta = 0`` gives the max of r over the support of π_ref; ``beta = inf`` gives ``E_{π_ref} r``.
    Numerically: max-shifted log-sum-exp, switching to ``log1p(Σ π expm1(·))`` when β is large
    against the reward spread, so the value is continuous at both ends to rounding.

    Args:
        ref_logp: log π_ref, shape ``(C, K)`` or ``(K,)``.
        rewards: r, same shape or broadcastable; finite.
        beta: scalar in ``[0, inf]``.
        per_context: return the per-context values instead of their mean.

    Returns:
        float, or float64 tensor of shape ``(C,)``.

    Raises:
        ValueError: on negative/NaN ``beta``, shape mismatch, unnormalized ``ref_logp``, non-finite
            ``rewards``.
    """
    beta = _check_beta(beta)
    b = _Batch(ref_logp=ref_logp, rewards=rewards)
    ref, r = b.tensors

    def kern(ref, r):
        pi = torch.exp(ref)
        return _soft_rows(ref, pi, r, beta), pi.sum(-1), r.sum(-1)

    J, sr, rs = _map_rows(kern, [ref, r], b.C)
    _validate(logps=[(sr, "ref_logp", ref, b.tols[0])],
              finite=[(rs, "sum of rewards", [("rewards", r)]), (J, "soft value", [("rewards", r)])])
    return _out(J, per_context)


def _jbeta_rows(lp, p, ref, r, beta: float):
    """J_β(π) = Σ_k p_k (r_k − β (log p_k − log π_ref,k)) per row, with the documented limits."""
    if beta == 0.0:
        return (p * r).sum(-1)
    if beta == _INF:
        kl = _kl_rows(lp, p, ref)
        return torch.where(kl > 0, _NEG_INF, (p * r).sum(-1))
    t = torch.add(r, lp - ref, alpha=-beta)  # +inf where p = 0; -inf where π_ref = 0 < p
    return torch.nan_to_num(p * t, nan=0.0, posinf=_INF, neginf=_NEG_INF).sum(-1)


def regularized_objective(logp, ref_logp, rewards, beta, per_context: bool = False):
    """KL-regularized objective ``J_β(π) = V(π) − β KL(π‖π_ref)``, mean over contexts.

    Conventions at the ends: ``beta = 0`` gives ``V(π)`` (the KL term is dropped even where it is
    infinite); ``beta = inf`` gives ``V(π)`` where ``KL = 0`` (π = π_ref) and ``-inf`` elsewhere.
    A context where π leaves the support of π_ref has ``J_β = -inf`` for ``β > 0``.

    Args:
        logp: log π, shape ``(C, K)`` or ``(K,)``.
        ref_logp: log π_ref, same shape or broadcastable.
        rewards: r, same shape or broadcastable; finite.
        beta: scalar in ``[0, inf]``.
        per_context: return the per-context values instead of their mean.

    Returns:
        float, or float64 tensor of shape ``(C,)``.

    Raises:
        ValueError: on negative/NaN ``beta``, shape mismatch, unnormalized log-probabilities,
            non-finite ``rewards``.
    """
    beta = _check_beta(beta)
    b = _Batch(logp=logp, ref_logp=ref_logp, rewards=rewards)
    lp, ref, r = b.tensors

    def kern(lp, ref, r):
        p = torch.exp(lp)
        j = _jbeta_rows(lp, p, ref, r, beta)
        return j, r.sum(-1), p.sum(-1), torch.exp(ref).sum(-1)

    j, rs, s, sr = _map_rows(kern, [lp, ref, r], b.C)
    _validate(logps=[(s, "logp", lp, b.tols[0]), (sr, "ref_logp", ref, b.tols[1])],
              finite=[(rs, "sum of rewards", [("rewards", r)])])
    return _out(j, per_context)


def value_gap(logp, ref_logp, gold, beta, per_context: bool = False):
    """Gold value gap ``J*_β − J_β(π)`` (mean over contexts), always ≥ 0 up to rounding.

    By the Gibbs variational principle the per-context gap equals ``β KL(π‖π*_β)`` with
    ``π*_β ∝ π_ref e^{r*/β}``; it is 0 exactly for the gold tilt. ``+inf`` where π leaves the support
    of π_ref (β > 0). At ``beta = 0`` the gap is ``max_{supp π_ref} r* − V*(π)`` (can be negative if
    π uses candidates outside that support); at ``beta = inf`` it is 0 for π = π_ref and ``+inf``
    otherwise.

    Args:
        logp: log π, shape ``(C, K)`` or ``(K,)``.
        ref_logp: log π_ref, same shape or broadcastable.
        gold: gold rewards r*, same shape or broadcastable; finite.
        beta: scalar in ``[0, inf]``.
        per_context: return the per-context values instead of their mean.

    Returns:
        float ≥ 0, or float64 tensor of shape ``(C,)``.

    Raises:
        ValueError: on negative/NaN ``beta``, shape mismatch, unnormalized log-probabilities,
            non-finite ``gold``.
    """
    beta = _check_beta(beta)
    b = _Batch(logp=logp, ref_logp=ref_logp, gold=gold)
    lp, ref, r = b.tensors

    def kern(lp, ref, r):
        p = torch.exp(lp)
        pi = torch.exp(ref)
        j = _jbeta_rows(lp, p, ref, r, beta)
        js = _soft_rows(ref, pi, r, beta)
        return js - j, r.sum(-1), p.sum(-1), pi.sum(-1)

    gap, rs, s, sr = _map_rows(kern, [lp, ref, r], b.C)
    _validate(logps=[(s, "logp", lp, b.tols[0]), (sr, "ref_logp", ref, b.tols[1])],
              finite=[(rs, "sum of gold rewards", [("gold", r)]), (torch.where(torch.isinf(gap), 0.0, gap), "value gap", [("gold", r)])])
    return _out(gap, per_context)


def normalized_score(logp, ref_logp, gold, beta) -> float:
    """Normalized regularized gold score ``(J_β(π) − J_β(π_ref)) / (J*_β − J_β(π_ref))``.

    Each ``J`` is a mean over contexts (a ratio of means). 1 = the gold tilt π*_β (optimal),
    0 = no better than π_ref, < 0 = worse than π_ref; ``-inf`` if π leaves the support of π_ref.
    ``J_β(π_ref) = V*(π_ref)`` since its KL is 0.

    The denominator is 0 exactly when the gold is constant on the support of π_ref in every context
    (nothing to gain), and always for ``beta = inf``; the score is then undefined and ``nan`` is
    returned.

    Args:
        logp: log π, shape ``(C, K)`` or ``(K,)``.
        ref_logp: log π_ref, same shape or broadcastable.
        gold: gold rewards r*, same shape or broadcastable; finite.
        beta: scalar in ``[0, inf]``.

    Returns:
        float (``nan`` when the denominator is 0).

    Raises:
        ValueError: on negative/NaN ``beta``, shape mismatch, unnormalized log-probabilities,
            non-finite ``gold``.
    """
    beta = _check_beta(beta)
    b = _Batch(logp=logp, ref_logp=ref_logp, gold=gold)
    lp, ref, r = b.tensors

    def kern(lp, ref, r):
        p = torch.exp(lp)
        pi = torch.exp(ref)
        j = _jbeta_rows(lp, p, ref, r, beta)
        vref = (pi * r).sum(-1)
        js = _soft_rows(ref, pi, r, beta)
        return j - vref, js - vref, r.sum(-1), p.sum(-1), pi.sum(-1)

    num, den, rs, s, sr = _map_rows(kern, [lp, ref, r], b.C)
    _validate(logps=[(s, "logp", lp, b.tols[0]), (sr, "ref_logp", ref, b.tols[1])],
              finite=[(rs, "sum of gold rewards", [("gold", r)])])
    n, d = float(num.mean()), float(den.mean())
    if d <= 0.0:
        return math.nan
    return n / d


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


# --------------------------------------------------------------------------------------------------
# Best-of-n
# --------------------------------------------------------------------------------------------------


def _check_n(n) -> float:
    if isinstance(n, (torch.Tensor, np.ndarray)):
        size = n.size if isinstance(n, np.ndarray) else n.numel()
        if size != 1:
            raise ValueError(f"n must be a scalar (got shape {tuple(n.shape)})")
        n = n.reshape(()).item()
    if isinstance(n, bool) or not isinstance(n, (int, float, np.integer, np.floating)):
        raise ValueError(f"n must be a number >= 1 (got {_short(n)})")
    nf = float(n)
    if not math.isfinite(nf):
        raise ValueError(f"n must be finite and >= 1 (got {nf!r})")
    if nf < 1:
        raise ValueError(f"n must be >= 1 (got {n!r})")
    return nf


def _argsort_rows(x: torch.Tensor) -> torch.Tensor:
    """Row-wise argsort (any order among ties). numpy's SIMD sort is ~4x faster than torch on CPU."""
    if x.device.type == "cpu" and not x.requires_grad:
        return torch.from_numpy(np.argsort(x.numpy(), axis=-1))
    return torch.argsort(x, dim=-1)


def _rev_cumsum_exclusive(x: torch.Tensor) -> torch.Tensor:
    """out[..., i] = Σ_{j > i} x[..., j] (no subtraction, so infinities stay exact)."""
    inc = torch.flip(_cumsum_last(torch.flip(x, [-1])), [-1])
    return torch.cat([inc[:, 1:], torch.zeros_like(inc[:, :1])], -1)


def _best_of_n_sorted(q, nf: float):
    """No-tie best-of-n core in proxy-ascending order: sorted π_ref masses ``q`` -> (log P, cumsum).

    In-place ops only touch fresh temporaries (this runs under no_grad).
    """
    csum = _cumsum_last(q)
    D = torch.empty_like(q)  # D = n δ, δ_i = log1p(q_i / F_{i-1}) with F_{-1} = 0
    torch.div(q[:, 1:], csum[:, :-1], out=D[:, 1:])
    torch.div(q[:, :1], 0.0, out=D[:, :1])
    D.log1p_().mul_(nf).nan_to_num_(nan=0.0, posinf=_INF)
    above = torch.flip(_cumsum_last(torch.flip(D, [-1])), [-1])  # Σ_{j ≥ i} n δ_j
    logpi = D.neg_().expm1_().neg_().log_()
    logpi[:, :-1] -= above[:, 1:]  # + n log F_i = − Σ_{j > i} n δ_j
    return logpi, csum


def _best_of_n_rows(ref, pr, nf: float):
    """Exact best-of-n log-probabilities for (rows, K) chunks; see best_of_n_logp.

    In proxy-ascending order with q the π_ref masses, F_i the mass ranked ≤ i and
    δ_i = log F_i − log F_{i−1} = log1p(q_i / F_{i−1}) (accurate for any q_i), we have
    log F_i = −Σ_{j>i} δ_j and P(i) = F_i^n − F_{i−1}^n = F_i^n (1 − e^{−n δ_i}), i.e.
    log P(i) = n log F_i + log(−expm1(−n δ_i)). Tie groups are merged into one item first.
    """
    rows, K = pr.shape
    idx = _argsort_rows(pr).to(pr.device)
    ps = torch.gather(pr, -1, idx)
    lo, hi = torch.aminmax(ref)
    # both fast-path tests in one host read: no ties (the usual case), π_ref one value everywhere
    no_ties, uniform = (True, bool(lo == hi)) if K == 1 else \
        torch.stack([(ps[:, 1:] - ps[:, :-1]).amin() > 0, lo == hi]).tolist()
    if no_ties:
        if uniform:
            # One value everywhere (e.g. uniform π_ref): log P depends only on the rank, so one
            # row is computed (the same ops as every row would run) and scattered by rank.
            logpi, csum = _best_of_n_sorted(torch.exp(ref[:1]), nf)
            out = torch.empty_like(pr).scatter_(-1, idx, logpi.expand(rows, K))
            return out, csum[:, -1].expand(rows), ps.sum(-1)
        logpi, csum = _best_of_n_sorted(torch.gather(ref, -1, idx).exp_(), nf)
        out = torch.empty_like(logpi).scatter_(-1, idx, logpi)
        return out, csum[:, -1], ps.sum(-1)
    rs = torch.gather(ref, -1, idx)
    q = torch.exp(rs)
    csum = _cumsum_last(q)
    F_below = torch.cat([torch.zeros_like(csum[:, :1]), csum[:, :-1]], -1)  # mass ranked below
    first = torch.ones_like(ps, dtype=torch.bool)
    first[:, 1:] = ps[:, 1:] != ps[:, :-1]
    pos = torch.arange(K, device=q.device).expand(rows, K)
    last = torch.ones_like(first)
    last[:, :-1] = first[:, 1:]
    gid = torch.cumsum(first, -1) - 1
    qg = torch.zeros_like(q).scatter_add_(-1, gid, q)
    qg = torch.gather(qg, -1, gid)  # group mass, per member
    f = torch.cummax(torch.where(first, pos, 0), -1).values  # first member of the group
    lrev = torch.cummax(torch.flip(torch.where(last, K - 1 - pos, 0), [-1]), -1).values
    l = K - 1 - torch.flip(lrev, [-1])  # last member of the group
    delta = torch.nan_to_num(
        torch.log1p(qg / torch.gather(F_below, -1, f)), nan=0.0, posinf=_INF
    )
    logF = -_rev_cumsum_exclusive(torch.where(last, delta, 0.0))
    logP = nf * torch.gather(logF, -1, l) + torch.log(-torch.expm1(-nf * delta))
    share = torch.where(f == l, 0.0, rs - torch.log(qg))  # split ∝ π_ref inside a tie group
    logpi = torch.where(qg > 0, logP + share, _NEG_INF)
    out = torch.empty_like(logpi).scatter_(-1, idx, logpi)
    return out, csum[:, -1], ps.sum(-1)


def best_of_n_logp(ref_logp, proxy, n) -> torch.Tensor:
    """Exact best-of-n policy over the K candidates of each context.

    Draw ``n`` i.i.d. candidates from π_ref and keep the one with the highest proxy reward. With
    candidates sorted by proxy ascending and ``F_i`` the π_ref mass of candidates ranked ≤ i,
    ``P(i) = F_i^n − F_{i−1}^n``. **Ties** (equal proxy) form one group with probability
    ``F_hi^n − F_lo^n`` split among its members in proportion to π_ref (the law of keeping any
    drawn member, e.g. the first drawn, when several tie for the best). Computed in log space with
    ``δ_i = log F_i − log F_{i−1} = log1p(q_i / F_{i−1})``, ``log F_i = −Σ_{j>i} δ_j`` and
    ``log P(i) = n log F_i + log(−expm1(−n δ_i))``: only sums of positive terms, no cancellation,
    so large ``n`` and tiny masses are exact to rounding (π_ref is taken as exactly normalized).

    Args:
        ref_logp: log π_ref, shape ``(C, K)`` or ``(K,)``.
        proxy: proxy rewards used for selection, same shape or broadcastable; finite.
        n: number of draws, a real number ≥ 1 (non-integers interpolate the formula).

    Returns:
        float64 tensor of log-probabilities, shape ``(C, K)`` (``(K,)`` for 1-D inputs); not
        differentiable (computed under ``torch.no_grad``).

    Raises:
        ValueError: on ``n < 1`` or non-finite ``n``, shape mismatch, unnormalized ``ref_logp``,
            non-finite ``proxy``.
    """
    nf = _check_n(n)
    b = _Batch(ref_logp=ref_logp, proxy=proxy)
    ref, pr = b.tensors
    C, K = b.C, b.K

    def kern(ref, pr):
        rows = max(ref.shape[0], pr.shape[0])
        return _best_of_n_rows(ref.expand(rows, K), pr.expand(rows, K), nf)

    with torch.no_grad():
        out, sr, ps = _map_rows(kern, [ref, pr], C, cost=2)
    _validate(logps=[(sr, "ref_logp", ref, b.tols[0])], finite=[(ps, "sum of proxy rewards", [("proxy", pr)])])
    return _shape_out(out, b.one_d)


def best_of_n_kl_bound(n):
    """Upper bound ``log n − (n−1)/n`` on KL(best-of-n ‖ π_ref) (Beirami et al., 2024).

    Args:
        n: number of draws ≥ 1 (scalar or array-like).

    Returns:
        float for a scalar ``n``, else a float64 numpy array of the same shape.

    Raises:
        ValueError: if any ``n < 1`` or is not finite.
    """
    if np.ndim(n) == 0 and not isinstance(n, torch.Tensor):
        nf = _check_n(n)
        return math.log(nf) - (nf - 1.0) / nf
    arr = np.asarray(n.detach().cpu() if isinstance(n, torch.Tensor) else n, dtype=np.float64)
    if not np.isfinite(arr).all():
        raise ValueError("n must be finite and >= 1 (got a non-finite value)")
    if (arr < 1).any():
        raise ValueError(f"n must be >= 1 (got {float(arr[arr < 1].flat[0])!r})")
    return np.log(arr) - (arr - 1.0) / arr


# --------------------------------------------------------------------------------------------------
# Reward-model evaluation
# --------------------------------------------------------------------------------------------------


#: Up to this K pairs are counted by an O(K²) offset loop; above it by an O(K log² K) merge count.
_PAIR_LOOP_MAX_K = 128


def _pair_rows(pr, g, w):
    """Per-row (Σ w_i w_j·credit, Σ w_i w_j) over pairs i < j with untied gold.

    credit = 1 if the proxy orders the pair like the gold, 1/2 if the proxy ties it, else 0;
    ``w=None`` means unit weights.
    """
    if pr.shape[-1] <= _PAIR_LOOP_MAX_K:
        return _pair_rows_loop(pr, g, w)
    return _pair_rows_merge(pr, g, w)


def _pair_rows_loop(pr, g, w):
    """Pairs visited by offset s = j − i: temporaries are (rows, K − s), never (rows, K, K)."""
    rows = max(pr.shape[0], g.shape[0], 1 if w is None else w.shape[0])
    K = pr.shape[-1]
    conc = torch.zeros(rows, dtype=torch.float64, device=pr.device)  # Σ w·sign(dp)·sign(dg)
    den = torch.zeros(rows, dtype=torch.float64, device=pr.device)  # Σ w·|sign(dg)|
    for s in range(1, K):
        sg = torch.sign(g[:, s:] - g[:, :-s])
        c = torch.sign(pr[:, s:] - pr[:, :-s]) * sg
        a = sg.abs()
        if w is not None:
            ww = w[:, s:] * w[:, :-s]
            c, a = c * ww, a * ww
        conc = conc + c.sum(-1)
        den = den + a.sum(-1)
    return 0.5 * (conc + den), den


def _tied_pair_weight(keys_new, ws):
    """Σ over groups (consecutive runs marked by keys_new) of Σ_{i<j in group} w_i w_j."""
    gid = torch.cumsum(keys_new, -1) - 1
    gw = torch.zeros_like(ws).scatter_add_(-1, gid, ws)
    gw2 = torch.zeros_like(ws).scatter_add_(-1, gid, ws * ws)
    return 0.5 * (gw.square().sum(-1) - gw2.sum(-1))


def _pair_rows_merge(pr, g, w):
    """Same result as _pair_rows_loop in O(K log² K) per context (bottom-up merge counting).

    Order candidates by gold ascending (gold ties by proxy descending); then the numerator is
    Σ_{j before i} w_i w_j H(p_i − p_j) with H(0) = 1/2, minus 1/2 per pair tied in both gold and
    proxy (those are the only gold-tied pairs H counts). The ordered sum is accumulated level by
    level: at block size b, each element of a right block looks up, by ``searchsorted`` in the
    proxy-sorted left block, the weight of smaller (and half the weight of equal) proxies.
    """
    rows = max(pr.shape[0], g.shape[0], 1 if w is None else w.shape[0])
    K = pr.shape[-1]
    pr, g = pr.expand(rows, K), g.expand(rows, K)
    w = torch.ones_like(pr) if w is None else w.expand(rows, K)
    o1 = torch.sort(pr, dim=-1, descending=True, stable=True).indices
    o2 = torch.sort(torch.gather(g, -1, o1), dim=-1, stable=True).indices
    order = torch.gather(o1, -1, o2)
    gs, ps, ws = (torch.gather(x, -1, order) for x in (g, pr, w))
    g_new = torch.ones_like(gs, dtype=torch.bool)
    g_new[:, 1:] = gs[:, 1:] != gs[:, :-1]
    gp_new = g_new.clone()
    gp_new[:, 1:] |= ps[:, 1:] != ps[:, :-1]
    W = ws.sum(-1)
    den = 0.5 * (W * W - ws.square().sum(-1)) - _tied_pair_weight(g_new, ws)
    Kp = 1 << (K - 1).bit_length()
    if Kp > K:  # pad with weightless entries at the end
        ps = torch.cat([ps, ps.new_full((rows, Kp - K), _INF)], -1)
        ws = torch.cat([ws, ws.new_zeros((rows, Kp - K))], -1)
    num = torch.zeros(rows, dtype=torch.float64, device=pr.device)
    b = 1
    while b < Kp:
        nb = Kp // (2 * b)
        v = ps.reshape(rows, nb, 2, b)
        ww = ws.reshape(rows, nb, 2, b)
        left, right = v[:, :, 0, :].contiguous(), v[:, :, 1, :].contiguous()
        cw = torch.cat([ww.new_zeros((rows, nb, 1)), torch.cumsum(ww[:, :, 0, :], -1)], -1)
        lo = torch.searchsorted(left, right, side="left")
        hi = torch.searchsorted(left, right, side="right")
        below = 0.5 * (torch.gather(cw, -1, lo) + torch.gather(cw, -1, hi))
        num = num + (ww[:, :, 1, :] * below).sum((-1, -2))
        merged, mi = torch.sort(v.reshape(rows, nb, 2 * b), dim=-1)
        ps = merged.reshape(rows, Kp)
        ws = torch.gather(ww.reshape(rows, nb, 2 * b), -1, mi).reshape(rows, Kp)
        b *= 2
    return num - 0.5 * _tied_pair_weight(gp_new, torch.gather(w, -1, order)), den


def _nanmean(x: torch.Tensor) -> float:
    m = ~torch.isnan(x)
    if not bool(m.any()):
        return math.nan
    return float(x[m].mean())


def ranking_accuracy(proxy, gold, logp=None, per_context: bool = False):
    """Pairwise ranking accuracy of a proxy against the gold reward.

    Over candidate pairs ``i < j`` of a context whose gold rewards differ: credit 1 if the proxy
    orders them like the gold, 0 if reversed, 1/2 if the proxy ties them (a coin flip). Pairs with
    tied gold are excluded. Off-policy (``logp=None``): all such pairs weigh the same. On-policy:
    pair ``(i, j)`` weighs ``π_i π_j``. The per-context accuracy is the weighted mean over pairs;
    the aggregate is the mean over contexts that have at least one pair of positive weight
    (contexts without one are ``nan`` in the per-context output). Cost ``O(C K²)`` for
    ``K ≤ 128``, ``O(C K log² K)`` (merge counting) above; memory ``O(C K)``.

    Args:
        proxy: proxy rewards, shape ``(C, K)`` or ``(K,)``; finite.
        gold: gold rewards, same shape or broadcastable; finite.
        logp: optional log π (same shape or broadcastable) for on-policy weighting.
        per_context: return per-context accuracies instead of their mean.

    Returns:
        float in ``[0, 1]`` (``nan`` if no context has a usable pair), or a ``(C,)`` tensor.

    Raises:
        ValueError: on shape mismatch, non-finite rewards, unnormalized ``logp``.
    """
    named = dict(proxy=proxy, gold=gold)
    if logp is not None:
        named["logp"] = logp
    b = _Batch(**named)
    pr, g = b[0], b[1]
    ts = list(b.tensors)

    def kern(pr, g, lp=None):
        w = None if lp is None else torch.exp(lp)
        num, den = _pair_rows(pr, g, w)
        rows = max(pr.shape[0], g.shape[0])
        extra = () if w is None else (w.sum(-1),)
        return (num.expand(rows), den.expand(rows), pr.sum(-1), g.sum(-1)) + extra

    res = _map_rows(kern, ts, b.C)
    num, den, sp, sg = res[:4]
    _validate(finite=[(sp, "sum of proxy rewards", [("proxy", pr)]), (sg, "sum of gold rewards", [("gold", g)])])
    if logp is not None:
        _check_logp(res[4], "logp", ts[2], b.tols[2])
    acc = torch.where(den > 0, num / torch.where(den > 0, den, 1.0), math.nan)
    return acc if per_context else _nanmean(acc)


def harm_aware_accuracies(proxy, gold, logp=None, per_context: bool = False) -> dict:
    """Harm-aware reward-model accuracies ``Acc-W``, ``HAcc`` and ``HAcc-W``.

    Source: Shang, Strauss, Wei, Arora & Razin, "When Errors Can Be Beneficial: A Categorization of
    Imperfect Rewards for Policy Gradient" (arXiv:2604.25872, 2026). Only the paper's abstract
    was available to us, not its metric formulas; the definitions below follow its theory.
    Under softmax policy gradient on π, the probability of candidate i increases ("attracts")
    iff ``r_i > E_π r`` and decreases ("repels") iff ``r_i < E_π r``. A proxy error at i is
    *harmful* when the proxy attracts a candidate the gold would repel or repels one the gold would
    attract, *benign* otherwise. With π the given policy (uniform over the K candidates if ``logp``
    is None), per context:

    * ``acc_w`` — ranking accuracy with pair ``(i, j)`` weighted by ``π_i π_j``
      (= :func:`ranking_accuracy` with ``logp``; gold-tied pairs excluded, proxy ties count 1/2);
    * ``hacc`` — fraction of the K candidates with ``sign(r̂_i − E_π r̂) == sign(r*_i − E_π r*)``
      (uniform over candidates);
    * ``hacc_w`` — the same indicator averaged with weights ``π_i``.

    A candidate counts as correct when the signs agree, i.e. it carries no harmful error (an exact
    tie with the mean on one side only counts as a mismatch). Signs use a dead zone of
    ``64·eps·max_k |r_k|`` around 0 per context, so a candidate whose reward equals the policy's
    mean up to rounding counts as "neither" (sign 0), e.g. for constant rewards. Aggregates are
    means over contexts (``acc_w``: over contexts with a usable pair).

    Args:
        proxy: proxy rewards r̂, shape ``(C, K)`` or ``(K,)``; finite.
        gold: gold rewards r*, same shape or broadcastable; finite.
        logp: log π (typically the initial / reference policy), or None for uniform.
        per_context: return ``(C,)`` tensors instead of means.

    Returns:
        dict with keys ``"acc_w"``, ``"hacc"``, ``"hacc_w"``: floats in ``[0, 1]`` (or tensors).

    Raises:
        ValueError: on shape mismatch, non-finite rewards, unnormalized ``logp``.
    """
    named = dict(proxy=proxy, gold=gold)
    if logp is not None:
        named["logp"] = logp
    b = _Batch(**named)
    pr, g = b[0], b[1]
    ts = list(b.tensors)
    K = b.K
    eps64 = 64 * torch.finfo(torch.float64).eps

    def sgn(x, m):
        d = x - m
        tol = eps64 * x.abs().amax(-1, keepdim=True)
        return torch.where(d.abs() <= tol, 0.0, torch.sign(d))

    def kern(pr, g, lp=None):
        rows = max(pr.shape[0], g.shape[0], 1 if lp is None else lp.shape[0])
        if lp is None:
            w = torch.full((1, K), 1.0 / K, dtype=torch.float64, device=pr.device)
        else:
            w = torch.exp(lp)
        num, den = _pair_rows(pr, g, w)
        mp = (w * pr).sum(-1, keepdim=True)
        mg = (w * g).sum(-1, keepdim=True)
        match = (sgn(pr, mp) == sgn(g, mg)).to(torch.float64)
        hacc = match.mean(-1)
        hacc_w = (w * match).sum(-1)
        return (
            num.expand(rows), den.expand(rows), hacc.expand(rows), hacc_w.expand(rows),
            pr.sum(-1), g.sum(-1), w.sum(-1),
        )

    num, den, hacc, hacc_w, sp, sg, sw = _map_rows(kern, ts, b.C)
    _validate(finite=[(sp, "sum of proxy rewards", [("proxy", pr)]), (sg, "sum of gold rewards", [("gold", g)])])
    if logp is not None:
        _check_logp(sw, "logp", ts[2], b.tols[2])
    acc_w = torch.where(den > 0, num / torch.where(den > 0, den, 1.0), math.nan)
    if per_context:
        return {"acc_w": acc_w, "hacc": hacc, "hacc_w": hacc_w}
    return {"acc_w": _nanmean(acc_w), "hacc": float(hacc.mean()), "hacc_w": float(hacc_w.mean())}


def proxy_gold_correlation(ref_logp, proxy, gold) -> float:
    """Pearson correlation of proxy and gold rewards under π_ref, pooled over contexts.

    Each (context, candidate) pair has weight ``π_ref(k|x) / C``; means, variances and covariance
    are weighted (Laidlaw et al.'s correlation-under-the-reference-policy condition).

    Args:
        ref_logp: log π_ref, shape ``(C, K)`` or ``(K,)``.
        proxy: proxy rewards, same shape or broadcastable; finite.
        gold: gold rewards, same shape or broadcastable; finite.

    Returns:
        float in ``[-1, 1]``; ``nan`` if either reward has zero variance under the pooled weights.

    Raises:
        ValueError: on shape mismatch, unnormalized ``ref_logp``, non-finite rewards.
    """
    b = _Batch(ref_logp=ref_logp, proxy=proxy, gold=gold)
    ref, pr, g = b.tensors
    C = b.C

    def k1(ref, pr, g):
        pi = torch.exp(ref)
        return (pi * pr).sum(-1), (pi * g).sum(-1), pi.sum(-1)

    mp_rows, mg_rows, sr = _map_rows(k1, [ref, pr, g], C)
    _validate(logps=[(sr, "ref_logp", ref, b.tols[0])],
              finite=[(mp_rows, "weighted proxy mean", [("proxy", pr)]), (mg_rows, "weighted gold mean", [("gold", g)])])
    mp = mp_rows.expand(C).mean()
    mg = mg_rows.expand(C).mean()

    def k2(ref, pr, g):
        pi = torch.exp(ref)
        dp, dg = pr - mp, g - mg
        rows = max(ref.shape[0], pr.shape[0], g.shape[0])
        return tuple(x.expand(rows) for x in (
            (pi * dp * dp).sum(-1), (pi * dg * dg).sum(-1), (pi * dp * dg).sum(-1)))

    vp, vg, cov = _map_rows(k2, [ref, pr, g], C, reduce=True)
    vp, vg, cov = float(vp), float(vg), float(cov)
    if vp <= 0 or vg <= 0:
        return math.nan
    return max(-1.0, min(1.0, cov / math.sqrt(vp * vg)))


# --------------------------------------------------------------------------------------------------
# Aggregation over runs and tasks (rliable)
# --------------------------------------------------------------------------------------------------


def _scores_array(scores, name: str = "scores") -> np.ndarray:
    if isinstance(scores, torch.Tensor):
        scores = scores.detach().cpu().numpy()
    try:
        a = np.asarray(scores, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a real-valued array (got {_short(scores)})") from None
    if a.size == 0:
        raise ValueError(f"{name} must be non-empty (got shape {a.shape})")
    if np.isnan(a).any():
        raise ValueError(f"{name} contains NaN (failed runs?); drop or impute them first")
    return a


def iqm(scores) -> float:
    """Interquartile mean of all entries (rliable's ``aggregate_iqm``).

    Identical to ``scipy.stats.trim_mean(scores, 0.25, axis=None)``: flatten, drop
    ``int(0.25 n)`` values from each end of the sorted order, average the rest.

    Args:
        scores: array-like of any shape, e.g. ``(num_runs, num_tasks)``; no NaN.

    Returns:
        float.

    Raises:
        ValueError: if ``scores`` is empty or contains NaN.
    """
    a = np.ravel(_scores_array(scores))
    nobs = a.shape[0]
    lowercut = int(0.25 * nobs)
    uppercut = nobs - lowercut
    atmp = np.partition(a, (lowercut, uppercut - 1))
    return float(np.mean(atmp[lowercut:uppercut]))


def aggregate_mean(scores) -> float:
    """Mean score (rliable's ``aggregate_mean``: mean over runs per task, then over tasks).

    Args:
        scores: ``(num_runs, num_tasks)`` (or 1-D ``(num_runs,)``); no NaN.

    Returns:
        float.

    Raises:
        ValueError: if ``scores`` is empty or contains NaN.
    """
    a = _scores_array(scores)
    return float(np.mean(np.mean(a, axis=0)))


def stratified_bootstrap_ci(
    scores,
    statistic: Callable[[np.ndarray], float] = iqm,
    reps: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
):
    """Point estimate and stratified-bootstrap percentile confidence interval (rliable).

    Each replicate resamples, independently within each task (column), ``num_runs`` runs with
    replacement (rliable's ``StratifiedBootstrap``), then applies ``statistic`` to the resampled
    ``(num_runs, num_tasks)`` array. The interval is the ``(1 ± confidence)/2`` percentiles of the
    replicates (numpy's linear interpolation). Deterministic for a given ``seed``.

    Args:
        scores: ``(num_runs, num_tasks)`` array (a 1-D array is one task); no NaN.
        statistic: maps a ``(num_runs, num_tasks)`` array to a float (default :func:`iqm`).
        reps: number of bootstrap replicates ≥ 1.
        confidence: in ``(0, 1)``.
        seed: seed for ``numpy.random.default_rng``.

    Returns:
        ``(point, lo, hi)`` floats.

    Raises:
        ValueError: on empty/NaN ``scores``, ``scores`` with more than 2 dims, ``reps < 1``,
            ``confidence`` outside ``(0, 1)``, non-callable ``statistic``.
    """
    a = _scores_array(scores)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2:
        raise ValueError(f"scores must have shape (num_runs, num_tasks) (got shape {a.shape})")
    if not callable(statistic):
        raise ValueError(f"statistic must be callable (got {_short(statistic)})")
    if isinstance(reps, bool) or int(reps) != reps or reps < 1:
        raise ValueError(f"reps must be an integer >= 1 (got {reps!r})")
    if not (0.0 < float(confidence) < 1.0):
        raise ValueError(f"confidence must be in (0, 1) (got {confidence!r})")
    R, T = a.shape
    rng = np.random.default_rng(seed)
    cols = np.arange(T)
    stats = np.empty(int(reps))
    for i in range(int(reps)):
        idx = rng.integers(0, R, size=(R, T))
        stats[i] = statistic(a[idx, cols])
    alpha = (1.0 - float(confidence)) / 2.0
    lo, hi = np.percentile(stats, [100.0 * alpha, 100.0 * (1.0 - alpha)])
    return float(statistic(a)), float(lo), float(hi)


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
        proxy_rising_while_gold_falls=rising,
        overoptimized=bool(over),
        fits=fits,
        tol=tol,
    )
