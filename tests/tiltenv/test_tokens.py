"""Token sequences (issue 20): exact enumeration, the world, the env (tiltenv/Tokens-v0), determinism, errors."""

from __future__ import annotations

import math
import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import tiltenv
from tiltenv import make_world
from tiltenv import metrics as M
from tiltenv.worlds.tokens import (ARModel, PrefixPolicy, TablePolicy, TokenConfig, all_responses, response_index,
                            sample_responses, sequence_logp, tree_logp)
from tiltenv.envs.tokens import TokenEnv, TokenVectorEnv
from tiltenv.worlds.world import torch_generator

SMALL = dict(V=4, L=3, n_labels=300, n_eval_contexts=8, n_norm_contexts=8)


@pytest.fixture(scope="module")
def world():
    return make_world(TokenConfig(**SMALL, link="hump", beta=0.2))


def _perturbed(model: ARModel, scale: float = 0.7, seed: int = 1) -> ARModel:
    """A policy away from π_ref: the head's weights moved by noise."""
    p = model.copy_trainable()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        p.head.weight.add_(torch.randn(p.head.weight.shape, generator=g) * scale)
    return p.requires_grad_(False)


def test_enumeration_order_and_index():
    ys = all_responses(3, 2)
    assert ys.tolist() == [[a, b] for a in range(3) for b in range(3)]
    assert torch.equal(response_index(ys, 3), torch.arange(9))


@pytest.mark.parametrize("V,L", [(3, 2), (5, 3), (16, 2)])
def test_ref_sums_to_one_over_all_responses(V, L):
    model = ARModel.draw(V, 16, 1.5, seed=3)  # float32 network: normalization in float64 still sums to 1
    prompts = torch.randint(0, V, (7, 4), generator=torch.Generator().manual_seed(0))
    lp = tree_logp(model, prompts, L)
    assert lp.shape == (7, V**L) and lp.dtype == torch.float64
    assert float((lp.exp().sum(-1) - 1).abs().max()) < 1e-12


def test_tree_equals_direct_evaluation_of_every_sequence():
    V, L = 4, 3
    model = ARModel.draw(V, 8, 2.0, seed=5).double()
    prompts = torch.randint(0, V, (5, 3), generator=torch.Generator().manual_seed(1))
    tree = tree_logp(model, prompts, L)
    ys = all_responses(V, L)
    direct = sequence_logp(model, prompts.repeat_interleave(V**L, 0), ys.repeat(5, 1)).reshape(5, V**L)
    assert float((tree - direct).abs().max()) < 1e-12
    # float32 network: the same up to float32 rounding of the logits (batch shapes differ)
    m32 = ARModel.draw(V, 8, 2.0, seed=5)
    d32 = sequence_logp(m32, prompts.repeat_interleave(V**L, 0), ys.repeat(5, 1)).reshape(5, V**L)
    assert float((tree_logp(m32, prompts, L) - d32).abs().max()) < 1e-5


def test_prefix_policy_adapter_matches_the_stateful_model():
    V, L = 3, 3
    model = ARModel.draw(V, 8, 1.0, seed=2).double()

    def fn(prompts, prefix):  # stateless: re-read the whole prefix
        s = model.initial_state(prompts)
        for t in range(prefix.shape[1]):
            s = model.advance(s, prefix[:, t])
        return model.next_logits(s)

    prompts = torch.randint(0, V, (4, 2), generator=torch.Generator().manual_seed(0))
    assert torch.allclose(tree_logp(PrefixPolicy(fn, V, 2), prompts, L), tree_logp(model, prompts, L), atol=1e-12)


def test_table_policy_round_trips_any_law(world):
    j = world.judge
    tilt = M.tilt_logp(j.eval_ref_logp, j.eval_gold, 0.2)
    pol = TablePolicy(j.eval_prompts, tilt, j.V, j.L)
    assert float((tree_logp(pol, j.eval_prompts, j.L) - tilt).abs().max()) < 1e-12
    with pytest.raises(ValueError, match="knows only its 8 prompts"):
        pol.initial_state(torch.tensor([[9, 9, 9, 9]]))


def test_gold_tilt_over_responses_is_the_optimizer_of_J(world):
    j, beta = world.judge, 0.2
    ref, gold = j.eval_ref_logp, j.eval_gold
    tilt = M.tilt_logp(ref, gold, beta)
    # the tilt formula itself: π* ∝ π_ref e^{r*/β}
    assert torch.allclose(tilt, torch.log_softmax(ref + gold / beta, -1), atol=1e-12)
    # J_β(π*) = J*_β, and every token policy (π_ref, perturbed networks) is below it by β KL(π‖π*)
    assert abs(M.regularized_objective(tilt, ref, gold, beta) - M.soft_value(ref, gold, beta)) < 1e-10
    res = j.evaluate(TablePolicy(j.eval_prompts, tilt, j.V, j.L), beta=beta)
    assert abs(res["value_gap"]) < 1e-10
    for seed in range(3):
        pol = _perturbed(world.task.ref_model, seed=seed)
        lp = j.policy_logp(pol)
        gap = M.soft_value(ref, gold, beta) - M.regularized_objective(lp, ref, gold, beta)
        assert gap > 0 and abs(gap - beta * M.kl_divergence(lp, tilt)) < 1e-9


