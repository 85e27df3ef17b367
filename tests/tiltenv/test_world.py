"""The world: seeding, independent streams, judge/public separation, proxy normalization, validation."""

from __future__ import annotations

import math
import pickle

import pytest
import torch

import tiltenv

from tiltenv import TabularConfig, TaskConfig, make_world
from tiltenv.worlds.world import seed_streams

SMALL = dict(d=4, K=8, n_labels=300, n_eval_contexts=256, n_norm_contexts=256)


def test_same_seed_is_bit_identical_and_seeds_differ():
    a = make_world(TaskConfig(**SMALL, seed=3), fresh=True)
    b = make_world(TaskConfig(**SMALL, seed=3), fresh=True)
    c = make_world(TaskConfig(**SMALL, seed=4), fresh=True)
    assert torch.equal(a.judge.theta, b.judge.theta)
    assert torch.equal(a.judge.eval_candidates, b.judge.eval_candidates)
    assert torch.equal(a.judge.eval_proxy, b.judge.eval_proxy)
    assert torch.equal(a.task.preferences.label, b.task.preferences.label)
    assert not torch.equal(a.judge.theta, c.judge.theta)


def test_streams_are_independent():
    # Changing the label budget must not move θ*, the evaluation contexts or the normalization sample.
    a = make_world(TaskConfig(**{**SMALL, "n_labels": 300}))
    b = make_world(TaskConfig(**{**SMALL, "n_labels": 900}))
    assert torch.equal(a.judge.theta, b.judge.theta)
    assert torch.equal(a.judge.eval_candidates, b.judge.eval_candidates)
    assert torch.equal(a.task.preferences.x_a[:300], b.task.preferences.x_a[:300])
    assert len(set(seed_streams(0).values())) == len(seed_streams(0))
    base = make_world(TaskConfig(**SMALL))
    for change in (dict(flip_rate=0.2), dict(label_temp=0.5), dict(proxy="gold"), dict(n_norm_contexts=128),
                   dict(n_eval_contexts=128), dict(beta=0.1)):
        other = make_world(TaskConfig(**{**SMALL, **change}))
        assert torch.equal(base.judge.theta, other.judge.theta), change
        n = min(len(base.judge.eval_candidates), len(other.judge.eval_candidates))
        assert torch.equal(base.judge.eval_candidates[:n], other.judge.eval_candidates[:n]), change
        if other.task.preferences is not None:  # the same pairs, whatever the labeler does with them
            assert torch.equal(base.task.preferences.x_a, other.task.preferences.x_a), change


def test_public_task_carries_no_gold():
    world = make_world(TaskConfig(**SMALL))
    blob = pickle.dumps(world.task)
    theta = world.judge.theta
    # θ* (float64 bytes) must not be anywhere in what an agent receives.
    assert theta.numpy().tobytes() not in blob
    assert theta.to(torch.float32).numpy().tobytes() not in blob
    assert not any(isinstance(v, torch.Tensor) and v.shape == theta.shape and torch.allclose(v.double(), theta)
                   for v in vars(world.task).values())
    # Nor anything it can be rebuilt from: the public config has no seed ...
    assert world.task.config.seed is None and pickle.loads(blob).config.seed is None
    with pytest.raises(ValueError, match="public view"):
        make_world(world.task.config)
    # ... and with a uniform π_ref (η = 0) the reference direction u = cos α θ* + sin α θ⊥ is not shown.
    assert not world.task.sampler.ref_direction.any()
    restored = pickle.loads(blob)
    cand, _ = restored.sample_contexts(2, seed=1)
    assert torch.equal(restored.proxy_reward(cand), world.task.proxy_reward(cand))


def test_proxy_is_normalized_under_ref_pooled_not_per_context():
    world = make_world(TaskConfig(d=8, K=16, ref_eta=1.5, n_labels=500, n_eval_contexts=4096))
    p = world.judge.eval_ref_logp.double().exp()
    r = world.judge.eval_proxy
    mean = float((p * r).sum(-1).mean())
    var = float((p * (r - mean) ** 2).sum(-1).mean())
    assert abs(mean) < 0.05 and abs(var - 1) < 0.05  # held-out contexts: sampling error only
    per_context_var = (p * (r - (p * r).sum(-1, keepdim=True)) ** 2).sum(-1)
    assert float(per_context_var.std()) > 0.05  # per-context variances differ (not normalized away)


