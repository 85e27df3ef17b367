"""Aggregation over runs and tasks (rliable): part of :mod:`tiltenv.metrics` (conventions in its docstring)."""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from tiltenv.metrics._kernels import _short

__all__ = ["iqm", "aggregate_mean", "stratified_bootstrap_ci"]


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
