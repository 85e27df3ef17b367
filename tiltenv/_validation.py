"""Small validation helpers: every user-facing error names the field, the value and what is valid."""

from __future__ import annotations

import argparse
import difflib
import math
import os
from collections.abc import Iterable
from typing import Any

import torch

#: The device strings every ``device=`` argument accepts.
DEVICES = "'auto', 'cpu', 'cuda' or 'cuda:N'"


def suggest(name: str, choices: Iterable[str]) -> str:
    """Return ``" Did you mean 'x'?"`` for the closest valid name, or ``""``."""
    close = difflib.get_close_matches(str(name), list(choices), n=1, cutoff=0.5)
    return f" Did you mean {close[0]!r}?" if close else ""


def check_choice(field: str, value: Any, choices: Iterable[str]) -> str:
    choices = list(choices)
    if not isinstance(value, str) or value not in choices:
        raise ValueError(
            f"{field} must be one of {choices} (got {value!r})."
            + (suggest(value, choices) if isinstance(value, str) else "")
        )
    return value


class ParameterTypeError(TypeError):
    """A parameter of the wrong type. A ``TypeError`` (so ``except TypeError`` keeps working) whose message reads
    the same through ``gym.make``: Gymnasium re-raises a creator's TypeError as ``type(e)(f"{e} was raised from the
    environment creator for ... with kwargs (...)")`` — a 400-character suffix listing every kwarg — and this class
    drops that suffix (the original error stays chained as ``__cause__``)."""

    _GYM_SUFFIX = " was raised from the environment creator for "

    def __init__(self, message: object = "") -> None:
        text = str(message)
        if self._GYM_SUFFIX in text:
            text = text.split(self._GYM_SUFFIX, 1)[0]
        super().__init__(text)


def _kind(value: Any) -> str:
    return "a string" if isinstance(value, str) else f"of type {type(value).__name__}"


def check_int(field: str, value: Any, *, low: int | None = None, high: int | None = None) -> int:
    """An integer field. The one numeric type rule (shared with :func:`check_float`): numbers only — no strings,
    no booleans; an integer field takes any integral number (``16``, ``16.0``, ``np.int64(16)``)."""
    if isinstance(value, (bool, str, bytes)) or value is None:
        raise ParameterTypeError(f"{field} must be an integer (got {value!r}, {_kind(value)}).")
    if not hasattr(value, "__index__"):
        try:
            as_float = float(value)
        except (TypeError, ValueError):
            raise ParameterTypeError(f"{field} must be an integer (got {value!r}, {_kind(value)}).") from None
        if not math.isfinite(as_float) or not as_float.is_integer():
            raise ValueError(f"{field} must be an integer (got {value!r}, not a whole number).")
        value = int(as_float)
    value = int(value)
    if (low is not None and value < low) or (high is not None and value > high):
        lo = f"[{low}" if low is not None else "(-inf"
        hi = f"{high}]" if high is not None else "inf)"
        raise ValueError(f"{field} must be in {lo}, {hi} (got {value}).")
    return value


