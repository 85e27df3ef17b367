"""What a run gets on this machine, as the scorer decides it: jailed or trusted (:func:`sandbox_mode`), its
network (:func:`network_mode`), its uid/gid (:func:`_run_ids`: fresh per run when root) and its whole
environment (:func:`_child_env`: nothing of the scorer's but the locale)."""

from __future__ import annotations

import functools
import itertools
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

from leaderboard.sandbox import jail as _jail
from leaderboard.sandbox.confine import _reachable
from leaderboard.spec import Limits

__all__ = ["sandbox_mode", "network_mode", "network_isolation"]

_BIG_UID_BASE = 2_000_000_000
_UID_SPAN = 2_000_000_000  # uids 2e9 .. 4e9 (< 2**32 - 1)
_NOBODY = 65534
_run_counter = itertools.count()


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
    from tiltenv.rewards.proxy_cache import cache_dir

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
    from tiltenv.rewards.proxy_cache import cache_dir

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
    process by running :mod:`leaderboard.sandbox.netns` in a fresh interpreter)."""
    from leaderboard.sandbox import netns as _netns

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
