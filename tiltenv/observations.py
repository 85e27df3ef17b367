"""Observation layout shared by the envs and the evaluation of SB3 models (below both in the import graph).

An observation is a context: its K candidates ``(K, d)`` and their reference log-probabilities ``(K,)``,
as a ``Dict`` (``obs_mode="dict"``) or one flat ``Box`` of size ``K·(d+1)`` (``obs_mode="flat"``:
candidates row-major, then ref_logp). Batched helpers work on ``(n, K, d)`` / ``(n, K)`` torch tensors.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from gymnasium import spaces

__all__ = ["OBS_MODES", "REF_LOGP_FLOOR", "observation_space", "format_obs", "to_numpy"]

OBS_MODES = ("dict", "flat")
#: Observed reference log-probabilities are clipped below at this value (an arm π_ref never plays).
REF_LOGP_FLOOR = -100.0


def observation_space(K: int, d: int, obs_mode: str) -> spaces.Space:
    """The single-context observation space of a task with K candidates in R^d."""
    if obs_mode == "dict":
        return spaces.Dict(
            {
                "candidates": spaces.Box(-np.inf, np.inf, shape=(K, d), dtype=np.float32),
                "ref_logp": spaces.Box(REF_LOGP_FLOOR, 0.0, shape=(K,), dtype=np.float32),
            }
        )
    return spaces.Box(-np.inf, np.inf, shape=(K * (d + 1),), dtype=np.float32)


def format_obs(cand: torch.Tensor, ref_logp: torch.Tensor, obs_mode: str) -> Any:
    """Batched obs (n, K, d) / (n, K) torch -> dict or flat (n, K*(d+1)) torch.

    Always new memory: a user editing an observation in place must not change the env's state.
    """
    ref_logp = ref_logp.clamp_min(REF_LOGP_FLOOR)
    if obs_mode == "dict":
        return {"candidates": cand.clone(), "ref_logp": ref_logp}
    n = cand.shape[0]
    return torch.cat([cand.reshape(n, -1), ref_logp], dim=1)


def to_numpy(obs: Any) -> Any:
    """A batched torch observation (dict or tensor) -> numpy (shares memory on CPU)."""
    if isinstance(obs, dict):
        return {k: v.cpu().numpy() for k, v in obs.items()}
    return obs.cpu().numpy()
