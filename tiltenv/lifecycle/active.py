"""Active labeling: a label channel whose labeler runs on the judge's side and counts every label.

``open_label_channel(target)`` starts the task's human labeler (Bradley–Terry with the task's ``label_temp``,
``flip_rate`` and ``label_bias``) in a **separate process** that holds θ*, and returns a :class:`LabelChannel`: the
only thing an agent gets. The channel holds a pipe to that process and nothing else (no θ*, no judge, no gold), so
an agent cannot read the gold through it; the labeler process enforces the label budget (``label_budget`` of the
task unless given) — a request that would exceed it is refused whole, before any of it is labeled, with
:class:`LabelBudgetExceeded`. Labels are drawn from the task's ``channel_labels`` random stream: the same requests
get the same labels.

Example:
    >>> import gymnasium as gym, tiltenv, torch
    >>> from tiltenv.lifecycle.active import open_label_channel
    >>> env = gym.make("tiltenv/ActiveLabels-v0", d=4, K=8, n_eval_contexts=64, n_norm_contexts=64)
    >>> with open_label_channel(env, budget=10) as channel:
    ...     x, _ = env.unwrapped.task.sample_contexts(4, seed=0)
    ...     y = channel(x[:, 0], x[:, 1])          # 4 labels: 1.0 where candidate a is preferred
    ...     (tuple(y.shape), channel.used, channel.remaining)
    ((4,), 4, 6)
"""

from __future__ import annotations

import multiprocessing as mp
import sys
from typing import Any

import numpy as np
import torch

from tiltenv._validation import check_int
from tiltenv.worlds.config import TaskConfig
from tiltenv.worlds.evaluation import resolve_judge
from tiltenv.worlds.world import World, seed_streams

__all__ = ["LabelChannel", "LabelBudgetExceeded", "open_label_channel"]


class LabelBudgetExceeded(RuntimeError):
    """A label request beyond the channel's budget (nothing of it was labeled)."""


def _labeler_process(conn, spec: dict[str, Any]) -> None:
    """The judge-side labeler: receives pairs, answers labels, counts them against the budget."""
    torch.set_num_threads(1)
    from tiltenv.rewards.families import Member

    theta = torch.as_tensor(spec["theta"], dtype=torch.float64)
    spurious = torch.as_tensor(spec["spurious"], dtype=torch.float64)
    member = Member.from_spec(spec["member"])
    link = member.link
    gen = torch.Generator().manual_seed(int(spec["seed"]))
    budget, used = int(spec["budget"]), 0

    def h(x: torch.Tensor) -> torch.Tensor:
        x = x.to(torch.float64)
        u = spec["gold_scale"] * link(x @ theta)
        return u + spec["label_bias"] * (x @ spurious) if spec["label_bias"] else u

    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg[0] == "close":
            conn.close()
            return
        _, xa, xb = msg
        n = int(xa.shape[0])
        if used + n > budget:
            conn.send(("budget", f"label budget exceeded: {n} labels requested, {budget - used} of {budget} left "
                                 "(nothing was labeled)", used))
            continue
        delta = h(torch.from_numpy(xa)) - h(torch.from_numpy(xb))
        u = torch.rand(delta.shape, generator=gen, dtype=torch.float64)
        tau = spec["label_temp"]
        prob = torch.sigmoid(delta / tau) if tau > 0 else torch.where(delta > 0, 1.0, torch.where(delta < 0, 0.0, 0.5))
        flips = torch.rand(delta.shape, generator=gen, dtype=torch.float64) < spec["flip_rate"]
        label = (u < prob) ^ flips
        used += n
        conn.send(("ok", label.numpy().astype(np.float32), used))


