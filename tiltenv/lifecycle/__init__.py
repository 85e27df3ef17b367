"""Experiments of the reward model's life cycle (issue 12) that compare whole tasks: the AI-feedback cost trade and
distribution shift along an optimization path. Judge side (reads the gold); built from :mod:`tiltenv.metrics`.

* :func:`label_cost_trade` — at equal label cost, a proxy from few clean human labels vs one from many AI labels
  (``label_kind="ai"``), as the AI labeler's self-preference bias grows; :func:`crossover_bias` reads off the bias
  where the AI route stops winning.
* :func:`shift_path` — a tilt path ``π_ref e^{r̂/β}`` over decreasing β on a task whose labels never covered the
  length-like direction (``shift_length_scale < 1``): the proxy's ranking accuracy in distribution (on the labels'
  own distribution), under π_ref and on the policy's pairs (out of distribution), and the gold lost against the same
  task with unshifted labels.

Example:
    >>> from tiltenv import TaskConfig
    >>> from tiltenv.lifecycle import label_cost_trade
    >>> base = TaskConfig(d=4, K=8, n_eval_contexts=256, n_norm_contexts=256)
    >>> df = label_cost_trade(base, costs=[10], biases=[0.0], ai_labeler_labels=200)
    >>> list(df.columns)[:4]
    ['cost', 'bias', 'human_labels', 'ai_labels']
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pandas as pd
import torch

from tiltenv import metrics as M
from tiltenv.worlds.config import TaskConfig
from tiltenv.rewards.feedback import compress_along
from tiltenv.worlds.world import World, make_world, torch_generator

__all__ = ["label_cost_trade", "crossover_bias", "label_distribution_contexts", "shift_path"]


def _tilt_figures(world: World, beta: float) -> dict[str, float]:
    j = world.judge
    ref = j.eval_ref_logp
    lp = M.tilt_logp(ref, j.eval_proxy, beta)
    return {
        "acc_ref": M.ranking_accuracy(j.eval_proxy, j.eval_gold, ref),
        "tilt_gold": M.policy_value(lp, j.eval_gold),
        "tilt_kl": M.kl_divergence(lp, ref),
        "normalized_score": M.normalized_score(lp, ref, j.eval_gold, beta),
    }


def label_cost_trade(base: TaskConfig, costs: Sequence[float], biases: Sequence[float], *,
                     ai_labeler_labels: int | None = None, charge_labeler: bool = False,
                     beta: float | None = None) -> pd.DataFrame:
    """The AI-feedback trade at equal label cost.

    For each cost C: the human route spends C on ``C / human_label_cost`` labels of ``base``'s human labeler; the AI
    route spends it on ``C / ai_label_cost`` AI labels, at each bias. With ``charge_labeler`` the AI labeler's own
    ``ai_labeler_labels`` gold-labeled pairs are paid from the same C (C must exceed them); otherwise the labeler is a
    shared asset paid once (``TaskConfig.labeler_cost``). Both proxies are ``base``'s kind, scored by the tilt at β
    (default ``base.beta``) on the same judge contexts.

    Returns:
        one row per (cost, bias): ``cost``, ``bias``, ``human_labels``, ``ai_labels``, then ``human_*`` and ``ai_*``
        for ``acc_ref``, ``tilt_gold``, ``tilt_kl``, ``normalized_score``, and ``ai_wins`` (AI tilt gold above human).
    """
    beta = base.beta if beta is None else float(beta)
    m = base.ai_labeler_labels if ai_labeler_labels is None else int(ai_labeler_labels)
    rows = []
    for cost in costs:
        n_h = int(round(cost / base.human_label_cost))
        if n_h < 1:
            raise ValueError(f"cost {cost:g} buys no human label (human_label_cost {base.human_label_cost:g}).")
        human = _tilt_figures(make_world(base.replace(label_kind="pairwise", n_labels=n_h, ai_bias=0.0)), beta)
        ai_budget = cost - (m * base.human_label_cost if charge_labeler else 0.0)
        n_ai = int(round(ai_budget / base.ai_label_cost)) if base.ai_label_cost > 0 else 0
        if n_ai < 1:
            raise ValueError(f"cost {cost:g} leaves no AI label after the labeler's {m} gold labels "
                             f"({m * base.human_label_cost:g}); raise the cost or lower ai_labeler_labels.")
        for bias in biases:
            cfg = base.replace(label_kind="ai", n_labels=n_ai, ai_bias=float(bias), ai_labeler_labels=m)
            ai = _tilt_figures(make_world(cfg), beta)
            rows.append({"cost": cost, "bias": float(bias), "human_labels": n_h, "ai_labels": n_ai,
                         **{f"human_{k}": v for k, v in human.items()}, **{f"ai_{k}": v for k, v in ai.items()},
                         "ai_wins": ai["tilt_gold"] > human["tilt_gold"]})
    return pd.DataFrame(rows)


def crossover_bias(trade: pd.DataFrame, cost: float, metric: str = "tilt_gold") -> float:
    """The bias at which the AI route's ``metric`` falls to the human route's (linear interpolation between the
    measured biases); ``nan`` if the AI route never wins, ``inf`` if it wins at every measured bias."""
    t = trade[trade["cost"] == cost].sort_values("bias")
    diff = (t[f"ai_{metric}"] - t[f"human_{metric}"]).to_numpy()
    b = t["bias"].to_numpy()
    if len(diff) == 0 or diff[0] <= 0:
        return math.nan
    for i in range(1, len(diff)):
        if diff[i] <= 0:
            return float(b[i - 1] + (b[i] - b[i - 1]) * diff[i - 1] / (diff[i - 1] - diff[i]))
    return math.inf


def label_distribution_contexts(world: World, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Fresh contexts from the labels' distribution (π_ref's contexts compressed along the length direction)."""
    cfg = world.judge.config
    x, _ = world.task.sampler.sample(n, torch_generator(seed))
    x = compress_along(x, world.judge.extras["length_direction"], cfg.shift_length_scale)
    return x, world.task.sampler.ref_logp(x)