def test_reference_policy_tilts_along_public_direction():
    cfg = TaskConfig(d=8, K=16, ref_eta=2.0, ref_angle=0.0, n_labels=200, n_eval_contexts=512)
    world = make_world(cfg)
    # angle 0: u = θ*, so π_ref prefers candidates with larger <θ*, x>.
    z = world.judge.eval_candidates.double() @ world.judge.theta
    p = world.judge.eval_ref_logp.double().exp()
    assert float((p * z).sum(-1).mean()) > 1.0
    assert torch.allclose(world.task.sampler.ref_direction.double(), world.judge.theta, atol=1e-6)


def test_budget_counts_queries_and_cached_worlds_have_separate_budgets():
    w1, w2 = make_world(TaskConfig(**SMALL)), make_world(TaskConfig(**SMALL))
    cand, _ = w1.task.sample_contexts(5, seed=0)
    w1.task.proxy_reward(cand)
    assert w1.task.budget.proxy_queries == 5 * SMALL["K"]
    assert w2.task.budget.proxy_queries == 0


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        (dict(d=0), r"d must be in \[1, 100000\] \(got 0\)"),
        (dict(link="hmp"), r"link must be one of .*Did you mean 'hump'"),
        (dict(prompt_corr=1.0), r"prompt_corr must be in \[0, 1\) \(got 1\)"),
        (dict(flip_rate=0.7), r"flip_rate must be in \[0, 0.5\)"),
        (dict(beta=0), r"beta must be in \(0, inf\)"),
        (dict(label_kind="pointwize"), r"label_kind must be one of .*Did you mean 'pointwise'"),
        (dict(proxy="lineer"), r"proxy must be one of .*Did you mean 'linear'"),
        (dict(gold_scale=float("nan")), r"gold_scale must be a finite number"),
        (dict(K="16"), r"K must be an integer \(got '16'"),
    ],
)
def test_invalid_parameters_name_field_value_and_valid_range(kwargs, pattern):
    with pytest.raises((ValueError, TypeError), match=pattern):
        TaskConfig(**kwargs)


def test_tabular_validation_and_world():
    with pytest.raises(ValueError, match=r"ref_probs must be non-negative and sum to 1"):
        TabularConfig(ref_probs=(0.5, 0.5, 0.5, 0.5, 0.5))
    with pytest.raises(ValueError, match=r"gold has 5 arms but proxy has 3"):
        TabularConfig(proxy=(1, 2, 3))
    cfg = TabularConfig(gold=(0, 1, 2), proxy=(2, 1, 0), ref_probs=(0.5, 0.25, 0.25), beta=0.5)
    world = make_world(cfg)
    assert torch.equal(world.judge.eval_gold[0], torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64))
    assert torch.equal(world.judge.eval_proxy[0], torch.tensor([2.0, 1.0, 0.0], dtype=torch.float64))


def test_tabular_public_view_hides_gold_and_ref_logp_follows_the_arms():
    world = make_world(TabularConfig(gold=(0, 1, 2), proxy=(2, 1, 0), ref_probs=(0.6, 0.3, 0.1)))
    assert world.task.config.gold is None
    feats = torch.eye(3)
    lp = world.task.ref_logp(feats[[2, 0, 1]].unsqueeze(0))
    assert torch.allclose(lp.exp(), torch.tensor([[0.1, 0.6, 0.3]]), atol=1e-6)
    sub = world.task.ref_logp(feats[[0, 1]].unsqueeze(0))  # a subset of arms: π_ref renormalized over it
    assert torch.allclose(sub.exp(), torch.tensor([[2 / 3, 1 / 3]]), atol=1e-6)


def test_cached_worlds_do_not_share_a_mutable_proxy():
    w1, w2 = make_world(TaskConfig(**SMALL)), make_world(TaskConfig(**SMALL))
    cand, _ = w1.task.sample_contexts(3, seed=0)
    before = w2.task.proxy_reward(cand)
    w1.task.proxy.scale.mul_(10)
    assert torch.equal(w2.task.proxy_reward(cand), before)
    assert torch.equal(make_world(TaskConfig(**SMALL)).task.proxy_reward(cand), before)


@pytest.mark.parametrize("call, pattern", [
    (lambda t: t.sample_contexts(-1), r"n must be in \[1, inf\) \(got -1\)"),
    (lambda t: t.sample_contexts(2.5), r"n must be an integer"),
    (lambda t: t.sample_contexts(2, seed="a"), r"seed must be an integer"),
    (lambda t: t.ref_logp(torch.zeros(2, 8, 5)), r"shape \(\.\.\., K, d=4\)"),
    (lambda t: t.proxy_reward(torch.zeros(2, 5)), r"last dimension d=4"),
])
def test_public_task_rejects_bad_calls_without_touching_counters(call, pattern):
    task = make_world(TaskConfig(**SMALL)).task
    with pytest.raises((ValueError, TypeError), match=pattern):
        call(task)
    assert task.budget.contexts_sampled == 0 and task.budget.proxy_queries == 0


