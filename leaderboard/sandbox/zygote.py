"""The zygote: a clean interpreter, started once per scorer process, that forks one process per run.

The scorer starts it (:class:`_Zygote`, through :func:`_zygote`) with
``Popen([sys.executable, "-m", "leaderboard.sandbox.child", "--zygote", FD])``. It imports only libraries
(numpy, torch, tiltenv, baselines: :func:`_warm_up`) — never a world, a judge, a salt or a seed — and
serves ``fork`` and ``wait`` requests over a ``SOCK_SEQPACKET`` socket (JSON, the run's fds passed along):
each fork becomes one sandboxed run (:func:`_run_forked`), which saves the ~1-2 s of importing torch per
run. :func:`shutdown` stops it (also done at exit).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import traceback
from typing import Any

import torch

from leaderboard.sandbox.channel import Channel
from leaderboard.sandbox.child import serve
from leaderboard.sandbox.confine import enter_jail, enter_sandbox

__all__ = ["shutdown"]


# ----------------------------------------------------------------------------------------------- the zygote's side
def _close_fds_except(keep: set[int]) -> None:
    for name in os.listdir("/proc/self/fd") if os.path.isdir("/proc/self/fd") else []:
        fd = int(name)
        if fd not in keep:
            try:
                os.close(fd)
            except OSError:
                pass


def _run_forked(req: dict[str, Any], fds: list[int]) -> int:
    """In the zygote's fork: become the sandboxed child of one run."""
    os.setsid()
    rfd, wfd, log = fds
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(log, 1)
    os.dup2(log, 2)
    _close_fds_except({0, 1, 2, rfd, wfd})
    sys.stdout = open(1, "w", buffering=1, closefd=False)
    sys.stderr = open(2, "w", buffering=1, closefd=False)
    if req["config"].get("jail"):
        enter_jail(req["config"], [rfd, wfd])
    enter_sandbox(req["config"])
    return serve(Channel(rfd, wfd))


def _set_parent_death_signal() -> None:
    try:
        import ctypes
        import signal

        ctypes.CDLL(None).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG: die with the scorer
    except Exception:  # noqa: BLE001 - not Linux
        pass


def _exit_status(status: int) -> dict[str, Any]:
    if os.WIFSIGNALED(status):
        return {"exitcode": None, "signal": os.WTERMSIG(status)}
    return {"exitcode": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None, "signal": None}


def _warm_up() -> None:
    """Import what runs would otherwise import lazily (single-threaded: safe to fork afterwards)."""
    import gymnasium  # noqa: F401
    import tiltenv  # noqa: F401
    import baselines  # noqa: F401

    # the first torch optimizer imports torch._dynamo (~2.5 s): pay it once, here
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])
    try:
        import stable_baselines3  # noqa: F401
    except ImportError:
        pass
    try:  # each jailed run loads the same seccomp filter: compile it once
        from leaderboard.sandbox import seccomp as _seccomp

        _seccomp.compiled()
    except OSError:
        pass


def zygote(sock_fd: int) -> int:
    """Serve fork requests from the scorer over a ``SOCK_SEQPACKET`` socket (JSON + passed fds)."""
    import time

    _set_parent_death_signal()
    _warm_up()

    sock = socket.socket(fileno=sock_fd)
    sock.send(json.dumps({"op": "ready", "pid": os.getpid()}).encode())
    while True:
        try:
            msg, fds, _flags, _addr = socket.recv_fds(sock, 1 << 16, 4)
        except (ConnectionError, OSError):
            return 0
        if not msg:
            return 0
        req = json.loads(msg)
        if req["op"] == "fork":
            pid = os.fork()
            if pid == 0:
                code = 70
                try:
                    sock.close()
                    code = _run_forked(req, fds)
                except BaseException:  # noqa: BLE001
                    traceback.print_exc()
                finally:
                    os._exit(code)
            for fd in fds:
                os.close(fd)
            sock.send(json.dumps({"pid": pid}).encode())
        elif req["op"] == "wait":
            deadline, status = time.monotonic() + float(req.get("timeout", 5.0)), None
            while True:
                try:
                    done, st = os.waitpid(int(req["pid"]), os.WNOHANG)
                except ChildProcessError:
                    break
                if done:
                    status = _exit_status(st)
                    break
                if time.monotonic() > deadline:
                    break
                time.sleep(0.005)
            sock.send(json.dumps({"status": status}).encode())
        else:
            return 0



# ----------------------------------------------------------------------------------------------- the scorer's side
class _Zygote:
    """The clean fork server (one per scorer process)."""

    def __init__(self) -> None:
        from leaderboard.sandbox.isolation import _child_env  # the scorer's side: not imported in the zygote

        self.pid = os.getpid()
        self.lock = threading.Lock()
        self.home = tempfile.mkdtemp(prefix="tiltenv-zygote-")
        parent_sock, child_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.sock = parent_sock
        env = _child_env(self.home, 1)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "leaderboard.sandbox.child", "--zygote", str(child_sock.fileno())],
            pass_fds=[child_sock.fileno()], env=env, cwd=self.home, start_new_session=True,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        )
        child_sock.close()
        self.sock.settimeout(120)
        msg = json.loads(self.sock.recv(1 << 16) or b"{}")
        if msg.get("op") != "ready":
            raise RuntimeError(f"the sandbox zygote did not start (exit code {self.proc.poll()})")
        self.sock.settimeout(30)

    def alive(self) -> bool:
        return self.pid == os.getpid() and self.proc.poll() is None

    def request(self, req: dict[str, Any], fds: list[int] = ()) -> dict[str, Any]:
        with self.lock:
            data = json.dumps(req).encode()
            if fds:
                socket.send_fds(self.sock, [data], list(fds))
            else:
                self.sock.send(data)
            reply = self.sock.recv(1 << 16)
        if not reply:
            raise RuntimeError("the sandbox zygote exited")
        return json.loads(reply)

    def close(self) -> None:
        if self.pid != os.getpid():
            return
        try:
            self.sock.close()
            self.proc.kill()
            self.proc.wait(5)
        except Exception:  # noqa: BLE001 - best effort at exit
            pass
        shutil.rmtree(self.home, ignore_errors=True)


_ZYGOTE: _Zygote | None = None
_ZYGOTE_LOCK = threading.Lock()


def _zygote() -> _Zygote:
    global _ZYGOTE
    with _ZYGOTE_LOCK:
        if _ZYGOTE is None or not _ZYGOTE.alive():
            if _ZYGOTE is not None and _ZYGOTE.pid == os.getpid():
                _ZYGOTE.close()
            _ZYGOTE = _Zygote()
        return _ZYGOTE


def shutdown() -> None:
    """Stop this process's zygote (also done at exit)."""
    global _ZYGOTE
    with _ZYGOTE_LOCK:
        if _ZYGOTE is not None:
            _ZYGOTE.close()
            _ZYGOTE = None


import atexit  # noqa: E402

atexit.register(shutdown)
