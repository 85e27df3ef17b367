"""Run a submission in its own sandboxed process; the proxy stays in the scorer behind a counting channel.

:func:`run_agent` runs one (submission, task) in a **fresh child process** (see :mod:`leaderboard._child`)
that receives only the public task, its proxy replaced by a stub. The scorer keeps the real proxy and
serves the child's queries over two pipes with a small framed protocol (JSON header + raw little-endian
float arrays); it never unpickles anything the child sends. What it enforces:

* **Budget** — every candidate the child asks to score during ``fit`` is counted here, whatever the child's
  ``count=False`` says; a query that would exceed ``budget.proxy_queries`` ends the run (``budget``).
* **Checkpoint schedule** — the scorer owns it: marks 0 (the initial policy) and
  ``budget.checkpoint_marks()`` (``ceil(j · proxy_queries / n_checkpoints)``). ``checkpoint(step, policy)``
  tells the scorer, which stores **its own query count** as the step (the agent's ``step`` is ignored); the
  first checkpoint once a mark is reached is that mark's. A query that would reach the next mark while a mark
  is still owed ends the run (``checkpoint``, naming the mark). The final policy is the last checkpoint if it
  came at the final count, else the agent itself. At most ``n_checkpoints + 2`` checkpoints are evaluated;
  steps are strictly increasing.
* **Deployment** — while checkpoint ``i`` is evaluated its policy may score exactly the candidates it is
  evaluated on, each at most once, answered from a cache the scorer fills (Tilt/BestOfN score at
  deployment); anything else ends the run (``budget``). These are counted apart as ``deploy_queries``.
* **Outputs** — every array the child returns is checked: float32/float64 only, declared shape matches the
  byte length, shape ``(C, K)``, no NaN or +inf (−inf is probability 0), rows normalized
  (``|logsumexp| ≤ 1e-3``) → otherwise ``invalid_output`` saying what was returned.
* **Wall time** — every wait on the child has a deadline (``limits.wall_time`` from the start of the run);
  past it the child's process group is killed (``timeout``).
* **Jail** (``limits.sandbox="jail"``, the default) — every run lives in its own bubblewrap jail
  (:mod:`leaderboard._jail`): pid, mount, network, ipc, uts and cgroup namespaces (plus a user namespace for
  a non-root scorer), a root holding only read-only binds of ``/usr``, the interpreter, its site-packages and
  the three package folders, a ``/proc`` of the run's own processes, size-capped tmpfs (``limits.disk_mb``)
  for the working folder, ``/tmp`` and ``/dev/shm``, and a seccomp filter (:mod:`leaderboard._seccomp`). When
  the run ends, for any reason, the jail's pid 1 exits and the kernel kills every process of the run, however
  it forked or hopped. As root, the run also gets a **cgroup** (:mod:`leaderboard._cgroup`, v2 or v1) and a
  fresh unprivileged uid/gid (not repeated within a scorer's life, no supplementary groups).
  Where no jail can be started the scorer refuses (:func:`sandbox_mode` says why); ``sandbox="trusted"``
  runs without it (own code, built-in baselines), with a warning.
* **Memory** — with a cgroup: ``memory_mb`` is its limit, covering every process of the run and its shmem,
  tmpfs and memfd pages, each page counted once (copy-on-write copies of the zygote's pages are not counted
  per process); a process the kernel kills there → ``memory``. Without one (non-root scorer): the scorer
  polls the proportional memory (PSS) of the jail's processes. In both, ``RLIMIT_DATA = limits.memory_mb``
  (``RLIMIT_AS`` is not used: torch reserves more address space than it touches). A ``MemoryError`` in the
  child or a SIGKILL the scorer did not send (the kernel's OOM killer) → ``memory``.
* **Processes and CPU** — ``limits.max_processes`` (cgroup ``pids.max`` and ``RLIMIT_NPROC``) and
  ``limits.cpu_seconds`` (the cgroup's CPU time, polled; ``RLIMIT_CPU`` per process) → ``timeout``.
* **Isolation** — the child gets a scrubbed environment (``PATH``, ``LANG``/``LC_ALL``, ``PYTHONPATH``,
  ``HOME`` = ``TMPDIR`` = its private working directory, which is also its cwd, thread counts
  ``= limits.threads``): no salt, no ``TILTENV_*`` variable, no cache directory. It never sees θ*, the seed,
  the judge or the evaluation gold: they are not in its memory (it is not forked from the scorer), nor in
  its filesystem (the jail has no home folder, board, salt or proxy cache, whoever runs the scorer).
* **Network** — a jailed run has its own network namespace with only its own loopback
  (``limits.network="allow"`` shares the scorer's). A trusted run gets an empty network namespace of its own
  where the kernel allows it (:mod:`leaderboard._netns`), else a warning (``network="require"`` refuses).
* **Output** — the run's stdout/stderr go to a file of the scorer; its last 64 KiB are returned with the
  outcome (:attr:`AgentOutcome.output`, :attr:`SandboxFailure.output <leaderboard.spec.SandboxFailure>`).

Processes: by default (``spawn="zygote"``) runs are forked from a **zygote**, a clean interpreter started
once per scorer process with ``Popen([sys.executable, "-m", "leaderboard._child", "--zygote", ...])`` that
has imported only libraries (never a world, judge, salt or seed); each run is still its own process with
its own session, rlimits and uid, and it skips the 1-2 s import of torch. ``spawn="popen"`` starts one
fresh interpreter per run instead. Either way the run's process joins its jail (cgroups first, then the
namespaces, then it drops its uid or capabilities) and forks once more: the grandchild, inside the jail's pid
namespace, runs the submission; the process the scorer knows relays its exit status.

Example:
    >>> from tiltenv import TaskConfig, make_world            # doctest: +SKIP
    >>> world = make_world(TaskConfig(d=4, K=8, n_labels=200, n_eval_contexts=64))
    >>> out = run_agent(load_submission("tilt"), world.task, TrainBudget(proxy_queries=1024),
    ...                 world.judge.eval_candidates, world.judge.eval_ref_logp, Limits(wall_time=60))
    >>> out.logps.shape, out.proxy_queries
    ((1, 64, 8), 0)
"""

