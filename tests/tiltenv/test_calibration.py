"""Issue 12, part 1: calibration of the proxy's preference probabilities against the labeler's true ones."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tiltenv import TaskConfig, make_world
from tiltenv import metrics as M
from tiltenv.lifecycle.calibration import TransformedProxy, calibration_report, labeler_probability, ranking_and_scale

BASE = dict(d=16, K=16, link="linear", label_temp=0.5, n_eval_contexts=2048, n_norm_contexts=2048)


def test_calibration_metrics_exact_cases():
    true = torch.tensor([0.1, 0.2, 0.8, 0.9], dtype=torch.float64)
    assert M.expected_calibration_error(true, true) == 0.0
    pred = torch.full((4,), 0.5, dtype=torch.float64)
    assert M.expected_calibration_error(pred, true, n_bins=10) == pytest.approx(0.0)  # one bin: means agree
    assert M.expected_calibration_error(torch.tensor([0.9, 0.9]), torch.tensor([0.5, 0.5])) == pytest.approx(0.4)
    curve = M.reliability_curve(torch.tensor([0.05, 0.95]), torch.tensor([0.0, 1.0]), n_bins=2)
    assert curve["weight"].tolist() == [0.5, 0.5] and curve["true"].tolist() == [0.0, 1.0]
    assert M.bt_probability(torch.tensor([-1.0, 0.0, 2.0]), 0).tolist() == [0.0, 0.5, 1.0]
    assert M.bt_probability(torch.tensor([3.0]), math.inf).tolist() == [0.5]
    # τ̂ recovers the temperature of soft labels drawn from it; no signal -> inf; separable -> 0
    m = torch.linspace(-3, 3, 2001, dtype=torch.float64)
    assert M.fit_temperature(m, torch.sigmoid(m / 0.7)) == pytest.approx(0.7, rel=1e-6)
    assert M.fit_temperature(m, torch.full_like(m, 0.5)) == math.inf
    assert M.fit_temperature(torch.tensor([1.0, -1.0]), torch.tensor([1.0, 0.0])) == 0.0
    with pytest.raises(ValueError, match="pred must be probabilities"):
        M.expected_calibration_error(torch.tensor([1.5]), torch.tensor([0.5]))
    with pytest.raises(ValueError, match="temperature must be in"):
        M.bt_probability(torch.tensor([1.0]), -1)


def test_labeler_probability_is_the_bt_labeler():
    w = make_world(TaskConfig(**{**BASE, "flip_rate": 0.1}, n_labels=100))
    x, _ = w.task.sample_contexts(64, seed=1)
    p = labeler_probability(w, x[:, 0], x[:, 1])
    g = w.judge.gold
    want = 0.1 + 0.8 * torch.sigmoid((g(x[:, 0]) - g(x[:, 1])) / 0.5)
    assert torch.allclose(p, want)


def _report(n, link, l2=1e-4):
    w = make_world(TaskConfig(**{**BASE, "link": link}, n_labels=n, proxy_kwargs={"l2": l2}))
    j = w.judge
    opt = M.tilt_logp(j.eval_ref_logp, j.eval_proxy, 0.05)
    r = calibration_report(w, logp=opt, pairs_per_context=4)
    print(f"{link} n_labels={n}: ece_native={r['ece_native']:.4f} ece(τ̂)={r['ece']:.4f} τ̂={r['tau_hat']:.3f} "
          f"τ_native={r['tau_native']:.3f} nll={r['nll']:.4f} | optimized policy's pairs: ece(π_ref's τ̂)="
          f"{r['ece_policy']:.4f} τ̂_policy={r['tau_hat_policy']:.3f} ece_refit={r['ece_policy_refit']:.4f}")
    return r


def test_calibration_error_falls_with_labels():
    """Well-specified (linear gold, BT labels at τ = 0.5, light ridge): the BT model's own probabilities."""
    rows = {n: _report(n, "linear") for n in (30, 100, 300, 3000)}
    ece = [rows[n]["ece_native"] for n in (30, 100, 300, 3000)]
    assert ece[0] > ece[1] > ece[2] > ece[3]
    assert ece[0] > 0.2 and ece[3] < 0.01
    nll = [rows[n]["nll"] for n in (30, 100, 300, 3000)]
    assert nll[0] > nll[1] > nll[2] > nll[3]
    assert rows[3000]["tau_native"] == pytest.approx(0.5, rel=0.05)  # → the labeler's τ (the gold has unit scale)
    # with τ̂ fitted on held-out labels even the 30-label proxy is near-calibrated (a fitted τ makes a poor ranker unsure)
    assert all(r["ece"] < 0.02 for r in rows.values())


def test_calibration_shifts_on_the_optimized_policys_pairs():
    """Misspecified (relu gold, linear proxy): π_ref's τ̂ is wrong on the pairs an optimized policy produces."""
    for n in (300, 3000):
        r = _report(n, "relu", l2=1e-2)
        assert r["ece"] < 0.03 and r["ece_policy"] > 0.08  # calibrated where labeled, not where the policy went
        assert r["tau_hat_policy"] < 0.5 * r["tau_hat"]  # the policy's pairs need a sharper temperature
        assert r["ece_policy_refit"] < 0.02  # refitting τ̂ there repairs it


