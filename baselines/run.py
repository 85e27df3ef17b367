"""Train one baseline on one env and score it with the judge: the logic behind ``scripts/train.py``
(and later ``tiltenv train``).

    >>> from baselines.run import train, format_result
    >>> res = train("reinforce", "tiltenv/SingleIndex-v0", overrides=["learning_rate=0.1", "device=cpu"],
    ...             env_kwargs={"d": 4, "K": 8, "n_labels": 200, "n_eval_contexts": 128},
    ...             budget=TrainBudget(proxy_queries=4096, n_checkpoints=4))
    >>> sorted(res.trajectory[-1])[:3], res.trajectory[0]["kl"] == 0.0
    (['gold_value', 'kl', 'normalized_score'], True)

The agent sees only the public task; snapshots handed to ``checkpoint`` are stored and scored by the
judge *after* ``fit`` returns, so scoring never counts against the agent's wall time. Each trajectory row
has the exact gold value, proxy value, KL, value gap and normalized score of one snapshot; the final
metrics are :func:`tiltenv.evaluate`'s full set, and overoptimization is decided on the measured drop of
the trajectory (:func:`tiltenv.metrics.overoptimization`).
"""

from __future__ import annotations

import ast
import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym

import tiltenv
from baselines import get_baseline
from baselines.base import Agent, TrainBudget
from tiltenv import metrics as M
from tiltenv._validation import check_env_id, suggest
from tiltenv.worlds.evaluation import overoptimization_report, policy_logp, resolve_judge
from tiltenv.glossary import OVEROPTIMIZATION_RULE, legend

__all__ = ["TrainResult", "train", "parse_overrides", "trajectory_row", "format_result", "interpret", "TRAJECTORY_METRICS"]

TRAJECTORY_METRICS = ("gold_value", "proxy_value", "kl", "value_gap", "normalized_score")


@dataclass
class TrainResult:
    """Outcome of :func:`train`.

    Attributes:
        baseline, env_id, env_kwargs: what was trained where.
        config: the agent's config; budget: the :class:`TrainBudget`.
        metrics: :func:`tiltenv.evaluate` of the final policy (gold value, proxy value, KL, value gap, ...).
        trajectory: one dict per checkpoint: ``step`` plus :data:`TRAJECTORY_METRICS`.
        overoptimization: :class:`tiltenv.metrics.OveroptimizationReport` of the trajectory (None if < 2 points).
        fit_time: seconds spent in ``fit`` (scoring excluded); proxy_queries: queries the agent made.
        agent: the trained agent.
        notes: budgets the agent could not honour (a proxy-query budget an offline agent ignores, a wall-time
            overrun), one sentence each; printed by :func:`format_result`.
    """

    baseline: str
    env_id: str
    env_kwargs: dict[str, Any]
    config: Any
    budget: TrainBudget
    metrics: dict[str, float]
    trajectory: list[dict[str, float]]
    overoptimization: Any
    fit_time: float
    proxy_queries: int
    agent: Agent = field(repr=False)
    notes: list[str] = field(default_factory=list)


def _coerce(text: str, optional: bool = True) -> Any:
    """Parse a command-line value: a Python literal, true/false, none/null (only where ``optional``), else a string."""
    low = text.strip().lower()
    if low in ("none", "null"):
        return None if optional else text.strip()
    if low in ("true", "false"):
        return low == "true"
    if low in ("inf", "+inf", "-inf", "nan"):  # numbers, not strings (one numeric type rule)
        return float(low)
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parse_overrides(config_cls: type, overrides: Sequence[str] | Mapping[str, Any] | None) -> dict[str, Any]:
    """``["key=value", ...]`` (or a mapping) → keyword arguments of ``config_cls``.

    Values are parsed as Python literals (``0.1``, ``(64, 64)``, ``64,64``, ``true``), ``none``/``null`` as None
    for Optional fields (a string elsewhere), else kept as strings; the config's ``__post_init__`` validates them.

    Raises:
        ValueError: malformed item or unknown key (with the closest valid name).
    """
    fields = {f.name: f for f in dataclasses.fields(config_cls)}
    names = list(fields)
    if overrides is None:
        return {}
    if isinstance(overrides, Mapping):
        items = dict(overrides)
    else:
        items = {}
        for item in overrides:
            if "=" not in item:
                raise ValueError(f"override {item!r} must look like key=value (e.g. learning_rate=0.1).")
            key, value = (part.strip() for part in item.split("=", 1))
            # "none" is a valid *string* choice of some fields (e.g. scale_rewards): None only where the field is Optional
            optional = key not in fields or "None" in str(fields[key].type)
            items[key] = _coerce(value, optional)
    for key in items:
        if key not in names:
            raise ValueError(f"{config_cls.__name__} has no field {key!r}; valid fields are {names}." + suggest(key, names))
    return items


