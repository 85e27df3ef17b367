"""Tests for tiltenv.metrics: each asserts a mathematical fact that a wrong implementation breaks."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import tiltenv.metrics as M

FAST = settings(max_examples=60, deadline=None)


# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------


def _logp(rng, C, K, zero_frac=0.0, scale=2.0):
    x = rng.normal(size=(C, K)) * scale
    if zero_frac > 0:
        mask = rng.random((C, K)) < zero_frac
        mask[np.arange(C), rng.integers(0, K, size=C)] = False  # keep at least one candidate
        x = np.where(mask, -np.inf, x)
    return M.log_normalize(x)


@st.composite
def problems(draw, zeros=True, min_K=1):
    """Random (logp, ref_logp, rewards, beta); supp π ⊆ supp π_ref so every KL is finite."""
    seed = draw(st.integers(0, 2**32 - 1))
    C = draw(st.integers(1, 4))
    K = draw(st.integers(min_K, 8))
    rng = np.random.default_rng(seed)
    ref = _logp(rng, C, K, zero_frac=0.3 if zeros and draw(st.booleans()) else 0.0)
    x = rng.normal(size=(C, K)) * draw(st.floats(0.1, 4.0))
    x = np.where(np.isneginf(ref.numpy()), -np.inf, x)
    if zeros and draw(st.booleans()):
        drop = rng.random((C, K)) < 0.3
        keep = ref.argmax(-1).numpy()
        drop[np.arange(C), keep] = False
        x = np.where(drop, -np.inf, x)
        x[np.arange(C), keep] = np.maximum(x[np.arange(C), keep], -1.0)
    lp = M.log_normalize(x)
    r = rng.normal(size=(C, K)) * draw(st.floats(0.1, 3.0))
    beta = draw(st.floats(0.05, 20.0))
    return lp, ref, torch.as_tensor(r), beta


# --------------------------------------------------------------------------------------------------
# property tests: divergences and the Gibbs variational principle
# --------------------------------------------------------------------------------------------------


@FAST
@given(problems())
def test_divergences_nonnegative_and_ordered(prob):
    lp, ref, r, beta = prob
    kl = M.kl_divergence(lp, ref, per_context=True)
    chi = M.chi2_divergence(lp, ref, per_context=True)
    assert torch.all(kl >= -1e-12)
    assert torch.all(chi >= -1e-12)
    # KL ≤ log(1 + χ²) (Jensen on log of the likelihood ratio)
    assert torch.all(kl <= torch.log1p(chi.clamp(min=0)) + 1e-10)
    # brute force
    p = lp.exp().numpy()
    q = ref.exp().numpy()
    for c in range(p.shape[0]):
        s = sum(p[c, k] * (lp[c, k].item() - ref[c, k].item()) for k in range(p.shape[1]) if p[c, k] > 0)
        assert kl[c].item() == pytest.approx(s, abs=1e-12)
        s2 = sum(p[c, k] ** 2 / q[c, k] for k in range(p.shape[1]) if p[c, k] > 0) - 1.0
        assert chi[c].item() == pytest.approx(s2, abs=1e-10)


@FAST
@given(problems())
def test_gibbs_variational_identity(prob):
    lp, ref, r, beta = prob
    tilt = M.tilt_logp(ref, r, beta)
    assert torch.allclose(tilt.exp().sum(-1), torch.ones(tilt.shape[0], dtype=torch.float64))
    gap = M.value_gap(lp, ref, r, beta, per_context=True)
    identity = beta * M.kl_divergence(lp, tilt, per_context=True)
    assert torch.allclose(gap, identity, atol=1e-9, rtol=0)
    # J*_β ≥ J_β(π), with equality at the tilt
    js = M.soft_value(ref, r, beta, per_context=True)
    jp = M.regularized_objective(lp, ref, r, beta, per_context=True)
    assert torch.all(js >= jp - 1e-9)
    assert M.value_gap(tilt, ref, r, beta) == pytest.approx(0.0, abs=1e-10)
    assert M.regularized_objective(tilt, ref, r, beta) == pytest.approx(
        M.soft_value(ref, r, beta), abs=1e-10
    )


@FAST
@given(problems(min_K=2))
def test_normalized_score_endpoints(prob):
    lp, ref, r, beta = prob
    tilt = M.tilt_logp(ref, r, beta)
    den = M.soft_value(ref, r, beta) - M.policy_value(ref, r)
    assume(den >= 1e-6)  # nothing to gain (π_ref on one candidate): the score is undefined (tested separately)
    assert M.normalized_score(tilt, ref, r, beta) == pytest.approx(1.0, abs=1e-7)
    assert M.normalized_score(ref, ref, r, beta) == pytest.approx(0.0, abs=1e-12)
    assert M.normalized_score(lp, ref, r, beta) <= 1.0 + 1e-7


def test_normalized_score_undefined_is_nan():
    ref = M.log_normalize(np.zeros((2, 3)))
    gold = np.ones((2, 3))
    assert math.isnan(M.normalized_score(ref, ref, gold, 1.0))
    assert math.isnan(M.normalized_score(ref, ref, np.random.default_rng(0).normal(size=(2, 3)), math.inf))


def test_kl_infinite_outside_reference_support():
    ref = torch.tensor([0.0, -math.inf]).log_softmax(-1)
    lp = torch.tensor([0.0, 0.0]).log_softmax(-1)
    assert M.kl_divergence(lp, ref) == math.inf
    assert M.chi2_divergence(lp, ref) == math.inf
    assert M.value_gap(lp, ref, [0.0, 1.0], 0.5) == math.inf
    assert M.regularized_objective(lp, ref, [0.0, 1.0], 0.5) == -math.inf
    # zero mass where π_ref is zero is fine: 0·log 0 = 0
    lp2 = torch.tensor([0.0, -math.inf])
    assert M.kl_divergence(lp2, ref) == 0.0
    assert M.chi2_divergence(lp2, ref) == 0.0


def test_policy_value_and_variance_brute_force():
    rng = np.random.default_rng(1)
    lp = _logp(rng, 7, 5, zero_frac=0.3)
    r = rng.normal(size=(7, 5))
    p = lp.exp().numpy()
    assert M.policy_value(lp, r) == pytest.approx(np.mean((p * r).sum(-1)), abs=1e-14)
    m = (p * r).sum(-1, keepdims=True)
    var = (p * (r - m) ** 2).sum(-1)
    assert np.allclose(M.reward_variance(lp, r, per_context=True).numpy(), var, atol=1e-14)
    assert M.reward_variance(lp, np.ones((7, 5))) == pytest.approx(0.0, abs=1e-28)


# --------------------------------------------------------------------------------------------------
# limits β → 0, β → ∞, extreme values
# --------------------------------------------------------------------------------------------------


def test_tilt_limits():
    rng = np.random.default_rng(2)
    ref = _logp(rng, 6, 7, zero_frac=0.3)
    r = rng.normal(size=(6, 7))
    r[ref.numpy() == -np.inf] = 10.0  # the argmax outside the support must be ignored
    t0 = M.tilt_logp(ref, r, 0.0)
    assert torch.allclose(M.tilt_logp(ref, r, 1e-6).exp(), t0.exp(), atol=1e-12)
    assert torch.equal(M.tilt_logp(ref, r, math.inf), ref)
    assert torch.allclose(M.tilt_logp(ref, r, 1e9).exp(), ref.exp(), atol=1e-8)
    # β = 0: all mass on the in-support argmax
    masked = np.where(np.isneginf(ref.numpy()), -np.inf, r)
    assert np.array_equal(t0.exp().numpy().argmax(-1), masked.argmax(-1))
    assert torch.allclose(t0.exp().max(-1).values, torch.ones(6, dtype=torch.float64))


def test_tilt_beta_zero_splits_ties_by_reference():
    ref = torch.log(torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64))
    r = torch.tensor([1.0, 2.0, 0.0, 2.0], dtype=torch.float64)
    q = M.tilt_logp(ref, r, 0.0).exp()
    assert torch.allclose(q, torch.tensor([0.0, 0.2 / 0.6, 0.0, 0.4 / 0.6], dtype=torch.float64))
    assert M.soft_value(ref, r, 0.0) == 2.0


def test_tilt_vector_beta_matches_scalar():
    rng = np.random.default_rng(3)
    ref, r = _logp(rng, 3, 5), rng.normal(size=(3, 5))
    betas = [0.0, 0.5, 2.0, math.inf]
    out = M.tilt_logp(ref, r, np.array(betas))
    assert out.shape == (4, 3, 5)
    for i, b in enumerate(betas):
        assert torch.equal(out[i], M.tilt_logp(ref, r, b))
    assert M.tilt_logp(ref[0], r[0], np.array(betas)).shape == (4, 5)


def test_soft_value_continuous_at_both_ends():
    rng = np.random.default_rng(4)
    ref = _logp(rng, 5, 6, zero_frac=0.2)
    r = rng.normal(size=(5, 6))
    j0, jinf = M.soft_value(ref, r, 0.0), M.soft_value(ref, r, math.inf)
    assert M.soft_value(ref, r, 1e-9) == pytest.approx(j0, abs=1e-6)
    assert jinf == pytest.approx(M.policy_value(ref, r), abs=1e-15)
    # Large β: J*_β − E r = Var/(2β) + O(β⁻²). A naive log-sum-exp would be off by ~β·1e-16.
    var = M.reward_variance(ref, r)
    for beta in (1e6, 1e9, 1e12):
        excess = M.soft_value(ref, r, beta) - jinf
        assert excess == pytest.approx(var / (2 * beta), rel=1e-5)
    betas = np.logspace(-4, 4, 30)
    vals = [M.soft_value(ref, r, b) for b in betas]
    assert np.all(np.diff(vals) <= 1e-12)  # J*_β decreases in β
    assert vals[0] <= j0 + 1e-12 and vals[-1] >= jinf - 1e-12


def test_extreme_rewards_and_tiny_beta_stay_finite():
    rng = np.random.default_rng(5)
    ref = _logp(rng, 4, 6)
    r = rng.normal(size=(4, 6)) * 1e4
    lp = _logp(rng, 4, 6)
    for beta in (1e-12, 1e-300, 5e-324):
        t = M.tilt_logp(ref, r, beta)
        assert not torch.isnan(t).any()
        assert torch.allclose(t.exp(), M.tilt_logp(ref, r, 0.0).exp())
        j = M.soft_value(ref, r, beta, per_context=True)
        assert torch.all(torch.isfinite(j))
        assert torch.allclose(j, torch.as_tensor(r).amax(-1), rtol=0, atol=1e-6)
        g = M.value_gap(lp, ref, r, beta)
        assert math.isfinite(g) and g >= 0
    # the argmax has a tiny reference mass (e^-800): exp underflows, log-sum-exp must not
    ref2 = torch.tensor([[-800.0, 0.0]], dtype=torch.float64)
    r2 = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    assert M.soft_value(ref2, r2, 1e-3) == pytest.approx(1.0 - 0.8, abs=1e-9)
    assert M.tilt_logp(ref2, r2, 1e-3).exp()[0, 0].item() == pytest.approx(1.0, abs=1e-12)


# --------------------------------------------------------------------------------------------------
# best-of-n
# --------------------------------------------------------------------------------------------------


def _mc_best_of_n(ref_p, proxy, n, reps, rng):
    draws = rng.choice(len(ref_p), size=(reps, n), p=ref_p)
    best = np.argmax(proxy[draws], axis=1)  # first draw among ties
    kept = draws[np.arange(reps), best]
    return np.bincount(kept, minlength=len(ref_p)) / reps


@pytest.mark.parametrize("n", [3, 8])
def test_best_of_n_matches_monte_carlo_with_ties(n):
    rng = np.random.default_rng(6)
    ref_p = np.array([0.3, 0.1, 0.25, 0.05, 0.2, 0.1])
    proxy = np.array([0.5, 2.0, 1.0, 2.0, -1.0, 1.0])  # two tie groups
    exact = M.best_of_n_logp(np.log(ref_p), proxy, n).exp().numpy()
    reps = 200_000
    mc = _mc_best_of_n(ref_p, proxy, n, reps, rng)
    std = np.sqrt(exact * (1 - exact) / reps)
    assert np.all(np.abs(mc - exact) <= 5 * std + 1e-4)
    # within a tie group the split follows π_ref
    assert exact[1] / exact[3] == pytest.approx(0.1 / 0.05)
    assert exact.sum() == pytest.approx(1.0, abs=1e-14)
    # group probability F_hi^n − F_lo^n
    assert exact[1] + exact[3] == pytest.approx(1 - (1 - 0.15) ** n, abs=1e-14)


def test_best_of_n_special_cases():
    rng = np.random.default_rng(7)
    ref = _logp(rng, 5, 9, zero_frac=0.2)
    proxy = rng.normal(size=(5, 9))
    assert torch.allclose(M.best_of_n_logp(ref, proxy, 1).exp(), ref.exp(), atol=1e-14)
    big = M.best_of_n_logp(ref, proxy, 1e5).exp()
    masked = np.where(np.isneginf(ref.numpy()), -np.inf, proxy)
    assert np.array_equal(big.numpy().argmax(-1), masked.argmax(-1))
    assert torch.all(big.max(-1).values > 1 - 1e-6)
    # zero-mass candidates are never selected
    assert torch.all(big[torch.isneginf(ref)] == 0)
    # tiny top mass with huge n: P(top) = 1 − (1 − m)^n, exact
    m = 1e-12
    ref2 = torch.log(torch.tensor([1 - m, m], dtype=torch.float64))
    p_top = M.best_of_n_logp(ref2, [0.0, 1.0], 1e6).exp()[1].item()
    assert p_top == pytest.approx(-math.expm1(1e6 * math.log1p(-m)), rel=1e-9)
    # gold value of best-of-n under the gold itself increases with n
    vals = [M.policy_value(M.best_of_n_logp(ref, proxy, n), proxy) for n in (1, 2, 4, 16, 64)]
    assert np.all(np.diff(vals) > 0)


def test_best_of_n_uniform_ref_fast_path():
    """A chunk whose π_ref is one value everywhere takes a rank-only path; it must match the
    closed form and the general path, also when chunks mix uniform and non-uniform rows."""
    rng = np.random.default_rng(11)
    C, K, n = 20_000, 16, 7.5  # several chunks: uniform, mixed, non-uniform
    proxy = rng.normal(size=(C, K))
    ref = np.full((C, K), -math.log(K))
    ref[C // 2 + 1 :] = np.log(rng.dirichlet(np.ones(K), size=C - C // 2 - 1))
    out = M.best_of_n_logp(ref, proxy, n).numpy()
    rank = np.argsort(np.argsort(proxy, -1), -1)
    closed = np.log(((rank + 1) / K) ** n - (rank / K) ** n)
    np.testing.assert_allclose(out[: C // 2 + 1], closed[: C // 2 + 1], rtol=1e-12, atol=1e-12)
    for i in (0, C // 2, C // 2 + 1, C - 1):  # each row alone (uniform rows alone still take the fast path)
        np.testing.assert_allclose(out[i], M.best_of_n_logp(ref[i], proxy[i], n).numpy(), rtol=0, atol=1e-13)
    # the general path on a nearly uniform row (one-ulp changes take it off the fast path)
    alone = M.best_of_n_logp(ref[:1], proxy[:1], n).numpy()[0]
    ref_pert = ref[:2].copy()
    ref_pert[1, 0] = np.nextafter(ref_pert[1, 0], 0)
    ref_pert[1, 1] = np.nextafter(ref_pert[1, 1], -np.inf)
    gen = M.best_of_n_logp(ref_pert, np.tile(proxy[:1], (2, 1)), n).numpy()
    np.testing.assert_allclose(gen[1], alone, rtol=0, atol=1e-12)
    # uniform π_ref with ties and with a shared (broadcast) row
    tied = np.round(proxy[:50] * 2) / 2
    uni = np.full(K, -math.log(K))
    np.testing.assert_allclose(
        M.best_of_n_logp(uni, tied, n).numpy(),
        M.best_of_n_logp(np.tile(uni, (50, 1)), tied, n).numpy(),
        rtol=0,
        atol=0,
    )


@FAST
@given(st.integers(0, 2**32 - 1), st.floats(1.0, 200.0), st.booleans())
def test_best_of_n_kl_bound(seed, n, ties):
    rng = np.random.default_rng(seed)
    K = int(rng.integers(2, 12))
    ref = _logp(rng, 3, K, zero_frac=0.2, scale=3.0)
    proxy = rng.normal(size=(3, K))
    if ties:
        proxy = np.round(proxy)
    logq = M.best_of_n_logp(ref, proxy, n)
    assert torch.allclose(logq.exp().sum(-1), torch.ones(3, dtype=torch.float64), atol=1e-12)
    kl = M.kl_divergence(logq, ref, per_context=True)
    assert torch.all(kl <= M.best_of_n_kl_bound(n) + 1e-10)


def test_best_of_n_kl_bound_values():
    assert M.best_of_n_kl_bound(1) == 0.0
    assert M.best_of_n_kl_bound(4) == pytest.approx(math.log(4) - 0.75)
    assert np.allclose(M.best_of_n_kl_bound([1, 2]), [0.0, math.log(2) - 0.5])


# --------------------------------------------------------------------------------------------------
# frontier
# --------------------------------------------------------------------------------------------------


def test_frontier_monotone_and_dominates_random_policies():
    rng = np.random.default_rng(8)
    ref = _logp(rng, 20, 6, zero_frac=0.15)
    gold = rng.normal(size=(20, 6))
    vref, vmax = M.policy_value(ref, gold), M.soft_value(ref, gold, 0.0)
    kappas = np.concatenate([[0.0], np.logspace(-6, 1, 40), [np.inf]])
    vals = M.frontier_value(ref, gold, kappas)
    assert vals.shape == kappas.shape
    assert vals[0] == pytest.approx(vref, abs=1e-14)
    assert vals[-1] == pytest.approx(vmax, abs=1e-14)
    assert np.all(np.diff(vals) >= -1e-12)
    assert M.frontier_value(ref, gold, 0.0) == pytest.approx(vref, abs=1e-14)
    for seed in range(20):
        r2 = np.random.default_rng(seed)
        x = r2.normal(size=(20, 6)) * r2.uniform(0.1, 5)
        lp = M.log_normalize(np.where(np.isneginf(ref.numpy()), -np.inf, x))
        kl = M.kl_divergence(lp, ref)
        assert M.policy_value(lp, gold) <= M.frontier_value(ref, gold, kl) + 1e-9
        assert M.kl_matched_gap(lp, ref, gold) >= -1e-9


def test_frontier_passes_through_the_tilt_curve():
    rng = np.random.default_rng(9)
    ref = _logp(rng, 15, 8)
    gold = rng.normal(size=(15, 8))
    betas = np.array([0.05, 0.3, 1.0, 4.0, 50.0])
    kl, val = M.tilt_frontier(ref, gold, betas)
    assert np.all(np.diff(kl) < 0) and np.all(np.diff(val) < 0)
    assert np.allclose(M.frontier_value(ref, gold, kl), val, atol=1e-10, rtol=0)
    for b, k, v in zip(betas, kl, val):
        tilt = M.tilt_logp(ref, gold, b)
        assert M.kl_divergence(tilt, ref) == pytest.approx(k, abs=1e-12)
        assert M.policy_value(tilt, gold) == pytest.approx(v, abs=1e-12)
        assert M.kl_matched_gap(tilt, ref, gold) == pytest.approx(0.0, abs=1e-9)
    # κ at or beyond the β = 0 tilt's KL gives the max
    k0, v0 = M.tilt_frontier(ref, gold, 0.0)
    assert M.frontier_value(ref, gold, k0[0] * 2) == pytest.approx(v0[0], abs=1e-14)


# --------------------------------------------------------------------------------------------------
# closed forms: Gaussian single index with a linear link
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gaussian_world():
    z = np.random.default_rng(10).standard_normal((200, 4096))
    ref = torch.full(z.shape, -math.log(z.shape[1]), dtype=torch.float64)
    return ref, z


@pytest.mark.parametrize("beta", [1.0, 2.0])
def test_gaussian_tilt_closed_forms(gaussian_world, beta):
    # Tilting N(0, 1) by e^{z/β} gives N(1/β, 1): V = 1/β, KL = 1/(2β²), J* = 1/(2β).
    # K = 4096 i.i.d. samples per context, 200 contexts: Monte Carlo error well under 3%.
    ref, z = gaussian_world
    tilt = M.tilt_logp(ref, z, beta)
    assert M.policy_value(tilt, z) == pytest.approx(1 / beta, rel=0.03)
    assert M.kl_divergence(tilt, ref) == pytest.approx(1 / (2 * beta**2), rel=0.03)
    assert M.soft_value(ref, z, beta) == pytest.approx(1 / (2 * beta), rel=0.03)


def _expected_max_of_normals(n):
    zs = np.linspace(-12, 12, 48001)
    Phi = np.array([0.5 * (1 + math.erf(v / math.sqrt(2))) for v in zs])
    phi = np.exp(-zs**2 / 2) / math.sqrt(2 * math.pi)
    f = zs * n * phi * Phi ** (n - 1)
    return float(np.sum((f[1:] + f[:-1]) / 2) * (zs[1] - zs[0]))


@pytest.mark.parametrize("n", [2, 4, 16])
def test_gaussian_best_of_n_expected_max(gaussian_world, n):
    ref, z = gaussian_world
    expected = _expected_max_of_normals(n)
    if n == 2:
        assert expected == pytest.approx(1 / math.sqrt(math.pi), rel=1e-9)
    value = M.policy_value(M.best_of_n_logp(ref, z, n), z)
    assert value == pytest.approx(expected, rel=0.02)


# --------------------------------------------------------------------------------------------------
# reward-model evaluation
# --------------------------------------------------------------------------------------------------


def _brute_rank(proxy, gold, p=None):
    C, K = gold.shape
    accs = []
    for c in range(C):
        num = den = 0.0
        for i, j in itertools.combinations(range(K), 2):
            if gold[c, i] == gold[c, j]:
                continue
            w = 1.0 if p is None else p[c, i] * p[c, j]
            sp, sg = np.sign(proxy[c, i] - proxy[c, j]), np.sign(gold[c, i] - gold[c, j])
            num += w * (1.0 if sp == sg else 0.5 if sp == 0 else 0.0)
            den += w
        accs.append(num / den if den > 0 else np.nan)
    return np.array(accs)


@pytest.mark.parametrize("path", ["loop", "merge"])
def test_ranking_accuracy_matches_brute_force(path, monkeypatch):
    if path == "merge":  # the O(K log² K) merge count used for large K, forced on small K
        monkeypatch.setattr(M.reward_model_eval, "_PAIR_LOOP_MAX_K", 0)
    rng = np.random.default_rng(11)
    for _ in range(10):
        C, K = int(rng.integers(1, 5)), int(rng.integers(2, 7))
        gold = np.round(rng.normal(size=(C, K)), 1)
        proxy = np.round(gold + rng.normal(size=(C, K)), 1)  # ties in both
        lp = _logp(rng, C, K, zero_frac=0.2)
        off = M.ranking_accuracy(proxy, gold, per_context=True).numpy()
        on = M.ranking_accuracy(proxy, gold, lp, per_context=True).numpy()
        assert np.allclose(off, _brute_rank(proxy, gold), equal_nan=True, atol=1e-12)
        assert np.allclose(on, _brute_rank(proxy, gold, lp.exp().numpy()), equal_nan=True, atol=1e-12)
        assert M.ranking_accuracy(proxy, gold) == pytest.approx(np.nanmean(_brute_rank(proxy, gold)))


def test_ranking_accuracy_large_k_paths_agree():
    rng = np.random.default_rng(21)
    gold = np.round(rng.normal(size=(3, 300)), 1)
    proxy = np.round(gold + rng.normal(size=(3, 300)), 1)
    lp = _logp(rng, 3, 300, zero_frac=0.1)
    merge = M.ranking_accuracy(proxy, gold, lp, per_context=True)
    num, den = M._pair_rows_loop(torch.as_tensor(proxy), torch.as_tensor(gold), lp.exp())
    assert torch.allclose(merge, num / den, atol=1e-12)


def test_ranking_accuracy_endpoints():
    rng = np.random.default_rng(12)
    gold = rng.normal(size=(5, 6))
    lp = _logp(rng, 5, 6)
    assert M.ranking_accuracy(gold, gold) == 1.0
    assert M.ranking_accuracy(-gold, gold) == 0.0
    assert M.ranking_accuracy(np.exp(gold), gold, lp) == pytest.approx(1.0)
    assert M.ranking_accuracy(np.zeros((5, 6)), gold) == 0.5  # proxy ties are coin flips
    assert math.isnan(M.ranking_accuracy(gold, np.ones((5, 6))))  # no untied gold pair


def _brute_harm(proxy, gold, p):
    C, K = gold.shape
    acc_w = _brute_rank(proxy, gold, p)
    hacc, hacc_w = [], []
    for c in range(C):
        mp, mg = np.dot(p[c], proxy[c]), np.dot(p[c], gold[c])
        match = np.sign(proxy[c] - mp) == np.sign(gold[c] - mg)
        hacc.append(match.mean())
        hacc_w.append(np.dot(p[c], match))
    return acc_w, np.array(hacc), np.array(hacc_w)


def test_harm_aware_accuracies():
    rng = np.random.default_rng(13)
    C, K = 6, 7
    gold = rng.normal(size=(C, K))
    proxy = gold + rng.normal(size=(C, K))
    lp = _logp(rng, C, K, zero_frac=0.2)
    res = M.harm_aware_accuracies(proxy, gold, lp, per_context=True)
    acc_w, hacc, hacc_w = _brute_harm(proxy, gold, lp.exp().numpy())
    assert np.allclose(res["acc_w"].numpy(), acc_w, atol=1e-12)
    assert np.allclose(res["hacc"].numpy(), hacc)
    assert np.allclose(res["hacc_w"].numpy(), hacc_w, atol=1e-12)
    agg = M.harm_aware_accuracies(proxy, gold, lp)
    assert agg["acc_w"] == pytest.approx(M.ranking_accuracy(proxy, gold, lp))
    assert agg["hacc"] == pytest.approx(hacc.mean())
    # uniform policy by default
    uni = M.harm_aware_accuracies(proxy, gold)
    assert uni["hacc"] == pytest.approx(uni["hacc_w"])
    assert uni["acc_w"] == pytest.approx(M.ranking_accuracy(proxy, gold))
    # the gold is perfect, its negation maximally harmful
    assert M.harm_aware_accuracies(gold, gold, lp) == {"acc_w": 1.0, "hacc": 1.0, "hacc_w": 1.0}
    neg = M.harm_aware_accuracies(-gold, gold, lp)
    assert neg["acc_w"] == 0.0 and neg["hacc"] == 0.0 and neg["hacc_w"] == 0.0
    # HAcc only sees which side of the policy's mean each candidate falls on: invariant to
    # positive affine maps of the proxy, unlike... ranking accuracy is too, but HAcc is NOT
    # invariant to monotone nonlinear maps (a benign-vs-harmful distinction ranking ignores).
    aff = M.harm_aware_accuracies(3.0 * proxy - 7.0, gold, lp)
    assert aff["hacc"] == pytest.approx(agg["hacc"]) and aff["hacc_w"] == pytest.approx(agg["hacc_w"])
    g1 = np.array([[0.0, 0.1, 0.2, 10.0]])
    mono = np.array([[0.0, 0.1, 0.2, 0.3]])  # same ranking as g1, different mean split
    h = M.harm_aware_accuracies(mono, g1)
    assert h["acc_w"] == 1.0 and h["hacc"] == 0.75  # 0.2 is above the proxy mean, below gold's
    # constant rewards: every candidate sits at the mean (sign 0), no rounding noise
    const = M.harm_aware_accuracies(np.full((2, 5), 0.1), np.full((2, 5), 0.3), _logp(rng, 2, 5))
    assert const["hacc"] == 1.0 and math.isnan(const["acc_w"])


def test_proxy_gold_correlation():
    rng = np.random.default_rng(14)
    ref = _logp(rng, 8, 5, zero_frac=0.2)
    gold = rng.normal(size=(8, 5))
    assert M.proxy_gold_correlation(ref, 2 * gold + 3, gold) == pytest.approx(1.0)
    assert M.proxy_gold_correlation(ref, -gold, gold) == pytest.approx(-1.0)
    proxy = gold + rng.normal(size=(8, 5))
    w = (ref.exp().numpy() / 8).ravel()
    cov = np.cov(np.stack([proxy.ravel(), gold.ravel()]), aweights=w, bias=True)
    expected = cov[0, 1] / np.sqrt(cov[0, 0] * cov[1, 1])
    assert M.proxy_gold_correlation(ref, proxy, gold) == pytest.approx(expected, abs=1e-12)
    assert math.isnan(M.proxy_gold_correlation(ref, np.ones((8, 5)), gold))


# --------------------------------------------------------------------------------------------------
# rliable aggregates
# --------------------------------------------------------------------------------------------------


def test_iqm_matches_trim_mean():
    assert M.iqm(np.arange(1.0, 9.0)) == 4.5  # drop 2 from each end of 1..8
    assert M.iqm([[5.0, 1.0], [100.0, 3.0]]) == 4.0  # n = 4: drop 1 each end, mean(3, 5)
    rng = np.random.default_rng(15)
    for n in range(1, 40):
        x = rng.normal(size=n)
        cut = int(0.25 * n)
        assert M.iqm(x) == pytest.approx(np.sort(x)[cut : n - cut].mean(), abs=1e-15)


def test_iqm_matches_scipy_trim_mean():
    trim_mean = pytest.importorskip("scipy.stats").trim_mean
    x = np.random.default_rng(16).normal(size=(7, 5))
    assert M.iqm(x) == trim_mean(x, 0.25, axis=None)


def test_aggregate_mean():
    x = np.arange(12.0).reshape(4, 3)
    assert M.aggregate_mean(x) == pytest.approx(5.5)


def test_stratified_bootstrap_ci():
    rng = np.random.default_rng(16)
    scores = rng.normal(size=(10, 4))
    point, lo, hi = M.stratified_bootstrap_ci(scores, reps=500, seed=3)
    assert point == M.iqm(scores)
    assert lo <= point <= hi and lo < hi
    assert M.stratified_bootstrap_ci(scores, reps=500, seed=3) == (point, lo, hi)
    assert M.stratified_bootstrap_ci(scores, reps=500, seed=4) != (point, lo, hi)
    big = rng.normal(size=(400, 4))
    _, lo2, hi2 = M.stratified_bootstrap_ci(big, reps=500, seed=3)
    assert hi2 - lo2 < 0.5 * (hi - lo)
    # stratification: resampling runs *within* each task keeps every task's constant column,
    # so the IQM of every replicate is the same (a pooled bootstrap would vary).
    cols = np.tile(np.array([0.0, 1.0, 2.0, 10.0]), (6, 1))
    p, l, h = M.stratified_bootstrap_ci(cols, reps=200, seed=0)
    assert p == l == h
    p, l, h = M.stratified_bootstrap_ci(cols, statistic=M.aggregate_mean, reps=50)
    assert p == l == h == pytest.approx(3.25)


# --------------------------------------------------------------------------------------------------
# overoptimization
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["bon", "rl"])
def test_gao_fit_recovers_parameters(form):
    kl = np.linspace(0.0, 9.0, 25)
    d = np.sqrt(kl)
    alpha, beta = 1.3, 0.4
    with np.errstate(divide="ignore", invalid="ignore"):
        y = d * (alpha - beta * d) if form == "bon" else np.where(d > 0, d * (alpha - beta * np.log(d)), 0.0)
    fit = M.gao_fit(kl, y, form)
    assert fit.form == form
    assert fit.alpha == pytest.approx(alpha, abs=1e-10)
    assert fit.beta == pytest.approx(beta, abs=1e-10)
    assert fit.r2 == pytest.approx(1.0, abs=1e-12)
    d_star = alpha / (2 * beta) if form == "bon" else math.exp(alpha / beta - 1)
    assert fit.d_star == pytest.approx(d_star)
    assert np.allclose(fit.predict(kl), y, atol=1e-10)
    # no turning point when the fitted β ≤ 0
    assert M.gao_fit(kl, 2 * d, form).d_star == math.inf


@pytest.mark.parametrize("form", ["bon", "rl"])
def test_gao_fit_on_a_straight_line_has_no_turning_point_under_rounding_noise(form):
    # A straight line in d fits β = 0 exactly in exact arithmetic; in floating point the solve returns
    # ±1e-17-ish depending on the BLAS. Perturb the inputs at rounding level (as another BLAS or another
    # summation order would) and require β == 0, d_star == inf every time, at any scale of the data.
    rng = np.random.default_rng(0)
    kl = np.linspace(0.0, 9.0, 25)
    signs = set()
    for scale in (1e-6, 1.0, 1e6):
        for _ in range(50):
            d = np.sqrt(kl)
            y = scale * 0.7 * d * (1 + 4e-16 * rng.standard_normal(d.size))
            k = kl * (1 + 4e-16 * rng.standard_normal(kl.size))
            raw = np.linalg.lstsq(np.stack([d, -d * d] if form == "bon" else [d, -d * np.log(np.where(d > 0, d, 1))], 1),
                                  y, rcond=None)[0][1]
            signs.add(np.sign(raw))
            fit = M.gao_fit(k, y, form)
            assert fit.beta == 0.0 and fit.d_star == math.inf, (scale, fit)
            assert fit.alpha == pytest.approx(0.7 * scale, rel=1e-9)
    assert 1.0 in signs  # the unguarded solve does return β > 0 on some of these inputs
    # a small but real curvature is still a turning point
    d = np.sqrt(kl)
    fit = M.gao_fit(kl, d * (1.0 - 1e-3 * d), "bon")
    assert fit.beta == pytest.approx(1e-3) and fit.d_star == pytest.approx(500.0)


def test_overoptimization_rising_then_falling():
    kl = np.linspace(0, 8, 17)
    d = np.sqrt(kl)
    gold = d * (1.0 - 0.5 * d)  # peak at d = 1 (KL = 1), value 0.5
    proxy = 2 * d  # proxy keeps rising
    perm = np.random.default_rng(17).permutation(kl.size)
    rep = M.overoptimization(kl[perm], gold[perm], proxy[perm])
    assert rep.overoptimized and rep.proxy_rising_while_gold_falls
    assert rep.peak_gold == pytest.approx(0.5)
    assert rep.kl_at_peak == pytest.approx(1.0)
    assert kl[perm][rep.peak_index] == pytest.approx(1.0)  # index in the caller's order
    assert rep.final_gold == pytest.approx(gold[-1])
    assert rep.drop == pytest.approx(0.5 - gold[-1])
    assert rep.fits["bon"].alpha == pytest.approx(1.0) and rep.fits["bon"].beta == pytest.approx(0.5)
    # proxy falling with the gold: not "rising while gold falls"
    assert not M.overoptimization(kl, gold, gold).proxy_rising_while_gold_falls


def test_monotone_curve_is_not_flagged_even_if_fit_turns_down():
    kl = np.linspace(0, 10, 30)
    gold = 1 - np.exp(-np.sqrt(kl))  # strictly increasing, saturating
    rep = M.overoptimization(kl, gold, 2 * gold)
    assert rep.fits["bon"].beta > 0  # the fitted law predicts a peak...
    assert not rep.overoptimized  # ...but the measured curve never drops
    assert rep.drop == 0.0 and rep.peak_gold == rep.final_gold
    assert not rep.proxy_rising_while_gold_falls
    # a drop below tol is not overoptimization
    g2 = gold.copy()
    g2[-1] = g2[-2] - 1e-3
    assert not M.overoptimization(kl, g2, tol=1e-2).overoptimized
    assert M.overoptimization(kl, g2).overoptimized
    # too few points to fit: NaN fits, no crash
    one = M.overoptimization([0.0], [1.0])
    assert math.isnan(one.fits["rl"].alpha) and not one.overoptimized


# --------------------------------------------------------------------------------------------------
# input handling, chunking, validation
# --------------------------------------------------------------------------------------------------


def test_input_types_shapes_and_broadcast():
    rng = np.random.default_rng(18)
    lp, ref = _logp(rng, 4, 5), _logp(rng, 1, 5)
    r = rng.normal(size=(4, 5))
    base = M.value_gap(lp, ref.expand(4, 5), r, 0.7, per_context=True)
    assert torch.allclose(M.value_gap(lp, ref[0], r, 0.7, per_context=True), base)  # (K,) broadcast
    for beta in (0.0, 0.7, 1e9, math.inf):  # one reward row shared by all contexts
        tiled = M.soft_value(lp, np.tile(r[0], (4, 1)), beta, per_context=True)
        assert torch.allclose(M.soft_value(lp, r[0], beta, per_context=True), tiled)
        assert torch.allclose(M.tilt_logp(lp, r[0], beta), M.tilt_logp(lp, np.tile(r[0], (4, 1)), beta))
    assert torch.allclose(
        M.value_gap(lp.numpy().astype(np.float32), ref.float(), r.tolist(), 0.7, per_context=True),
        base,
        atol=1e-5,
    )
    ro = lp.numpy().copy()
    ro.flags.writeable = False
    assert M.kl_divergence(ro, ref) == M.kl_divergence(lp, ref)
    one = M.kl_divergence(lp[0], ref[0], per_context=True)
    assert one.shape == (1,) and one.dtype == torch.float64
    assert M.tilt_logp(ref[0], r[0], 1.0).shape == (5,)
    assert M.best_of_n_logp(ref[0], r, 3).shape == (4, 5)
    bon = M.best_of_n_logp(lp, r[0], 3)  # one proxy row shared by all contexts
    assert torch.allclose(bon, M.best_of_n_logp(lp, np.tile(r[0], (4, 1)), 3))
    t_inf = M.tilt_logp(ref, r, math.inf)
    t_inf += 1.0  # fresh memory, the caller's ref is untouched
    assert torch.allclose(ref.exp().sum(), torch.tensor(1.0, dtype=torch.float64))
    x = np.ones(3)
    t = M.as_float64(x)
    assert t.dtype == torch.float64 and t.data_ptr() == x.ctypes.data  # zero-copy


def test_chunked_path_matches_single_pass(monkeypatch):
    rng = np.random.default_rng(19)
    C, K = 37, 6
    lp, ref = _logp(rng, C, K, zero_frac=0.2), _logp(rng, C, K)
    r, proxy = rng.normal(size=(C, K)), np.round(rng.normal(size=(C, K)), 1)
    calls = {
        "kl": lambda: M.kl_divergence(lp, ref, per_context=True),
        "chi2": lambda: M.chi2_divergence(lp, ref, per_context=True),
        "gap": lambda: M.value_gap(lp, ref, r, 0.3, per_context=True),
        "soft": lambda: M.soft_value(ref, r, 1e7, per_context=True),
        "tilt": lambda: M.tilt_logp(ref, r, [0.0, 0.5]),
        "bon": lambda: M.best_of_n_logp(ref, proxy, 5),
        "rank": lambda: M.ranking_accuracy(proxy, r, lp, per_context=True),
        "harm": lambda: M.harm_aware_accuracies(proxy, r, lp, per_context=True)["hacc_w"],
        "corr": lambda: torch.tensor(M.proxy_gold_correlation(ref, proxy, r)),
        "frontier": lambda: torch.tensor(M.frontier_value(ref, r, [0.1, 1.0])),
        "broadcast": lambda: M.value_gap(lp, ref[0], r, 0.3, per_context=True),
        "bon_broadcast": lambda: M.best_of_n_logp(ref, proxy[0], 5),
    }
    full = {k: f() for k, f in calls.items()}
    monkeypatch.setitem(M._CHUNK_ELEMS, "cpu", 4 * K)  # 4 contexts per chunk
    for k, f in calls.items():
        assert torch.allclose(f(), full[k], atol=1e-12, equal_nan=True), k


def test_differentiable_when_inputs_require_grad():
    logits = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    ref = torch.log_softmax(torch.randn(3, 4, dtype=torch.float64), -1)
    kl = M.kl_divergence(torch.log_softmax(logits, -1), ref, per_context=True).sum()
    kl.backward()
    assert torch.all(torch.isfinite(logits.grad)) and logits.grad.abs().sum() > 0


@pytest.mark.parametrize(
    "call, word",
    [
        (lambda: M.tilt_logp([0.0, -math.inf], [1.0, 2.0], -1.0), "beta must be >= 0"),
        (lambda: M.soft_value([0.0], [1.0], float("nan")), "beta"),
        (lambda: M.value_gap([0.0], [0.0], [1.0], -0.5), "beta must be >= 0 (got -0.5)"),
        (lambda: M.tilt_logp([0.0], [1.0], [1.0, -2.0]), "beta must be >= 0"),
        (lambda: M.kl_divergence(np.log([[0.5, 0.5]]), np.log([[1 / 3] * 3])), "shape mismatch"),
        (lambda: M.policy_value(np.log(np.full((2, 3), 1 / 3)), np.zeros((3, 3))), "shape mismatch"),
        (lambda: M.policy_value(np.zeros((1, 1, 2)), np.zeros(2)), "logp must have shape"),
        (lambda: M.best_of_n_logp(np.log([0.5, 0.5]), [0.0, 1.0], 0), "n must be >= 1"),
        (lambda: M.best_of_n_logp(np.log([0.5, 0.5]), [0.0, 1.0], math.inf), "n must be finite"),
        (lambda: M.best_of_n_kl_bound(0.5), "n must be >= 1"),
        (lambda: M.kl_divergence([0.0, 0.0], np.log([0.5, 0.5])), "logp must hold normalized"),
        (lambda: M.kl_divergence(np.log([0.5, 0.5]), [0.0, float("nan")]), "ref_logp contains NaN"),
        (lambda: M.policy_value(np.log([0.5, 0.5]), [0.0, float("inf")]), "rewards must be finite"),
        (lambda: M.value_gap(np.log([0.5] * 2), np.log([0.5] * 2), [np.nan, 0], 1), "gold must be finite"),
        (lambda: M.best_of_n_logp(np.log([0.5, 0.5]), [0.0, float("nan")], 2), "proxy must be finite"),
        (lambda: M.log_normalize([-math.inf, -math.inf]), "all -inf"),
        (lambda: M.frontier_value(np.log([0.5, 0.5]), [0.0, 1.0], -0.1), "kl must be >= 0"),
        (lambda: M.gao_fit([0, 1, 2], [0, 1, 2], "bonn"), "did you mean 'bon'"),
        (lambda: M.gao_fit([0, 1], [0, 1, 2], "rl"), "same length"),
        (lambda: M.overoptimization([0, -1.0], [0, 1]), "kl must be >= 0"),
        (lambda: M.stratified_bootstrap_ci(np.ones((3, 2)), confidence=1.5), "confidence"),
        (lambda: M.iqm([1.0, float("nan")]), "scores contains NaN"),
        (lambda: M.as_float64(["a", "b"], name="gold"), "gold must be a real-valued"),
    ],
)
def test_validation_errors_name_the_argument(call, word):
    with pytest.raises(ValueError, match=__import__("re").escape(word)):
        call()


def test_chi2_tilt_maximizes_the_chi2_regularized_objective():
    # The closed form against brute force: no random policy beats it on E_π r − β χ²(π‖π_ref).
    g = torch.Generator().manual_seed(0)
    for beta in (0.05, 0.5, 5.0):
        ref = torch.log_softmax(torch.randn(6, 7, generator=g, dtype=torch.float64), -1)
        r = torch.randn(6, 7, generator=g, dtype=torch.float64)
        star = M.chi2_tilt_logp(ref, r, beta)
        assert torch.allclose(star.exp().sum(-1), torch.ones(6, dtype=torch.float64))

        def objective(lp):
            return M.policy_value(lp, r, per_context=True) - beta * M.chi2_divergence(lp, ref, per_context=True)

        best = objective(star)
        for _ in range(200):
            # random policies and small perturbations of the optimum (mixtures cover both)
            q = torch.softmax(2 * torch.randn(6, 7, generator=g, dtype=torch.float64), -1)
            t = torch.rand(6, 1, generator=g, dtype=torch.float64) ** 3
            lp = torch.log(t * q + (1 - t) * star.exp())
            assert bool((objective(lp) <= best + 1e-12).all())


# --------------------------------------------------------------------------------------------------
# kernels sized for the device (checked on CPU with device objects; no CUDA needed)
# --------------------------------------------------------------------------------------------------


def test_chunk_sizes_are_chosen_per_device():
    from tiltenv.metrics import _rows_per_chunk

    cpu, gpu = torch.device("cpu"), torch.device("cuda", 0)
    # CPU: 2 MB of float64 per array, so temporaries stay in cache
    assert _rows_per_chunk(16, cpu) * 16 * 8 == 2 * 2**20
    assert _rows_per_chunk(16, cpu, cost=2) == _rows_per_chunk(16, cpu) // 2
    # GPU: the bench's 10^6 x 16 batch (cost 2, as best-of-n) is one chunk: one launch per op
    assert _rows_per_chunk(16, gpu, cost=2) >= 1_000_000
    assert _rows_per_chunk(16, torch.device("mps")) == _rows_per_chunk(16, gpu)
    assert _rows_per_chunk(16, "cuda") == _rows_per_chunk(16, gpu)  # strings are device specs too
    assert _rows_per_chunk(10**9, gpu) == 1 and _rows_per_chunk(10**9, cpu) == 1


def test_outer_scan_cumsum_matches_the_row_cumsum_with_infinities():
    from tiltenv.metrics import _cumsum_outer

    g = torch.Generator().manual_seed(0)
    x = torch.rand((1000, 16), generator=g, dtype=torch.float64)
    x[3, 5] = math.inf
    x[7, 0] = math.inf
    out = _cumsum_outer(x)
    assert torch.equal(out, torch.cumsum(x, -1))  # same additions in the same order: bit-identical


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_metrics_on_cuda_match_the_cpu():
    """The device path (one chunk, the transposed scan for row cumsums, one host read for validation) gives the
    CPU's numbers on a batch that spans several CPU chunks, ties and -inf (probability 0) included."""
    g = torch.Generator().manual_seed(3)
    C, K, beta = 70_000, 16, 0.3
    ref = torch.log_softmax(torch.randn(C, K, generator=g, dtype=torch.float64), -1)
    ref[:5, 0] = -math.inf
    ref = ref - torch.logsumexp(ref, -1, keepdim=True)
    proxy = torch.randn(C, K, generator=g, dtype=torch.float64).round(decimals=1)  # ties for best-of-n
    gold = torch.randn(C, K, generator=g, dtype=torch.float64)
    dev = torch.device("cuda")
    on = lambda fn, *a: (fn(*a), fn(*(t.to(dev) if isinstance(t, torch.Tensor) else t for t in a)))  # noqa: E731
    pairs = {
        "tilt_logp": on(M.tilt_logp, ref, proxy, beta),
        "best_of_n_logp": on(M.best_of_n_logp, ref, proxy, 8),
    }
    logp = pairs["tilt_logp"][0]
    pairs["kl_divergence"] = on(M.kl_divergence, logp, ref)
    pairs["policy_value"] = on(M.policy_value, logp, gold)
    pairs["value_gap"] = on(M.value_gap, logp, ref, gold, beta)
    for name, (cpu, gpu) in pairs.items():
        gpu = torch.as_tensor(gpu).cpu()
        assert torch.allclose(torch.as_tensor(cpu), gpu, rtol=1e-9, atol=1e-10, equal_nan=False), name


