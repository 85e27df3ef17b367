"""Environments: Gymnasium/SB3 checkers, vector env equivalence, seeding, no gold leaks, bad input."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env
from gymnasium.vector import AutoresetMode
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import tiltenv
from tiltenv.envs import SB3VecEnv, TabularVectorEnv, TiltEnv, TiltVectorEnv

SMALL = dict(d=4, K=8, n_labels=300, n_eval_contexts=256, n_norm_contexts=256)
IDS = ["tiltenv/SingleIndex-v0", "tiltenv/Linear-v0", "tiltenv/Hump-v0", "tiltenv/Tabular-v0"]


def small(env_id):
    return {} if "Tabular" in env_id else dict(SMALL)


@pytest.mark.parametrize("env_id", IDS)
@pytest.mark.parametrize("obs_mode", ["dict", "flat"])
def test_gymnasium_and_sb3_checkers_pass(env_id, obs_mode):
    env = gym.make(env_id, obs_mode=obs_mode, **small(env_id))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # unbounded Gaussian Box / (K, d) candidate shape notes
        check_env(env.unwrapped, skip_render_check=True)
        sb3_check_env(env.unwrapped)


def test_every_registered_id_has_the_full_config_in_spec_kwargs():
    for env_id in IDS:
        spec = gym.spec(env_id)
        env = gym.make(env_id)
        assert env.unwrapped.config.to_dict().keys() <= set(env.spec.kwargs)
        assert '"kwargs"' in env.spec.to_json()
        assert spec.vector_entry_point is not None


def test_make_vec_uses_native_vector_env_with_same_step_autoreset():
    venv = gym.make_vec("tiltenv/SingleIndex-v0", num_envs=16, **SMALL)
    assert isinstance(venv, TiltVectorEnv)
    assert venv.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP
    obs, _ = venv.reset(seed=0)
    assert obs["candidates"].shape == (16, 8, 4)
    obs2, rew, term, trunc, info = venv.step(np.zeros(16, dtype=int))
    assert term.all() and not trunc.any() and rew.shape == (16,)
    assert not np.array_equal(obs["candidates"], obs2["candidates"])  # autoreset drew new contexts
    # Gymnasium's SAME_STEP info: the terminal observation of each sub-env is the one acted on.
    assert info["_final_obs"].all() and info["_final_info"].all() and info["final_obs"].shape == (16,)
    np.testing.assert_array_equal(info["final_obs"][3]["candidates"], obs["candidates"][3])
    np.testing.assert_array_equal(info["final_obs"][3]["ref_logp"], obs["ref_logp"][3])
    assert gym.make_vec("tiltenv/SingleIndex-v0", num_envs=2, final_info=False, **SMALL).reset(seed=0)[1] == {}
    assert isinstance(gym.make_vec("tiltenv/Tabular-v0", num_envs=3), TabularVectorEnv)


def test_vector_env_with_one_env_reproduces_single_env_exactly():
    env = gym.make("tiltenv/SingleIndex-v0", **SMALL)
    venv = gym.make_vec("tiltenv/SingleIndex-v0", num_envs=1, **SMALL)
    rng = np.random.default_rng(0)
    obs_s, _ = env.reset(seed=11)
    obs_v, _ = venv.reset(seed=11)
    for _ in range(5):
        np.testing.assert_array_equal(obs_s["candidates"], obs_v["candidates"][0])
        a = int(rng.integers(8))
        _, r_s, *_ = env.step(a)
        obs_v, r_v, *_ = venv.step(np.array([a]))
        assert np.float32(r_s) == r_v[0]
        obs_s, _ = env.reset()


def test_vector_rewards_are_the_proxy_of_the_chosen_candidates():
    venv = gym.make_vec("tiltenv/Hump-v0", num_envs=32, output="torch", d=4, n_labels=300, n_eval_contexts=64)
    obs, _ = venv.reset(seed=5)
    actions = torch.randint(0, venv.unwrapped.K, (32,))
    chosen = obs["candidates"][torch.arange(32), actions]
    expected = venv.unwrapped.task.proxy_reward(chosen, count=False)
    _, rew, term, _, _ = venv.step(actions)
    assert isinstance(rew, torch.Tensor) and torch.equal(rew, expected.float())
    assert bool(term.all())


def test_reset_with_seed_is_deterministic_and_unseeded_resets_continue_the_stream():
    env = gym.make("tiltenv/SingleIndex-v0", **SMALL)
    a, _ = env.reset(seed=123)
    b, _ = env.reset(seed=123)
    np.testing.assert_array_equal(a["candidates"], b["candidates"])
    c, _ = env.reset()
    assert not np.array_equal(a["candidates"], c["candidates"])
    venv = gym.make_vec("tiltenv/SingleIndex-v0", num_envs=4, **SMALL)
    x, _ = venv.reset(seed=9)
    y, _ = venv.reset(seed=9)
    np.testing.assert_array_equal(x["candidates"], y["candidates"])


def test_no_gold_in_observations_or_infos():
    env = gym.make("tiltenv/Hump-v0", **SMALL)
    obs, info = env.reset(seed=0)
    assert set(obs) == {"candidates", "ref_logp"} and info == {}
    _, _, _, _, info = env.step(0)
    assert info == {}
    venv = gym.make_vec("tiltenv/Hump-v0", num_envs=4, **SMALL)
    _, info = venv.reset(seed=0)
    *_, info = venv.step(np.zeros(4, dtype=int))
    assert set(info) == {"final_obs", "_final_obs", "final_info", "_final_info"} and info["final_info"] == {}
    task_state = vars(env.unwrapped.task)
    assert not any(name in task_state for name in ("judge", "theta", "gold", "eval_gold"))
    assert env.unwrapped.task.config.seed is None


@pytest.mark.parametrize("bad", [8, -1, 2.5, "a", [1, 2], True])
def test_invalid_actions_are_rejected_with_the_valid_range(bad):
    env = gym.make("tiltenv/SingleIndex-v0", **SMALL).unwrapped
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"\[0, 7\]"):
        env.step(bad)


def test_vector_env_rejects_bad_actions_and_seed_lists():
    venv = gym.make_vec("tiltenv/SingleIndex-v0", num_envs=4, **SMALL)
    venv.reset(seed=0)
    with pytest.raises(ValueError, match=r"shape \(4,\)"):
        venv.step(np.zeros(3, dtype=int))
    with pytest.raises(ValueError, match=r"\[0, 7\].*\[9\]"):
        venv.step(np.array([0, 1, 9, 2]))
    with pytest.raises(ValueError, match="one int seed"):
        venv.reset(seed=[1, 2, 3, 4])


def test_bad_env_kwargs_give_clear_errors():
    with pytest.raises(TypeError, match=r"unknown task parameter 'lnk'.*Did you mean 'link'"):
        gym.make("tiltenv/SingleIndex-v0", lnk="relu")
    with pytest.raises(ValueError, match=r"obs_mode must be one of \['dict', 'flat'\] \(got 'dcit'\)"):
        gym.make("tiltenv/SingleIndex-v0", obs_mode="dcit")
    with pytest.raises(ValueError, match=r"output must be one of"):
        gym.make_vec("tiltenv/SingleIndex-v0", num_envs=2, output="jax")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            gym.make("tiltenv/SingleIndex-v0", device="cuda")


def test_import_string_and_register_envs():
    gym.register_envs(tiltenv)
    env = gym.make("tiltenv:tiltenv/Linear-v0", d=4, n_labels=200, n_eval_contexts=32)
    assert isinstance(env.unwrapped, TiltEnv)


@pytest.mark.parametrize("output", ["torch", "numpy"])
def test_a_vector_step_dispatches_few_device_ops_and_no_scalar_reads(output):
    """On a GPU every op is a kernel launch and a scalar read a sync: at small N they bound the step. The default
    env's step is 15 ops (sample 1, π_ref 1, observation 2, action range check 2 + one read of both bounds,
    gather 2, linear proxy and its normalization 5, terminated/truncated 2) — 23 before the range check became
    one reduction,
    the gather's row offsets were kept and the proxy's normalization stopped casting its 0-dim buffers."""
    venv = gym.make_vec("tiltenv/SingleIndex-v0", num_envs=64, output=output, **SMALL)
    venv.reset(seed=0)
    a = torch.zeros(64, dtype=torch.long) if output == "torch" else np.zeros(64, dtype=np.int64)
    venv.step(a)
    from tiltenv._profiling import DeviceOps

    with DeviceOps() as ops:
        venv.step(a)
    assert ops.launches <= 15, dict(ops.counts)
    assert ops.scalar_reads == 0, dict(ops.counts)  # no bool()/.item() on device data


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_vector_env_runs_on_cuda():
    venv = gym.make_vec("tiltenv/SingleIndex-v0", num_envs=64, device="cuda", output="torch", **SMALL)
    obs, _ = venv.reset(seed=0)
    assert obs["candidates"].is_cuda
    _, rew, *_ = venv.step(torch.zeros(64, dtype=torch.long, device="cuda"))
    assert rew.is_cuda
    from tiltenv._profiling import cuda_syncs

    a = torch.ones(64, dtype=torch.long, device="cuda")
    assert cuda_syncs(lambda: venv.step(a)) <= 1  # the range check of device actions reads both bounds at once


def test_sb3_ppo_trains_unchanged_and_raises_proxy_value():
    from stable_baselines3 import PPO

    kwargs = dict(d=4, K=8, n_labels=500, n_eval_contexts=512)
    env = gym.make("tiltenv/SingleIndex-v0", **kwargs)
    model = PPO("MultiInputPolicy", env, n_steps=256, batch_size=64, learning_rate=3e-3, seed=0, verbose=0)
    before = tiltenv.evaluate(model, env)
    model.learn(total_timesteps=3072)
    after = tiltenv.evaluate(model, env)
    assert after["proxy_value"] > before["proxy_value"] + 0.3, (before["proxy_value"], after["proxy_value"])
    assert after["kl"] > before["kl"]
    # And through the batched adapter.
    venv = SB3VecEnv.make("tiltenv/SingleIndex-v0", num_envs=8, **kwargs)
    venv.seed(0)
    model = PPO("MultiInputPolicy", venv, n_steps=32, batch_size=64, learning_rate=3e-3, seed=0, verbose=0)
    model.learn(total_timesteps=3072)
    assert tiltenv.evaluate(model, venv.venv)["proxy_value"] > before["proxy_value"] + 0.3


def test_from_task_builds_envs_over_a_public_task_without_its_config():
    world = tiltenv.make_world(tiltenv.TaskConfig(**SMALL))
    env = TiltEnv.from_task(world.task, obs_mode="flat")
    venv = TiltVectorEnv.from_task(world.task, num_envs=4)
    assert env.task is world.task and venv.task is world.task
    env.reset(seed=0)
    env.step(1)
    venv.reset(seed=0)
    venv.step(np.zeros(4, dtype=int))
    assert world.task.budget.proxy_queries == 5  # charged to the task handed in
    assert isinstance(TiltEnv.from_task(tiltenv.make_world(tiltenv.TabularConfig()).task), tiltenv.envs.TabularEnv)
    with pytest.raises(TypeError, match="takes the task's parameters from the task"):
        TiltEnv.from_task(world.task, d=5)
    with pytest.raises(TypeError, match="expects a tiltenv PublicTask"):
        TiltEnv.from_task(world.judge)


@pytest.mark.parametrize("output", ["numpy", "torch"])
def test_vector_observations_do_not_alias_env_state(output):
    venv = gym.make_vec("tiltenv/SingleIndex-v0", num_envs=4, output=output, **SMALL)
    twin = gym.make_vec("tiltenv/SingleIndex-v0", num_envs=4, output=output, **SMALL)
    obs, _ = venv.reset(seed=1)
    twin.reset(seed=1)
    obs["candidates"][:] = 0  # a user normalizing observations in place
    actions = np.arange(4)
    r1 = venv.step(actions)[1]
    r2 = twin.step(actions)[1]
    assert (r1 == r2).all()


def test_evaluate_accepts_sb3_models_with_their_own_envs_and_checks_spaces():
    from stable_baselines3 import PPO

    venv = SB3VecEnv.make("tiltenv/SingleIndex-v0", num_envs=4, **SMALL)
    model = PPO("MultiInputPolicy", venv, n_steps=8, batch_size=32, seed=0, verbose=0)
    a = tiltenv.evaluate(model, model.get_env())
    b = tiltenv.evaluate(model, venv.venv)
    assert a == b
    other = gym.make("tiltenv/SingleIndex-v0", **{**SMALL, "K": 6})
    with pytest.raises(ValueError, match=r"trained on observations .* evaluate it on the task it was trained on"):
        tiltenv.evaluate(model, other)


def test_spec_records_the_validated_config_and_round_trips_numpy_inputs():
    import json

    env = gym.make("tiltenv/SingleIndex-v0", seed=np.int64(3), **SMALL)
    kwargs = json.loads(env.spec.to_json())["kwargs"]
    assert kwargs["seed"] == 3 and kwargs["d"] == SMALL["d"]
    again = gym.make(env.spec.id, **{k: v for k, v in kwargs.items()})
    assert again.unwrapped.config == env.unwrapped.config
    tab = gym.make("tiltenv/Tabular-v0", gold=np.array([0.0, 1.0, 2.0]), proxy=np.array([2.0, 1.0, 0.0]),
                   ref_probs=np.array([0.5, 0.25, 0.25]))
    assert json.loads(tab.spec.to_json())["kwargs"]["gold"] == [0.0, 1.0, 2.0]


@pytest.mark.parametrize("output", ["numpy", "torch"])
@pytest.mark.parametrize("obs_mode", ["dict", "flat"])
def test_final_obs_view_is_gymnasiums_object_array_without_the_per_step_cost(output, obs_mode):
    from tiltenv.envs import FinalObs

    kw = dict(num_envs=5, output=output, obs_mode=obs_mode, **SMALL)
    lazy = gym.make_vec("tiltenv/SingleIndex-v0", **kw)
    exact = gym.make_vec("tiltenv/SingleIndex-v0", final_obs="array", **kw)
    obs, _ = lazy.reset(seed=4)
    exact.reset(seed=4)
    actions = np.array([0, 1, 2, 3, 4])
    _, r_lazy, *_, info = lazy.step(actions)
    _, r_exact, *_, info_exact = exact.step(actions)
    view, arr = info["final_obs"], info_exact["final_obs"]
    assert isinstance(view, FinalObs) and view.batched is obs  # a reference, not a copy
    assert isinstance(arr, np.ndarray) and arr.dtype == object and arr.shape == view.shape == (5,)
    assert len(view) == 5 and np.asarray(view).dtype == object

    def same(a, b):
        if isinstance(a, dict):
            assert a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
            return True
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        return True

    for i in (0, 3, -1):
        same(view[i], arr[i])
    for a, b in zip(view, arr):
        same(a, b)
    for a, b in zip(np.asarray(view), arr):
        same(a, b)
    assert (r_lazy == r_exact).all()
    with pytest.raises(IndexError):
        view[5]
    view[2] = "replaced"  # Gymnasium's observation wrappers write into final_obs
    assert view[2] == "replaced" and view[1] is not None
    # the masks are Gymnasium's: all True, one per env (shared read-only arrays)
    assert info["_final_obs"].shape == (5,) and info["_final_obs"].all() and info["_final_info"].all()
    with pytest.raises(ValueError, match="final_obs must be one of"):
        gym.make_vec("tiltenv/SingleIndex-v0", num_envs=2, final_obs="list", **SMALL)


def test_final_obs_supports_gymnasiums_same_step_wrapper_loop():
    # gymnasium.wrappers.vector.VectorizeTransformObservation's SAME_STEP branch, verbatim in shape
    venv = gym.make_vec("tiltenv/SingleIndex-v0", num_envs=3, obs_mode="flat", **SMALL)
    obs, _ = venv.reset(seed=0)
    *_, infos = venv.step(np.zeros(3, dtype=int))
    final_obs = infos["final_obs"]
    for i, (sub_obs, has_final_obs) in enumerate(zip(final_obs, infos["_final_obs"], strict=True)):
        if has_final_obs:
            final_obs[i] = sub_obs * 2
    for i in range(3):
        np.testing.assert_allclose(infos["final_obs"][i], 2 * obs[i])


def test_host_actions_are_range_checked_before_the_device_transfer():
    venv = gym.make_vec("tiltenv/SingleIndex-v0", num_envs=3, **SMALL)
    venv.reset(seed=0)
    with pytest.raises(ValueError, match=r"\[0, 7\]"):
        venv.step(np.array([0, 8, 1]))
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        venv.step([0, 1])
    venv.step([0, 1, 2])  # a plain list is a valid batch of actions
