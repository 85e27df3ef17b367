"""Scoring: every number the leaderboard reports, from the judge's exact metrics (one formula, one place).

This module only *composes* :mod:`tiltenv.metrics` and :func:`tiltenv.worlds.evaluation.metrics_of_logp`; it holds
no metric formula of its own except two rank statistics the library does not have (Spearman's ρ and the
Mann–Whitney probability ``P(X > Y)``), each written once here.

Agents track
------------
:func:`score_agent_run` turns the checkpoints of one run (their log-probabilities on the judge's held-out
contexts) into the run's metrics and its trajectory (:class:`~leaderboard.spec.CheckpointRow` s). The last
checkpoint is the fitted policy: its full :func:`~tiltenv.worlds.evaluation.metrics_of_logp` metrics are the run's
metrics, plus ``proxy_gold_gap = proxy_value − gold_value``, ``gold_gain = gold_value − ref_gold_value`` and
the overoptimization summary of the trajectory (:func:`tiltenv.metrics.overoptimization` on (KL, gold, proxy)
of every checkpoint): ``peak_gold``, ``final_gold``, ``gold_drop``, ``kl_at_peak``, ``step_at_peak``,
``overoptimized`` (0/1), ``proxy_rising_while_gold_falls`` (0/1), ``overopt_tol``, ``gold_drop_se`` and Gao
et al.'s fits ``gao_{bon,rl}_{alpha,beta,r2,d_star}`` (NaN where a fit is impossible, e.g. fewer than two
checkpoints with KL > 0).

**Which trajectory** (the ``trajectory`` metric, :data:`TRAJECTORY_KINDS`). On the leaderboard the checkpoints
of a run that queried the proxy in training are those of the scorer's schedule (:mod:`leaderboard.sandbox`:
steps are the channel's query counts, a checkpoint at every mark): ``trajectory = 1``. A run without proxy
queries in training has no such trajectory: the built-in ``tilt`` and ``best_of_n`` are judged along the path
the scorer defines for them (:func:`scorer_path`: the tilt over β, best-of-n over n, with the library's own
formulas) followed by the run's own output (``trajectory = 2``); any other run gets NaN overoptimization keys
and ``trajectory = 0`` — "n/a — no trajectory", never "not overoptimized". The board's
``overoptimization_rate`` is over the runs with a trajectory, ``overoptimization_runs`` says how many.

**Overoptimization tolerance.** ``overoptimization``'s default (a millionth of the curve's gold range) is
right for exact sweeps but flags any wobble of a trained agent. Here a run is *overoptimized* when its
measured peak-to-final gold drop exceeds

    tol = max(overoptimization_tol(judge), OVEROPT_Z · SE(drop), 1e-6 · curve's gold range)

with :func:`tiltenv.worlds.evaluation.overoptimization_tol` the library's one rule (1% of the task's gold range
``E_x max_k r* − V*(π_ref)``, :data:`tiltenv.glossary.OVEROPTIMIZATION_RULE`) and ``SE(drop)`` the paired
standard error over the evaluation contexts of (gold of the peak checkpoint − gold of the final one),
``OVEROPT_Z = 2``: a drop must be both material and not an artefact of the finite evaluation set. As in :func:`~tiltenv.metrics.overoptimization`, points are ordered by KL and
"final" is the checkpoint with the largest KL (the last one when KL grows with training).

Aggregation (rliable)
---------------------
:func:`board` ranks the submissions of one suite version and split by the **IQM** of the normalized score
with a **stratified bootstrap** 95% CI (runs resampled with replacement independently within each task,
:func:`tiltenv.metrics.stratified_bootstrap_ci`), next to the mean (rliable's: per-task means, averaged) with its
CI and the other columns. **A failed run scores** ``FAILED_SCORE = 0`` (the normalized score of π_ref: "no
better than doing nothing") in the IQM, the mean and the probability of improvement, so failing never helps
a submission that beats π_ref; the ``failed`` column counts them. All other columns average the successful
runs only. :func:`probability_of_improvement` is rliable's ``P(X > Y)`` (Mann–Whitney with ties ½, averaged
over tasks) with an independent stratified bootstrap CI.

What a board says and does not: **a submission is its code** — rows are code hashes, and a name with several
versions on one board is shown as ``name@hash`` (:func:`submission_labels`); **complete or marked** — only
submissions with a result for every (task, seed) of the suite are ranked, the others follow unranked;
**intervals only where there is something to resample** — the stratified bootstrap redraws runs within a task,
so with one seed per task it has nothing to draw and the CI is NaN ("n/a (1 seed)"), never a zero-width interval;
a comparison of two submissions whose runs differ is refused unless asked for the runs both have
(``common_tasks=True``), and then says so (:class:`Improvement`). :func:`board_by_task` is the per-task table.

Reward-model track
------------------
:func:`score_reward_model` drives fixed reference optimizers with a submitted reward model's scores on the
judge's candidates: the exact best-of-n sweep (n = 1, 2, 4, …, K), the closed-form tilt at the task's β and
RLOO at a fixed budget on a copy of the public task whose proxy is the submitted model. The scores are first
**normalized the way every library proxy is** (Gao et al.: centred and scaled to unit variance under π_ref,
pooled over the judge's evaluation contexts), otherwise a submission's scale would act as its own β. Beside
them, offline metrics (ranking accuracy on-policy = π_ref-weighted pairs and off-policy = pairs weighted by
the gold tilt π*_β or uniformly, per-context Spearman with gold, Shang et al.'s harm-aware accuracies,
reward variance and gold correlation under π_ref; Shang et al.'s Acc-W under π_ref *is* ``acc_onpolicy`` and is
not stored twice, and ``acc_uniform``/``hacc_w`` equal ``acc_onpolicy``/``hacc`` whenever π_ref is uniform).
:func:`metric_predictiveness` reports across scored reward models how well each offline metric predicts
downstream gold **within a task** (the mean of per-world Spearman ρ with its CI), the pooled ρ beside it.
A reward model's ``fit_time`` is measured by the scorer around its ``fit`` (sandboxed: from the child's start
to the end of ``fit``). The library's proxies are the built-in entries (:func:`builtin_reward_models`,
:func:`score_builtin_reward_model`).
"""

from __future__ import annotations

import copy
import math
import re
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from leaderboard.spec import CheckpointRow
from tiltenv import metrics as M
from tiltenv._validation import check_float, check_int, suggest
from tiltenv.worlds.evaluation import metrics_of_logp, overoptimization_tol
from tiltenv.glossary import OVEROPTIMIZATION_SE_Z

__all__ = [
    "OVEROPT_Z",
    "FAILED_SCORE",
    "TRAJECTORY_KINDS",
    "UnscorableOutput",
    "scorer_path",
    "AGENT_METRICS",
    "RM_OFFLINE_METRICS",
    "RM_DOWNSTREAM_METRICS",
    "LOWER_IS_BETTER",
    "score_agent_run",
    "overoptimization_summary",
    "board",
    "board_by_task",
    "submission_labels",
    "short_hash",
    "Improvement",
    "probability_of_improvement",
    "spearman",
    "score_reward_model",
    "builtin_reward_models",
    "score_builtin_reward_model",
    "metric_predictiveness",
]

#: Statistical part of the overoptimization tolerance: a drop must exceed this many paired standard errors (over
#: the evaluation contexts) of the peak-minus-final gold, besides the library's absolute part
#: (:func:`tiltenv.worlds.evaluation.overoptimization_tol`: 1% of the task's gold range).
OVEROPT_Z = OVEROPTIMIZATION_SE_Z  # 2.0, documented in docs/metrics.md and tiltenv.glossary
#: Normalized score given to a failed run in the IQM / mean / probability of improvement (π_ref's score).
FAILED_SCORE = 0.0

#: What the overoptimization keys of an agent run were computed on (the ``trajectory`` metric): 0 = none
#: ("n/a — no trajectory": the keys are NaN), 1 = the checkpoints of the scorer's schedule (the channel's query
#: counts), 2 = a path the scorer defines for a training-free baseline (the tilt over β, best-of-n over n).
TRAJECTORY_KINDS = {0: "n/a — no trajectory", 1: "checkpoints at the scorer's marks", 2: "the scorer's path"}
#: The tilt path of a ``tilt`` baseline run: β_agent times these factors (π_ref first, the run's own output last).
TILT_PATH_FACTORS = (256.0, 64.0, 16.0, 4.0, 2.0)


class UnscorableOutput(ValueError):
    """A submission's output that is valid on the channel but cannot be scored (e.g. a reward model whose scores
    are constant under π_ref, or so large that their variance overflows): the run fails ``invalid_output``."""


_CKPT_FIELDS = ("gold_value", "proxy_value", "kl", "value_gap", "normalized_score", "reward_variance_policy")
_GAO_KEYS = tuple(f"gao_{form}_{k}" for form in ("bon", "rl") for k in ("alpha", "beta", "r2", "d_star"))
_OVEROPT_KEYS = (
    "peak_gold", "final_gold", "gold_drop", "kl_at_peak", "step_at_peak", "overoptimized",
    "proxy_rising_while_gold_falls", "overopt_tol", "gold_drop_se",
) + _GAO_KEYS

