"""A cgroup per run (Linux, cgroup v2 where it has the controllers, else v1): memory, processes, CPU time.

:meth:`RunCgroup.create` makes the run's cgroups under the scorer's own (read from ``/proc/self/cgroup``):

* **v2** (a ``cgroup2`` mount whose scorer cgroup offers ``memory`` and ``pids``): one folder with
  ``memory.max`` (+ ``memory.swap.max = 0``), ``pids.max``; CPU time from ``cpu.stat``'s ``usage_usec``; OOM
  kills from ``memory.events``; the end kills with ``cgroup.kill``.
* **v1** (this is what many container hosts have): a folder in each of the ``memory``, ``pids`` and
  ``cpuacct`` hierarchies that is mounted and writable: ``memory.limit_in_bytes`` (+ ``memsw``), ``pids.max``,
  ``cpuacct.usage``; OOM kills from ``memory.oom_control``'s ``oom_kill``.

The run's process writes itself into :attr:`RunCgroup.procs_files` before it joins its jail, so everything it
forks is in them; ``shmem`` (``/dev/shm``, tmpfs, memfd) pages are charged to the cgroup of the process that
touched them, and a page shared copy-on-write by forked processes is charged once. :meth:`RunCgroup.close`
SIGKILLs every process left in the cgroups and removes them. Creating cgroups needs write access to the
hierarchy (root, or a delegated v2 subtree); :meth:`RunCgroup.create` returns ``None`` where it has none.
"""

from __future__ import annotations

import os
import signal
import time
import uuid

__all__ = ["RunCgroup", "own_cgroup"]

ROOT = "/sys/fs/cgroup"


def own_cgroup() -> dict[str, str]:
    """``{controller or "": path}`` of this process (``""``: the v2 path), from ``/proc/self/cgroup``."""
    out: dict[str, str] = {}
    try:
        with open("/proc/self/cgroup") as f:
            for line in f:
                _, ctrls, path = line.rstrip("\n").split(":", 2)
                for c in ctrls.split(",") if ctrls else [""]:
                    out[c] = path
    except OSError:
        pass
    return out


def _v2_mount() -> str | None:
    try:
        with open("/proc/self/mounts") as f:
            for line in f:
                parts = line.split()
                if len(parts) > 2 and parts[2] == "cgroup2":
                    return parts[1]
    except OSError:
        pass
    return None