def test_oversized_tasks_are_refused_before_allocating():
    with pytest.raises(ValueError, match=r"n_eval_contexts 4096\) × K 1000000 × d 16 .* more than the 8.00 GiB"):
        TaskConfig(K=1_000_000, d=16)
    # issue 9: three batches of 6.5 GB each passed a one-batch check and died in the allocator
    big = dict(K=1000, d=400)  # one batch of 4000 contexts: 6.4 GB (< 8 GiB); all three: 19 GB
    with pytest.raises(ValueError, match=r"n_labels 4000 \+ n_norm_contexts 4000 \+ n_eval_contexts 4000"):
        TaskConfig(**big, n_labels=4000, n_norm_contexts=4000, n_eval_contexts=4000)
    import gymnasium as gym

    with pytest.raises(ValueError, match=r"num_envs=100000000\).*lower num_envs"):
        gym.make_vec("tiltenv/SingleIndex-v0", num_envs=10**8, **SMALL)
    task = make_world(TaskConfig(**SMALL)).task
    with pytest.raises(ValueError, match=r"sample_contexts\(1000000000\).*n 1000000000 × K 8"):
        task.sample_contexts(10**9)
    from baselines import make_agent

    with pytest.raises(ValueError, match=r"one REINFORCE update .*batch_size 100000000"):
        make_agent("reinforce", batch_size=10**8, device="cpu").fit(task)
    with pytest.raises(TypeError, match="proxy_kwargs must be a mapping"):
        TaskConfig(proxy_kwargs=[1, 2])


def test_preference_ref_logps_belong_to_their_own_candidates_with_a_tilted_ref():
    # π_ref ∝ exp(η <u, x>): within a context log π_ref(a) − log π_ref(b) = η <u, x_a − x_b>, whatever the
    # normalizer. A swap of ref_logp_a / ref_logp_b flips the sign (η = 0 could not tell them apart).
    eta = 1.5
    world = tiltenv.make_world(tiltenv.TaskConfig(d=4, K=8, n_labels=500, ref_eta=eta, n_eval_contexts=16))
    p, u = world.task.preferences, world.task.sampler.ref_direction.double()
    got = (p.ref_logp_a - p.ref_logp_b).double()
    want = eta * (p.x_a.double() - p.x_b.double()) @ u
    torch.testing.assert_close(got, want, rtol=0, atol=1e-4)
    assert float(want.abs().mean()) > 0.5


def test_measured_flip_rate_matches_flip_rate():
    # deterministic labeler (τ = 0): a label disagreeing with the gold comparison is a flip
    n, eps = 20_000, 0.25
    world = tiltenv.make_world(tiltenv.TaskConfig(d=4, K=8, n_labels=n, flip_rate=eps, label_temp=0.0,
                                                  n_eval_contexts=16))
    p = world.task.preferences
    delta = world.judge.gold(p.x_a) - world.judge.gold(p.x_b)
    clean = delta != 0
    flipped = (p.label.bool() != (delta > 0))[clean].double().mean().item()
    se = math.sqrt(eps * (1 - eps) / int(clean.sum()))
    assert abs(flipped - eps) < 4 * se, (flipped, eps, se)


# --------------------------------------------------------------------------- label simulation, sampler (mutation probe)


def test_sample_from_ref_draws_pi_ref_then_without_replacement():
    # Gumbel top-2 on fixed π_ref: column 0 is an exact π_ref draw; column 1 is the second draw without
    # replacement, P(second = j) = Σ_{i≠j} p_i p_j / (1 − p_i). Tolerance: 5 binomial standard errors.
    from tiltenv.rewards.labels import sample_from_ref

    n = 100_000
    p = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)
    idx = sample_from_ref(p.log().expand(n, 4), 2, torch.Generator().manual_seed(0))
    assert bool((idx[:, 0] != idx[:, 1]).all())
    second = torch.stack([sum(p[i] * p[j] / (1 - p[i]) for i in range(4) if i != j) for j in range(4)])
    for col, want in ((0, p), (1, second)):
        freq = torch.bincount(idx[:, col], minlength=4).double() / n
        se = (want * (1 - want) / n).sqrt()
        assert bool(((freq - want).abs() < 5 * se).all()), (col, freq, want)


def _tilted_contexts(n, K=6, d=3, eta=1.5, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, K, d, generator=g)
    u = torch.tensor([1.0, 0.0, 0.0])
    return x, torch.log_softmax(eta * (x @ u), -1)


