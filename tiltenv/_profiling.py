"""Counting what a block of torch code asks of the device: ops dispatched (kernel launches on a GPU) and, on
CUDA, host synchronizations. Used by ``scripts/bench.py`` and the tests that hold the env step's op budget —
counters, not clocks, so they mean the same on any machine."""

from __future__ import annotations

import collections
import warnings
from collections.abc import Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode

__all__ = ["DeviceOps", "cuda_syncs"]

#: Ops that only reinterpret metadata or wrap host data: no kernel runs for them.
_FREE = frozenset({"view", "detach", "lift_fresh", "_unsafe_view", "alias", "as_strided", "expand", "t",
                    "transpose", "unsqueeze", "squeeze", "permute", "slice", "select", "_reshape_alias"})


class DeviceOps(TorchDispatchMode):
    """``with DeviceOps() as ops: ...`` counts every aten op dispatched in the block (``ops.counts``) and the
    ones that run a kernel (``ops.launches``: views and other metadata-only ops left out)."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: collections.Counter[str] = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.counts[str(func)] += 1
        return func(*args, **(kwargs or {}))

    @property
    def launches(self) -> int:
        return sum(n for name, n in self.counts.items() if name.split(".")[1] not in _FREE)

    @property
    def scalar_reads(self) -> int:
        """``bool()`` / ``.item()`` on tensors: a host sync each on a GPU (``.tolist()`` is not seen here)."""
        return self.counts.get("aten._local_scalar_dense.default", 0)


def cuda_syncs(fn: Callable[[], object]) -> int:
    """Host synchronizations ``fn()`` makes on CUDA (``torch.cuda.set_sync_debug_mode``'s warnings)."""
    if not torch.cuda.is_available():
        raise RuntimeError("cuda_syncs needs CUDA")
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message).lower() for w in seen)
