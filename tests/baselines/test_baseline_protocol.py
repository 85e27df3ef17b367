"""The agent protocol: registry, configs (help text, validation), budgets, checkpoints, policy outputs."""

from __future__ import annotations

import copy
import dataclasses

import gymnasium as gym
import numpy as np
import pytest
import torch
from baseline_helpers import SMALL

import baselines
from baselines import BASELINES, PG_BASELINES, TrainBudget, get_baseline, log_spaced_points, make_agent
from baselines.base import Agent, Checkpointer

ALL = sorted(BASELINES)


@pytest.fixture(scope="module")
def small_env():
    return gym.make("tiltenv/SingleIndex-v0", **SMALL)


def fresh_task(env):
    task = copy.copy(env.unwrapped.task)
    task.budget = type(task.budget)()
    return task


def test_registry_lists_every_baseline_with_its_config():
    assert set(ALL) == {"tilt", "best_of_n", "reinforce", "rloo", "grpo", "ppo", "dpo", "sb3_ppo", "label_ceiling"}
    for name, (agent_cls, config_cls) in BASELINES.items():
        assert issubclass(agent_cls, Agent) and agent_cls.name == name and agent_cls.config_class is config_cls
        assert dataclasses.is_dataclass(config_cls)
        for f in dataclasses.fields(config_cls):
            assert f.metadata.get("help"), f"{config_cls.__name__}.{f.name} has no help text"
        config_cls()  # defaults are valid
    with pytest.raises(ValueError, match="Did you mean 'grpo'"):
        get_baseline("grop")


@pytest.mark.parametrize("name", PG_BASELINES)
def test_every_pg_agent_offers_sgd_and_adam_and_both_kl_placements(name):
    _, cfg = get_baseline(name)
    for opt in ("sgd", "adam"):
        for penalty, est in [("reward", "k1"), ("loss", "k1"), ("loss", "k2"), ("loss", "k3"), ("loss", "analytic")]:
            cfg(optimizer=opt, kl_penalty=penalty, kl_estimator=est)
    cfg(divergence="chi2", reward_shaping="par")


@pytest.mark.parametrize(
    ("name", "kwargs", "error", "match"),
    [
        ("reinforce", {"optimizer": "adamw"}, ValueError, "Did you mean 'adam'"),
        ("reinforce", {"kl_estimator": "k4"}, ValueError, "kl_estimator must be one of"),
        ("reinforce", {"kl_penalty": "reward", "kl_estimator": "analytic"}, ValueError, "belongs in the loss"),
        ("reinforce", {"learning_rate": -1.0}, ValueError, "learning_rate must be in"),
        ("reinforce", {"momentum": 0.9}, ValueError, "only applies to optimizer='sgd'"),
        ("reinforce", {"batch_size": 0}, ValueError, "batch_size"),
        ("reinforce", {"policy": "mlp", "hidden_sizes": ()}, ValueError, "at least one hidden layer"),
        ("reinforce", {"device": "tpu"}, ValueError, "device must be"),
        ("reinforce", {"beta": -0.1}, ValueError, "beta must be in"),
        ("grpo", {"scale_rewards": "grup"}, ValueError, "Did you mean 'group'"),
        ("grpo", {"epsilon": 0.0}, ValueError, "epsilon"),
        ("ppo", {"num_minibatches": 2000}, ValueError, "num_minibatches"),
        ("dpo", {"loss_type": "ipo", "label_smoothing": 0.1}, ValueError, "label_smoothing applies"),
        ("dpo", {"loss_type": "sigmod"}, ValueError, "Did you mean 'sigmoid'"),
        ("dpo", {"beta": 0.0}, ValueError, "beta must be > 0"),
        ("tilt", {"divergence": "chi2", "beta": 0.0}, ValueError, "needs beta > 0"),
        ("best_of_n", {"n": 0.5}, ValueError, "n must be in"),
        ("sb3_ppo", {"vec_env": "subproc"}, ValueError, "vec_env must be one of"),
        ("reinforce", {"exact_expectation": "yes"}, TypeError, "exact_expectation"),
    ],
)
def test_invalid_configs_raise_clear_errors(name, kwargs, error, match):
    with pytest.raises(error, match=match):
        get_baseline(name)[1](**kwargs)


