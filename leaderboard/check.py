"""``tiltenv check``: run a submission the scorer's way on one task at a tiny budget, in this process, in seconds.

The scorer's code does the work — :func:`leaderboard.runner.score_one`, so the same loader, channel, budget
enforcement, output checks and failure messages (:func:`leaderboard.sandbox.run_agent` /
:class:`leaderboard.sandbox.RemoteRewardModel`) — with one difference: the submission's side of the channel
(:func:`leaderboard.sandbox.child.serve`) runs in a thread of this process instead of a jailed child process. Nothing of
the scorer's validation is duplicated here; only *where* the submission runs changes. That saves the jail's
start (a fresh interpreter importing torch: seconds) and lets the submitter see its prints and debug it, at the
cost of the jail's protections — which a submitter checking their own code does not need. ``tiltenv check
--sandbox`` runs it in the real jail instead.

Limits in-process: the wall-time limit is enforced by the scorer's side as usual (a timed-out thread cannot be
killed: it is abandoned, and the command exits); the memory limit is not measured (the process is shared).
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from typing import Any

from leaderboard.sandbox import agent, child, process, reward_model
from leaderboard.sandbox.channel import Channel

__all__ = ["InProcessChild", "in_process"]


class InProcessChild(process._Child):
    """:class:`leaderboard.sandbox.process._Child`'s interface with the submission served by a thread of this process."""

    def __init__(self, sub: Any, limits: Any, device: str, spawn: str = "thread") -> None:  # noqa: D107
        self.limits, self.sub = limits, sub
        self.sandbox = "trusted"  # the submission runs in a thread of this process: no jail, no cgroup
        self.jail = self.cg = None
        self.pgid = None
        self.killed_by_us = False
        self.spawn_mode = "thread"
        self.popen = None
        self.zygote = None
        self.uid = self.gid = None
        self.tmp = tempfile.mkdtemp(prefix="tiltenv-check-")
        self.file = sub.target if sub.kind == "file" else None
        self.log = open(os.path.join(self.tmp, "stderr.log"), "w+b")  # nothing goes there: prints reach the terminal
        p2c_r, p2c_w = os.pipe()
        c2p_r, c2p_w = os.pipe()
        self._rc: int | None = None

        def serve() -> None:
            try:
                self._rc = child.serve(Channel(p2c_r, c2p_w))
            except BaseException:  # noqa: BLE001 - serve reports the submission's errors itself; this is the channel
                self._rc = 5
            finally:
                for fd in (p2c_r, c2p_w):
                    with contextlib.suppress(OSError):
                        os.close(fd)

        self.started = time.monotonic()
        self.deadline = self.started + float(limits.wall_time)
        self._left = float(limits.wall_time)
        self._thread = threading.Thread(target=serve, name="tiltenv-check-submission", daemon=True)
        self._thread.start()
        self.pid = os.getpid()
        self._fds = [c2p_r, p2c_w]
        for fd in self._fds:
            os.set_blocking(fd, False)
        self._last_poll = 0.0
        self.chan = Channel(c2p_r, p2c_w, wait=self._wait)

    def _wait(self, fd: int, for_write: bool) -> None:
        now = time.monotonic()
        if now >= self.deadline:
            self.fail("timeout", f"the run exceeded its wall-time limit of {self.limits.wall_time:g} s and was killed")
        timeout = max(0.0, min(self.deadline - now, process.MEMORY_POLL_S))
        if for_write:
            select.select([], [fd], [], timeout)
        else:
            select.select([fd], [], [], timeout)

    def kill(self) -> None:
        """A thread cannot be killed: close the scorer's ends, so its next channel operation fails, and leave it."""
        self.killed_by_us = True
        for fd in self._fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds = []

    def exit_status(self, timeout: float = 5.0) -> dict[str, Any] | None:
        self._thread.join(timeout)
        return None if self._thread.is_alive() else {"exitcode": self._rc, "signal": None}

    def stderr_tail(self, n: int = 1500) -> str:
        return ""

    def close(self) -> None:
        self.kill()
        self._thread.join(1.0)
        with contextlib.suppress(OSError):
            self.log.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


@contextlib.contextmanager
def in_process() -> Iterator[None]:
    """Within this block, the scorer's runs serve the submission from a thread of this process."""
    saved = agent._Child, reward_model._Child  # each module that starts runs
    agent._Child = reward_model._Child = InProcessChild
    try:
        yield
    finally:
        agent._Child, reward_model._Child = saved
