"""scripts/bench_baselines.py runs end to end (tiny budgets)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_baselines_quick(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("bench_baselines", ROOT / "scripts" / "bench_baselines.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = bench.main(["--quick", "--json", str(tmp_path / "bench.json")])
    assert set(out["wall_time"]) == {"tilt", "best_of_n", "reinforce", "rloo", "grpo", "ppo", "dpo", "sb3_ppo", "label_ceiling"}
    assert all(v["queries_per_s"] > 0 for v in out["throughput"].values())
    assert (tmp_path / "bench.json").exists()
    text = capsys.readouterr().out
    assert "queries/s" in text
    # every line with a target says pass or fail
    marked = [line for line in text.splitlines() if "✓" in line or "✗" in line]
    assert len(marked) == len(out["wall_time"]) + 4 + 2  # fit rows, torch PG rows, the two summary lines
    assert set(out["summary"]["pass"]) == {"fit", "pg_ratio"}
    assert bench.mark(True) == "✓" and bench.mark(False) == "✗"


def test_bench_proxies_marks_targets():
    import pandas as pd

    spec = importlib.util.spec_from_file_location("bench_proxies", ROOT / "scripts" / "bench_proxies.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    df = pd.DataFrame({"build_uncached_s": [1.0, 20.0], "build_cached_s": [0.01, 0.5], "cache_hit": [True, True],
                       "gym_make_new_process_s": [0.1, 0.3]}, index=["mlp", "ensemble"])
    marked = bench.with_targets(df)
    assert list(marked.loc["mlp"].filter(like="<")) == ["✓", "✓", "✓"]
    assert list(marked.loc["ensemble"].filter(like="<")) == ["✗", "✗", "✗"]
