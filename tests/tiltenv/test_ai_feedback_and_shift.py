"""Issue 12, parts 2 and 3: the AI-feedback trade at equal label cost, and distribution shift along a tilt path."""

from __future__ import annotations

import math

import gymnasium as gym
import pytest
import torch

from tiltenv import TaskConfig, make_world
from tiltenv.lifecycle import crossover_bias, label_cost_trade, label_distribution_contexts, shift_path

BASE = TaskConfig(d=16, K=16, link="relu", beta=0.1, n_eval_contexts=1024, n_norm_contexts=1024, ai_labeler_labels=500)
COLS = ["cost", "bias", "human_labels", "ai_labels", "human_acc_ref", "ai_acc_ref", "human_tilt_gold", "ai_tilt_gold"]


def test_ai_labels_follow_the_labeler_model_and_its_bias():
    w0 = make_world(BASE.replace(label_kind="ai", n_labels=5000, ai_bias=0.0))
    w2 = make_world(BASE.replace(label_kind="ai", n_labels=5000, ai_bias=2.0))
    style = w2.judge.extras["style_direction"]
    assert abs(float(style @ w2.judge.theta)) < 1e-12  # the style direction is orthogonal to the gold
    for w, lo, hi in ((w0, -0.1, 0.1), (w2, 0.5, 1.0)):  # the proxy learns the labeler's style preference
        wv = w.task.proxy.w / w.task.proxy.w.norm()
        assert lo < float(wv @ style) < hi
    assert w0.judge.extras["ai_labeler"] is not None and w0.judge.extras["ai_labeler"].bias == 0.0


def test_ai_label_trade_crosses_over_as_the_bias_grows():
    trade = label_cost_trade(BASE, costs=[20, 100], biases=[0.0, 0.25, 0.5, 1.0, 2.0])
    print(trade[COLS].round(3).to_string())
    x20, x100 = crossover_bias(trade, 20), crossover_bias(trade, 100)
    print(f"crossover bias: cost 20 -> {x20:.3f}, cost 100 -> {x100:.3f}")
    at = lambda c, b: trade[(trade.cost == c) & (trade.bias == b)].iloc[0]  # noqa: E731
    # bias 0: 1000x more (AI) labels from a labeler fit on 500 gold pairs beat the clean labels the cost buys
    assert at(20, 0.0).ai_tilt_gold > at(20, 0.0).human_tilt_gold + 0.3
    assert at(100, 0.0).ai_tilt_gold > at(100, 0.0).human_tilt_gold
    # the AI route falls monotonically with the bias; at bias 2 it is far behind
    for c in (20, 100):
        g = trade[trade.cost == c].sort_values("bias").ai_tilt_gold.tolist()
        assert all(a > b for a, b in zip(g, g[1:]))
        assert at(c, 2.0).ai_tilt_gold < at(c, 2.0).human_tilt_gold - 0.5
    # the crossover: the more clean labels the cost buys, the less bias the AI route tolerates
    assert 0.5 < x20 < 1.0 and 0.1 < x100 < 0.4 and x100 < x20


def test_charging_the_labelers_own_labels_removes_the_ai_advantage():
    """A labeler fit on m gold pairs cannot teach more than those m pairs: charged to the same budget, it loses."""
    trade = label_cost_trade(BASE, costs=[100], biases=[0.0], ai_labeler_labels=50, charge_labeler=True)
    print(trade[COLS].round(3).to_string())
    row = trade.iloc[0]
    assert row.ai_labels == 50_000 and row.ai_tilt_gold < row.human_tilt_gold
    assert math.isnan(crossover_bias(trade, 100))
    with pytest.raises(ValueError, match="leaves no AI label"):
        label_cost_trade(BASE, costs=[10], biases=[0.0], ai_labeler_labels=50, charge_labeler=True)


def test_shift_accuracy_drops_out_of_distribution_and_costs_gold():
    env = gym.make("tiltenv/Shift-v0", n_eval_contexts=1024, n_norm_contexts=1024)
    world = make_world(env.unwrapped.config)
    res = shift_path(world)
    path = res["path"]
    print(path.round(3).to_string())
    print({k: round(v, 3) for k, v in res.items() if isinstance(v, float)})
    # in distribution the proxy is accurate ...
    assert res["acc_id"] > 0.9 and path["acc_ref"].iloc[0] > 0.9
    # ... along the path it is asked about ever longer responses and its accuracy there collapses
    assert res["label_length"] < 0.4 * res["ref_length"]  # the labels saw short responses only
    assert path["length"].iloc[-1] > 1.8 * res["ref_length"] > 4 * res["label_length"]
    assert path["acc_ood"].iloc[0] > 0.9 and res["acc_ood_final"] < 0.3
    # the gold peaks and falls (overoptimization), and ends below the unshifted control's
    assert res["report"].overoptimized and res["gold_drop"] > 0.03
    assert res["gold_lost_final"] > 0.1
    assert path["gold_lost"].iloc[0] < 0.01  # no loss before optimizing


def test_label_distribution_is_compressed_along_the_length_direction():
    w = make_world(TaskConfig(d=8, K=8, n_labels=2000, n_eval_contexts=64, n_norm_contexts=64, shift_length_scale=0.25))
    ell = w.judge.extras["length_direction"]
    assert abs(float(ell @ w.judge.theta) - math.cos(math.radians(45))) < 1e-9
    x, _ = label_distribution_contexts(w, 2000)
    assert float((x.to(torch.float64) @ ell).std()) == pytest.approx(0.25, rel=0.05)
    prefs = w.task.preferences  # the task's labels come from that distribution
    assert float((prefs.x_a.to(torch.float64) @ ell).std()) == pytest.approx(0.25, rel=0.1)
