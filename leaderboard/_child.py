"""The sandbox's child side: the channel's framing, the proxy stub and the child process's main loop.

A sandboxed run is one child process that holds only the **public task**, with its proxy replaced by a
:class:`RemoteProxy` whose ``forward`` asks the scorer (the parent, :mod:`leaderboard.sandbox`) to score
the candidates. The scorer keeps the real proxy, counts every candidate and refuses past the budget.

**Channel** (two pipes, one per direction). A frame is::

    b"TLT1" | uint32 LE header length | uint64 LE payload length | header (UTF-8 JSON) | payload

The header is a JSON object with an ``op`` and, when the payload holds arrays, ``arrays``: a list of
``{"dtype": "<f4", "shape": [...]}``; the payload is their raw little-endian bytes, concatenated. Only the
scorer may send a ``"payload": "pickle"`` frame (the task, once, at start): the scorer is trusted, the
child is not, and the scorer never unpickles anything (it parses JSON and validates raw float arrays).

**Processes.** A child starts either as ``python -m leaderboard._child --run CONFIG`` (one fresh
interpreter per run) or is forked by a **zygote**, ``python -m leaderboard._child --zygote FD``: a clean
interpreter started by the scorer with :class:`subprocess.Popen` that has imported only libraries (numpy,
torch, tiltenv, baselines) — never a world, a judge, a salt or a seed — and forks one child per run on
request, which saves the ~1-2 s of importing torch per run. Either way the child, before it reads
anything from the scorer, enters the sandbox (:func:`enter_sandbox`): its own session, a scrubbed
environment, a private working directory, ``RLIMIT_DATA``, its own empty network namespace (where the
kernel allows it, :mod:`leaderboard._netns`) and, when started as root, an unprivileged uid/gid with no
supplementary groups.

This module is imported by the scorer only for the framing helpers and :class:`RemoteProxy` (pickled into
the task it sends); everything else runs in the child.
"""

from __future__ import annotations

import json
import os
import select
import socket
import stat
import struct
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

__all__ = [
    "MAGIC",
    "MAX_HEADER",
    "FLOAT_DTYPES",
    "ProtocolError",
    "Channel",
    "pack_arrays",
    "unpack_arrays",
    "check_array_specs",
    "RemoteProxy",
    "NoProxy",
    "enter_sandbox",
    "serve",
    "main",
]

MAGIC = b"TLT1"
_PREFIX = struct.Struct("<4sIQ")
#: Largest header (JSON) accepted, in bytes.
MAX_HEADER = 1 << 20
#: The only array dtypes that may cross the channel (little-endian float32 / float64).
FLOAT_DTYPES = ("<f4", "<f8")
#: At most this many arrays per frame, of at most this many dimensions.
MAX_ARRAYS, MAX_NDIM = 4, 8
_CHUNK = 1 << 20

#: The channel of this (child) process; set by :func:`serve`.
CHANNEL: "Channel | None" = None


class ProtocolError(Exception):
    """A malformed frame: bad magic, header, array spec or payload length."""


# ----------------------------------------------------------------------------------------------- framing
def pack_arrays(arrays: Sequence[np.ndarray]) -> tuple[list[dict[str, Any]], list[memoryview]]:
    """Array specs for a header and the zero-copy byte views of the (C-contiguous, little-endian) arrays."""
    specs, views = [], []
    for a in arrays:
        a = np.asarray(a)
        if a.dtype.byteorder == ">":
            a = a.astype(a.dtype.newbyteorder("<"))
        a = np.ascontiguousarray(a)
        if a.dtype.hasobject:
            raise TypeError(f"cannot send an array of dtype {a.dtype} over the channel")
        specs.append({"dtype": a.dtype.str, "shape": [int(n) for n in a.shape]})
        views.append(memoryview(a.reshape(-1).view(np.uint8)))
    return specs, views


