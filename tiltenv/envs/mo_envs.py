"""Gymnasium envs of the multi-objective tasks (:mod:`tiltenv.worlds.multiobjective`): the single-index envs with a
:class:`~tiltenv.worlds.multiobjective.MultiObjectiveConfig` — same observations and actions; the reward is the task's
proxy (the weighted aggregate of the per-dimension reward models, or the conflated model).

Example:
    >>> import gymnasium as gym, tiltenv
    >>> env = gym.make("tiltenv/HelpfulHarmless-v0", d=6, K=8, n_labels=200, n_eval_contexts=64, n_norm_contexts=64)
    >>> env.spec.kwargs["cosines"], env.unwrapped.task.n_objectives
    ([-0.5], 2)
"""

from __future__ import annotations

from tiltenv.envs import TiltEnv, TiltVectorEnv
from tiltenv.worlds.multiobjective import MultiObjectiveConfig

__all__ = ["MultiObjectiveEnv", "MultiObjectiveVectorEnv"]


class MultiObjectiveEnv(TiltEnv):
    """One-step bandit over a multi-objective task (every :class:`MultiObjectiveConfig` field is a kwarg)."""

    config_cls = MultiObjectiveConfig


class MultiObjectiveVectorEnv(TiltVectorEnv):
    """Native batched torch version of :class:`MultiObjectiveEnv`."""

    config_cls = MultiObjectiveConfig