#: Every metric of an agent run (the keys of :func:`score_agent_run`'s dict).
AGENT_METRICS = (
    "gold_value", "proxy_value", "ref_gold_value", "kl", "chi2", "objective", "optimal_objective", "value_gap",
    "normalized_score", "kl_matched_gap", "reward_variance_ref", "reward_variance_policy", "proxy_gold_corr",
    "beta", "proxy_gold_gap", "gold_gain", "trajectory",
) + _OVEROPT_KEYS

#: Offline metrics of a reward model (need no optimization): keys of :func:`score_reward_model`.
#: (Shang et al.'s Acc-W under π_ref is ``acc_onpolicy`` by definition — the same pair weights π_ref(a)·π_ref(b) —
#: so it is not stored a second time.)
RM_OFFLINE_METRICS = (
    "acc_onpolicy", "acc_offpolicy", "acc_uniform", "spearman", "hacc", "hacc_w",
    "reward_variance_ref", "gold_corr_ref",
)
#: Downstream metrics of a reward model (fixed reference optimizers on it).
RM_DOWNSTREAM_METRICS = (
    "bon_peak_gold", "bon_final_gold", "bon_drop", "bon_drop_se", "bon_n_at_peak", "bon_kl_at_peak",
    "bon_overoptimized", "tilt_gold_value", "tilt_proxy_value", "tilt_kl", "tilt_value_gap",
    "tilt_normalized_score", "rloo_gold_value", "rloo_kl", "rloo_value_gap", "rloo_normalized_score",
    "rloo_proxy_queries",
)

#: Metrics where smaller is better (boards sort them ascending).
LOWER_IS_BETTER = frozenset({
    "value_gap", "kl_matched_gap", "kl", "chi2", "gold_drop", "overoptimized", "proxy_gold_gap",
    "bon_drop", "tilt_value_gap", "rloo_value_gap", "bon_overoptimized",
})


# ==================================================================================================
# Agents: one run
# ==================================================================================================


def _as_logps(logps: Any, judge: Any) -> torch.Tensor:
    if isinstance(logps, torch.Tensor):
        t = logps.detach()
    else:
        try:
            t = torch.as_tensor(np.asarray(logps))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"logps must be a numeric (n_checkpoints, C, K) array ({exc}).") from None
    t = t.to(judge.eval_ref_logp.device)  # scored where the judge's tensors live (a GPU with --device cuda)
    if not (t.is_floating_point()):
        raise ValueError(f"logps must be floating-point log-probabilities (got dtype {t.dtype}).")
    C, K = judge.eval_ref_logp.shape
    if t.ndim == 2:
        t = t.unsqueeze(0)
    if t.ndim != 3 or tuple(t.shape[1:]) != (C, K) or t.shape[0] == 0:
        raise ValueError(
            f"logps must have shape (n_checkpoints >= 1, C={C}, K={K}) over the judge's evaluation contexts "
            f"(got {tuple(t.shape)})."
        )
    return t


def _check_steps(steps: Sequence[int], n: int) -> list[int]:
    try:
        out = [check_int(f"steps[{i}]", s, low=0) for i, s in enumerate(steps)]
    except TypeError as exc:
        raise ValueError(str(exc)) from None
    if len(out) != n:
        raise ValueError(f"steps has {len(out)} entries but logps has {n} checkpoints; they must match.")
    if any(b < a for a, b in zip(out, out[1:])):
        raise ValueError(f"steps must be non-decreasing (got {out}).")
    return out


def overoptimization_summary(
    judge: Any,
    kl: Sequence[float],
    gold: Sequence[float],
    proxy: Sequence[float] | None,
    logps: torch.Tensor | None = None,
    steps: Sequence[int] | None = None,
) -> dict[str, float]:
    """Overoptimization of one trajectory with the leaderboard's tolerance (see the module docstring).

    Args:
        judge: the run's judge (for the gold scale and the per-context gold of the peak/final points).
        kl, gold, proxy: per checkpoint, shape ``(N,)`` (``proxy`` may be None).
        logps: ``(N, C, K)`` log-probabilities of the checkpoints (for the paired SE of the drop; without
            them the statistical part of the tolerance is left out and ``gold_drop_se`` is NaN).
        steps: checkpoint steps (for ``step_at_peak``; default the indices).

    Returns:
        dict with the :data:`AGENT_METRICS` overoptimization keys (floats; flags as 0.0/1.0). Checkpoints with
        infinite KL (mass off π_ref's support: their normalized score is −∞) are left out of the curve; with none
        left every key is NaN.
    """
    kl, gold = np.asarray(kl, dtype=np.float64), np.asarray(gold, dtype=np.float64)
    on = np.isfinite(kl)  # a checkpoint with mass off π_ref's support (KL = ∞) has no place on a KL axis
    if not on.all():
        if not on.any():
            return {k: math.nan for k in _OVEROPT_KEYS}
        idx = np.flatnonzero(on)
        steps = list(range(len(kl))) if steps is None else list(steps)
        return overoptimization_summary(judge, kl[idx], gold[idx],
                                        None if proxy is None else np.asarray(proxy, dtype=np.float64)[idx],
                                        logps=None if logps is None else logps[torch.as_tensor(idx)],
                                        steps=[steps[i] for i in idx])
    rep0 = M.overoptimization(kl, gold, proxy)  # default tol: only to locate the peak and final points
    i_peak, i_final = rep0.peak_index, rep0.final_index
    g = judge.eval_gold
    se = math.nan
    if logps is not None and logps.shape[1] > 1:
        diff = M.policy_value(logps[i_peak], g, per_context=True) - M.policy_value(logps[i_final], g, per_context=True)
        se = float(diff.std() / math.sqrt(diff.shape[0]))
    tol = max(overoptimization_tol(judge), 0.0 if math.isnan(se) else OVEROPT_Z * se, rep0.tol)
    rep = M.overoptimization(kl, gold, proxy, tol=tol)
    steps = list(range(len(kl))) if steps is None else list(steps)
    out = {
        "peak_gold": rep.peak_gold,
        "final_gold": rep.final_gold,
        "gold_drop": rep.drop,
        "kl_at_peak": rep.kl_at_peak,
        "step_at_peak": float(steps[rep.peak_index]),
        "overoptimized": float(rep.overoptimized),
        "proxy_rising_while_gold_falls": float(rep.proxy_rising_while_gold_falls),
        "overopt_tol": rep.tol,
        "gold_drop_se": se,
    }
    for form in ("bon", "rl"):
        fit = rep.fits[form]
        for k in ("alpha", "beta", "r2", "d_star"):
            out[f"gao_{form}_{k}"] = float(getattr(fit, k))
    return out


def scorer_path(sub: Any, judge: Any) -> torch.Tensor | None:
    """The path the scorer defines for a training-free built-in baseline, or None (no path: "n/a").

    ``tilt`` (KL): the closed-form tilt at β_agent · :data:`TILT_PATH_FACTORS` (χ²: the same β with
    :func:`tiltenv.metrics.chi2_tilt_logp`); ``best_of_n``: exact best-of-n at n = 1, 2, 4, … below the agent's n.
    Each point is the agent's own formula (:func:`tiltenv.metrics.tilt_logp`, :func:`~tiltenv.metrics.best_of_n_logp`)
    on the judge's proxy values of the evaluation contexts; π_ref comes first, the run's own output is appended
    by :func:`score_agent_run`. Only a baseline named by the scorer gets a path: a file's or module's code cannot
    be known to be a tilt.

    Returns:
        ``(P, C, K)`` float64 log-probabilities, or None.
    """
    if getattr(sub, "kind", None) != "baseline" or getattr(sub, "target", None) not in ("tilt", "best_of_n"):
        return None
    from baselines import get_baseline

    _, config_cls = get_baseline(sub.target)
    cfg = config_cls(**{k: v for k, v in dict(sub.config).items() if k != "device"})
    ref = judge.eval_ref_logp.to(torch.float64)
    r = judge.eval_proxy.to(torch.float64)
    points = [ref - torch.logsumexp(ref, dim=-1, keepdim=True)]
    if sub.target == "tilt":
        beta_task = float(judge.config.beta)
        b = float(beta_task if cfg.beta is None else cfg.beta)
        base = b if b > 0 else beta_task
        form = M.chi2_tilt_logp if cfg.divergence == "chi2" else M.tilt_logp
        points += [form(ref, r, base * f) for f in TILT_PATH_FACTORS if base * f > b]
    else:
        n = 1.0
        while n * 2 < float(cfg.n):
            n *= 2
            points.append(M.best_of_n_logp(ref, r, n))
    return torch.stack(points)


