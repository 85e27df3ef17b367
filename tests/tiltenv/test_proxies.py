"""Learned and controlled-error proxies: registry, options, learning curves, determinism, tasks, ensembles."""

from __future__ import annotations

import dataclasses
import math

import gymnasium as gym
import pytest
import torch

import tiltenv  # noqa: F401  (registers the env ids)
from tiltenv import TASKS, TaskConfig, make_world
from tiltenv.lifecycle.diagnostics import best_of_n_drop, ensemble_disagreement, index_angle, proxy_report, proxy_values
from tiltenv.rewards.proxies import PROXIES, LinearProxy
from tiltenv.rewards.reward_models import AGGREGATORS, EnsembleProxy, aggregate

SMALL = dict(d=8, K=8, n_eval_contexts=512, n_norm_contexts=512)
NS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


def test_registry_has_every_kind_with_documented_options():
    assert {"gold", "linear", "mlp", "two_stage", "ensemble", "parametric"} <= set(PROXIES)
    for name in ("mlp", "two_stage", "ensemble", "parametric"):
        spec = PROXIES[name]
        for f in dataclasses.fields(spec.options):
            assert f.metadata.get("help"), f"{name}.{f.name} has no help text"
    # Trained kinds are cacheable; instant ones are not.
    assert {n for n, s in PROXIES.items() if s.skeleton is not None} == {"mlp", "two_stage", "ensemble"}


