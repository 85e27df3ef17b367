"""Conversion and validation helpers / Row kernels (operate on 2-D chunks; documented via the public functions that use them): part of :mod:`tiltenv.metrics` (conventions in its docstring)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch

__all__ = ["as_float64"]


_INF = float("inf")
_NEG_INF = float("-inf")

#: Elements per array per chunk, by device type. CPU: 2 MB of float64, so temporaries stay in L2/L3 cache.
#: A GPU wants the opposite: one launch per op over the whole batch (a 2 MB chunk is a few µs of work
#: against ~5-10 µs of launch overhead per kernel), so chunks there only bound the temporaries' memory
#: (2^26 float64 = 512 MB per array). Other accelerators (mps, xpu, ...) get the GPU size too.
_CHUNK_ELEMS = {"cpu": 1 << 18, "cuda": 1 << 26}

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
    budget = _CHUNK_ELEMS.get(torch.device(device).type, _CHUNK_ELEMS["cuda"])
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