def check_float(
    field: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    allow_inf: bool = False,
) -> float:
    if isinstance(value, (bool, str, bytes)) or value is None:
        raise ParameterTypeError(f"{field} must be a real number (got {value!r}, {_kind(value)}).")
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ParameterTypeError(f"{field} must be a real number (got {value!r}, {_kind(value)}).") from None
    if math.isnan(value) or (math.isinf(value) and not allow_inf):
        raise ValueError(f"{field} must be a finite number (got {value}).")
    lo_bad = low is not None and (value <= low if low_open else value < low)
    hi_bad = high is not None and (value >= high if high_open else value > high)
    if lo_bad or hi_bad:
        lo = "-inf" if low is None else f"{low:g}"
        hi = "inf" if high is None else f"{high:g}"
        interval = ("(" if low_open else "[") + f"{lo}, {hi}" + (")" if high_open or (high is None and not allow_inf) else "]")
        raise ValueError(f"{field} must be in {interval} (got {value:g}).")
    return value


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` → CUDA when available, else CPU; anything else is checked and returned.

    Raises:
        ValueError: an unknown device string, or CUDA requested on a machine without it.
    """
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device must be {DEVICES} (got {device!r}).") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={str(device)!r} was requested but CUDA is not available; use 'cpu' or 'auto'.")
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be {DEVICES} (got {device!r}).")
    return dev


#: Default torch intra-op thread count of the command-line entry points (scripts/train.py, scripts/bench_*.py,
#: ``tiltenv sweep``). Measured on a shared 2-core machine (README, "Threads"): these workloads are many small
#: tensor ops, where one thread is as fast as two when the machine is idle and much faster when it is busy.
DEFAULT_THREADS = 1


def check_threads(value: Any) -> int | None:
    """``--threads`` value → an int ≥ 1, or None for ``auto`` (torch's default: one per core)."""
    if value is None or (isinstance(value, str) and value.strip().lower() == "auto"):
        return None
    try:
        n = int(str(value).strip())
    except ValueError:
        raise ValueError(f"--threads must be a positive integer or 'auto' (got {value!r}).") from None
    limit = 4 * (os.cpu_count() or 1)
    if not 1 <= n <= limit:
        raise ValueError(f"--threads must be between 1 and {limit} (4 × the {os.cpu_count()} cores) or 'auto' (got {n}).")
    return n


def add_threads_argument(parser: Any, default: int | str = DEFAULT_THREADS) -> None:
    """Add ``--threads N|auto`` to an argparse parser (validated by :func:`apply_threads`)."""
    parser.add_argument("--threads", default=str(default), metavar="N",
                        help="torch intra-op threads, or 'auto' for one per core (default: %(default)s; see README)")


def apply_threads(parser: Any, value: Any) -> int:
    """Validate ``--threads`` and call ``torch.set_num_threads``; a bad value exits with one line and code 2."""
    import sys

    try:
        n = check_threads(value)
    except ValueError as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    if n is not None:
        torch.set_num_threads(n)
    return torch.get_num_threads()


class ArgumentParser(argparse.ArgumentParser):
    """argparse with one-line errors: ``prog: error: message`` on stderr, exit code 2 (no usage block)."""

    def error(self, message: str):  # type: ignore[override]
        import sys

        print(f"{self.prog}: error: {message} (see --help)", file=sys.stderr)
        raise SystemExit(2)


#: Largest footprint any one tiltenv object may plan for, whatever the machine: 8 GiB.
MAX_FOOTPRINT_BYTES = 8 * 2**30


def available_memory() -> int | None:
    """Bytes of memory the OS reports available (``MemAvailable``), or None where unknown."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**28 else f"{n / 2**20:.1f} MiB"


def check_footprint(what: str, n_bytes: int, terms: str, fix: str, *, against_available: bool = True) -> None:
    """Refuse, before allocating, a plan whose estimated memory exceeds :data:`MAX_FOOTPRINT_BYTES` or (when
    ``against_available``) the memory available now.

    Args:
        what: what would be allocated (``"the task's contexts"``).
        n_bytes: the estimate; terms: how it was computed, naming the parameters; fix: which to lower.
    Raises:
        ValueError: naming the parameters, the estimate and the limit.
    """
    limit, why = MAX_FOOTPRINT_BYTES, f"the {_gib(MAX_FOOTPRINT_BYTES)} limit"
    avail = available_memory() if against_available else None
    if avail is not None and avail < limit:
        limit, why = avail, f"the {_gib(avail)} of memory available now"
    if n_bytes > limit:
        raise ValueError(f"{what} would need about {_gib(n_bytes)} ({terms}), more than {why}; {fix}.")


def check_env_id(env_id: Any) -> str:
    """A registered tiltenv id (``tiltenv/X-vN`` or ``tiltenv:tiltenv/X-vN``), else a ValueError naming the closest
    one — instead of Gymnasium's NameNotFound or an AttributeError on a non-tiltenv env."""
    import gymnasium as gym

    ids = sorted(k for k in gym.registry if k.startswith("tiltenv/"))
    if not isinstance(env_id, str):
        raise ValueError(f"env id must be a string, one of {ids} (got {env_id!r}).")
    name = env_id.split(":", 1)[1] if ":" in env_id else env_id
    if name not in ids:
        what = "is not a tiltenv task" if name in gym.registry else "is not registered"
        raise ValueError(f"env id {env_id!r} {what}." + suggest(name, ids) + f" tiltenv ids: {ids}.")
    return env_id
