"""Reward-model evaluation: part of :mod:`tiltenv.metrics` (conventions in its docstring)."""

from __future__ import annotations

import math

import torch

from tiltenv.metrics._kernels import _Batch, _INF, _check_logp, _map_rows, _validate

__all__ = ["ranking_accuracy", "harm_aware_accuracies", "proxy_gold_correlation"]


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