@pytest.mark.parametrize(
    "proxy, kwargs, exc, match",
    [
        ("mlp", {"widht": 8}, TypeError, r"unknown option 'widht' for proxy 'mlp'.*Did you mean 'width'"),
        ("mlp", {"activation": "relux"}, ValueError, r"proxy_kwargs\['activation'\] must be one of .*'relu'.*Did you mean 'relu'"),
        ("mlp", {"epochs": 0}, ValueError, r"proxy_kwargs\['epochs'\] must be in \[1, inf\)"),
        ("mlp", {"device": "tpu"}, ValueError, r"proxy_kwargs\['device'\] must be one of \['auto', 'cpu', 'cuda'\]"),
        ("two_stage", {"weighting": "labels"}, ValueError, r"proxy_kwargs\['weighting'\] must be one of \['label', 'surrogate', 'none'\].*Did you mean 'label'"),
        ("two_stage", {"beta1": 0}, ValueError, r"proxy_kwargs\['beta1'\] must be in \(0, inf"),
        ("ensemble", {"aggregator": "wco"}, ValueError, r"proxy_kwargs\['aggregator'\] must be one of \['mean', 'min', 'uwo', 'median', 'mean_minus_std'\]"),
        ("ensemble", {"diversity": "boostrap"}, ValueError, r"Did you mean 'bootstrap'"),
        ("ensemble", {"member": "gold"}, ValueError, r"proxy_kwargs\['member'\] must be one of \['mlp', 'two_stage', 'linear'\]"),
        ("ensemble", {"member_kwargs": {"widht": 3}}, TypeError, r"member_kwargs.*unknown option 'widht' for proxy 'mlp'"),
        ("ensemble", {"member": "linear", "diversity": "init"}, ValueError, r"identical members for member='linear'"),
        ("ensemble", {"k": 1}, ValueError, r"proxy_kwargs\['k'\] must be in \[2, 1024\]"),
        ("parametric", {"angle": 200}, ValueError, r"proxy_kwargs\['angle'\] must be in \[0, 180\]"),
        ("parametric", {"link": "humpp"}, ValueError, r"Did you mean 'hump'"),
        ("parametric", {"pockets": [(1.0, 0.5)]}, TypeError, r"pockets'\]\[0\] must be a \(center, width, height\) triple"),
        ("parametric", {"pockets": [(1.0, -0.5, 1.0)]}, ValueError, r"pockets'\]\[0\] width must be in \(0, inf\)"),
    ],
)
def test_bad_options_name_the_option_and_the_valid_choices(proxy, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        TaskConfig(proxy=proxy, proxy_kwargs=kwargs)
    with pytest.raises(exc, match=match):
        gym.make("tiltenv/SingleIndex-v0", proxy=proxy, proxy_kwargs=kwargs)


def test_more_labels_give_a_better_proxy():
    # mlp on relu gold (d = 16): measured gold correlation 0.899 / 0.981 / 0.996 (sd ≤ 0.013 over seeds).
    corr = []
    for n in (250, 1000, 4000):
        world = make_world(TaskConfig(n_labels=n, proxy="mlp", n_eval_contexts=1024, n_norm_contexts=1024))
        corr.append(proxy_report(world)["gold_corr_ref"])
    assert corr[0] + 0.03 < corr[1] < corr[2] + 0.005, corr
    assert corr[0] + 0.05 < corr[2], corr


def test_flips_lower_accuracy():
    acc = [proxy_report(make_world(TaskConfig(n_labels=1000, flip_rate=f, proxy="mlp", n_eval_contexts=1024)))["acc_ref"]
           for f in (0.0, 0.25, 0.4)]
    assert acc[0] > acc[1] + 0.05 > acc[2] + 0.05, acc


@pytest.mark.parametrize("angle", [0.0, 30.0, 60.0, 90.0, 135.0])
def test_parametric_measured_angle_matches_requested(angle):
    world = make_world(TaskConfig(**SMALL, link="relu", proxy="parametric", proxy_kwargs={"angle": angle}))
    measured = index_angle(world.task.proxy, world.judge.theta, n=100_000)
    assert abs(measured - angle) < 1.5, (measured, angle)


def test_parametric_link_distortion_and_pockets():
    base = make_world(TaskConfig(**SMALL, link="hump", proxy="parametric")).task.proxy
    assert proxy_report(make_world(TaskConfig(**SMALL, link="hump", proxy="parametric")))["gold_corr_ref"] > 0.999
    mix = make_world(TaskConfig(**SMALL, link="hump", proxy="parametric", proxy_kwargs={"link_mix": 2.0})).task.proxy
    pocket = make_world(TaskConfig(**SMALL, link="hump", proxy="parametric",
                                   proxy_kwargs={"pockets": [(3.0, 0.25, 5.0)]})).task.proxy
    w = base.w
    s = torch.linspace(-4, 4, 81, dtype=torch.float64)
    x = s[:, None] * w[None, :]
    # The hump proxy falls beyond its peak; with δ = 2 it is monotone (a harmful distortion in the tail).
    assert bool((base.raw(x)[-20:].diff() < 0).all()) and bool((mix.raw(x).diff() > 0).all())
    # A pocket changes the proxy only near its centre.
    delta = pocket.raw(x) - base.raw(x)
    assert float(delta[(s - 3.0).abs() < 0.05].min()) == pytest.approx(5.0, rel=1e-6)
    assert float(delta[s < 1.5].abs().max()) < 1e-6


def test_learned_proxies_are_deterministic_normalized_and_seed_dependent(monkeypatch):
    monkeypatch.setenv("TILTENV_PROXY_CACHE", "0")
    for kind, kw in [("mlp", {"epochs": 5}), ("two_stage", {}), ("ensemble", {"k": 2, "member_kwargs": {"epochs": 3}})]:
        cfg = TaskConfig(**SMALL, n_labels=300, proxy=kind, proxy_kwargs=kw, seed=1)
        a, b = make_world(cfg, fresh=True), make_world(cfg, fresh=True)
        sa, sb = a.task.proxy.state_dict(), b.task.proxy.state_dict()
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa), kind
        assert torch.equal(a.judge.eval_proxy, b.judge.eval_proxy)
        c = make_world(cfg.replace(seed=2), fresh=True)
        assert not torch.equal(a.judge.eval_proxy, c.judge.eval_proxy)
        p = a.judge.eval_ref_logp.double().exp()
        r = a.judge.eval_proxy
        mean = float((p * r).sum(-1).mean())
        var = float((p * (r - mean) ** 2).sum(-1).mean())
        assert abs(mean) < 0.1 and abs(var - 1) < 0.1, (kind, mean, var)  # held-out contexts: sampling error only


