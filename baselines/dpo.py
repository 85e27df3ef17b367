"""DPO family on the task's preference data (TRL's ``loss_type`` names).

Rafailov et al. (2023), "Direct Preference Optimization", eq. 7, with the implicit reward margin

    h = [log π(y_c|x) − log π_ref(y_c|x)] − [log π(y_r|x) − log π_ref(y_r|x)]

For this policy class ``log π − log π_ref = f_φ(x_k) − log Z(x)`` and both candidates of a pair come from
the same context, so ``log Z`` cancels: ``h = f_φ(x_c) − f_φ(x_r)`` (no proxy queries, no other candidates).
Losses (TRL ``DPOTrainer``; ``ε = label_smoothing``):

* ``sigmoid`` — DPO, eq. 7: ``−(1−ε) log σ(β h) − ε log σ(−β h)`` (ε > 0: conservative DPO, Mitchell 2023);
* ``robust``  — rDPO (Chowdhury et al. 2024, "Provably Robust DPO"), unbiased under label flips at rate ε:
  ``[−(1−ε) log σ(β h) + ε log σ(−β h)] / (1 − 2ε)``;
* ``hinge``   — SLiC (Zhao et al. 2023, "SLiC-HF"): ``max(0, 1 − β h)``;
* ``ipo``     — IPO (Azar et al. 2023, "A General Theoretical Paradigm to Understand Learning from Human
  Preferences", eq. 17): ``(h − 1/(2β))²``.

**Fixed points.** With Bradley–Terry labels ``P(a ≻ b) = σ((r_a − r_b)/τ)``, τ > 0, the population ``sigmoid``
loss is minimized where ``β h(a, b) = (r_a − r_b)/τ`` for every pair, i.e. ``f = r/(τβ) + c``:
``π = π_ref e^{(r/τ)/β}/Z``, the β-tilt of the BT reward ``r/τ`` (tested). With deterministic labels (τ = 0)
that requires ``h = ∞`` and DPO's logits diverge; IPO's minimizer ``h(a, b) = (2P(a ≻ b) − 1)/(2β)`` stays
finite (tested).

Budget unit: preference pairs seen (``step`` of ``checkpoint``); the proxy is never queried. Training runs
``num_train_epochs`` shuffled passes of ``batch_size`` pairs (or stops at the budget's wall time).
"""

from __future__ import annotations

import time
from dataclasses import field
from typing import Any

import torch
import torch.nn.functional as F

from baselines.base import (
    Agent,
    config_dataclass,
    Checkpointer,
    TrainBudget,
    check_beta,
    check_device,
    check_optimizer,
    finite_or_raise,
    log_spaced_points,
    make_optimizer,
    out_of_time,
    resolve_device,
)
from baselines.policy import Policy, PolicySnapshot, check_head
from tiltenv._validation import check_choice, check_float, check_int

__all__ = ["DPOConfig", "DPO", "dpo_loss", "LOSS_TYPES"]

LOSS_TYPES = ("sigmoid", "ipo", "hinge", "robust")


@config_dataclass
class DPOConfig:
    """DPO and its variants (TRL's ``DPOConfig`` names)."""

    beta: float | None = field(default=None, metadata={"help": "β of the implicit reward β·h (None: the task's β); > 0."})
    loss_type: str = field(default="sigmoid", metadata={"help": f"One of {LOSS_TYPES} (TRL names)."})
    label_smoothing: float = field(
        default=0.0, metadata={"help": "ε ∈ [0, 0.5): assumed label-flip rate (sigmoid: cDPO, robust: rDPO)."}
    )
    learning_rate: float = field(default=0.05, metadata={"help": "Optimizer step size."})
    optimizer: str = field(default="adam", metadata={"help": "'adam' or plain 'sgd'."})
    momentum: float = field(default=0.0, metadata={"help": "SGD momentum (optimizer='sgd' only)."})
    batch_size: int = field(default=256, metadata={"help": "Preference pairs per step."})
    num_train_epochs: int = field(default=30, metadata={"help": "Passes over the preference data."})
    policy: str = field(default="linear", metadata={"help": "f_φ of log π = log π_ref + f_φ(x): 'linear' or 'mlp'."})
    hidden_sizes: tuple[int, ...] = field(default=(32, 32), metadata={"help": "MLP hidden widths (policy='mlp')."})
    activation: str = field(default="tanh", metadata={"help": "MLP activation: 'tanh', 'relu' or 'gelu'."})
    seed: int = field(default=0, metadata={"help": "Seeds initialization and shuffling."})
    device: str = field(default="auto", metadata={"help": "'auto' (CUDA when available), 'cpu', 'cuda' or 'cuda:N'."})

    def __post_init__(self) -> None:
        self.beta = check_beta(self.beta)
        if self.beta == 0:
            raise ValueError("beta must be > 0 for DPO (the implicit reward is β·h; IPO's target is 1/(2β)).")
        check_choice("loss_type", self.loss_type, LOSS_TYPES)
        self.label_smoothing = check_float("label_smoothing", self.label_smoothing, low=0.0, high=0.5, high_open=True)
        if self.label_smoothing and self.loss_type in ("hinge", "ipo"):
            raise ValueError(f"label_smoothing applies to loss_type 'sigmoid' or 'robust' (got {self.loss_type!r}).")
        self.learning_rate = check_float("learning_rate", self.learning_rate, low=0.0, low_open=True)
        self.optimizer = check_optimizer(self.optimizer)
        self.momentum = check_float("momentum", self.momentum, low=0.0, high=1.0, high_open=True)
        if self.momentum and self.optimizer != "sgd":
            raise ValueError(f"momentum={self.momentum} only applies to optimizer='sgd' (got optimizer={self.optimizer!r}).")
        self.batch_size = check_int("batch_size", self.batch_size, low=1)
        self.num_train_epochs = check_int("num_train_epochs", self.num_train_epochs, low=1)
        self.hidden_sizes = check_head(self.policy, self.hidden_sizes, self.activation)
        self.seed = check_int("seed", self.seed, low=0, high=2**63 - 1)
        self.device = check_device(self.device)