# --------------------------------------------------------------------------------------------------
# mutation-probe additions
# --------------------------------------------------------------------------------------------------


def test_overoptimization_peak_is_the_first_maximum_and_default_tol_is_relative_to_the_range():
    # gold plateaus at its peak (KL 1 and 2 tie), then drops: the peak is the lowest-KL point of the plateau
    kl = np.array([0.0, 1.0, 2.0, 3.0])
    gold = 1e6 + np.array([0.0, 2.0, 2.0, 1.0])  # a large offset: the default tol is 1e-6 of the *range*
    perm = np.array([2, 0, 3, 1])
    rep = M.overoptimization(kl[perm], gold[perm])
    assert rep.kl_at_peak == 1.0 and kl[perm][rep.peak_index] == 1.0
    assert rep.tol == pytest.approx(1e-6 * 2.0, rel=1e-12)
    assert rep.drop == pytest.approx(1.0) and rep.overoptimized
    # a drop of 1.5e-6 of the range is flagged; 1e-6 of the largest gold (1.000002) would hide it
    small = M.overoptimization(kl, 1e6 + np.array([0.0, 2.0, 2.0, 2.0 - 3e-6]))
    assert small.overoptimized


def test_proxy_rising_while_gold_falls_needs_a_material_drop_and_a_strict_rise():
    kl = np.array([0.0, 1.0, 2.0])
    gold = np.array([0.0, 1.0, 0.9])
    rising = np.array([0.0, 1.0, 2.0])
    assert M.overoptimization(kl, gold, rising).proxy_rising_while_gold_falls
    # the same rising proxy with a drop below tol: not overoptimized, hence not "rising while gold falls"
    rep = M.overoptimization(kl, gold, rising, tol=0.5)
    assert not rep.overoptimized and not rep.proxy_rising_while_gold_falls
    # a proxy flat from the peak to the final point does not rise
    assert not M.overoptimization(kl, gold, np.array([0.0, 1.0, 1.0])).proxy_rising_while_gold_falls


