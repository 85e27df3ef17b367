"""``tiltenv/Tokens-v0``: one token per step, the proxy reward at the end of the response.

Observation (a ``Dict``): ``prompt`` (``MultiDiscrete([V] * prompt_len)``), ``tokens`` (the response so far,
``MultiDiscrete([V + 1] * L)``, unfilled positions hold the pad value ``V``) and ``position`` (``Discrete(L + 1)``:
tokens emitted so far). Action: ``Discrete(V)``, the next token. Each episode is exactly ``L`` steps; the last
step's reward is the proxy reward of the full response; no gold appears anywhere.

``kl_coef = β > 0`` adds per-token shaping ``β log π_ref(y_t | c, y_<t)`` to every step's reward. With the agent's
own ``-β log π(y_t | …)`` (an entropy bonus, e.g. SB3's ``ent_coef = β``) the return's expectation is
``E r̂ − β KL(π‖π_ref)``, TRL's per-token KL reward; an env cannot add the policy's own log-probability itself.

:class:`TokenVectorEnv` is the native batched version (torch end to end; ``gym.make_vec``). Every episode has
the same length, so all sub-envs end together; autoreset is ``SAME_STEP`` as for the bandit vector envs.

Example:
    >>> import gymnasium as gym, tiltenv
    >>> env = gym.make("tiltenv/Tokens-v0", V=4, L=3, n_labels=200, n_eval_contexts=8, n_norm_contexts=8)
    >>> obs, info = env.reset(seed=0)
    >>> sorted(obs), int(obs["position"])
    (['position', 'prompt', 'tokens'], 0)
    >>> for t in range(3):
    ...     obs, reward, terminated, truncated, info = env.step(1)
    >>> obs["tokens"].tolist(), terminated
    ([1, 1, 1], True)
"""

from __future__ import annotations

import dataclasses
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from tiltenv._validation import ParameterTypeError, check_choice, check_float, check_int
from tiltenv.worlds.config import config_from_kwargs
from tiltenv.envs import FinalObs
from tiltenv.worlds.tokens.config import TokenConfig
from tiltenv.worlds.tokens.world import TokenTask
from tiltenv.worlds.world import make_world, torch_generator

__all__ = ["TokenEnv", "TokenVectorEnv", "token_observation_space"]


def token_observation_space(V: int, L: int, prompt_len: int) -> spaces.Dict:
    return spaces.Dict({
        "prompt": spaces.MultiDiscrete(np.full(prompt_len, V, dtype=np.int64)),
        "tokens": spaces.MultiDiscrete(np.full(L, V + 1, dtype=np.int64)),
        "position": spaces.Discrete(L + 1),
    })


class _TokenMixin:
    def _init_token_task(self, kl_coef: Any, task_kwargs: dict[str, Any]) -> None:
        task = getattr(self, "_given_task", None)
        if task is None:
            try:
                self.config = config_from_kwargs(task_kwargs, TokenConfig)
            except TypeError as exc:
                raise ParameterTypeError(str(exc)) from exc.__cause__
            task = make_world(self.config).task
        elif task_kwargs:
            raise TypeError(f"from_task takes the task's parameters from the task; got {sorted(task_kwargs)}.")
        else:
            self.config = task.config
        self.task: TokenTask = task
        self.kl_coef = check_float("kl_coef", kl_coef, low=0.0)
        self.V, self.L, self.P = task.V, task.L, task.prompt_len

    @classmethod
    def from_task(cls, task: TokenTask, **kwargs: Any):
        """An env over an existing public token task (no world built, no judge touched)."""
        if not isinstance(task, TokenTask):
            raise TypeError(f"from_task expects a tiltenv TokenTask (got {type(task).__name__}).")
        env = cls.__new__(cls)
        env._given_task = task
        env.__init__(**kwargs)
        return env

    @property
    def spec(self):
        return self.__dict__.get("_spec")

    @spec.setter
    def spec(self, value) -> None:  # record the validated config (as the bandit envs do)
        if value is not None and isinstance(getattr(self, "config", None), TokenConfig):
            value = dataclasses.replace(value, kwargs={**value.kwargs, **self.config.to_dict()})
        self.__dict__["_spec"] = value

    def _check_actions(self, a: torch.Tensor) -> torch.Tensor:
        if a.dtype == torch.bool or a.is_complex() or (a.dtype.is_floating_point and not torch.all(a == a.round())):
            raise ValueError(f"action must be a token in [0, {self.V - 1}] (got {a.tolist()}).")
        a = a.long()
        if bool(((a < 0) | (a >= self.V)).any()):
            raise ValueError(f"action must be a token in [0, {self.V - 1}] (V={self.V}); got {a.tolist()[:8]}.")
        return a