def score_agent_run(
    judge: Any, steps: Sequence[int], logps: np.ndarray | torch.Tensor, *, beta: float | None = None,
    trajectory: bool = True, path: torch.Tensor | None = None,
) -> tuple[dict[str, float], list[CheckpointRow]]:
    """Metrics of one agent run from its checkpoints' log-probabilities on the judge's evaluation contexts.

    Args:
        judge: the run's :class:`~tiltenv.worlds.world.Judge`.
        steps: the checkpoint steps, non-decreasing, one per checkpoint (step 0 = the initial policy).
        logps: ``(n_checkpoints, C, K)`` normalized log-probabilities over the judge's ``C`` evaluation
            contexts (a single ``(C, K)`` array is one checkpoint). The last checkpoint is the fitted policy.
        beta: KL coefficient of the scored objective (default: the task's).
        trajectory: whether the checkpoints are a trajectory (the leaderboard's: checkpoints at the scorer's
            marks, steps = the channel's query counts). ``False`` (a run without proxy queries in training):
            the overoptimization keys are NaN and ``trajectory = 0`` ("n/a — no trajectory"), never a
            "not overoptimized" by construction — unless ``path`` is given.
        path: ``(P, C, K)`` log-probabilities of a scorer-defined path (:func:`scorer_path`); the summary is
            computed on the path followed by the run's final checkpoint (``trajectory = 2``).

    Returns:
        ``(metrics, checkpoints)``: ``metrics`` has every key of :data:`AGENT_METRICS` (floats; NaN where a Gao
        fit is impossible); ``checkpoints`` one :class:`~leaderboard.spec.CheckpointRow` per checkpoint.

    Raises:
        ValueError: wrong shape, steps that do not match or decrease, unnormalized or NaN log-probabilities
            (the message of :mod:`tiltenv.metrics` names the context).
    """
    lp = _as_logps(logps, judge)
    steps = _check_steps(steps, lp.shape[0])
    per = [metrics_of_logp(lp[i], judge, beta=beta) for i in range(lp.shape[0])]
    rows = [CheckpointRow(step=s, **{k: float(m[k]) for k in _CKPT_FIELDS}) for s, m in zip(steps, per)]
    final = {k: float(v) for k, v in per[-1].items()}
    final["proxy_gold_gap"] = final["proxy_value"] - final["gold_value"]
    final["gold_gain"] = final["gold_value"] - final["ref_gold_value"]
    if path is not None:
        pl = _as_logps(path, judge).to(lp.dtype)
        ref, gold, proxy = judge.eval_ref_logp, judge.eval_gold, judge.eval_proxy
        # the three numbers of each path point, as metrics_of_logp computes them (not its costly other metrics)
        kl = [M.kl_divergence(pl[i], ref) for i in range(pl.shape[0])] + [per[-1]["kl"]]
        g = [M.policy_value(pl[i], gold) for i in range(pl.shape[0])] + [per[-1]["gold_value"]]
        p = [M.policy_value(pl[i], proxy) for i in range(pl.shape[0])] + [per[-1]["proxy_value"]]
        final.update(overoptimization_summary(judge, kl, g, p, logps=torch.cat([pl, lp[-1:]])))
        final["step_at_peak"] = math.nan  # a point of the path, not a step of training
        final["trajectory"] = 2.0
    elif trajectory:
        final.update(overoptimization_summary(
            judge, [m["kl"] for m in per], [m["gold_value"] for m in per], [m["proxy_value"] for m in per],
            logps=lp, steps=steps,
        ))
        final["trajectory"] = 1.0
    else:
        final.update({k: math.nan for k in _OVEROPT_KEYS})
        final["trajectory"] = 0.0
    return final, rows


# ==================================================================================================
# Aggregation (rliable)
# ==================================================================================================


def _stratified_ci(columns: list[np.ndarray], statistic: str | Callable, *, reps: int, confidence: float,
                   seed: int) -> tuple[float, float, float]:
    """Point estimate and stratified-bootstrap CI of a statistic of per-task score columns.

    Equal-length columns (the usual, complete case) go through :func:`tiltenv.metrics.stratified_bootstrap_ci`
    as a ``(num_runs, num_tasks)`` array. Columns of different lengths (an interrupted scoring) are
    resampled the same way — each column independently, with replacement, to its own length.

    ``statistic``: ``"iqm"`` (:func:`tiltenv.metrics.iqm` over all runs of all tasks), ``"mean"``
    (:func:`tiltenv.metrics.aggregate_mean`: per-task means averaged) or a callable on a list of columns.
    """
    if statistic == "iqm":
        rect_stat, ragged_stat = M.iqm, lambda cols: M.iqm(np.concatenate(cols))
    elif statistic == "mean":
        rect_stat, ragged_stat = M.aggregate_mean, lambda cols: float(np.mean([M.aggregate_mean(c) for c in cols]))
    else:
        ragged_stat = statistic
        rect_stat = lambda a: statistic([a[:, t] for t in range(a.shape[1])])  # noqa: E731
    lengths = {len(c) for c in columns}
    if len(lengths) == 1:
        return M.stratified_bootstrap_ci(np.stack(columns, axis=1), rect_stat, reps=reps, confidence=confidence,
                                         seed=seed)
    rng = np.random.default_rng(seed)
    stats = np.empty(int(reps))
    for i in range(int(reps)):
        stats[i] = ragged_stat([c[rng.integers(0, len(c), size=len(c))] for c in columns])
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.percentile(stats, [100.0 * alpha, 100.0 * (1.0 - alpha)])
    return float(ragged_stat(columns)), float(lo), float(hi)


def _check_boot(n_boot: Any, confidence: Any) -> tuple[int, float]:
    n_boot = check_int("n_boot", n_boot, low=1)
    confidence = check_float("confidence", confidence, low=0.0, high=1.0, low_open=True, high_open=True)
    return n_boot, confidence


def _require_columns(df: pd.DataFrame, cols: Sequence[str], what: str) -> None:
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"{what} must be a pandas DataFrame (got {type(df).__name__}).")
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise ValueError(f"{what} lacks the column(s) {missing}; it has {sorted(map(str, df.columns))}.")


def _numeric_columns(df: pd.DataFrame) -> list[str]:
    skip = {"seed_index", "suite_version"}
    return [c for c in df.columns if c not in skip and pd.api.types.is_numeric_dtype(df[c])
            and not pd.api.types.is_bool_dtype(df[c])]


def _check_metric(df: pd.DataFrame, metric: str) -> str:
    valid = _numeric_columns(df)
    if not isinstance(metric, str) or metric not in valid:
        raise ValueError(f"metric must be one of the numeric columns {sorted(valid)} (got {metric!r})."
                         + suggest(str(metric), valid))
    return metric


def _with_default_metric(runs: pd.DataFrame, metric: str) -> pd.DataFrame:
    """A board whose every run failed has no metric columns (a fresh board, a first submission that fails): its
    default score column is then all NaN (failed runs score ``failed_score``), not an unknown-metric error."""
    if metric in runs.columns or not len(runs) or "status" not in runs.columns or (runs["status"] == "ok").any():
        return runs
    return runs.assign(**{metric: np.nan})


def _ok_mask(df: pd.DataFrame) -> pd.Series:
    if "status" not in df.columns:
        return pd.Series(True, index=df.index)
    bad = set(df["status"].dropna().unique()) - {"ok", "failed"}
    if bad:
        raise ValueError(f"status must be 'ok' or 'failed' (found {sorted(map(str, bad))}).")
    return df["status"] == "ok"


def _not_applicable(df: pd.DataFrame) -> pd.Series:
    """Runs stored as ``not_applicable`` (a built-in baseline of another kind of task, :func:`leaderboard.runner.
    not_applicable`): listed on the board, left out of its scores."""
    if "reason" not in df.columns:
        return pd.Series(False, index=df.index)
    return (df["reason"] == "not_applicable") & (df["status"] != "ok" if "status" in df.columns else True)


def _single_board(df: pd.DataFrame) -> None:
    keys = [c for c in ("suite", "suite_version", "split") if c in df.columns]
    if keys:
        groups = df[keys].drop_duplicates()
        if len(groups) > 1:
            shown = "; ".join(", ".join(f"{k}={v}" for k, v in zip(keys, row)) for row in groups.itertuples(index=False))
            raise ValueError(
                f"runs mix {len(groups)} suite versions / splits ({shown}); boards never mix them: filter the "
                "frame to one (e.g. Store.runs(suite=..., version=..., split=...))."
            )


def _track_of(df: pd.DataFrame) -> str:
    if "track" in df.columns and len(df):
        tracks = sorted(set(df["track"].dropna()))
        if len(tracks) > 1:
            raise ValueError(f"runs mix the tracks {tracks}; filter the frame to one track.")
        if tracks:
            return str(tracks[0])
    return "agent"


def _submission_keys(df: pd.DataFrame) -> pd.Series:
    """A submission is its code hash when known (two versions of one name are two submissions)."""
    if "code_hash" in df.columns:
        return df["code_hash"].astype(str)
    return df["submission"].astype(str)


#: Characters of the code hash shown after ``@`` (more where two versions of a name share that prefix).
SHORT_HASH = 8


def short_hash(code_hash: str, n: int = SHORT_HASH) -> str:
    """The first ``n`` hex digits of a code hash (what the board shows)."""
    return str(code_hash)[:n]


