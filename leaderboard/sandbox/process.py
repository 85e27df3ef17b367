"""The scorer's handle on one run's process (:class:`_Child`): its start (forked by the zygote or a fresh
interpreter, in its jail and cgroup), framed I/O under the run's deadline and memory watch, its failures,
kill and clean-up; and what a run starts with (:func:`_public_copy`, :func:`_start_payload`)."""

from __future__ import annotations

import copy
import functools
import json
import os
import pickle
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any

import numpy as np
import torch

from leaderboard.sandbox import cgroup as _cgroup, jail as _jail
from leaderboard.sandbox.channel import (FLOAT_DTYPES, Channel, ProtocolError, check_array_specs, set_pipe_size,
                                         unpack_arrays)
from leaderboard.sandbox.child import RemoteDimProxy, RemoteDimStack
from leaderboard.sandbox.isolation import (_NOBODY, _child_env, _private_paths, _run_ids, _warn_if_cache_reachable,
                                           network_mode, sandbox_mode)
from leaderboard.sandbox.zygote import _zygote
from leaderboard.spec import Limits, SandboxFailure, ScorerEnvironmentError
from leaderboard.submission import Submission

__all__ = ["SPAWN_MODES"]

#: How a run's process is started (see the module docstring).
SPAWN_MODES = ("zygote", "popen")
#: Bound on the ``detail`` of a failure (characters).
DETAIL_MAX = 4000
#: How often (seconds) the scorer polls the child's resident memory while it waits.
MEMORY_POLL_S = 0.2


@functools.lru_cache(maxsize=1)
def _jail_binds() -> tuple[str, ...]:
    return tuple(_jail.bind_paths())


def _jail_pss_bytes(pidns: str) -> int:
    """Proportional memory (PSS) of the processes of the pid namespace ``pidns``: a page shared copy-on-write
    by n processes counts 1/n in each (the measure without a cgroup)."""
    total = 0
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if os.readlink(f"/proc/{name}/ns/pid") != pidns:
                    continue
                with open(f"/proc/{name}/smaps_rollup", "rb") as f:
                    for line in f:
                        if line.startswith(b"Pss:"):
                            total += int(line.split()[1]) << 10
                            break
            except (OSError, ValueError):
                pass
    return total


# ----------------------------------------------------------------------------------------------- one child
def _proc_stat(pid: str) -> list[bytes] | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    return data[data.rfind(b")") + 2:].split()


def _group_rss_bytes(pgid: int) -> int:
    """Resident memory of every process in the group ``pgid`` (Linux ``/proc``; 0 elsewhere)."""
    if not os.path.isdir("/proc"):
        return 0
    page, total = os.sysconf("SC_PAGE_SIZE"), 0
    for name in os.listdir("/proc"):
        if name.isdigit():
            fields = _proc_stat(name)
            if fields is not None and len(fields) > 21 and int(fields[2]) == pgid:
                total += int(fields[21]) * page
    return total


def _kill_uid(uid: int) -> None:
    """SIGKILL every process owned by ``uid`` (a run's own uid: catches children that left the group)."""
    needle = f"Uid:\t{uid}\t".encode()
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:  # not os.stat(/proc/<pid>).st_uid: a non-dumpable process's /proc entry is owned by root
                with open(f"/proc/{name}/status", "rb") as f:
                    if needle in f.read():
                        os.kill(int(name), signal.SIGKILL)
            except OSError:
                pass


