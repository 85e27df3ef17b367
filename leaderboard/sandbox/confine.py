"""A run's process confines itself before it reads anything from the scorer (:func:`enter_sandbox`).

Whoever started it gave it its own session. Here it joins its jail (:func:`enter_jail`,
:mod:`leaderboard.sandbox.jail`) or, trusted, its own empty network namespace where the scorer asks for one
(:func:`apply_network`, :mod:`leaderboard.sandbox.netns`); then it takes its scrubbed environment and private
working directory, its rlimits, an unprivileged uid/gid with no supplementary groups when started as root
(its import paths kept usable, :func:`_reroute_import_paths`) and, jailed, the seccomp filter
(:mod:`leaderboard.sandbox.seccomp`).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

__all__ = ["enter_sandbox", "enter_jail", "apply_network"]


def _reachable(path: str, uid: int, gid: int) -> bool:
    """Whether ``uid``/``gid`` (no supplementary groups) may traverse to ``path`` and list it."""
    parts = os.path.abspath(path).split(os.sep)
    for i in range(1, len(parts) + 1):
        p = os.sep.join(parts[:i]) or os.sep
        try:
            st = os.stat(p)
        except OSError:
            return False
        need = 0o5 if i == len(parts) else 0o1
        if st.st_uid == uid:
            bits = (st.st_mode >> 6) & 7
        elif st.st_gid == gid:
            bits = (st.st_mode >> 3) & 7
        else:
            bits = st.st_mode & 7
        if bits & need != need:
            return False
    return True


def _reroute_import_paths(uid: int, gid: int, private: Sequence[str]) -> None:
    """Keep the interpreter's own import directories usable after dropping privileges.

    An interpreter installed under a private home (e.g. pyenv in ``/root``) cannot be reached by the
    unprivileged uid. Each such ``sys.path`` directory (never ``private`` ones or their ancestors) is opened
    now, as root, and replaced by ``/proc/self/fd/N``: the child can read that directory tree (world-readable
    library code) but still not its parents (the salt, the proxy cache).
    """
    def is_private(p: str) -> bool:
        p = os.path.abspath(p)
        return any(q == p or q.startswith(p.rstrip(os.sep) + os.sep) for q in map(os.path.abspath, private))

    mapping: dict[str, str] = {}
    for i, entry in enumerate(sys.path):
        if not entry or not os.path.isdir(entry) or _reachable(entry, uid, gid) or is_private(entry):
            continue
        real = os.path.abspath(entry)
        if real not in mapping:
            fd = os.open(real, os.O_RDONLY | os.O_DIRECTORY)
            mapping[real] = f"/proc/self/fd/{fd}"
        sys.path[i] = mapping[real]
    if not mapping:
        return
    for mod in list(sys.modules.values()):  # packages already imported from there (e.g. encodings)
        path = getattr(mod, "__path__", None)
        if isinstance(path, list):
            for j, p in enumerate(path):
                for real, new in mapping.items():
                    if isinstance(p, str) and (p == real or p.startswith(real + os.sep)):
                        path[j] = new + p[len(real):]
    sys.path_importer_cache.clear()


_NETWORK_DONE = False
_JAILED = False


def enter_jail(cfg: dict[str, Any], keep_fds: Sequence[int] = ()) -> None:
    """Join the run's jail (once; :func:`leaderboard.sandbox.jail.become_jailed`): returns in the process that runs the
    submission, inside the jail's pid namespace; the process that called it waits for that one and exits."""
    global _JAILED
    if not _JAILED:
        from leaderboard.sandbox import jail as _jail

        _jail.become_jailed(cfg, keep_fds or [fd for fd in (cfg.get("rfd"), cfg.get("wfd")) if fd is not None])
        _JAILED = True


def apply_network(cfg: dict[str, Any]) -> None:
    """``cfg["network"] == "isolate"``: move this run into its own empty network namespace (once; see
    :mod:`leaderboard.sandbox.netns`). The scorer asks for it only where its probe found isolation works, so a
    refusal here is an error of the run, not a silent fallback."""
    global _NETWORK_DONE
    if cfg.get("network") == "isolate" and not _NETWORK_DONE:
        from leaderboard.sandbox.netns import isolate_network

        isolate_network()
        _NETWORK_DONE = True


def enter_sandbox(cfg: dict[str, Any]) -> None:
    """Turn this process into a sandboxed run before it reads anything from the scorer.

    Args:
        cfg: ``cwd`` (private working directory), ``env`` (the whole environment), ``memory_mb``
            (``RLIMIT_DATA``; 0: none), ``threads``, ``uid``/``gid`` (taken when running as root), ``private``
            (paths never made reachable), ``network`` (``"isolate"``: an own empty network namespace).
    Raises:
        PermissionError: privileges could not be dropped.
    """
    import resource

    import tempfile

    if cfg.get("jail"):
        enter_jail(cfg)  # namespaces, cgroups, uid / capabilities (see leaderboard.sandbox.jail)
    else:
        apply_network(cfg)  # before the uid drop: root needs its privilege to unshare
    os.chdir(cfg["cwd"])
    os.environ.clear()
    os.environ.update(cfg["env"])
    # A forked run inherits the zygote's cached temporary directory (tempfile caches gettempdir()): forget it,
    # so libraries that write temporary files (SB3's logger) use this run's private TMPDIR.
    tempfile.tempdir = None
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if cfg.get("memory_mb"):
        limit = int(cfg["memory_mb"]) << 20
        soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
        if hard != resource.RLIM_INFINITY:
            limit = min(limit, hard)
        resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
    if cfg.get("jail"):  # per-process backstops of the cgroup's limits (the only ones without a cgroup)
        for res, value in ((resource.RLIMIT_NPROC, cfg.get("max_processes")), (resource.RLIMIT_CPU, cfg.get("cpu_time"))):
            if value:
                resource.setrlimit(res, (int(value), int(value)))
    if os.geteuid() == 0 and cfg.get("uid") is not None:
        uid, gid = int(cfg["uid"]), int(cfg["gid"])
        _reroute_import_paths(uid, gid, cfg.get("private", ()))
        os.setgroups([])
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)
        try:
            os.setuid(0)
        except PermissionError:
            pass
        else:  # pragma: no cover - would mean the drop failed
            raise PermissionError("could not drop root privileges in the sandbox")
    if cfg.get("jail"):
        from leaderboard.sandbox import seccomp as _seccomp

        _seccomp.install()
    torch.set_num_threads(int(cfg.get("threads", 1)))
    import random

    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)