def test_grpo_scale_rewards_accepts_trl_booleans():
    assert get_baseline("grpo")[1](scale_rewards=True).scale_rewards == "group"
    assert get_baseline("grpo")[1](scale_rewards=False).scale_rewards == "none"


def test_train_budget_and_log_spaced_points():
    with pytest.raises(ValueError, match="proxy_queries"):
        TrainBudget(proxy_queries=0)
    with pytest.raises(ValueError, match="wall_time"):
        TrainBudget(wall_time=-1)
    pts = log_spaced_points(65_536, 12, first=256)
    assert pts[0] == 256 and pts[-1] == 65_536 and pts == sorted(set(pts)) and len(pts) == 12
    ratios = np.diff(np.log(pts))
    assert np.allclose(ratios, ratios[0], atol=0.01)
    assert log_spaced_points(5, 12) == [1, 2, 3, 4, 5]


def test_checkpointer_reports_each_crossing_once():
    seen = []
    ck = Checkpointer(lambda s, p: seen.append((s, p)), [10, 20, 40])
    ck.start(lambda: "p0")
    for step in (5, 10, 15, 45):
        ck(step, lambda: f"p{step}")
    ck.finish(45, lambda: "again")
    ck.finish(50, lambda: "final")
    assert seen == [(0, "p0"), (10, "p10"), (45, "p45"), (50, "final")]


@pytest.mark.parametrize("name", ALL)
def test_fit_checkpoints_and_policy_follow_the_protocol(name, small_env):
    task = fresh_task(small_env)
    if name == "sb3_ppo":
        agent = make_agent(name, n_envs=4, n_steps=16, batch_size=32, device="cpu")
    else:
        agent = make_agent(name, device="cpu")
    with pytest.raises(RuntimeError, match="before fit"):
        agent.policy(*task.sample_contexts(2, seed=0))
    ckpts = []
    budget = TrainBudget(proxy_queries=4096, n_checkpoints=5)
    assert agent.fit(task, budget, checkpoint=lambda step, policy: ckpts.append((step, policy))) is agent
    steps = [s for s, _ in ckpts]
    assert steps[0] == 0 and steps == sorted(set(steps)) and steps == agent.checkpoint_steps
    assert task.budget.proxy_queries <= budget.proxy_queries  # never over budget
    if name in (*PG_BASELINES, "sb3_ppo"):
        # log-spaced points plus the leaderboard's marks (issue 17): at most 2·n_checkpoints + 2 checkpoints
        assert steps[-1] == task.budget.proxy_queries > 0 and 3 <= len(steps) <= 2 * 5 + 2
        window = budget.proxy_queries // budget.n_checkpoints
        for m in budget.checkpoint_marks():  # a checkpoint soon after each mark reached (one update may pass two)
            assert m > steps[-1] or any(m <= s < m + 2 * window for s in steps), (m, steps)
    cand, ref = task.sample_contexts(7, seed=1)
    for fn in (agent.policy, ckpts[-1][1]):
        logp = fn(cand, ref)
        assert isinstance(logp, torch.Tensor) and logp.shape == (7, SMALL["K"])
        assert torch.allclose(torch.logsumexp(logp.double(), -1), torch.zeros(7, dtype=torch.float64), atol=1e-5)
    # the last checkpoint is the fitted policy (issue 9: sb3_ppo's last row was the policy before its last update)
    assert torch.allclose(ckpts[-1][1](cand, ref).double(), agent.policy(cand, ref).double(), atol=1e-6), name
    np_logp = agent.policy(cand.numpy(), ref.numpy())  # numpy in, torch out
    assert torch.allclose(np_logp.double(), agent.policy(cand, ref).double(), atol=1e-6)
    if name not in ("tilt", "best_of_n", "label_ceiling"):  # closed forms: one checkpoint, the fitted policy
        # snapshots are frozen: the step-0 one is still the initial policy (π_ref for our policy class)
        first, final = ckpts[0][1](cand, ref).double(), agent.policy(cand, ref).double()
        assert not torch.allclose(first, final, atol=1e-4)
        if name != "sb3_ppo":
            assert torch.allclose(first, ref.double(), atol=1e-5)