def test_two_stage_on_pairwise_labels_uses_win_scores():
    world = make_world(TaskConfig(**SMALL, n_labels=1000, proxy="two_stage"))
    assert float(world.task.proxy.stage2_ess) == pytest.approx(2000.0)  # two items per pair, unweighted
    assert proxy_report(world)["gold_corr_ref"] > 0.8


def test_new_tasks_are_registered_with_a_statement():
    for name in ("HighExponent", "NoisyLabels", "Spurious", "Ensemble"):
        cls, preset, doc = TASKS[name]
        assert doc and f"tiltenv/{name}-v0" in gym.registry
        TaskConfig(**preset)  # valid
    assert TASKS["HighExponent"][1]["link"] == "he3" and TASKS["Ensemble"][1]["proxy"] == "ensemble"


def test_new_tasks_show_their_phenomenon():
    small = dict(n_eval_contexts=256, n_norm_contexts=256)
    # HighExponent (he3, pointwise, two-stage): β1 = 1 (default) recovers θ*, β1 = inf does not.
    # Measured: recovered 0.91 vs 0.00, gold correlation 0.50 vs 0.05.
    he = {b: proxy_report(gym.make("tiltenv/HighExponent-v0", proxy_kwargs={"beta1": b}, **small))
          for b in (1.0, math.inf)}
    assert he[1.0]["recovered_fraction"] > 0.5 > 0.1 > he[math.inf]["recovered_fraction"], he
    assert he[1.0]["gold_corr_ref"] > he[math.inf]["gold_corr_ref"] + 0.2
    # NoisyLabels: 25% flips cost ranking accuracy (measured 0.79 vs 0.975 without flips).
    noisy = proxy_report(gym.make("tiltenv/NoisyLabels-v0", **small))["acc_ref"]
    clean = proxy_report(gym.make("tiltenv/NoisyLabels-v0", flip_rate=0.0, **small))["acc_ref"]
    assert noisy < clean - 0.1, (noisy, clean)
    # Spurious: the proxy turns toward v (measured 41° to v, 49° to θ*; unbiased: 90° / 3°) and best-of-16
    # falls further behind the gold frontier at its KL (measured KL-matched gap 0.64 vs 0.24).
    gaps = {}
    for bias in (1.0, 0.0):
        env = gym.make("tiltenv/Spurious-v0", label_bias=bias, **small)
        world = make_world(env.unwrapped.config)
        v = world.judge.extras["spurious_direction"]
        angle_v = index_angle(world.task.proxy, v, n=50_000)
        assert (angle_v < 60) if bias else (abs(angle_v - 90) < 10), (bias, angle_v)
        gaps[bias] = tiltenv.best_of_n_sweep(env, [16])[0]["kl_matched_gap"]
    assert gaps[1.0] > gaps[0.0] + 0.15, gaps
    # Ensemble: a k = 5 ensemble on the hump, which overoptimizes under best-of-n (measured drop 0.32).
    env = gym.make("tiltenv/Ensemble-v0", **small)
    assert env.unwrapped.task.proxy.kind == "ensemble" and len(env.unwrapped.task.proxy.members) == 5
    assert best_of_n_drop(env, NS)["report"].overoptimized


def test_hump_with_a_learned_proxy_overoptimizes():
    # Hump-v0 (K = 256) with the default mlp proxy, best-of-n for n = 1..256; decided on the measured drop.
    # Measured (2048 eval contexts, seeds 0-5): drops 0.14, 0.04, 0.02, 0.11, 0.02, 0.09, paired SE ≤ 0.004.
    for seed in (0, 1):
        env = gym.make("tiltenv/Hump-v0", proxy="mlp", seed=seed, n_eval_contexts=512, n_norm_contexts=512)
        r = best_of_n_drop(env, NS)
        assert r["report"].overoptimized and r["drop"] > max(0.01, 4 * r["drop_se"]), (seed, r["drop"], r["drop_se"])
        assert r["peak_n"] < 256


# --------------------------------------------------------------------------- ensembles


def _fixed_members(values: list[torch.Tensor]) -> EnsembleProxy:
    """Members ``r_j(x) = <w_j, x>`` (identity normalization)."""
    return EnsembleProxy([LinearProxy(v) for v in values], "mean", 1.0)