def submission_labels(runs: pd.DataFrame) -> pd.Series:
    """The board's name of every row: a submission is its code, so a name belongs to one code hash per board.

    A name used by a single code hash in ``runs`` is shown as it is; a name used by several (an edited file keeps
    its stem) is shown as ``name@hash`` for each of its versions, with the shortest hash prefix (at least
    :data:`SHORT_HASH` digits) that tells them apart. Frames without ``code_hash`` keep their names.

    Returns:
        A string Series aligned with ``runs``.
    """
    _require_columns(runs, ("submission",), "runs")
    names = runs["submission"].astype(str)
    if "code_hash" not in runs.columns or runs.empty:
        return names.copy()
    hashes = runs["code_hash"].astype(str)
    pairs = pd.DataFrame({"n": names, "h": hashes}).drop_duplicates()
    label: dict[tuple[str, str], str] = {}
    for name, g in pairs.groupby("n", sort=False):
        hs = sorted(set(g["h"]))
        if len(hs) == 1:
            label[(name, hs[0])] = name
            continue
        k = SHORT_HASH
        while len({h[:k] for h in hs}) < len(hs) and k < max(len(h) for h in hs):
            k += 1
        for h in hs:
            label[(name, h)] = f"{name}@{h[:k]}"
    return pd.Series([label[(n, h)] for n, h in zip(names, hashes)], index=runs.index, dtype=object).astype(str)


def _coverage(df: pd.DataFrame) -> set[tuple[str, int]]:
    """The (task, seed index) pairs a submission has a result for (ok or failed: a failure is a result)."""
    seeds = df["seed_index"] if "seed_index" in df.columns else pd.Series(0, index=df.index)
    return {(str(t), int(i)) for t, i in zip(df["task_key"], seeds)}


def _check_expected(expected: Any) -> set[tuple[str, int]] | None:
    if expected is None:
        return None
    try:
        out = {(str(t), int(i)) for t, i in expected}
    except (TypeError, ValueError):
        raise ValueError("expected must be an iterable of (task_key, seed_index) pairs (the suite's runs).") from None
    if not out:
        raise ValueError("expected must name at least one (task_key, seed_index) pair.")
    return out


def _failed_score(failed_score: Any, metric: str) -> float | None:
    if isinstance(failed_score, str):
        if failed_score != "auto":
            raise ValueError(f"failed_score must be a number, None or 'auto' (got {failed_score!r}).")
        return FAILED_SCORE if metric.endswith("normalized_score") else None
    return None if failed_score is None else check_float("failed_score", failed_score)


def _score_columns(df: pd.DataFrame, metric: str, ok: pd.Series, failed_score: float | None) -> dict[str, np.ndarray]:
    """Per task, the metric of every run (failed runs at ``failed_score``, or left out when it is None)."""
    vals = df[metric].astype(float).copy()
    if failed_score is None:
        keep = ok
    else:
        vals[~ok] = failed_score
        keep = pd.Series(True, index=df.index)
    nan = keep & vals.isna()
    if nan.any():
        rows = df.loc[nan, [c for c in ("submission", "task_key", "seed_index") if c in df.columns]]
        raise ValueError(f"{metric} is NaN for successful run(s) {rows.to_dict('records')[:5]}; cannot aggregate.")
    cols = {}
    sub = df[keep]
    for task, idx in sub.groupby("task_key", sort=True).groups.items():
        order = sub.loc[idx].sort_values("seed_index").index if "seed_index" in sub.columns else idx
        cols[str(task)] = vals.loc[order].to_numpy(np.float64)
    return cols


_AGENT_COLUMNS = (
    ("value_gap", "value_gap", "mean"),
    ("kl", "kl", "mean"),
    ("kl_matched_gap", "kl_matched_gap", "mean"),
    ("reward_variance_policy", "reward_variance_policy", "mean"),
    ("proxy_gold_gap", "proxy_gold_gap", "mean"),
    ("overoptimization_rate", "overoptimized", "mean"),
    ("overoptimization_runs", "overoptimized", "count"),
    ("median_fit_time", "fit_time", "median"),
)
#: Per-dimension columns of multi-objective runs (tiltenv.worlds.multiobjective): means over the runs that have them.
_DIM_COLUMN = re.compile(r"^(gold_value|gold_gain)_dim(\d+)$")


def _dimension_columns(runs: pd.DataFrame) -> tuple[tuple[str, str, str], ...]:
    """``gold_value_dim{i}``, ``gold_gain_dim{i}`` (by dimension), ``min_dim_gain`` and the rate of runs with every
    dimension at or above π_ref, for the metrics present in ``runs`` (none on a single-objective board)."""
    found = sorted((int(mt.group(2)), mt.group(1)) for c in runs.columns if (mt := _DIM_COLUMN.match(str(c))))
    cols = tuple((f"{kind}_dim{i}", f"{kind}_dim{i}", "mean") for i, kind in found)
    if "min_dim_gain" in runs.columns:
        cols += (("min_dim_gain", "min_dim_gain", "mean"), ("dims_at_or_above_ref_rate", "dims_at_or_above_ref", "mean"))
    return cols


_RM_COLUMNS = (
    ("acc_onpolicy", "acc_onpolicy", "mean"),
    ("acc_offpolicy", "acc_offpolicy", "mean"),
    ("spearman", "spearman", "mean"),
    ("bon_peak_gold", "bon_peak_gold", "mean"),
    ("tilt_value_gap", "tilt_value_gap", "mean"),
    ("rloo_normalized_score", "rloo_normalized_score", "mean"),
    ("overoptimization_rate", "bon_overoptimized", "mean"),
    ("median_fit_time", "fit_time", "median"),
)


#: Columns of :func:`board` (then the track's columns, then the provenance columns).
BOARD_COLUMNS = [
    "rank", "submission", "name", "code_hash", "metric", "complete", "runs", "expected_runs", "failed", "not_applicable",
    "tasks", "seeds", "iqm", "iqm_lo", "iqm_hi", "mean", "mean_lo", "mean_hi",
]  # fmt: skip
#: Provenance columns of :func:`board`: the distinct values over the submission's runs (joined by ", ").
BOARD_PROVENANCE = ("tiltenv_version", "torch_version", "device")


def _joined(values: pd.Series) -> str:
    vals = sorted({str(v) for v in values if isinstance(v, str) and v})
    return ", ".join(vals) if vals else "unknown"


