"""The agent protocol shared by the baselines and the leaderboard.

An agent is built from a config dataclass and trained on the **public task** only::

    agent = REINFORCE(REINFORCEConfig(learning_rate=0.05))
    agent.fit(task, TrainBudget(proxy_queries=65_536), checkpoint=lambda step, policy: ...)
    logp = agent.policy(candidates, ref_logp)        # (C, K) log-probabilities over the K candidates

* ``fit(task, budget, checkpoint)`` — ``task`` is a :class:`tiltenv.PublicTask` (proxy scoring, preference
  data, π_ref, context sampler, budget counters); ``budget`` (:class:`TrainBudget`) caps the proxy reward
  queries (counted by ``task.proxy_reward`` in ``task.budget.proxy_queries``) and optionally the wall time;
  ``checkpoint(step, policy)`` is called at log-spaced budget points (plus ``step = 0``, the initial policy,
  and the final step) with a **frozen snapshot** of the current policy, so a scorer can draw gold-vs-KL
  trajectories. ``step`` counts the agent's budget unit: proxy queries for online agents, preference pairs
  seen for offline ones (DPO), 0 for closed forms (Tilt, BestOfN).
* ``policy(candidates, ref_logp)`` — candidates ``(C, K, d)``, ``ref_logp`` ``(C, K)`` (torch or numpy) →
  ``(C, K)`` normalized log-probabilities (torch, on the candidates' device).

Example:
    >>> from baselines.base import TrainBudget, log_spaced_points
    >>> TrainBudget(proxy_queries=1024, n_checkpoints=4).proxy_queries
    1024
    >>> log_spaced_points(1000, 4)
    [1, 10, 100, 1000]
"""

from __future__ import annotations

import abc
import copy
import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch

from tiltenv._validation import DEVICES, check_choice, check_float, check_int, resolve_device, suggest

__all__ = [
    "Agent",
    "config_dataclass",
    "PolicyFn",
    "CheckpointFn",
    "TrainBudget",
    "QUICK_BUDGET",
    "Checkpointer",
    "log_spaced_points",
    "resolve_device",
    "as_tensor",
    "DEVICES",
]

#: ``policy(candidates (C, K, d), ref_logp (C, K)) -> (C, K)`` log-probabilities.
PolicyFn = Callable[[Any, Any], torch.Tensor]
#: ``checkpoint(step, policy)``: called with a frozen snapshot of the policy.
CheckpointFn = Callable[[int, PolicyFn], None]