def test_aggregators_are_exact():
    g = torch.Generator().manual_seed(0)
    ens = _fixed_members([torch.randn(3, generator=g, dtype=torch.float64) for _ in range(4)])
    x = torch.randn(50, 3, generator=g, dtype=torch.float64)
    v = ens.member_rewards(x)
    mean = ens.with_aggregator("mean").raw(x)
    mn = ens.with_aggregator("min").raw(x)
    assert torch.allclose(mean, v.mean(0)) and torch.equal(mn, v.min(0).values)
    assert bool((mn <= mean + 1e-12).all())
    var = ((v - v.mean(0)) ** 2).mean(0)  # population variance
    assert torch.allclose(ens.with_aggregator("uwo", 0.7).raw(x), mean - 0.7 * var)
    assert torch.allclose(ens.with_aggregator("mean_minus_std", 2.0).raw(x), mean - 2.0 * var.sqrt())
    s = v.sort(0).values
    assert torch.allclose(ens.with_aggregator("median").raw(x), 0.5 * (s[1] + s[2]))  # even k: middle pair
    assert torch.equal(aggregate(v[:3], "median"), v[:3].sort(0).values[1])
    # uwo penalizes disagreement: same member mean, larger spread -> lower reward.
    agree = torch.tensor([[1.0], [1.0], [1.0], [1.0]], dtype=torch.float64)
    disagree = torch.tensor([[0.0], [2.0], [0.0], [2.0]], dtype=torch.float64)
    assert float(aggregate(disagree, "uwo", 1.0)) == pytest.approx(0.0)
    assert float(aggregate(agree, "uwo", 1.0)) == pytest.approx(1.0)
    assert float(aggregate(disagree, "min")) < float(aggregate(agree, "min"))
    assert set(AGGREGATORS) == {"mean", "min", "uwo", "median", "mean_minus_std"}


def test_ensemble_members_are_normalized_and_diversity_sources_differ():
    cfg = dict(**SMALL, n_labels=400)
    disagreement = {}
    for div in ("init", "bootstrap", "shared_features"):
        w = make_world(TaskConfig(**cfg, proxy="ensemble",
                                  proxy_kwargs={"k": 3, "diversity": div, "member_kwargs": {"epochs": 5}}))
        ens = w.task.proxy
        ref = w.judge.eval_ref_logp.double()
        for m in ens.members:  # each member ~ mean 0 / variance 1 under π_ref (its own sample)
            r = proxy_values(m, w.judge.eval_candidates)
            assert abs(float(r.mean())) < 0.15 and abs(float(r.var()) - 1) < 0.15
        if div == "shared_features":  # one first layer shared by every member
            f0 = ens.members[0].features.state_dict()
            assert all(torch.equal(f0[k], m.features.state_dict()[k]) for m in ens.members[1:] for k in f0)
        disagreement[div] = ensemble_disagreement(ens, w.judge.eval_candidates, ref)["ref"]
    assert all(v > 0 for v in disagreement.values()), disagreement
    # Refitting only a linear readout on shared features leaves the members nearly identical (measured ~0.001).
    assert disagreement["shared_features"] < disagreement["bootstrap"], disagreement


def test_ensemble_aggregator_is_not_part_of_training(monkeypatch):
    cfg = TaskConfig(**SMALL, n_labels=300, proxy="ensemble", proxy_kwargs={"k": 2, "member_kwargs": {"epochs": 3}})
    a = make_world(cfg)
    b = make_world(cfg.replace(proxy_kwargs={"k": 2, "member_kwargs": {"epochs": 3}, "aggregator": "min"}))
    sa, sb = a.task.proxy.members.state_dict(), b.task.proxy.members.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert b.task.proxy.aggregator == "min"
    assert not torch.equal(a.judge.eval_proxy, b.judge.eval_proxy)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_device_auto_trains_on_cuda_and_returns_a_cpu_proxy():
    world = make_world(TaskConfig(**SMALL, n_labels=300, proxy="mlp", proxy_kwargs={"epochs": 3}))
    assert next(world.task.proxy.parameters()).device.type == "cpu"
    assert math.isfinite(proxy_report(world)["gold_corr_ref"])


