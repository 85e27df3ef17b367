"""SB3PPO: ``stable_baselines3.PPO`` trained on the task's Gymnasium environment (the classes ``gym.make`` returns).

The reference point for "an off-the-shelf deep-RL library on this benchmark": SB3's PPO (Schulman et al.
2017, eq. 7 clipped surrogate with a learned value function and GAE) with an MLP over the flattened
observation (``MultiInputPolicy`` on the ``Dict`` observation, or ``MlpPolicy`` on ``obs_mode="flat"``).
Its reward is the env's reward, the raw proxy: SB3 has no reference-policy KL term, so this baseline is
*unregularized* RL on the proxy (only PPO's clipping and the budget hold it near π_ref), and its policy
network must learn from scratch to read K candidates (no π_ref prior, no weight sharing across candidates).

Environments (``vec_env``), both built with ``from_task`` over the public task passed to
:meth:`SB3PPO.fit` (the same Gymnasium env classes ``gym.make`` returns; no world is rebuilt, so the agent
never needs the task seed), its proxy queries charged to that task:

* ``"adapter"`` (default) — ``tiltenv.envs.SB3VecEnv`` over the native batched ``TiltVectorEnv``:
  SB3 steps ``n_envs`` bandits per call;
* ``"dummy"`` — SB3's ``DummyVecEnv`` over ``n_envs`` single ``TiltEnv``: one env at a time.

One env step is one proxy query; ``total_timesteps`` is the budget rounded down to whole rollouts
(``n_envs · n_steps``).
"""

from __future__ import annotations

import copy
import time
from dataclasses import field
from typing import Any

import torch

from baselines.base import (
    Agent,
    config_dataclass,
    Checkpointer,
    output_device,
    TrainBudget,
    as_tensor,
    check_device,
    log_spaced_points,
    out_of_time,
    resolve_device,
)
from tiltenv._validation import check_choice, check_float, check_footprint, check_int

__all__ = ["SB3PPOConfig", "SB3PPO"]


@config_dataclass
class SB3PPOConfig:
    """``stable_baselines3.PPO`` hyperparameters (SB3's names) and how the env is built."""

    vec_env: str = field(default="adapter", metadata={"help": "'adapter' (tiltenv SB3VecEnv) or 'dummy' (DummyVecEnv)."})
    n_envs: int = field(default=16, metadata={"help": "Parallel bandits."})
    obs_mode: str = field(default="dict", metadata={"help": "'dict' (MultiInputPolicy) or 'flat' (MlpPolicy)."})
    learning_rate: float = field(default=1e-3, metadata={"help": "Adam step size."})
    n_steps: int = field(default=64, metadata={"help": "Steps per env per rollout (rollout = n_envs · n_steps)."})
    batch_size: int = field(default=256, metadata={"help": "Minibatch size."})
    n_epochs: int = field(default=4, metadata={"help": "Passes over each rollout."})
    clip_range: float = field(default=0.2, metadata={"help": "ε of the clipped ratio."})
    ent_coef: float = field(default=0.0, metadata={"help": "Entropy bonus coefficient."})
    net_arch: tuple[int, ...] = field(default=(64, 64), metadata={"help": "Hidden widths of the policy and value MLPs."})
    seed: int = field(default=0, metadata={"help": "SB3 seed (global torch/numpy seeds, env seeds)."})
    device: str = field(default="auto", metadata={"help": "'auto' (CUDA when available), 'cpu', 'cuda' or 'cuda:N'."})

    def __post_init__(self) -> None:
        check_choice("vec_env", self.vec_env, ("adapter", "dummy"))
        self.n_envs = check_int("n_envs", self.n_envs, low=1)
        check_choice("obs_mode", self.obs_mode, ("dict", "flat"))
        self.learning_rate = check_float("learning_rate", self.learning_rate, low=0.0, low_open=True)
        self.n_steps = check_int("n_steps", self.n_steps, low=1)
        self.batch_size = check_int("batch_size", self.batch_size, low=2)
        self.n_epochs = check_int("n_epochs", self.n_epochs, low=1)
        self.clip_range = check_float("clip_range", self.clip_range, low=0.0, low_open=True)
        self.ent_coef = check_float("ent_coef", self.ent_coef, low=0.0)
        if isinstance(self.net_arch, int):
            self.net_arch = (self.net_arch,)
        self.net_arch = tuple(check_int("net_arch[i]", h, low=1) for h in self.net_arch)
        self.seed = check_int("seed", self.seed, low=0, high=2**31 - 1)
        self.device = check_device(self.device)


def _obs(candidates: torch.Tensor, ref_logp: torch.Tensor, obs_mode: str) -> Any:
    """Policy input in the env's observation format (numpy)."""
    from tiltenv.envs import REF_LOGP_FLOOR

    ref = ref_logp.clamp_min(REF_LOGP_FLOOR)
    if obs_mode == "dict":
        return {"candidates": candidates.cpu().numpy(), "ref_logp": ref.cpu().numpy()}
    return torch.cat([candidates.reshape(candidates.shape[0], -1), ref], 1).cpu().numpy()


@torch.no_grad()
def _sb3_log_probs(sb3_policy: Any, candidates: Any, ref_logp: Any, obs_mode: str) -> torch.Tensor:
    out_device = output_device(candidates)
    cand = as_tensor(candidates, torch.device("cpu"))
    ref = as_tensor(ref_logp, torch.device("cpu"))
    obs, _ = sb3_policy.obs_to_tensor(_obs(cand, ref, obs_mode))
    logits = sb3_policy.get_distribution(obs).distribution.logits
    return torch.log_softmax(logits.to(torch.float32), -1).to(out_device)