class TokenEnv(_TokenMixin, gym.Env):
    """One response, one token per step (module docstring).

    Args:
        kl_coef: β of the per-token shaping ``β log π_ref(y_t | c, y_<t)``; 0 (default) gives no shaping.
        **task_kwargs: fields of :class:`~tiltenv.worlds.tokens.TokenConfig`.
    """

    metadata = {"render_modes": []}

    def __init__(self, kl_coef: float = 0.0, **task_kwargs: Any) -> None:
        super().__init__()
        self._init_token_task(kl_coef, task_kwargs)
        self.observation_space = token_observation_space(self.V, self.L, self.P)
        self.action_space = spaces.Discrete(self.V)
        self._gen: torch.Generator | None = None
        self._prompt: torch.Tensor | None = None

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        if seed is not None or self._gen is None:
            self._gen = torch_generator(int(self.np_random.integers(2**63 - 1)))
        self._prompt = self.task.sampler.prompts(1, self._gen)
        self.task.budget.contexts_sampled += 1
        self._tokens = torch.full((1, self.L), self.V, dtype=torch.int64)
        self._pos = 0
        self._ref_state = self.task.ref_model.initial_state(self._prompt) if self.kl_coef > 0 else None
        return self._obs(), {}

    def _obs(self) -> dict[str, Any]:
        return {"prompt": self._prompt[0].numpy().copy(), "tokens": self._tokens[0].numpy().copy(),
                "position": np.int64(self._pos)}

    def step(self, action: Any):
        if self._prompt is None or self._pos >= self.L:
            raise RuntimeError("call reset() before step() (the response is complete).")
        try:
            a = torch.as_tensor(np.asarray(action)).reshape(1)
        except (TypeError, ValueError, RuntimeError):
            raise ValueError(f"action must be a single token in [0, {self.V - 1}] (got {action!r}).") from None
        a = self._check_actions(a)
        reward = 0.0
        if self.kl_coef > 0:
            with torch.no_grad():
                lp = torch.log_softmax(self.task.ref_model.next_logits(self._ref_state).to(torch.float64), -1)
                reward += self.kl_coef * float(lp[0, a[0]])
                self._ref_state = self.task.ref_model.advance(self._ref_state, a)
        self._tokens[0, self._pos] = a[0]
        self._pos += 1
        done = self._pos == self.L
        if done:
            reward += float(self.task.reward(self._prompt, self._tokens).to(torch.float32)[0])
        return self._obs(), reward, done, False, {}


