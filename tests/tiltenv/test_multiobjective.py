"""Multi-objective worlds: hidden indices at set cosines, per-dimension labels and reward models, the three weight
modes, the tasks' kwargs and errors, and the phenomena of issue 13 (conflated proxy, overoptimization in one
dimension while the aggregate rises)."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import torch

import tiltenv
import tiltenv.metrics as M
from tiltenv.worlds.multiobjective import MultiObjectiveConfig, MultiObjectiveTask, conflated_proxy

SMALL = dict(d=8, K=16, n_eval_contexts=512, n_norm_contexts=1024)


def test_directions_have_the_set_cosines_and_labels_follow_each_dimension():
    cfg = MultiObjectiveConfig(**SMALL, n_objectives=3, cosines=(-0.4, 0.3, -0.2), links=("relu", "hump", "linear"),
                               n_labels=(300, 200, 100))
    world = tiltenv.make_world(cfg)
    th = world.judge.theta_all
    G = (th @ th.T).numpy()
    np.testing.assert_allclose(G[np.triu_indices(3, 1)], [-0.4, 0.3, -0.2], atol=1e-12)
    np.testing.assert_allclose(np.diag(G), 1.0, atol=1e-12)
    task = world.task
    assert isinstance(task, MultiObjectiveTask) and task.n_objectives == 3
    assert [len(p) for p in task.dim_preferences] == [300, 200, 100] and len(task.preferences) == 600
    # each dimension's pairs are labeled by its own gold (deterministic labeler; ties — relu's flat part — by a coin)
    for i, p in enumerate(task.dim_preferences):
        g = world.judge.dim_gold_fns[i]
        ga, gb = g(p.x_a), g(p.x_b)
        strict = ga != gb
        assert torch.equal((ga > gb).float()[strict], p.label[strict])
    # the aggregate gold is w·r* and the agent sees no θ*, no gold
    np.testing.assert_allclose(world.judge.eval_gold, (world.judge.dim_gold * (1 / 3)).sum(0), atol=1e-12)
    assert task.config.seed is None and not hasattr(task, "theta_all")
    # per-dimension queries are counted, one per candidate
    q = task.budget.proxy_queries
    assert task.dim_proxy_rewards(torch.zeros(5, 4, 8)).shape == (5, 4, 3)
    assert task.budget.proxy_queries == q + 20


def test_context_type_weights():
    cfg = MultiObjectiveConfig(**SMALL, weight_mode="context", weights=((0.9, 0.1), (0.2, 0.8)), type_probs=(0.25, 0.75))
    world = tiltenv.make_world(cfg)
    j, task = world.judge, world.task
    types = task.context_type(j.eval_candidates)  # every candidate of a context carries its type
    assert torch.equal(types, types[:, :1].expand_as(types))
    assert abs(float(types[:, 0].double().mean()) - 0.75) < 0.06
    W = torch.tensor([[0.9, 0.1], [0.2, 0.8]], dtype=torch.float64)[types[:, 0]]  # (C, m)
    np.testing.assert_allclose(j.eval_gold, torch.einsum("cm,mck->ck", W, j.dim_gold), atol=1e-12)
    # the type direction is orthogonal to every gold direction: writing the type changes no gold
    e = j.extras["type_direction"]
    assert float((j.theta_all @ e).abs().max()) < 1e-12
    # the task's proxy weighs each candidate's dimensions by its context's weights
    x = j.eval_candidates[:4]
    r = task.dim_proxy_rewards(x, count=False)
    np.testing.assert_allclose(task.proxy_reward(x, count=False).double(), (r * W[:4, None, :]).sum(-1), atol=1e-5)
    # the front along per-context weights is the KL-matched frontier of the aggregate gold
    lp = M.tilt_logp(j.eval_ref_logp, j.eval_proxy, 0.3)
    assert M.front_gap(lp, j.eval_ref_logp, j.dim_gold, W) == pytest.approx(
        M.kl_matched_gap(lp, j.eval_ref_logp, j.eval_gold), abs=1e-8)


def test_hidden_weights_are_learned_from_tradeoff_preferences_and_not_public():
    cfg = MultiObjectiveConfig(**SMALL, weight_mode="hidden", weights=(0.75, 0.25), n_tradeoff_labels=3000, cosines=0.0)
    world = tiltenv.make_world(cfg)
    task = world.task
    assert task.weights_learned and task.config.weights is None
    with pytest.raises(ValueError, match="not public"):
        task.config.weight_matrix
    w_hat = task.weights[0]
    assert abs(w_hat[0] - 0.75) < 0.08, w_hat  # measured: see the issue-13 note
    assert len(task.tradeoff_preferences) == 3000


def test_conflated_proxy_over_serves_the_dimension_with_more_labels():
    """One model on the mixed pairs (4x the pairs for dimension 0) vs the weighted aggregate of per-dimension
    models (uniform weights): at the same KL the conflated tilt gains far more in dimension 0 and loses
    dimension 1, the aggregate's serves both."""
    cfg = MultiObjectiveConfig(d=8, K=32, cosines=-0.5, n_labels=(2000, 500), n_eval_contexts=1024, n_norm_contexts=2048)
    world = tiltenv.make_world(cfg)
    j = world.judge
    ref = j.eval_ref_logp
    conf = conflated_proxy(world)
    cos = [float(torch.nn.functional.cosine_similarity(conf.w, j.theta_all[i], dim=0)) for i in range(2)]
    assert cos[0] > 0.8 and cos[1] < 0, cos
    gains = {}
    for name, r in (("aggregate", j.eval_proxy), ("conflated", conf(j.eval_candidates).double())):
        beta = M.pareto_front(ref, r[None], 1.0, [[1.0]]).betas[0]  # the tilt spending KL = 1
        gains[name] = M.dimension_gains(M.tilt_logp(ref, r, beta), ref, j.dim_gold)
    a, c = gains["aggregate"], gains["conflated"]
    assert c[0] > 2 * a[0] and c[1] < 0 < a[1], gains
    assert abs(a[0] - a[1]) < 0.2 * a.mean()
    # the conflated world: the task's proxy is that one model
    w2 = tiltenv.make_world(cfg.replace(aggregate="conflated"))
    np.testing.assert_allclose(w2.judge.eval_proxy, conf(j.eval_candidates).double(), atol=1e-6)


