"""The two-stage model of Wachi et al. 2026: stage-1 step, feature recovery per link / β1 / n, readouts.

Recovery is judged against the collapse baseline: a neuron pointing at one training sample x_i has
|cos(w, θ*)| = |z_i|/||x_i|| ≈ |z_i|/√d. At d = 64 that stays below 0.5 unless |z_i| > 4, so a
recovered fraction (|cos| > 0.5) is feature learning, and we also check that mean |cos| beats the
q-weighted sample baseline and that neurons are not aligned with single samples.
"""

from __future__ import annotations

import math

import pytest
import torch

from tiltenv import TaskConfig, make_world
from tiltenv.lifecycle.diagnostics import collapse_baseline, two_stage_report
from tiltenv.rewards.reward_models import TrainData, TwoStageOptions, effective_sample_size, fit_stage1, fit_stage2, stage1_weights

D = 64


def _fit(link: str, n: int, beta1: float, seed: int = 0, **kw) -> dict:
    cfg = TaskConfig(d=D, K=4, link=link, label_kind="pointwise", n_labels=n, proxy="two_stage",
                     proxy_kwargs={"beta1": beta1, **kw}, n_eval_contexts=8, n_norm_contexts=64, seed=seed)
    w = make_world(cfg)
    data = TrainData("pointwise", x=w.task.pointwise.x, y=w.task.pointwise.y)
    return two_stage_report(w.task.proxy, w.judge.theta, data, beta1)


def _mean(link, n, beta1, seeds=(0, 1), **kw) -> dict:
    reps = [_fit(link, n, beta1, s, **kw) for s in seeds]
    return {k: sum(r[k] for r in reps) / len(reps) for k in reps[0] if k != "cos"}


def test_stage1_is_one_weighted_correlation_step():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 5, generator=g, dtype=torch.float64)
    y = torch.randn(200, generator=g, dtype=torch.float64)
    opts = TwoStageOptions(width=7, beta1=0.7)
    W, ess = fit_stage1(x, y, opts, seed=3)
    g0 = torch.Generator().manual_seed(3)
    w0 = torch.randn((7, 5), generator=g0, dtype=torch.float64)
    w0 = w0 / w0.norm(dim=1, keepdim=True)
    q = torch.softmax(y / 0.7, 0)
    grad = ((x @ w0.T > 0).double() * (q * y)[:, None]).T @ x  # Σ_i q_i y_i relu'(<w_j, x_i>) x_i
    expected = grad / grad.norm(dim=1, keepdim=True)
    assert torch.allclose(W, expected, atol=1e-12)
    assert ess == pytest.approx(float(1 / (q * q).sum()))
    # A finite step keeps part of the initialization; the step alone (inf) discards it.
    W_small, _ = fit_stage1(x, y, TwoStageOptions(width=7, beta1=0.7, step_size=1e-3), seed=3)
    assert float((W_small * w0).sum(1).min()) > 0.99
    # β1 = inf: uniform weights, ESS = n.
    assert effective_sample_size(stage1_weights(y, math.inf)) == pytest.approx(200.0)
    assert effective_sample_size(torch.tensor([0.0, 0.0, 3.0])) == pytest.approx(1.0)


def test_stage2_weightings():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(400, 3, generator=g, dtype=torch.float64)
    y = torch.relu(x[:, 0]) + 0.1 * torch.randn(400, generator=g, dtype=torch.float64)
    W = torch.eye(3, dtype=torch.float64)
    b = torch.zeros(3, dtype=torch.float64)
    coefs = {}
    for weighting in ("none", "label", "surrogate"):
        coef, ess = fit_stage2(x, y, W, b, TwoStageOptions(width=3, weighting=weighting, beta2=0.5, ridge=0.0))
        coefs[weighting] = coef
        if weighting == "none":
            assert ess == pytest.approx(400.0)
            # Unweighted λ = 0: the ordinary least-squares fit on [relu(xW + b), 1].
            phi = torch.cat([torch.relu(x), torch.ones(400, 1, dtype=torch.float64)], 1)
            ols = torch.linalg.lstsq(phi, y.unsqueeze(1)).solution.squeeze(1)
            assert torch.allclose(coef, ols, atol=1e-8)
        else:
            assert ess < 400.0
    assert not torch.allclose(coefs["label"], coefs["surrogate"])