from __future__ import annotations

import copy
import functools
import itertools
import json
import os
import pickle
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from leaderboard._child import (FLOAT_DTYPES, Channel, NoProxy, ProtocolError, RemoteDimProxy, RemoteDimStack, RemoteProxy,
                                _reachable, check_array_specs, set_pipe_size, unpack_arrays)
from leaderboard import _cgroup, _jail
from leaderboard.spec import Limits, SandboxFailure
from leaderboard.submission import Submission

__all__ = ["AgentOutcome", "run_agent", "RemoteRewardModel", "SPAWN_MODES", "NORMALIZATION_TOL", "shutdown",
           "network_isolation", "network_mode"]

#: How a run's process is started (see the module docstring).
SPAWN_MODES = ("zygote", "popen")
#: Rows of returned log-probabilities must have ``|logsumexp| <=`` this.
NORMALIZATION_TOL = 1e-3
#: Bound on the ``detail`` of a failure (characters).
DETAIL_MAX = 4000
#: How often (seconds) the scorer polls the child's resident memory while it waits.
MEMORY_POLL_S = 0.2
_BIG_UID_BASE = 2_000_000_000
_UID_SPAN = 2_000_000_000  # uids 2e9 .. 4e9 (< 2**32 - 1)
_NOBODY = 65534
_run_counter = itertools.count()


@dataclass
class AgentOutcome:
    """What a sandboxed agent run produced (validated by the scorer).

    Attributes:
        steps: checkpoint steps in order, strictly increasing: the channel's query count when each checkpoint
            arrived (step 0 = initial policy, last = fitted policy at the final count).
        logps: ``(n_ckpt, C, K)`` float64 log-probabilities on the evaluation contexts, validated and
            renormalized in float64 (``log_softmax``, as :func:`tiltenv.evaluation.policy_logp` does in-process,
            so the same policy gives the same bits; each row was already within 1e-3 of normalized).
        proxy_queries: candidates the scorer's side of the channel scored during ``fit``.
        deploy_queries: candidates served from the deployment cache while the checkpoints were evaluated.
        fit_time: seconds from the child's ``ready`` to the end of ``fit`` (measured by the scorer).
        wall_time: seconds of the whole sandboxed run, start of the process to its result.
        output: the run's own stdout/stderr (last 64 KiB); sandbox: ``"jail"`` or ``"trusted"``.
    """

    steps: list[int]
    logps: np.ndarray
    proxy_queries: int
    deploy_queries: int
    fit_time: float
    wall_time: float
    output: str | None = None
    sandbox: str = "jail"


# ----------------------------------------------------------------------------------------------- environment
def _package_root(name: str) -> str:
    import importlib.util

    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"cannot locate the {name!r} package")
    return str(Path(list(spec.submodule_search_locations)[0]).resolve().parent)