@pytest.mark.parametrize("readout_only", [False, True])
def test_mlp_members_trained_together_match_members_trained_alone(readout_only):
    from tiltenv.rewards import reward_models as R

    d, n = 6, 300
    g = torch.Generator().manual_seed(3)
    datas = [R.TrainData("pairwise", x_a=torch.randn(n, d, generator=g), x_b=torch.randn(n, d, generator=g),
                         label=(torch.rand(n, generator=g) > 0.5).float()) for _ in range(3)]
    opts = R.MLPOptions(width=8, depth=2, epochs=4, batch_size=64, device="cpu")

    def fresh(i):
        m = R._mlp_skeleton(opts, d)
        m.init_parameters(R._generator(100 + i))
        return m

    together = R.train_mlps([fresh(i) for i in range(3)], datas, opts, [7, 8, 9], torch.device("cpu"),
                            readout_only=readout_only)
    for i, m in enumerate(together):
        alone = R.train_mlps([fresh(i)], [datas[i]], opts, [7 + i], torch.device("cpu"), readout_only=readout_only)[0]
        # the same function up to rounding (AdamW normalizes gradients, so near-zero gradients amplify
        # rounding: compare the learned reward differences; a BT readout bias has gradient 0 in theory)
        x = torch.randn(500, d, generator=torch.Generator().manual_seed(i))
        ra, rb = m.score(x), alone.score(x)
        torch.testing.assert_close(ra - ra.mean(), rb - rb.mean(), rtol=0, atol=2e-3 * float(rb.std()))
        for name, a in m.features.state_dict().items():
            torch.testing.assert_close(a, alone.features.state_dict()[name], rtol=0, atol=1e-3)
        if readout_only:  # hidden layers frozen
            torch.testing.assert_close(m.features.state_dict(), fresh(i).features.state_dict())
    # each member really is trained: its own data changes it
    assert not torch.allclose(together[0].readout.weight, together[1].readout.weight)
    again = R.train_mlps([fresh(i) for i in range(3)], datas, opts, [7, 8, 9], torch.device("cpu"),
                         readout_only=readout_only)
    for a, b in zip(together, again):  # deterministic
        assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_ensemble_members_train_in_one_batched_call(monkeypatch):
    from tiltenv.rewards import reward_models as R

    calls = []
    real = R.train_mlps
    monkeypatch.setattr(R, "train_mlps", lambda models, *a, **k: calls.append(len(models)) or real(models, *a, **k))
    make_world(TaskConfig(**SMALL, n_labels=200, proxy="ensemble",
                          proxy_kwargs={"k": 4, "member_kwargs": {"epochs": 2}}), fresh=True)
    assert calls == [4]  # no Python loop over members


def test_ensemble_members_are_scored_in_one_batched_forward(monkeypatch):
    from tiltenv.rewards import reward_models as R

    w = make_world(TaskConfig(**SMALL, n_labels=200, proxy="ensemble",
                              proxy_kwargs={"k": 3, "member_kwargs": {"epochs": 2}}))
    ens = w.task.proxy
    x = w.judge.eval_candidates
    looped = torch.stack([m(x).to(torch.float64) for m in ens.members])
    torch.testing.assert_close(ens.member_rewards(x), looped, rtol=0, atol=1e-5)
    monkeypatch.setattr(R.MLPProxy, "raw", lambda *a: pytest.fail("a member scored alone"))
    torch.testing.assert_close(ens(x), w.judge.eval_proxy.to(x.dtype), rtol=0, atol=1e-12)
    # a fresh build scores (normalizes, evaluates) its members only through the batched forward
    make_world(TaskConfig(**SMALL, n_labels=200, seed=1, proxy="ensemble",
                          proxy_kwargs={"k": 3, "member_kwargs": {"epochs": 2}}), fresh=True)


