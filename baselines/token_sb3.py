"""A Stable-Baselines3 model trained on ``tiltenv/Tokens-v0`` as a sequence policy, for exact scoring.

``SB3TokenPolicy(model, task)`` follows the sequence-policy protocol of :mod:`tiltenv.worlds.tokens.model`: its state is
the env's observation (prompt, tokens so far padded with V, position) as one int64 row, and ``next_logits`` asks
the model's action distribution. So ``world.judge.evaluate(SB3TokenPolicy(model, task))`` enumerates the SB3
policy over all V^L responses, exactly as for a token-level network.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["SB3TokenPolicy"]


class SB3TokenPolicy:
    def __init__(self, model: Any, task: Any) -> None:
        self.model, self.V, self.L, self.P = model, task.V, task.L, task.prompt_len

    def initial_state(self, prompts: torch.Tensor) -> torch.Tensor:
        n = prompts.shape[0]
        pad = torch.full((n, self.L), self.V, dtype=torch.int64)
        return torch.cat([prompts.to(torch.int64), pad, torch.zeros((n, 1), dtype=torch.int64)], 1)

    def next_logits(self, state: torch.Tensor) -> torch.Tensor:
        P, L = self.P, self.L
        obs = {"prompt": state[:, :P].numpy(), "tokens": state[:, P:P + L].numpy(), "position": state[:, -1].numpy()}
        policy = self.model.policy
        with torch.no_grad():
            obs_t, _ = policy.obs_to_tensor(obs)
            return policy.get_distribution(obs_t).distribution.logits.to(torch.float64).cpu()

    def advance(self, state: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        out = state.clone()
        rows = torch.arange(state.shape[0])
        pos = state[:, -1]
        out[rows, self.P + pos] = tokens.to(torch.int64)
        out[:, -1] = pos + 1
        return out