def test_gao_fit_r2_is_one_minus_sse_over_centred_sst():
    kl = np.linspace(0.0, 9.0, 25)
    d = np.sqrt(kl)
    y = 5.0 + d * (1.3 - 0.4 * d) + 0.1 * np.random.default_rng(0).normal(size=d.size)  # offset: no intercept
    for form in ("bon", "rl"):
        fit = M.gao_fit(kl, y, form)
        dd, yy = (d, y) if form == "bon" else (d[d > 0], y[d > 0])
        X = np.stack([dd, -dd * dd] if form == "bon" else [dd, -dd * np.log(dd)], 1)
        coef = np.linalg.lstsq(X, yy, rcond=None)[0]
        sse = float(((yy - X @ coef) ** 2).sum())
        assert fit.r2 == pytest.approx(1.0 - sse / float(((yy - yy.mean()) ** 2).sum()), rel=1e-9), form


def test_ranking_accuracy_mean_skips_contexts_without_an_untied_gold_pair():
    gold = np.array([[0.0, 1.0, 2.0], [3.0, 3.0, 3.0], [0.0, 1.0, 2.0]])  # context 1: every gold pair tied
    proxy = np.array([[0.0, 1.0, 2.0], [1.0, 2.0, 3.0], [0.0, 2.0, 1.0]])  # accuracies 1 and 2/3
    per = M.ranking_accuracy(proxy, gold, per_context=True)
    assert math.isnan(per[1]) and per[0] == 1.0 and per[2] == pytest.approx(2 / 3)
    assert M.ranking_accuracy(proxy, gold) == pytest.approx((1.0 + 2 / 3) / 2)
    lp = M.log_normalize(np.log(np.array([[0.5, 0.3, 0.2]] * 3)))
    assert M.ranking_accuracy(proxy, gold, lp) == pytest.approx(float(np.nanmean(M.ranking_accuracy(proxy, gold, lp, per_context=True))))
    assert not math.isnan(M.ranking_accuracy(proxy, gold, lp))


