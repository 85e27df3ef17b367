"""The examples in the issue-12 modules' docstrings run."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = ["tiltenv.lifecycle.calibration", "tiltenv.lifecycle", "tiltenv.lifecycle.active", "tiltenv.lifecycle.monitor", "baselines.active"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
