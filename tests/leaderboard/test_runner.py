"""The runner end to end: sandboxed runs stored as they arrive, idempotent re-scoring, resume after SIGKILL,
identical metrics serially, on the process pool and on Ray."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest

from leaderboard.runner import score, world_of
from leaderboard.spec import Limits
from leaderboard.store import Store
from leaderboard.submission import load_submission
from leaderboard.suites import Suite, SuiteEntry

ROOT = Path(__file__).resolve().parents[2]
TINY = dict(d=4, K=16, n_labels=200, n_eval_contexts=128, n_norm_contexts=256)
# A tiny suite: two tasks x two seeds, small budgets (the registered suites are timed by the benchmark).
SUITE = Suite(
    "tiny", 1,
    (SuiteEntry("hump", "tiltenv/Hump-v0", {**TINY, "beta": 0.05}, 4096, 4),
     SuiteEntry("linear", "tiltenv/Linear-v0", {**TINY, "beta": 0.05}, 4096, 4)),
    n_dev_seeds=2, n_test_seeds=1,
)
LIMITS = Limits(wall_time=120, memory_mb=4096, threads=1)
KEY = ["submission", "task_key", "seed_index"]


def _frame(store: Store) -> pd.DataFrame:
    runs = store.runs(suite="tiny", version=1, split="dev")
    cols = KEY + ["status", "gold_value", "kl", "normalized_score", "value_gap", "proxy_queries"]
    return runs[cols].sort_values(KEY).reset_index(drop=True)


def test_serial_scores_stores_and_rescoring_is_a_no_op(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'b.db'}")
    subs = [load_submission("tilt"), load_submission("reinforce")]
    first = score(subs, SUITE, store=store, limits=LIMITS, progress=False)
    assert (first.scored, first.failed, first.skipped) == (8, 0, 0)
    df = _frame(store)
    assert len(df) == 8 and (df["status"] == "ok").all()
    # the budget is counted by the scorer: reinforce spent its budget, tilt (closed form) nothing in training
    assert (df.loc[df["submission"] == "reinforce", "proxy_queries"] <= 4096).all()
    assert (df.loc[df["submission"] == "reinforce", "proxy_queries"] > 0).all()
    assert (df.loc[df["submission"] == "tilt", "proxy_queries"] == 0).all()
    # trajectories: step 0 is π_ref (KL 0), the last checkpoint is the fitted policy (the final metrics)
    ck = store.checkpoints(suite="tiny", version=1, split="dev")
    for (sub, task, seed), g in ck.groupby(KEY):
        g = g.sort_values("step")
        final = df[(df.submission == sub) & (df.task_key == task) & (df.seed_index == seed)].iloc[0]
        assert g["kl"].iloc[-1] == pytest.approx(final["kl"], rel=1e-12, abs=1e-12)
        assert g["gold_value"].iloc[-1] == pytest.approx(final["gold_value"], rel=1e-12, abs=1e-12)
        if sub == "reinforce":
            assert g["step"].iloc[0] == 0 and abs(g["kl"].iloc[0]) < 1e-9
    again = score(subs, SUITE, store=store, limits=LIMITS, progress=False)
    assert (again.scored, again.skipped) == (0, 8)
    pd.testing.assert_frame_equal(_frame(store), df)


def test_a_failing_submission_is_a_recorded_failure_and_harms_nothing(tmp_path):
    bad = tmp_path / "bad_agent.py"
    bad.write_text(textwrap.dedent("""
        class Agent:
            def fit(self, task, budget, checkpoint=None):
                raise RuntimeError("boom: my agent is broken")
            def policy(self, candidates, ref_logp):
                return ref_logp
        def make_agent():
            return Agent()
    """))
    store = Store(f"sqlite:///{tmp_path / 'b.db'}")
    res = score([load_submission(str(bad)), load_submission("tilt")], SUITE, store=store, limits=LIMITS,
                progress=False, tasks=["hump"], n_seeds=1)
    assert res.scored == 2 and res.failed == 1
    fails = store.failures(suite="tiny", version=1, split="dev")
    assert len(fails) == 1 and fails["reason"].iloc[0] == "error" and "boom" in fails["detail"].iloc[0]
    ok = _frame(store)
    assert ok.loc[ok.submission == "tilt", "status"].tolist() == ["ok"]


def _backend_frame(tmp_path, backend: str) -> pd.DataFrame:
    store = Store(f"sqlite:///{tmp_path / (backend + '.db')}")
    score([load_submission("grpo"), load_submission("dpo")], SUITE, store=store, limits=LIMITS, progress=False,
          backend=backend, workers=2)
    return _frame(store)


def test_pool_gives_the_serial_metrics_bit_for_bit(tmp_path):
    pd.testing.assert_frame_equal(_backend_frame(tmp_path, "pool"), _backend_frame(tmp_path, "serial"), check_exact=True)


def test_ray_gives_the_serial_metrics_bit_for_bit(tmp_path):
    if os.environ.get("TILTENV_REQUIRE_SERVICES") != "1":
        pytest.importorskip("ray")
    pd.testing.assert_frame_equal(_backend_frame(tmp_path, "ray"), _backend_frame(tmp_path, "serial"), check_exact=True)


SCORER = """
import sys
sys.path.insert(0, {root!r})
sys.path.insert(0, {here!r})
from test_runner import SUITE, LIMITS
from leaderboard.runner import score, world_of
from leaderboard.store import Store
from leaderboard.submission import load_submission
score([load_submission("reinforce"), load_submission("rloo")], SUITE, store=Store({url!r}), limits=LIMITS,
      progress=False)