class _Snapshot:
    """Frozen copy of an SB3 policy network as a ``(candidates, ref_logp) -> log-probs`` callable."""

    def __init__(self, sb3_policy: Any, obs_mode: str) -> None:
        # SB3 keeps the last minibatch's torch Distribution (non-leaf logits) on ``action_dist`` between updates;
        # it is not part of the policy and cannot be deep-copied, so the copy leaves it out (memo -> None).
        last = getattr(getattr(sb3_policy, "action_dist", None), "distribution", None)
        memo = {} if last is None else {id(last): None}
        self.sb3_policy = copy.deepcopy(sb3_policy, memo).eval()
        self.obs_mode = obs_mode

    def __call__(self, candidates: Any, ref_logp: Any) -> torch.Tensor:
        return _sb3_log_probs(self.sb3_policy, candidates, ref_logp, self.obs_mode)


class SB3PPO(Agent):
    """``stable_baselines3.PPO`` on the task's env; see the module docstring. ``self.model`` is the SB3 model."""

    name = "sb3_ppo"
    config_class = SB3PPOConfig
    config: SB3PPOConfig

    def make_env(self, task: Any):
        """The SB3 ``VecEnv`` over ``task`` itself (``from_task``: no world is rebuilt, no gold is touched;
        the env's proxy queries are charged to ``task``)."""
        from tiltenv.envs import SB3VecEnv, TiltEnv, TiltVectorEnv

        cfg = self.config
        if cfg.vec_env == "adapter":
            return SB3VecEnv(TiltVectorEnv.from_task(task, num_envs=cfg.n_envs, obs_mode=cfg.obs_mode,
                                                          final_info=False))
        from stable_baselines3.common.vec_env import DummyVecEnv

        return DummyVecEnv([lambda: TiltEnv.from_task(task, obs_mode=cfg.obs_mode) for _ in range(cfg.n_envs)])

    def fit(self, task: Any, budget: TrainBudget | None = None, checkpoint=None) -> "SB3PPO":
        from stable_baselines3 import PPO
        from stable_baselines3.common.callbacks import BaseCallback

        cfg, budget = self.config, self._budget(budget)
        self._check_task(task)
        rollout = cfg.n_envs * cfg.n_steps
        total = (budget.proxy_queries // rollout) * rollout
        if total == 0:
            raise ValueError(
                f"one SB3 rollout is n_envs·n_steps = {rollout} env steps (proxy queries) but the budget allows "
                f"{budget.proxy_queries}; lower n_envs or n_steps."
            )
        # SB3's rollout buffer: observations (K·(d+1) float32 a step, dict or flat) and 7 per-step float32 arrays
        check_footprint("SB3 PPO's rollout buffer", 4 * rollout * (task.K * (task.d + 1) + 7),
                        f"n_envs {cfg.n_envs} × n_steps {cfg.n_steps} × (K {task.K} × (d {task.d} + 1) + 7) float32",
                        "lower n_envs or n_steps")
        self.device = resolve_device(cfg.device)
        venv = self.make_env(task)
        policy_name = "MultiInputPolicy" if cfg.obs_mode == "dict" else "MlpPolicy"
        self.model = PPO(
            policy_name, venv, learning_rate=cfg.learning_rate, n_steps=cfg.n_steps,
            batch_size=min(cfg.batch_size, rollout), n_epochs=cfg.n_epochs, gamma=1.0, gae_lambda=1.0,
            clip_range=cfg.clip_range, ent_coef=cfg.ent_coef, seed=cfg.seed, device=self.device, verbose=0,
            policy_kwargs={"net_arch": list(cfg.net_arch)},
        )
        ckpt = Checkpointer(checkpoint, sorted({*log_spaced_points(total, budget.n_checkpoints, first=rollout),
                                                *budget.checkpoint_marks()}))  # the scorer's marks are due on the leaderboard
        q0, started = task.budget.proxy_queries, time.perf_counter()
        agent = self

        class _Callback(BaseCallback):
            # Checkpoints are taken when a rollout starts, i.e. after SB3 trained on every step collected so far:
            # a snapshot taken inside a rollout (``_on_step``) is the policy *before* that rollout's update, so the
            # last checkpoint was not the fitted policy (issue 9). ``finish`` reports the policy after the last update.
            def _on_rollout_start(self) -> None:
                ckpt(task.budget.proxy_queries - q0, agent.snapshot)

            def _on_step(self) -> bool:
                return not out_of_time(budget, started)

        ckpt.start(self.snapshot)
        self.model.learn(total_timesteps=total, callback=_Callback())
        ckpt.finish(task.budget.proxy_queries - q0, self.snapshot)
        self.checkpoint_steps = ckpt.steps
        self.fit_time = time.perf_counter() - started
        venv.close()
        return self

    def policy(self, candidates: Any, ref_logp: Any) -> torch.Tensor:
        if not hasattr(self, "model"):
            raise RuntimeError("SB3PPO.policy() called before fit().")
        return _sb3_log_probs(self.model.policy, candidates, ref_logp, self.config.obs_mode)

    def snapshot(self) -> _Snapshot:
        return _Snapshot(self.model.policy, self.config.obs_mode)