def check_array_specs(header: dict[str, Any], payload_len: int, allowed: Sequence[str] = FLOAT_DTYPES) -> list[tuple[np.dtype, tuple[int, ...]]]:
    """Validate a header's ``arrays`` against the declared payload length, before any payload is read.

    Returns:
        ``[(dtype, shape), ...]``.
    Raises:
        ProtocolError: not a list of ``{"dtype", "shape"}``, a dtype outside ``allowed``, a bad shape, or
            sizes that do not add up to ``payload_len``.
    """
    specs = header.get("arrays", [])
    if header.get("payload") is not None:
        raise ProtocolError(f"payload kind {str(header.get('payload'))[:40]!r} is not accepted (only raw float arrays)")
    if not isinstance(specs, list) or len(specs) > MAX_ARRAYS:
        raise ProtocolError(f"'arrays' must be a list of at most {MAX_ARRAYS} array specs")
    out, total = [], 0
    for spec in specs:
        if not isinstance(spec, dict) or set(spec) != {"dtype", "shape"}:
            raise ProtocolError("each array spec must be {'dtype': ..., 'shape': [...]}")
        dtype, shape = spec["dtype"], spec["shape"]
        if dtype not in allowed:
            raise ProtocolError(f"array dtype {str(dtype)[:20]!r} is not accepted (allowed: {list(allowed)})")
        if (not isinstance(shape, list) or len(shape) > MAX_NDIM
                or not all(isinstance(n, int) and not isinstance(n, bool) and 0 <= n < 2**40 for n in shape)):
            raise ProtocolError(f"bad array shape {str(shape)[:80]}")
        dt = np.dtype(dtype)
        total += int(np.prod(shape, dtype=object)) * dt.itemsize
        out.append((dt, tuple(shape)))
    if total != payload_len:
        raise ProtocolError(f"the arrays declared in the header take {total} bytes but the frame declares a payload of {payload_len}")
    return out


def unpack_arrays(specs: list[tuple[np.dtype, tuple[int, ...]]], payload: bytearray) -> list[np.ndarray]:
    """Views of the payload as arrays (writable: the payload is a bytearray)."""
    out, offset = [], 0
    for dt, shape in specs:
        n = int(np.prod(shape, dtype=np.int64))
        out.append(np.frombuffer(payload, dtype=dt, count=n, offset=offset).reshape(shape))
        offset += n * dt.itemsize
    return out


