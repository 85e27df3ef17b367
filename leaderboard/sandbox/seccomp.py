"""The run's seccomp filter (Linux, libseccomp through ctypes): deny what a submission never needs.

:func:`install` sets ``PR_SET_NO_NEW_PRIVS`` and loads a filter (default: allow) that makes these calls fail
with ``EPERM``: ``ptrace``, ``process_vm_readv/writev``, ``kcmp``; ``mount``, ``umount2``, ``pivot_root``,
``chroot`` and the new mount API (``fsopen``, ``fsmount``, ``move_mount``, ``open_tree`` ...);
``unshare``, ``setns`` and ``clone`` with any ``CLONE_NEW*`` flag (``clone3`` fails with ``ENOSYS`` so
that the C library falls back to ``clone``, whose flags a filter can see); ``keyctl``, ``add_key``,
``request_key``; ``bpf``, ``perf_event_open``, ``userfaultfd``, ``io_uring_*``; ``kexec_*``,
``*_module``, ``reboot``, ``swapon/off``, ``acct``, ``quotactl``, ``syslog``, ``iopl``/``ioperm``,
``open_by_handle_at``/``name_to_handle_at``; ``personality`` other than the query.
The filter is inherited by every process the run forks and cannot be removed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os

__all__ = ["DENIED", "install", "available"]

DENIED = (
    "ptrace", "process_vm_readv", "process_vm_writev", "kcmp",
    "mount", "umount2", "pivot_root", "chroot", "fsopen", "fsconfig", "fsmount", "fspick", "move_mount", "open_tree",
    "mount_setattr", "unshare", "setns", "keyctl", "add_key", "request_key", "bpf", "perf_event_open", "userfaultfd",
    "io_uring_setup", "io_uring_enter", "io_uring_register", "kexec_load", "kexec_file_load", "init_module",
    "finit_module", "delete_module", "reboot", "swapon", "swapoff", "acct", "quotactl", "quotactl_fd", "syslog",
    "iopl", "ioperm", "open_by_handle_at", "name_to_handle_at", "lookup_dcookie", "vhangup", "nfsservctl",
)
_CLONE_NEW = 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000 | 0x40000000 | 0x00000080
# CLONE_NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET, NEWTIME
_ALLOW = 0x7FFF0000
_CMP_NE, _CMP_MASKED_EQ = 1, 7


def _errno_action(e: int) -> int:
    return 0x00050000 | (e & 0xFFFF)


class _ArgCmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int), ("datum_a", ctypes.c_uint64), ("datum_b", ctypes.c_uint64)]


_LIB = None


def _lib() -> ctypes.CDLL:
    global _LIB
    if _LIB is None:
        name = ctypes.util.find_library("seccomp") or "libseccomp.so.2"
        lib = ctypes.CDLL(name, use_errno=True)
        lib.seccomp_init.restype = ctypes.c_void_p
        lib.seccomp_init.argtypes = [ctypes.c_uint32]
        lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
        lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint,
                                               ctypes.POINTER(_ArgCmp)]
        lib.seccomp_export_bpf.argtypes = [ctypes.c_void_p, ctypes.c_int]
        lib.seccomp_release.argtypes = [ctypes.c_void_p]
        _LIB = lib
    return _LIB


def available() -> tuple[bool, str]:
    """Whether libseccomp can be loaded here (and if not, why)."""
    try:
        _lib()
    except OSError as e:
        return False, f"libseccomp is missing ({e}); install libseccomp2"
    return True, "libseccomp"


_BPF: bytes | None = None


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def compiled() -> bytes:
    """The filter as classic BPF (compiled once per process by libseccomp; a zygote compiles it before forking)."""
    global _BPF
    if _BPF is None:
        r, w = os.pipe()
        try:
            _build(lambda lib, ctx: lib.seccomp_export_bpf(ctx, w))
            os.close(w)
            w = -1
            chunks = []
            while True:
                b = os.read(r, 1 << 16)
                if not b:
                    break
                chunks.append(b)
            _BPF = b"".join(chunks)
        finally:
            os.close(r)
            if w >= 0:
                os.close(w)
    return _BPF


def install() -> None:
    """Set no-new-privileges and load the filter into this process (and all it will fork).

    Raises:
        OSError: libseccomp is missing or the kernel refused the filter.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(38, 1, 0, 0, 0) != 0:  # PR_SET_NO_NEW_PRIVS
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")
    bpf = compiled()
    buf = ctypes.create_string_buffer(bpf, len(bpf))
    prog = _SockFprog(len(bpf) // 8, ctypes.cast(buf, ctypes.c_void_p))
    if libc.prctl(22, 2, ctypes.byref(prog), 0, 0) != 0:  # PR_SET_SECCOMP, SECCOMP_MODE_FILTER
        err = ctypes.get_errno()
        raise OSError(err, f"loading the seccomp filter failed: {os.strerror(err)}")


def _build(finish) -> None:
    lib = _lib()
    ctx = lib.seccomp_init(_ALLOW)
    if not ctx:
        raise OSError(errno.ENOMEM, "seccomp_init failed")
    try:
        def rule(action: int, name: str, *cmps: tuple[int, int, int, int]) -> None:
            nr = lib.seccomp_syscall_resolve_name(name.encode())
            if nr < 0:  # not a system call on this architecture
                return
            arr = (_ArgCmp * max(1, len(cmps)))(*[_ArgCmp(*c) for c in cmps])
            rc = lib.seccomp_rule_add_array(ctx, action, nr, len(cmps), arr)
            if rc < 0:
                raise OSError(-rc, f"seccomp_rule_add({name}) failed: {os.strerror(-rc)}")

        for name in DENIED:
            rule(_errno_action(errno.EPERM), name)
        bit = 1
        while bit <= _CLONE_NEW:
            if _CLONE_NEW & bit:
                rule(_errno_action(errno.EPERM), "clone", (0, _CMP_MASKED_EQ, bit, bit))
            bit <<= 1
        rule(_errno_action(errno.ENOSYS), "clone3")
        rule(_errno_action(errno.EPERM), "personality", (0, _CMP_NE, 0xFFFFFFFF, 0))
        rc = finish(lib, ctx)
        if rc < 0:
            raise OSError(-rc, f"libseccomp could not compile the filter: {os.strerror(-rc)}")
    finally:
        lib.seccomp_release(ctx)