def test_relu_recovery_is_positive_and_grows_with_n():
    # Default β1 = 1. Measured (d = 64, 2 seeds): recovered fraction 0.2 / 0.6 / 1.0 at n = 2d / 4d / 8d.
    fr = [_mean("relu", n, 1.0)["recovered_fraction"] for n in (2 * D, 4 * D, 8 * D)]
    assert fr[0] > 0 and fr[0] < fr[1] < fr[2], fr
    assert fr[2] > 0.8, fr


@pytest.mark.parametrize("n_over_d", [20, 40])
def test_he3_needs_a_finite_beta1_and_collapses_at_tiny_beta1(n_over_d):
    # Measured means over 3 seeds (d = 64, m = 256), recovered fraction at β1 = inf / 3 / 1 / 0.5 / 0.3 / 0.1 / 0.03:
    # n = 20d: 0.02 / 0.05 / 0.67 / 0.59 / 0.24 / 0.01 / 0.00; n = 40d: 0.04 / 0.09 / 0.84 / 0.84 / 0.68 / 0.05 / 0.01.
    n = n_over_d * D
    inf, good, tiny = (_mean("he3", n, b) for b in (math.inf, 1.0, 0.03))
    # β1 = inf: the unweighted step sees no first-Hermite signal (information exponent 3); only the odd
    # neuron with a lucky initial overlap crosses 0.5.
    assert inf["recovered_fraction"] < 0.15 and inf["mean_abs_cos"] < 0.25, inf
    # β1 = 1: e^{y/β1} re-weighting exposes the generative exponent 1 → most neurons recover θ*,
    # far above the collapse baselines (the top-weighted sample's |cos| and the q-weighted average).
    assert good["recovered_fraction"] > 0.5, good
    assert good["mean_abs_cos"] > good["top_sample_cos"] + 0.15 and good["mean_abs_cos"] > good["weighted_sample_cos"] + 0.3
    assert good["stage1_ess"] > 100
    # β1 = 0.03: the weights sit on ~1 sample; every neuron points at it, not at θ*.
    assert tiny["stage1_ess"] < 3, tiny
    assert tiny["recovered_fraction"] < 0.1, tiny
    assert tiny["neuron_sample_cos"] > 0.9  # each neuron ≈ one training sample (collapse)
    assert abs(tiny["mean_abs_cos"] - tiny["top_sample_cos"]) < 0.15  # ≈ the collapse baseline |z|/||x||
    if n_over_d == 40:  # the whole range 0.3 ≤ β1 ≤ 1 recovers at 40d (at 20d, β1 = 0.3 is already too small)
        for b in (0.5, 0.3):
            assert _mean("he3", n, b)["recovered_fraction"] > 0.5, b


def test_he2_weighting_cannot_help():
    # Even link: information and generative exponents are both 2, so e^{y/β1} adds no first-order signal
    # and shrinks the ESS (he2 labels are heavy-tailed). Measured (3 seeds, n = 20d): β1 = inf 0.25,
    # 3: 0.32, 1: 0.18, 0.5: 0.06. The small gain at β1 = 3 is collapse toward the heavy-tailed top samples
    # (their |cos| is 0.43 and neuron/sample alignment rises 0.45 → 0.68), not feature learning.
    n = 20 * D
    base = _mean("he2", n, math.inf)
    for b in (3.0, 1.0, 0.5):
        rep = _mean("he2", n, b)
        assert rep["recovered_fraction"] <= base["recovered_fraction"] + 0.12, (b, rep, base)
        assert rep["recovered_fraction"] < 0.45 and rep["mean_abs_cos"] < rep["top_sample_cos"] + 0.05, (b, rep)


def test_collapse_baseline_of_a_neuron_on_one_sample():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(50, D, generator=g, dtype=torch.float64)
    theta = torch.zeros(D, dtype=torch.float64)
    theta[0] = 1.0
    y = torch.zeros(50, dtype=torch.float64)
    y[7] = 10.0
    base = collapse_baseline(x, y, 0.01, theta)
    assert base["ess"] == pytest.approx(1.0)
    assert base["top_sample_cos"] == pytest.approx(float(x[7, 0].abs() / x[7].norm()))


def _relu_step(x, q, t, w0):
    """−∇_W of L = −Σ_i q_i t_i Σ_j relu(<w_j, x_i>) at w0: row j = Σ_i q_i t_i 1{<w_j, x_i> > 0} x_i."""
    return ((x @ w0.T > 0).double() * (q * t)[:, None]).T @ x


