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

Layout: a package split along these sections — ``_kernels`` (conversion, validation, chunking and the
row kernels), ``policy`` (value, KL, χ², reward variance), ``objective`` (tilt, soft value, J_β, value
gap), ``frontier`` (gold-tilt frontier, KL-matched gap), ``best_of_n``, ``reward_model_eval`` (ranking
and harm-aware accuracies, proxy–gold correlation), ``calibration`` (reliability curve, ECE, ML temperature),
``aggregation`` (IQM, bootstrap CIs), ``overoptimization`` (Gao et al.'s fits) and ``pareto`` (multi-objective:
per-dimension values, the exact Pareto front at a KL budget, hypervolume, the gap to the front along a weight
direction). Every public name is importable from ``tiltenv.metrics``;
each submodule imports only the ones listed before it.

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

from tiltenv.metrics._kernels import (  # noqa: F401
    _Batch,
    _CHUNK_ELEMS,
    _check_logp,
    _cumsum_outer,
    _map_rows,
    _rows_per_chunk,
    _validate,
    as_float64,
)
from tiltenv.metrics.policy import (  # noqa: F401
    chi2_divergence,
    kl_divergence,
    log_normalize,
    policy_value,
    reward_variance,
)
from tiltenv.metrics.objective import (  # noqa: F401
    chi2_tilt_logp,
    normalized_score,
    regularized_objective,
    soft_value,
    tilt_logp,
    value_gap,
)
from tiltenv.metrics.frontier import (  # noqa: F401
    frontier_value,
    kl_matched_gap,
    tilt_frontier,
)
from tiltenv.metrics.best_of_n import (  # noqa: F401
    best_of_n_kl_bound,
    best_of_n_logp,
)
from tiltenv.metrics.reward_model_eval import (  # noqa: F401
    _PAIR_LOOP_MAX_K,
    _pair_rows_loop,
    harm_aware_accuracies,
    proxy_gold_correlation,
    ranking_accuracy,
)
from tiltenv.metrics.calibration import (  # noqa: F401
    bt_probability,
    expected_calibration_error,
    fit_temperature,
    reliability_curve,
)
from tiltenv.metrics.aggregation import (  # noqa: F401
    aggregate_mean,
    iqm,
    stratified_bootstrap_ci,
)
from tiltenv.metrics.overoptimization import (  # noqa: F401
    GaoFit,
    OveroptimizationReport,
    gao_fit,
    overoptimization,
)
from tiltenv.metrics.pareto import (  # noqa: F401
    ParetoFront,
    dimension_gains,
    dimension_values,
    front_gap,
    front_support,
    hypervolume,
    no_dimension_below_ref,
    pareto_front,
    pareto_mask,
    scalarize,
    simplex_grid,
)

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
    "bt_probability",
    "reliability_curve",
    "expected_calibration_error",
    "fit_temperature",
    "iqm",
    "aggregate_mean",
    "stratified_bootstrap_ci",
    "GaoFit",
    "gao_fit",
    "OveroptimizationReport",
    "overoptimization",
    "ParetoFront",
    "dimension_values",
    "dimension_gains",
    "no_dimension_below_ref",
    "simplex_grid",
    "scalarize",
    "pareto_front",
    "front_support",
    "front_gap",
    "pareto_mask",
    "hypervolume",
]