class Channel:
    """Framed messages over a pair of pipe file descriptors.

    Args:
        rfd, wfd: the read and write ends.
        wait: ``wait(fd, for_write)`` — called when a non-blocking fd would block; it returns when the fd may
            be ready or raises (the scorer's deadline and memory checks live there). ``None``: blocking fds.
    """

    def __init__(self, rfd: int, wfd: int, wait: Callable[[int, bool], None] | None = None) -> None:
        self.rfd, self.wfd, self.wait = rfd, wfd, wait

    # -- low level
    def _read_into(self, view: memoryview) -> None:
        pos, n = 0, len(view)
        while pos < n:
            try:
                k = os.readv(self.rfd, [view[pos:]])
            except BlockingIOError:
                self.wait(self.rfd, False)
                continue
            except InterruptedError:
                continue
            if k == 0:
                raise EOFError("the other end closed the channel")
            pos += k

    def _write(self, buf: Any) -> None:
        view = memoryview(buf).cast("B")
        pos, n = 0, len(view)
        while pos < n:
            try:
                pos += os.write(self.wfd, view[pos:pos + _CHUNK])
            except BlockingIOError:
                self.wait(self.wfd, True)
            except InterruptedError:
                continue

    # -- frames
    def send(self, header: dict[str, Any], arrays: Sequence[np.ndarray] = (), raw: bytes | None = None) -> None:
        """Send one frame: ``header`` plus raw ``arrays`` (or ``raw`` bytes, for the scorer's pickle)."""
        header = dict(header)
        if raw is not None:
            views: list[Any] = [raw]
        else:
            header["arrays"], views = pack_arrays(arrays)
        hb = json.dumps(header, separators=(",", ":"), allow_nan=False).encode()
        plen = sum(len(memoryview(v).cast("B")) for v in views)
        self._write(_PREFIX.pack(MAGIC, len(hb), plen) + hb)
        for v in views:
            self._write(v)

    def recv_header(self, max_header: int = MAX_HEADER) -> tuple[dict[str, Any], int]:
        """Read a frame's prefix and header; returns ``(header, payload length)`` (payload not read yet).

        Raises:
            ProtocolError: bad magic, oversized or malformed header. EOFError: the channel closed.
        """
        prefix = bytearray(_PREFIX.size)
        self._read_into(memoryview(prefix))
        magic, hlen, plen = _PREFIX.unpack(prefix)
        if magic != MAGIC:
            raise ProtocolError(f"bad frame magic {bytes(magic)!r} (expected {MAGIC!r})")
        if hlen > max_header:
            raise ProtocolError(f"header of {hlen} bytes exceeds {max_header}")
        hb = bytearray(hlen)
        self._read_into(memoryview(hb))
        try:
            header = json.loads(hb.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as e:  # ValueError: also an integer of > 4300 digits
            raise ProtocolError(f"header is not UTF-8 JSON ({e})") from None
        except RecursionError:  # e.g. 200,000 nested brackets: refused, never the scorer's exception
            raise ProtocolError("header JSON is nested too deeply") from None
        if not isinstance(header, dict) or not isinstance(header.get("op"), str):
            raise ProtocolError("header must be a JSON object with a string 'op'")
        return header, plen

    def recv_payload(self, plen: int) -> bytearray:
        buf = bytearray(plen)
        self._read_into(memoryview(buf))
        return buf

    def recv_arrays(self, allowed: Sequence[str] = FLOAT_DTYPES) -> tuple[dict[str, Any], list[np.ndarray]]:
        """Read one frame of arrays (checks the specs before reading the payload)."""
        header, plen = self.recv_header()
        specs = check_array_specs(header, plen, allowed)
        return header, unpack_arrays(specs, self.recv_payload(plen))


def set_pipe_size(fd: int, size: int = 1 << 20) -> None:
    """Enlarge a pipe's kernel buffer (Linux ``F_SETPIPE_SZ``); fewer wake-ups for large frames."""
    try:
        import fcntl

        fcntl.fcntl(fd, 1031, size)  # F_SETPIPE_SZ
    except (ImportError, OSError):
        pass


# ----------------------------------------------------------------------------------------------- proxy stub
import torch  # noqa: E402  (after the framing, which the scorer also uses)


class RemoteProxy(torch.nn.Module):
    """The proxy as the sandboxed child sees it: ``forward`` sends the candidates to the scorer.

    The scorer scores them with the real proxy (same dtype as sent, float32 or float64), counts them and
    returns the rewards; a request past the budget ends the run (reason ``budget``). ``task.proxy_reward``,
    ``task.proxy(x)``, ``task.proxy_on(device)(x)`` and the envs of ``TiltEnv.from_task(task)`` all go through
    here. The rewards carry no gradient. Deep copies share the channel (``proxy_on`` copies its proxy).
    """

    def __init__(self, kind: str, d: int) -> None:
        super().__init__()
        self.kind = str(kind)
        self.d = int(d)

    def forward(self, x: Any) -> torch.Tensor:
        x = torch.as_tensor(x)
        if x.ndim < 1 or x.shape[-1] != self.d:
            raise ValueError(f"candidates must have last dimension d={self.d} (got shape {tuple(x.shape)}).")
        if CHANNEL is None:
            raise RuntimeError("this proxy lives in the scorer's process and is reached through the sandbox's channel only.")
        dtype = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
        arr = x.detach().to("cpu", dtype).contiguous().numpy()
        CHANNEL.send({"op": "proxy"}, [arr])
        header, arrays = CHANNEL.recv_arrays()
        if header["op"] != "proxy_ok" or len(arrays) != 1:
            raise RuntimeError(f"the scorer refused the proxy query: {header.get('message', header['op'])}")
        return torch.from_numpy(arrays[0]).to(x.device)

    def raw(self, x: Any) -> torch.Tensor:
        raise NotImplementedError("only the normalized proxy is served (task.proxy_reward / task.proxy(x)).")

    def __deepcopy__(self, memo: dict) -> "RemoteProxy":
        return self

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}, d={self.d}, remote"