def test_ensemble_members_are_normalized_under_a_tilted_pi_ref():
    # ref_eta != 0: π_ref leans towards u ≈ θ*, which the members learn, so its weights move their mean
    # and variance; each member must be centred and scaled under π_ref's weights, not the uniform ones.
    w = make_world(TaskConfig(**SMALL, n_labels=400, ref_eta=2.0, proxy="ensemble",
                              proxy_kwargs={"k": 3, "member_kwargs": {"epochs": 5}}))
    x, p = w.task.sample_contexts(4096, seed=5)
    p = p.to(torch.float64).exp()
    r = w.task.proxy.member_rewards(x)  # (k, C, K)
    mean = (p * r).sum(-1).mean(-1)
    var = (p * (r - mean[:, None, None]) ** 2).sum(-1).mean(-1)
    uniform_mean = r.mean((-1, -2))
    assert bool((mean.abs() < 0.05).all()) and bool(((var - 1).abs() < 0.08).all()), (mean, var)
    assert bool((uniform_mean < -0.3).all()), uniform_mean  # the weights matter at this η


@pytest.mark.parametrize("diversity", ["independent_features", "shared_features", "bootstrap"])
def test_two_stage_ensemble_members_learn_from_the_labels_their_diversity_names(diversity):
    # 'independent_features' / 'shared_features': the readout is refit on the full label set / an own resample.
    # Refitting stage 2 on all labels with a member's own (W, b) gives back its readout exactly iff it was fit there.
    from tiltenv.rewards.proxies import parse_options
    from tiltenv.rewards.reward_models import TrainData, fit_stage2

    kw = {"k": 3, "member": "two_stage", "diversity": diversity, "member_kwargs": {"width": 16}}
    w = make_world(TaskConfig(**SMALL, n_labels=300, proxy="ensemble", proxy_kwargs=kw))
    x, y = TrainData("pairwise", x_a=w.task.preferences.x_a, x_b=w.task.preferences.x_b,
                     label=w.task.preferences.label).as_pointwise()
    opts = parse_options("two_stage", {"width": 16})
    refit = [fit_stage2(x, y, m.W, m.b, opts)[0] for m in w.task.proxy.members]
    on_all = [torch.allclose(r[:-1], m.a, atol=1e-9) and abs(float(r[-1] - m.c)) < 1e-9
              for r, m in zip(refit, w.task.proxy.members)]
    assert all(on_all) if diversity == "independent_features" else not any(on_all), on_all
    shared = all(torch.equal(m.W, w.task.proxy.members[0].W) for m in w.task.proxy.members)
    assert shared == (diversity == "shared_features")


def test_bootstrap_resamples_every_label_uniformly_with_replacement():
    # n = 4 labels, 4000 resamples of 4: each index drawn with probability 1/4 (5 binomial standard errors)
    from tiltenv.rewards.reward_models import TrainData

    data = TrainData("pointwise", x=torch.arange(4.0)[:, None], y=torch.arange(4.0))
    g = torch.Generator().manual_seed(0)
    draws = torch.cat([data.bootstrap(g).y for _ in range(4000)]).long()
    freq = torch.bincount(draws, minlength=4).double() / draws.numel()
    assert bool(((freq - 0.25).abs() < 5 * math.sqrt(0.25 * 0.75 / draws.numel())).all()), freq


@pytest.mark.parametrize("proxy", ["linear", "mlp", "gold", "two_stage"])
def test_one_candidate_keeps_the_batch_dtype(proxy):
    """The normalization's 0-dim buffers are used without a cast for batches (no promotion) and cast for a single
    (d,) candidate, whose 0-dim score would otherwise be promoted to float64."""
    w = make_world(TaskConfig(d=4, K=8, n_labels=200, n_eval_contexts=16, n_norm_contexts=64, proxy=proxy))
    x = w.task.sample_contexts(1, seed=0)[0][0]  # (K, d) float32
    batch = w.task.proxy_reward(x, count=False)
    one = w.task.proxy_reward(x[3], count=False)
    assert batch.dtype == one.dtype == torch.float32 and one.shape == ()
    assert float(one) == pytest.approx(float(batch[3]), rel=1e-5, abs=1e-6)