def _row_index(candidates, x):
    """Index k with candidates[i, k] == x[i] (exactly one per row)."""
    hit = (candidates == x[:, None, :]).all(-1)
    assert bool((hit.sum(-1) == 1).all())
    return hit.long().argmax(-1)


def test_pointwise_labels_are_utility_plus_gaussian_noise_with_their_own_ref_logp():
    from tiltenv.rewards.labels import make_pointwise

    n, noise = 20_000, 0.5
    cand, ref = _tilted_contexts(n)
    pts = make_pointwise(cand, ref, lambda x: x[:, 0].double(), noise=noise, generator=torch.Generator().manual_seed(1))
    k = _row_index(cand, pts.x)
    # the reported log π_ref is the chosen candidate's own, in its own context (π_ref is tilted: not constant)
    torch.testing.assert_close(pts.ref_logp, ref[torch.arange(n), k], rtol=0, atol=0)
    # y = h(x) + noise·N(0, 1): residual mean 0 and std `noise` (5 standard errors; SE(std) ≈ noise/√(2n))
    res = pts.y.double() - pts.x[:, 0].double()
    assert abs(float(res.mean())) < 5 * noise / math.sqrt(n)
    assert abs(float(res.std()) - noise) < 5 * noise / math.sqrt(2 * n)
    # the candidate is one π_ref draw: E[π_ref(k)] of the chosen = Σ_k π_ref(k)² per context (on average)
    chosen_p = ref[torch.arange(n), k].double().exp()
    want = (ref.double().exp() ** 2).sum(-1)
    assert abs(float(chosen_p.mean() - want.mean())) < 5 * float(chosen_p.std()) / math.sqrt(n)


def test_deterministic_labeler_breaks_ties_with_a_fair_coin():
    # τ = 0: a strict utility difference decides the label; an exact tie (frequent for a step utility) is a
    # fair coin. n = 20 000 pairs, ~half of them tied: tolerance 5 binomial standard errors.
    from tiltenv.rewards.labels import make_preferences

    n = 20_000
    cand, ref = _tilted_contexts(n, eta=0.0)
    step = lambda x: (x[:, 0] > 0).double()  # noqa: E731
    prefs = make_preferences(cand, ref, step, temperature=0.0, flip_rate=0.0, generator=torch.Generator().manual_seed(2))
    delta = step(prefs.x_a) - step(prefs.x_b)
    strict = delta != 0
    assert bool((prefs.label[strict].bool() == (delta[strict] > 0)).all())
    ties = prefs.label[~strict].double()
    assert int(ties.numel()) > 5000
    assert abs(float(ties.mean()) - 0.5) < 5 * math.sqrt(0.25 / ties.numel()), float(ties.mean())


def test_prompt_correlation_keeps_unit_variance_and_sets_the_within_context_correlation():
    # x_k = √ρ c + √(1−ρ) ε_k: every coordinate is N(0, 1) and two candidates of one context correlate ρ.
    # n·d = 60 000 independent pairs of coordinates: tolerances 5 standard errors (≈ √(2/N), √((1+ρ²)/N)).
    from tiltenv.worlds.world import ContextSampler

    rho, n, d = 0.6, 20_000, 3
    s = ContextSampler(d, 4, rho, 0.0, torch.zeros(d))
    x, ref = s.sample(n, torch.Generator().manual_seed(0))
    a, b = x[:, 0].double().reshape(-1), x[:, 1].double().reshape(-1)
    N = a.numel()
    assert abs(float(a.var()) - 1) < 5 * math.sqrt(2 / N)
    assert abs(float((a * b).mean()) - rho) < 5 * math.sqrt((1 + rho**2) / N)
    assert torch.allclose(ref.exp().sum(-1), torch.ones(n))


def test_gold_scale_multiplies_the_gold():
    # r*(x) = a · σ*(<θ*, x>): the same seed and d give the same θ* and contexts, the gold scales by a.
    base = dict(d=4, K=8, n_labels=50, n_eval_contexts=64, n_norm_contexts=64, link="relu", proxy="gold")
    one = make_world(TaskConfig(**base))
    three = make_world(TaskConfig(**base, gold_scale=3.0))
    assert torch.equal(one.judge.eval_candidates, three.judge.eval_candidates)
    torch.testing.assert_close(three.judge.eval_gold, 3.0 * one.judge.eval_gold, rtol=1e-12, atol=1e-12)
    z = one.judge.eval_candidates.double() @ one.judge.theta
    torch.testing.assert_close(three.judge.eval_gold, 3.0 * tiltenv.rewards.links.get_link("relu")(z), rtol=1e-12, atol=1e-12)
