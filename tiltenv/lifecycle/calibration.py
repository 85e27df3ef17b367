"""Calibration of a proxy's preference probabilities against the labeler's true ones (judge side).

The simulated labeler's true probability is known: ``P(a ≻ b) = ε + (1 − 2ε) sigmoid((h(x_a) − h(x_b))/τ)``
(``h = r* + λ <v, x>``, τ = ``label_temp``, ε = ``flip_rate``). A proxy predicts ``sigmoid(Δr̂/τ̂)``; this module
reports, on pairs drawn from π_ref (like the training labels) and from any policy π (calibration shift):

* ``tau_hat`` — τ̂ fitted by maximum likelihood on held-out labels (fresh labels from the true labeler on half of
  the π_ref pairs); ``tau_native`` — the proxy's own Bradley–Terry scale (a BT model's raw margin is its logit, so
  on the normalized proxy τ_native = 1/scale);
* ``ece`` / ``ece_native`` — expected calibration error with τ̂ / with the native scale, on the other half;
* ``reliability`` — the binned curve (predicted vs true probability);
* with a policy: ``ece_policy`` (π_ref's τ̂ applied to the policy's pairs: the shift), ``tau_hat_policy`` and
  ``ece_policy_refit`` (τ̂ refitted there), ``ece_policy_native``.

Ranking and scale are different properties: :class:`TransformedProxy` applies a strictly monotone map to a proxy
(``sign(r)|r|^power``) — identical ranking in every context, hence identical ranking accuracy and best-of-n — and
:func:`ranking_and_scale` shows best-of-n unchanged while a KL-regularized tilt (which reads reward differences)
moves. Formulas live in :mod:`tiltenv.metrics.calibration`.

Example:
    >>> from tiltenv import TaskConfig, make_world
    >>> from tiltenv.lifecycle.calibration import calibration_report
    >>> w = make_world(TaskConfig(d=4, K=8, n_labels=300, label_temp=0.5, n_eval_contexts=256, n_norm_contexts=256))
    >>> rep = calibration_report(w)
    >>> 0 <= rep["ece"] < 0.2 and rep["tau_hat"] > 0
    True
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
import torch

from tiltenv import metrics as M
from tiltenv.worlds.config import TaskConfig
from tiltenv.worlds.evaluation import resolve_judge
from tiltenv.rewards.labels import sample_from_ref
from tiltenv.rewards.proxies import Proxy
from tiltenv.worlds.world import Judge, World, make_world, torch_generator

__all__ = ["labeler_probability", "sample_pairs", "calibration_report", "TransformedProxy", "ranking_and_scale"]


def _judge(target: Any) -> Judge:
    judge = target.judge if isinstance(target, World) else resolve_judge(target)
    if not isinstance(judge.config, TaskConfig) or "utility" not in judge.extras:
        raise ValueError("calibration needs a single-index task (a tabular task has no labeler).")
    return judge


def labeler_probability(target: Any, x_a: torch.Tensor, x_b: torch.Tensor) -> torch.Tensor:
    """The task's human labeler's true ``P(a ≻ b)`` for pairs ``(n, d)``, float64 (its τ, flips and bias)."""
    judge = _judge(target)
    cfg = judge.config
    h = judge.extras["utility"]
    member = cfg.member()  # the world's labeler τ and ε (drawn from its family on the test split)
    p = M.bt_probability(h(x_a) - h(x_b), member.label_temp)
    return member.flip_rate + (1 - 2 * member.flip_rate) * p


def sample_pairs(target: Any, logp: torch.Tensor | None = None, pairs_per_context: int = 2,
                 seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Pairs of distinct candidates drawn from π (default π_ref) on the judge's evaluation contexts.

    Like the training labels (Gumbel top-2 without replacement), ``pairs_per_context`` pairs per context.
    Returns ``x_a, x_b`` of shape ``(C · pairs_per_context, d)``.
    """
    judge = _judge(target)
    lp = judge.eval_ref_logp if logp is None else torch.as_tensor(logp, dtype=torch.float64)
    if lp.shape != judge.eval_ref_logp.shape:
        raise ValueError(f"logp must have the judge's shape {tuple(judge.eval_ref_logp.shape)} (got {tuple(lp.shape)}).")
    g = torch_generator(seed)
    xs_a, xs_b = [], []
    ar = torch.arange(lp.shape[0])
    for _ in range(pairs_per_context):
        idx = sample_from_ref(lp, 2, g)
        xs_a.append(judge.eval_candidates[ar, idx[:, 0]])
        xs_b.append(judge.eval_candidates[ar, idx[:, 1]])
    return torch.cat(xs_a), torch.cat(xs_b)


@torch.no_grad()
def _margin(proxy: Proxy, x_a: torch.Tensor, x_b: torch.Tensor) -> torch.Tensor:
    return (proxy(x_a) - proxy(x_b)).to(torch.float64)


