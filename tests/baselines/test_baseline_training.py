"""Training on registered tasks: PG agents raise gold on SingleIndex-v0 with their default configs; on
Hump-v0 with a small β their trajectories overoptimize (gold peaks then falls while the proxy rises);
closed forms agree with the judge-side sweeps; DPO, PAR, plain SGD and SB3 PPO train."""

from __future__ import annotations

import gymnasium as gym
import pytest
import torch
from baseline_helpers import SMALL

import tiltenv
from baselines import PG_BASELINES, QUICK_BUDGET, TrainBudget, beta_sweep, make_agent, n_sweep
from baselines.run import train, trajectory_row
from tiltenv import metrics as M


@pytest.fixture(scope="module")
def single_index():
    return gym.make("tiltenv/SingleIndex-v0", n_eval_contexts=512)


@pytest.mark.parametrize("name", [*PG_BASELINES, "dpo"])
def test_default_config_raises_gold_on_single_index(name, single_index):
    task = single_index.unwrapped.task
    before = tiltenv.evaluate(lambda c, r: r, single_index)
    agent = make_agent(name).fit(task, QUICK_BUDGET)  # the default config, the quick budget
    after = tiltenv.evaluate(agent, single_index)
    assert after["gold_value"] > before["gold_value"] + 1.0  # π_ref ≈ 0.0; trained agents reach ≈ 2
    assert after["normalized_score"] > 0.5


@pytest.mark.parametrize("name", PG_BASELINES)
def test_small_beta_on_hump_overoptimizes(name):
    """Gold rises then falls while the proxy keeps rising; decided on the measured drop."""
    res = train(name, "tiltenv/Hump-v0", env_kwargs={"beta": 0.01, "n_eval_contexts": 512}, budget=QUICK_BUDGET)
    rep = res.overoptimization
    gold = [r["gold_value"] for r in res.trajectory]
    assert rep.overoptimized and rep.drop > 0.1, (rep, gold)
    assert rep.proxy_rising_while_gold_falls
    assert 0 < rep.peak_index < len(gold) - 1  # an interior peak: it rose first
    assert gold[rep.peak_index] > gold[0] + 0.5


def test_tilt_and_best_of_n_agents_match_the_judge_side_sweeps():
    env = gym.make("tiltenv/Hump-v0", n_eval_contexts=256)
    task = env.unwrapped.task
    betas, ns = [3.0, 0.3, 0.03], [2, 16, 128]
    q0 = task.budget.proxy_queries
    for agent, row in zip(beta_sweep(task, betas, device="cpu"), tiltenv.tilt_sweep(env, betas)):
        assert tiltenv.evaluate(agent, env)["gold_value"] == pytest.approx(row["gold_value"], rel=1e-6)
    for agent, row in zip(n_sweep(task, ns, device="cpu"), tiltenv.best_of_n_sweep(env, ns)):
        assert tiltenv.evaluate(agent, env)["kl"] == pytest.approx(row["kl"], rel=1e-6)
    assert task.budget.proxy_queries == q0  # closed forms spend no training budget
    rows = [trajectory_row(a, env.unwrapped.task and tiltenv.worlds.evaluation.resolve_judge(env))
            for a in beta_sweep(task, [10.0, 1.0, 0.3, 0.1, 0.01], device="cpu")]
    rep = M.overoptimization([r["kl"] for r in rows], [r["gold_value"] for r in rows], [r["proxy_value"] for r in rows])
    assert rep.overoptimized and rep.proxy_rising_while_gold_falls


def test_chi2_tilt_spends_less_kl_than_the_kl_tilt_at_the_same_beta():
    env = gym.make("tiltenv/Hump-v0", n_eval_contexts=256)
    kl_tilt, chi2_tilt = (make_agent("tilt", beta=0.05, divergence=d, device="cpu").fit(env.unwrapped.task)
                          for d in ("kl", "chi2"))
    a, b = tiltenv.evaluate(kl_tilt, env), tiltenv.evaluate(chi2_tilt, env)
    assert b["chi2"] < a["chi2"] and b["kl"] < a["kl"]


def test_par_shaping_counts_reference_queries_and_trains():
    env = gym.make("tiltenv/SingleIndex-v0", **SMALL)
    task = env.unwrapped.task
    agent = make_agent("reinforce", reward_shaping="par", par_ref_samples=2, batch_size=64, device="cpu")
    q0 = task.budget.proxy_queries
    agent.fit(task, TrainBudget(proxy_queries=64 * 3 * 40))
    assert task.budget.proxy_queries - q0 == 64 * 3 * 40  # 1 sample + 2 reference candidates per context
    assert all(0.0 < h["reward"] < 1.0 for h in agent.history)  # σ(r − r_ref) − β·KL stays in (0, 1) here
    assert tiltenv.evaluate(agent, env)["gold_value"] > tiltenv.evaluate(lambda c, r: r, env)["gold_value"] + 0.3


@pytest.mark.parametrize("name", PG_BASELINES)
def test_plain_sgd_trains(name):
    env = gym.make("tiltenv/SingleIndex-v0", **SMALL)
    agent = make_agent(name, optimizer="sgd", learning_rate=0.5, device="cpu")
    agent.fit(env.unwrapped.task, TrainBudget(proxy_queries=16_384))
    assert tiltenv.evaluate(agent, env)["gold_value"] > tiltenv.evaluate(lambda c, r: r, env)["gold_value"] + 0.3


@pytest.mark.parametrize("vec_env", ["adapter", "dummy"])
def test_sb3_ppo_trains_through_gym_make_and_counts_queries(vec_env):
    env = gym.make("tiltenv/SingleIndex-v0", **SMALL)
    task = env.unwrapped.task
    steps = []
    agent = make_agent("sb3_ppo", vec_env=vec_env, n_envs=4, n_steps=32, batch_size=64, device="cpu")
    q0 = task.budget.proxy_queries
    agent.fit(task, TrainBudget(proxy_queries=1000, n_checkpoints=3), checkpoint=lambda s, p: steps.append(s))
    assert task.budget.proxy_queries - q0 == 896  # 1000 rounded down to whole rollouts of 4·32
    assert steps[0] == 0 and steps[-1] == 896 and steps == sorted(steps)
    logp = agent.policy(*task.sample_contexts(5, seed=1))
    assert logp.shape == (5, SMALL["K"]) and torch.allclose(logp.exp().sum(-1), torch.ones(5), atol=1e-5)
    assert tiltenv.evaluate(agent, env)["kl"] > 0