@dataclass(frozen=True)
class TrainBudget:
    """What an agent may spend in ``fit``.

    The quick suite's budget is :data:`QUICK_BUDGET` (65,536 proxy queries): every baseline trains within
    a minute on two CPU cores at that budget (``scripts/bench_baselines.py`` measures it).
    """

    proxy_queries: int = field(
        default=65_536, metadata={"help": "Maximum number of candidates the agent may score with the proxy."}
    )
    wall_time: float | None = field(
        default=None, metadata={"help": "Maximum seconds of training (None: no limit); checked between updates."}
    )
    n_checkpoints: int = field(
        default=12, metadata={"help": "Number of log-spaced budget points at which checkpoint() is called."}
    )
    checkpoint_every: int = field(
        default=0,
        metadata={"help": "Also call checkpoint() after every this many updates (1: every update, so a trajectory "
                          "can be read at each step); 0: only at the log-spaced points. Agents that train in "
                          "updates (policy gradient, DPO) honour it; closed forms have no updates."},
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "proxy_queries", check_int("proxy_queries", self.proxy_queries, low=1))
        if self.wall_time is not None:
            object.__setattr__(self, "wall_time", check_float("wall_time", self.wall_time, low=0.0, low_open=True))
        object.__setattr__(self, "n_checkpoints", check_int("n_checkpoints", self.n_checkpoints, low=1))
        object.__setattr__(self, "checkpoint_every", check_int("checkpoint_every", self.checkpoint_every, low=0))

    def checkpoint_marks(self) -> list[int]:
        """The scorer's checkpoint schedule: ``ceil(j · proxy_queries / n_checkpoints)`` for j = 1 … n_checkpoints.

        On the leaderboard a checkpoint is due once the proxy-query count reaches each mark (and one of the
        initial policy before the first mark): the scorer stores its own query count as the step, and refuses a
        query that would reach the next mark while one is still owed (:func:`leaderboard.sandbox.run_agent`).
        The built-in agents include these marks in their checkpoint points.

        >>> TrainBudget(proxy_queries=1000, n_checkpoints=4).checkpoint_marks()
        [250, 500, 750, 1000]
        """
        b, n = self.proxy_queries, self.n_checkpoints
        return sorted({-(-j * b // n) for j in range(1, n + 1)})


QUICK_BUDGET = TrainBudget()


def config_dataclass(cls: type) -> type:
    """``@dataclass`` for agent configs, whose constructor names a wrong field with the closest valid one.

    ``REINFORCEConfig(learning_rat=0.1)`` raises ``TypeError: REINFORCEConfig has no field 'learning_rat'; ...
    Did you mean 'learning_rate'?`` instead of Python's bare "unexpected keyword argument".
    """
    import functools

    cls = dataclass(cls)
    init = cls.__init__
    names = [f.name for f in dataclasses.fields(cls)]

    @functools.wraps(init)
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        for key in kwargs:
            if key not in names:
                raise TypeError(f"{cls.__name__} has no field {key!r}; valid fields are {names}." + suggest(key, names))
        init(self, *args, **kwargs)

    cls.__init__ = __init__
    return cls


def log_spaced_points(total: int, n: int, first: int | None = None) -> list[int]:
    """``n`` (or fewer, after rounding) increasing integers from ``first`` to ``total``, geometrically spaced.

    ``first`` defaults to ``max(1, total // 1000)``: three decades of budget.
    """
    total = int(total)
    if total < 1 or n < 1:
        raise ValueError(f"total and n must be >= 1 (got total={total}, n={n}).")
    first = max(1, total // 1000) if first is None else max(1, min(int(first), total))
    if n == 1 or first == total:
        return [total]
    pts = np.unique(np.round(np.geomspace(first, total, n)).astype(np.int64))
    return [int(p) for p in pts]


class Checkpointer:
    """Calls ``checkpoint(step, policy)`` when ``step`` first reaches each of a list of points.

    ``snapshot`` is only called when a checkpoint is due (a frozen copy costs a ``deepcopy``). Several points
    crossed by one update give one call. ``finish`` reports the final step unless it was just reported.
    With ``every = n > 0``, every n-th call (one call per update) is due as well.
    """

    def __init__(self, fn: CheckpointFn | None, points: list[int], every: int = 0) -> None:
        self.fn = fn
        self.points = list(points)
        self.every = int(every)
        self._calls = 0
        self._next = 0
        self.last_step: int | None = None
        self.steps: list[int] = []

    def start(self, snapshot: Callable[[], PolicyFn]) -> None:
        self._report(0, snapshot)

    def __call__(self, step: int, snapshot: Callable[[], PolicyFn]) -> None:
        self._calls += 1
        due = self.every > 0 and self._calls % self.every == 0
        while self._next < len(self.points) and step >= self.points[self._next]:
            self._next += 1
            due = True
        if due:
            self._report(step, snapshot)

    def finish(self, step: int, snapshot: Callable[[], PolicyFn]) -> None:
        if self.last_step != step:
            self._report(step, snapshot)

    def _report(self, step: int, snapshot: Callable[[], PolicyFn]) -> None:
        self.last_step = int(step)
        self.steps.append(int(step))
        if self.fn is not None:
            self.fn(int(step), snapshot())


def check_device(device: Any) -> str:
    """Validate a config's device field without touching CUDA state (``auto`` is resolved in ``fit``)."""
    if isinstance(device, torch.device):
        device = str(device)
    if not isinstance(device, str):
        raise TypeError(f"device must be a string, {DEVICES} (got {device!r}).")
    if device != "auto":
        try:
            dev = torch.device(device)
        except (RuntimeError, TypeError):
            raise ValueError(f"device must be {DEVICES} (got {device!r}).") from None
        if dev.type not in ("cpu", "cuda"):
            raise ValueError(f"device must be {DEVICES} (got {device!r}).")
    return device


def as_tensor(x: Any, device: torch.device, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Torch tensor on ``device`` (numpy arrays and lists accepted)."""
    if not isinstance(x, torch.Tensor):
        x = torch.as_tensor(np.asarray(x))
    return x.to(device=device, dtype=dtype)


def output_device(candidates: Any) -> torch.device:
    """Where a policy's log-probabilities go back to: the candidates' device (the CPU for numpy / lists)."""
    return candidates.device if isinstance(candidates, torch.Tensor) else torch.device("cpu")


class Agent(abc.ABC):
    """Base class of every baseline: ``fit(task, budget, checkpoint)`` and ``policy(candidates, ref_logp)``.

    Subclasses set ``name`` and ``config_class`` and implement :meth:`fit` and :meth:`policy`.

    Attributes:
        config: the validated config dataclass.
        history: one dict per training update or checkpoint (what the agent logs; no gold in it).
        checkpoint_steps: the ``step`` values at which ``checkpoint`` was called in the last ``fit``.
    """

    name: ClassVar[str] = "agent"
    config_class: ClassVar[type]

    def __init__(self, config: Any = None, **overrides: Any) -> None:
        names = [f.name for f in dataclasses.fields(self.config_class)]
        for key in overrides:
            if key not in names:
                raise TypeError(f"unknown {self.config_class.__name__} field {key!r}; valid fields are {names}."
                                + suggest(key, names))
        if config is None:
            config = self.config_class(**overrides)
        elif overrides:
            config = dataclasses.replace(config, **overrides)
        if not isinstance(config, self.config_class):
            raise TypeError(f"{type(self).__name__} needs a {self.config_class.__name__} (got {type(config).__name__}).")
        self.config = config
        self.history: list[dict[str, float]] = []
        self.checkpoint_steps: list[int] = []
        self.fit_time: float = 0.0

    @abc.abstractmethod
    def fit(self, task: Any, budget: TrainBudget | None = None, checkpoint: CheckpointFn | None = None) -> "Agent":
        """Train on the public task; returns ``self``."""

    @abc.abstractmethod
    def policy(self, candidates: Any, ref_logp: Any) -> torch.Tensor:
        """``(C, K, d)``, ``(C, K)`` → ``(C, K)`` log-probabilities."""

    def __call__(self, candidates: Any, ref_logp: Any) -> torch.Tensor:
        return self.policy(candidates, ref_logp)

    def snapshot(self) -> PolicyFn:
        """A frozen copy of the current policy (default: a deep copy of the agent)."""
        return copy.deepcopy(self)

    # ------------------------------------------------------------------ helpers for subclasses
    def _checkpoint_once(self, checkpoint: Any) -> None:
        """A training-free agent's protocol: its one checkpoint (step 0) is the final policy."""
        ckpt = Checkpointer(checkpoint, [])
        ckpt.start(self.snapshot)
        self.checkpoint_steps = ckpt.steps

    @staticmethod
    def _budget(budget: TrainBudget | None) -> TrainBudget:
        if budget is None:
            return QUICK_BUDGET
        if not isinstance(budget, TrainBudget):
            raise TypeError(f"budget must be a TrainBudget (got {type(budget).__name__}).")
        return budget

    @staticmethod
    def _check_task(task: Any) -> None:
        for attr in ("proxy_reward", "sample_contexts", "K", "d", "beta", "budget"):
            if not hasattr(task, attr):
                raise TypeError(
                    f"fit() needs the public task (env.unwrapped.task or make_world(config).task); "
                    f"{type(task).__name__} has no {attr!r}."
                )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config!r})"


def out_of_time(budget: TrainBudget, started: float) -> bool:
    return budget.wall_time is not None and time.perf_counter() - started >= budget.wall_time


def check_beta(beta: Any, name: str = "beta") -> float | None:
    """``None`` (use the task's β) or a float ≥ 0."""
    return None if beta is None else check_float(name, beta, low=0.0)


def check_optimizer(optimizer: str) -> str:
    return check_choice("optimizer", optimizer, ("adam", "sgd"))


def make_optimizer(params, name: str, lr: float, momentum: float = 0.0) -> torch.optim.Optimizer:
    """``adam`` (Kingma & Ba 2015) or plain ``sgd`` (gradient flow: Razin et al.'s reward-variance theory)."""
    if name == "adam":
        return torch.optim.Adam(params, lr=lr)
    return torch.optim.SGD(params, lr=lr, momentum=momentum)


def finite_or_raise(x: torch.Tensor, what: str) -> None:
    if not bool(torch.isfinite(x).all()):
        raise FloatingPointError(
            f"{what} is not finite (learning rate too large, or β too small for float32?); "
            "lower learning_rate or raise beta."
        )


__all__ += ["out_of_time", "check_beta", "check_optimizer", "make_optimizer", "check_device", "finite_or_raise"]
