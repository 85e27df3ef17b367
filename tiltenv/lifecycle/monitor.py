"""Catching overoptimization without the gold: held-out reward models watch a run and a stopping rule halts it.

"Compare every policy against several independent reward models": :func:`held_out_proxies` (judge side) trains
``k`` proxies of the task's kind on **disjoint** fresh label sets (the task's human labeler on pairs from the task's
label distribution, the ``monitor_labels`` random stream), normalized under π_ref like every proxy. They are ordinary learned reward models
(no θ*), handed to the practitioner.

:class:`OveroptimizationMonitor` is a checkpoint callback — ``agent.fit(task, budget, checkpoint=monitor)`` works
for any agent of the protocol — that scores each snapshot on its own contexts under every held-out proxy (exactly,
over the K candidates) and its KL to π_ref. The stopping rule: once the held-out proxies' mean value has stayed
below its running peak by more than ``min_drop`` for ``patience`` checkpoints in a row, the run has passed their
peak; the monitor's choice is the checkpoint at that peak (and with ``halt=True`` it raises :class:`StopTraining`
to end ``fit``; :func:`run_monitored` catches it).

:func:`monitor_report` (judge side) reads the gold of every checkpoint: the gold lost by the monitor's choice
against the gold's own peak, and the same for stopping at fixed KLs.

Example:
    >>> from tiltenv import TaskConfig, make_world, metrics as M
    >>> from tiltenv.lifecycle.monitor import held_out_proxies, OveroptimizationMonitor, monitor_report
    >>> world = make_world(TaskConfig(d=4, K=16, link="hump", n_labels=300, n_eval_contexts=256, n_norm_contexts=256))
    >>> monitor = OveroptimizationMonitor(held_out_proxies(world, k=2), world.task, n_contexts=256)
    >>> for i, beta in enumerate([3.0, 1.0, 0.3, 0.1, 0.03, 0.01]):   # a tilt path stands in for training
    ...     monitor(i, lambda c, ref, b=beta: M.tilt_logp(ref, world.task.proxy_reward(c, count=False), b))
    >>> rep = monitor_report(world, monitor)
    >>> rep["lost_monitor"] >= 0
    True
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from tiltenv import metrics as M
from tiltenv.worlds.config import TaskConfig
from tiltenv.worlds.evaluation import resolve_judge
from tiltenv.rewards.feedback import compress_along
from tiltenv.rewards.labels import make_preferences
from tiltenv.rewards.links import get_link
from tiltenv.rewards.proxies import PROXIES, GoldProxy, Proxy, ProxyContext, parse_options
from tiltenv.rewards.reward_models import single_threaded
from tiltenv.worlds.world import World, make_world, seed_streams, torch_generator

__all__ = ["held_out_proxies", "oracle_proxy", "OveroptimizationMonitor", "StopTraining", "run_monitored", "monitor_report"]


def _world(target: Any) -> World:
    if isinstance(target, World):
        return target
    return make_world(resolve_judge(target).config)


def held_out_proxies(target: Any, k: int = 3, n_labels: int | None = None, proxy: str | None = None,
                     proxy_kwargs: dict | None = None) -> list[Proxy]:
    """``k`` proxies trained on disjoint fresh label sets of ``n_labels`` pairs each (default: the task's).

    Args:
        target: World / env / config / Judge of a single-index task with a learned proxy kind.
        proxy, proxy_kwargs: another kind (default the task's own kind and options).
    Returns:
        list of normalized :class:`~tiltenv.rewards.proxies.Proxy` modules.
    """
    world = _world(target)
    judge = world.judge
    cfg = judge.config
    if not isinstance(cfg, TaskConfig):
        raise ValueError("held-out proxies need a single-index task (a tabular task has no labeler).")
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f"k must be an integer >= 1 (got {k!r}).")
    kind = cfg.proxy if proxy is None else proxy
    options = parse_options(kind, dict(cfg.proxy_kwargs) if proxy is None else dict(proxy_kwargs or {}))
    spec = PROXIES[kind]
    if not spec.needs_labels:
        raise ValueError(f"proxy {kind!r} is not learned from labels: a held-out copy would be the same model.")
    n = cfg.n_labels if n_labels is None else int(n_labels)
    seeds = np.random.SeedSequence(seed_streams(cfg.seed)["monitor_labels"]).spawn(k)
    member = cfg.member()  # the world's gold member (drawn from its family on the test split)
    out = []
    for child in seeds:
        s = [int(v >> np.uint64(1)) for v in child.generate_state(3, np.uint64)]
        x, _ = world.task.sampler.sample(n, torch_generator(s[0]))
        x = compress_along(x, judge.extras["length_direction"], cfg.shift_length_scale)  # the task's label distribution
        ref = world.task.sampler.ref_logp(x)
        prefs = make_preferences(x, ref, judge.extras["utility"], temperature=member.label_temp,
                                 flip_rate=member.flip_rate, generator=torch_generator(s[1]))
        ctx = ProxyContext(d=cfg.d, theta=judge.theta, gold=judge.gold, link=None, gold_scale=member.gold_scale,
                           preferences=prefs, pointwise=None, seed=s[2], device=torch.device("cpu"),
                           sample_ref=lambda m, g: world.task.sampler.sample(m, g))
        with single_threaded(torch.device("cpu")):
            model = spec.build(options, ctx)
        out.append(world.with_proxy(model).task.proxy)
    return out


def oracle_proxy(target: Any) -> Proxy:
    """The gold itself as a (normalized) held-out model: an oracle control for the stopping rule (judge side)."""
    world = _world(target)
    cfg = world.judge.config
    member = cfg.member()
    return world.with_proxy(GoldProxy(world.judge.theta, member.link, member.gold_scale)).task.proxy


class StopTraining(Exception):
    """Raised by a halting monitor from inside ``fit`` once its stopping rule fires."""


class OveroptimizationMonitor:
    """Checkpoint callback scoring snapshots under held-out proxies; see the module docstring.

    Args:
        proxies: the held-out reward models (normalized proxies).
        task: the public task (its context sampler and π_ref).
        n_contexts, seed: the monitor's own contexts.
        patience: checkpoints in a row below the running peak before the rule fires.
        min_drop: how far below the peak (in normalized proxy units) counts as below.
        halt: raise :class:`StopTraining` when the rule fires (ends ``fit``).
    Attributes:
        history: one dict per checkpoint (``step``, ``kl``, ``heldout`` mean, ``heldout_j`` per proxy).
        policies: the snapshots, in order. stop_index: where the rule fired (None: not yet).
    """

    def __init__(self, proxies: Sequence[Proxy], task: Any, *, n_contexts: int = 2048, seed: int = 0,
                 patience: int = 2, min_drop: float = 0.0, halt: bool = False) -> None:
        if len(proxies) < 1:
            raise ValueError("proxies must hold at least one held-out reward model.")
        self.patience = int(patience)
        if self.patience < 1:
            raise ValueError(f"patience must be an integer >= 1 (got {patience!r}).")
        self.min_drop = float(min_drop)
        if not (self.min_drop >= 0 and math.isfinite(self.min_drop)):
            raise ValueError(f"min_drop must be a finite number >= 0 (got {min_drop!r}).")
        self.halt = bool(halt)
        self.candidates, ref = task.sample_contexts(n_contexts, seed=seed)
        self.ref_logp = torch.log_softmax(ref.to(torch.float64), -1)
        with torch.no_grad():
            self.values = torch.stack([p(self.candidates).to(torch.float64) for p in proxies])  # (k, C, K)
        self.history: list[dict[str, float]] = []
        self.policies: list[Any] = []
        self.stop_index: int | None = None
        self._below = 0

    def __call__(self, step: int, policy: Any) -> None:
        with torch.no_grad():
            lp = torch.as_tensor(policy(self.candidates, self.ref_logp)).to(torch.float64)
        lp = torch.log_softmax(lp, -1)  # guard float32 round-off; a normalized input is unchanged
        vals = [M.policy_value(lp, v) for v in self.values]
        row = {"step": int(step), "kl": M.kl_divergence(lp, self.ref_logp), "heldout": float(np.mean(vals)),
               **{f"heldout_{j}": v for j, v in enumerate(vals)}}
        self.history.append(row)
        self.policies.append(policy)
        if self.stop_index is not None:
            return
        peak = max(h["heldout"] for h in self.history)
        self._below = self._below + 1 if row["heldout"] < peak - self.min_drop else 0
        if self._below >= self.patience:
            self.stop_index = len(self.history) - 1
            if self.halt:
                raise StopTraining(f"held-out reward models peaked at checkpoint {self.chosen_index} "
                                   f"(step {self.history[self.chosen_index]['step']})")

    @property
    def chosen_index(self) -> int:
        """The checkpoint the monitor stops at: the held-out peak among those seen until the rule fired."""
        if not self.history:
            raise RuntimeError("the monitor has seen no checkpoint yet.")
        upto = len(self.history) if self.stop_index is None else self.stop_index + 1
        return int(np.argmax([h["heldout"] for h in self.history[:upto]]))

    @property
    def chosen_policy(self) -> Any:
        return self.policies[self.chosen_index]

    @property
    def stopped(self) -> bool:
        return self.stop_index is not None

    def table(self) -> pd.DataFrame:
        return pd.DataFrame(self.history)

    def fixed_kl_index(self, kl: float) -> int:
        """Stopping at a fixed KL: the last checkpoint whose (monitor-measured) KL is at most ``kl`` (else the first)."""
        kls = [h["kl"] for h in self.history]
        ok = [i for i, v in enumerate(kls) if v <= kl]
        return ok[-1] if ok else 0


def run_monitored(agent: Any, task: Any, budget: Any = None, monitor: OveroptimizationMonitor | None = None,
                  **fit_kwargs: Any) -> Any:
    """``agent.fit(task, budget, checkpoint=monitor)``, ending quietly when a halting monitor stops it."""
    try:
        agent.fit(task, budget, checkpoint=monitor, **fit_kwargs)
    except StopTraining:
        pass
    return agent


def monitor_report(target: Any, monitor: OveroptimizationMonitor,
                   fixed_kls: Sequence[float] = (0.25, 0.5, 1.0, 2.0, 4.0)) -> dict[str, Any]:
    """Gold of every checkpoint the monitor saw (judge side): what stopping by the monitor and at fixed KLs lost.

    Returns:
        dict with ``table`` (the monitor's history plus ``gold``), ``gold_peak``, ``gold_final``, ``gold_monitor``,
        ``lost_monitor`` (peak − the monitor's choice), ``lost_final`` (peak − the last checkpoint),
        ``lost_fixed_kl`` ({kl: peak − gold there}), ``stopped``, ``chosen_index``, ``peak_index``.
    """
    judge = resolve_judge(target) if not isinstance(target, World) else target.judge
    golds = []
    for pol in monitor.policies:
        with torch.no_grad():
            lp = torch.as_tensor(pol(judge.eval_candidates, judge.eval_ref_logp)).to(torch.float64)
        golds.append(M.policy_value(torch.log_softmax(lp, -1), judge.eval_gold))
    table = monitor.table()
    table["gold"] = golds
    peak = int(np.argmax(golds))
    c = monitor.chosen_index
    return {
        "table": table, "gold_peak": golds[peak], "gold_final": golds[-1], "gold_monitor": golds[c],
        "lost_monitor": golds[peak] - golds[c], "lost_final": golds[peak] - golds[-1],
        "lost_fixed_kl": {float(k): golds[peak] - golds[monitor.fixed_kl_index(k)] for k in fixed_kls},
        "stopped": monitor.stopped, "chosen_index": c, "peak_index": peak,
    }
