"""A run's outputs are checked before the scorer uses them: one float32/float64 array
(:func:`_check_output_dtype`) and, for log-probabilities, their shape, NaN/+inf and normalization
(:func:`_validate_logp`); anything else is ``invalid_output``, saying what was returned."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from leaderboard.sandbox.channel import FLOAT_DTYPES
from leaderboard.spec import SandboxFailure

if TYPE_CHECKING:
    from leaderboard.sandbox.process import _Child

__all__ = ["NORMALIZATION_TOL"]

#: Rows of returned log-probabilities must have ``|logsumexp| <=`` this.
NORMALIZATION_TOL = 1e-3


def _validate_logp(arr: np.ndarray, C: int, K: int, what: str, out: np.ndarray, *, rows: str = "context",
                   cols: str = "candidate") -> None:
    """Check a returned (C, K) log-probability array and write it, renormalized in float64, into ``out``.

    One pass in the good case: a row's logsumexp is NaN if the row has a NaN, +inf if it has a +inf, and
    off 0 if it is not normalized; only failing rows are diagnosed.

    Raises:
        SandboxFailure: ``invalid_output`` naming what was returned.
    """
    if arr.shape != (C, K):
        raise SandboxFailure("invalid_output", f"{what} returned shape {tuple(arr.shape)}, expected (C, K) = ({C}, {K})")
    a = torch.from_numpy(arr).to(torch.float64)
    lse = torch.logsumexp(a, dim=-1)
    bad = ~(lse.abs() <= NORMALIZATION_TOL)
    if bool(bad.any()):
        for mask, name in ((torch.isnan(a), "NaN"), (torch.isposinf(a), "+inf")):
            if bool(mask.any()):
                c, k = (int(v) for v in torch.nonzero(mask)[0])
                raise SandboxFailure("invalid_output", f"{what} returned {int(mask.sum())} {name} value(s) (first at "
                                                       f"{rows} {c}, {cols} {k}); log-probabilities must be finite or -inf")
        c = int(torch.nonzero(bad)[0, 0])
        raise SandboxFailure("invalid_output", f"{what} returned rows that are not normalized log-probabilities: "
                                               f"{int(bad.sum())} of {C} rows have |logsumexp| > {NORMALIZATION_TOL:g} "
                                               f"({rows} {c}: logsumexp = {float(lse[c]):.4g}; probabilities or "
                                               "logits instead of log-probabilities?)")
    # log_softmax, as tiltenv.worlds.evaluation.policy_logp does in-process: the same bits either way
    torch.from_numpy(out).copy_(torch.log_softmax(a, dim=-1))


def _check_output_dtype(child: _Child, header: dict[str, Any], what: str) -> None:
    """One array of float32/float64, else ``invalid_output`` naming what was returned."""
    specs = header.get("arrays")
    if not _one_array(header):
        child.fail("invalid_output", f"{what} must return one array (got {str(specs)[:200]})")
    dt = specs[0].get("dtype") if isinstance(specs[0], dict) else None
    if dt not in FLOAT_DTYPES:
        try:
            shown = np.dtype(dt).name
        except Exception:  # noqa: BLE001 - whatever the child declared
            shown = repr(dt)[:40]
        child.fail("invalid_output", f"{what} returned an array of dtype {shown}; expected float32 or float64")


def _one_array(header: dict[str, Any]) -> bool:
    specs = header.get("arrays")
    return isinstance(specs, list) and len(specs) == 1