def test_same_ranking_different_calibration_best_of_n_reads_ranking_tilt_reads_scale():
    w = make_world(TaskConfig(**{**BASE, "link": "relu"}, n_labels=1000))
    cubed = w.with_proxy(TransformedProxy(w.task.proxy, 3.0)).task.proxy
    df = ranking_and_scale(w, {"linear": w.task.proxy, "cubed": cubed}, ns=(4, 16), betas=(1.0, 0.3))
    print(df.round(4).to_string())
    a, b = df.loc["linear"], df.loc["cubed"]
    assert a["acc_ref"] == b["acc_ref"]  # identical ranking in every context
    assert b["ece"] > 3 * a["ece"] and b["ece"] > 0.05  # ... but a different calibration
    for n in (4, 16):  # best-of-n reads the ranking only: the same policy, the same gold
        assert a[f"bon_gold@{n}"] == pytest.approx(b[f"bon_gold@{n}"], abs=1e-12)
    for beta in ("1", "0.3"):  # the KL-regularized tilt reads reward differences: it moves
        assert abs(a[f"tilt_gold@{beta}"] - b[f"tilt_gold@{beta}"]) > 0.02
        assert abs(a[f"tilt_kl@{beta}"] - b[f"tilt_kl@{beta}"]) > 0.02


def test_calibration_is_in_diagnostics_and_rejects_tabular():
    from tiltenv import TabularConfig
    from tiltenv.lifecycle import diagnostics

    assert diagnostics.calibration_report is calibration_report
    with pytest.raises(ValueError, match="single-index"):
        calibration_report(make_world(TabularConfig()))
    with pytest.raises(ValueError, match="power must be"):
        TransformedProxy(make_world(TaskConfig(d=2, K=4, n_labels=20, n_eval_contexts=8, n_norm_contexts=8)).task.proxy, -1)


def test_ece_and_reliability_weigh_bins_by_their_share_of_the_pairs():
    # two bins: [0, 0.1) holds 3 calibrated pairs, [0.9, 1] one pair off by 0.4 → ECE = 1/4 · 0.4 (not the mean of
    # the two bins' gaps, 0.2); with pair weights (1, 1, 1, 3) the second bin holds half the weight → 0.2.
    pred = torch.tensor([0.05, 0.05, 0.05, 0.95], dtype=torch.float64)
    true = torch.tensor([0.05, 0.05, 0.05, 0.55], dtype=torch.float64)
    assert M.expected_calibration_error(pred, true) == pytest.approx(0.1, abs=1e-12)
    w = torch.tensor([1.0, 1.0, 1.0, 3.0], dtype=torch.float64)
    assert M.expected_calibration_error(pred, true, weights=w) == pytest.approx(0.2, abs=1e-12)
    # weighted means within a bin: pred 0.91/0.99 with true 0/1 at weights 3:1
    c = M.reliability_curve([0.91, 0.99], [0.0, 1.0], n_bins=10, weights=[3.0, 1.0])
    assert float(c["weight"][9]) == pytest.approx(1.0) and float(c["true"][9]) == pytest.approx(0.25, abs=1e-12)
    assert float(c["pred"][9]) == pytest.approx(0.75 * 0.91 + 0.25 * 0.99, abs=1e-12)
    assert bool(c["pred"][:9].isnan().all())  # empty bins


def test_fit_temperature_weights_act_like_repeated_pairs():
    g = torch.Generator().manual_seed(0)
    m = torch.randn(400, generator=g, dtype=torch.float64)
    y = (torch.rand(400, generator=g, dtype=torch.float64) < torch.sigmoid(m / 0.6)).double()
    reps = torch.randint(1, 4, (400,), generator=g)
    want = M.fit_temperature(m.repeat_interleave(reps), y.repeat_interleave(reps))
    assert M.fit_temperature(m, y, weights=reps.double()) == pytest.approx(want, rel=1e-9)
    # and the fit is the NLL's stationary point: Σ w (σ(m/τ̂) − y) m = 0
    tau = M.fit_temperature(m, y)
    assert abs(float(((torch.sigmoid(m / tau) - y) * m).mean())) < 1e-10


def test_pair_accuracy_leaves_out_pairs_the_labeler_is_indifferent_to():
    # step gold, τ = 0: every pair on the same side of 0 is an exact tie (true P = 1/2); the gold itself as the proxy
    # orders every other pair like the labeler, so its accuracy is exactly 1.
    w = make_world(TaskConfig(d=4, K=8, link="step", label_temp=0.0, proxy="gold", n_labels=10, n_eval_contexts=512,
                              n_norm_contexts=512))
    rep = calibration_report(w)
    assert rep["pair_accuracy"] == 1.0


def test_labeler_probability_includes_the_labelers_bias():
    # h = r* + λ <v, x>: the true labeler prefers the spurious direction too
    w = make_world(TaskConfig(**{**BASE, "flip_rate": 0.1, "label_bias": 1.5}, n_labels=100))
    x, _ = w.task.sample_contexts(64, seed=1)
    v = w.judge.extras["spurious_direction"]
    h = lambda t: w.judge.gold(t) + 1.5 * (t.double() @ v)  # noqa: E731
    want = 0.1 + 0.8 * torch.sigmoid((h(x[:, 0]) - h(x[:, 1])) / 0.5)
    assert torch.allclose(labeler_probability(w, x[:, 0], x[:, 1]), want)


def test_fit_temperature_treats_a_zero_weight_pair_as_a_dropped_pair():
    # separable once the zero-weight pair is dropped: κ̂ → ∞, τ̂ = 0 (it ran 100 Newton steps to 0.0099 before)
    assert M.fit_temperature([1.0, -1.0, 1.0], [1.0, 0.0, 0.0], weights=[1.0, 1.0, 0.0]) == 0.0
    assert M.fit_temperature([1.0, -1.0], [1.0, 0.0]) == 0.0
    rng = np.random.default_rng(1)
    for _ in range(50):
        n = 12
        m, y = rng.normal(size=n), (rng.random(n) < 0.7).astype(float)
        w = rng.random(n)
        w[:4] = 0.0
        assert M.fit_temperature(m, y, weights=w) == pytest.approx(M.fit_temperature(m[4:], y[4:], weights=w[4:]),
                                                                   rel=1e-9)
