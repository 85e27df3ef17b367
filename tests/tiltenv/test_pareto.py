"""tiltenv.metrics.pareto against brute force on small K (m = 2, 3): the exact front, its support, the gap along a
weight direction, hypervolume."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

import tiltenv.metrics as M


def _simplex_policies(K: int, n: int) -> np.ndarray:
    """Every distribution over K candidates with probabilities in multiples of 1/n (the brute-force policy set)."""
    return M.simplex_grid(K, n)


def _kl_rows(P: np.ndarray, ref: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(P > 0, P * (np.log(P) - ref), 0.0)
    return t.sum(-1)


def _problem(seed: int, m: int, C: int, K: int):
    rng = np.random.default_rng(seed)
    ref = M.log_normalize(rng.normal(size=(C, K))).numpy()
    golds = rng.normal(size=(m, C, K))
    return ref, golds


@pytest.mark.parametrize("m,K,n", [(2, 3, 200), (3, 4, 48)])
def test_front_support_matches_brute_force_one_context(m, K, n):
    ref, golds = _problem(m, m, 1, K)
    P = _simplex_policies(K, n)  # (N, K)
    V = P @ golds[:, 0, :].T  # (N, m)
    kl = _kl_rows(P, ref[0])
    for kappa in (0.02, 0.2, 10.0):
        feasible = kl <= kappa
        W = M.simplex_grid(m, 6)
        front = M.pareto_front(ref, golds, kappa, W)
        assert np.all(front.kl <= kappa + 1e-9)
        for w, h in zip(W, front.support):
            brute = (V[feasible] @ w).max()
            assert brute <= h + 1e-9  # no feasible policy beats the front along w
            assert brute >= h - 0.05  # and the grid gets close (its resolution)
        # the front's own points are achievable: V is the tilt's, at KL = κ (or the argmax's below κ)
        for w, beta, v in zip(W, front.betas, front.values):
            s = np.einsum("m,mck->ck", w, golds)
            lp = M.tilt_logp(ref, s, beta)
            np.testing.assert_allclose(M.dimension_values(lp, golds), v, atol=1e-12)


def test_front_support_matches_brute_force_two_contexts_shared_budget():
    """Two contexts share one KL budget (the mean): the front spends it unevenly, with one β."""
    m, K, n = 2, 3, 30
    ref, golds = _problem(7, m, 2, K)
    P = _simplex_policies(K, n)
    V0, V1 = P @ golds[:, 0, :].T, P @ golds[:, 1, :].T  # (N, m) per context
    kl0, kl1 = _kl_rows(P, ref[0]), _kl_rows(P, ref[1])
    kappa = 0.15
    feasible = (kl0[:, None] + kl1[None, :]) / 2 <= kappa
    for w in M.simplex_grid(m, 4):
        h = M.front_support(ref, golds, kappa, w)
        brute = ((V0 @ w)[:, None] + (V1 @ w)[None, :])[feasible].max() / 2
        assert brute <= h + 1e-9
        assert brute >= h - 0.03


def test_front_is_exact_in_beta_and_nondominated():
    ref, golds = _problem(3, 3, 16, 8)
    W = M.simplex_grid(3, 8)
    front = M.pareto_front(ref, golds, 0.5, W)
    inner = front.betas > 0
    np.testing.assert_allclose(front.kl[inner], 0.5, rtol=1e-10)
    positive = np.all(W > 0, axis=1)  # strictly positive weights give strictly Pareto-optimal points
    assert M.pareto_mask(front.values[positive]).all()
    # κ = 0 is π_ref for every weight; a huge κ is the argmax of λ·r
    f0 = M.pareto_front(ref, golds, 0.0, W)
    np.testing.assert_allclose(f0.values, np.tile(M.dimension_values(ref, golds), (len(W), 1)), atol=1e-12)
    big = M.pareto_front(ref, golds, 1e3, W[:3])
    for w, v in zip(W[:3], big.values):
        s = np.einsum("m,mck->ck", w, golds)
        np.testing.assert_allclose(v @ w, s.max(-1).mean(), atol=1e-12)


def test_front_gap_is_zero_for_scalarized_tilts_and_positive_otherwise():
    ref, golds = _problem(5, 2, 32, 6)
    rng = np.random.default_rng(0)
    for w in ([0.3, 0.7], [1.0, 0.0]):
        s = np.einsum("m,mck->ck", np.array(w), golds)
        for beta in (0.1, 1.0):
            assert abs(M.front_gap(M.tilt_logp(ref, s, beta), ref, golds, w)) < 1e-9
    for _ in range(5):
        lp = M.log_normalize(rng.normal(size=(32, 6)))
        assert M.front_gap(lp, ref, golds, [0.5, 0.5]) > 1e-6
    # per-context weights: equal rows give the shared answer
    w = np.tile([0.4, 0.6], (32, 1))
    lp = M.log_normalize(rng.normal(size=(32, 6)))
    assert M.front_gap(lp, ref, golds, w) == pytest.approx(M.front_gap(lp, ref, golds, [0.4, 0.6]), abs=1e-10)


def _hv_inclusion_exclusion(points: np.ndarray, ref: np.ndarray) -> float:
    q = np.maximum(points - ref, 0.0)
    total = 0.0
    for r in range(1, len(q) + 1):
        for S in itertools.combinations(range(len(q)), r):
            total += (-1) ** (r + 1) * np.prod(q[list(S)].min(0))
    return total


@pytest.mark.parametrize("m", [2, 3])
def test_hypervolume_matches_inclusion_exclusion(m):
    rng = np.random.default_rng(m)
    for n in (1, 2, 5, 8):
        pts = rng.normal(size=(n, m))
        ref = rng.normal(size=m) - 1.0
        assert M.hypervolume(pts, ref) == pytest.approx(_hv_inclusion_exclusion(pts, ref), abs=1e-12)
    assert M.hypervolume([[1.0, 1.0]], [2.0, 0.0]) == 0.0  # below the reference in one coordinate: nothing


def test_dimension_checks_and_errors():
    ref, golds = _problem(1, 2, 4, 5)
    assert M.no_dimension_below_ref(ref, ref, golds)
    np.testing.assert_allclose(M.dimension_gains(ref, ref, golds), 0.0, atol=1e-15)
    with pytest.raises(ValueError, match="non-negative"):
        M.pareto_front(ref, golds, 0.1, [[-0.5, 1.5]])
    with pytest.raises(ValueError, match="weights must have shape"):
        M.pareto_front(ref, golds, 0.1, [[0.2, 0.3, 0.5]])
    with pytest.raises(ValueError, match="kl must be"):
        M.pareto_front(ref, golds, -1.0, [0.5, 0.5])
    with pytest.raises(ValueError, match="golds must have shape"):
        M.pareto_front(ref, torch.zeros(2, 2, 2, 2), 0.1, [0.5, 0.5])
    assert M.simplex_grid(3, 2).shape == (6, 3)


def test_pareto_mask_keeps_the_first_of_equal_rows_and_front_weights_are_normalized():
    pts = np.array([[1.0, 1.0], [0.0, 2.0], [1.0, 1.0], [0.5, 0.5], [0.0, 2.0]])
    assert M.pareto_mask(pts).tolist() == [True, True, False, False, False]
    # pareto_front normalizes every weight vector to sum 1: a scaled weight gives the same point, β and support
    ref, golds = _problem(2, 2, 8, 5)
    a = M.pareto_front(ref, golds, 0.3, [[2.0, 6.0]])
    b = M.pareto_front(ref, golds, 0.3, [[0.25, 0.75]])
    np.testing.assert_allclose(a.weights, [[0.25, 0.75]], atol=1e-15)
    for f in ("values", "betas", "kl", "support"):
        np.testing.assert_allclose(getattr(a, f), getattr(b, f), rtol=1e-12, err_msg=f)
    np.testing.assert_allclose(b.support, b.values @ np.array([0.25, 0.75]), rtol=1e-12)


def _tied_world(seed: int, m: int, C: int, K: int):
    """Small integer golds (ties within a context are common) and a random π_ref."""
    rng = np.random.default_rng(seed)
    ref = M.log_normalize(rng.normal(size=(C, K))).numpy()
    return ref, rng.integers(0, 3, size=(m, C, K)).astype(np.float64)


@pytest.mark.parametrize("m,C", [(2, 1), (3, 1), (2, 2)])
def test_front_points_are_non_dominated_at_every_weight_when_dimensions_tie(m, C):
    """Issue 19: at a boundary weight (λ = (1, 0)) the argmax of λ·r can tie in a context; the front must then pick,
    among the maximizers, the best of the other dimensions (lexicographically), never a dominated point. Brute force:
    every policy on a simplex grid within the KL budget; a front point is wrong if one of them is at least as good in
    every dimension and better in one."""
    K = 3
    P = _simplex_policies(K, 60 if C == 1 else 24)
    W = M.simplex_grid(m, 2)  # includes the vertices (1, 0, …) where ties bite
    n_worlds = 12 if C == 1 else 4
    for seed in range(n_worlds):
        ref, golds = _tied_world(seed, m, C, K)
        if C == 1:
            V, kl = P @ golds[:, 0, :].T, _kl_rows(P, ref[0])
        else:  # every pair of per-context policies, the budget is the mean KL
            V = ((P @ golds[:, 0, :].T)[:, None, :] + (P @ golds[:, 1, :].T)[None, :, :]).reshape(-1, m) / 2
            kl = ((_kl_rows(P, ref[0])[:, None] + _kl_rows(P, ref[1])[None, :]) / 2).reshape(-1)
        for kappa in (0.6, 10.0):
            feasible = V[kl <= kappa + 1e-12]
            front = M.pareto_front(ref, golds, kappa, W)
            assert np.all(front.kl <= kappa + 1e-9)
            for w, v in zip(W, front.values):
                better = np.all(feasible >= v - 1e-9, axis=1) & np.any(feasible > v + 1e-6, axis=1)
                assert not better.any(), (seed, kappa, w, v, feasible[better][:1])
                assert (feasible @ w).max() <= v @ w + 1e-9  # and it still maximizes λ·V


def test_lexicographic_ties_follow_the_dimension_order():
    """One context, candidate 0 and 1 tie in r_1 = 1; among them r_2 decides, a r_3 tie after that is kept fair."""
    ref = np.log(np.full((1, 4), 0.25))
    golds = np.array([[[1.0, 1.0, 1.0, 0.0]], [[0.0, 2.0, 2.0, 5.0]], [[0.0, 1.0, 3.0, 9.0]]])
    front = M.pareto_front(ref, golds, 10.0, [[1.0, 0.0, 0.0]])
    np.testing.assert_allclose(front.values[0], [1.0, 2.0, 3.0], atol=1e-12)  # candidate 2: r_1 tie, r_2 tie, best r_3
    small = M.pareto_front(ref, golds, 0.5, [[1.0, 0.0, 0.0]])  # log(4/3) ≈ 0.288 reaches the r_1 ties; 0.212 left
    assert small.values[0][0] == pytest.approx(1.0) and small.kl[0] == pytest.approx(0.5, abs=1e-9)
    assert 1.0 < small.values[0][1] < 2.0  # the rest of the budget tilts toward r_2 within the tie
