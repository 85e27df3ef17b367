"""The main job and the benchmark run end to end (quick sizes)."""

from __future__ import annotations

import importlib.util
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tiltenv", "sweep", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=300)


def test_main_job_prints_the_tilt_and_best_of_n_tables():
    out = _run("--env", "tiltenv/Hump-v0", "--set", "n_eval_contexts=512", "--set", "d=8")
    assert out.returncode == 0, out.stderr
    assert "tilt_beta" in out.stdout and "best-of-n" in out.stdout
    assert out.stdout.count("-> OVEROPTIMIZED") == 2  # Hump overoptimizes under both sweeps
    assert out.stdout.count("at the task's β = 0.25 on every row") == 2 and "OVEROPTIMIZED when gold falls" in out.stdout
    lin = _run("--env", "tiltenv/Linear-v0", "--set", "n_eval_contexts=512", "--set", "d=8")
    assert lin.returncode == 0 and lin.stdout.count("-> no overoptimization") == 2


def test_main_job_rejects_bad_input_clearly():
    out = _run("--env", "tiltenv/Hmp-v0")
    assert out.returncode == 2 and "tiltenv/Hump-v0" in out.stderr and "Traceback" not in out.stderr
    out = _run("--set", "link=rleu")
    assert out.returncode == 2 and "Did you mean 'relu'" in out.stderr and "Traceback" not in out.stderr


def _bench():
    spec = importlib.util.spec_from_file_location("bench", ROOT / "scripts" / "bench.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def test_bench_quick_reports_finite_ratios(capsys):
    res = _bench().main(["--quick"])
    assert {"env_numpy_N64", "env_torch_N64", "metrics", "proxy"} <= set(res)
    for group in res.values():
        for key, value in group.items():
            assert math.isfinite(value) and value > 0, (key, value)
    out = capsys.readouterr().out
    for figure in ("default", "final_info=False", "kl_divergence", "policy_value", "value_gap", "tilt_logp",
                   "best_of_n_logp", "ensemble / mlp, whole build", "ensemble / mlp, training",
                   "floor of ensemble / mlp training", "pre-build estimate", "device ops (kernel launches on a GPU)"):
        assert figure in out, figure
    targets = [line for line in out.splitlines() if "(<=" in line or "(>=" in line]
    assert len(targets) == 2 + 6 + 2 and all(("✓" in t) != ("✗" in t) for t in targets)


def test_bench_device_auto_and_a_missing_gpu(capsys):
    bench = _bench()
    res = bench.main(["--quick", "--device", "auto", "--only", "metrics"])
    assert set(res) == {"metrics"}
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit, match="CUDA is not available"):
            bench.main(["--quick", "--device", "cuda"])
    with pytest.raises(SystemExit) as err:
        bench.main(["--quick", "--only", "envs"])
    assert err.value.code == 2 and "unknown section" in capsys.readouterr().err


def test_bench_leaderboard_quick_reports_every_figure():
    spec = importlib.util.spec_from_file_location("bench_leaderboard", ROOT / "scripts" / "bench_leaderboard.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    res = bench.main(["--quick", "--no-ray"])
    for key in ("in_process_s", "serial_s", "channel_ratio", "pool_s", "pool_speedup"):
        assert math.isfinite(res[key]) and res[key] > 0, (key, res)


def test_gpu_check_script_refuses_clearly_without_cuda(tmp_path):
    """scripts/gpu_check.sh is the prepared device check: without CUDA it stops at once with why (exit 2)."""

    env = {**os.environ, "TILTENV_WHEELS": str(tmp_path / "no-wheels"), "PYTHON": sys.executable,
           "OUT": str(tmp_path / "out")}
    out = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh")], capture_output=True, text=True, env=env,
                         cwd=ROOT, timeout=120)
    if torch.cuda.is_available():
        pytest.skip("CUDA is present: run the script itself")
    assert out.returncode == 2 and "sees no CUDA device" in out.stderr, (out.stdout, out.stderr)
    assert not (tmp_path / "out").exists()
    bad = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh"), "--nope"], capture_output=True, text=True)
    assert bad.returncode == 2 and "usage" in bad.stderr
