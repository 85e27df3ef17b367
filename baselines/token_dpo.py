r"""DPO / IPO on response pairs with sequence log-ratios, for a token task.

Rafailov et al. (2023), DPO eq. 7, with the sequence log-ratio ``h = [log π(y_w|c) − log π_ref(y_w|c)] −
[log π(y_l|c) − log π_ref(y_l|c)]`` (each ``log π(y|c) = Σ_t log π(y_t | c, y_<t)``, as TRL sums token
log-probabilities over the completion): loss ``−log σ(β h)``; IPO (Azar et al. 2024, eq. 17): ``(h − 1/(2β))²``.
The pairs are the task's ``token_preferences`` (two π_ref responses per label prompt, the labeler's choice); the
policy is a GRU initialized at π_ref, so ``h = 0`` and the DPO loss is ``log 2`` at step 0.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import field
from typing import Any

import torch

from baselines.base import check_beta, config_dataclass, finite_or_raise
from tiltenv._validation import check_choice, check_float, check_int
from tiltenv.worlds.tokens.tree import sequence_logp

__all__ = ["TokenDPOConfig", "TokenDPO"]


@config_dataclass
class TokenDPOConfig:
    """DPO / IPO on a token task's preference pairs."""

    loss_type: str = field(default="sigmoid", metadata={"help": "'sigmoid' (DPO) or 'ipo'."})
    beta: float | None = field(default=None, metadata={"help": "β of the loss (None: the task's β)."})
    learning_rate: float = field(default=0.005, metadata={"help": "Adam step size."})
    batch_size: int = field(default=64, metadata={"help": "Pairs per update."})
    epochs: int = field(default=2, metadata={"help": "Passes over the pairs."})
    seed: int = field(default=0, metadata={"help": "Seeds the order of the pairs."})

    def __post_init__(self) -> None:
        check_choice("loss_type", self.loss_type, ("sigmoid", "ipo"))
        self.beta = check_beta(self.beta)
        if self.beta == 0.0:
            raise ValueError("beta must be > 0 for DPO/IPO (got 0).")
        self.learning_rate = check_float("learning_rate", self.learning_rate, low=0.0, low_open=True)
        self.batch_size = check_int("batch_size", self.batch_size, low=1)
        self.epochs = check_int("epochs", self.epochs, low=1)
        self.seed = check_int("seed", self.seed, low=0, high=2**63 - 1)


class TokenDPO:
    """DPO / IPO on ``task.token_preferences``; ``fit`` trains ``self.model`` (module docstring)."""

    def __init__(self, config: TokenDPOConfig | None = None, **kwargs: Any) -> None:
        self.config = config if config is not None else TokenDPOConfig(**kwargs)
        self.model: Any = None
        self.history: list[float] = []

    def loss(self, model: Any, ref_c: torch.Tensor, ref_r: torch.Tensor, prompts: torch.Tensor,
             chosen: torch.Tensor, rejected: torch.Tensor, beta: float) -> torch.Tensor:
        h = (sequence_logp(model, prompts, chosen) - ref_c) - (sequence_logp(model, prompts, rejected) - ref_r)
        if self.config.loss_type == "sigmoid":
            return -torch.nn.functional.logsigmoid(beta * h).mean()
        return ((h - 1.0 / (2.0 * beta)) ** 2).mean()

    def fit(self, task: Any, checkpoint: Callable[[int, Any], None] | None = None) -> "TokenDPO":
        cfg = self.config
        tp = task.token_preferences
        if not tp:
            raise ValueError("this token task has no preference pairs (its proxy kind needs no labels).")
        beta = task.beta if cfg.beta is None else cfg.beta
        win = tp["label"].bool()[:, None]
        chosen, rejected = torch.where(win, tp["a"], tp["b"]), torch.where(win, tp["b"], tp["a"])
        prompts = tp["prompts"]
        ref_c, ref_r = task.ref_sequence_logp(prompts, chosen), task.ref_sequence_logp(prompts, rejected)
        self.model = model = task.make_policy()
        opt = torch.optim.Adam(model.parameters(), lr=cfg.learning_rate)
        g = torch.Generator().manual_seed(cfg.seed)
        n, seen = prompts.shape[0], 0
        if checkpoint is not None:
            checkpoint(0, self.snapshot())
        for _ in range(cfg.epochs):
            order = torch.randperm(n, generator=g)
            for s in range(0, n, cfg.batch_size):
                i = order[s:s + cfg.batch_size]
                loss = self.loss(model, ref_c[i], ref_r[i], prompts[i], chosen[i], rejected[i], beta)
                finite_or_raise(loss, "the DPO loss")
                opt.zero_grad()
                loss.backward()
                opt.step()
                seen += int(i.numel())
                self.history.append(float(loss.detach()))
            if checkpoint is not None:
                checkpoint(seen, self.snapshot())
        return self

    def snapshot(self) -> Any:
        return copy.deepcopy(self.model).requires_grad_(False).eval()
