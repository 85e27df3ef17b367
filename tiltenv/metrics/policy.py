"""Policy metrics: part of :mod:`tiltenv.metrics` (conventions in its docstring)."""

from __future__ import annotations


import torch

from tiltenv.metrics._kernels import _Batch, _INF, _kl_rows, _map_rows, _out, _shape_out, _validate

__all__ = ["log_normalize", "policy_value", "kl_divergence", "chi2_divergence", "reward_variance"]


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