def test_policy_at_ref_is_ref_exactly(world):
    res = world.judge.evaluate(world.task.make_policy())
    assert res["kl"] == 0.0 and res["gold_value"] == res["ref_gold_value"]


def test_exact_value_equals_monte_carlo_within_its_ci(world):
    j, task = world.judge, world.task
    pol = _perturbed(task.ref_model, scale=1.0)
    exact = j.evaluate(pol)["gold_value"]
    n = 4000
    prompts = j.eval_prompts.repeat_interleave(n, 0)
    ys, _ = sample_responses(pol, prompts, j.L, torch_generator(7))
    g = j.gold(task.features(prompts, ys)).reshape(j.eval_prompts.shape[0], n)
    # stratified by prompt (equal draws per prompt): SE from the within-prompt variances
    est, se = float(g.mean()), float(g.var(1).mean().sqrt() / math.sqrt(g.numel()))
    assert abs(est - exact) < 4 * se, (est, exact, se)
    assert abs(est - world.judge.evaluate(task.ref_model)["gold_value"]) > 8 * se  # the test can fail: π ≠ π_ref
    # and the sampler's log-probabilities are the policy's
    ys50, lp50 = sample_responses(pol, prompts[:50], j.L, torch_generator(8))
    assert torch.allclose(sequence_logp(pol, prompts[:50], ys50), lp50, atol=1e-6)


def test_world_pieces(world):
    task, j = world.task, world.judge
    prefs, tp = task.preferences, task.token_preferences
    assert len(prefs) == 300 and tp["a"].shape == (300, 3)
    # the token pairs are the feature pairs, in the same order
    assert torch.equal(task.features(tp["prompts"], tp["a"]), prefs.x_a)
    assert torch.equal(task.features(tp["prompts"], tp["b"]), prefs.x_b)
    # the BT labeler (deterministic): the label says which response has the higher gold (ties: coin)
    ga, gb = j.gold(prefs.x_a), j.gold(prefs.x_b)
    decided = ga != gb
    assert torch.equal(prefs.label[decided].bool(), (ga > gb)[decided])
    # the proxy is normalized under π_ref pooled over prompts; φ has norm √d
    assert torch.allclose(task.features(tp["prompts"][:5], tp["a"][:5]).norm(dim=-1), torch.full((5,), 4.0))
    assert j.eval_gold.shape == j.eval_proxy.shape == (8, 64)
    assert -1.0 < M.proxy_gold_correlation(j.eval_ref_logp, j.eval_proxy, j.eval_gold) <= 1.0
    # the bandit view: features of all V^L responses and π_ref over them
    x, ref = task.sample_contexts(2, seed=0)
    assert x.shape == (2, 64, 16) and float((ref.double().exp().sum(-1) - 1).abs().max()) < 1e-5
    # the exact best-of-n law is a law, and beats π_ref on the proxy
    bon = j.best_of_n_logp(4)
    assert M.policy_value(bon, j.eval_proxy) > M.policy_value(j.eval_ref_logp, j.eval_proxy)


def test_ref_sharpness_sets_the_entropy():
    prompts = torch.randint(0, 6, (4, 4), generator=torch.Generator().manual_seed(0))
    ent = []
    for s in (0.0, 1.0, 4.0):
        lp = tree_logp(ARModel.draw(6, 16, s, seed=0), prompts, 2)
        ent.append(float(-(lp.exp() * lp).sum(-1).mean()))
    assert abs(ent[0] - 2 * math.log(6)) < 1e-12 and ent[0] > ent[1] > ent[2]


def test_same_seed_bit_identical_and_seed_changes_world():
    a = make_world(TokenConfig(**SMALL, seed=3), fresh=True)
    b = make_world(TokenConfig(**SMALL, seed=3), fresh=True)
    c = make_world(TokenConfig(**SMALL, seed=4), fresh=True)
    for name in ("eval_ref_logp", "eval_gold", "eval_proxy", "eval_prompts"):
        assert torch.equal(getattr(a.judge, name), getattr(b.judge, name))
    assert not torch.equal(a.judge.eval_gold, c.judge.eval_gold)
    assert torch.equal(a.task.preferences.label, b.task.preferences.label)


def test_memory_is_checked_before_allocating():
    model = ARModel.draw(16, 8, 1.0, seed=0)
    prompts = torch.zeros((20_000, 4), dtype=torch.int64)  # 20,000 × 16^4 float64 = 9.8 GiB
    with pytest.raises(ValueError, match=r"tree_logp would need about .* GiB .*C 20000 prompts × V\^L = 16\^4"):
        tree_logp(model, prompts, 4)
    with pytest.raises(ValueError, match="building this token task would need"):
        make_world(TokenConfig(V=16, L=4, n_eval_contexts=10_000, n_labels=10))