class _TickClock:
    """A fake ``time`` module whose ``perf_counter`` advances by ``tick`` seconds per read (exact in binary)."""

    def __init__(self, tick: float = 0.25) -> None:
        self.now, self.tick, self.reads = 0.0, tick, 0

    def perf_counter(self) -> float:
        self.reads += 1
        self.now += self.tick
        return self.now


def test_budget_too_small_for_one_update_and_wall_time_stop(small_env, monkeypatch):
    import baselines.base
    import baselines.dpo
    import baselines.pg

    task = fresh_task(small_env)
    with pytest.raises(ValueError, match="one update"):
        make_agent("grpo", device="cpu").fit(task, TrainBudget(proxy_queries=100))
    # The wall-time stop, counted on a clock that advances 0.25 s per read (no real time involved): the
    # clock is read once at the start and once per check, so a 1 s budget allows exactly 3 updates.
    clock = _TickClock()
    for mod in (baselines.base, baselines.pg, baselines.dpo):
        monkeypatch.setattr(mod, "time", clock)
    agent = make_agent("reinforce", batch_size=32, device="cpu")
    q0 = task.budget.proxy_queries
    agent.fit(task, TrainBudget(proxy_queries=10**9, wall_time=1.0))
    assert len(agent.history) == 3 and task.budget.proxy_queries - q0 == 3 * 32
    assert agent.fit_time == 1.25  # start, 4 checks (the 4th one stops), the final read
    # DPO checks between updates (per epoch and per minibatch): the start, the epoch's check and two
    # minibatch checks pass, the third stops the epoch, the next epoch's check stops the fit.
    clock.now = 0.0
    dpo = make_agent("dpo", num_train_epochs=10**6, device="cpu")
    dpo.fit(task, TrainBudget(proxy_queries=10**9, wall_time=1.0))
    assert len(dpo.history) == 2, len(dpo.history)


def test_fit_rejects_what_is_not_a_public_task_and_dpo_needs_pairs(arms):
    with pytest.raises(TypeError, match="public task"):
        make_agent("reinforce").fit(object())
    with pytest.raises(ValueError, match="pairwise preference data"):
        make_agent("dpo", device="cpu").fit(arms.task)


@pytest.mark.parametrize("name", sorted(PG_BASELINES))
def test_a_task_whose_proxy_does_not_count_is_an_error_not_an_endless_fit(name, small_env):
    """The budget loop measures what an update spent on the task's counter; a wrapper that drops counting used
    to make fit loop forever (no wall time set)."""

    class Uncounted:
        def __init__(self, task):
            self._task = task

        def __getattr__(self, item):
            return getattr(self._task, item)

        def proxy_reward(self, x, count=True):
            return self._task.proxy_reward(x, count=False)

    agent = make_agent(name, device="cpu")
    with pytest.raises(RuntimeError, match=r"did not grow: this task's proxy_reward does not count its queries"):
        agent.fit(Uncounted(fresh_task(small_env)), TrainBudget(proxy_queries=4096, n_checkpoints=2))


def test_agent_accepts_config_or_overrides():
    a = baselines.REINFORCE(learning_rate=0.2)
    b = baselines.REINFORCE(baselines.REINFORCEConfig(), learning_rate=0.2)
    assert a.config == b.config and a.config.learning_rate == 0.2
    with pytest.raises(TypeError, match="needs a REINFORCEConfig"):
        baselines.REINFORCE(baselines.RLOOConfig())


def test_unknown_config_fields_and_bad_clip_ranges_are_named():
    from baselines import GRPO, REINFORCE

    with pytest.raises(TypeError, match=r"unknown REINFORCEConfig field 'learning_rat'.*Did you mean 'learning_rate'"):
        REINFORCE(learning_rat=0.1)
    with pytest.raises(ValueError, match=r"epsilon must be in \(0, 1\) \(got 1.5\)"):
        GRPO(epsilon=1.5)


def _first_rollout(agent, task, budget):
    """Fit on ``budget`` and return the rollouts the agent updated on."""
    seen = []
    real_update = agent.update
    agent.update = lambda ro: seen.append(ro) or real_update(ro)
    agent.fit(task, budget)
    return seen


