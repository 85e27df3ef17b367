"""A board a researcher can read without being misled (issue 19): identity, completeness, scorer settings,
statistics that say what they know, provenance. Each test plays one row of the issue's table."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from leaderboard import scoring as S
from leaderboard.spec import CheckpointRow, Limits, RunResult
from leaderboard.store import Store
from leaderboard.submission import Submission, load_submission
from leaderboard.suites import Suite, SuiteEntry, get_suite

ROOT = Path(__file__).resolve().parents[2]
H1, H2, H3 = "a1" * 32, "b2" * 32, "c3" * 32
TINY = dict(d=4, K=16, n_labels=200, n_eval_contexts=128, n_norm_contexts=256)
TINY_SUITE = Suite("tiny", 1, (SuiteEntry("linear", "tiltenv/Linear-v0", {**TINY, "beta": 0.05}, 1024, 2),),
                   n_dev_seeds=1, n_test_seeds=1)


def cli(*args: str, db: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TILTENV_DB")}
    env.update(TILTENV_DB=db, COLUMNS="250", PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "tiltenv", *args], capture_output=True, text=True, cwd=ROOT, env=env,
                          timeout=timeout)


def _frame(scores: dict[tuple[str, str], np.ndarray], failed=()) -> pd.DataFrame:
    """scores[(name, code_hash)]: (seeds, tasks) normalized scores; failed: (name, seed, task) cells that failed."""
    rows = []
    for (name, h), a in scores.items():
        for i in range(a.shape[0]):
            for t in range(a.shape[1]):
                if np.isnan(a[i, t]):
                    continue  # not run
                bad = (name, i, t) in failed
                rows.append({"submission": name, "code_hash": h, "suite": "s", "suite_version": 1, "split": "dev",
                             "track": "agent", "task_key": f"task{t}", "seed_index": i,
                             "status": "failed" if bad else "ok", "normalized_score": math.nan if bad else a[i, t]})
    return pd.DataFrame(rows)


def _save_smoke(store: Store, sub: Submission, scores: dict[str, float], *, failed: tuple[str, ...] = ()) -> None:
    """Synthetic results of ``sub`` on the smoke suite's dev runs (task key -> normalized score); the board
    commands below ask for ``--split dev`` (the default board is the test split)."""
    store.add_submission(sub)
    for spec in get_suite("smoke").runs("dev"):
        if spec.task_key not in scores:
            continue
        if spec.task_key in failed:
            res = RunResult(sub.name, sub.code_hash, spec, "failed", reason="error", detail="boom")
        else:
            v = scores[spec.task_key]
            res = RunResult(sub.name, sub.code_hash, spec, "ok",
                            metrics={"normalized_score": v, "value_gap": 1.0 - v, "kl": 0.5},
                            checkpoints=[CheckpointRow(0, 0.0, 0.0, 0.0, 1.0, 0.0, 1.0)])
        res.device = "cpu"
        assert store.save(res)


def _sub(name: str, code_hash: str, kind: str = "file") -> Submission:
    return Submission(name, f"{name}.py", kind, "agent", code_hash, {}, target=f"/x/{name}.py", factory="make_agent")


# ================================================================== 1. a submission is its code


def test_two_files_with_one_name_are_two_submissions_not_one_pooled_row():
    """An edited file keeps its stem: two code hashes named 'my_agent' (true scores 1.0 and 0.5) must be two rows
    named my_agent@hash, and a comparison must say which one (never pool them into 0.75)."""
    runs = _frame({("my_agent", H1): np.ones((3, 2)), ("my_agent", H2): np.full((3, 2), 0.5),
                   ("tilt", H3): np.full((3, 2), 0.7)})
    brd = S.board(runs, n_boot=50).set_index("submission")
    assert set(brd.index) == {f"my_agent@{H1[:8]}", f"my_agent@{H2[:8]}", "tilt"}
    assert brd.loc[f"my_agent@{H1[:8]}", "iqm"] == 1.0 and brd.loc[f"my_agent@{H2[:8]}", "iqm"] == 0.5
    assert (brd["name"] == "my_agent").sum() == 2
    with pytest.raises(ValueError, match=rf"'my_agent' names 2 versions.*my_agent@{H1[:8]}, my_agent@{H2[:8]}"):
        S.probability_of_improvement(runs, "my_agent", "tilt", n_boot=20)
    assert S.probability_of_improvement(runs, f"my_agent@{H1[:8]}", "tilt", n_boot=20)[0] == 1.0
    assert S.probability_of_improvement(runs, f"my_agent@{H2[:8]}", "tilt", n_boot=20)[0] == 0.0
    assert S.probability_of_improvement(runs, f"my_agent@{H2[:5]}", "tilt", n_boot=20)[0] == 0.0  # a shorter prefix
    assert S.probability_of_improvement(runs, H1, "tilt", n_boot=20)[0] == 1.0  # a full code hash
    # a name with one code hash keeps its plain name
    assert list(S.submission_labels(runs[runs.code_hash != H2]).unique()) == ["my_agent", "tilt"]


def test_compare_takes_name_at_hash_on_the_command_line(tmp_path):
    db = f"sqlite:///{tmp_path / 'b.db'}"
    st = Store(db)
    _save_smoke(st, _sub("my_agent", H1), {"hump": 0.9, "linear": 0.9})
    _save_smoke(st, _sub("my_agent", H2), {"hump": 0.1, "linear": 0.1})
    _save_smoke(st, load_submission("tilt"), {"hump": 0.5, "linear": 0.5})
    out = cli("board", "--split", "dev", "--compare", f"my_agent@{H1[:8]},tilt", db=db)
    assert out.returncode == 0, out.stderr
    assert f"P(my_agent@{H1[:8]} > tilt) = 1.000" in out.stdout
    assert f"my_agent@{H1[:8]}" in out.stdout and f"my_agent@{H2[:8]}" in out.stdout  # both versions, by hash
    assert "'my_agent' has 2 versions" in out.stdout
    amb = cli("board", "--split", "dev", "--compare", "my_agent,tilt", db=db)
    assert amb.returncode == 2 and "Traceback" not in amb.stderr
    assert f"my_agent@{H1[:8]}, my_agent@{H2[:8]}" in amb.stderr and "name@hash" in amb.stderr


def test_builtin_names_are_reserved(tmp_path):
    agent = tmp_path / "tilt.py"  # a file that happens to be called like a baseline is not that baseline
    agent.write_text("def make_agent():\n    return None\n")
    assert load_submission(str(agent)).name == "tilt.py"
    for bad in ("best_of_n", "tilt(temperature=2.0)", "proxy:mlp", "mine@abc"):
        with pytest.raises(ValueError, match=re.escape(f"name '{bad}'")):
            load_submission(str(agent), name=bad)
    assert load_submission("best_of_n", name="best_of_n").name == "best_of_n"  # a baseline keeps its own name
    with pytest.raises(ValueError, match="reserved"):
        load_submission("tilt", name="best_of_n")
    db = f"sqlite:///{tmp_path / 'b.db'}"
    out = cli("score", str(agent), "--name", "best_of_n", "--no-progress", db=db)
    assert out.returncode == 2 and "'best_of_n' is reserved" in out.stderr and "Traceback" not in out.stderr
    assert Store(db).runs().empty


def test_name_given_for_code_already_on_the_board_is_not_silently_ignored(tmp_path):
    agent = tmp_path / "agent.py"
    agent.write_text("def make_agent():\n    return None\n")
    sub = load_submission(str(agent))
    db = f"sqlite:///{tmp_path / 'b.db'}"
    st = Store(db)
    _save_smoke(st, Submission("old_name", **{k: getattr(sub, k) for k in ("ref", "kind", "track", "code_hash")}),
                {"hump": 0.4, "linear": 0.6})  # every run stored: nothing left to score
    out = cli("score", str(agent), "--name", "new_name", "--no-progress", "--no-board", db=db)
    assert out.returncode == 0, out.stderr
    assert "renamed 'old_name' to 'new_name'" in out.stdout
    assert list(Store(db).submissions()["name"]) == ["new_name"]
    assert set(Store(db).runs()["submission"]) == {"new_name"}


# ================================================================== 2. complete or marked


def test_a_submission_on_fewer_tasks_is_listed_below_the_ranking_not_first():
    partial = np.array([[np.nan, 0.996]])  # ran only task1 (like `--tasks linear`)
    runs = _frame({("partial", H1): partial, ("full", H2): np.array([[0.4, 0.9]]), ("other", H3): np.array([[0.2, 0.3]])})
    for expected in (None, [("task0", 0), ("task1", 0)]):
        brd = S.board(runs, n_boot=20) if expected is None else S.board(runs, n_boot=20, expected=expected)
        assert list(brd["submission"]) == ["full", "other", "partial"]
        assert list(brd["rank"].astype(object).where(brd["rank"].notna(), None)) == [1, 2, None]
        assert list(brd["complete"]) == [True, True, False]
        assert brd.iloc[2]["runs"] == 1 and brd.iloc[2]["expected_runs"] == 2
    # a suite with a second seed makes everyone incomplete: nobody is ranked on half the suite
    brd = S.board(runs, n_boot=20, expected=[(t, i) for t in ("task0", "task1") for i in (0, 1)])
    assert not brd["complete"].any() and brd["rank"].isna().all()


def test_comparison_refuses_different_runs_unless_asked_for_the_common_tasks():
    runs = _frame({("partial", H1): np.array([[np.nan, 0.996]]), ("full", H2): np.array([[0.4, 0.9]])})
    with pytest.raises(ValueError, match=r"ran different runs.*only in 'full': task0#0.*common_tasks=True"):
        S.probability_of_improvement(runs, "partial", "full", n_boot=20)
    res = S.probability_of_improvement(runs, "partial", "full", n_boot=20, common_tasks=True)
    assert res.p == 1.0 and res.tasks == ["task1"] and res.common_only
    assert res.note == "on the 1 runs (1 of 2 tasks) both submissions have; 0 of 'partial' and 1 of 'full' left out"


def test_board_command_marks_incomplete_submissions_and_says_what_compare_left_out(tmp_path):
    db = f"sqlite:///{tmp_path / 'b.db'}"
    st = Store(db)
    _save_smoke(st, _sub("linear_only", H1), {"linear": 0.996})
    _save_smoke(st, load_submission("tilt"), {"hump": 0.41, "linear": 0.99})
    _save_smoke(st, load_submission("best_of_n"), {"hump": 0.2, "linear": 0.8}, failed=("hump",))
    out = cli("board", "--split", "dev", "--by-task", db=db)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    row = {name: next(i for i, line in enumerate(lines) if f"│ {name} " in line) for name in ("tilt", "linear_only")}
    assert "│    1 │" in lines[row["tilt"]] and "│    — │" in lines[row["linear_only"]]
    assert "incomplete: 1/2 runs" in lines[row["linear_only"]]
    assert "0.700, n/a (1 seed)" in lines[row["tilt"]]  # one seed per task: no interval, said so
    assert "[0.700, 0.700]" not in out.stdout
    # the per-task table: one column per task, failed runs counted
    assert "0.410 n/a (1 seed)" in out.stdout and "0.000 n/a (1 seed) (1 failed)" in out.stdout
    # provenance under the board
    import tiltenv

    assert f"scored with tiltenv {tiltenv.__version__}, torch " in out.stdout and " on cpu, 20" in out.stdout
    refused = cli("board", "--split", "dev", "--compare", "linear_only,tilt", db=db)
    assert refused.returncode == 2 and "--common-tasks" in refused.stderr
    common = cli("board", "--split", "dev", "--compare", "linear_only,tilt", "--common-tasks", db=db)
    assert common.returncode == 0, common.stderr
    assert "P(linear_only > tilt) = 1.000 CI n/a" in common.stdout
    assert "on the 1 runs (1 of 2 tasks) both submissions have" in common.stdout


# ================================================================== 3. scorer settings are the scorer's


@pytest.mark.parametrize("args, words", [
    (("--time-limit", "0"), "--time-limit must be a finite number of seconds > 0 (got 0)"),
    (("--memory-mb", "-1"), "--memory-mb must be an integer >= 1 (got -1)"),
    (("--threads", "0"), "--threads must be an integer >= 1 (got 0)"),
    (("--device", "tpu"), "--device must be 'cpu', 'cuda' or 'cuda:N' (got 'tpu')"),
    (("--workers", "0", "--backend", "pool"), "--workers must be an integer >= 1 (got 0)"),
    (("--seeds", "0"), "--seeds must be an integer >= 1 (got 0)"),
    (("--seeds", "2"), "--seeds must be in [1, 1] for the test split of smoke (got 2)"),
])
def test_invalid_scorer_options_are_refused_before_anything_runs(tmp_path, args, words):
    db = f"sqlite:///{tmp_path / 'b.db'}"
    out = cli("score", "tilt", *args, "--no-progress", "--no-board", db=db)
    assert out.returncode == 2, (out.stdout, out.stderr)
    assert words in out.stderr and len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr
    assert not (tmp_path / "b.db").exists()  # nothing ran, nothing was stored


def test_limits_no_run_can_live_with_fail_the_scoring_not_the_submission(tmp_path):
    """A wall time shorter than a sandbox's start (or a memory cap below what its interpreter needs) would fail every
    run as the submission's 'timeout' ('memory') failure, and a rerun would keep it: the scorer checks its settings
    on a canary first."""
    from leaderboard.runner import score

    st = Store(f"sqlite:///{tmp_path / 'b.db'}")
    with pytest.raises(RuntimeError, match=r"settings cannot host a run.*--time-limit 0.01 s.*\(timeout: .*"
                                           r"nothing was scored or stored"):
        score([load_submission("tilt")], TINY_SUITE, store=st, limits=Limits(wall_time=0.01), progress=False)
    assert st.runs().empty and st.failures().empty
    for bad in (dict(wall_time=0), dict(wall_time=math.inf), dict(memory_mb=-1), dict(memory_mb=0), dict(threads=0)):
        with pytest.raises(ValueError, match=f"{next(iter(bad))} must be"):
            Limits(**bad)


# ================================================================== 4. statistics that say what they know


def test_one_seed_has_no_interval_not_a_zero_width_one():
    runs = _frame({("a", H1): np.array([[0.733, 0.5]]), ("b", H2): np.array([[0.5, 0.733]])})
    brd = S.board(runs, n_boot=50)
    assert brd[["iqm_lo", "iqm_hi", "mean_lo", "mean_hi"]].isna().all().all() and brd["iqm"].notna().all()
    assert (brd["seeds"] == 1).all()
    p, lo, hi = S.probability_of_improvement(runs, "a", "b", n_boot=50)
    assert p == 0.5 and math.isnan(lo) and math.isnan(hi)  # not "0.500 [0.500, 0.500]"
    bt = S.board_by_task(runs, n_boot=50)
    assert bt["mean"].notna().all() and bt["mean_lo"].isna().all()
    # two seeds: intervals again
    two = _frame({("a", H1): np.array([[0.7, 0.5], [0.6, 0.4]])})
    row = S.board(two, n_boot=50).iloc[0]
    assert row["seeds"] == 2 and row["iqm_lo"] < row["iqm_hi"]


def test_a_failed_entry_ranks_below_a_successful_tie():
    """A submission that failed every run scores 0 (π_ref's score): it must not outrank one that really scored 0."""
    runs = _frame({("aaa_crashes", H1): np.zeros((2, 2)), ("zzz_reference", H2): np.zeros((2, 2))},
                  failed={("aaa_crashes", i, t) for i in range(2) for t in range(2)})
    brd = S.board(runs, n_boot=20)
    assert list(brd["iqm"]) == [0.0, 0.0]
    assert list(brd["submission"]) == ["zzz_reference", "aaa_crashes"] and list(brd["failed"]) == [0, 4]


def test_board_by_task_is_the_per_task_mean_with_a_bootstrap_ci():
    a = np.array([[0.2, 0.9], [0.4, 0.7], [0.6, 0.8]])
    runs = _frame({("x", H1): a}, failed={("x", 2, 1)})
    bt = S.board_by_task(runs, n_boot=200, seed=3)
    assert list(bt["task_key"]) == ["task0", "task1"] and list(bt["failed"]) == [0, 1] and list(bt["runs"]) == [3, 3]
    assert bt["mean"].tolist() == pytest.approx([0.4, (0.9 + 0.7 + S.FAILED_SCORE) / 3])
    rng = np.random.default_rng(3)  # the CI by hand: the task's runs redrawn
    col = a[:, 0]
    reps = [col[rng.integers(0, 3, size=3)].mean() for _ in range(200)]
    assert (bt.loc[0, "mean_lo"], bt.loc[0, "mean_hi"]) == pytest.approx(tuple(np.percentile(reps, [2.5, 97.5])))


def test_predictiveness_is_judged_within_task_simpsons_paradox():
    """Across tasks an easy task lifts both the offline metric and the gold of every reward model on it, so the
    pooled Spearman is high; within every task the metric orders the models backwards. The headline must be the
    within-task figure (with its CI), the pooled one beside it."""
    rng = np.random.default_rng(0)
    rows = []
    for t, level in enumerate((0.0, 1.0, 2.0)):
        for seed in (0, 1):
            for m in range(6):
                acc = level + 0.1 * m + 0.01 * rng.normal()
                rows.append({"submission": f"rm{m}", "task_key": f"task{t}", "seed_index": seed, "status": "ok",
                             "acc_onpolicy": acc, "spearman": -0.1 * m + 0.01 * rng.normal(),
                             "tilt_normalized_score": level - 0.05 * m + 0.01 * rng.normal()})
    df = pd.DataFrame(rows)
    pred = S.metric_predictiveness(df, n_boot=300).set_index("metric")
    assert list(pred.index) == ["spearman", "acc_onpolicy"]  # ranked by what they say within a task
    acc = pred.loc["acc_onpolicy"]
    assert acc["rho_pooled"] > 0.5 and acc["rho_pooled_lo"] > 0  # pooled: "acc predicts gold"
    assert acc["rho_within"] == pytest.approx(-1.0) and acc["rho_within_hi"] <= -0.8  # within: it never does
    assert acc["n_groups"] == 6 and acc["n"] == 36
    sp = pred.loc["spearman"]  # orders every task's models right, but knows nothing of the task's level
    assert sp["rho_within"] == pytest.approx(1.0) and abs(sp["rho_pooled"]) < acc["rho_pooled"]
    assert list(pred.columns[:4]) == ["downstream", "rho_within", "rho_within_lo", "rho_within_hi"]


def test_offline_metrics_that_coincide_by_construction_are_shown_once_with_the_reason():
    """acc_onpolicy, acc_uniform and acc_w were identical in every run: acc_w is acc_onpolicy by definition (not
    stored twice); acc_uniform equals it because π_ref is uniform on the suite's tasks (it differs under a
    tilted π_ref), so predictiveness shows one row and says why."""
    from tiltenv import TaskConfig

    small = dict(d=4, K=16, n_labels=200, n_eval_contexts=128, n_norm_contexts=256, link="relu", beta=0.1)
    rows = []
    for seed in (0, 1):
        for n in (20, 80, 320):
            out = S.score_builtin_reward_model("linear", TaskConfig(**{**small, "n_labels": n}, seed=seed),
                                               rloo_queries=0)
            rows.append({"submission": f"linear-{n}", "task_key": "relu", "seed_index": seed, "status": "ok", **out})
    assert "acc_w" not in rows[0] and "acc_w" not in S.RM_OFFLINE_METRICS
    df = pd.DataFrame(rows)
    assert np.allclose(df["acc_uniform"], df["acc_onpolicy"])
    pred = S.metric_predictiveness(df, n_boot=50).set_index("metric")
    assert "acc_uniform" not in pred.index and "hacc_w" not in pred.index
    assert "acc_uniform (π_ref is uniform on these tasks" in pred.loc["acc_onpolicy", "same_as"]
    assert "hacc_w (π_ref is uniform" in pred.loc["hacc", "same_as"]
    tilted = S.score_builtin_reward_model("linear", TaskConfig(**small, ref_eta=1.5, seed=0), rloo_queries=0)
    assert abs(tilted["acc_uniform"] - tilted["acc_onpolicy"]) > 1e-3  # two metrics, equal only by construction


def test_fit_time_is_measured_for_a_submitted_reward_model():
    from leaderboard.runner import score_one

    sub = load_submission(str(ROOT / "leaderboard" / "examples" / "linear_reward_model.py"), track="reward_model")
    (spec,) = TINY_SUITE.runs("dev", track="reward_model")
    res = score_one(sub, spec, Limits(wall_time=120, memory_mb=4096))
    assert res.ok, res.detail
    assert 0.0 < res.fit_time < res.wall_time
    # a built-in entry: the time to build (train) its proxy, not the time to score it as well
    builtin = score_one(load_submission("proxy:mlp"), spec)
    assert builtin.ok and 0.0 < builtin.fit_time < 0.9 * builtin.wall_time


# ================================================================== 7. provenance


def test_each_run_stores_its_versions_device_and_date(tmp_path):
    import datetime as dt

    import torch

    import tiltenv
    from leaderboard.runner import score_one

    (spec,) = TINY_SUITE.runs("dev")
    res = score_one(load_submission("tilt"), spec, Limits(wall_time=120, memory_mb=4096))
    assert (res.tiltenv_version, res.torch_version, res.device) == (tiltenv.__version__, torch.__version__, "cpu")
    st = Store(f"sqlite:///{tmp_path / 'b.db'}")
    assert st.save(res)
    row = st.runs().iloc[0]
    assert (row["tiltenv_version"], row["torch_version"], row["device"]) == (tiltenv.__version__, torch.__version__,
                                                                             "cpu")
    assert row["created"][:10] == dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d")
    brd = S.board(st.runs(), n_boot=10).iloc[0]
    assert (brd["tiltenv_version"], brd["torch_version"], brd["device"]) == (tiltenv.__version__, torch.__version__,
                                                                             "cpu")
    assert brd["scored"] == row["created"][:10]


def test_a_board_whose_every_run_failed_is_a_board_not_an_unknown_metric_error():
    """A first submission that fails on a fresh board: no metric column exists yet; it still has a row (score 0)."""
    runs = pd.DataFrame([{"submission": "x", "code_hash": H1, "task_key": f"task{t}", "seed_index": 0,
                          "status": "failed", "track": "agent", "fit_time": 0.0} for t in range(2)])
    row = S.board(runs, n_boot=10).iloc[0]
    assert (row["submission"], row["iqm"], row["failed"], row["runs"]) == ("x", S.FAILED_SCORE, 2, 2)
    assert S.board_by_task(runs, n_boot=10)["failed"].tolist() == [1, 1]


def test_board_by_task_json_and_csv(tmp_path):
    """`board --by-task --json` carries the ranked board and the per-task table (every digit); `--csv` the per-task
    table; both rank as the printed board does (an incomplete submission is unranked: rank null)."""
    import json

    db = f"sqlite:///{tmp_path / 'b.db'}"
    st = Store(db)
    _save_smoke(st, _sub("full_agent", H1), {"hump": 0.25, "linear": 0.75})
    _save_smoke(st, _sub("linear_only", H2), {"linear": 1.0})
    out = cli("board", "--split", "dev", "--by-task", "--json", db=db)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    board = {r["submission"]: r for r in data["board"]}
    assert board["full_agent"]["rank"] == 1 and board["linear_only"]["rank"] is None  # incomplete: unranked
    cells = {(r["submission"], r["task_key"]): r for r in data["by_task"]}
    assert cells[("full_agent", "hump")]["mean"] == 0.25 and cells[("linear_only", "linear")]["mean"] == 1.0
    assert ("linear_only", "hump") not in cells
    csv = cli("board", "--split", "dev", "--by-task", "--csv", db=db)
    assert csv.returncode == 0 and "task_key" in csv.stdout.splitlines()[0] and "hump" in csv.stdout
