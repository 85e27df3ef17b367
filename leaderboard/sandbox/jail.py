"""A run's jail: bubblewrap namespaces that the run's process joins (Linux).

Per run the scorer starts ``bwrap`` (Debian's ``bubblewrap``) with a new pid, mount, ipc, uts, network and
cgroup namespace (and, when the scorer is not root, a new user namespace that makes the rest possible
without privileges). Its root is an empty, read-only tmpfs holding only read-only binds of ``/usr`` (the
system libraries), the interpreter's prefixes, the site-packages and the project's three package folders,
a few files of ``/etc``, a fresh ``/proc`` of its own pid namespace, a minimal ``/dev``, size-capped
tmpfs at ``/tmp`` (the run's working folder lives there; ``/var/tmp`` points to it) and ``/dev/shm``, and
the run's submission folder, read-only. No home folder, no board, no salt, no proxy cache, no host socket.

The command bwrap runs is a stub (``sh -c 'echo R; exec cat'``) that lives until the scorer closes its
stdin; ``--die-with-parent`` ends it if the scorer dies. The run's process (forked by the zygote, or a
fresh interpreter) **joins** the stub's namespaces as ``nsenter`` does (:func:`enter`): the user namespace
chain first (non-root), then ipc, uts, net, cgroup, pid and mount, then ``chroot`` into the stub's root;
``setns`` of a pid namespace applies to children, so the caller forks once more and the grandchild, pid
2+ of the jail, runs the submission. When the stub's pid 1 (bwrap's init) exits, the kernel SIGKILLs every
process of the pid namespace: nothing a run forks, ``setsid``-s or hops to outlives it.

As **root**, bwrap runs without a user namespace (the namespaces belong to the host's) and the run drops
to its own unprivileged uid after joining; as another user, the namespaces belong to a user namespace
owned by that user (which is what lets the run join them), and the run drops every capability it got
there. Either way :mod:`leaderboard.sandbox.seccomp` then denies the system calls that could undo this.

:func:`available` probes once whether jails work here and, if not, says why.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import glob
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

__all__ = ["BWRAP_HINT", "available", "bind_paths", "Jail", "enter", "drop_capabilities"]

BWRAP_HINT = ("install bubblewrap (Debian/Ubuntu: apt-get install -y bubblewrap; Fedora: dnf install bubblewrap) "
              "and allow user namespaces for a non-root scorer (sysctl kernel.unprivileged_userns_clone=1)")
#: Files of /etc a run may read (the dynamic loader's cache, the time zone, user/group names, the resolver config).
_ETC = ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/localtime", "/etc/passwd", "/etc/group",
        "/etc/nsswitch.conf", "/etc/hosts", "/etc/alternatives", "/etc/ssl/certs")
_NS_ORDER = ("ipc", "uts", "net", "cgroup", "pid", "mnt")
_NS_GET_PARENT = 0xB702


def _bwrap() -> str | None:
    return shutil.which("bwrap") or next((p for p in ("/usr/bin/bwrap", "/usr/local/bin/bwrap") if os.access(p, os.X_OK)), None)


# ----------------------------------------------------------------------------------------------- scorer side
def _package_dir(name: str) -> str | None:
    import importlib.util

    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return os.path.realpath(list(spec.submodule_search_locations)[0])


def bind_paths(extra: Sequence[str] = ()) -> list[str]:
    """Host paths bound read-only into every jail (each at its own path): the interpreter's prefixes, the
    site-packages folders (and folders that ``.pth`` files add), the tiltenv/baselines/leaderboard package
    folders (not the repository around them) and ``extra``. ``/usr`` and ``/etc`` files are added by :class:`Jail`."""
    import site
    import sysconfig

    cands = [sys.prefix, sys.base_prefix, sys.exec_prefix, os.path.dirname(os.path.realpath(sys.executable)),
             *site.getsitepackages(), sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["platstdlib"]]
    for name in ("tiltenv", "baselines", "leaderboard"):
        d = _package_dir(name)
        if d:
            cands.append(d)
    sp = set(map(os.path.realpath, site.getsitepackages()))
    for entry in sys.path:  # folders .pth files of the site-packages added (editable installs of other packages)
        if entry and os.path.isdir(entry) and any(os.path.realpath(entry).startswith(s + os.sep) for s in sp):
            cands.append(entry)
    cands.extend(extra)
    out: list[str] = []
    for p in dict.fromkeys(os.path.realpath(c) for c in cands if c):
        if not os.path.exists(p) or p in ("/", "/usr") or p.startswith("/usr/"):
            continue
        if any(p == q or p.startswith(q.rstrip(os.sep) + os.sep) for q in out):
            continue
        out = [q for q in out if not q.startswith(p.rstrip(os.sep) + os.sep)] + [p]
    return out


def _is_root() -> bool:
    return os.geteuid() == 0


def _args(*, binds: Sequence[str], work: str, disk_mb: int, ro_dirs: Sequence[tuple[str, str]] = (),
          network: bool = False, devices: Sequence[str] = (), info_fd: int | None = None,
          cmd: Sequence[str] = ("/bin/sh", "-c", "echo R; exec cat")) -> list[str]:
    bwrap = _bwrap()
    if bwrap is None:
        raise FileNotFoundError(errno.ENOENT, f"bwrap is not installed: {BWRAP_HINT}")
    a = [bwrap, "--unshare-ipc", "--unshare-pid", "--unshare-uts", "--unshare-cgroup-try"]
    if not network:
        a.append("--unshare-net")
    if not _is_root():
        a.append("--unshare-user")
    a += ["--die-with-parent", "--new-session", "--ro-bind", "/usr", "/usr"]
    for name in ("bin", "lib", "lib32", "lib64", "libx32", "sbin"):
        p = "/" + name
        if os.path.islink(p):
            a += ["--symlink", os.readlink(p), p]
        elif os.path.isdir(p):
            a += ["--ro-bind", p, p]
    for p in _ETC:
        a += ["--ro-bind-try", p, p]
    # the private tmpfs first, then the binds: an installation under /tmp (a clone there) is bound on top of the
    # jail's /tmp instead of being hidden by it
    size = str(int(disk_mb) << 20)
    a += ["--proc", "/proc", "--dev", "/dev"]
    a += ["--perms", "1777", "--size", size, "--tmpfs", "/tmp", "--perms", "1777", "--size", size,
          "--tmpfs", "/dev/shm", "--symlink", "/tmp", "/var/tmp"]
    made: set[str] = {"/tmp", "/dev", "/dev/shm", "/var"}
    for p in binds:  # bwrap would copy the modes of the host's parents (/root is 0700): make them 0755
        parts = p.strip("/").split("/")[:-1]
        for i in range(1, len(parts) + 1):
            d = "/" + "/".join(parts[:i])
            if d not in made and not d.startswith("/usr"):
                made.add(d)
                a += ["--perms", "0755", "--dir", d]
        a += ["--ro-bind", p, p]
    for p in ("/sys/devices/system/cpu", "/sys/devices/system/node"):  # CPU count / NUMA layout (torch, OpenMP)
        a += ["--ro-bind-try", p, p]
    for dev in devices:
        a += ["--dev-bind", dev, dev]
    a += ["--perms", "0700", "--dir", work]
    for src, dst in ro_dirs:
        a += ["--ro-bind", src, dst]
    a += ["--remount-ro", "/"]
    if info_fd is not None:
        a += ["--info-fd", str(info_fd)]
    return a + ["--", *cmd]


def gpu_devices() -> list[str]:
    """The NVIDIA device nodes a CUDA run needs (empty without a GPU)."""
    return sorted(glob.glob("/dev/nvidia*")) + sorted(glob.glob("/dev/dri/renderD*"))


@functools.lru_cache(maxsize=1)
def available() -> tuple[bool, str]:
    """Whether a jail can be started here, and if not why (probed once per process: a jail running ``/bin/true``)."""
    if not sys.platform.startswith("linux"):
        return False, f"jails need Linux namespaces (this is {sys.platform})"
    if _bwrap() is None:
        return False, f"bwrap (bubblewrap) is not installed: {BWRAP_HINT}"
    try:
        args = _args(binds=[], work="/tmp/probe", disk_mb=1, cmd=("/bin/true",))
        probe = subprocess.run(args, env={}, cwd="/", stdin=subprocess.DEVNULL, capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as e:
        return False, f"bwrap could not run ({e}): {BWRAP_HINT}"
    if probe.returncode != 0:
        err = probe.stderr.decode("utf-8", "replace").strip()[-300:]
        return False, f"bwrap failed ({err or f'exit code {probe.returncode}'}): {BWRAP_HINT}"
    return True, "bubblewrap jail"


class Jail:
    """One run's namespaces, held by a bwrap stub until :meth:`close` (see the module docstring).

    Args:
        binds: host paths bound read-only at the same path (see :func:`bind_paths`).
        work: the run's working folder inside the jail (created on the jail's ``/tmp`` tmpfs).
        disk_mb: size of each of the jail's tmpfs (``/tmp``, ``/dev/shm``).
        ro_dirs: ``(host, jail)`` folders bound read-only (the run's copy of its submission).
        network: keep the host's network (``Limits(network="allow")``).
        devices: device nodes bound into ``/dev`` (a CUDA run's GPUs).
    Raises:
        OSError: bwrap is missing or failed (the message has its stderr).
    """

    def __init__(self, *, binds: Sequence[str], work: str, disk_mb: int, ro_dirs: Sequence[tuple[str, str]] = (),
                 network: bool = False, devices: Sequence[str] = ()) -> None:
        r, w = os.pipe()
        try:
            args = _args(binds=binds, work=work, disk_mb=disk_mb, ro_dirs=ro_dirs, network=network, devices=devices,
                         info_fd=w)
            self.proc = subprocess.Popen(args, pass_fds=[w], env={}, cwd="/", stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        except BaseException:
            os.close(r)
            raise
        finally:
            os.close(w)
        try:
            info = b""
            while b"}" not in info:  # bwrap writes one JSON object (the stub may still hold the fd: no EOF)
                chunk = os.read(r, 4096)
                if not chunk:
                    break
                info += chunk
            os.close(r)
            r = -1
            ready = self.proc.stdout.read(2)
            if ready != b"R\n":
                self.proc.kill()
                err = self.proc.stderr.read().decode("utf-8", "replace").strip()[-500:]
                self.proc.wait()
                raise OSError(errno.EPERM, f"the run's jail did not start (bwrap: {err or 'no message'}); {BWRAP_HINT}")
            self.init = int(json.loads(info[:info.index(b"}") + 1])["child-pid"])
            with open(f"/proc/{self.init}/task/{self.init}/children") as f:
                kids = f.read().split()
            self.pid = int(kids[0]) if kids else self.init
        except BaseException:
            if r >= 0:
                os.close(r)
            self.close()
            raise
        self.proc.stderr.close()

    def config(self) -> dict[str, int]:
        """What the run's process needs to :func:`enter` this jail."""
        return {"init": self.init, "pid": self.pid}

    def pid_namespace(self) -> str:
        try:
            return os.readlink(f"/proc/{self.pid}/ns/pid")
        except OSError:
            return ""

    def close(self) -> None:
        """End the jail: the stub exits, bwrap's init dies and the kernel kills every process of the jail."""
        proc = self.proc
        try:
            if proc.stdin and not proc.stdin.closed:
                proc.stdin.close()
        except OSError:
            pass
        try:
            proc.kill()
        except OSError:
            pass
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL was sent
            pass
        for f in (proc.stdout, proc.stderr):
            try:
                if f and not f.closed:
                    f.close()
            except OSError:
                pass


# ----------------------------------------------------------------------------------------------- run side
_libc = None


def _c() -> Any:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


def _setns(fd: int, what: str) -> None:
    if _c().setns(fd, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns({what}) into the run's jail failed: {os.strerror(err)}")


def enter(cfg: dict[str, int]) -> None:
    """Move this (single-threaded) process into the jail ``cfg`` (from :meth:`Jail.config`): its user
    namespace chain (when it has its own), ipc, uts, net, cgroup, pid and mount namespaces, and its root.
    ``setns`` of the pid namespace applies to the children this process forks afterwards.

    Raises:
        OSError: a namespace could not be joined (the message names it).
    """
    import fcntl

    init, pid = int(cfg["init"]), int(cfg["pid"])
    fds = {ns: os.open(f"/proc/{pid}/ns/{ns}", os.O_RDONLY | os.O_CLOEXEC) for ns in _NS_ORDER}
    rootfd = os.open(f"/proc/{pid}/root", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    opened = [rootfd, *fds.values()]
    try:
        mine = os.stat("/proc/self/ns/user").st_ino
        user = os.open(f"/proc/{pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
        opened.append(user)
        if os.fstat(user).st_ino != mine:
            # the outermost user namespace of the jail (its parent is ours) first: we own it, so joining it gives
            # the capabilities that joining the others needs; then the inner ones down to the command's own
            chain = [os.open(f"/proc/{init}/ns/user", os.O_RDONLY | os.O_CLOEXEC)]
            opened.append(chain[0])
            while True:
                parent = fcntl.ioctl(chain[-1], _NS_GET_PARENT)
                opened.append(parent)
                if os.fstat(parent).st_ino == mine:
                    break
                chain.append(parent)
            _setns(chain[-1], "user")
        for ns in _NS_ORDER:
            _setns(fds[ns], ns)
        if os.fstat(user).st_ino != mine:
            try:
                _setns(user, "user")
            except OSError as e:
                if e.errno != errno.EINVAL:  # EINVAL: it is the one joined already
                    raise
        os.fchdir(rootfd)
        os.chroot(".")
        os.chdir("/")
    finally:
        for fd in opened:
            try:
                os.close(fd)
            except OSError:
                pass


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def drop_capabilities() -> None:
    """Drop every capability: the bounding set, the ambient set, then effective/permitted/inheritable.

    Raises:
        OSError: ``capset`` failed.
    """
    libc = _c()
    for cap in range(64):
        if libc.prctl(24, cap, 0, 0, 0) != 0 and ctypes.get_errno() == errno.EINVAL:  # PR_CAPBSET_DROP
            break
    libc.prctl(47, 4, 0, 0, 0)  # PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL
    header = _CapHeader(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3
    data = (_CapData * 2)()
    if libc.capset(ctypes.byref(header), data) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"capset (dropping the run's capabilities) failed: {os.strerror(err)}")


def _relay(status: int) -> None:
    """End this process as its child ended (same exit code, or killed by the same signal)."""
    import signal

    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            signal.signal(sig, signal.SIG_DFL)
        except (OSError, ValueError):
            pass
        os.kill(os.getpid(), sig)
        os._exit(128 + sig)
    os._exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 70)


def become_jailed(cfg: dict[str, Any], keep_fds: Sequence[int] = ()) -> None:
    """Turn this single-threaded process into a jailed run; returns only in the process that runs the submission.

    ``cfg``: ``jail`` (:meth:`Jail.config`), ``cgroup_procs`` (the run's ``cgroup.procs`` files, joined first
    so that everything forked later is in them), ``cwd`` (the working folder in the jail), ``uid``/``gid``
    (taken when root). This process joins the cgroups and the jail's namespaces, drops to the run's uid (root)
    or drops its capabilities (non-root), then forks: the child, inside the jail's pid namespace, returns;
    this process waits for it, ending as it ended (``keep_fds`` are closed here first, so that the scorer sees
    the channel close when the child exits).

    Raises:
        OSError: a step failed (the message names it); nothing of the submission has run yet.
    """
    for path in cfg.get("cgroup_procs") or ():
        with open(path, "w") as f:
            f.write(str(os.getpid()))
    enter(cfg["jail"])
    if os.geteuid() == 0 and cfg.get("uid") is not None:
        uid, gid = int(cfg["uid"]), int(cfg["gid"])
        os.chown(cfg["cwd"], uid, gid)
        os.setgroups([])
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)
    drop_capabilities()
    pid = os.fork()
    if pid == 0:
        return
    for fd in keep_fds:
        try:
            os.close(fd)
        except OSError:
            pass
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except InterruptedError:
            continue
    _relay(status)