class RemoteDimStack(torch.nn.Module):
    """A multi-objective task's per-dimension reward models as the child sees them: ``dim_rewards(x)`` sends the
    candidates to the scorer, which scores them with every dimension's real model and counts one query per
    candidate (as ``task.dim_proxy_rewards`` does in-process). The weights never reach the child."""

    def __init__(self, m: int, d: int) -> None:
        super().__init__()
        self.m, self.d = int(m), int(d)

    def dim_rewards(self, x: Any) -> torch.Tensor:
        x = torch.as_tensor(x)
        if x.ndim < 1 or x.shape[-1] != self.d:
            raise ValueError(f"candidates must have last dimension d={self.d} (got shape {tuple(x.shape)}).")
        if CHANNEL is None:
            raise RuntimeError("these reward models live in the scorer's process and are reached through the sandbox's channel only.")
        dtype = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
        CHANNEL.send({"op": "proxy", "model": "dims"}, [x.detach().to("cpu", dtype).contiguous().numpy()])
        header, arrays = CHANNEL.recv_arrays()
        if header["op"] != "proxy_ok" or len(arrays) != 1:
            raise RuntimeError(f"the scorer refused the query: {header.get('message', header['op'])}")
        return torch.from_numpy(arrays[0]).to(x.device)

    def __deepcopy__(self, memo: dict) -> "RemoteDimStack":
        return self


class RemoteDimProxy(torch.nn.Module):
    """One dimension's reward model in the child: ``forward(x)`` is column ``index`` of the remote stack (each call
    counts its candidates)."""

    def __init__(self, stack: RemoteDimStack, index: int, kind: str) -> None:
        super().__init__()
        self.stack, self.index, self.kind, self.d = stack, int(index), str(kind), stack.d

    def forward(self, x: Any) -> torch.Tensor:
        return self.stack.dim_rewards(x)[..., self.index]

    def __deepcopy__(self, memo: dict) -> "RemoteDimProxy":
        return self


class NoProxy(RemoteProxy):
    """The reward-model track's task: there is no proxy to query (learn from ``task.preferences``)."""

    def forward(self, x: Any) -> torch.Tensor:
        raise RuntimeError("the reward-model track has no proxy: learn from the preference data given to fit().")


# ----------------------------------------------------------------------------------------------- sandbox entry
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
    """Join the run's jail (once; :func:`leaderboard._jail.become_jailed`): returns in the process that runs the
    submission, inside the jail's pid namespace; the process that called it waits for that one and exits."""
    global _JAILED
    if not _JAILED:
        from leaderboard import _jail

        _jail.become_jailed(cfg, keep_fds or [fd for fd in (cfg.get("rfd"), cfg.get("wfd")) if fd is not None])
        _JAILED = True


def apply_network(cfg: dict[str, Any]) -> None:
    """``cfg["network"] == "isolate"``: move this run into its own empty network namespace (once; see
    :mod:`leaderboard._netns`). The scorer asks for it only where its probe found isolation works, so a
    refusal here is an error of the run, not a silent fallback."""
    global _NETWORK_DONE
    if cfg.get("network") == "isolate" and not _NETWORK_DONE:
        from leaderboard._netns import isolate_network

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
        enter_jail(cfg)  # namespaces, cgroups, uid / capabilities (see leaderboard._jail)
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
        from leaderboard import _seccomp

        _seccomp.install()
    torch.set_num_threads(int(cfg.get("threads", 1)))
    import random

    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


# ----------------------------------------------------------------------------------------------- serving a run
def _is_memory_error(e: BaseException) -> bool:
    msg = str(e)
    return isinstance(e, MemoryError) or "can't allocate memory" in msg or "not enough memory" in msg