"""


def test_sigkill_mid_suite_then_rerun_finishes_without_duplicates_or_gaps(tmp_path):
    url = f"sqlite:///{tmp_path / 'k.db'}"
    script = tmp_path / "scorer.py"
    script.write_text(SCORER.format(root=str(ROOT), here=str(Path(__file__).parent), url=url))
    proc = subprocess.Popen([sys.executable, str(script)], start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    store = Store(url)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            n = len(store.runs(suite="tiny", version=1, split="dev"))
        except Exception:  # the scorer may not have created the tables yet
            n = 0
        if n >= 2:
            break
        time.sleep(0.2)
    assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
    os.killpg(proc.pid, signal.SIGKILL)  # the scorer and its sandboxed child, mid-suite
    proc.wait()
    partial = len(store.runs(suite="tiny", version=1, split="dev"))
    assert 2 <= partial < 8
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, timeout=600)
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    df = _frame(store)
    assert len(df) == 8 and not df.duplicated(KEY).any() and (df["status"] == "ok").all()
    ck = store.checkpoints(suite="tiny", version=1, split="dev")
    assert set(map(tuple, ck[KEY].drop_duplicates().to_numpy().tolist())) == set(map(tuple, df[KEY].to_numpy().tolist()))


def test_sqlite_and_postgresql_give_the_same_board(sqlite_url, postgresql_url):
    from leaderboard import scoring

    boards = []
    for url in (sqlite_url, postgresql_url):
        store = Store(url)
        score([load_submission("tilt"), load_submission("best_of_n")], SUITE, store=store, limits=LIMITS,
              progress=False)
        runs = store.runs(suite="tiny", version=1, split="dev")
        assert len(runs) == 8
        boards.append(scoring.board(runs).drop(columns="median_fit_time"))  # wall time differs from run to run
    pd.testing.assert_frame_equal(boards[0], boards[1], check_exact=True)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_scoring_on_a_judge_view_matches_the_judge(device):
    """--device scores on a view of the judge's tensors on the device: the same metrics as the judge itself."""
    import torch

    from leaderboard import scoring
    from leaderboard.runner import judge_on

    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    import types

    world = world_of(SUITE.runs("dev")[0])
    j = world.judge
    logps = torch.stack([torch.log_softmax(j.eval_ref_logp + j.eval_proxy / b, -1) for b in (10.0, 1.0, 0.1)])
    want, rows = scoring.score_agent_run(j, [0, 1, 2], logps)
    view = judge_on(j, device) if device == "cuda" else types.SimpleNamespace(
        config=j.config, **{k: getattr(j, k).clone() for k in ("eval_candidates", "eval_ref_logp", "eval_gold", "eval_proxy")})
    got, rows2 = scoring.score_agent_run(view, [0, 1, 2], logps)
    assert judge_on(j, "cpu") is j
    assert set(got) == set(want)
    for k in want:
        assert got[k] == pytest.approx(want[k], rel=1e-9, abs=1e-12, nan_ok=True), k


def test_plan_skips_exactly_the_stored_runs_of_each_submission_and_track(tmp_path):
    """plan() keys the skip on (code hash, suite, version, split, task, seed index) and gives each submission the
    runs of its own track only."""
    from types import SimpleNamespace

    from leaderboard.runner import plan
    from leaderboard.spec import RunResult

    suite = Suite("tiny", 2, SUITE.entries, n_dev_seeds=2, n_test_seeds=1)
    agent = SimpleNamespace(name="ag", ref="ag", kind="file", track="agent", code_hash="a" * 64, config={})
    rm = SimpleNamespace(name="rm", ref="rm", kind="file", track="reward_model", code_hash="b" * 64, config={})
    specs = suite.runs("dev", track="agent") + suite.runs("dev", track="reward_model")
    by = {(s.track, s.task_key, s.seed_index): s for s in specs}
    store = Store(f"sqlite:///{tmp_path / 'p.db'}")
    old = Suite("tiny", 1, SUITE.entries, n_dev_seeds=2).runs("dev")[2]  # linear#0 of version 1: not this version's
    for sub, spec in [(agent, by["agent", "hump", 1]), (agent, old), (rm, by["reward_model", "hump", 0])]:
        assert store.save(RunResult(sub.name, sub.code_hash, spec, "failed", reason="error", detail="x"))
    todo, skipped = plan([agent, rm], specs, store)
    assert skipped == 2
    assert [(s.name, sp.track, sp.task_key, sp.seed_index) for s, sp in todo] == [
        ("ag", "agent", "hump", 0), ("ag", "agent", "linear", 0), ("ag", "agent", "linear", 1),
        ("rm", "reward_model", "hump", 1), ("rm", "reward_model", "linear", 0), ("rm", "reward_model", "linear", 1)]
