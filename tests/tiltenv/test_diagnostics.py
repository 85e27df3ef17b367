"""Proxy diagnostics: reports, the table, two-stage summaries, ensemble disagreement, best-of-n drops."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from tiltenv import TaskConfig, make_world
from tiltenv import metrics as M
from tiltenv.lifecycle.diagnostics import (
    best_of_n_drop,
    diagnostics_table,
    ensemble_disagreement,
    neuron_cosines,
    on_policy_accuracy,
    proxy_report,
    recovered_fraction,
    two_stage_report,
)
from tiltenv.rewards.proxies import LinearProxy
from tiltenv.rewards.reward_models import EnsembleProxy, TrainData, TwoStageProxy

SMALL = dict(d=6, K=8, n_labels=400, n_eval_contexts=256, n_norm_contexts=256)


def test_gold_proxy_is_perfect_and_report_uses_the_metrics():
    world = make_world(TaskConfig(**SMALL, link="tanh", proxy="gold"))
    rep = proxy_report(world)
    assert rep["acc_offpolicy"] == pytest.approx(1.0) and rep["acc_ref"] == pytest.approx(1.0)
    assert rep["hacc"] == pytest.approx(1.0) and rep["gold_corr_ref"] == pytest.approx(1.0)
    j = world.judge
    ref = j.eval_ref_logp.double()
    assert rep["reward_variance_ref"] == M.reward_variance(ref, j.eval_proxy)


def test_on_policy_accuracy_and_harm_aware_under_a_policy():
    world = make_world(TaskConfig(**SMALL, ref_eta=1.0, proxy="mlp", proxy_kwargs={"epochs": 5}))
    j = world.judge
    ref = j.eval_ref_logp.double()
    assert on_policy_accuracy(world, ref) == pytest.approx(proxy_report(world)["acc_ref"])
    tilt = M.tilt_logp(ref, j.eval_proxy, 0.3)
    rep = proxy_report(world, logp=tilt)
    assert rep["acc_onpolicy"] == pytest.approx(M.ranking_accuracy(j.eval_proxy, j.eval_gold, tilt))
    assert rep["acc_w"] == pytest.approx(rep["acc_onpolicy"])
    assert 0 <= rep["hacc_w"] <= 1


def test_diagnostics_table_has_one_row_per_task():
    worlds = {kind: make_world(TaskConfig(**SMALL, proxy=kind, proxy_kwargs=kw))
              for kind, kw in [("linear", {}), ("parametric", {"angle": 45.0}), ("two_stage", {"width": 32})]}
    df = diagnostics_table(worlds)
    assert isinstance(df, pd.DataFrame) and list(df.index) == list(worlds)
    assert {"acc_offpolicy", "acc_ref", "acc_onpolicy", "acc_w", "hacc", "hacc_w", "reward_variance_ref",
            "gold_corr_ref"} <= set(df.columns)
    assert df.loc["two_stage", "proxy"] == "two_stage" and 0 <= df.loc["two_stage", "recovered_fraction"] <= 1
    assert math.isnan(df.loc["linear", "recovered_fraction"])  # only two-stage rows carry neuron figures
    assert df.loc["parametric", "gold_corr_ref"] < df.loc["linear", "gold_corr_ref"]


def test_two_stage_summaries_on_a_hand_made_layer():
    d = 4
    theta = torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=torch.float64)
    p = TwoStageProxy(d, 3, "relu")
    p.W.copy_(torch.tensor([[1.0, 0, 0, 0], [0.6, 0.8, 0, 0], [0.0, 1.0, 0, 0]], dtype=torch.float64))
    cos = neuron_cosines(p, theta)
    assert torch.allclose(cos, torch.tensor([1.0, 0.6, 0.0], dtype=torch.float64))
    assert recovered_fraction(cos) == pytest.approx(2 / 3)
    # Neurons equal to training samples are "collapsed": max_i |cos(w_j, x_i)| = 1.
    x = p.W.clone().to(torch.float32)
    rep = two_stage_report(p, theta, TrainData("pointwise", x=x, y=torch.tensor([0.0, 1.0, 2.0])), beta1=0.01)
    assert rep["neuron_sample_cos"] == pytest.approx(1.0)
    assert rep["top_sample_cos"] == pytest.approx(0.0)  # the top-weighted sample (y = 2) is ⟂ θ*


def test_ensemble_disagreement():
    w = torch.tensor([1.0, 0.0], dtype=torch.float64)
    same = EnsembleProxy([LinearProxy(w), LinearProxy(w)], "mean", 1.0)
    diff = EnsembleProxy([LinearProxy(w), LinearProxy(-w)], "mean", 1.0)
    x = torch.randn(10, 5, 2, dtype=torch.float64)
    ref = torch.full((10, 5), -math.log(5), dtype=torch.float64)
    assert ensemble_disagreement(same, x, ref) == {"ref": 0.0, "top": 0.0}
    # members ±<w, x>: population variance x_0², mean over π_ref.
    assert ensemble_disagreement(diff, x, ref)["ref"] == pytest.approx(float((x[..., 0] ** 2).mean()))


def test_best_of_n_drop_gold_vs_linear_on_the_hump():
    ns = (1, 4, 16, 64, 256)
    gold = best_of_n_drop(make_world(TaskConfig(link="hump", K=256, proxy="gold", n_eval_contexts=256,
                                                n_norm_contexts=256)), ns)
    assert gold["drop"] == 0.0 and not gold["report"].overoptimized
    lin = best_of_n_drop(make_world(TaskConfig(link="hump", K=256, proxy="linear", n_eval_contexts=256,
                                               n_norm_contexts=256)), ns)
    assert lin["report"].overoptimized and lin["drop"] > 5 * lin["drop_se"] and lin["peak_n"] in (4, 16)
    assert [r["n"] for r in lin["rows"]] == list(ns)
