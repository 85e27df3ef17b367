"""Best-of-n: draw n candidates from π_ref, keep the one the proxy scores highest (exact over K).

Exact law over the K candidates of a context (Gao et al. 2023, §2.2; Beirami et al. 2024, "Theoretical
guarantees on the best-of-n alignment policy"): sort candidates by proxy ascending, with ``F_i`` the
π_ref mass ranked at or below ``i``,

    P(i) = F_i^n − F_{i−1}^n                                    (``tiltenv.metrics.best_of_n_logp``)

and its KL to π_ref is at most ``log n − (n−1)/n``. Nothing is trained; proxy scores made when the policy is
called are deployment, not training budget (``count=False``). :func:`n_sweep` builds the agents of a sweep
over n (Gao et al.'s best-of-n overoptimization curve).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import field
from typing import Any

import torch

from baselines.base import Agent, TrainBudget, as_tensor, output_device, check_device, resolve_device, config_dataclass
from tiltenv import metrics as M
from tiltenv._validation import check_float

__all__ = ["BestOfNConfig", "BestOfN", "n_sweep"]


@config_dataclass
class BestOfNConfig:
    """Exact best-of-n on the proxy."""

    n: float = field(default=16.0, metadata={"help": "Number of π_ref draws, >= 1 (non-integers interpolate)."})
    device: str = field(default="auto", metadata={"help": "'auto' (CUDA when available), 'cpu', 'cuda' or 'cuda:N'."})

    def __post_init__(self) -> None:
        self.n = check_float("n", self.n, low=1.0)
        self.device = check_device(self.device)


class BestOfN(Agent):
    """Exact best-of-n over the K candidates; see the module docstring."""

    name = "best_of_n"
    config_class = BestOfNConfig
    config: BestOfNConfig

    def fit(self, task: Any, budget: TrainBudget | None = None, checkpoint=None) -> "BestOfN":
        self._check_task(task)
        self._budget(budget)
        self.task = task
        self.device = resolve_device(self.config.device)
        self._checkpoint_once(checkpoint)
        return self

    @torch.no_grad()
    def policy(self, candidates: Any, ref_logp: Any) -> torch.Tensor:
        if not hasattr(self, "task"):
            raise RuntimeError("BestOfN.policy() called before fit().")
        out_device = output_device(candidates)
        cand = as_tensor(candidates, self.device)
        ref = as_tensor(ref_logp, self.device, torch.float64)
        proxy = self.task.proxy_reward(cand, count=False)
        return M.best_of_n_logp(ref, proxy, self.config.n).to(out_device)

    def snapshot(self) -> "BestOfN":
        return copy.copy(self)


def n_sweep(task: Any, ns: Sequence[float], device: str = "auto") -> list[BestOfN]:
    """Fitted :class:`BestOfN` agents, one per n."""
    return [BestOfN(BestOfNConfig(n=float(n), device=device)).fit(task) for n in ns]