def test_overoptimization_in_one_dimension_while_the_aggregate_rises():
    """Linear dimension 0, hump dimension 1 (cos 0.8), weights (0.6, 0.4), linear reward models: along the tilt of
    the aggregate proxy, dimension 1's gold peaks and falls while the aggregate gold keeps rising."""
    cfg = MultiObjectiveConfig(d=8, K=256, cosines=0.8, links=("linear", "hump"), weights=(0.6, 0.4), n_labels=2000,
                               n_eval_contexts=1024, n_norm_contexts=2048)
    world = tiltenv.make_world(cfg)
    j = world.judge
    ref = j.eval_ref_logp
    rows = []
    for b in (1.0, 0.5, 0.3, 0.2, 0.1, 0.05, 0.02):
        lp = M.tilt_logp(ref, j.eval_proxy, b)
        rows.append((M.kl_divergence(lp, ref), *M.dimension_values(lp, j.dim_gold), M.policy_value(lp, j.eval_gold)))
    kl, v0, v1, agg = map(np.array, zip(*rows))
    assert np.all(np.diff(kl) > 0) and np.all(np.diff(agg) > 0) and np.all(np.diff(v0) > 0)
    rep = M.overoptimization(kl, v1, None, tol=0.05)
    assert rep.overoptimized and rep.drop > 0.1, (v1, rep.drop)


def test_gym_make_records_every_parameter_and_errors_are_clear():
    env = gym.make("tiltenv/MultiObjective-v0", **SMALL, n_objectives=3, cosines=-0.2, n_labels=(100, 200, 300))
    kw = env.spec.kwargs
    names = [f for f in MultiObjectiveConfig.__dataclass_fields__]
    assert set(names) <= set(kw) and kw["n_labels"] == [100, 200, 300] and kw["cosines"] == [-0.2] * 3
    hh = gym.spec("tiltenv/HelpfulHarmless-v0")
    assert hh.kwargs["n_objectives"] == 2 and hh.kwargs["cosines"] == -0.5
    obs, _ = env.reset(seed=0)
    assert obs["candidates"].shape == (16, 8)
    res = tiltenv.evaluate(lambda c, r: r, env)
    assert {"gold_value_dim0", "gold_gain_dim2", "value_gap_dim1", "min_dim_gain", "dims_at_or_above_ref"} <= set(res)
    venv = gym.make_vec("tiltenv/HelpfulHarmless-v0", num_envs=4, **SMALL, n_labels=100)
    venv.reset(seed=0)
    bad = [
        (dict(cosines=-0.9, n_objectives=3), "not positive semi-definite"),
        (dict(cosines=(0.1, 0.2), n_objectives=2), "m\\(m-1\\)/2 = 1"),
        (dict(weights=(0.5, 0.6)), "sum to 1"),
        (dict(weight_mode="context", weights=((1, 0), (0, 1)), type_probs=None), "needs weights .* and type_probs"),
        (dict(weight_mode="hidden"), "n_tradeoff_labels > 0"),
        (dict(n_objectives=3, d=3), "d must be at least"),
        (dict(aggregate="conflated", proxy="gold"), "learns from no labels"),
        (dict(links=("relu", "humpp")), "Did you mean 'hump'"),
        (dict(n_labels=(10, 20, 30)), "one per objective"),
        (dict(weight_mode="fixed", type_probs=(0.5, 0.5)), "only for weight_mode='context'"),
    ]
    for kwargs, msg in bad:
        with pytest.raises((ValueError, TypeError), match=msg):
            gym.make("tiltenv/MultiObjective-v0", **{**SMALL, **kwargs})
    with pytest.raises(TypeError, match="Did you mean 'cosines'"):
        gym.make("tiltenv/HelpfulHarmless-v0", cosine=0.1)