class _Child:
    """The scorer's handle on one sandboxed process: spawn, framed I/O under deadline and memory watch, kill."""

    def __init__(self, sub: Submission, limits: Limits, device: str, spawn: str) -> None:
        if spawn not in SPAWN_MODES:
            raise ValueError(f"spawn must be one of {SPAWN_MODES} (got {spawn!r}).")
        if not isinstance(limits, Limits):
            raise TypeError(f"limits must be a leaderboard.spec.Limits (got {type(limits).__name__}).")
        self.limits, self.sub = limits, sub
        self.sandbox = sandbox_mode(limits)
        self.jail: _jail.Jail | None = None
        self.cg: _cgroup.RunCgroup | None = None
        network = network_mode(limits) if self.sandbox == "trusted" else ("allow" if limits.network == "allow" else "jail")
        self.pgid: int | None = None
        self.killed_by_us = False
        self.spawn_mode = spawn
        self.popen: subprocess.Popen | None = None
        self._fds: list[int] = []
        try:  # the run's folder: a full or unwritable /tmp is the scorer's failure, not the submission's
            self.tmp = tempfile.mkdtemp(prefix="tiltenv-run-")
        except OSError as e:
            raise ScorerEnvironmentError("tmp", f"cannot make the run's folder in {tempfile.gettempdir()}: {e}") from e
        self.uid, self.gid = _run_ids()
        self.file = None
        self.log = None
        pipes: list[int] = []
        try:
            if self.sandbox == "trusted":  # a jail binds no cache: only an unjailed run could read it
                _warn_if_cache_reachable(self.uid, self.gid)
            try:
                if sub.kind == "file":  # a private copy, readable by the run's uid
                    os.makedirs(os.path.join(self.tmp, "submission"))
                    self.file = os.path.join(self.tmp, "submission", os.path.basename(sub.target))
                    shutil.copyfile(sub.target, self.file)
                self.log = open(os.path.join(self.tmp, "stderr.log"), "w+b")  # read back through this fd only
                if self.uid is not None:
                    for root, dirs, files in os.walk(self.tmp):
                        for p in [root, *(os.path.join(root, n) for n in dirs + files)]:
                            os.lchown(p, self.uid, self.gid)
            except OSError as e:
                raise ScorerEnvironmentError("tmp", f"cannot fill the run's folder {self.tmp}: {e}") from e
            try:
                pipes += os.pipe()
                pipes += os.pipe()
            except OSError as e:
                raise ScorerEnvironmentError("spawn", f"cannot make the run's pipes: {e}") from e
        except BaseException:
            for fd in pipes:
                os.close(fd)
            if self.log is not None:
                self.log.close()
            shutil.rmtree(self.tmp, ignore_errors=True)
            raise
        p2c_r, p2c_w, c2p_r, c2p_w = pipes
        for fd in (p2c_w, c2p_w):
            set_pipe_size(fd)
        extra = (sub.root,) if sub.kind == "module" and sub.root else ()
        cfg = {
            "cwd": self.tmp, "env": _child_env(self.tmp, limits.threads, extra), "memory_mb": int(limits.memory_mb),
            "threads": int(limits.threads), "uid": self.uid, "gid": self.gid, "private": _private_paths(),
            "network": network,
        }
        self.zygote = None
        self.started = time.monotonic()
        try:
            if spawn == "zygote":
                try:
                    self.zygote = _zygote()  # started once per scorer process, not charged
                except (OSError, RuntimeError, ValueError) as e:
                    raise ScorerEnvironmentError("zygote", f"the sandbox zygote did not start: {e}") from e
            if self.sandbox == "jail":
                self._start_jail(sub, limits, device, cfg, network)
        except BaseException:
            for fd in (p2c_r, c2p_w, p2c_w, c2p_r):
                os.close(fd)
            self._end_jail()
            if self.cg is not None:
                self.cg.close()
            self.log.close()
            shutil.rmtree(self.tmp, ignore_errors=True)
            raise
        self.deadline = self.started + float(limits.wall_time)
        self._left = float(limits.wall_time)
        try:
            if self.zygote is not None:
                zyg = self.zygote
                try:
                    reply = zyg.request({"op": "fork", "config": cfg}, [p2c_r, c2p_w, self.log.fileno()])
                    self.pid = int(reply["pid"])
                except (OSError, RuntimeError, ValueError, KeyError, TypeError) as e:
                    raise ScorerEnvironmentError("zygote", f"the sandbox zygote could not start the run: {e}") from e
            else:
                cfg.update(rfd=p2c_r, wfd=c2p_w)
                try:
                    self.popen = subprocess.Popen(
                        [sys.executable, "-m", "leaderboard.sandbox.child", "--run", json.dumps(cfg)],
                        pass_fds=(p2c_r, c2p_w), env=cfg["env"], cwd=self.tmp, start_new_session=True,
                        stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log,
                    )
                except OSError as e:
                    raise ScorerEnvironmentError("spawn", f"cannot start the run's process: {e}") from e
                self.pid = self.popen.pid
        except BaseException as exc:
            self._end_jail()
            if self.cg is not None:
                self.cg.close()
            if isinstance(exc, ScorerEnvironmentError):  # nothing runs: the run's fds and folder go now
                for fd in (p2c_w, c2p_r):
                    os.close(fd)
                self.log.close()
                shutil.rmtree(self.tmp, ignore_errors=True)
            raise
        finally:
            os.close(p2c_r)
            os.close(c2p_w)
        self.pgid = self.pid
        self._fds = [c2p_r, p2c_w]
        for fd in self._fds:
            os.set_blocking(fd, False)
        self._last_poll = 0.0
        self.chan = Channel(c2p_r, p2c_w, wait=self._wait)

    def _start_jail(self, sub: Submission, limits: Limits, device: str, cfg: dict[str, Any], network: str) -> None:
        """The run's cgroup and jail; ``cfg`` gets what the child needs to join them."""
        try:
            self.cg = _cgroup.RunCgroup.create(limits.memory_mb, limits.max_processes)
        except OSError as e:
            raise ScorerEnvironmentError("cgroup", f"cannot create the run's cgroup: {e}") from e
        ro = []
        if self.file is not None:
            ro.append((os.path.dirname(self.file),) * 2)
        if sub.kind == "module" and sub.root:
            ro.append((os.path.realpath(sub.root),) * 2)
        devices = _jail.gpu_devices() if str(device).startswith("cuda") else ()
        if str(device).startswith("cuda") and not devices:
            raise ScorerEnvironmentError("gpu", f"device {device!r}: no GPU device node (/dev/nvidia*) to give the run")
        try:
            self.jail = _jail.Jail(binds=_jail_binds(), work=self.tmp, disk_mb=limits.disk_mb, ro_dirs=ro,
                                   network=network == "allow", devices=devices)
        except (OSError, ValueError, IndexError, subprocess.SubprocessError) as e:
            raise ScorerEnvironmentError("jail", f"the run's jail did not start: {e}") from e
        self.pidns = self.jail.pid_namespace()
        cfg.update(jail=self.jail.config(), cgroup_procs=self.cg.procs_files if self.cg else [],
                   max_processes=int(limits.max_processes), cpu_time=int(limits.cpu_seconds) + 1)

    def _end_jail(self) -> None:
        if self.jail is not None:
            self.jail.close()
        if self.cg is not None:
            self.cg.kill()

    def _check_jail(self) -> None:
        """Fail the run if its processes reached a limit of the cgroup (or, without one, their PSS the memory cap)."""
        limit_mb, cpu_cap = self.limits.memory_mb, self.limits.cpu_seconds
        if self.cg is not None:
            if self.cg.oom_kills():
                self.fail("memory", f"the run's processes reached the memory limit of {limit_mb} MiB (cgroup: "
                                    f"{self.cg.oom_kills()} process(es) killed by the kernel, peak "
                                    f"{self.cg.peak_bytes() / 2**20:.0f} MiB incl. /dev/shm, tmpfs and memfd pages)")
            cpu = self.cg.cpu_seconds()
            if cpu is not None and cpu > cpu_cap:
                self.fail("timeout", f"the run's processes used {cpu:.1f} s of CPU time > limit {cpu_cap:g} s; killed")
        elif self.jail is not None:
            pss = _jail_pss_bytes(self.pidns)
            if pss > int(limit_mb) << 20:
                self.fail("memory", f"proportional memory (PSS) of the run's processes reached {pss / 2**20:.0f} MiB "
                                    f"> limit {limit_mb} MiB; killed")

    # -- clock: agents run against one deadline; a reward model is charged only while the scorer waits on it
    def pause_clock(self) -> None:
        self._left = self.deadline - time.monotonic()
        self.deadline = float("inf")

    def resume_clock(self) -> None:
        self.deadline = time.monotonic() + self._left

    # -- waiting
    def _wait(self, fd: int, for_write: bool) -> None:
        now = self._tick()
        timeout = max(0.0, min(self.deadline - now, MEMORY_POLL_S))
        if for_write:
            select.select([], [fd], [], timeout)
        else:
            select.select([fd], [], [], timeout)

    def _tick(self) -> float:
        """Fail the run past its deadline or its memory limit (polled every :data:`MEMORY_POLL_S`); returns now.
        Called on every frame too, not only when the channel would block: a run that keeps the scorer busy with
        frames (never letting a read block) is still stopped at its deadline."""
        now = time.monotonic()
        if now >= self.deadline:
            self.fail("timeout", f"the run exceeded its wall-time limit of {self.limits.wall_time:g} s and was killed")
        if now - self._last_poll >= MEMORY_POLL_S and self.jail is not None:
            self._last_poll = now
            self._check_jail()
        elif now - self._last_poll >= MEMORY_POLL_S:
            self._last_poll = now
            rss = _group_rss_bytes(self.pgid)
            if rss > int(self.limits.memory_mb) << 20:
                self.fail("memory", f"resident memory of the run's processes reached {rss / 2**20:.0f} MiB "
                                    f"> limit {self.limits.memory_mb} MiB; killed")
        return now

    # -- failures
    def kill(self) -> None:
        if self.pgid is not None:
            self.killed_by_us = True
            try:
                os.killpg(self.pgid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        self._end_jail()

    def fail(self, reason: str, detail: str) -> None:
        self.kill()
        raise SandboxFailure(reason, detail[:DETAIL_MAX])

    def exit_status(self, timeout: float = 5.0) -> dict[str, Any] | None:
        if self.popen is not None:
            try:
                code = self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                return None
            return {"exitcode": code, "signal": None} if code >= 0 else {"exitcode": None, "signal": -code}
        try:
            return self.zygote.request({"op": "wait", "pid": self.pid, "timeout": timeout}).get("status")
        except (OSError, RuntimeError, ValueError):
            return None

    def stderr_tail(self, n: int = 1500) -> str:
        try:
            size = os.fstat(self.log.fileno()).st_size
            self.log.seek(max(0, size - n))
            return self.log.read(n).decode("utf-8", "replace").strip()
        except (OSError, ValueError):
            return ""

    def died(self, why: str) -> None:
        """The channel closed without a result: decide between ``memory`` (OOM kill) and ``protocol``."""
        killed_by_us = self.killed_by_us
        status = self.exit_status()
        tail = self.stderr_tail()
        if self.cg is not None and self.cg.oom_kills():
            self._check_jail()
        if status is None:
            self.kill()
            how = "closed its channel"
        elif status["signal"] is not None:
            name = signal.Signals(status["signal"]).name if status["signal"] in signal.Signals._value2member_map_ else status["signal"]
            if status["signal"] == signal.SIGKILL and not killed_by_us:
                raise SandboxFailure("memory", f"the child was killed by SIGKILL it did not get from the scorer "
                                               f"(most likely the kernel's OOM killer); stderr: {tail}"[:DETAIL_MAX])
            how = f"was killed by signal {name}"
        else:
            how = f"exited with code {status['exitcode']}"
        self.fail("protocol", f"the child {how} {why}" + (f"; last stderr lines:\n{tail}" if tail else "; no stderr output"))

    # -- frames
    def send(self, header: dict[str, Any], arrays=(), raw: bytes | None = None) -> None:
        try:
            self.chan.send(header, arrays, raw)
        except (BrokenPipeError, EOFError):
            self.died(f"while the scorer was sending {header['op']!r}")

    def recv_header(self, expecting: str) -> tuple[dict[str, Any], int]:
        """Next frame header; a child-reported error becomes its :class:`SandboxFailure`."""
        self._tick()  # the deadline holds however fast the frames come
        try:
            header, plen = self.chan.recv_header()
        except EOFError:
            self.died(f"before sending {expecting}")
        except ProtocolError as e:
            self.fail("protocol", f"malformed frame while expecting {expecting}: {e}")
        if header["op"] == "error":
            self.child_error(header, plen)
        if self.jail is not None and header["op"] in ("done", "fit_done", "scores"):
            self._check_jail()  # e.g. a process of the run the kernel killed at the memory limit
        return header, plen

    def recv_arrays(self, header: dict[str, Any], plen: int) -> list[np.ndarray]:
        try:
            specs = check_array_specs(header, plen, FLOAT_DTYPES)
        except ProtocolError as e:
            self.fail("protocol", f"bad {header['op']!r} frame: {e}")
        try:
            return unpack_arrays(specs, self.chan.recv_payload(plen))
        except EOFError:
            self.died(f"in the middle of a {header['op']!r} frame")

    def read_into(self, view: memoryview, what: str) -> None:
        try:
            self.chan._read_into(view)
        except EOFError:
            self.died(f"in the middle of {what}")

    def child_error(self, header: dict[str, Any], plen: int) -> None:
        kind = header.get("kind")
        reason = kind if kind in ("load", "memory", "invalid_output") else "error"
        text = f"{str(header.get('type', 'Exception'))[:100]}: {str(header.get('message', ''))[:DETAIL_MAX]}"
        tb = str(header.get("traceback", ""))
        stage = str(header.get("stage", "?"))[:20]
        self.fail(reason, f"[{stage}] {text}" + (f"\n{tb[-2000:]}" if tb and reason != "invalid_output" else ""))

    def expect(self, op: str) -> dict[str, Any]:
        header, plen = self.recv_header(repr(op))
        if header["op"] != op or plen:
            self.fail("protocol", f"expected {op!r}, the child sent {str(header['op'])[:40]!r} ({plen} payload bytes)")
        return header

    def output_tail(self) -> str | None:
        """The run's own stdout/stderr, its last :data:`leaderboard.spec.OUTPUT_MAX` bytes."""
        from leaderboard.spec import OUTPUT_MAX

        try:
            size = os.fstat(self.log.fileno()).st_size
            self.log.seek(max(0, size - OUTPUT_MAX))
            return self.log.read(OUTPUT_MAX).decode("utf-8", "replace")
        except (OSError, ValueError):
            return None

    def close(self) -> None:
        self.kill()
        exc = sys.exc_info()[1]  # a failure on its way out of run_agent (close runs in its finally): keep the output
        if isinstance(exc, SandboxFailure) and exc.output is None:
            exc.output = self.output_tail()
        if self.popen is not None:
            try:
                self.popen.wait(5)
            except subprocess.TimeoutExpired:
                pass
        elif self.pgid is not None:
            self.exit_status(2.0)  # reap it in the zygote
        if self.uid is not None and self.uid != _NOBODY and self.jail is None:
            _kill_uid(self.uid)
        if self.cg is not None:
            self.cg.close()
        for fd in self._fds:
            try:
                os.close(fd)
            except OSError:
                pass
        self._fds = []
        try:
            self.log.close()
        except OSError:
            pass
        _remove_tree(self.tmp)


def _remove_tree(path: str) -> None:
    """Remove a run's directory, however the run shaped it: ``shutil.rmtree`` recurses once per level (a
    1,200-deep tree raises RecursionError, which ``ignore_errors`` does not catch), so a deep tree goes to
    ``rm -rf``, which walks it iteratively."""
    try:
        shutil.rmtree(path, ignore_errors=True)
        return
    except RecursionError:
        pass
    rm = shutil.which("rm") or "/bin/rm"
    try:
        subprocess.run([rm, "-rf", "--one-file-system", "--", path], env={}, cwd="/", stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120, check=False)
    except (OSError, subprocess.SubprocessError):  # best effort, as ignore_errors
        pass


def _public_copy(task: Any, proxy: torch.nn.Module) -> Any:
    """The task as the child gets it: a fresh counter and ``proxy`` (a stub) instead of the real proxy."""
    from tiltenv.worlds.world import Budget, PublicTask

    if not isinstance(task, PublicTask):
        raise TypeError(f"task must be a tiltenv PublicTask (got {type(task).__name__}).")
    public = copy.copy(task)
    public.proxy = proxy
    public._proxy_on = {torch.device("cpu"): proxy}
    public.budget = Budget()
    if hasattr(task, "dim_proxies"):  # a multi-objective task: its per-dimension models stay here too
        stack = RemoteDimStack(len(task.dim_proxies), task.d)
        public.dim_proxies = [RemoteDimProxy(stack, i, getattr(p, "kind", "proxy")) for i, p in enumerate(task.dim_proxies)]
        public._stack = stack
    return public


def _start_payload(sub: Submission, track: str, public: Any, budget: Any, device: str, file: str | None) -> bytes:
    info = {"name": sub.name, "ref": sub.ref, "kind": sub.kind, "target": sub.target, "factory": sub.factory,
            "config": dict(sub.config), "root": sub.root}
    return pickle.dumps({"submission": info, "track": track, "task": public, "budget": budget, "device": str(device),
                         "file": file}, protocol=pickle.HIGHEST_PROTOCOL)