class TokenVectorEnv(_TokenMixin, VectorEnv):
    """Native batched :class:`TokenEnv` (torch end to end). ``output="torch"`` returns tensors.

    Autoreset ``SAME_STEP``: the step that completes the responses returns the next prompts' first observation,
    with ``final_obs`` / ``_final_obs`` in ``info`` (a zero-copy :class:`~tiltenv.envs.FinalObs` view).
    """

    metadata = {"render_modes": [], "autoreset_mode": AutoresetMode.SAME_STEP}

    def __init__(self, num_envs: int = 1, kl_coef: float = 0.0, output: str = "numpy", **task_kwargs: Any) -> None:
        self.num_envs = check_int("num_envs", num_envs, low=1)
        self._init_token_task(kl_coef, task_kwargs)
        self.output = check_choice("output", output, ("numpy", "torch"))
        self.single_observation_space = token_observation_space(self.V, self.L, self.P)
        self.single_action_space = spaces.Discrete(self.V)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self._gen: torch.Generator | None = None
        self._prompt: torch.Tensor | None = None
        # arrays that are the same every episode: one read-only copy each, shared (as the bandit vector env does)
        self._mask = np.ones(self.num_envs, dtype=bool)
        self._no = np.zeros(self.num_envs, dtype=bool)
        self._zeros = torch.zeros(self.num_envs, dtype=torch.float64)
        self._positions = [np.full(self.num_envs, t, dtype=np.int64) for t in range(self.L + 1)]
        for arr in (self._mask, self._no, *self._positions):
            arr.flags.writeable = False

    def reset(self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None):
        if isinstance(seed, (list, tuple)):
            raise ValueError("TokenVectorEnv draws all sub-environments from one stream: pass one int seed.")
        if seed is not None or self._gen is None:
            self._np_random, self._np_random_seed = seeding.np_random(seed)
            self._gen = torch_generator(int(self._np_random.integers(2**63 - 1)))
        self._new_episodes()
        return self._obs(), {}

    def _new_episodes(self) -> None:
        self._prompt = self.task.sampler.prompts(self.num_envs, self._gen)
        self._prompt_np = self._prompt.numpy()
        self._prompt_np.flags.writeable = False
        self.task.budget.contexts_sampled += self.num_envs
        self._tokens = torch.full((self.num_envs, self.L), self.V, dtype=torch.int64)
        self._pos = 0
        self._ref_state = self.task.ref_model.initial_state(self._prompt) if self.kl_coef > 0 else None

    def _obs(self) -> dict[str, Any]:
        if self.output == "torch":
            return {"prompt": self._prompt, "tokens": self._tokens.clone(),
                    "position": torch.full((self.num_envs,), self._pos, dtype=torch.int64)}
        return {"prompt": self._prompt_np, "tokens": self._tokens.numpy().copy(), "position": self._positions[self._pos]}

    def step(self, actions: Any):
        if self._prompt is None:
            raise RuntimeError("call reset() before step().")
        if isinstance(actions, np.ndarray) and actions.dtype.kind in "iu" and actions.shape == (self.num_envs,):
            lo, hi = actions.min(), actions.max()  # the common case, checked on the host without a tensor op
            if lo < 0 or hi >= self.V:
                raise ValueError(f"action must be a token in [0, {self.V - 1}] (V={self.V}); got "
                                 f"{actions[(actions < 0) | (actions >= self.V)].tolist()[:8]}.")
            a = torch.from_numpy(actions.astype(np.int64, copy=False))
        else:
            a = actions if isinstance(actions, torch.Tensor) else torch.as_tensor(np.asarray(actions))
            if a.shape != (self.num_envs,):
                raise ValueError(f"actions must have shape ({self.num_envs},) (got {tuple(a.shape)}).")
            a = self._check_actions(a.cpu())
        rewards = self._zeros
        if self.kl_coef > 0:
            with torch.no_grad():
                lp = torch.log_softmax(self.task.ref_model.next_logits(self._ref_state).to(torch.float64), -1)
                rewards = rewards + self.kl_coef * lp.gather(1, a[:, None]).squeeze(1)
                self._ref_state = self.task.ref_model.advance(self._ref_state, a)
        self._tokens[:, self._pos] = a
        self._pos += 1
        info: dict[str, Any] = {}
        done = self._pos == self.L
        if done:
            rewards = rewards + self.task.reward(self._prompt, self._tokens).to(torch.float64)
            final = self._obs()
            self._new_episodes()
            info = {"final_obs": FinalObs(final, self.num_envs), "_final_obs": self._mask, "final_info": {},
                    "_final_info": self._mask}
        obs = self._obs()
        term = self._mask if done else self._no
        if self.output == "torch":
            return obs, rewards.to(torch.float32), torch.from_numpy(term.copy()), torch.zeros(self.num_envs, dtype=torch.bool), info
        return obs, rewards.to(torch.float32).numpy(), term, self._no, info

    @property
    def np_random(self) -> np.random.Generator:
        if getattr(self, "_np_random", None) is None:
            self._np_random, self._np_random_seed = seeding.np_random()
        return self._np_random