def calibration_report(target: Any, logp: torch.Tensor | None = None, proxy: Proxy | None = None, *,
                       n_bins: int = 10, pairs_per_context: int = 2, seed: int = 0) -> dict[str, Any]:
    """Calibration of ``proxy`` (default: the task's) against the true labeler; see the module docstring.

    Args:
        target: World / env / config / Judge of a single-index task.
        logp: optional (C, K) log-probabilities of an (optimized) policy on the judge's contexts: adds the
            ``*_policy`` figures (calibration shift).
        proxy: another normalized proxy to assess (e.g. ``world.with_proxy(...).task.proxy``).
        n_bins: reliability bins; pairs_per_context: π_ref pairs per evaluation context (half fit τ̂, half score).
    Returns:
        dict of floats plus ``reliability`` (a DataFrame: lo, hi, weight, pred, true).
    """
    judge = _judge(target)
    if proxy is None:
        proxy = make_world(judge.config).task.proxy if not isinstance(target, World) else target.task.proxy
    x_a, x_b = sample_pairs(judge, None, pairs_per_context, seed)
    n = x_a.shape[0]
    fit, ev = slice(0, n // 2), slice(n // 2, n)
    true = labeler_probability(judge, x_a, x_b)
    g = torch_generator(seed + 1)
    labels = (torch.rand(n, generator=g, dtype=torch.float64) < true).to(torch.float64)
    m = _margin(proxy, x_a, x_b)
    tau_hat = M.fit_temperature(m[fit], labels[fit])
    tau_native = 1.0 / float(proxy.scale)
    pred = M.bt_probability(m[ev], tau_hat)
    curve = M.reliability_curve(pred, true[ev], n_bins)
    out: dict[str, Any] = {
        "tau_hat": tau_hat,
        "tau_native": tau_native,
        "ece": M.expected_calibration_error(pred, true[ev], n_bins),
        "ece_native": M.expected_calibration_error(M.bt_probability(m[ev], tau_native), true[ev], n_bins),
        "nll": _nll(pred, true[ev]),
        "pair_accuracy": _pair_accuracy(m[ev], true[ev]),
        "reliability": pd.DataFrame({k: v.numpy() for k, v in curve.items()}),
    }
    if logp is not None:
        pa, pb = sample_pairs(judge, logp, pairs_per_context, seed + 2)
        tp = labeler_probability(judge, pa, pb)
        mp = _margin(proxy, pa, pb)
        lab = (torch.rand(tp.shape[0], generator=g, dtype=torch.float64) < tp).to(torch.float64)
        half = tp.shape[0] // 2
        tau_p = M.fit_temperature(mp[:half], lab[:half])
        out.update({
            "ece_policy": M.expected_calibration_error(M.bt_probability(mp[half:], tau_hat), tp[half:], n_bins),
            "tau_hat_policy": tau_p,
            "ece_policy_refit": M.expected_calibration_error(M.bt_probability(mp[half:], tau_p), tp[half:], n_bins),
            "ece_policy_native": M.expected_calibration_error(M.bt_probability(mp[half:], tau_native), tp[half:], n_bins),
            "pair_accuracy_policy": _pair_accuracy(mp[half:], tp[half:]),
        })
    return out


def _nll(pred: torch.Tensor, true: torch.Tensor) -> float:
    """Expected NLL of labels drawn from ``true`` under ``pred`` (cross-entropy, nats)."""
    p = pred.clamp(1e-12, 1 - 1e-12)
    return float(-(true * p.log() + (1 - true) * (1 - p).log()).mean())


def _pair_accuracy(margin: torch.Tensor, true: torch.Tensor) -> float:
    """Share of pairs (with a non-indifferent labeler) that the margin orders like the labeler's majority."""
    keep = true != 0.5
    agree = torch.where(margin[keep] == 0, 0.5, ((margin[keep] > 0) == (true[keep] > 0.5)).to(torch.float64))
    return float(agree.mean()) if bool(keep.any()) else math.nan


class TransformedProxy(Proxy):
    """A strictly monotone transform of a proxy: ``raw(x) = sign(r̂(x)) |r̂(x)|^power`` (same ranking, other scale).

    Wrap a world's proxy and hand it out with ``world.with_proxy(TransformedProxy(world.task.proxy, 3))`` (which
    renormalizes it under π_ref like every proxy).
    """

    kind = "transformed"

    def __init__(self, base: Proxy, power: float) -> None:
        super().__init__()
        if not (isinstance(power, (int, float)) and power > 0 and math.isfinite(power)):
            raise ValueError(f"power must be a finite number > 0 (got {power!r}).")
        self.base = base
        self.power = float(power)

    def raw(self, x: torch.Tensor) -> torch.Tensor:
        r = self.base(x)
        return torch.sign(r) * r.abs().pow(self.power)


def ranking_and_scale(world: World, proxies: Mapping[str, Proxy], ns: Sequence[int] = (4, 16, 64),
                      betas: Sequence[float] = (1.0, 0.3, 0.1), **calib: Any) -> pd.DataFrame:
    """One row per named proxy: ranking accuracy, calibration, exact best-of-n gold and tilt gold/KL.

    Each proxy is scored on the judge's contexts as given (normalize it first, e.g. with ``world.with_proxy``).
    Columns: ``acc_ref``, ``ece``, ``tau_hat``, ``bon_gold@n`` per n, ``tilt_gold@β`` and ``tilt_kl@β`` per β.
    """
    judge = world.judge
    ref = judge.eval_ref_logp
    rows = {}
    for name, proxy in proxies.items():
        with torch.no_grad():
            r = proxy(judge.eval_candidates).to(torch.float64)
        cal = calibration_report(world, proxy=proxy, **calib)
        row = {"acc_ref": M.ranking_accuracy(r, judge.eval_gold, ref), "ece": cal["ece"], "tau_hat": cal["tau_hat"]}
        for n in ns:
            row[f"bon_gold@{n}"] = M.policy_value(M.best_of_n_logp(ref, r, n), judge.eval_gold)
        for b in betas:
            lp = M.tilt_logp(ref, r, b)
            row[f"tilt_gold@{b:g}"] = M.policy_value(lp, judge.eval_gold)
            row[f"tilt_kl@{b:g}"] = M.kl_divergence(lp, ref)
        rows[name] = row
    return pd.DataFrame.from_dict(rows, orient="index")
