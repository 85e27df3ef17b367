"""Shared test fixtures: small tasks, a private proxy cache, deterministic torch."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

# Test workloads are small: one intra-op thread avoids thread-pool contention, which on a loaded
# 2-core machine made small torch loops (SB3's MLPs, per-row metrics) 10-20x slower.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    """Every test gets a private on-disk proxy cache (never the user's ~/.cache)."""
    monkeypatch.setenv("TILTENV_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "tiltenv-cache"))


@pytest.fixture(scope="session")
def run_reproduction(tmp_path_factory):
    """``run_reproduction(name)`` runs ``scripts/reproduce/<name>.py --quick`` in-process, checks it wrote its
    csv/png/md, and returns what its ``main`` returned."""
    root = Path(__file__).resolve().parents[1]

    def run(name: str) -> dict:
        spec = importlib.util.spec_from_file_location(f"repro_{name}", root / "scripts" / "reproduce" / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        out = tmp_path_factory.mktemp(name)
        res = mod.main(["--quick", "--out", str(out)])
        for ext in ("csv", "png", "md"):
            path = out / f"{name}.{ext}"
            assert path.exists() and path.stat().st_size > 0, path
        return res

    return run
