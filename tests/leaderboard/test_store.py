"""leaderboard.store: round trips, one transaction per run, idempotent and concurrent saves, resume after
SIGKILL, export, and the same frames on SQLite and PostgreSQL (``store_url`` runs each test on both)."""

from __future__ import annotations

import math
import multiprocessing as mp
import os
import pickle
import random
import signal
import time

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from leaderboard.spec import CheckpointRow, RunResult, RunSpec
from leaderboard.store import CHECKPOINT_FIELDS, KEY_COLUMNS, RUN_COLUMNS, SCHEMA_VERSION, Store, StoreError

HASH_A = "a" * 64
HASH_B = "b" * 64
N_METRICS = 6
N_CKPT = 5
FORK = mp.get_context("fork")


def spec(i: int, *, suite="smoke", version=1, split="dev", track="agent") -> RunSpec:
    return RunSpec(suite=suite, suite_version=version, split=split, task_key=f"task{i // 4}",
                   task_id="tiltenv/Hump-v0", task_kwargs={"beta": 0.01 * (1 + i // 4), "d": 8}, seed_index=i % 4,
                   seed=1000 + i, track=track)  # fmt: skip


def ok_result(i: int, *, code_hash=HASH_A, name="alpha", n_ckpt=N_CKPT, **spec_kw) -> RunResult:
    """A scored run whose numbers depend only on (code_hash, i): metrics m0..m5 and n_ckpt checkpoints."""
    rng = np.random.default_rng([i, int(code_hash[0], 16)])
    metrics = {f"m{j}": float(v) for j, v in enumerate(rng.normal(size=N_METRICS))}
    ckpts = [CheckpointRow(step=2**s, **{f: float(v) for f, v in zip(CHECKPOINT_FIELDS, rng.normal(size=6))})
             for s in range(n_ckpt)]  # fmt: skip
    return RunResult(submission=name, code_hash=code_hash, spec=spec(i, **spec_kw), status="ok", metrics=metrics,
                     checkpoints=ckpts, proxy_queries=1000 + i, fit_time=0.5 + i, wall_time=1.25 + i)  # fmt: skip


def failed_result(i: int, *, code_hash=HASH_A, name="alpha", reason="timeout", detail="killed after 300 s",
                  **spec_kw) -> RunResult:  # fmt: skip
    return RunResult(submission=name, code_hash=code_hash, spec=spec(i, **spec_kw), status="failed", reason=reason,
                     detail=detail, proxy_queries=7, fit_time=0.0, wall_time=300.5)  # fmt: skip


def table_counts(url: str) -> dict[str, int]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return {t: conn.exec_driver_sql(f"SELECT COUNT(*) FROM {t}").scalar_one()
                    for t in ("runs", "metrics", "checkpoints")}  # fmt: skip
    finally:
        engine.dispose()


def assert_complete(store: Store, n_metrics=N_METRICS, n_ckpt=N_CKPT) -> pd.DataFrame:
    """Every stored ok run has all its metrics and checkpoints; no key twice. Returns runs()."""
    runs = store.runs()
    assert not runs.duplicated(KEY_COLUMNS).any()
    ok = runs[runs.status == "ok"]
    metric_cols = [c for c in runs.columns if c not in RUN_COLUMNS]
    assert len(metric_cols) == n_metrics or ok.empty
    assert ok[metric_cols].notna().all().all()
    per_run = store.checkpoints().groupby(KEY_COLUMNS).size()
    assert len(per_run) == len(ok) and (per_run == n_ckpt).all()
    return runs


# ----------------------------------------------------------------------------------------- round trips


def test_round_trip_of_metrics_checkpoints_and_failures(store_url):
    store = Store(store_url)
    special = {"nan": math.nan, "inf": math.inf, "ninf": -math.inf, "third": 0.1 + 0.2, "tiny": 1e-300,
               "big": 1.7976931348623157e308, "overoptimized": np.float64(1.0), "count": np.int64(3)}  # fmt: skip
    ckpts = [
        CheckpointRow(0, gold_value=0.0, proxy_value=0.1, kl=0.0, value_gap=1.5, normalized_score=0.0,
                      reward_variance_policy=math.nan),
        CheckpointRow(64, gold_value=1 / 3, proxy_value=math.inf, kl=2.5e-17, value_gap=-math.inf,
                      normalized_score=math.nan, reward_variance_policy=0.25),
    ]  # fmt: skip
    ok = RunResult("alpha", HASH_A, spec(5), "ok", metrics=special, checkpoints=ckpts, proxy_queries=2**40,
                   fit_time=1.5, wall_time=math.nan)  # fmt: skip
    hostile = "Traceback ...\nValueError: bad, \"quoted\"\x00 nul and a lone surrogate \udc80 here"
    bad = failed_result(2, code_hash=HASH_B, name="beta", reason="error", detail=hostile)
    assert store.save(ok) and store.save(bad)

    runs = store.runs()
    assert list(runs.columns) == RUN_COLUMNS + sorted(special)
    assert list(runs.code_hash) == [HASH_A, HASH_B]
    a, b = runs.iloc[0], runs.iloc[1]
    for name, value in special.items():  # exact, NaN and ±inf included
        assert a[name] == value or (math.isnan(value) and math.isnan(a[name])), name
    assert (a.submission, a.suite, a.suite_version, a.split, a.task_key, a.seed_index) == ("alpha", "smoke", 1, "dev",
                                                                                          "task1", 1)
    assert a.task_id == "tiltenv/Hump-v0" and a.task_kwargs == '{"beta": 0.02, "d": 8}'
    assert (a.track, a.status, a.proxy_queries, a.fit_time) == ("agent", "ok", 2**40, 1.5)
    assert pd.isna(a.reason) and pd.isna(a.detail) and math.isnan(a.wall_time)
    assert b.status == "failed" and b.reason == "error" and b[sorted(special)].isna().all()
    assert b.detail == hostile.replace("\x00", "\\x00").replace("\udc80", "\\udc80")

    cps = store.checkpoints()
    expected = pd.DataFrame([{"submission": "alpha", **dict(zip(KEY_COLUMNS, ok.key())), **vars(c)} for c in ckpts])
    expected = expected.astype({c: "str" for c in ["submission", "code_hash", "suite", "split", "task_key"]})
    pd.testing.assert_frame_equal(cps, expected, check_exact=True)

    fails = store.failures()
    assert len(fails) == 1 and fails.loc[0, "reason"] == "error" and fails.loc[0, "submission"] == "beta"
    assert tuple(fails.loc[0, KEY_COLUMNS]) == bad.key() and fails.loc[0, "wall_time"] == 300.5
    assert store.failures(code_hash=HASH_A).empty

    subs = store.submissions()
    assert list(subs.name) == ["alpha", "beta"] and list(subs.kind) == ["unknown", "unknown"]
    assert str(subs.created.dtype) == "datetime64[us, UTC]"


def test_add_submission_is_idempotent_and_its_record_wins(store_url):
    class Sub:
        name, ref, kind, track, code_hash, config = "reinforce", "reinforce", "baseline", "agent", HASH_A, {"lr": 0.1}

    store = Store(store_url)
    assert store.add_submission(Sub()) is True
    assert store.add_submission(Sub()) is False
    assert store.save(ok_result(0, name="other-name"))  # the recorded submission keeps its name
    subs = store.submissions()
    assert len(subs) == 1 and subs.loc[0, "config"] == {"lr": 0.1} and subs.loc[0, "kind"] == "baseline"
    assert list(store.runs().submission) == ["reinforce"]


def test_empty_frames_have_their_columns(store_url):
    store = Store(store_url)
    assert list(store.runs().columns) == RUN_COLUMNS
    assert list(store.checkpoints().columns) == ["submission", *KEY_COLUMNS, "step", *CHECKPOINT_FIELDS]
    assert store.failures().empty and store.submissions().empty


# ------------------------------------------------------------------------------------- one transaction


def test_save_twice_is_a_noop(store_url):
    store = Store(store_url)
    first = ok_result(0)
    assert store.save(first) is True
    again = ok_result(0)
    again.metrics = {"m0": 123.0}  # a re-score of the same key never overwrites
    again.checkpoints = again.checkpoints[:1]
    assert store.save(again) is False
    assert store.save(failed_result(0)) is False
    assert table_counts(store_url) == {"runs": 1, "metrics": N_METRICS, "checkpoints": N_CKPT}
    assert store.runs().loc[0, "m0"] == first.metrics["m0"]


def test_a_failing_write_leaves_no_partial_run(store_url, monkeypatch):
    store = Store(store_url)
    assert store.save(ok_result(0))
    dup = ok_result(1)
    dup.checkpoints.append(CheckpointRow(dup.checkpoints[-1].step, 0, 0, 0, 0, 0, 0))  # (run, step) twice
    with pytest.raises(StoreError, match=r"could not save run .*task0"):
        store.save(dup)
    assert table_counts(store_url) == {"runs": 1, "metrics": N_METRICS, "checkpoints": N_CKPT}

    def boom(conn, run_id, checkpoints):  # the run row and its metrics are written by now
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(Store, "_insert_checkpoints", staticmethod(boom))
    with pytest.raises(RuntimeError, match="disk on fire"):
        store.save(ok_result(2))
    monkeypatch.undo()
    assert table_counts(store_url) == {"runs": 1, "metrics": N_METRICS, "checkpoints": N_CKPT}
    assert store.done_keys(HASH_A, "smoke", 1, "dev") == {("task0", 0)}
    assert store.save(ok_result(1)) and store.save(ok_result(2))  # nothing left behind blocks a retry
    assert_complete(store)


def test_losing_a_race_on_the_key_returns_false(store_url, monkeypatch):
    """Two savers both see the key missing: the unique constraint refuses the second, which returns False."""
    store = Store(store_url)
    assert store.save(ok_result(0))
    real = Store._key_exists
    calls = []

    def stale_then_real(conn, key):
        calls.append(key)
        return False if len(calls) == 1 else real(conn, key)

    monkeypatch.setattr(Store, "_key_exists", staticmethod(stale_then_real))
    assert store.save(ok_result(0)) is False
    assert len(calls) == 2
    assert table_counts(store_url) == {"runs": 1, "metrics": N_METRICS, "checkpoints": N_CKPT}


@pytest.mark.parametrize(
    "change, error, match",
    [
        (dict(status="done"), ValueError, r"status must be one of \['ok', 'failed'\].*'done'"),
        (dict(status="failed"), ValueError, "reason of a failed run must be one of"),
        (dict(status="failed", reason="timout"), ValueError, "Did you mean 'timeout'"),
        (dict(reason="error"), ValueError, "an ok run has no failure reason"),
        (dict(metrics={"status": 1.0}), ValueError, "metric name 'status' is a column"),
        (dict(metrics={"m": "high"}), TypeError, "metric 'm' must be a number"),
        (dict(metrics={"": 1.0}), TypeError, "metric name must be a non-empty string"),
        (dict(proxy_queries=1.5), TypeError, "proxy_queries must be an integer"),
        (dict(code_hash=""), TypeError, "code_hash must be a non-empty string"),
        (dict(checkpoints=[{"step": 0}]), TypeError, r"checkpoints\[0\] must be a CheckpointRow"),
    ],
)
def test_malformed_results_are_refused_before_any_write(sqlite_url, change, error, match):
    store = Store(sqlite_url)
    r = ok_result(0)
    for k, v in change.items():
        setattr(r, k, v)
    with pytest.raises(error, match=match):
        store.save(r)
    assert table_counts(sqlite_url)["runs"] == 0


def test_bad_split_and_track_name_the_valid_ones(sqlite_url):
    store = Store(sqlite_url)
    with pytest.raises(ValueError, match=r"split must be one of \['dev', 'test'\].*Did you mean 'test'"):
        store.save(ok_result(0, split="tset"))
    with pytest.raises(ValueError, match="Did you mean 'reward_model'"):
        store.runs(track="reward-model")


# --------------------------------------------------------------------------------- resume and filters


def test_done_keys_and_filters(store_url):
    store = Store(store_url)
    for i in (0, 1, 5):
        assert store.save(ok_result(i))
    assert store.save(failed_result(6))  # a failure is a result: resumed past
    assert store.save(ok_result(0, version=2))
    assert store.save(ok_result(0, split="test"))
    assert store.save(ok_result(0, code_hash=HASH_B, name="beta", track="reward_model"))
    assert store.save(ok_result(0, suite="quick"))
    assert store.done_keys(HASH_A, "smoke", 1, "dev") == {("task0", 0), ("task0", 1), ("task1", 1), ("task1", 2)}
    assert store.done_keys(HASH_A, "smoke", 2, "dev") == {("task0", 0)}
    assert store.done_keys(HASH_A, "smoke", 1, "test") == {("task0", 0)}
    assert store.done_keys(HASH_B, "smoke", 1, "dev") == {("task0", 0)}
    assert store.done_keys(HASH_A, "full", 1, "dev") == set()
    assert len(store.runs()) == 8
    assert len(store.runs(suite="smoke", version=1, split="dev")) == 5
    assert len(store.runs(suite="smoke", version=1, split="dev", track="agent")) == 4
    assert list(store.runs(track="reward_model").code_hash) == [HASH_B]
    assert len(store.checkpoints(suite="smoke", version=1, split="dev", code_hash=HASH_A)) == 3 * N_CKPT
    assert len(store.failures(suite="smoke")) == 1 and store.failures(version=2).empty


# ------------------------------------------------------------------------------------------- processes


def _saver(url: str, indices: list[int], out, start) -> None:
    store = Store(url)
    store.done_keys(HASH_A, "smoke", 1, "dev")  # connected: the race starts at the barrier
    start.wait(60)
    out.put(sum(store.save(ok_result(i)) for i in indices))


def _reader_checks(url: str, deadline: float, done) -> int:
    """Read the board while writers write: every snapshot holds only complete runs. Returns snapshots read."""
    store, n = Store(url), 0
    while not done() and time.monotonic() < deadline:
        runs = store.runs()
        metric_cols = [c for c in runs.columns if c not in RUN_COLUMNS]
        assert runs.empty or (len(metric_cols) == N_METRICS and runs[metric_cols].notna().all().all())
        assert not runs.duplicated(KEY_COLUMNS).any()
        n += 1
    return n


def test_concurrent_savers_store_each_key_exactly_once(store_url):
    Store(store_url).close()  # tables exist before the race (first opens are serialized too, but not tested here)
    shared = list(range(20, 40))  # both start on the same 20 keys at the same moment, in the same order
    a, b = shared + list(range(0, 20)), shared + list(range(40, 60))
    out, start = FORK.Queue(), FORK.Barrier(2)
    procs = [FORK.Process(target=_saver, args=(store_url, idx, out, start)) for idx in (a, b)]
    for p in procs:
        p.start()
    snapshots = _reader_checks(store_url, time.monotonic() + 120, lambda: all(not p.is_alive() for p in procs))
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    saved = [out.get(timeout=5) for _ in procs]
    assert sum(saved) == 60  # each key saved by exactly one of them
    runs = assert_complete(Store(store_url))
    assert len(runs) == 60 and snapshots >= 1
    assert table_counts(store_url) == {"runs": 60, "metrics": 60 * N_METRICS, "checkpoints": 60 * N_CKPT}


def _opener(url: str, i: int, start, out) -> None:
    start.wait(60)
    out.put(Store(url).save(ok_result(i)))


def test_first_opens_of_a_new_database_race_safely(store_url):
    """A pool of scorers opening a board that does not exist yet: one creates the tables, none fails."""
    out, start = FORK.Queue(), FORK.Barrier(4)
    procs = [FORK.Process(target=_opener, args=(store_url, i, start, out)) for i in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0] * 4
    assert [out.get(timeout=5) for _ in procs] == [True] * 4
    assert len(assert_complete(Store(store_url))) == 4


def _inherited_saver(store: Store, indices: list[int]) -> None:
    assert all(store.save(ok_result(i)) for i in indices)


def test_a_forked_child_can_use_an_inherited_store(store_url):
    """Parent and forked child save at the same time through one Store object (the child must not talk over
    the parent's pooled connection)."""
    store = Store(store_url)
    assert store.save(ok_result(0)) and len(store.runs()) == 1  # the parent holds a pooled connection now
    p = FORK.Process(target=_inherited_saver, args=(store, range(1, 30)))
    p.start()
    assert all(store.save(ok_result(i)) for i in range(30, 60))
    p.join(60)
    assert p.exitcode == 0
    assert len(assert_complete(store)) == 60


def _doomed_saver(url: str, n: int, stop_at: int, inside) -> None:
    """Save results 0..n-1; inside the transaction of result `stop_at` (run row and metrics written, no
    checkpoints yet), say so and hang until killed."""
    real = Store._insert_checkpoints

    def hang_at(conn, run_id, checkpoints):
        if len(calls) == stop_at:
            inside.set()
            time.sleep(600)
        calls.append(run_id)
        real(conn, run_id, checkpoints)

    calls: list[int] = []
    Store._insert_checkpoints = staticmethod(hang_at)
    store = Store(url)
    for i in range(n):
        store.save(ok_result(i))


def test_sigkill_mid_transaction_leaves_complete_runs_and_resumes(store_url):
    n, stop_at = 24, 13
    inside = FORK.Event()
    p = FORK.Process(target=_doomed_saver, args=(store_url, n, stop_at, inside))
    p.start()
    try:
        assert inside.wait(120), "the writer never reached the transaction to kill"
    finally:
        os.kill(p.pid, signal.SIGKILL)
        p.join(30)
    assert p.exitcode == -signal.SIGKILL

    store = Store(store_url)  # reopen after the kill (SQLite: the WAL holds an uncommitted transaction)
    runs = assert_complete(store)
    assert len(runs) == stop_at  # runs 0..stop_at-1 committed, the one being written is not there at all
    done = store.done_keys(HASH_A, "smoke", 1, "dev")
    assert done == {(spec(i).task_key, spec(i).seed_index) for i in range(stop_at)}
    todo = [i for i in range(n) if (spec(i).task_key, spec(i).seed_index) not in done]
    assert all(store.save(ok_result(i)) for i in todo)  # resume
    assert not any(store.save(ok_result(i)) for i in range(n))  # and a full rerun is a no-op
    assert len(assert_complete(store)) == n
    assert table_counts(store_url) == {"runs": n, "metrics": n * N_METRICS, "checkpoints": n * N_CKPT}


# ------------------------------------------------------------------------------------- export and backends


def _mixed_results() -> list[RunResult]:
    results = [ok_result(i) for i in range(8)] + [ok_result(i, code_hash=HASH_B, name="beta") for i in range(6)]
    results += [failed_result(8, reason="invalid_output", detail='NaN in "policy", row 3\nsecond line')]
    results += [failed_result(6, code_hash=HASH_B, name="beta", reason="memory", detail="over 4096 MiB")]
    results[3].metrics["m2"] = math.nan
    results[4].metrics["m1"] = -math.inf
    results[5].checkpoints[2].kl = math.inf
    results[6].checkpoints[1].value_gap = math.nan
    for i, r in enumerate(results):  # schema 2: how each run was isolated and its own output
        r.sandbox = "trusted" if i % 5 == 0 else "jail"
        r.output = f"epoch {i}\nloss 0.5\n" if r.ok else "Traceback (most recent call last):\nValueError: 3"
    return results


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_export_reads_back_equal(store_url, tmp_path, fmt):
    store = Store(store_url)
    for r in _mixed_results():
        store.save(r)
    paths = store.export(tmp_path / "out", fmt)
    assert [p.name for p in paths] == [f"{t}.{fmt}" for t in ("runs", "checkpoints", "failures", "submissions")]

    def read(path):
        return pd.read_csv(path) if fmt == "csv" else pd.read_parquet(path)

    for path, frame in zip(paths[:3], (store.runs(), store.checkpoints(), store.failures())):
        pd.testing.assert_frame_equal(read(path), frame, check_exact=True)
    subs = read(paths[3])
    want = store.submissions()
    assert list(subs.code_hash) == list(want.code_hash) and list(subs.config) == ["{}", "{}"]
    assert list(pd.to_datetime(subs.created, utc=True)) == list(want.created)


def test_export_format_and_missing_pyarrow(sqlite_url, tmp_path, monkeypatch):
    store = Store(sqlite_url)
    with pytest.raises(ValueError, match=r"fmt must be one of \['csv', 'parquet'\].*Did you mean 'parquet'"):
        store.export(tmp_path / "out", "parket")
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "pyarrow" else real(name, *a))
    with pytest.raises(StoreError, match=r"Parquet export needs pyarrow.*pip install 'tiltenv\[leaderboard\]'"):
        store.export(tmp_path / "out", "parquet")
    assert not (tmp_path / "out").exists()


def test_sqlite_and_postgresql_give_identical_frames(sqlite_url, postgresql_url):
    results = _mixed_results()
    frames = []
    for url, seed in ((sqlite_url, 1), (postgresql_url, 2)):
        store = Store(url)
        order = list(results)
        random.Random(seed).shuffle(order)  # insertion order (hence row ids) differs; frames must not
        assert all(store.save(r) for r in order)
        frames.append((store.runs().drop(columns="created"), store.checkpoints(), store.failures(),
                       store.submissions().drop(columns="created")))  # fmt: skip
    for lite, pg in zip(*frames):
        pd.testing.assert_frame_equal(lite, pg, check_exact=True)
    assert len(frames[0][0]) == len(results) and frames[0][0].m2.isna().sum() == 3  # 1 NaN metric + 2 failed


# ------------------------------------------------------------------------------------ opening a database


def test_default_url_is_a_file_in_the_cwd_and_a_store_pickles(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    store = Store()
    assert (tmp_path / "tiltenv-board.db").is_file() and store.url == f"sqlite:///{tmp_path / 'tiltenv-board.db'}"
    assert store.save(ok_result(0))
    monkeypatch.chdir("/")
    clone = pickle.loads(pickle.dumps(store))
    assert len(clone.runs()) == 1 and Store(str(tmp_path / "tiltenv-board.db")).url == store.url


def test_sqlite_connections_use_wal_busy_timeout_and_foreign_keys(sqlite_url):
    store = Store(sqlite_url)
    with store._engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 10_000


@pytest.mark.parametrize(
    "url, match",
    [
        ("postgres://u@localhost/db", r"unknown database kind 'postgres'.*Did you mean 'postgresql'"),
        ("sqlite+nodriver:///x.db", r"unknown database kind 'sqlite\+nodriver'"),
        ("board", r"not a database URL: 'board'.*sqlite:///"),
        ("sqlite:////no/such/dir/board.db", r"directory '/no/such/dir' does not exist"),
        # refused connection (or, without psycopg2, a missing driver): the password is never shown
        ("postgresql+psycopg2://u:s3cret@127.0.0.1:1/db",
         r"(cannot open the board database|the database driver for) postgresql\+psycopg2://u:\*\*\*@"),
    ],
)
def test_bad_urls_are_named_with_the_supported_forms(url, match):
    with pytest.raises(StoreError, match=match) as err:
        Store(url)
    assert "s3cret" not in str(err.value)


def test_another_schema_version_is_refused(store_url):
    Store(store_url).close()
    engine = sa.create_engine(store_url)
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE tiltenv_schema SET version = 999")
    with pytest.raises(StoreError, match=f"schema version 999, this tiltenv reads version {SCHEMA_VERSION}"):
        Store(store_url)
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE tiltenv_schema")
    with pytest.raises(StoreError, match=r"has tables \[.*'runs'.*\] but no 'tiltenv_schema' table"):
        Store(store_url)
    engine.dispose()


def test_forget_failed_deletes_only_failed_runs(store_url):
    from leaderboard.spec import CheckpointRow, RunResult, RunSpec

    st = Store(store_url)
    spec = lambda i: RunSpec("s", 1, "dev", "t", "tiltenv/Hump-v0", {}, i, 0)  # noqa: E731
    ok = RunResult("a", "h" * 8, spec(0), "ok", metrics={"gold_value": 1.0},
                   checkpoints=[CheckpointRow(0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)])
    bad = RunResult("a", "h" * 8, spec(1), "failed", reason="timeout", detail="slow machine")
    assert st.save(ok) and st.save(bad)
    assert st.forget_failed(suite="s", version=1, split="dev", code_hash="h" * 8) == 1
    assert st.done_keys("h" * 8, "s", 1, "dev") == {("t", 0)}
    assert len(st.checkpoints()) == 1 and st.failures().empty
    assert st.forget_failed() == 0
    assert st.save(bad)  # the key is free again


def test_forget_failed_keeps_to_its_filters(sqlite_url):
    st = Store(sqlite_url)
    failed = [failed_result(0), failed_result(1, code_hash=HASH_B, name="beta"), failed_result(2, version=2),
              failed_result(3, split="test"), failed_result(4, suite="quick"), failed_result(5, track="reward_model")]
    for r in failed:
        assert st.save(r)
    assert st.save(ok_result(6))
    assert st.forget_failed(code_hash="c" * 64) == 0 and st.forget_failed(suite="full") == 0
    assert st.forget_failed(code_hash=HASH_B) == 1
    assert st.forget_failed(version=2) == 1
    assert st.forget_failed(split="test") == 1
    assert st.forget_failed(suite="quick") == 1
    assert st.forget_failed(track="reward_model") == 1
    assert [tuple(k) for k in st.failures()[KEY_COLUMNS].to_numpy().tolist()] == [failed[0].key()]
    assert st.forget_failed() == 1 and st.failures().empty
    assert len(st.runs()) == 1 and len(st.checkpoints()) == N_CKPT  # the ok run and its checkpoints stay