def board(
    runs: pd.DataFrame,
    *,
    metric: str | None = None,
    n_boot: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
    failed_score: float | None | str = "auto",
    expected: Any = None,
) -> pd.DataFrame:
    """The board of one suite version and split: one row per submission, ranked by the IQM of ``metric``.

    **A submission is its code**: rows are code hashes, named by :func:`submission_labels` (``name@hash`` where
    one name has several versions on the board). **Complete or marked**: only submissions with a result (ok or
    failed) for every (task, seed) of ``expected`` are ranked; the others follow, unranked (``rank`` is
    ``<NA>``, ``complete`` False). **Statistics that say what they know**: a CI needs at least two runs on every
    task (``seeds >= 2``); with one seed per task (rliable's stratified bootstrap resamples within a task, so it
    would be a zero-width interval) the bounds are NaN and shown as "n/a (1 seed)". Ties in IQM and mean rank
    the submission with fewer failed runs first.

    Args:
        runs: one row per run (the store's runs frame): ``submission``, ``task_key``, ``seed_index``,
            ``status`` (``ok`` / ``failed``; absent = all ok), optional ``code_hash``, ``suite``,
            ``suite_version``, ``split``, ``track``, ``fit_time`` and one column per metric.
        metric: the ranked score (default ``normalized_score``; ``tilt_normalized_score`` on the
            reward-model track). A wrong name gets the closest valid one.
        n_boot, confidence, seed: stratified bootstrap replicates, CI level, RNG seed (deterministic).
        failed_score: the value a failed run gets in the IQM / mean; ``"auto"`` (default): :data:`FAILED_SCORE`
            (0, π_ref's) for normalized scores (a metric named ``*normalized_score``), left out for any other
            metric; ``None`` leaves failed runs out.
        expected: the (task_key, seed_index) pairs of the suite's split (e.g. ``[(s.task_key, s.seed_index)
            for s in suite.runs(split)]``); default: every pair some submission of ``runs`` has.

    Returns:
        DataFrame: the complete submissions sorted by IQM (descending; ascending for :data:`LOWER_IS_BETTER`
        metrics; then mean, then fewer failures, then name), then the incomplete ones in the same order; columns
        :data:`BOARD_COLUMNS` (``not_applicable``: runs stored ``not_applicable`` — a built-in baseline of another
        kind of task — left out of the IQM and mean, and the submission listed unranked; ``submission`` the board's label, ``name`` the stored name, ``runs`` / ``expected_runs``
        results stored / due, ``seeds`` the fewest runs of any task, ``rank`` nullable Int64) then the track's columns (agents: ``value_gap, kl, kl_matched_gap, reward_variance_policy,
        proxy_gold_gap, overoptimization_rate, overoptimization_runs, median_fit_time``; means over successful runs
        (``overoptimization_rate`` over the runs with a trajectory only, ``overoptimization_runs`` of them), NaN when
        none succeeded or the column is absent); with multi-objective runs also ``gold_value_dim{i}``,
        ``gold_gain_dim{i}``, ``min_dim_gain`` and ``dims_at_or_above_ref_rate`` (means over the runs that have them);
        then, when ``runs`` has them, the provenance :data:`BOARD_PROVENANCE` (distinct values, ", "-joined) and
        ``scored`` (the date of the submission's last run, UTC).

    Raises:
        ValueError: a frame mixing suite versions, splits or tracks; a missing column; an unknown metric;
            NaN metric in a successful run.
    """
    runs, track, metric, failed_score, n_boot, confidence, ok, keys, labels = _board_inputs(
        runs, metric, failed_score, n_boot, confidence)
    want = _check_expected(expected)
    if want is None:
        want = _coverage(runs)
    extra = _RM_COLUMNS if track == "reward_model" else _AGENT_COLUMNS + _dimension_columns(runs)
    prov = [c for c in BOARD_PROVENANCE if c in runs.columns]
    rows = []
    na_all = _not_applicable(runs)
    for key in sorted(keys.unique()):
        m = keys == key
        df, okm, na = runs[m], ok[m], na_all[m]
        names = sorted(set(df["submission"].astype(str)))
        have = _coverage(df)
        row: dict[str, Any] = {
            "submission": sorted(set(labels[m]))[-1],
            "name": names[-1] if names else key,
            "code_hash": str(df["code_hash"].iloc[0]) if "code_hash" in df.columns else "",
            "metric": metric,
            "complete": want <= have,
            "runs": int(len(df)),
            "expected_runs": len(want),
            "failed": int((~okm & ~na).sum()),
            "not_applicable": int(na.sum()),
            "tasks": int(df["task_key"].nunique()),
            "seeds": int(df.groupby("task_key").size().min()) if len(df) else 0,
        }
        cols = _score_columns(df[~na], metric, okm[~na], failed_score)  # a not-applicable run is no score (nor π_ref's)
        if cols:
            informative = min(len(c) for c in cols.values()) >= 2  # else the within-task bootstrap has nothing to draw
            for stat in ("iqm", "mean"):
                p, lo, hi = _stratified_ci(list(cols.values()), stat, reps=n_boot, confidence=confidence, seed=seed)
                row.update({stat: p, f"{stat}_lo": lo if informative else math.nan,
                            f"{stat}_hi": hi if informative else math.nan})
        else:
            row.update({k: math.nan for k in ("iqm", "iqm_lo", "iqm_hi", "mean", "mean_lo", "mean_hi")})
        for c in prov:
            row[c] = _joined(df[c])
        if "created" in df.columns:
            row["scored"] = str(max(df["created"].astype(str)))[:10] if len(df) else ""
        good = df[okm]
        for out, src, how in extra:
            if how == "count":  # how many successful runs the column is over (NaN = n/a, not counted)
                row[out] = int(good[src].notna().sum()) if src in good.columns else 0
            elif src in good.columns and len(good) and good[src].notna().any():
                s = good[src].astype(float)
                row[out] = float(s.median() if how == "median" else s.mean())
            else:
                row[out] = math.nan
        rows.append(row)
    tail = prov + (["scored"] if "created" in runs.columns else [])
    out = pd.DataFrame(rows, columns=BOARD_COLUMNS[1:] + [c[0] for c in extra] + tail)
    asc = metric in LOWER_IS_BETTER
    out["complete"] = out["complete"].astype(bool)
    # ranked: complete, and scored on every task (an entry not applicable to some tasks is listed, unranked: its
    # IQM is over other tasks than the ranked ones')
    ranked = out["complete"] & (out["not_applicable"] == 0)
    out = out.assign(_ranked=ranked).sort_values(["_ranked", "iqm", "mean", "failed", "submission"],
                                                 ascending=[False, asc, asc, True, True], na_position="last",
                                                 kind="mergesort").drop(columns="_ranked").reset_index(drop=True)
    n_ranked = int(ranked.sum())
    rank = pd.array([*range(1, n_ranked + 1), *([pd.NA] * (len(out) - n_ranked))], dtype="Int64")
    out.insert(0, "rank", rank)
    return out


def _board_inputs(runs: pd.DataFrame, metric: str | None, failed_score: Any, n_boot: int, confidence: float):
    """The checked inputs :func:`board` and :func:`board_by_task` share: ``(runs, track, metric, failed_score, n_boot,
    confidence, ok mask, submission keys, board labels)`` (the track's default metric when ``metric`` is None)."""
    _require_columns(runs, ("submission", "task_key"), "runs")
    n_boot, confidence = _check_boot(n_boot, confidence)
    _single_board(runs)
    track = _track_of(runs)
    if metric is None:
        metric = "tilt_normalized_score" if track == "reward_model" else "normalized_score"
        runs = _with_default_metric(runs, metric)
    metric = _check_metric(runs, metric)
    failed_score = _failed_score(failed_score, metric)
    return runs, track, metric, failed_score, n_boot, confidence, _ok_mask(runs), _submission_keys(runs), submission_labels(runs)


def board_by_task(
    runs: pd.DataFrame,
    *,
    metric: str | None = None,
    n_boot: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
    failed_score: float | None | str = "auto",
) -> pd.DataFrame:
    """The per-task table: one row per (submission, task), the mean of ``metric`` over its seeds with a bootstrap CI.

    Args: as in :func:`board` (failed runs get ``failed_score`` the same way).

    Returns:
        DataFrame with ``submission`` (the board's label, :func:`submission_labels`), ``code_hash``, ``task_key``,
        ``metric``, ``runs``, ``failed``, ``not_applicable`` (runs of a built-in baseline of another kind of task: no
        score), ``mean``, ``mean_lo``, ``mean_hi`` (the CI resamples the task's runs;
        NaN with fewer than two: "n/a (1 seed)"), sorted by submission then task.
    """
    runs, track, metric, failed_score, n_boot, confidence, ok, keys, labels = _board_inputs(
        runs, metric, failed_score, n_boot, confidence)
    rows = []
    na_all = _not_applicable(runs)
    for key in sorted(keys.unique()):
        m = keys == key
        df, okm, na = runs[m], ok[m], na_all[m]
        cols = _score_columns(df[~na], metric, okm[~na], failed_score)
        for task, g in df.groupby(df["task_key"].astype(str), sort=True):
            col = cols.get(task)
            row = {"submission": sorted(set(labels[m]))[-1],
                   "code_hash": str(df["code_hash"].iloc[0]) if "code_hash" in df.columns else "",
                   "task_key": task, "metric": metric, "runs": int(len(g)),
                   "failed": int((~okm[g.index] & ~na[g.index]).sum()), "not_applicable": int(na[g.index].sum()),
                   "mean": math.nan, "mean_lo": math.nan, "mean_hi": math.nan}
            if col is not None and len(col):
                p, lo, hi = _stratified_ci([col], "mean", reps=n_boot, confidence=confidence, seed=seed)
                row.update(mean=p, mean_lo=lo if len(col) >= 2 else math.nan, mean_hi=hi if len(col) >= 2 else math.nan)
            rows.append(row)
    cols = ["submission", "code_hash", "task_key", "metric", "runs", "failed", "not_applicable", "mean", "mean_lo",
            "mean_hi"]
    return pd.DataFrame(rows, columns=cols).sort_values(["submission", "task_key"], kind="mergesort").reset_index(drop=True)


