"""Best-of-n by sampling on a token task: n responses drawn from π_ref token by token, the proxy's best kept.

Its exact law over all V^L responses is ``judge.best_of_n_logp(n)`` (:func:`tiltenv.metrics.best_of_n_logp`);
``scripts/reproduce/gao_tokens.py`` checks one against the other.
"""

from __future__ import annotations

from typing import Any

import torch

from tiltenv._validation import check_int

__all__ = ["best_of_n_responses"]


def best_of_n_responses(task: Any, prompts: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    """For each prompt, the proxy-best of ``n`` π_ref responses: (N, P) -> (N, L) int64 (n × N counted queries;
    ties go to the first drawn)."""
    n = check_int("n", n, low=1)
    rep = prompts.repeat_interleave(n, 0)
    ys, _ = task.sample_responses(None, rep, generator)
    scores = task.reward(rep, ys).reshape(prompts.shape[0], n)
    best = scores.argmax(-1)
    return ys.reshape(prompts.shape[0], n, -1)[torch.arange(prompts.shape[0]), best]
