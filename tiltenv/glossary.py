"""What every printed number means: one entry per metric, shared by ``evaluate``'s result, ``train.py``,
``tiltenv sweep --explain`` and ``docs/metrics.md`` (a test checks that the doc lists every entry).

Each entry is ``name -> (short label, one-line meaning with its formula)``. The formulas are DESIGN §3's
and :mod:`tiltenv.metrics`'s; every expectation ``E_x`` is a mean over the judge's held-out evaluation
contexts and every sum over the K candidates of a context is exact (no sampled actions).

Example:
    >>> from tiltenv.glossary import METRICS, legend
    >>> METRICS["kl"][0]
    'KL(π‖π_ref)'
    >>> print(legend(["kl"]))
    kl                   KL(π‖π_ref): E_x Σ_k π_k (log π_k − log π_ref,k), nats; 0 for π_ref, grows as π leaves π_ref.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = ["METRICS", "OVEROPTIMIZATION_RULE", "OVEROPTIMIZATION_REL_TOL", "OVEROPTIMIZATION_SE_Z",
           "LEADERBOARD_OVEROPTIMIZATION_RULE", "entry", "legend"]

#: A drop counts as overoptimization when it exceeds this fraction of the task's gold range.
OVEROPTIMIZATION_REL_TOL = 0.01

OVEROPTIMIZATION_RULE = (
    "OVEROPTIMIZED when gold falls after its peak along the curve (points ordered by KL) by more than "
    f"{OVEROPTIMIZATION_REL_TOL:.0%} of the task's gold range, i.e. drop = peak gold − gold at the largest KL "
    f"> {OVEROPTIMIZATION_REL_TOL:g} × (E_x max_k r*(x_k) − V*(π_ref)); decided on the measured drop, never on a fit."
)

#: The leaderboard's statistical guard: a trained agent's drop must also exceed this many paired standard errors.
OVEROPTIMIZATION_SE_Z = 2.0

LEADERBOARD_OVEROPTIMIZATION_RULE = (
    "On the leaderboard a run is OVEROPTIMIZED when its drop exceeds tol = max(1% of the task's gold range, "
    f"{OVEROPTIMIZATION_SE_Z:g} × SE(drop), 1e-6 × the curve's gold range), where SE(drop) is the paired standard error "
    "over the evaluation contexts of (gold of the peak checkpoint − gold of the final one): a drop must be both "
    "material and more than the finite evaluation set's noise (the 2-SE guard; leaderboard.scoring.OVEROPT_Z)."
)

METRICS: dict[str, tuple[str, str]] = {
    "gold_value": ("gold value V*(π)", "E_x Σ_k π_k r*(x_k): the true (hidden) reward the policy obtains."),
    "proxy_value": ("proxy value V̂(π)", "E_x Σ_k π_k r̂(x_k): the reward the agent optimizes (proxy normalized "
                    "to mean 0, variance 1 under π_ref)."),
    "ref_gold_value": ("π_ref gold value", "V*(π_ref): gold of the reference policy, the starting point."),
    "max_gold_value": ("max gold", "E_x max_k r*(x_k): gold of always picking the best candidate (β → 0)."),
    "kl": ("KL(π‖π_ref)", "E_x Σ_k π_k (log π_k − log π_ref,k), nats; 0 for π_ref, grows as π leaves π_ref."),
    "sqrt_kl": ("√KL", "sqrt(KL(π‖π_ref)): the distance axis of Gao et al.'s scaling laws."),
    "chi2": ("χ²(π‖π_ref)", "E_x Σ_k π_k²/π_ref,k − 1."),
    "objective": ("J_β(π)", "V*(π) − β·KL(π‖π_ref): the KL-regularized gold objective at the task's β."),
    "optimal_objective": ("J*_β", "E_x β log Σ_k π_ref,k e^{r*_k/β}: the best J_β any policy reaches "
                          "(attained by the gold tilt π ∝ π_ref e^{r*/β})."),
    "value_gap": ("value gap J*_β − J_β", "J*_β − J_β(π) = β·KL(π‖π*_β) ≥ 0 at the task's β; 0 = optimal."),
    "normalized_score": ("normalized score", "(J_β(π) − J_β(π_ref)) / (J*_β − J_β(π_ref)) at the task's β: "
                         "1 = the gold tilt (optimal), 0 = no better than π_ref, < 0 = worse than π_ref."),
    "kl_matched_gap": ("KL-matched gap", "V_frontier(KL(π)) − V*(π): gold left on the table versus the best "
                       "policy (a gold tilt) spending the same KL; 0 = on the frontier."),
    "reward_variance_ref": ("proxy variance under π_ref", "E_x Var_{k~π_ref} r̂(x_k) (Razin et al.: low variance "
                            "slows learning)."),
    "reward_variance_policy": ("proxy variance under π", "E_x Var_{k~π} r̂(x_k)."),
    "proxy_gold_corr": ("proxy–gold correlation", "Pearson correlation of r̂ and r* under π_ref, pooled over "
                        "contexts (Laidlaw et al.)."),
    "beta": ("β", "KL coefficient of J_β (the task's beta unless given)."),
    "tilt_beta": ("tilt temperature", "β' of the gold-blind proxy tilt π ∝ π_ref e^{r̂/β'} on that row "
                  "(inf = π_ref, 0 = argmax of the proxy); not the β of J_β."),
    "n": ("best-of-n n", "draws from π_ref; the candidate with the highest proxy is kept (exact over K)."),
    "step": ("step", "budget spent at the checkpoint: proxy queries (preference pairs seen for DPO; 0 for "
             "closed forms)."),
    "drop": ("drop", "peak gold − gold at the largest KL along a curve."),
    "gold_drop_se": ("SE of the drop", "paired standard error over the evaluation contexts of (gold of the peak "
                     "checkpoint − gold of the final one): the leaderboard's 2-SE guard."),
    "overopt_tol": ("overoptimization tolerance", f"max(1% of the gold range, {OVEROPTIMIZATION_SE_Z:g} × SE(drop)): "
                    "the drop a leaderboard run must exceed to count as overoptimized."),
    # multi-objective tasks (tiltenv.worlds.multiobjective): one entry per dimension i, the aggregate is gold_value
    "gold_value_dim{i}": ("gold value of dimension i", "E_x Σ_k π_k r*_i(x_k): the hidden gold of dimension i."),
    "gold_gain_dim{i}": ("gold gain of dimension i", "V*_i(π) − V*_i(π_ref): < 0 means dimension i got worse than π_ref."),
    "value_gap_dim{i}": ("value gap of dimension i", "J*_{β,i} − J_{β,i}(π): the value gap with dimension i's gold alone."),
    "min_dim_gain": ("worst dimension's gain", "min_i (V*_i(π) − V*_i(π_ref)): the dimension served worst."),
    "dims_at_or_above_ref": ("no dimension below π_ref", "1 if every dimension's gold gain is ≥ 0, else 0."),
}


def entry(name: str) -> tuple[str, str] | None:
    """The (label, meaning) of a metric name; per-dimension names (``gold_value_dim2``) use their ``{i}`` entry
    with ``i`` filled in. ``None`` for an unknown name."""
    if name in METRICS:
        return METRICS[name]
    m = re.fullmatch(r"(.+_dim)(\d+)", name)
    if m and f"{m.group(1)}{{i}}" in METRICS:
        label, meaning = METRICS[f"{m.group(1)}{{i}}"]
        i = m.group(2)
        return label.replace("dimension i", f"dimension {i}"), meaning.replace("_i", f"_{i}").replace("dimension i", f"dimension {i}")
    return None


def legend(names: Iterable[str], width: int = 20) -> str:
    """One line per known name: ``name  label: meaning``."""
    lines = []
    for name in names:
        e = entry(name)
        if e is not None:
            lines.append(f"{name:<{width}} {e[0]}: {e[1]}")
    return "\n".join(lines)