def test_every_per_dimension_metric_explains_itself():
    from tiltenv.glossary import entry, legend

    for name in ("gold_value_dim0", "gold_gain_dim2", "value_gap_dim1", "min_dim_gain", "dims_at_or_above_ref"):
        assert entry(name) is not None, name
    assert "dimension 2" in legend(["gold_gain_dim2"]) and "dimension i" not in legend(["gold_gain_dim2"])
    assert entry("gold_gain_dimx") is None and legend(["no_such_metric"]) == ""


def test_per_dimension_metrics_are_exact_for_a_conflicting_tilt():
    """cos −0.8: tilting toward dimension 0 raises its gold and lowers dimension 1's; the per-dimension metrics are
    the exact figures of each dimension (values and J*_β − J_β gaps recomputed here from judge.dim_gold)."""
    world = tiltenv.make_world(MultiObjectiveConfig(**SMALL, cosines=-0.8, links=("linear", "linear"), n_labels=50,
                                                    proxy="gold"))
    j = world.judge
    ref, beta = j.eval_ref_logp, 0.3
    lp = M.tilt_logp(ref, j.dim_gold[0], beta)
    out = j.extra_metrics(lp, beta)
    gains = []
    for i in range(2):
        v, v0 = M.policy_value(lp, j.dim_gold[i]), M.policy_value(ref, j.dim_gold[i])
        assert out[f"gold_value_dim{i}"] == pytest.approx(v, abs=1e-12)
        assert out[f"gold_gain_dim{i}"] == pytest.approx(v - v0, abs=1e-12)
        assert out[f"value_gap_dim{i}"] == pytest.approx(M.value_gap(lp, ref, j.dim_gold[i], beta), abs=1e-12)
        gains.append(v - v0)
    assert gains[0] > 0.1 and gains[1] < -0.1  # the conflict
    assert out["value_gap_dim0"] == pytest.approx(0.0, abs=1e-9) and out["value_gap_dim1"] > 0.1  # optimal for dim 0 only
    assert out["min_dim_gain"] == pytest.approx(min(gains)) and out["dims_at_or_above_ref"] == 0.0
    assert j.extra_metrics(ref, beta)["dims_at_or_above_ref"] == 1.0  # π_ref itself: every gain is 0


def test_tradeoff_weights_clip_a_negative_component_to_zero():
    """fit_tradeoff_weights: BT on per-dimension reward differences, v clipped at 0, normalized to the simplex.
    Labels that reward dimension 0 and punish dimension 1 give v_1 < 0, hence the weights (1, 0)."""
    from tiltenv.rewards.labels import PreferenceData
    from tiltenv.worlds.multiobjective import fit_tradeoff_weights
    from tiltenv.rewards.proxies import LinearProxy

    g = torch.Generator().manual_seed(0)
    xa, xb = torch.randn(4000, 3, generator=g), torch.randn(4000, 3, generator=g)
    d = xa - xb
    label = (d[:, 0] - 0.5 * d[:, 1] > 0).float()
    z = torch.zeros(4000)
    dims = [LinearProxy(torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)),
            LinearProxy(torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64))]
    np.testing.assert_allclose(fit_tradeoff_weights(PreferenceData(xa, xb, label, z, z), dims), [1.0, 0.0], atol=1e-12)
    both = (d[:, 0] + 3 * d[:, 1] > 0).float()  # both positive: weights ∝ (1, 3)
    np.testing.assert_allclose(fit_tradeoff_weights(PreferenceData(xa, xb, both, z, z), dims), [0.25, 0.75], atol=0.02)
    with pytest.warns(UserWarning, match="no positive weight"):
        w = fit_tradeoff_weights(PreferenceData(xa, xb, 1 - both, z, z), dims)
    np.testing.assert_allclose(w, [0.5, 0.5])