class LabelChannel:
    """A counted, budgeted line to the judge's labeler. Call it with pairs; see the module docstring.

    Attributes:
        budget: labels this channel may deliver in all; used: delivered so far (the labeler's own count);
        remaining: ``budget − used``; d: candidate dimension.
    """

    __slots__ = ("_conn", "_proc", "budget", "used", "d", "requests")

    def __init__(self, conn, proc, budget: int, d: int) -> None:
        self._conn, self._proc = conn, proc
        self.budget, self.used, self.d, self.requests = int(budget), 0, int(d), 0

    @property
    def remaining(self) -> int:
        return self.budget - self.used

    @property
    def closed(self) -> bool:
        return self._conn is None

    def __call__(self, x_a: Any, x_b: Any) -> torch.Tensor:
        """Labels of pairs ``(n, d)``, ``(n, d)`` → ``(n,)`` float32, 1.0 where ``a ≻ b`` (on the inputs' device).

        Raises:
            LabelBudgetExceeded: the request would exceed the budget (nothing is labeled, nothing counted).
            ValueError: shapes; RuntimeError: the channel is closed.
        """
        if self._conn is None:
            raise RuntimeError("this label channel is closed.")
        device = x_a.device if isinstance(x_a, torch.Tensor) else torch.device("cpu")
        a = torch.as_tensor(x_a).detach().to("cpu", torch.float64).numpy()
        b = torch.as_tensor(x_b).detach().to("cpu", torch.float64).numpy()
        if a.ndim != 2 or a.shape != b.shape or a.shape[1] != self.d:
            raise ValueError(f"x_a and x_b must both have shape (n, d={self.d}) (got {a.shape} and {b.shape}).")
        if not (np.isfinite(a).all() and np.isfinite(b).all()):
            raise ValueError("x_a and x_b must be finite.")
        if a.shape[0] == 0:
            return torch.zeros(0, dtype=torch.float32, device=device)
        self._conn.send(("label", a, b))
        status, payload, used = self._conn.recv()
        self.used = int(used)
        if status == "budget":
            raise LabelBudgetExceeded(payload)
        self.requests += 1
        return torch.from_numpy(payload).to(device)

    def close(self) -> None:
        """Stop the labeler process (idempotent)."""
        if self._conn is None:
            return
        try:
            self._conn.send(("close",))
        except (BrokenPipeError, OSError):
            pass
        self._conn.close()
        self._conn = None
        self._proc.join(timeout=10)
        if self._proc.is_alive():  # pragma: no cover - a stuck labeler
            self._proc.terminate()

    def __enter__(self) -> "LabelChannel":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # pragma: no cover - interpreter shutdown
            pass

    def __getstate__(self):
        raise TypeError("a LabelChannel cannot be pickled or copied: it is one counted line to the labeler.")

    def __repr__(self) -> str:
        return f"LabelChannel(used={self.used}, budget={self.budget}{', closed' if self.closed else ''})"


def open_label_channel(target: Any, budget: int | None = None) -> LabelChannel:
    """Start the task's labeler in its own process and return the agent's channel to it.

    Args:
        target: an env made by ``gym.make("tiltenv/...")``, a World, a TaskConfig or a Judge (single-index tasks).
        budget: labels the channel may deliver (default: the task's ``label_budget``).
    Raises:
        ValueError: a tabular task, or no budget (``label_budget=0`` and none given).
    """
    judge = target.judge if isinstance(target, World) else resolve_judge(target)
    cfg = judge.config
    if not isinstance(cfg, TaskConfig):
        raise ValueError("a label channel needs a single-index task (a tabular task has no labeler).")
    budget = cfg.label_budget if budget is None else check_int("budget", budget, low=0)
    if budget < 1:
        raise ValueError(f"budget must be >= 1 label (the task's label_budget is {cfg.label_budget}); pass budget= "
                         "or use a task with a label budget, e.g. tiltenv/ActiveLabels-v0.")
    spec = {
        "theta": judge.theta.numpy().copy(), "spurious": judge.extras["spurious_direction"].numpy().copy(),
        "member": cfg.member().spec(), **{k: v for k, v in cfg.member().spec().items() if k not in ("params", "base")},
        "label_bias": cfg.label_bias, "seed": seed_streams(cfg.seed)["channel_labels"], "budget": budget,
    }
    ctx = mp.get_context("fork" if sys.platform.startswith("linux") else "spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_labeler_process, args=(child, spec), daemon=True)
    proc.start()
    child.close()
    del spec
    return LabelChannel(parent, proc, budget, cfg.d)