def test_generations_are_sampled_with_replacement_from_the_policy(arms):
    """k = 8 of K = 10 arms per context, drawn i.i.d. from π (= π_ref before the first update): the empirical
    law of the actions is π_ref, duplicates included (without replacement it would be pushed towards uniform)."""
    agent = make_agent("rloo", num_generations=8, batch_size=4000, device="cpu")
    (ro,) = _first_rollout(agent, arms.task, TrainBudget(proxy_queries=8 * 4000))
    freq = torch.bincount(ro.actions.reshape(-1), minlength=arms.K).double() / ro.actions.numel()
    assert 0.5 * float((freq - arms.ref).abs().sum()) < 0.02  # sampling error of 32k draws: 0.007 (without replacement: 0.07)
    assert bool((ro.weights == 1 / 8).all())


def test_par_reference_queries_count_in_the_per_update_cost(arms):
    """PAR scores num_generations + par_ref_samples candidates per context: a budget that is not a multiple of
    that stops before it is exceeded, and one below it is refused up front."""
    per_update = 8 * (1 + 2)
    agent = make_agent("reinforce", reward_shaping="par", par_ref_samples=2, batch_size=8, device="cpu")
    q0 = arms.task.budget.proxy_queries
    agent.fit(arms.task, TrainBudget(proxy_queries=5 * per_update + per_update // 2))
    assert arms.task.budget.proxy_queries - q0 == 5 * per_update and len(agent.history) == 5
    with pytest.raises(ValueError, match=f"scores {per_update} candidates"):
        make_agent("reinforce", reward_shaping="par", par_ref_samples=2, batch_size=8, device="cpu").fit(
            arms.task, TrainBudget(proxy_queries=per_update - 1))


def test_ppo_takes_num_minibatches_steps_per_epoch_over_every_context(arms):
    """C = 10 contexts in 4 minibatches: ceil(10/4) = 3, so sizes 3, 3, 3, 1 — 4 steps per epoch, 2 epochs."""
    agent = make_agent("ppo", batch_size=10, num_minibatches=4, num_epochs=2, device="cpu")
    sizes = []
    real_loss = agent.loss
    agent.loss = lambda logp, ro, adv=None: sizes.append(ro.rewards.shape[0]) or real_loss(logp, ro, adv)
    agent.fit(arms.task, TrainBudget(proxy_queries=10))
    assert sizes == [3, 3, 3, 1] * 2


def test_dpo_steps_count_the_pairs_seen_including_a_short_last_batch(small_env):
    """300 pairs in batches of 128 (128, 128, 44) for 2 epochs: steps are pairs seen, the last one 600."""
    task = fresh_task(small_env)
    n = len(task.preferences)
    agent = make_agent("dpo", batch_size=128, num_train_epochs=2, device="cpu")
    agent.fit(task, TrainBudget(n_checkpoints=3))
    expected, seen = [], 0
    for _ in range(2):
        for size in (128, 128, n - 256):
            seen += size
            expected.append(seen)
    assert n == 300 and [h["step"] for h in agent.history] == expected
    assert agent.checkpoint_steps[0] == 0 and agent.checkpoint_steps[-1] == 2 * n


def test_sb3_rollout_buffer_too_large_is_refused_before_allocating(small_env):
    """SB3's PPO allocates n_envs·n_steps observations of K·(d+1) floats up front; a plan far beyond memory is a
    clear error naming the knobs, not an allocator failure minutes later."""
    task = fresh_task(small_env)
    agent = make_agent("sb3_ppo", n_envs=1024, n_steps=2_000_000, device="cpu")
    with pytest.raises(ValueError, match=r"SB3 PPO's rollout buffer would need about .* GiB \(n_envs 1024 × n_steps "
                                         r"2000000 × \(K \d+ × \(d \d+ \+ 1\) \+ 7\) float32\).*lower n_envs or n_steps"):
        agent.fit(task, TrainBudget(proxy_queries=1024 * 2_000_000, n_checkpoints=2))
    assert task.budget.proxy_queries == 0
