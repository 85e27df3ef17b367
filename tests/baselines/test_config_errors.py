"""Every agent config names a wrong field with the closest valid one, however it is built."""

from __future__ import annotations

import dataclasses

import pytest

from baselines import BASELINES
from baselines.constrained import ConstrainedPGConfig
from baselines.scalarized import ScalarizedPGConfig, ScalarizedTiltConfig

CONFIGS = sorted({cfg for _a, cfg in BASELINES.values()} | {ConstrainedPGConfig, ScalarizedPGConfig, ScalarizedTiltConfig},
                 key=lambda c: c.__name__)


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: c.__name__)
def test_direct_construction_suggests_the_closest_field(cfg):
    names = [f.name for f in dataclasses.fields(cfg)]
    target = max(names, key=len)  # a long name, so one wrong letter still has a close match
    typo = target[:-1] + ("x" if target[-1] != "x" else "y")
    with pytest.raises(TypeError, match=rf"{cfg.__name__} has no field '{typo}'.*Did you mean '{target}'"):
        cfg(**{typo: 1})
    assert dataclasses.is_dataclass(cfg()) and cfg() == cfg()  # defaults still build, equality still works