def trajectory_row(policy: Any, judge: Any) -> dict[str, float]:
    """The trajectory metrics of one policy on the judge's evaluation contexts (exact)."""
    logp = policy_logp(policy, judge.eval_candidates, judge.eval_ref_logp)
    ref, gold, proxy, beta = judge.eval_ref_logp, judge.eval_gold, judge.eval_proxy, judge.config.beta
    return {
        "gold_value": M.policy_value(logp, gold),
        "proxy_value": M.policy_value(logp, proxy),
        "kl": M.kl_divergence(logp, ref),
        "value_gap": M.value_gap(logp, ref, gold, beta),
        "normalized_score": M.normalized_score(logp, ref, gold, beta),
    }


def train(
    baseline: str,
    env_id: str = "tiltenv/SingleIndex-v0",
    *,
    overrides: Sequence[str] | Mapping[str, Any] | None = None,
    env_kwargs: Mapping[str, Any] | None = None,
    budget: TrainBudget | None = None,
    seed: int | None = None,
    on_checkpoint: Callable[[int], None] | None = None,
) -> TrainResult:
    """Train ``baseline`` on ``gym.make(env_id, **env_kwargs)``'s public task and score it.

    Args:
        baseline: a name in :data:`baselines.BASELINES`.
        env_id: a registered tiltenv id.
        overrides: agent config fields, ``["key=value", ...]`` or a mapping.
        env_kwargs: task parameters (e.g. ``{"beta": 0.01, "n_eval_contexts": 1024}``).
        budget: :class:`TrainBudget` (default: the quick budget).
        on_checkpoint: called with the step of each checkpoint as training reaches it (a progress bar).
        seed: the agent's seed (overrides ``seed=`` in ``overrides``); the task seed is ``env_kwargs["seed"]``.
    Returns:
        :class:`TrainResult`.
    """
    check_env_id(env_id)
    agent_cls, config_cls = get_baseline(baseline)
    kwargs = parse_overrides(config_cls, overrides)
    if seed is not None:
        if "seed" not in [f.name for f in dataclasses.fields(config_cls)]:
            raise ValueError(f"{baseline} has no seed.")
        kwargs["seed"] = int(seed)
    config = config_cls(**kwargs)
    budget = budget or TrainBudget()
    env = gym.make(env_id, **dict(env_kwargs or {}))
    task, judge = env.unwrapped.task, resolve_judge(env)
    agent = agent_cls(config)
    snapshots: list[tuple[int, Any]] = []
    q0 = task.budget.proxy_queries
    started = time.perf_counter()
    def checkpoint(step: int, policy: Any) -> None:
        snapshots.append((step, policy))
        if on_checkpoint is not None:
            on_checkpoint(step)

    agent.fit(task, budget, checkpoint=checkpoint)
    fit_time = time.perf_counter() - started
    queries = task.budget.proxy_queries - q0
    trajectory = [{"step": step, **trajectory_row(policy, judge)} for step, policy in snapshots]
    metrics = tiltenv.evaluate(agent, env)
    report = overoptimization_report(trajectory, judge) if len(trajectory) >= 2 else None
    env.close()
    return TrainResult(baseline, env_id, dict(env_kwargs or {}), config, budget, metrics, trajectory, report,
                       fit_time, queries, agent, budget_notes(baseline, budget, queries, fit_time))


#: Agents whose training is not bounded by proxy queries (their budget unit, for the note).
OFFLINE_UNITS = {"dpo": "num_train_epochs × preference pairs", "tilt": "nothing (closed form)",
                 "best_of_n": "nothing (closed form)"}


def budget_notes(baseline: str, budget: TrainBudget, queries: int, fit_time: float) -> list[str]:
    """Sentences for the budgets ``baseline`` could not honour (empty when it honoured them)."""
    notes = []
    if baseline in OFFLINE_UNITS and budget.proxy_queries != TrainBudget().proxy_queries:
        notes.append(f"{baseline} does not spend proxy queries (its training is bounded by {OFFLINE_UNITS[baseline]}): "
                     f"the proxy-query budget {budget.proxy_queries} (--queries) was not used; it made {queries} queries.")
    if budget.wall_time is not None and fit_time > budget.wall_time * 1.05 + 0.05:
        notes.append(f"fit took {fit_time:.2f} s, over the wall-time budget of {budget.wall_time:g} s: the limit is "
                     "checked between updates and the last update (or set-up) ran past it.")
    return notes


