"""KL-regularized objective: tilt, soft value, gaps: part of :mod:`tiltenv.metrics` (conventions in its docstring)."""

from __future__ import annotations

import math

import numpy as np
import torch

from tiltenv.metrics._kernels import (
    _Batch,
    _INF,
    _NEG_INF,
    _beta_vector,
    _check_beta,
    _kl_rows,
    _map_rows,
    _out,
    _shape_out,
    _soft_rows,
    _support_max,
    _tilt_parts,
    _validate,
    as_float64,
)

__all__ = ["tilt_logp", "chi2_tilt_logp", "soft_value", "regularized_objective", "value_gap", "normalized_score"]


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
        # Centred on the row's gold maximum over π_ref's support (every J shifts by the same constant): a gold
        # constant on the support then gives a denominator of exactly 0, not the ±1e-16 of rounding that turned
        # the ratio into ±1e15.
        rc = r - _support_max(ref, r)
        j = _jbeta_rows(lp, p, ref, rc, beta)
        vref = (pi * rc).sum(-1)
        js = _soft_rows(ref, pi, rc, beta)
        return j - vref, js - vref, r.sum(-1), p.sum(-1), pi.sum(-1)

    num, den, rs, s, sr = _map_rows(kern, [lp, ref, r], b.C)
    _validate(logps=[(s, "logp", lp, b.tols[0]), (sr, "ref_logp", ref, b.tols[1])],
              finite=[(rs, "sum of gold rewards", [("gold", r)])])
    n, d = float(num.mean()), float(den.mean())
    if d <= 0.0:
        return math.nan
    return n / d