def _find_submission(runs: pd.DataFrame, name: str, arg: str) -> pd.Series:
    """Rows of one submission: its board label (``name`` or ``name@hash``), its name when that names one code hash,
    ``name@<hash prefix>``, or a code hash (or a prefix of at least 6 digits)."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"{arg} must be a submission name, name@hash or code hash (got {name!r}).")
    labels = submission_labels(runs)
    names = runs["submission"].astype(str)
    hashes = runs["code_hash"].astype(str) if "code_hash" in runs.columns else pd.Series("", index=runs.index)
    shown = sorted(set(labels))
    if name in shown:
        return labels == name
    if name in set(names):
        versions = sorted(set(labels[names == name]))
        raise ValueError(f"{arg} {name!r} names {len(versions)} versions (different code) on this board: "
                         f"{', '.join(versions)}; say which one as name@hash.")
    base, at, prefix = name.rpartition("@")
    if at and base in set(names) and prefix:
        m = (names == base) & hashes.str.startswith(prefix)
        if m.any() and hashes[m].nunique() == 1:
            return m
    if len(name) >= 6 and "code_hash" in runs.columns:
        m = hashes.str.startswith(name)
        if m.any() and hashes[m].nunique() == 1:
            return m
    raise ValueError(f"{arg} must be a submission of this board, one of {shown} (or name@hash, or a code hash) "
                     f"(got {name!r})." + suggest(str(name), shown))


class Improvement(tuple):
    """``(p, lo, hi)`` of :func:`probability_of_improvement`, with what it was computed on.

    Attributes:
        p, lo, hi: the probability and its CI (``lo``/``hi`` NaN where some task has fewer than two runs of either
            submission: "n/a (1 seed)").
        tasks: the tasks compared; common_only: True when the two submissions' runs differed and only the tasks
            (and seeds) both ran were compared (``common_tasks=True``); note: a sentence saying so, else "".
    """

    def __new__(cls, p: float, lo: float, hi: float, tasks: Sequence[str] = (), common_only: bool = False,
                note: str = ""):
        self = super().__new__(cls, (p, lo, hi))
        self.tasks, self.common_only, self.note = list(tasks), bool(common_only), str(note)
        return self

    @property
    def p(self) -> float:
        return self[0]

    @property
    def lo(self) -> float:
        return self[1]

    @property
    def hi(self) -> float:
        return self[2]


def _mann_whitney(x: np.ndarray, y: np.ndarray) -> float:
    """P(X > Y) + ½ P(X = Y) over all pairs (one draw of X against one of Y)."""
    d = x[:, None] - y[None, :]
    return float(((d > 0).sum() + 0.5 * (d == 0).sum()) / d.size)


def probability_of_improvement(
    runs: pd.DataFrame,
    a: str,
    b: str,
    *,
    metric: str = "normalized_score",
    n_boot: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
    failed_score: float | None | str = "auto",
    common_tasks: bool = False,
) -> Improvement:
    """Probability that submission ``a`` improves on ``b`` (rliable, Agarwal et al. 2021).

    ``P(X > Y) = 1/T Σ_t 1/(N_t M_t) Σ_i Σ_j S(x_{t,i}, y_{t,j})`` with ``S = 1`` if ``x > y``, ``½`` if equal,
    ``0`` otherwise, over the ``T`` tasks both submissions ran; the CI resamples the runs of ``a`` and of
    ``b`` independently within each task (stratified bootstrap; :func:`tiltenv.metrics.stratified_bootstrap_ci`
    when every task has the same number of runs).

    Args:
        runs: the runs frame of one suite version and split (see :func:`board`).
        a, b: submissions as the board names them (``name``, or ``name@hash`` where a name has several versions),
            or code hashes; a wrong name gets the closest valid one, an ambiguous one the list of its versions.
        metric: the compared score (higher is better); failed runs get ``failed_score`` (as in :func:`board`).
        common_tasks: compare on the (task, seed) runs both have when their runs differ (else that is refused).
            A run stored ``not_applicable`` (a built-in baseline of another kind of task) is no score, as on the
            board: it is left out, and runs that differ only by such runs are compared on those both have (said
            in the note) without ``common_tasks``.

    Returns:
        :class:`Improvement`, a ``(p, lo, hi)`` tuple that also says which tasks were compared. The CI is NaN
        (n/a) when some compared task has fewer than two runs of either submission.

    Raises:
        ValueError: unknown or ambiguous submission, unknown metric, runs that differ (one submission has a task or
            seed the other lacks) without ``common_tasks=True``, no run in common, mixed suite versions.
    """
    _require_columns(runs, ("submission", "task_key"), "runs")
    n_boot, confidence = _check_boot(n_boot, confidence)
    _single_board(runs)
    metric = _check_metric(runs, metric)
    failed_score = _failed_score(failed_score, metric)
    ma, mb = _find_submission(runs, a, "a"), _find_submission(runs, b, "b")
    ok = _ok_mask(runs)
    na = _not_applicable(runs)  # no score (nor π_ref's 0): left out, as on the board
    only_na = _coverage(runs[ma]) == _coverage(runs[mb])  # runs that differ, if at all, only by not-applicable ones
    ma, mb = ma & ~na, mb & ~na
    cov_a, cov_b = _coverage(runs[ma]), _coverage(runs[mb])
    note = ""
    if cov_a != cov_b:
        both = cov_a & cov_b
        if not both:
            raise ValueError(f"{a!r} and {b!r} have no run in common (a ran tasks {sorted({t for t, _ in cov_a})}, "
                             f"b ran {sorted({t for t, _ in cov_b})}" + ("; not-applicable runs left out" if
                                                                        only_na else "") + ").")
        if not common_tasks and not only_na:
            raise ValueError(
                f"{a!r} and {b!r} ran different runs ({len(cov_a)} vs {len(cov_b)}; only in {a!r}: "
                f"{_show_runs(cov_a - cov_b)}; only in {b!r}: {_show_runs(cov_b - cov_a)}): a comparison would "
                "silently leave tasks out. Compare on the runs both have with common_tasks=True (--common-tasks)."
            )
        seeds = runs["seed_index"] if "seed_index" in runs.columns else pd.Series(0, index=runs.index)
        keep = pd.Series([(str(t), int(i)) in both for t, i in zip(runs["task_key"], seeds)], index=runs.index)
        ma, mb = ma & keep, mb & keep
        n_all = len({t for t, _ in cov_a | cov_b})
        n_common = len({t for t, _ in both})
        note = (f"on the {len(both)} runs ({n_common} of {n_all} tasks) both submissions have; "
                f"{len(cov_a - both)} of {a!r} and {len(cov_b - both)} of {b!r} left out"
                + (" (the others' runs there are not applicable: no score)" if only_na else ""))
    ca = _score_columns(runs[ma], metric, ok[ma], failed_score)
    cb = _score_columns(runs[mb], metric, ok[mb], failed_score)
    tasks = sorted(set(ca) & set(cb))
    if not tasks:
        raise ValueError(f"{a!r} and {b!r} have no task in common (a: {sorted(ca)}, b: {sorted(cb)}).")
    T = len(tasks)
    columns = [ca[t] for t in tasks] + [cb[t] for t in tasks]

    def stat(cols: list[np.ndarray]) -> float:
        return float(np.mean([_mann_whitney(cols[t], cols[T + t]) for t in range(T)]))

    p, lo, hi = _stratified_ci(columns, stat, reps=n_boot, confidence=confidence, seed=seed)
    if min(len(c) for c in columns) < 2:  # one run against one: the bootstrap redraws the same pair every time
        lo = hi = math.nan
    return Improvement(p, lo, hi, tasks, bool(note), note)


def _show_runs(pairs: set[tuple[str, int]], n: int = 4) -> str:
    items = [f"{t}#{i}" for t, i in sorted(pairs)]
    return "none" if not items else ", ".join(items[:n]) + (f" and {len(items) - n} more" if len(items) > n else "")


# ==================================================================================================
# Rank correlation (not in tiltenv.metrics; the one implementation)
# ==================================================================================================


def _average_ranks(a: np.ndarray) -> np.ndarray:
    """Ranks 1..K along the last axis of a 2-D array, ties at their average rank (``rankdata`` 'average')."""
    C, K = a.shape
    order = np.argsort(a, axis=1, kind="stable")
    s = np.take_along_axis(a, order, axis=1)
    idx = np.broadcast_to(np.arange(K), (C, K))
    new = np.ones((C, K), dtype=bool)
    new[:, 1:] = s[:, 1:] != s[:, :-1]
    last = np.ones((C, K), dtype=bool)
    last[:, :-1] = new[:, 1:]
    start = np.maximum.accumulate(np.where(new, idx, 0), axis=1)
    end = np.flip(np.minimum.accumulate(np.flip(np.where(last, idx, K), axis=1), axis=1), axis=1)
    ranks = np.empty((C, K), dtype=np.float64)
    np.put_along_axis(ranks, order, (start + end) / 2.0 + 1.0, axis=1)
    return ranks


def _spearman_rows(xa: np.ndarray, ya: np.ndarray) -> np.ndarray:
    """Per-row Spearman ρ of two validated, finite ``(C, K)`` float64 arrays (NaN for constant rows)."""
    rx, ry = _average_ranks(xa), _average_ranks(ya)
    rx -= rx.mean(1, keepdims=True)
    ry -= ry.mean(1, keepdims=True)
    den = np.sqrt((rx * rx).sum(1) * (ry * ry).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = np.where(den > 0, (rx * ry).sum(1) / np.where(den > 0, den, 1.0), np.nan)
    return np.clip(rho, -1.0, 1.0)


def spearman(x: Any, y: Any, per_context: bool = False):
    """Spearman rank correlation of ``x`` and ``y`` along the last axis (Pearson on average ranks).

    Args:
        x, y: shape ``(C, K)`` (one correlation per row) or ``(K,)``; finite.
        per_context: return the ``(C,)`` per-row values instead of their mean.

    Returns:
        float (mean over rows whose ranks vary in both ``x`` and ``y``; NaN if none) or a ``(C,)`` array (NaN
        for constant rows).

    Raises:
        ValueError: shape mismatch, fewer than 2 entries per row, non-finite values.
    """
    xa = M.as_float64(x, name="x").cpu().numpy()
    ya = M.as_float64(y, name="y").cpu().numpy()
    if xa.shape != ya.shape or xa.ndim not in (1, 2):
        raise ValueError(f"x and y must have the same shape (C, K) or (K,) (got {xa.shape} and {ya.shape}).")
    if xa.shape[-1] < 2:
        raise ValueError(f"spearman needs at least 2 entries per row (got shape {xa.shape}).")
    if not (np.isfinite(xa).all() and np.isfinite(ya).all()):
        raise ValueError("x and y must be finite.")
    rho = _spearman_rows(np.atleast_2d(xa), np.atleast_2d(ya))
    if per_context:
        return rho
    return float(np.nanmean(rho)) if np.isfinite(rho).any() else math.nan


# ==================================================================================================
# Reward-model track
# ==================================================================================================


class ScoreFnProxy(torch.nn.Module):
    """A submitted reward model as a proxy: ``(score_fn(x) − shift) / scale`` (a frozen, stateless module).

    Used for RLOO on a copy of the public task; deep copies share the function (moving it across devices is
    the function's business: inputs are passed as given, outputs come back on the input's device).
    """

    kind = "submitted"

    def __init__(self, score_fn: Callable[[torch.Tensor], Any], shift: float = 0.0, scale: float = 1.0) -> None:
        super().__init__()
        self.score_fn = score_fn
        self.shift, self.scale = float(shift), float(scale)

    def __deepcopy__(self, memo: dict) -> "ScoreFnProxy":
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = _call_score_fn(self.score_fn, x)
        return ((r - self.shift) / self.scale).to(x.device)


def _call_score_fn(score_fn: Callable, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        out = score_fn(x)
    try:
        r = out.detach() if isinstance(out, torch.Tensor) else torch.as_tensor(np.asarray(out, dtype=np.float64))
    except (TypeError, ValueError):
        raise ValueError(f"score_fn must return a numeric tensor of shape {tuple(x.shape[:-1])} "
                         f"(got {type(out).__name__}).") from None
    r = r.to(torch.float64)
    if tuple(r.shape) != tuple(x.shape[:-1]):
        raise ValueError(f"score_fn returned shape {tuple(r.shape)} for candidates {tuple(x.shape)}; "
                         f"expected {tuple(x.shape[:-1])} (one score per candidate).")
    if not bool(torch.isfinite(r).all()):
        raise ValueError("score_fn returned NaN or infinite scores.")
    return r


def _bon_ns(K: int) -> list[int]:
    ns, n = [], 1
    while n < K:
        ns.append(n)
        n *= 2
    return ns + [K]


def score_reward_model(
    judge: Any,
    task: Any,
    score_fn: Callable[[torch.Tensor], Any],
    *,
    rloo_queries: int = 16384,
    seed: int = 0,
    device: str = "cpu",
) -> dict[str, float]:
    """Downstream and offline metrics of a submitted reward model (see the module docstring).

    Args:
        judge: the task's :class:`~tiltenv.worlds.world.Judge` (scores on its evaluation contexts).
        task: the :class:`~tiltenv.worlds.world.PublicTask` (RLOO trains on a copy of it whose proxy is the model).
        score_fn: ``candidates (..., d) float32 tensor -> (...)`` scores (tensor or array); e.g.
            ``RemoteRewardModel.score`` or a ``torch.nn.Module``.
        rloo_queries: RLOO's proxy-query budget (0 skips RLOO: its metrics are NaN).
        seed: RLOO's seed.
        device: RLOO's device.

    Returns:
        dict: the offline metrics :data:`RM_OFFLINE_METRICS`, the downstream metrics
        :data:`RM_DOWNSTREAM_METRICS`, plus ``ref_gold_value``, ``optimal_objective``, ``beta``, ``rm_shift``,
        ``rm_scale`` (the normalization applied).

    Raises:
        ValueError: scores of the wrong shape or non-finite; :class:`UnscorableOutput` (a ValueError) for
            scores constant under π_ref or too large to normalize.
    """
    rloo_queries = check_int("rloo_queries", rloo_queries, low=0)
    seed = check_int("seed", seed, low=0)
    ref, gold = judge.eval_ref_logp, judge.eval_gold
    beta = float(judge.config.beta)
    raw = _call_score_fn(score_fn, judge.eval_candidates)
    # Gao et al.'s normalization, as every library proxy: mean 0, variance 1 under π_ref pooled over contexts.
    shift = M.policy_value(ref, raw)
    sq = (raw - shift) ** 2
    var_pooled = M.policy_value(ref, sq) if bool(torch.isfinite(sq).all()) else math.inf
    if not (math.isfinite(shift) and math.isfinite(var_pooled)):
        raise UnscorableOutput(f"the reward model's scores are too large to normalize (max |score| = "
                               f"{float(raw.abs().max()):.3g}: their variance under π_ref overflows float64); "
                               "return scores of a sane scale.")
    if not var_pooled > 0:
        raise UnscorableOutput("the reward model is constant under π_ref on the evaluation contexts; it cannot be scored.")
    scale = math.sqrt(var_pooled)
    r = (raw - shift) / scale

    out: dict[str, float] = {"beta": beta, "rm_shift": shift, "rm_scale": scale}
    # ---- offline
    gold_tilt = M.tilt_logp(ref, gold, beta)
    harm = M.harm_aware_accuracies(r, gold, ref)
    out.update({
        "acc_onpolicy": M.ranking_accuracy(r, gold, ref),
        "acc_offpolicy": M.ranking_accuracy(r, gold, gold_tilt),
        "acc_uniform": M.ranking_accuracy(r, gold),
        "spearman": spearman(r, gold),
        "hacc": harm["hacc"], "hacc_w": harm["hacc_w"],  # harm["acc_w"] is acc_onpolicy (same definition)
        "reward_variance_ref": M.reward_variance(ref, r),
        "gold_corr_ref": M.proxy_gold_correlation(ref, r, gold),
    })
    # ---- best-of-n sweep (exact)
    from tiltenv.lifecycle.diagnostics import best_of_n_drop

    bon = best_of_n_drop(judge, _bon_ns(judge.eval_ref_logp.shape[-1]), proxy_vals=r)
    rep = bon["report"]
    out.update({
        "bon_peak_gold": rep.peak_gold, "bon_final_gold": rep.final_gold, "bon_drop": rep.drop,
        "bon_drop_se": bon["drop_se"], "bon_n_at_peak": float(bon["peak_n"]), "bon_kl_at_peak": rep.kl_at_peak,
    })
    se = 0.0 if math.isnan(bon["drop_se"]) else bon["drop_se"]
    out["bon_overoptimized"] = float(rep.drop > max(overoptimization_tol(judge), OVEROPT_Z * se, rep.tol))
    # ---- tilt at the task's β
    tilt = M.tilt_logp(ref, r, beta)
    tm = metrics_of_logp(tilt, judge)
    out.update({
        "tilt_gold_value": tm["gold_value"], "tilt_proxy_value": M.policy_value(tilt, r), "tilt_kl": tm["kl"],
        "tilt_value_gap": tm["value_gap"], "tilt_normalized_score": tm["normalized_score"],
        "ref_gold_value": tm["ref_gold_value"], "optimal_objective": tm["optimal_objective"],
    })
    # ---- RLOO at a fixed budget, on a copy of the public task whose proxy is the submitted model
    if rloo_queries > 0:
        from baselines.base import TrainBudget
        from baselines.rloo import RLOO, RLOOConfig
        from tiltenv.worlds.world import Budget

        proxy = ScoreFnProxy(score_fn, shift, scale)
        rm_task = copy.copy(task)
        rm_task.proxy = proxy
        rm_task._proxy_on = {torch.device("cpu"): proxy}
        rm_task.budget = Budget()
        agent = RLOO(RLOOConfig(device=device, seed=seed)).fit(
            rm_task, TrainBudget(proxy_queries=rloo_queries, n_checkpoints=1))
        with torch.no_grad():
            lp = agent.policy(judge.eval_candidates.to(_agent_device(agent, device)),
                              judge.eval_ref_logp.to(_agent_device(agent, device)))
        lp = torch.log_softmax(lp.detach().cpu().to(torch.float64), dim=-1)
        rm = metrics_of_logp(lp, judge)
        out.update({
            "rloo_gold_value": rm["gold_value"], "rloo_kl": rm["kl"], "rloo_value_gap": rm["value_gap"],
            "rloo_normalized_score": rm["normalized_score"], "rloo_proxy_queries": float(rm_task.budget.proxy_queries),
        })
    else:
        out.update({k: math.nan for k in ("rloo_gold_value", "rloo_kl", "rloo_value_gap", "rloo_normalized_score",
                                          "rloo_proxy_queries")})
    return {k: float(v) for k, v in out.items()}


def _agent_device(agent: Any, device: str) -> torch.device:
    """The device an agent trained on (``device='auto'`` resolved the way the agent did)."""
    from tiltenv._validation import resolve_device

    dev = getattr(agent, "device", None)
    return torch.device(dev) if dev is not None else resolve_device(device)


#: The library's learned proxies: the built-in entries of the reward-model track.
_BUILTIN_RMS = ("linear", "mlp", "two_stage", "ensemble")


def builtin_reward_models() -> tuple[str, ...]:
    """Names of the built-in reward-model entries: the library's proxy kinds ``linear, mlp, two_stage, ensemble``."""
    return _BUILTIN_RMS


