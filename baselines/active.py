"""Active labeling / online RLHF: the agent chooses which pairs to label, in rounds, and re-optimizes in between.

Protocol: ``fit(task, budget, checkpoint, channel=...)`` — the usual protocol plus a
:class:`tiltenv.lifecycle.active.LabelChannel` (``tiltenv.lifecycle.active.open_label_channel(env)``, judge side), the only way to new
labels. Each round the agent

1. fits its own linear Bradley–Terry reward model ``r̂ = <w, x>`` on every label it holds (the task's preference
   data first, then what it bought), ridge Newton (:func:`tiltenv.rewards.proxies.fit_linear_bt`), normalized under π_ref
   pooled over contexts like the task's proxies;
2. optimizes its policy: the closed-form KL tilt ``π ∝ π_ref e^{r̂/β}`` (the optimum of the regularized objective
   on r̂);
3. spends ``remaining / rounds_left`` labels on pairs chosen by ``strategy`` from a pool of fresh contexts:

   * ``random`` — pairs drawn from π_ref (what an offline dataset of the same size holds);
   * ``on_policy`` — pairs drawn from the current policy π;
   * ``low_margin`` — of the policy's pool pairs, those with the smallest ``|Δr̂|`` (uncertainty sampling);
   * ``disagreement`` — of the policy's pool pairs, those where ``ensemble_k`` bootstrap reward models disagree
     most (variance of their predicted preference probability).

``checkpoint(step, policy)`` is called after every round with ``step`` = labels bought so far, so a scorer reads
gold vs labels spent. The agent never touches ``task.proxy_reward`` (it trains its own reward model).

Example:
    >>> import gymnasium as gym, tiltenv
    >>> from tiltenv.lifecycle.active import open_label_channel
    >>> from baselines.active import ActiveRLHF
    >>> env = gym.make("tiltenv/ActiveLabels-v0", d=4, K=8, n_eval_contexts=256, n_norm_contexts=256)
    >>> with open_label_channel(env, budget=60) as channel:
    ...     agent = ActiveRLHF(strategy="low_margin", rounds=3, pool=256).fit(env.unwrapped.task, channel=channel)
    ...     channel.used
    60
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import torch

from baselines.base import Agent, Checkpointer, TrainBudget, as_tensor, check_beta
from tiltenv import metrics as M
from tiltenv._validation import check_choice, check_float, check_int
from tiltenv.rewards.labels import sample_from_ref
from tiltenv.rewards.proxies import fit_linear_bt

__all__ = ["ActiveConfig", "ActiveRLHF", "STRATEGIES"]

STRATEGIES = ("random", "on_policy", "low_margin", "disagreement")


@dataclass
class ActiveConfig:
    """Online RLHF with a label channel."""

    strategy: str = field(default="disagreement", metadata={"help": f"Pair selection, one of {STRATEGIES}."})
    rounds: int = field(default=5, metadata={"help": "Labeling rounds (the budget is spread evenly over them)."})
    pool: int = field(default=4096, metadata={"help": "Fresh contexts per round to choose pairs from (one pair each)."})
    ensemble_k: int = field(default=5, metadata={"help": "Bootstrap reward models for 'disagreement'."})
    beta: float | None = field(default=None, metadata={"help": "KL coefficient of the tilt (None: the task's β)."})
    l2: float = field(default=1e-2, metadata={"help": "Ridge strength of the reward model's BT fit."})
    use_task_labels: bool = field(default=True, metadata={"help": "Start from the task's preference data."})
    n_norm_contexts: int = field(default=2048, metadata={"help": "Contexts to normalize the reward model under π_ref."})
    seed: int = field(default=0, metadata={"help": "Seed of the pools and the bootstrap."})

    def __post_init__(self) -> None:
        check_choice("strategy", self.strategy, STRATEGIES)
        self.rounds = check_int("rounds", self.rounds, low=1)
        self.pool = check_int("pool", self.pool, low=1)
        self.ensemble_k = check_int("ensemble_k", self.ensemble_k, low=2)
        self.beta = check_beta(self.beta)
        self.l2 = check_float("l2", self.l2, low=0.0, low_open=True)
        self.n_norm_contexts = check_int("n_norm_contexts", self.n_norm_contexts, low=2)
        self.seed = check_int("seed", self.seed, low=0)
        if not isinstance(self.use_task_labels, bool):
            raise TypeError(f"use_task_labels must be True or False (got {self.use_task_labels!r}).")


class ActiveRLHF(Agent):
    """Active labeling agent; see the module docstring."""

    name = "active"
    config_class = ActiveConfig
    config: ActiveConfig

    def fit(self, task: Any, budget: TrainBudget | None = None, checkpoint=None, channel: Any = None) -> "ActiveRLHF":
        self._check_task(task)
        self._budget(budget)
        if channel is None or not callable(channel) or not hasattr(channel, "remaining"):
            raise TypeError("ActiveRLHF.fit needs channel=, a label channel from tiltenv.lifecycle.active.open_label_channel(env).")
        cfg = self.config
        self.history = []  # a second fit starts afresh, as every other agent's does
        self.beta_ = float(task.beta if cfg.beta is None else cfg.beta)
        g = torch.Generator().manual_seed(cfg.seed)
        d = task.d
        diffs, ys = [torch.zeros(0, d, dtype=torch.float64)], [torch.zeros(0, dtype=torch.float64)]
        prefs = getattr(task, "preferences", None)
        if cfg.use_task_labels and prefs is not None:
            diffs.append((prefs.x_a - prefs.x_b).to(torch.float64))
            ys.append(prefs.label.to(torch.float64))
        self._norm_x, self._norm_ref = task.sample_contexts(cfg.n_norm_contexts, generator=g)
        self._refit(torch.cat(diffs), torch.cat(ys))
        ckpt = Checkpointer(checkpoint, [], every=1)  # one checkpoint per round
        ckpt.start(self.snapshot)
        self.labels_bought = 0
        for r in range(cfg.rounds):
            n = channel.remaining // (cfg.rounds - r)
            if n < 1:
                continue
            xa, xb = self._choose(task, n, torch.cat(diffs), torch.cat(ys), g)
            y = channel(xa, xb).to(torch.float64)
            diffs.append((xa - xb).to(torch.float64))
            ys.append(y)
            self.labels_bought += int(y.shape[0])
            self._refit(torch.cat(diffs), torch.cat(ys))
            self.history.append({"round": r, "labels": self.labels_bought})
            ckpt(self.labels_bought, self.snapshot)
        ckpt.finish(self.labels_bought, self.snapshot)
        self.checkpoint_steps = ckpt.steps
        return self

    # ------------------------------------------------------------------ reward model and policy
    def _refit(self, diff: torch.Tensor, y: torch.Tensor) -> None:
        d = diff.shape[1]
        self.w = fit_linear_bt(diff, y, self.config.l2) if y.shape[0] else torch.zeros(d, dtype=torch.float64)
        r = self._norm_x.to(torch.float64) @ self.w
        p = self._norm_ref.to(torch.float64).exp()
        mean = float((p * r).sum(-1).mean())
        sd = float((p * (r - mean) ** 2).sum(-1).mean()) ** 0.5
        self.shift, self.scale = mean, (sd if sd > 0 else 1.0)

    def reward(self, candidates: torch.Tensor) -> torch.Tensor:
        """The agent's normalized reward model on candidates ``(..., d)``."""
        return (candidates.to(torch.float64) @ self.w - self.shift) / self.scale

    @torch.no_grad()
    def policy(self, candidates: Any, ref_logp: Any) -> torch.Tensor:
        if not hasattr(self, "w"):
            raise RuntimeError("ActiveRLHF.policy() called before fit().")
        out = candidates.device if isinstance(candidates, torch.Tensor) else torch.device("cpu")
        cand = as_tensor(candidates, torch.device("cpu"))
        ref = as_tensor(ref_logp, torch.device("cpu"), torch.float64)
        return M.tilt_logp(ref, self.reward(cand), self.beta_).to(out)

    def snapshot(self) -> "ActiveRLHF":
        snap = copy.copy(self)
        snap.history = list(self.history)
        return snap

    # ------------------------------------------------------------------ pair selection
    def _choose(self, task: Any, n: int, diff: torch.Tensor, y: torch.Tensor, g: torch.Generator):
        cfg = self.config
        pool = max(cfg.pool, n)
        cand, ref = task.sample_contexts(pool, generator=g)
        src = ref if cfg.strategy == "random" else self.policy(cand, ref)
        idx = sample_from_ref(src.to(torch.float64), 2, g)
        ar = torch.arange(pool)
        xa, xb = cand[ar, idx[:, 0]], cand[ar, idx[:, 1]]
        if cfg.strategy in ("random", "on_policy"):
            keep = torch.arange(n)
        elif cfg.strategy == "low_margin":
            keep = torch.argsort((self.reward(xa) - self.reward(xb)).abs())[:n]
        else:  # disagreement: variance of the bootstrap models' preference probabilities
            delta = (xa - xb).to(torch.float64)
            probs = []
            for _ in range(cfg.ensemble_k):
                b = torch.randint(0, y.shape[0], (y.shape[0],), generator=g) if y.shape[0] else torch.zeros(0, dtype=torch.long)
                w = fit_linear_bt(diff[b], y[b], cfg.l2) if y.shape[0] else torch.zeros(diff.shape[1], dtype=torch.float64)
                probs.append(torch.sigmoid(delta @ w))
            keep = torch.argsort(torch.stack(probs).var(0), descending=True)[:n]
        return xa[keep], xb[keep]
