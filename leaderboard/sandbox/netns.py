"""A sandboxed run's own, empty network namespace (Linux): no interface but a loopback that is down.

:func:`isolate_network` moves the calling process into a new network namespace with ``unshare(2)``:

* as **root**: ``unshare(CLONE_NEWNET)`` (done before the run drops to its unprivileged uid);
* otherwise: ``unshare(CLONE_NEWUSER | CLONE_NEWNET)`` — a user namespace in which the process keeps its own
  uid/gid (mapped to themselves, ``setgroups`` denied), which lets an unprivileged process own a network
  namespace. Needs unprivileged user namespaces (``kernel.unprivileged_userns_clone=1``, the default on
  most distributions; some containers forbid them) and a single-threaded process.

Afterwards ``connect`` to any address fails (``ENETUNREACH``), name resolution fails, and
``socket.if_nameindex()`` lists only ``lo``; already-open descriptors (the run's pipes to the scorer) are
unaffected. The module imports only the standard library: ``python leaderboard/sandbox/netns.py`` is the
scorer's probe (exit 0 when isolation works here, else exit 1 with the reason on stderr).
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import sys

__all__ = ["isolate_network", "isolated"]

CLONE_NEWNET = 0x40000000
CLONE_NEWUSER = 0x10000000

_HINTS = {
    errno.EPERM: "run the scorer as root, or allow unprivileged user namespaces "
                 "(sysctl kernel.unprivileged_userns_clone=1 / user.max_user_namespaces > 0)",
    errno.EINVAL: "the process has several threads (a user namespace needs a single-threaded process)",
    errno.ENOSPC: "the user.max_user_namespaces limit is reached",
}


def isolate_network() -> None:
    """Move this process into a new, empty network namespace.

    Raises:
        OSError: the kernel refused (the message names the call, the error and what would allow it).
    """
    if not sys.platform.startswith("linux"):
        raise OSError(errno.ENOSYS, f"network namespaces need Linux (this is {sys.platform})")
    root = os.geteuid() == 0
    uid, gid = os.geteuid(), os.getegid()
    flags, call = (CLONE_NEWNET, "unshare(CLONE_NEWNET)") if root else (
        CLONE_NEWUSER | CLONE_NEWNET, "unshare(CLONE_NEWUSER | CLONE_NEWNET)")
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(ctypes.c_int(flags)) != 0:
        err = ctypes.get_errno()
        hint = _HINTS.get(err)
        raise OSError(err, f"{call} failed: {os.strerror(err)}" + (f" ({hint})" if hint else ""))
    if not root:  # keep the process's own ids inside its user namespace
        for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"), ("gid_map", f"{gid} {gid} 1")):
            with open(f"/proc/self/{name}", "w") as f:
                f.write(text)


def isolated() -> bool:
    """True when this process sees no network interface but the loopback."""
    try:
        return {name for _, name in socket.if_nameindex()} <= {"lo"}
    except OSError:
        return False


if __name__ == "__main__":  # the scorer's probe
    try:
        isolate_network()
    except OSError as e:
        print(e.strerror or str(e), file=sys.stderr)
        sys.exit(1)
    if not isolated():
        print(f"unshare succeeded but interfaces remain: {socket.if_nameindex()}", file=sys.stderr)
        sys.exit(1)
    sys.exit(0)