def test_reference_direction_is_at_ref_angle_from_the_first_dimension():
    # u = cos α θ*_1 + sin α θ⊥ (θ⊥ ⟂ every θ*_i); public only when η ≠ 0
    world = tiltenv.make_world(MultiObjectiveConfig(**SMALL, n_objectives=3, cosines=-0.3, ref_eta=1.0, ref_angle=60.0,
                                                    n_labels=50, proxy="gold"))
    j = world.judge
    u = world.task.sampler.ref_direction.double()
    th = j.theta_all
    a = np.radians(60.0)
    torch.testing.assert_close(u, math.cos(a) * th[0] + math.sin(a) * j.extras["theta_perp"], rtol=0, atol=1e-6)
    assert float((th @ j.extras["theta_perp"]).abs().max()) < 1e-12


def test_context_type_is_clamped_to_the_valid_types():
    cfg = MultiObjectiveConfig(**SMALL, weight_mode="context", weights=((0.9, 0.1), (0.2, 0.8)), type_probs=(0.5, 0.5),
                               n_labels=50, proxy="gold")
    world = tiltenv.make_world(cfg)
    e = world.judge.extras["type_direction"].float()
    x = torch.stack([-3.0 * e, 0.4 * e, 0.6 * e, 7.0 * e])
    assert world.task.context_type(x).tolist() == [0, 0, 1, 1]
    assert world.task.weights_of(x).shape == (4, 2)


# --------------------------------------------------------------------------------------------------
# the hidden gold family (issue 17 item 3): the test split draws each dimension's member
# --------------------------------------------------------------------------------------------------

_PIN = dict(d=6, K=8, links=["relu", "hump"], gold_scales=[1.0, 2.0], cosines=-0.5, n_labels=(200, 100), label_temp=0.1,
            flip_rate=0.05, n_tradeoff_labels=50, weight_mode="hidden", n_eval_contexts=64, n_norm_contexts=64, seed=3)


def test_a_dev_world_is_bit_identical_to_the_one_before_gold_families():
    """Values pinned on the code before ``gold_family`` existed (the ``family`` stream is appended, the digest of a
    ``gold_family=False`` config leaves the field out): published multi-objective figures stand."""
    cfg = MultiObjectiveConfig(**_PIN)
    world = tiltenv.make_world(cfg)
    assert cfg.digest() == "4cff3a60e042609906b8"
    assert float(world.judge.dim_gold.sum()) == 28.950316781527512
    assert float(world.judge.dim_gold[1, 0, 0]) == -1.3911851358320992
    assert [int(p.label.sum()) for p in world.task.dim_preferences] == [102, 46]
    assert int(world.task.tradeoff_preferences.label.sum()) == 23
    mixed = world.task.preferences  # the "mix" stream's shuffle
    assert float((mixed.x_a[:, 0].double() * torch.arange(len(mixed))).sum()) == -256.4931927144062
    assert float(world.judge.eval_proxy.sum()) == 9.117679634364322
    assert all(m.params == {} for m in world.judge.extras["members"])


def test_gold_family_draws_each_dimensions_member_and_the_world_uses_it():
    from tiltenv.rewards.families import family_of_link

    cfg = MultiObjectiveConfig(**{**_PIN, "gold_family": True})
    members = cfg.members()
    assert [m.base for m in members] == ["relu", "hump"]
    assert [f.name for f in cfg.families()] == [family_of_link("relu").name, "hump"]
    assert all(m.params for m in members) and members[0].params.keys() != members[1].params.keys()
    assert cfg.members() == members  # from the seed: the same draw again
    world = tiltenv.make_world(cfg)
    assert world.judge.extras["members"] == members
    z = world.judge.eval_candidates.to(torch.float64) @ world.judge.theta_all.T  # (C, K, m)
    for i, m in enumerate(members):
        torch.testing.assert_close(world.judge.dim_gold[i], m.gold_scale * m.link(z[..., i]), rtol=0, atol=1e-12)
        assert not torch.allclose(world.judge.dim_gold[i], tiltenv.make_world(cfg.replace(gold_family=False))
                                  .judge.dim_gold[i])  # rebuilding from the family's centre is not the scored world
    other = cfg.replace(seed=4).members()
    assert all(a.params != b.params and a.gold_scale != b.gold_scale for a, b in zip(members, other))


def test_gold_familys_public_config_names_the_families_never_a_member_or_seed():
    a, b = (MultiObjectiveConfig(**{**_PIN, "gold_family": True, "seed": s}) for s in (3, 4))
    assert a.members() != b.members()
    assert a.public() == b.public() and a.public().seed is None and a.public().gold_family is True
    assert [f.name for f in a.public().families()] == [f.name for f in a.families()]
    with pytest.raises(ValueError, match="hides its gold members"):
        a.public().members()
    assert "gold_family" in a.to_dict() and a.digest() != a.replace(gold_family=False).digest()


def test_gold_family_must_be_a_bool():
    from tiltenv._validation import ParameterTypeError

    with pytest.raises(ParameterTypeError, match="gold_family must be True or False"):
        MultiObjectiveConfig(**{**_PIN, "gold_family": "yes"})