def score_builtin_reward_model(
    name: str, config: Any, *, proxy_kwargs: dict | None = None, rloo_queries: int = 16384, seed: int = 0,
    device: str = "cpu",
) -> dict[str, float]:
    """Score a library proxy kind as a reward-model entry on the task of ``config`` (in-process).

    The world is built with ``config.replace(proxy=name, proxy_kwargs=proxy_kwargs or {})`` (the judge's gold
    and evaluation contexts do not depend on the proxy kind: they come from their own seed streams) and its
    trained proxy module is scored by :func:`score_reward_model`.

    Args:
        name: a proxy kind (:func:`builtin_reward_models`, or any registered kind such as ``"gold"``).
        config: a :class:`tiltenv.TaskConfig` (with its seed: this runs on the scorer's side).

    Raises:
        ValueError: an unknown proxy kind (closest valid name suggested); a tabular config.
    """
    world = builtin_reward_model_world(name, config, proxy_kwargs=proxy_kwargs)
    return score_reward_model(world.judge, world.task, world.task.proxy, rloo_queries=rloo_queries, seed=seed,
                              device=device)


def builtin_reward_model_world(name: str, config: Any, *, proxy_kwargs: dict | None = None, fresh: bool = False) -> Any:
    """The world of ``config`` whose proxy is the library's ``name`` (what :func:`score_builtin_reward_model` scores).

    Building it trains the proxy (unless tiltenv's on-disk proxy cache has it): the scorer times this as the entry's
    ``fit_time``. ``fresh`` bypasses the in-process world cache.

    Raises:
        ValueError: an unknown proxy kind (closest valid name suggested); a tabular config.
    """
    from tiltenv.worlds.config import TaskConfig
    from tiltenv.rewards.proxies import PROXIES
    from tiltenv.worlds.world import make_world

    if not isinstance(config, TaskConfig):
        raise ValueError(f"built-in reward models need a single-index TaskConfig (got {type(config).__name__}).")
    if name not in PROXIES:
        raise ValueError(f"name must be a proxy kind, one of {sorted(PROXIES)} (got {name!r})." + suggest(str(name), PROXIES))
    return make_world(config.replace(proxy=name, proxy_kwargs=dict(proxy_kwargs or {})), fresh=fresh)