def _write(path: str, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


class RunCgroup:
    """One run's cgroups (see the module docstring). Use :meth:`create`."""

    def __init__(self, version: int, dirs: dict[str, str]) -> None:
        self.version, self.dirs = version, dirs
        self.procs_files = sorted({os.path.join(d, "cgroup.procs") for d in dirs.values()})

    @classmethod
    def create(cls, memory_mb: int, max_processes: int) -> "RunCgroup | None":
        """The run's cgroups with their limits, or ``None`` where this process cannot create them."""
        if os.geteuid() != 0 and not os.environ.get("TILTENV_CGROUP_DELEGATED"):
            return None
        name = f"tiltenv-run-{os.getpid()}-{uuid.uuid4().hex[:12]}"
        own = own_cgroup()
        limit = int(memory_mb) << 20
        v2 = _v2_mount()
        if v2 is not None and "" in own:
            parent = os.path.join(v2, own[""].lstrip("/"))
            try:
                avail = set(_read(os.path.join(parent, "cgroup.controllers")).split())
            except OSError:
                avail = set()
            if {"memory", "pids"} <= avail:
                try:
                    enabled = set(_read(os.path.join(parent, "cgroup.subtree_control")).split())
                    want = {"memory", "pids", "cpu"} & avail
                    if not want <= enabled:
                        _write(os.path.join(parent, "cgroup.subtree_control"), " ".join(f"+{c}" for c in sorted(want - enabled)))
                    d = os.path.join(parent, name)
                    os.mkdir(d, 0o700)
                    cg = cls(2, {"": d})
                    try:
                        _write(os.path.join(d, "memory.max"), str(limit))
                        if os.path.exists(os.path.join(d, "memory.swap.max")):
                            _write(os.path.join(d, "memory.swap.max"), "0")
                        _write(os.path.join(d, "pids.max"), str(int(max_processes)))
                    except OSError:
                        cg.close()
                        raise
                    return cg
                except OSError:
                    pass  # e.g. the scorer's cgroup holds processes (no internal processes in v2): try v1
        dirs: dict[str, str] = {}
        for ctrl in ("memory", "pids", "cpuacct"):
            base = os.path.join(ROOT, ctrl)
            if ctrl not in own or not os.path.isdir(base):
                continue
            parent = os.path.join(base, own[ctrl].lstrip("/"))
            d = os.path.join(parent, name)
            try:
                os.mkdir(d, 0o700)
            except OSError:
                continue
            dirs[ctrl] = d
        if "memory" not in dirs:
            cls(1, dirs).close()
            return None
        cg = cls(1, dirs)
        try:
            _write(os.path.join(dirs["memory"], "memory.limit_in_bytes"), str(limit))
            memsw = os.path.join(dirs["memory"], "memory.memsw.limit_in_bytes")
            if os.path.exists(memsw):
                try:
                    _write(memsw, str(limit))
                except OSError:
                    pass
            if "pids" in dirs:
                _write(os.path.join(dirs["pids"], "pids.max"), str(int(max_processes)))
        except OSError:
            cg.close()
            return None
        return cg

    # -- readings
    def memory_bytes(self) -> int:
        """Memory charged to the run now (anonymous, shmem/tmpfs and page cache)."""
        d = self.dirs.get("memory", self.dirs.get(""))
        try:
            return int(_read(os.path.join(d, "memory.current" if self.version == 2 else "memory.usage_in_bytes")))
        except (OSError, ValueError, TypeError):
            return 0

    def peak_bytes(self) -> int:
        d = self.dirs.get("memory", self.dirs.get(""))
        try:
            return int(_read(os.path.join(d, "memory.peak" if self.version == 2 else "memory.max_usage_in_bytes")))
        except (OSError, ValueError, TypeError):
            return 0

    def oom_kills(self) -> int:
        """Processes of the run the kernel killed for reaching the memory limit."""
        d = self.dirs.get("memory", self.dirs.get(""))
        try:
            text = _read(os.path.join(d, "memory.events" if self.version == 2 else "memory.oom_control"))
        except (OSError, TypeError):
            return 0
        for line in text.splitlines():
            k, _, v = line.partition(" ")
            if k == "oom_kill":
                return int(v)
        return 0

    def cpu_seconds(self) -> float | None:
        """CPU time used by the run's processes (``None``: no CPU accounting)."""
        try:
            if self.version == 2:
                for line in _read(os.path.join(self.dirs[""], "cpu.stat")).splitlines():
                    if line.startswith("usage_usec "):
                        return int(line.split()[1]) / 1e6
                return None
            if "cpuacct" in self.dirs:
                return int(_read(os.path.join(self.dirs["cpuacct"], "cpuacct.usage"))) / 1e9
        except (OSError, ValueError):
            pass
        return None

    def pids(self) -> set[int]:
        out: set[int] = set()
        for f in self.procs_files:
            try:
                out.update(int(p) for p in _read(f).split())
            except (OSError, ValueError):
                pass
        return out

    # -- the end
    def kill(self) -> None:
        """SIGKILL every process in the run's cgroups (passes until a pass finds no process it has not killed
        yet: one forked meanwhile is caught by the next pass)."""
        if self.version == 2:
            try:
                _write(os.path.join(self.dirs[""], "cgroup.kill"), "1")
            except OSError:
                pass
        killed: set[int] = set()
        for _ in range(1000):
            new = self.pids() - killed
            if not new:
                return
            for pid in new:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            killed |= new

    def close(self) -> bool:
        """Kill what is left and remove the cgroups; ``False`` if one could not be removed (yet)."""
        self.kill()
        ok = True
        for d in self.dirs.values():
            for i in range(400):  # a killed process leaves its cgroup when it has exited
                try:
                    os.rmdir(d)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    if i % 50 == 49:
                        self.kill()
                    time.sleep(0.0005 if i < 20 else 0.005)
            else:
                ok = False
        return ok
