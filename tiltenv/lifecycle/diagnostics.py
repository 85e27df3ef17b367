"""Proxy diagnostics: how good is a proxy, where are its errors, what did the two-stage model learn.

Everything here runs on the judge's side (it reads gold values or θ*) and composes the exact metrics of
:mod:`tiltenv.metrics` — no metric formula is re-implemented here.

Per proxy (on the judge's held-out evaluation contexts, exact over the K candidates of each context):

* ``acc_offpolicy`` — ranking accuracy over all candidate pairs of the held-out contexts;
* ``acc_ref`` — the same with pairs weighted by π_ref (pairs drawn like the training labels);
* ``acc_onpolicy`` — weighted by a given policy π (:func:`on_policy_accuracy`);
* ``acc_w``, ``hacc``, ``hacc_w`` — Shang et al.'s harm-aware accuracies under π_ref (or π);
* ``reward_variance_ref`` — per-context proxy variance under π_ref, averaged (Razin et al.);
* ``gold_corr_ref`` — proxy/gold correlation under π_ref pooled over contexts (Laidlaw et al.).

Two-stage model (Wachi et al. 2026): per-neuron ``cos(w_j, θ*)``, the recovered fraction
(``|cos| > 0.5``), the effective sample size ``(Σq)²/Σq²`` of the stage-1 weights, and the **collapse
baseline** — a neuron that collapsed onto one training sample x_i has ``|cos| = |<θ*, x_i>|/||x_i||``
(≈ |z|/√d), which at small d already exceeds 0.5 without any feature learning.

Example:
    >>> from tiltenv import TaskConfig, make_world
    >>> from tiltenv.lifecycle.diagnostics import proxy_report
    >>> world = make_world(TaskConfig(d=4, K=8, n_labels=300, n_eval_contexts=128, n_norm_contexts=256))
    >>> sorted(proxy_report(world))[:3]
    ['acc_offpolicy', 'acc_onpolicy', 'acc_ref']
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from tiltenv import metrics as M
from tiltenv.lifecycle.calibration import calibration_report, labeler_probability, ranking_and_scale  # noqa: F401 (issue 12)
from tiltenv.worlds.evaluation import resolve_judge
from tiltenv.rewards.reward_models import EnsembleProxy, TrainData, TwoStageProxy, effective_sample_size, stage1_weights
from tiltenv.worlds.world import World, make_world

__all__ = [
    "proxy_values",
    "on_policy_accuracy",
    "proxy_report",
    "diagnostics_table",
    "neuron_cosines",
    "recovered_fraction",
    "collapse_baseline",
    "two_stage_report",
    "index_angle",
    "ensemble_disagreement",
    "best_of_n_curve",
    "best_of_n_drop",
    "calibration_report",
    "labeler_probability",
    "ranking_and_scale",
]


def _judge_and_task(target: Any):
    if isinstance(target, World):
        return target.judge, target.task
    judge = resolve_judge(target)
    return judge, make_world(judge.config).task


@torch.no_grad()
def proxy_values(proxy: torch.nn.Module, candidates: torch.Tensor) -> torch.Tensor:
    """Normalized proxy rewards of ``candidates`` (C, K, d) as a (C, K) float64 tensor."""
    return proxy(candidates).to(torch.float64)


def on_policy_accuracy(target: Any, logp: torch.Tensor, proxy: torch.nn.Module | None = None) -> float:
    """Ranking accuracy with pairs weighted by ``π_i π_j`` of a policy on the judge's contexts.

    Args:
        target: World / env / config / Judge.
        logp: (C, K) log-probabilities of π over the judge's evaluation contexts.
        proxy: another proxy to score (default: the task's).
    """
    judge, _ = _judge_and_task(target)
    r = judge.eval_proxy if proxy is None else proxy_values(proxy, judge.eval_candidates)
    return M.ranking_accuracy(r, judge.eval_gold, logp)


def proxy_report(target: Any, logp: torch.Tensor | None = None, proxy: torch.nn.Module | None = None) -> dict[str, float]:
    """All per-proxy diagnostics on the judge's held-out contexts (see the module docstring).

    Args:
        target: World / env / config / Judge.
        logp: optional (C, K) policy log-probabilities for the on-policy and harm-aware figures
            (default: π_ref, i.e. ``acc_onpolicy == acc_ref``).
        proxy: score another proxy than the task's (it is normalized as it stands).
    Returns:
        dict of floats (plus two-stage / ensemble figures when the proxy is one).
    """
    judge, task = _judge_and_task(target)
    proxy = task.proxy if proxy is None else proxy
    r = judge.eval_proxy if proxy is task.proxy else proxy_values(proxy, judge.eval_candidates)
    g = judge.eval_gold
    ref = judge.eval_ref_logp
    pol = ref if logp is None else logp
    out = {
        "acc_offpolicy": M.ranking_accuracy(r, g),
        "acc_ref": M.ranking_accuracy(r, g, ref),
        "acc_onpolicy": M.ranking_accuracy(r, g, pol),
        **M.harm_aware_accuracies(r, g, pol),
        "reward_variance_ref": M.reward_variance(ref, r),
        "gold_corr_ref": M.proxy_gold_correlation(ref, r, g),
    }
    if isinstance(proxy, TwoStageProxy) and judge.theta is not None:
        rep = two_stage_report(proxy, judge.theta)
        out.update({k: v for k, v in rep.items() if not isinstance(v, torch.Tensor)})
    if isinstance(proxy, EnsembleProxy):
        out.update({f"disagreement_{k}": v for k, v in ensemble_disagreement(proxy, judge.eval_candidates, ref).items()})
    return out


def diagnostics_table(targets: Mapping[str, Any] | Sequence[Any], logp: Mapping[str, torch.Tensor] | None = None) -> pd.DataFrame:
    """One row of :func:`proxy_report` per target.

    Args:
        targets: ``{name: World/env/config}`` or a sequence (rows named by the proxy kind and index).
        logp: optional ``{name: (C, K) log-probs}`` for on-policy figures.
    Returns:
        DataFrame indexed by name, one column per diagnostic (plus ``proxy``).
    """
    if not isinstance(targets, Mapping):
        targets = {f"{i}": t for i, t in enumerate(targets)}
    rows = {}
    for name, t in targets.items():
        judge, task = _judge_and_task(t)
        rows[name] = {"proxy": task.proxy.kind, **proxy_report(t, None if logp is None else logp.get(name))}
    return pd.DataFrame.from_dict(rows, orient="index")


# --------------------------------------------------------------------------- two-stage


def neuron_cosines(proxy: TwoStageProxy, theta: torch.Tensor) -> torch.Tensor:
    """(m,) signed ``cos(w_j, θ*)`` of every first-layer neuron."""
    W = proxy.W.to(torch.float64)
    th = theta.to(torch.float64)
    return (W @ th) / (W.norm(dim=1).clamp_min(1e-300) * th.norm())


def recovered_fraction(cos: torch.Tensor, threshold: float = 0.5) -> float:
    """Fraction of neurons with ``|cos(w_j, θ*)| > threshold``."""
    return float((cos.abs() > threshold).to(torch.float64).mean())


def collapse_baseline(x: torch.Tensor, y: torch.Tensor, beta1: float, theta: torch.Tensor) -> dict[str, float]:
    """What a neuron would show if it had collapsed onto training samples instead of learning θ*.

    Returns:
        ``top_sample_cos``: ``|cos(θ*, x_i*)|`` for the sample with the largest stage-1 weight;
        ``weighted_sample_cos``: ``Σ_i q_i |cos(θ*, x_i)|`` (a neuron pointing at a q-drawn sample);
        ``ess``: effective sample size of the weights ``q``.
    """
    x = x.to(torch.float64)
    th = theta.to(torch.float64) / theta.to(torch.float64).norm()
    q = stage1_weights(y, beta1)
    c = (x @ th).abs() / x.norm(dim=1).clamp_min(1e-300)
    return {
        "top_sample_cos": float(c[int(q.argmax())]),
        "weighted_sample_cos": float((q * c).sum()),
        "ess": effective_sample_size(q),
    }


def two_stage_report(proxy: TwoStageProxy, theta: torch.Tensor, data: TrainData | None = None,
                     beta1: float | None = None, threshold: float = 0.5) -> dict[str, Any]:
    """Per-neuron cosines and summaries of a two-stage proxy.

    Args:
        proxy: a :class:`~tiltenv.rewards.reward_models.TwoStageProxy`.
        theta: θ* (from the judge).
        data, beta1: the training data and β1, to add the collapse baseline and the neurons' alignment
            with single samples (``max_i |cos(w_j, x_i)|``, averaged over neurons).
    Returns:
        dict with ``cos`` (m,) tensor, ``recovered_fraction``, ``mean_abs_cos``, ``stage1_ess``,
        ``stage2_ess`` and, with data, ``top_sample_cos``, ``weighted_sample_cos``, ``neuron_sample_cos``.
    """
    cos = neuron_cosines(proxy, theta)
    out: dict[str, Any] = {
        "cos": cos,
        "recovered_fraction": recovered_fraction(cos, threshold),
        "mean_abs_cos": float(cos.abs().mean()),
        "stage1_ess": float(proxy.stage1_ess),
        "stage2_ess": float(proxy.stage2_ess),
    }
    if data is not None and beta1 is not None:
        x, y = data.as_pointwise()
        out.update({k: v for k, v in collapse_baseline(x, y, beta1, theta).items() if k != "ess"})
        xn = x / x.norm(dim=1, keepdim=True).clamp_min(1e-300)
        W = proxy.W.to(torch.float64)
        Wn = W / W.norm(dim=1, keepdim=True).clamp_min(1e-300)
        out["neuron_sample_cos"] = float((Wn @ xn.T).abs().amax(1).mean())
    return out


def index_angle(proxy: torch.nn.Module, theta: torch.Tensor, n: int = 200_000, seed: int = 0) -> float:
    """Measured angle (degrees) between a proxy's first-Hermite direction and θ*.

    The direction is ``E[r̂(x) x]`` under ``x ~ N(0, I_d)`` (Stein's lemma: ``∝ w`` for any single-index
    proxy ``f(<w, x>)`` with ``E f' ≠ 0``), estimated from ``n`` Gaussian samples; the angle is signed
    through ``arccos`` (0 = aligned, 180 = opposite).
    """
    d = theta.shape[0]
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((n, d), generator=g, dtype=torch.float64)
    with torch.no_grad():
        r = proxy(x).to(torch.float64)
    v = (r - r.mean()) @ x / n
    th = theta.to(torch.float64)
    c = float(v @ th / (v.norm() * th.norm()))
    return math.degrees(math.acos(max(-1.0, min(1.0, c))))


# --------------------------------------------------------------------------- ensembles


@torch.no_grad()
def ensemble_disagreement(proxy: EnsembleProxy, candidates: torch.Tensor, ref_logp: torch.Tensor) -> dict[str, float]:
    """Member disagreement (population variance across members of normalized rewards).

    Returns:
        ``ref``: π_ref-weighted mean variance per context, averaged; ``top``: variance at each context's
        top candidate by the mean of the members (where best-of-K lands), averaged over contexts.
    """
    v = proxy.member_rewards(candidates).to(torch.float64)  # (k, C, K)
    var = v.var(0, unbiased=False)
    top = v.mean(0).argmax(-1, keepdim=True)
    return {
        "ref": M.policy_value(ref_logp, var),
        "top": float(var.gather(-1, top).mean()),
    }


# --------------------------------------------------------------------------- overoptimization curves


def best_of_n_curve(target: Any, ns: Sequence[int], proxy_vals: torch.Tensor | None = None) -> list[dict[str, float]]:
    """Exact best-of-n by a proxy on the judge's contexts: ``n``, ``kl``, ``gold``, ``proxy`` per n.

    ``proxy_vals`` (C, K) scores another proxy on the judge's candidates (default: the task's).
    """
    judge, _ = _judge_and_task(target)
    r = judge.eval_proxy if proxy_vals is None else proxy_vals.to(torch.float64)
    ref = judge.eval_ref_logp
    rows = []
    for n in ns:
        lp = M.best_of_n_logp(ref, r, n)
        rows.append({"n": int(n) if float(n).is_integer() else float(n), "kl": M.kl_divergence(lp, ref), "gold": M.policy_value(lp, judge.eval_gold),
                     "proxy": M.policy_value(lp, r)})
    return rows


def best_of_n_drop(target: Any, ns: Sequence[int], proxy_vals: torch.Tensor | None = None) -> dict[str, Any]:
    """Overoptimization of best-of-n along ``ns``, decided on the measured drop (metrics.overoptimization).

    Returns:
        dict with ``report`` (:class:`~tiltenv.metrics.OveroptimizationReport`), ``rows``, ``drop``,
        ``drop_se`` (standard error of the drop over the evaluation contexts: the peak and final
        policies are scored on the same contexts, so this is a paired error), ``peak_n``.
    """
    judge, _ = _judge_and_task(target)
    r = judge.eval_proxy if proxy_vals is None else proxy_vals.to(torch.float64)
    rows = best_of_n_curve(judge, ns, r)
    rep = M.overoptimization([x["kl"] for x in rows], [x["gold"] for x in rows], [x["proxy"] for x in rows])
    ref = judge.eval_ref_logp
    order = np.argsort([x["kl"] for x in rows], kind="stable")
    final_n = rows[int(order[-1])]["n"]
    peak_n = rows[rep.peak_index]["n"]
    diff = (M.policy_value(M.best_of_n_logp(ref, r, peak_n), judge.eval_gold, per_context=True)
            - M.policy_value(M.best_of_n_logp(ref, r, final_n), judge.eval_gold, per_context=True))
    se = float(diff.std() / math.sqrt(diff.shape[0])) if diff.shape[0] > 1 else math.nan
    return {"report": rep, "rows": rows, "drop": rep.drop, "drop_se": se, "peak_n": peak_n}