def shift_path(world: World, betas: Sequence[float] = (3.0, 1.0, 0.3, 0.1, 0.03, 0.01), *,
               control: World | None = None, n_id_contexts: int = 2048, seed: int = 0) -> dict[str, Any]:
    """Accuracy in and out of distribution along a tilt path, and the gold the shift costs.

    Args:
        world: a task with ``shift_length_scale < 1`` (any task works; with 1 nothing is shifted).
        betas: the path, from weak to strong optimization.
        control: the same task with unshifted labels (default: ``shift_length_scale=1``, same seed).
    Returns:
        dict with ``path`` (DataFrame per β: ``kl``, ``gold``, ``proxy``, ``acc_id`` (labels' distribution, π_ref
        pairs), ``acc_ref``, ``acc_ood`` (the policy's pairs), ``length`` (mean |<ℓ, x>| under π),
        ``control_gold``, ``gold_lost`` = control − shifted), ``report`` (overoptimization of the shifted path) and
        the scalars ``acc_id``, ``acc_ood_final``, ``gold_drop`` (peak − final), ``gold_lost_final``, ``ref_length`` and ``label_length`` (mean |<ℓ, x>| under
        π_ref on the evaluation contexts and on the labels' distribution).
    """
    j = world.judge
    if control is None:
        control = make_world(j.config.replace(shift_length_scale=1.0))
    cj = control.judge
    xi, ri = label_distribution_contexts(world, n_id_contexts, seed)
    with torch.no_grad():
        acc_id = M.ranking_accuracy(world.task.proxy(xi).to(torch.float64), j.gold(xi), ri.to(torch.float64))
    ell = j.extras["length_direction"]
    length = (j.eval_candidates.to(torch.float64) @ ell).abs()
    ref = j.eval_ref_logp
    rows = []
    for b in sorted(betas, reverse=True):
        lp = M.tilt_logp(ref, j.eval_proxy, b)
        clp = M.tilt_logp(cj.eval_ref_logp, cj.eval_proxy, b)
        cgold = M.policy_value(clp, cj.eval_gold)
        gold = M.policy_value(lp, j.eval_gold)
        rows.append({"beta": b, "kl": M.kl_divergence(lp, ref), "gold": gold, "proxy": M.policy_value(lp, j.eval_proxy),
                     "acc_id": acc_id, "acc_ref": M.ranking_accuracy(j.eval_proxy, j.eval_gold, ref),
                     "acc_ood": M.ranking_accuracy(j.eval_proxy, j.eval_gold, lp),
                     "length": M.policy_value(lp, length), "control_kl": M.kl_divergence(clp, cj.eval_ref_logp),
                     "control_gold": cgold, "gold_lost": cgold - gold})
    path = pd.DataFrame(rows)
    rep = M.overoptimization(path["kl"].tolist(), path["gold"].tolist(), path["proxy"].tolist())
    return {"path": path, "report": rep, "acc_id": acc_id, "acc_ood_final": float(path["acc_ood"].iloc[-1]),
            "gold_drop": float(rep.drop), "gold_lost_final": float(path["gold_lost"].iloc[-1]),
            "ref_length": float(M.policy_value(ref, length)),
            "label_length": float(M.policy_value(ri.to(torch.float64), (xi.to(torch.float64) @ ell).abs()))}
