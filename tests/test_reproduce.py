"""The reproduction scripts (scripts/reproduce/) run in --quick mode and show their qualitative result.

Each assertion is a measured fact the quick run shows robustly; each can fail (a wrong sign, a missing drop,
a proxy that teaches at the wrong speed).
"""

from __future__ import annotations

import math

import numpy as np
import pytest


@pytest.fixture(scope="module")
def gao(run_reproduction):
    return run_reproduction("gao_overoptimization")


@pytest.fixture(scope="module")
def razin(run_reproduction):
    return run_reproduction("razin_variance")


@pytest.fixture(scope="module")
def shang(run_reproduction):
    return run_reproduction("shang_beneficial_errors")


@pytest.fixture(scope="module")
def coste(run_reproduction):
    return run_reproduction("coste_ensembles")


@pytest.fixture(scope="module")
def wachi(run_reproduction):
    return run_reproduction("wachi_temperatures")


def test_gao_drop_on_the_hump_none_on_the_linear_control(gao):
    fits = gao["fits"]
    hump_bon = fits[(fits.link == "hump") & (fits.method == "bon")]
    assert len(hump_bon) >= 4 and (hump_bon["drop"] > 0.05).all(), hump_bon["drop"]
    assert (hump_bon.r2 > 0.9).all() and (hump_bon.beta > 0).all()  # the d(α − βd) law fits the hump curves
    hump_rl = fits[(fits.link == "hump") & (fits.method == "rloo")]
    assert (hump_rl["drop"] > 0.02).any()  # RL at β = 0 overoptimizes too (measured on the trajectory)
    lin = fits[fits.link == "linear"]
    assert (lin[lin.method == "bon"]["drop"] < 1e-3).all()
    assert (lin[lin.method == "rloo"]["drop"] < 0.02).all()
    assert (lin.peak_gold > hump_bon.peak_gold.max()).all()  # the linear gold keeps rising past the hump's peak


def test_razin_sgd_low_variance_teaches_slower_adam_ignores_scale(razin):
    tab = razin["tabular"].set_index(["optimizer", "proxy"])
    sgd, adam = tab.loc["sgd"], tab.loc["adam"]
    # equally (perfectly) accurate proxies: the lower the variance under π_0, the slower under SGD
    assert (sgd.loc[["gold", "gold x0.3", "gold x0.1", "squashed gold^8"], "accuracy"] > 0.999).all()
    assert sgd.loc["gold", "gold_gain"] > sgd.loc["gold x0.3", "gold_gain"] > sgd.loc["gold x0.1", "gold_gain"]
    assert sgd.loc["squashed gold^8", "gold_gain"] < 0.5 * sgd.loc["gold", "gold_gain"]
    # an accurate flat proxy loses to a less accurate one with more variance
    noisy = [p for p in sgd.index if p.startswith("noisy")]
    assert all(sgd.loc[p, "accuracy"] < 0.95 for p in noisy)
    assert min(sgd.loc[p, "gold_gain"] for p in noisy) > 2 * sgd.loc["squashed gold^8", "gold_gain"]
    # Adam is invariant to the proxy's scale (the variance effect of a pure rescaling disappears)
    assert abs(adam.loc["gold x0.1", "gold_gain"] - adam.loc["gold", "gold_gain"]) < 0.02
    # the same proxy induces less variance under a more concentrated π_0 and teaches it slower (SGD)
    si = razin["single_index"]
    s = si[si.optimizer == "sgd"].groupby("ref_eta").mean(numeric_only=True)
    assert np.all(np.diff(s.reward_var_pi0.values) < 0)
    assert s.gold_gain.iloc[0] > 1.5 * s.gold_gain.iloc[-1]


def test_shang_beneficial_error_reaches_gold_target_first_for_small_p_star(shang):
    b = shang["bandit"].pivot_table(index="p_star", columns="proxy", values="updates_to_0.9")
    ben, gold, harm = b["beneficial error (0.8→0.3)"], b["gold"], b["harmful error (0.8→0.95)"]
    small = b.index.min()
    assert math.isfinite(ben[small]) and ben[small] <= gold[small]
    assert harm[small] >= gold[small]
    assert (ben <= gold).all()
    gap = gold - ben
    assert gap.iloc[0] > gap.iloc[-1]  # the proxy's advantage shrinks as p* grows
    pred = shang["predictors"].set_index("proxy")
    assert pred.loc["angle 0, pocket none", "gold_gain"] > pred.loc["angle 45, pocket none", "gold_gain"]
    assert np.isfinite(shang["correlations"]["spearman(metric, gold gain)"]).all()


def test_coste_ensembles_help_little_on_the_hump(coste):
    g = coste["summary"]
    clean = g[(g.condition == "clean")].set_index(["diversity", "aggregator"])
    assert clean.loc[("single", "-"), "drop"] > 0.05  # the single proxy overoptimizes
    mean_drop = clean.loc[("bootstrap", "mean"), "drop"]
    assert mean_drop > 0.05  # so does the mean of the members: they share the tail error
    assert clean.loc[("bootstrap", "mean_minus_std(λ=2)"), "drop"] < mean_drop  # conservatism helps a little ...
    conservative = clean.loc["bootstrap"].loc[["min", "uwo(λ=1)", "uwo(λ=4)", "mean_minus_std(λ=2)"]]
    assert (conservative["removed_of_single"] < 0.5).all()  # ... but removes well under half of the drop here
    assert (conservative["shared_error_top"] > conservative["spread_top"]).all()  # shared error ≫ member spread


def test_wachi_he3_needs_finite_beta1_he2_gets_no_help(wachi):
    rec = wachi["recovery"].set_index(["link", "beta1"])["recovered_fraction"]
    assert rec[("he3", 1.0)] > 0.5 and rec[("he3", 1.0)] > rec[("he3", math.inf)] + 0.3
    assert rec[("he3", 1.0)] > rec[("he3", 0.03)] + 0.3  # too small a β1 collapses onto single samples
    assert rec[("he2", 1.0)] < rec[("he2", math.inf)] + 0.1  # weighting does not help an even link
    assert rec[("relu", math.inf)] > 0.9
    dep = wachi["deployment"]
    ws = dep[(dep.readout == "well-specified") & (dep.beta2 == dep.beta2.min())].set_index("weighting")
    assert ws.loc["label", "stage2_ess"] < 10  # exponential weighting at small β2 collapses the ESS ...
    assert ws.loc["label", "normalized_score"] < ws.loc["none", "normalized_score"]  # ... and costs value
    assert set(wachi["ranges"].weighting) == {"none", "label", "surrogate"}