class _InvalidOutput(Exception):
    pass


def _as_array(out: Any) -> np.ndarray:
    if isinstance(out, torch.Tensor):
        out = out.detach().cpu()
        if out.dtype in (torch.bfloat16, torch.float16):
            out = out.to(torch.float32)
        return out.numpy()
    try:
        arr = np.asarray(out)
    except Exception as e:  # noqa: BLE001 - anything the submission returned
        raise _InvalidOutput(f"the output {type(out).__name__} is not an array ({e})") from None
    if arr.dtype.hasobject:
        raise _InvalidOutput(f"the output is an array of dtype object (a {type(out).__name__})")
    return arr


def _load(start: dict[str, Any]) -> Any:
    """Build the submission's agent / reward model inside the child."""
    import importlib
    import importlib.util
    import inspect

    sub, device = start["submission"], start["device"]
    if sub["kind"] == "baseline":
        import dataclasses

        from baselines import get_baseline

        agent_cls, config_cls = get_baseline(sub["target"])
        cfg = dict(sub["config"])
        if "device" in {f.name for f in dataclasses.fields(config_cls)} and "device" not in cfg:
            cfg["device"] = device
        return agent_cls(config_cls(**cfg))
    if sub["kind"] == "module":
        if sub.get("root"):
            sys.path.insert(0, sub["root"])
        module = importlib.import_module(sub["target"])
    else:
        spec = importlib.util.spec_from_file_location("submission", start["file"])
        module = importlib.util.module_from_spec(spec)
        sys.modules["submission"] = module
        sys.path.insert(0, os.path.dirname(start["file"]))
        spec.loader.exec_module(module)
    factory = getattr(module, sub["factory"], None)
    if not callable(factory):
        raise AttributeError(f"{sub['ref']} has no callable {sub['factory']!r}")
    try:
        takes_device = "device" in inspect.signature(factory).parameters
    except (TypeError, ValueError):
        takes_device = False
    obj = factory(device=device) if takes_device else factory()
    need = ("fit", "policy") if start["track"] == "agent" else ("fit", "score")
    missing = [m for m in need if not callable(getattr(obj, m, None))]
    if missing:
        raise TypeError(f"{sub['factory']}() returned a {type(obj).__name__} without {missing} (needs {list(need)})")
    return obj


def _serve_agent(chan: Channel, agent: Any, start: dict[str, Any], stage: list[str]) -> None:
    """Fit, then evaluate the checkpoints the scorer asks for.

    The scorer owns the checkpoint schedule (:func:`leaderboard.sandbox.run_agent`): each ``checkpoint(step,
    policy)`` sends a ``checkpoint`` frame (the agent's ``step`` is not sent: the scorer stores its own query count)
    and the scorer answers which slot the snapshot fills (``None``: not kept; a slot filled again is replaced),
    so the child holds at most ``n_checkpoints + 1`` snapshots plus the last one delivered.
    """
    task = start["task"]
    slots: dict[int, Any] = {}
    last: list[Any] = [None]

    def checkpoint(step: int, policy: Any) -> None:
        chan.send({"op": "checkpoint"})
        header, _ = chan.recv_arrays()
        if header["op"] != "checkpoint_ok":
            raise RuntimeError(f"the scorer refused the checkpoint: {header.get('message', header['op'])}")
        slot = header.get("slot")
        if slot is not None:
            slots[int(slot)] = policy
        last[0] = policy

    stage[0] = "fit"
    agent.fit(task, start["budget"], checkpoint)
    chan.send({"op": "fit_done"})
    stage[0] = "eval"
    header, arrays = chan.recv_arrays()
    if header["op"] != "eval" or len(arrays) != 2 or not isinstance(header.get("checkpoints"), list):
        raise ProtocolError(f"expected the eval contexts, got {header['op']!r}")
    cand, ref = torch.from_numpy(arrays[0]), torch.from_numpy(arrays[1])
    for i, which in enumerate(header["checkpoints"]):
        policy = agent if which == "agent" else last[0] if which == "last" else slots[int(which)]
        fn = policy.policy if hasattr(policy, "policy") and not isinstance(policy, torch.nn.Module) else policy
        with torch.no_grad():
            out = fn(cand, ref)
        try:
            arr = _as_array(out)
            chan.send({"op": "logp", "index": i}, [arr])
        except (_InvalidOutput, TypeError) as e:
            raise _InvalidOutput(f"checkpoint {i}: {e}") from None
    chan.send({"op": "done"})