def dpo_loss(h: torch.Tensor, loss_type: str, beta: float, label_smoothing: float = 0.0) -> torch.Tensor:
    """Per-pair loss of the margin ``h`` (n,) → (n,); formulas in the module docstring (TRL's ``dpo_loss``)."""
    eps = label_smoothing
    if loss_type == "sigmoid":  # Rafailov et al. (2023) eq. 7 (+ cDPO label smoothing)
        return -(1 - eps) * F.logsigmoid(beta * h) - eps * F.logsigmoid(-beta * h)
    if loss_type == "robust":  # Chowdhury et al. (2024), rDPO
        return (-(1 - eps) * F.logsigmoid(beta * h) + eps * F.logsigmoid(-beta * h)) / (1 - 2 * eps)
    if loss_type == "hinge":  # Zhao et al. (2023), SLiC
        return torch.relu(1 - beta * h)
    if loss_type == "ipo":  # Azar et al. (2023) eq. 17
        return (h - 1 / (2 * beta)) ** 2
    raise ValueError(f"loss_type must be one of {LOSS_TYPES} (got {loss_type!r}).")


class DPO(Agent):
    """DPO family on ``task.preferences``; see the module docstring."""

    name = "dpo"
    config_class = DPOConfig
    config: DPOConfig

    def fit(self, task: Any, budget: TrainBudget | None = None, checkpoint=None) -> "DPO":
        cfg, budget = self.config, self._budget(budget)
        self._check_task(task)
        prefs = getattr(task, "preferences", None)
        if prefs is None or len(prefs) == 0:
            raise ValueError(
                "DPO needs pairwise preference data (task.preferences), but this task has none "
                "(tabular tasks and label_kind='pointwise' have no pairs)."
            )
        self.device = resolve_device(cfg.device)
        self.beta_ = float(task.beta if cfg.beta is None else cfg.beta)
        self.net = Policy(task.d, cfg.policy, cfg.hidden_sizes, cfg.activation, seed=cfg.seed, device=self.device)
        opt = make_optimizer(self.net.parameters(), cfg.optimizer, cfg.learning_rate, cfg.momentum)
        gen = torch.Generator(device=self.device).manual_seed(cfg.seed)
        chosen = prefs.chosen.to(self.device, torch.float32)
        rejected = prefs.rejected.to(self.device, torch.float32)
        n = chosen.shape[0]
        total = n * cfg.num_train_epochs
        ckpt = Checkpointer(checkpoint, log_spaced_points(total, budget.n_checkpoints, first=min(n, cfg.batch_size)),
                            every=budget.checkpoint_every)
        self.history = []
        started, seen = time.perf_counter(), 0
        ckpt.start(self.snapshot)
        for _epoch in range(cfg.num_train_epochs):
            if out_of_time(budget, started):  # checked between updates, as TrainBudget promises
                break
            perm = torch.randperm(n, generator=gen, device=self.device)
            for idx in perm.split(cfg.batch_size):
                if out_of_time(budget, started):
                    break
                h = self.net.score(chosen[idx]) - self.net.score(rejected[idx])  # log Z(x) cancels within a pair
                loss = dpo_loss(h, cfg.loss_type, self.beta_, cfg.label_smoothing).mean()
                finite_or_raise(loss, "DPO loss")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                seen += int(idx.numel())
                self.history.append({"step": seen, "loss": loss.item(), "margin": h.mean().item(),
                                     "accuracy": (h > 0).float().mean().item()})
                ckpt(seen, self.snapshot)
        ckpt.finish(seen, self.snapshot)
        self.checkpoint_steps = ckpt.steps
        self.fit_time = time.perf_counter() - started
        return self

    def policy(self, candidates: Any, ref_logp: Any) -> torch.Tensor:
        if not hasattr(self, "net"):
            raise RuntimeError("DPO.policy() called before fit().")
        return self.net.log_probs(candidates, ref_logp)

    def snapshot(self) -> PolicySnapshot:
        return self.net.frozen()