def test_stage1_centered_finite_step_and_dead_neurons():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(300, 6, generator=g, dtype=torch.float64)
    y = torch.randn(300, generator=g, dtype=torch.float64) + 0.5  # labels with a non-zero mean: centring matters
    w0 = torch.randn((9, 6), generator=torch.Generator().manual_seed(11), dtype=torch.float64)
    w0 = w0 / w0.norm(dim=1, keepdim=True)
    q = torch.softmax(y / 0.8, 0)
    # center=True drives the step with t_i = y_i − Σ q y
    W, _ = fit_stage1(x, y, TwoStageOptions(width=9, beta1=0.8, center=True), seed=11)
    step = _relu_step(x, q, y - (q * y).sum(), w0)
    assert torch.allclose(W, step / step.norm(dim=1, keepdim=True), atol=1e-12)
    # a finite step η: w0 + η g / mean_j ||g_j||, then normalized
    W, _ = fit_stage1(x, y, TwoStageOptions(width=9, beta1=0.8, step_size=0.7), seed=11)
    step = _relu_step(x, q, y, w0)
    new = w0 + 0.7 * step / step.norm(dim=1).mean()
    assert torch.allclose(W, new / new.norm(dim=1, keepdim=True), atol=1e-12)
    # all-zero labels: every gradient vanishes and every neuron keeps its (unit) initialization
    W, ess = fit_stage1(x, torch.zeros(300, dtype=torch.float64), TwoStageOptions(width=9, beta1=0.8), seed=11)
    assert torch.allclose(W, w0, atol=1e-12) and ess == pytest.approx(300.0)


def _weighted_ridge_brute(phi, y, w, lam):
    """argmin_a Σ_i w̄_i (y_i − φ_i a)² + λ Σ_{j < p} a_j² (w̄ = w / Σ w, last column unpenalized) as one
    augmented least-squares problem."""
    wb = w / w.sum()
    p = phi.shape[1]
    pen = math.sqrt(lam) * torch.eye(p, dtype=phi.dtype)[:-1]
    A = torch.cat([wb.sqrt()[:, None] * phi, pen])
    b = torch.cat([wb.sqrt() * y, torch.zeros(p - 1, dtype=phi.dtype)])
    return torch.linalg.lstsq(A, b[:, None], driver="gelsd").solution[:, 0]


@pytest.mark.parametrize("weighting", ["none", "label", "surrogate"])
def test_stage2_is_the_weighted_ridge_with_an_unpenalized_intercept(weighting):
    g = torch.Generator().manual_seed(5)
    x = torch.randn(300, 4, generator=g, dtype=torch.float64)
    y = torch.relu(x[:, 0]) + 0.3 * torch.randn(300, generator=g, dtype=torch.float64) + 2.0  # offset: intercept
    W = torch.randn(6, 4, generator=g, dtype=torch.float64)
    W = W / W.norm(dim=1, keepdim=True)
    b = torch.rand(6, generator=g, dtype=torch.float64) - 0.5
    lam, beta2 = 0.05, 0.7
    coef, ess = fit_stage2(x, y, W, b, TwoStageOptions(width=6, weighting=weighting, beta2=beta2, ridge=lam))
    phi = torch.cat([torch.relu(x @ W.T + b), torch.ones(300, 1, dtype=torch.float64)], 1)
    ones = torch.ones(300, dtype=torch.float64)
    if weighting == "none":
        w = ones
    elif weighting == "label":
        w = torch.exp(y / beta2)
    else:  # e^{r_a0(x)/β2} with a0 the unweighted ridge pilot
        w = torch.exp(phi @ _weighted_ridge_brute(phi, y, ones, lam) / beta2)
    assert torch.allclose(coef, _weighted_ridge_brute(phi, y, w, lam), atol=1e-8)
    assert ess == pytest.approx(float(w.sum() ** 2 / (w * w).sum()), rel=1e-9)


def test_two_stage_biases_are_symmetric_uniform():
    # b_j ~ U(−r, r): within the range, both signs, mean 0 (5 standard errors of r/√(3m))
    m, r = 256, 2.0
    w = make_world(TaskConfig(d=8, K=4, label_kind="pointwise", n_labels=200, proxy="two_stage",
                              proxy_kwargs={"width": m, "bias_range": r}, n_eval_contexts=8, n_norm_contexts=64))
    bias = w.task.proxy.b
    assert float(bias.abs().max()) <= r
    assert abs(float(bias.mean())) < 5 * r / math.sqrt(3 * m)
    assert float(bias.min()) < -r / 2 and float(bias.max()) > r / 2