#: Why two offline metrics can coincide in every run (shown instead of a second, identical row).
COINCIDENT_METRICS = {
    ("acc_onpolicy", "acc_uniform"): "π_ref is uniform on these tasks, so the on-policy pair weights "
                                     "π_ref(a)·π_ref(b) are all equal (they differ under a tilted π_ref)",
    ("hacc", "hacc_w"): "π_ref is uniform on these tasks, so weighting candidates by π_ref changes nothing",
}


def _same_reason(a: str, b: str) -> str:
    return COINCIDENT_METRICS.get((a, b)) or COINCIDENT_METRICS.get((b, a)) or "identical in every scored run"


def _within_rho(groups: list[tuple[np.ndarray, np.ndarray]], n_boot: int, confidence: float,
                seed: int) -> tuple[float, float, float]:
    """Mean over groups of Spearman ρ(x, y), with a bootstrap CI that redraws the rows within each group."""
    point = [float(_spearman_rows(x[None], y[None])[0]) for x, y in groups]
    if not groups or all(math.isnan(v) for v in point):
        return math.nan, math.nan, math.nan
    rng = np.random.default_rng(seed)
    reps = np.empty((len(groups), n_boot))
    for g, (x, y) in enumerate(groups):
        idx = rng.integers(0, len(x), size=(n_boot, len(x)))
        reps[g] = _spearman_rows(x[idx], y[idx])
    with warnings.catch_warnings():  # a replicate where every world's ranks are constant is NaN, and dropped
        warnings.simplefilter("ignore", RuntimeWarning)
        stats = np.nanmean(reps, axis=0)
    stats = stats[np.isfinite(stats)]
    alpha = (1.0 - confidence) / 2.0
    lo, hi = (np.percentile(stats, [100.0 * alpha, 100.0 * (1.0 - alpha)]) if len(stats) else (math.nan, math.nan))
    return float(np.nanmean(point)), float(lo), float(hi)


#: Columns of :func:`metric_predictiveness`.
PREDICTIVENESS_COLUMNS = [
    "metric", "downstream", "rho_within", "rho_within_lo", "rho_within_hi", "n_groups", "rho_pooled",
    "rho_pooled_lo", "rho_pooled_hi", "n", "same_as",
]  # fmt: skip


def metric_predictiveness(
    rm_runs: pd.DataFrame,
    *,
    downstream: str = "tilt_normalized_score",
    metrics: Sequence[str] | None = None,
    n_boot: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """How well each offline metric predicts downstream gold across scored reward models — **within a task**.

    The question a researcher asks is "on my task, does the better-scoring reward model give the better policy?".
    So the headline is ``rho_within``: the mean over (task, seed) worlds with at least 3 reward models of the
    Spearman ρ between the offline metric and ``downstream`` across those models, with a bootstrap CI that
    redraws the models within each world. Beside it, labelled, ``rho_pooled``: Spearman over all rows pooled
    across tasks (CI: rows redrawn within each task), which mixes the tasks' levels — an easy task lifts both the
    metric and the gold of every model on it, so pooled ρ can be high while the metric orders the models of
    each task wrongly (Simpson's paradox).

    Offline metrics that coincide in every row (e.g. ``acc_uniform`` with ``acc_onpolicy`` when π_ref is
    uniform, see :data:`COINCIDENT_METRICS`) are shown once: the first one's row names the others in
    ``same_as`` with the reason.

    Args:
        rm_runs: rows with ``task_key`` and the metric columns (``status`` optional: failed rows are left out;
            ``seed_index`` optional: worlds are (task, seed)).
        downstream: the downstream column (default ``tilt_normalized_score``, comparable across tasks:
            0 = π_ref, 1 = optimal; ``tilt_gold_value``, ``rloo_normalized_score``, ``bon_peak_gold`` ...).
        metrics: offline metrics to assess (default: those of :data:`RM_OFFLINE_METRICS` with at least 3 values).

    Returns:
        DataFrame, one row per metric, columns :data:`PREDICTIVENESS_COLUMNS`, sorted by ``rho_within``
        descending (NaN last), then ``rho_pooled``.

    Raises:
        ValueError: unknown column names (closest valid suggested), fewer than 3 usable rows.
    """
    _require_columns(rm_runs, ("task_key",), "rm_runs")
    n_boot, confidence = _check_boot(n_boot, confidence)
    downstream = _check_metric(rm_runs, downstream)
    valid = _numeric_columns(rm_runs)
    df = rm_runs[_ok_mask(rm_runs)]
    if metrics is None:  # those present with enough values (a frame of both tracks has NaN agent-only columns)
        metrics = [m for m in RM_OFFLINE_METRICS if m in valid and (df[m].notna() & df[downstream].notna()).sum() >= 3]
        if not metrics:
            raise ValueError(f"metric_predictiveness needs at least 3 successful rows with an offline metric "
                             f"({', '.join(RM_OFFLINE_METRICS)}) and {downstream!r}.")
    else:
        metrics = [_check_metric(rm_runs, m) for m in metrics]
    # one row for metrics that coincide in every row
    kept: list[str] = []
    same: dict[str, list[str]] = {}
    for metric in metrics:
        twin = next((k for k in kept if df[metric].notna().equals(df[k].notna())
                     and np.allclose(df[metric].dropna().to_numpy(np.float64), df[k].dropna().to_numpy(np.float64),
                                     rtol=1e-9, atol=1e-12)), None)
        if twin is None:
            kept.append(metric)
        else:
            same.setdefault(twin, []).append(metric)
    group_keys = [c for c in ("task_key", "seed_index") if c in df.columns]
    rows = []
    for metric in kept:
        d = df[df[metric].notna() & df[downstream].notna()]
        if len(d) < 3:
            raise ValueError(f"metric_predictiveness needs at least 3 scored reward models with {metric!r} and "
                             f"{downstream!r} (got {len(d)}).")
        x = d[metric].to_numpy(np.float64)
        y = d[downstream].to_numpy(np.float64)
        if not (np.isfinite(x).all() and np.isfinite(y).all()):
            raise ValueError(f"{metric!r} and {downstream!r} must be finite in successful rows.")
        cols = [np.asarray(ix, dtype=np.int64) for _, ix in
                sorted(d.reset_index(drop=True).groupby("task_key").indices.items())]

        def stat(parts: list[np.ndarray], x=x, y=y) -> float:
            i = np.concatenate(parts).astype(np.int64)
            return float(_spearman_rows(x[None, i], y[None, i])[0])

        rho, lo, hi = _stratified_ci([c.astype(np.float64) for c in cols], stat, reps=n_boot,
                                     confidence=confidence, seed=seed)
        worlds = [(g[metric].to_numpy(np.float64), g[downstream].to_numpy(np.float64))
                  for _, g in d.groupby(group_keys, sort=True) if len(g) >= 3]
        w, wlo, whi = _within_rho(worlds, n_boot, confidence, seed)
        n_groups = sum(1 for gx, gy in worlds if not math.isnan(float(_spearman_rows(gx[None], gy[None])[0])))
        rows.append({"metric": metric, "downstream": downstream, "rho_within": w, "rho_within_lo": wlo,
                     "rho_within_hi": whi, "n_groups": n_groups, "rho_pooled": rho, "rho_pooled_lo": lo,
                     "rho_pooled_hi": hi, "n": int(len(d)),
                     "same_as": "; ".join(f"{o} ({_same_reason(metric, o)})" for o in same.get(metric, []))})
    out = pd.DataFrame(rows, columns=PREDICTIVENESS_COLUMNS)
    return out.sort_values(["rho_within", "rho_pooled", "metric"], ascending=[False, False, True], na_position="last",
                           kind="mergesort").reset_index(drop=True)
