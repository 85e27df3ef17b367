"""A reward-model submission fitted in its sandboxed process, queried by the scorer (:class:`RemoteRewardModel`)."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from leaderboard.sandbox.channel import FLOAT_DTYPES, ProtocolError, check_array_specs
from leaderboard.sandbox.child import NoProxy
from leaderboard.sandbox.outputs import _check_output_dtype
from leaderboard.sandbox.process import _Child, _public_copy, _start_payload
from leaderboard.spec import Limits, SandboxFailure
from leaderboard.submission import Submission

__all__ = ["RemoteRewardModel"]


class RemoteRewardModel:
    """A reward-model submission fitted in a sandboxed child; the scorer queries its scores.

    The child gets the public task without its proxy, calls ``fit(task.preferences)`` (pointwise tasks:
    ``task.pointwise``), then answers ``score`` requests. ``limits.wall_time`` is charged only while the
    scorer waits on the child (fit and each score call), not while it computes with the scores.

    Args:
        sub: a :class:`~leaderboard.submission.Submission` of the ``reward_model`` track.
        task: the :class:`tiltenv.PublicTask`.
        limits: :class:`~leaderboard.spec.Limits`.
        device: passed to a factory with a ``device`` parameter.
        spawn: see :func:`run_agent`.
    Raises:
        SandboxFailure: the child failed to load or fit (and later, to score).

    Example:
        >>> with RemoteRewardModel(sub, world.task, Limits()) as rm:   # doctest: +SKIP
        ...     r = rm.score(candidates)            # (..., d) -> (...) float64
    """

    def __init__(self, sub: Submission, task: Any, limits: Limits, *, device: str = "cpu", spawn: str = "zygote") -> None:
        if not isinstance(sub, Submission) or sub.track != "reward_model":
            raise TypeError(f"RemoteRewardModel needs a reward_model-track Submission (got {sub!r}).")
        self.d = int(task.d)
        self.failure: SandboxFailure | None = None
        self.output: str | None = None  # the run's stdout/stderr once closed
        self.sandbox = limits.sandbox
        public = _public_copy(task, NoProxy(getattr(task.proxy, "kind", "proxy"), task.d))
        self._child: _Child | None = _Child(sub, limits, device, spawn)
        started = time.monotonic()
        try:
            self._child.send({"op": "start", "payload": "pickle"},
                             raw=_start_payload(sub, "reward_model", public, None, device, self._child.file))
            self._child.expect("ready")
            self._child.expect("fit_done")
        except SandboxFailure as e:
            self.failure = e
            self.close()
            raise
        self.fit_time = time.monotonic() - started
        self._child.pause_clock()

    def score(self, candidates: Any) -> torch.Tensor:
        """Scores of ``candidates`` ``(..., d)`` → ``(...)`` float64 (CPU).

        Raises:
            SandboxFailure: the child failed (``invalid_output`` for NaN/inf or a wrong shape); every later
                call raises the same failure.
        """
        if self.failure is not None:
            raise self.failure
        if self._child is None:
            raise RuntimeError("this RemoteRewardModel is closed.")
        x = torch.as_tensor(candidates).detach().cpu()
        if x.ndim < 1 or x.shape[-1] != self.d:
            raise ValueError(f"candidates must have last dimension d={self.d} (got shape {tuple(x.shape)}).")
        if x.dtype not in (torch.float32, torch.float64):
            x = x.to(torch.float32)
        child = self._child
        child.resume_clock()
        try:
            child.send({"op": "score"}, [x.contiguous().numpy()])
            header, plen = child.recv_header("scores")
            if header["op"] != "scores":
                child.fail("protocol", f"expected scores, got {str(header['op'])[:40]!r}")
            _check_output_dtype(child, header, "score()")
            try:  # the declared shape is checked before anything is read: a child cannot make the scorer allocate
                ((_, shape),) = check_array_specs(header, plen, FLOAT_DTYPES)
            except ProtocolError as e:
                child.fail("protocol", f"bad score() frame: {e}")
            want = tuple(x.shape[:-1])
            if shape != want:
                child.fail("invalid_output", f"score() returned shape {shape}, expected {want}")
            (y,) = child.recv_arrays(header, plen)
            bad = ~np.isfinite(y)
            if bad.any():
                n_nan = int(np.isnan(y).sum())
                child.fail("invalid_output", f"score() returned {n_nan} NaN and {int(bad.sum()) - n_nan} inf value(s)")
        except SandboxFailure as e:
            self.failure = e
            self.close()
            raise
        child.pause_clock()
        return torch.from_numpy(y.astype(np.float64))

    def close(self) -> None:
        """Stop the child (idempotent)."""
        if self._child is not None:
            child, self._child = self._child, None
            self.output, self.sandbox = child.output_tail(), child.sandbox
            try:
                if self.failure is None:
                    child.chan.send({"op": "close"})
            except Exception:  # noqa: BLE001 - it may be gone already
                pass
            child.close()

    def __enter__(self) -> "RemoteRewardModel":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001
            pass
