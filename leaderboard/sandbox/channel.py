"""The channel between the scorer and a sandboxed run: framed messages over two pipes, one per direction.

A frame is::

    b"TLT1" | uint32 LE header length | uint64 LE payload length | header (UTF-8 JSON) | payload

The header is a JSON object with an ``op`` and, when the payload holds arrays, ``arrays``: a list of
``{"dtype": "<f4", "shape": [...]}``; the payload is their raw little-endian bytes, concatenated. Only the
scorer may send a ``"payload": "pickle"`` frame (the task, once, at start): the scorer is trusted, the
child is not, and the scorer never unpickles anything (it parses JSON and validates raw float arrays).

Both sides import this module; it needs numpy only (no torch).
"""

from __future__ import annotations

import json
import os
import struct
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
    "set_pipe_size",
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