def _serve_reward_model(chan: Channel, rm: Any, start: dict[str, Any], stage: list[str]) -> None:
    task = start["task"]
    stage[0] = "fit"
    data = task.preferences if task.preferences is not None else task.pointwise
    rm.fit(data)
    chan.send({"op": "fit_done"})
    stage[0] = "score"
    while True:
        try:
            header, arrays = chan.recv_arrays()
        except EOFError:
            return
        if header["op"] == "close":
            return
        if header["op"] != "score" or len(arrays) != 1:
            raise ProtocolError(f"expected a score request, got {header['op']!r}")
        with torch.no_grad():
            out = rm.score(torch.from_numpy(arrays[0]))
        chan.send({"op": "scores"}, [_as_array(out)])


def _report(chan: Channel, stage: str, e: BaseException) -> None:
    kind = "load" if stage == "load" else "memory" if _is_memory_error(e) else (
        "invalid_output" if isinstance(e, _InvalidOutput) else "error")
    tb = "".join(traceback.format_exception(type(e), e, e.__traceback__)).splitlines()[-25:] if kind != "memory" else []
    try:
        chan.send({"op": "error", "stage": stage, "kind": kind, "type": type(e).__name__,
                   "message": str(e)[:4000], "traceback": "\n".join(tb)[-6000:]})
    except Exception:  # noqa: BLE001 - the channel may be gone; the exit code tells the rest
        pass


def serve(chan: Channel) -> int:
    """Run one sandboxed submission over ``chan``; returns the process exit code."""
    import pickle

    global CHANNEL
    CHANNEL = chan
    header, plen = chan.recv_header()
    if header["op"] != "start" or header.get("payload") != "pickle":
        return 3
    start = pickle.loads(chan.recv_payload(plen))  # from the scorer (trusted), never the other way round
    stage = ["load"]
    try:
        obj = _load(start)
        chan.send({"op": "ready"})
        if start["track"] == "agent":
            _serve_agent(chan, obj, start, stage)
        else:
            _serve_reward_model(chan, obj, start, stage)
    except (EOFError, BrokenPipeError):
        return 4
    except BaseException as e:  # noqa: BLE001 - every failure of the submission is reported
        _report(chan, stage[0], e)
        return 1
    return 0


# ----------------------------------------------------------------------------------------------- processes
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
        from leaderboard import _seccomp

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


def main(argv: Sequence[str] | None = None) -> int:
    """``--zygote FD`` or ``--run CONFIG_JSON`` (a fresh interpreter for one run)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) == 2 and argv[0] == "--zygote":
        return zygote(int(argv[1]))
    if len(argv) == 2 and argv[0] == "--run":
        cfg = json.loads(argv[1])
        _set_parent_death_signal()
        if cfg.get("jail"):
            enter_jail(cfg)  # while single-threaded (setns needs it): before torch starts threads
        else:
            apply_network(cfg)  # while single-threaded (an unprivileged user namespace needs it): before torch
        _warm_up()  # as in the zygote: libraries before the sandbox closes, lazy imports out of fit_time
        enter_sandbox(cfg)
        code = serve(Channel(cfg["rfd"], cfg["wfd"]))
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    print("usage: python -m leaderboard._child (--zygote FD | --run CONFIG_JSON)", file=sys.stderr)
    return 2


if __name__ == "__main__":
    # Run as the importable module, not as __main__: the RemoteProxy that the scorer pickles refers to
    # leaderboard._child, whose CHANNEL must be the one serve() sets.
    from leaderboard import _child

    sys.exit(_child.main())