@functools.lru_cache(maxsize=1)
def _library_paths() -> tuple[str, ...]:
    return tuple(dict.fromkeys(_package_root(p) for p in ("tiltenv", "baselines", "leaderboard")))


def _child_env(home: str, threads: int, extra_paths: tuple[str, ...] = ()) -> dict[str, str]:
    """The child's entire environment: nothing of the scorer's but the locale."""
    env = {
        "PATH": os.pathsep.join(dict.fromkeys([os.path.dirname(sys.executable), "/usr/local/bin", "/usr/bin", "/bin"])),
        "PYTHONPATH": os.pathsep.join(dict.fromkeys([*extra_paths, *_library_paths()])),
        "HOME": home,
        "TMPDIR": home,
        "PYTHONHASHSEED": "0",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONNOUSERSITE": "1",
    }
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = str(int(threads))
    for var in ("LANG", "LC_ALL"):
        if var in os.environ:
            env[var] = os.environ[var]
    return env


def _private_paths() -> list[str]:
    """Paths a root child must never be given a way into (the scorer's home and proxy cache)."""
    from tiltenv.proxy_cache import cache_dir

    paths = [os.path.expanduser("~"), str(cache_dir())]
    try:
        from leaderboard.seeds import default_salt_file

        paths.append(str(default_salt_file()))
    except ImportError:  # pragma: no cover - seeds is part of the package
        pass
    return paths


_warned_cache = False


def _warn_if_cache_reachable(uid: int | None, gid: int | None) -> None:
    """Warn once when the run's uid could read the proxy cache (it holds the proxies' weights)."""
    global _warned_cache
    from tiltenv.proxy_cache import cache_dir

    if _warned_cache or uid is None:
        return
    path = cache_dir()
    if path.is_dir() and _reachable(str(path), uid, gid):
        _warned_cache = True
        warnings.warn(f"the proxy cache {path} is readable by the sandbox's uid (its weights would let a submission "
                      "score candidates outside the budget): keep it under a private (0700) directory.", stacklevel=3)