def interpret(m: Mapping[str, float]) -> str:
    """One sentence that reads the normalized score: where J_β's gain came from and where it went."""
    gain, cost = m["gold_value"] - m["ref_gold_value"], m["beta"] * m["kl"]
    room = m["optimal_objective"] - m["ref_gold_value"]
    text = (f"normalized score = (gold gain {gain:+.4f} − β·KL {cost:.4f}) / (J*_β − V*(π_ref) = {room:.4f}) "
            f"= {m['normalized_score']:+.4f} at β = {m['beta']:g}.")
    if gain > 0.1 * max(room, 1e-12) and m["normalized_score"] < 0.1:
        text += (" The policy gained gold but spent so much KL that β·KL ate the gain: it went past the gold tilt"
                 " (optimizing the proxy further than its gold is worth at this β), not 'learned nothing'.")
    elif abs(gain) <= 0.1 * max(room, 1e-12):
        text += " The policy is still close to π_ref in gold (little learned, or gold-neutral moves)."
    return text


def format_result(res: TrainResult, explain: bool = False) -> str:
    """A plain-text report: final metrics, the trajectory table, the overoptimization verdict and a legend.

    ``explain`` appends every metric's meaning and formula (:mod:`tiltenv.glossary`).
    """
    m = res.metrics
    lines = [
        f"{res.baseline} on {res.env_id} {res.env_kwargs or ''}".rstrip(),
        f"  config: {res.config}",
        f"  fit: {res.fit_time:.2f} s, {res.proxy_queries} proxy queries"
        + (f" ({res.proxy_queries / res.fit_time:,.0f}/s)" if res.fit_time > 0 and res.proxy_queries else ""),
    ]
    lines += [f"  note: {n}" for n in getattr(res, "notes", [])]
    lines += [
        "",
        f"  gold value        {m['gold_value']: .4f}   (π_ref: {m['ref_gold_value']: .4f}, best candidate: {m['max_gold_value']: .4f})",
        f"  proxy value       {m['proxy_value']: .4f}",
        f"  KL(π‖π_ref)       {m['kl']: .4f}",
        f"  value gap J*-J    {m['value_gap']: .4f}   (β = {m['beta']:g}; 0 = optimal)",
        f"  normalized score  {m['normalized_score']: .4f}   (1 = gold tilt π_ref·e^(r*/β), 0 = π_ref)",
        f"  {interpret(m)}",
        "",
        "  trajectory (one row per checkpoint; the last row is the final policy):",
        f"  {'step':>10} {'gold':>9} {'proxy':>9} {'KL':>9} {'gap':>9} {'score':>9}",
    ]
    for r in res.trajectory:
        lines.append(
            f"  {r['step']:>10d} {r['gold_value']:>9.4f} {r['proxy_value']:>9.4f} {r['kl']:>9.4f} "
            f"{r['value_gap']:>9.4f} {r['normalized_score']:>9.4f}"
        )
    lines.append("  columns: step = proxy queries spent (pairs seen for DPO); gold/proxy = V*(π)/V̂(π); KL = KL(π‖π_ref);"
                 f" gap = J*_β − J_β; score = normalized score (gap and score at β = {m['beta']:g}).")
    rep = res.overoptimization
    if rep is not None:
        verdict = "OVEROPTIMIZED" if rep.overoptimized else "no overoptimization"
        lines += ["", f"  {verdict}: peak gold {rep.peak_gold:.4f} at KL {rep.kl_at_peak:.3f}, final gold "
                      f"{rep.final_gold:.4f}, drop {rep.drop:.4f} (threshold {rep.tol:.4f})"
                      + (" (proxy still rising)" if rep.proxy_rising_while_gold_falls else ""),
                  f"  rule: {OVEROPTIMIZATION_RULE}"]
    if explain:
        lines += ["", "  legend:"] + ["  " + line for line in legend(
            ["step", *TRAJECTORY_METRICS, "ref_gold_value", "max_gold_value", "objective", "optimal_objective",
             "kl_matched_gap", "beta", "drop"]).splitlines()]
    return "\n".join(lines)
