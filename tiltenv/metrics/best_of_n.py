"""Best-of-n: part of :mod:`tiltenv.metrics` (conventions in its docstring)."""

from __future__ import annotations

import math

import numpy as np
import torch

from tiltenv.metrics._kernels import (
    _Batch,
    _INF,
    _NEG_INF,
    _cumsum_last,
    _map_rows,
    _shape_out,
    _short,
    _validate,
)

__all__ = ["best_of_n_logp", "best_of_n_kl_bound"]


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