@functools.lru_cache(maxsize=1)
def _big_uids_work() -> bool:
    """Whether this kernel/namespace lets root switch to uids above 65535 (probed once with /bin/true)."""
    true = shutil.which("true")
    if os.geteuid() != 0 or true is None:
        return False
    try:
        subprocess.run([true], user=_BIG_UID_BASE, group=_BIG_UID_BASE, extra_groups=[], check=True, timeout=10,
                       env={}, cwd="/", stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return True
    except (OSError, subprocess.SubprocessError):
        return False


def _run_ids() -> tuple[int, int] | tuple[None, None]:
    """A fresh unprivileged uid/gid for one run when root (``nobody`` if large uids are not mapped)."""
    if os.geteuid() != 0:
        return None, None
    if not _big_uids_work():
        return _NOBODY, _NOBODY
    # a block of 1,000 uids per scorer pid, then the next blocks: no uid repeats within a scorer's life (and a uid
    # shared with another scorer's run is harmless: each run is in its own pid namespace and cgroup)
    uid = _BIG_UID_BASE + ((os.getpid() % 100_000) * 1000 + next(_run_counter)) % _UID_SPAN
    return uid, uid


@functools.lru_cache(maxsize=1)
def network_isolation() -> tuple[bool, str]:
    """Whether a run can get its own empty network namespace on this machine, and if not why (probed once per
    process by running :mod:`leaderboard._netns` in a fresh interpreter)."""
    from leaderboard import _netns

    try:
        probe = subprocess.run([sys.executable, "-I", _netns.__file__], env={}, cwd="/", stdin=subprocess.DEVNULL,
                               capture_output=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as e:
        return False, f"the probe could not run ({e})"
    return probe.returncode == 0, probe.stderr.decode("utf-8", "replace").strip()


_warned_network = False


def network_mode(limits: Limits) -> str:
    """What a run's process does with the network under ``limits.network``: ``"isolate"`` or ``"allow"``.

    Raises:
        RuntimeError: ``network="require"`` where runs cannot be isolated (the message says why).
    """
    global _warned_network
    if limits.network == "allow":
        return "allow"
    if limits.sandbox == "jail":  # the jail has its own network namespace (checked by sandbox_mode)
        return "isolate"
    ok, why = network_isolation()
    if ok:
        return "isolate"
    if limits.network == "require":
        raise RuntimeError(f"Limits(network='require'), but runs cannot get their own network namespace here: {why}. "
                           "Use network='isolate' to score without network isolation (with a warning).")
    if not _warned_network:
        _warned_network = True
        warnings.warn(f"sandboxed runs are NOT isolated from the network here ({why}): a submission can open "
                      "sockets. Limits(network='require') (tiltenv score --network require) refuses to score instead.",
                      stacklevel=3)
    return "allow"


_warned_trusted = False


def sandbox_mode(limits: Limits) -> str:
    """``"jail"`` or ``"trusted"`` for a run under ``limits`` (see :attr:`Limits.sandbox`).

    Raises:
        RuntimeError: ``sandbox="jail"`` where jails cannot be started (the message says why and how to fix it).
    """
    global _warned_trusted
    if limits.sandbox == "trusted":
        if not _warned_trusted:
            _warned_trusted = True
            warnings.warn("Limits(sandbox='trusted'): runs are NOT jailed (no namespaces, cgroup or seccomp): use it "
                          "only for your own code and the built-in baselines; these runs are marked 'trusted'.",
                          stacklevel=3)
        return "trusted"
    ok, why = _jail.available()
    if not ok:
        raise RuntimeError(f"refusing to run submissions: runs cannot be jailed here ({why}). To run your own code "
                           "or the built-in baselines without the jail: Limits(sandbox='trusted') (tiltenv score "
                           "--sandbox trusted).")
    return "jail"


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


# ----------------------------------------------------------------------------------------------- zygote
class _Zygote:
    """The clean fork server (one per scorer process)."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.lock = threading.Lock()
        self.home = tempfile.mkdtemp(prefix="tiltenv-zygote-")
        parent_sock, child_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.sock = parent_sock
        env = _child_env(self.home, 1)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "leaderboard._child", "--zygote", str(child_sock.fileno())],
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
        self.tmp = tempfile.mkdtemp(prefix="tiltenv-run-")
        self.uid, self.gid = _run_ids()
        _warn_if_cache_reachable(self.uid, self.gid)
        self.file = None
        if sub.kind == "file":  # a private copy, readable by the run's uid
            os.makedirs(os.path.join(self.tmp, "submission"))
            self.file = os.path.join(self.tmp, "submission", os.path.basename(sub.target))
            shutil.copyfile(sub.target, self.file)
        self.log = open(os.path.join(self.tmp, "stderr.log"), "w+b")  # read back through this fd only
        if self.uid is not None:
            for root, dirs, files in os.walk(self.tmp):
                for p in [root, *(os.path.join(root, n) for n in dirs + files)]:
                    os.lchown(p, self.uid, self.gid)
        p2c_r, p2c_w = os.pipe()
        c2p_r, c2p_w = os.pipe()
        for fd in (p2c_w, c2p_w):
            set_pipe_size(fd)
        extra = (sub.root,) if sub.kind == "module" and sub.root else ()
        cfg = {
            "cwd": self.tmp, "env": _child_env(self.tmp, limits.threads, extra), "memory_mb": int(limits.memory_mb),
            "threads": int(limits.threads), "uid": self.uid, "gid": self.gid, "private": _private_paths(),
            "network": network,
        }
        self.zygote = _zygote() if spawn == "zygote" else None  # started once per scorer process, not charged
        self.started = time.monotonic()
        if self.sandbox == "jail":
            try:
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
                reply = zyg.request({"op": "fork", "config": cfg}, [p2c_r, c2p_w, self.log.fileno()])
                self.pid = int(reply["pid"])
            else:
                cfg.update(rfd=p2c_r, wfd=c2p_w)
                self.popen = subprocess.Popen(
                    [sys.executable, "-m", "leaderboard._child", "--run", json.dumps(cfg)],
                    pass_fds=(p2c_r, c2p_w), env=cfg["env"], cwd=self.tmp, start_new_session=True,
                    stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log,
                )
                self.pid = self.popen.pid
        except BaseException:
            self._end_jail()
            if self.cg is not None:
                self.cg.close()
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
        self.cg = _cgroup.RunCgroup.create(limits.memory_mb, limits.max_processes)
        ro = []
        if self.file is not None:
            ro.append((os.path.dirname(self.file),) * 2)
        if sub.kind == "module" and sub.root:
            ro.append((os.path.realpath(sub.root),) * 2)
        devices = _jail.gpu_devices() if str(device).startswith("cuda") else ()
        self.jail = _jail.Jail(binds=_jail_binds(), work=self.tmp, disk_mb=limits.disk_mb, ro_dirs=ro,
                               network=network == "allow", devices=devices)
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
        timeout = max(0.0, min(self.deadline - now, MEMORY_POLL_S))
        if for_write:
            select.select([], [fd], [], timeout)
        else:
            select.select([fd], [], [], timeout)

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
    from tiltenv.world import Budget, PublicTask

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


def _model_of(task: Any, header: dict[str, Any]) -> Any:
    """The real model a proxy request asks for: the task's proxy, or (``model: dims``) every dimension's."""
    model = header.get("model", "proxy")
    if model == "dims" and hasattr(task, "dim_proxies"):
        return task._stack.dim_rewards
    if model == "proxy":
        return task.proxy
    return None


def _start_payload(sub: Submission, track: str, public: Any, budget: Any, device: str, file: str | None) -> bytes:
    info = {"name": sub.name, "ref": sub.ref, "kind": sub.kind, "target": sub.target, "factory": sub.factory,
            "config": dict(sub.config), "root": sub.root}
    return pickle.dumps({"submission": info, "track": track, "task": public, "budget": budget, "device": str(device),
                         "file": file}, protocol=pickle.HIGHEST_PROTOCOL)


def _serve_proxy(child: _Child, task: Any, d: int, header: dict[str, Any], plen: int, left: int, what: str,
                 allow: Any = None, cache: "_DeployCache | None" = None) -> int:
    """Score one ``proxy`` request (the task's proxy, or ``model: dims``: a multi-objective task's per-dimension
    models) if it fits in ``left`` candidates and ``allow(n)`` does not fail the run (the checkpoint schedule);
    with ``cache`` (deployment) the answers come from the scorer's cache of the evaluation candidates. Returns the
    number scored."""
    proxy = _model_of(task, header)
    if proxy is None:
        child.fail("protocol", f"a proxy request names an unknown model {str(header.get('model'))[:40]!r}")
    try:
        specs = check_array_specs(header, plen, FLOAT_DTYPES)
    except ProtocolError as e:
        child.fail("protocol", f"bad proxy request: {e}")
    if len(specs) != 1 or len(specs[0][1]) < 1 or specs[0][1][-1] != d:
        child.fail("protocol", f"a proxy request must be one (..., d={d}) array (got {[list(s) for _, s in specs]})")
    n = int(np.prod(specs[0][1][:-1], dtype=np.int64))
    if n > left:
        child.fail("budget", f"asked to score {n} candidates with {left} left of the {what}")
    if allow is not None:
        allow(n)
    (x,) = unpack_arrays(specs, child.chan.recv_payload(plen))
    if cache is not None:
        y = cache.serve(str(header.get("model", "proxy")), proxy, x)
    else:
        with torch.no_grad():
            y = proxy(torch.from_numpy(x)).detach().cpu().numpy()
    child.send({"op": "proxy_ok"}, [y])
    return n


class _DeployCache:
    """Deployment: while checkpoint ``i`` is evaluated its policy may score exactly the candidates it is evaluated
    on, each at most once (per model), answered from values the scorer computes once on the whole ``(C, K, d)``
    array (the same bits as scoring that array in one call); anything else fails the run (``budget``).

    Requests are matched to the evaluation candidates by their bytes, vectorized (``np.unique`` over rows; all of
    them in order is matched at once): a candidate that appears m times among the evaluation candidates may be
    asked m times per checkpoint.
    """

    def __init__(self, child: _Child, task: Any, cand: torch.Tensor) -> None:
        self.child, self.task, self.cand = child, task, cand
        self.d = int(cand.shape[-1])
        self.n = int(np.prod(cand.shape[:-1]))
        self.rows: dict[str, np.ndarray] = {}  # dtype -> the (C·K, d) evaluation candidates
        self.index: dict[str, tuple[np.ndarray, ...]] = {}  # dtype -> (unique row keys, counts, members, starts)
        self.values: dict[tuple[str, str], np.ndarray] = {}  # (model, dtype) -> (C·K, ...) answers
        self.checkpoint = 0
        self.served = 0
        self.start(0)

    def start(self, i: int) -> None:
        self.checkpoint = i
        self.used: dict[tuple[str, str], np.ndarray] = {}  # (model, dtype) -> times each unique row was served
        self.taken: dict[str, np.ndarray] = {}  # model -> which evaluation candidates were served (any dtype)

    def _rows(self, dt: str) -> np.ndarray:
        if dt not in self.rows:
            self.rows[dt] = np.ascontiguousarray(self.cand.to(torch.float64 if dt == "<f8" else torch.float32)
                                                 .reshape(-1, self.d).numpy())
        return self.rows[dt]

    @staticmethod
    def _keys(rows: np.ndarray) -> np.ndarray:
        """Each row as one opaque value (its bytes): exact matching, sorted as bytes."""
        return rows.view(np.dtype((np.void, rows.dtype.itemsize * rows.shape[1]))).reshape(-1)

    def _index_of(self, dt: str) -> tuple[np.ndarray, ...]:
        if dt not in self.index:
            uniq, inv, cnt = np.unique(self._keys(self._rows(dt)), return_inverse=True, return_counts=True)
            members = np.argsort(inv.reshape(-1), kind="stable")
            starts = np.concatenate([[0], np.cumsum(cnt)[:-1]])
            self.index[dt] = (uniq, cnt, members, starts)
        return self.index[dt]

    def _refuse(self, j: int, why: str) -> None:
        self.child.fail("budget", f"while checkpoint {self.checkpoint} was evaluated, its policy asked the proxy to "
                                  f"score {why} (row {j} of the request): at deployment a policy may score only the "
                                  "candidates it is evaluated on, each once per checkpoint")

    def serve(self, model: str, proxy: Any, x: np.ndarray) -> np.ndarray:
        dt = x.dtype.str
        rows = self._rows(dt)
        flat = np.ascontiguousarray(x).reshape(-1, self.d)
        m = flat.shape[0]
        taken = self.taken.setdefault(model, np.zeros(self.n, dtype=bool))
        if flat.shape == rows.shape and np.array_equal(flat, rows):  # all of them, in order (Tilt, BestOfN)
            if taken.any():
                self._refuse(int(np.argmax(taken)), "one of its evaluation candidates a second time")
            taken[:] = True
            take = np.arange(m)
        else:
            take = self._match(model, dt, flat, taken)
        if (model, dt) not in self.values:
            with torch.no_grad():
                y = proxy(torch.from_numpy(rows.reshape(self.cand.shape)))
            y = y.detach().cpu().numpy()
            self.values[(model, dt)] = y.reshape(rows.shape[0], *y.shape[len(self.cand.shape) - 1:])
        self.served += m
        vals = self.values[(model, dt)]
        return vals[take].reshape(*x.shape[:-1], *vals.shape[1:])

    def _match(self, model: str, dt: str, flat: np.ndarray, taken: np.ndarray) -> np.ndarray:
        """The evaluation candidate each requested row is (the k-th request of one value takes its k-th copy)."""
        uniq, cnt, members, starts = self._index_of(dt)
        m = flat.shape[0]
        _, inv = np.unique(np.concatenate([uniq, self._keys(flat)]), return_inverse=True)
        inv = inv.reshape(-1)
        lut = np.full(int(inv.max()) + 1, -1, dtype=np.int64)
        lut[inv[:len(uniq)]] = np.arange(len(uniq))
        u = lut[inv[len(uniq):]]  # the unique evaluation row of each requested row, -1: none
        if (u < 0).any():
            self._refuse(int(np.argmax(u < 0)), "a candidate it is not evaluated on")
        order = np.argsort(u, kind="stable")  # the k-th request of one row takes its k-th copy
        su = u[order]
        first = np.r_[True, su[1:] != su[:-1]]
        rank = np.empty(m, dtype=np.int64)
        rank[order] = np.arange(m) - np.maximum.accumulate(np.where(first, np.arange(m), 0))
        used = self.used.setdefault((model, dt), np.zeros(len(uniq), dtype=np.int64))
        occ = used[u] + rank
        over = occ >= cnt[u]
        if over.any():
            self._refuse(int(np.argmax(over)), "one of its evaluation candidates a second time")
        take = members[starts[u] + occ]
        if taken[take].any():  # asked before in the other dtype, or after all of them at once
            self._refuse(int(np.argmax(taken[take])), "one of its evaluation candidates a second time")
        taken[take] = True
        np.add.at(used, u, 1)
        return take


def _validate_logp(arr: np.ndarray, C: int, K: int, what: str, out: np.ndarray) -> None:
    """Check a returned (C, K) log-probability array and write it, renormalized in float64, into ``out``.

    One pass in the good case: a row's logsumexp is NaN if the row has a NaN, +inf if it has a +inf, and
    off 0 if it is not normalized; only failing rows are diagnosed.

    Raises:
        SandboxFailure: ``invalid_output`` naming what was returned.
    """
    if arr.shape != (C, K):
        raise SandboxFailure("invalid_output", f"{what} returned shape {tuple(arr.shape)}, expected (C, K) = ({C}, {K})")
    a = torch.from_numpy(arr).to(torch.float64)
    lse = torch.logsumexp(a, dim=-1)
    bad = ~(lse.abs() <= NORMALIZATION_TOL)
    if bool(bad.any()):
        for mask, name in ((torch.isnan(a), "NaN"), (torch.isposinf(a), "+inf")):
            if bool(mask.any()):
                c, k = (int(v) for v in torch.nonzero(mask)[0])
                raise SandboxFailure("invalid_output", f"{what} returned {int(mask.sum())} {name} value(s) (first at "
                                                       f"context {c}, candidate {k}); log-probabilities must be finite or -inf")
        c = int(torch.nonzero(bad)[0, 0])
        raise SandboxFailure("invalid_output", f"{what} returned rows that are not normalized log-probabilities: "
                                               f"{int(bad.sum())} of {C} rows have |logsumexp| > {NORMALIZATION_TOL:g} "
                                               f"(context {c}: logsumexp = {float(lse[c]):.4g}; probabilities or "
                                               "logits instead of log-probabilities?)")
    # log_softmax, as tiltenv.evaluation.policy_logp does in-process: the same bits either way
    torch.from_numpy(out).copy_(torch.log_softmax(a, dim=-1))


def run_agent(sub: Submission, task: Any, budget: Any, eval_candidates: torch.Tensor, eval_ref_logp: torch.Tensor,
              limits: Limits, *, device: str = "cpu", spawn: str = "zygote") -> AgentOutcome:
    """Train an agent submission on ``task`` in a sandboxed child and get its checkpoints' log-probabilities.

    Args:
        sub: a :class:`~leaderboard.submission.Submission` of the ``agent`` track.
        task: the :class:`tiltenv.PublicTask` (its proxy stays here; the child gets a counting stub).
        budget: the :class:`baselines.TrainBudget` (``proxy_queries`` is enforced here).
        eval_candidates: ``(C, K, d)`` contexts the checkpoints are evaluated on (the judge's).
        eval_ref_logp: ``(C, K)`` log π_ref on them.
        limits: :class:`~leaderboard.spec.Limits` (wall time, memory, threads).
        device: the agent's device (``"cpu"``, ``"cuda"``): a baseline's ``device`` field unless its config
            sets one; a factory with a ``device`` parameter receives it. Arrays cross the channel on the CPU.
        spawn: ``"zygote"`` (fork from a clean pre-imported interpreter) or ``"popen"`` (fresh interpreter).
    Returns:
        :class:`AgentOutcome`.
    Raises:
        SandboxFailure: ``error``, ``timeout``, ``memory``, ``budget``, ``checkpoint``, ``invalid_output``,
            ``protocol`` or ``load`` (see :data:`leaderboard.spec.FAILURE_REASONS`).
        TypeError, ValueError: bad arguments (not a failure of the submission).
    """
    from baselines.base import TrainBudget

    if not isinstance(sub, Submission) or sub.track != "agent":
        raise TypeError(f"run_agent needs an agent-track Submission (got {sub!r}).")
    if not isinstance(budget, TrainBudget):
        raise TypeError(f"budget must be a baselines.TrainBudget (got {type(budget).__name__}).")
    cand = torch.as_tensor(eval_candidates).detach().cpu()
    ref = torch.as_tensor(eval_ref_logp).detach().cpu()
    if cand.ndim != 3 or ref.shape != cand.shape[:2]:
        raise ValueError(f"eval_candidates must be (C, K, d) and eval_ref_logp (C, K) (got {tuple(cand.shape)}, {tuple(ref.shape)}).")
    C, K, d = cand.shape
    public = _public_copy(task, RemoteProxy(getattr(task.proxy, "kind", "proxy"), task.d))
    child = _Child(sub, limits, device, spawn)
    try:
        child.send({"op": "start", "payload": "pickle"}, raw=_start_payload(sub, "agent", public, budget, device, child.file))
        child.expect("ready")
        fit_started = time.monotonic()
        used = 0
        marks = [0, *budget.checkpoint_marks()]  # mark 0: the initial policy, before the first mark of the budget
        kept: list[int] = []  # the channel's count at each kept checkpoint (slot i = kept[i]); strictly increasing
        covered = 0  # marks[:covered] have their checkpoint
        last_count = None  # the count at the last checkpoint delivered

        def allow(n: int) -> None:
            """Refuse a query that would reach the next mark while a mark is still owed."""
            if covered < len(marks) and marks[covered] <= used and covered + 1 < len(marks) \
                    and marks[covered + 1] <= used + n:
                what = "the initial policy, before any query" if covered == 0 else f"{marks[covered]} proxy queries"
                child.fail("checkpoint", f"the run passed checkpoint mark {covered} of {len(marks) - 1} ({what}) "
                                         f"without delivering a checkpoint: a query of {n} candidates at {used} "
                                         f"queries would reach mark {covered + 1} ({marks[covered + 1]}). The "
                                         f"scorer's marks are budget.checkpoint_marks() = {marks[1:][:20]}; call "
                                         "checkpoint() once the query count reaches each of them.")

        while True:
            header, plen = child.recv_header("a proxy query, a checkpoint or the end of fit")
            if header["op"] == "proxy":
                used += _serve_proxy(child, task, d, header, plen, budget.proxy_queries - used,
                                     f"budget of {budget.proxy_queries} proxy queries ({used} used)", allow=allow)
            elif header["op"] == "checkpoint" and not plen:
                new = False
                while covered < len(marks) and marks[covered] <= used:
                    covered, new = covered + 1, True
                if kept and kept[-1] == used:  # a later snapshot at the same count replaces the kept one
                    slot = len(kept) - 1
                elif new:  # the first checkpoint once a mark is reached is that mark's
                    kept.append(used)
                    slot = len(kept) - 1
                else:  # between marks: not kept (only the last one delivered is, as the possible final policy)
                    slot = None
                last_count = used
                child.send({"op": "checkpoint_ok", "slot": slot, "step": used})
            elif header["op"] == "fit_done" and not plen:
                break
            else:
                child.fail("protocol", f"unexpected {str(header['op'])[:40]!r} frame during fit")
        fit_time = time.monotonic() - fit_started
        # the final policy (step = the final count): the last checkpoint if delivered at the final count, else the
        # agent itself; the kept checkpoints before it, each at the channel's count when it arrived
        which: list[Any] = [i for i, c in enumerate(kept) if c < used] + ["last" if last_count == used else "agent"]
        steps = [kept[i] for i in which[:-1]] + [used]
        child.send({"op": "eval", "checkpoints": which}, [cand.numpy(), ref.numpy()])
        cache = _DeployCache(child, task, cand)
        logps = np.empty((len(steps), C, K), dtype=np.float64)
        for i, step in enumerate(steps):
            cache.start(i)
            while True:
                header, plen = child.recv_header(f"checkpoint {i}'s log-probabilities")
                if header["op"] != "proxy":
                    break
                _serve_proxy(child, task, d, header, plen, C * K,
                             f"deployment allowance of checkpoint {i}: its C·K = {C * K} evaluation candidates",
                             cache=cache)
            if header["op"] != "logp" or header.get("index") != i:
                child.fail("protocol", f"expected checkpoint {i}'s log-probabilities, got {str(header['op'])[:40]!r}")
            what = f"checkpoint {i} (step {step})"
            _check_output_dtype(child, header, what)
            try:
                ((dt, shape),) = check_array_specs(header, plen, FLOAT_DTYPES)
            except ProtocolError as e:
                child.fail("protocol", f"bad {what} frame: {e}")
            if shape != (C, K):
                child.fail("invalid_output", f"{what} returned shape {shape}, expected (C, K) = ({C}, {K})")
            if dt == np.float64:  # read straight into the result: no copy, no extra pages
                child.read_into(memoryview(logps[i]).cast("B"), what)
                arr = logps[i]
            else:
                (arr,) = child.recv_arrays(header, plen)
            try:
                _validate_logp(arr, C, K, what, logps[i])
            except SandboxFailure:
                child.kill()
                raise
        deploy = cache.served
        child.expect("done")
        return AgentOutcome(list(steps), logps, used, deploy, fit_time, time.monotonic() - child.started,
                            child.output_tail(), child.sandbox)
    finally:
        child.close()


def _check_output_dtype(child: _Child, header: dict[str, Any], what: str) -> None:
    """One array of float32/float64, else ``invalid_output`` naming what was returned."""
    specs = header.get("arrays")
    if not _one_array(header):
        child.fail("invalid_output", f"{what} must return one array (got {str(specs)[:200]})")
    dt = specs[0].get("dtype") if isinstance(specs[0], dict) else None
    if dt not in FLOAT_DTYPES:
        try:
            shown = np.dtype(dt).name
        except Exception:  # noqa: BLE001 - whatever the child declared
            shown = repr(dt)[:40]
        child.fail("invalid_output", f"{what} returned an array of dtype {shown}; expected float32 or float64")


def _one_array(header: dict[str, Any]) -> bool:
    specs = header.get("arrays")
    return isinstance(specs, list) and len(specs) == 1


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