@pytest.mark.parametrize("kwargs,match", [
    (dict(V=1), r"V must be in \[2, 4096\] \(got 1\)"),
    (dict(V=64, L=4), r"V\^L = 64\^4 = 16777216 responses is more than the 1048576"),
    (dict(link="humpp"), "Did you mean 'hump'"),
    (dict(ref_sharpness=-1.0), r"ref_sharpness must be in \[0, inf\)"),
])
def test_bad_config_one_line_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TokenConfig(**kwargs)


def test_env_checkers_pass():
    for kl in (0.0, 0.3):
        env = gym.make("tiltenv/Tokens-v0", kl_coef=kl, **SMALL)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            check_env(env.unwrapped, skip_render_check=True)
            sb3_check_env(env.unwrapped)
    assert env.unwrapped.config.to_dict().keys() <= set(env.spec.kwargs)


def test_env_episode_reward_and_kl_shaping(world):
    task = world.task
    env = TokenEnv.from_task(task, kl_coef=0.5)
    obs, _ = env.reset(seed=11)
    prompt = torch.as_tensor(obs["prompt"])[None]
    total, tokens = 0.0, []
    for t in range(3):
        assert int(obs["position"]) == t
        obs, r, term, trunc, info = env.step(t % 4)
        tokens.append(t % 4)
        total += r
        assert term == (t == 2) and not trunc and info == {}
    y = torch.tensor([tokens])
    expect = 0.5 * float(task.ref_sequence_logp(prompt, y)[0]) + float(task.reward(prompt, y, count=False)[0])
    assert abs(total - expect) < 1e-5
    assert obs["tokens"].tolist() == tokens
    with pytest.raises(RuntimeError, match="call reset"):
        env.step(0)
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"action must be a token in \[0, 3\]"):
        env.step(4)


def test_vector_env_matches_single_env_and_is_deterministic(world):
    venv = TokenVectorEnv.from_task(world.task, num_envs=1, kl_coef=0.2)
    env = TokenEnv.from_task(world.task, kl_coef=0.2)
    o1, _ = venv.reset(seed=5)
    o2, _ = env.reset(seed=5)
    assert o1["prompt"][0].tolist() == o2["prompt"].tolist()
    for t in range(3):
        o1, r1, te1, _, info = venv.step(np.array([2]))
        o2, r2, te2, _, _ = env.step(2)
        assert r1[0] == np.float32(r2) and te1[0] == te2
    assert info["final_obs"][0]["tokens"].tolist() == [2, 2, 2] and int(o1["position"][0]) == 0

    def rollout():
        v = gym.make_vec("tiltenv/Tokens-v0", num_envs=16, **SMALL)
        obs, _ = v.reset(seed=9)
        rng = np.random.default_rng(0)
        rs = []
        for _ in range(6):
            obs, r, *_ = v.step(rng.integers(0, 4, 16))
            rs.append(r)
        return np.stack(rs), obs["prompt"]

    (r_a, p_a), (r_b, p_b) = rollout(), rollout()
    assert np.array_equal(r_a, r_b) and np.array_equal(p_a, p_b) and r_a[2].std() > 0


@pytest.mark.parametrize("name", ["tiltenv.worlds.tokens", "tiltenv.envs.tokens", "baselines.token_pg"])
def test_docstring_examples(name):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_bench_tokens_quick_reports_finite_figures(capsys):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "scripts" / "bench_tokens.py"
    spec = importlib.util.spec_from_file_location("bench_tokens", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    res = mod.main(["--quick"])
    m, e = res["metrics"], res["env"][0]
    assert m["K"] == 512 and m["kl"] > 0 and m["tree_logp_s"] > 0 and m["prefix_evals_per_prompt"] == 1 + 8 + 64
    assert e["vector_steps_per_s"] > 0 and 0 < e["ratio"] < 100
    assert "token env N=64" in capsys.readouterr().out


def test_vector_env_bad_actions_and_kl_shaping(world):
    venv = TokenVectorEnv.from_task(world.task, num_envs=3, kl_coef=0.5, output="torch")
    obs, _ = venv.reset(seed=2)
    with pytest.raises(ValueError, match=r"action must be a token in \[0, 3\] \(V=4\); got \[7\]"):
        venv.step(np.array([0, 7, 1]))
    with pytest.raises(ValueError, match=r"actions must have shape \(3,\)"):
        venv.step(np.array([0, 1]))
    ys = torch.tensor([[0, 1, 2], [3, 3, 3], [1, 0, 1]])
    total = torch.zeros(3)
    for t in range(3):
        _, r, term, _, info = venv.step(ys[:, t])
        total += r
    expect = 0.5 * world.task.ref_sequence_logp(obs["prompt"], ys) + world.task.reward(obs["prompt"], ys, count=False)
    assert torch.allclose(total, expect.to(torch.float32), atol=1e-5) and bool(term.all())
    assert info["final_obs"][1]["tokens"].tolist() == [3, 3, 3]
    with pytest.raises(TypeError, match="from_task takes the task's parameters"):
        TokenVectorEnv.from_task(world.task, num_envs=2, V=5)