def test_objective_and_gap_at_infinite_beta():
    """β = inf: J = V(π) where KL(π‖π_ref) = 0 (π = π_ref) and −inf elsewhere; the gap is 0 for π_ref, +inf otherwise."""
    rng = np.random.default_rng(19)
    ref, lp = _logp(rng, 3, 5), _logp(rng, 3, 5)
    r = rng.normal(size=(3, 5))
    assert M.regularized_objective(ref, ref, r, math.inf) == pytest.approx(M.policy_value(ref, r), abs=1e-15)
    assert M.value_gap(ref, ref, r, math.inf) == pytest.approx(0.0, abs=1e-15)
    assert M.regularized_objective(lp, ref, r, math.inf) == -math.inf
    assert M.value_gap(lp, ref, r, math.inf) == math.inf
    mixed = torch.cat([ref[:1], lp[1:]])  # π = π_ref in context 0 only
    per = M.regularized_objective(mixed, ref, r, math.inf, per_context=True)
    assert per[0] == pytest.approx(float((ref[0].exp() * torch.as_tensor(r[0])).sum()), abs=1e-15)
    assert torch.all(per[1:] == -math.inf)


def test_normalized_score_is_nan_for_a_gold_constant_on_the_support_whatever_the_rounding():
    """J*_β − V(π_ref) computed as a difference of two O(|r|) numbers left ±1e-16 of rounding for a constant
    gold under a non-uniform π_ref, and the score came out as ±1e15 (e.g. -1.31e15 for gold 7, π_ref .7/.2/.1)."""
    ref1 = M.log_normalize(np.log([[0.7, 0.2, 0.1]]))
    lp1 = M.log_normalize(np.log([[0.1, 0.2, 0.7]]))
    assert math.isnan(M.normalized_score(lp1, ref1, np.full((1, 3), 7.0), 1.0))
    rng = np.random.default_rng(0)
    for _ in range(300):
        K = int(rng.integers(2, 9))
        ref = rng.normal(size=(3, K)) * 2
        ref[0, 0] = -np.inf  # off the support: the gold there does not count
        ref = np.asarray(M.log_normalize(ref))
        lp = np.asarray(M.log_normalize(np.where(np.isfinite(ref), rng.normal(size=(3, K)), -np.inf)))
        gold = np.full((3, K), rng.normal() * 10.0 ** rng.integers(-3, 6))
        gold[0, 0] = 1e6
        beta = float(rng.choice([0.0, 0.1, 1.0, 10.0, np.inf]))
        assert math.isnan(M.normalized_score(lp, ref, gold, beta)), (gold[0, 1], beta)
