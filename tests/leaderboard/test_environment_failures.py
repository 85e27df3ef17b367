"""A run that fails for the scorer's environment (no folder in /tmp, no jail, no zygote) is not the submission's
failure: it is never stored, the scoring goes on with the other runs and reports it, a rerun scores it.

The faults are injected in ``_Child.__init__`` (the run's start-up in the scorer's process) for exactly one run:
a marker file is removed by the first run that starts, so "one run of two" holds across processes too. The pool
test starts its workers with ``fork`` after the patch (monkeypatching does not reach ``spawn``-started workers).
"""

from __future__ import annotations

import errno
import multiprocessing
import os
import pickle
from pathlib import Path
from unittest import mock

import pytest

from leaderboard.runner import score
from leaderboard.sandbox import jail as _jail, process as _process, zygote as _zygote
from leaderboard.spec import Limits
from leaderboard.store import Store
from leaderboard.submission import load_submission
from leaderboard.suites import Suite, SuiteEntry

TINY = dict(d=4, K=16, n_labels=200, n_eval_contexts=128, n_norm_contexts=256)
SUITE = Suite("tiny", 1, (SuiteEntry("hump", "tiltenv/Hump-v0", {**TINY, "beta": 0.05}, 4096, 4),),
              n_dev_seeds=2, n_test_seeds=1)
LIMITS = Limits(wall_time=120, memory_mb=4096, threads=1)


@pytest.fixture(autouse=True)
def _preflight_done():
    """The scorer's canary run (once per process and settings) before any fault is armed: the faults hit runs."""
    from leaderboard.runner import preflight

    preflight(LIMITS)


def _one_shot(tmp_path: Path, skip: int = 0):
    """A fault that fires for the first run that asks (after ``skip`` starts), in whichever process (os.unlink
    succeeds once)."""
    marker = tmp_path / "fault-armed"
    marker.touch()
    skips = [tmp_path / f"fault-skip-{i}" for i in range(skip)]
    for p in skips:
        p.touch()

    def fire() -> bool:
        for p in skips:
            try:
                os.unlink(p)
                return False
            except FileNotFoundError:
                pass
        try:
            os.unlink(marker)
            return True
        except FileNotFoundError:
            return False

    return fire


def _tmp_full(monkeypatch, tmp_path, skip: int = 0):
    """The run's folder cannot be made: /tmp is full (ENOSPC from tempfile.mkdtemp), for one run."""
    fire, init = _one_shot(tmp_path, skip), _process._Child.__init__

    def broken_init(self, sub, *a, **k):
        if fire():
            with mock.patch.object(_process.tempfile, "mkdtemp",
                                   side_effect=OSError(errno.ENOSPC, "No space left on device")):
                return init(self, sub, *a, **k)
        return init(self, sub, *a, **k)

    monkeypatch.setattr(_process._Child, "__init__", broken_init)


def _runs(store: Store):
    runs = store.runs(suite="tiny", version=1, split="dev")
    return sorted(zip(runs["seed_index"], runs["status"]))


def _check_one_unscored_then_rerun(tmp_path, monkeypatch, summary, store, reason, words, **kw):
    # the neighbour is stored ok; the broken run is not stored at all (not as a failure either)
    assert summary.scored == 1 and summary.failed == 0, summary
    assert len(summary.unscored) == 1, summary.unscored
    un = summary.unscored[0]
    assert un.status == "unscored" and un.reason == reason and words in un.detail, (un.reason, un.detail)
    assert _runs(store) == [(1 - un.spec.seed_index, "ok")]
    assert store.failures(suite="tiny", version=1, split="dev").empty
    # the fault removed, a second scoring scores exactly that run
    monkeypatch.undo()
    again = score([load_submission("tilt")], SUITE, store=store, limits=LIMITS, progress=False, **kw)
    assert (again.scored, again.skipped, again.failed, again.unscored) == (1, 1, 0, [])
    assert _runs(store) == [(0, "ok"), (1, "ok")]


def test_a_full_tmp_is_not_the_submissions_failure_serial(tmp_path, monkeypatch):
    store = Store(f"sqlite:///{tmp_path / 'b.db'}")
    _tmp_full(monkeypatch, tmp_path)
    summary = score([load_submission("tilt")], SUITE, store=store, limits=LIMITS, progress=False)
    _check_one_unscored_then_rerun(tmp_path, monkeypatch, summary, store, "tmp", "No space left on device")


def test_a_jail_that_cannot_start_is_not_the_submissions_failure(tmp_path, monkeypatch):
    if not _jail.available()[0]:
        pytest.skip("no jail on this machine")
    store = Store(f"sqlite:///{tmp_path / 'b.db'}")
    fire, init = _one_shot(tmp_path), _jail.Jail.__init__

    def broken_jail(self, *a, **k):
        if fire():
            raise OSError(errno.EPERM, "the run's jail did not start (bwrap: setting up uid map: Permission denied)")
        return init(self, *a, **k)

    monkeypatch.setattr(_jail.Jail, "__init__", broken_jail)
    summary = score([load_submission("tilt")], SUITE, store=store, limits=LIMITS, progress=False)
    _check_one_unscored_then_rerun(tmp_path, monkeypatch, summary, store, "jail", "setting up uid map")


def test_a_dead_zygote_is_not_the_submissions_failure(tmp_path, monkeypatch):
    store = Store(f"sqlite:///{tmp_path / 'b.db'}")
    fire, request = _one_shot(tmp_path), _zygote._Zygote.request

    def dying(self, req, *a, **k):
        if req.get("op") == "fork" and fire():
            raise RuntimeError("the sandbox zygote exited")
        return request(self, req, *a, **k)

    monkeypatch.setattr(_zygote._Zygote, "request", dying)
    summary = score([load_submission("tilt")], SUITE, store=store, limits=LIMITS, progress=False)
    _check_one_unscored_then_rerun(tmp_path, monkeypatch, summary, store, "zygote", "the sandbox zygote exited")


def test_a_full_tmp_is_not_the_submissions_failure_on_the_pool(tmp_path, monkeypatch):
    """The pool's workers are forked after the patch; the unscored result crosses the process boundary."""
    store = Store(f"sqlite:///{tmp_path / 'b.db'}")
    _tmp_full(monkeypatch, tmp_path)
    get_context = multiprocessing.get_context
    monkeypatch.setattr(multiprocessing, "get_context", lambda method=None: get_context("fork"))
    summary = score([load_submission("tilt")], SUITE, store=store, limits=LIMITS, progress=False,
                    backend="pool", workers=2)
    _check_one_unscored_then_rerun(tmp_path, monkeypatch, summary, store, "tmp", "No space left on device",
                                   backend="pool", workers=2)


def test_the_environment_error_crosses_processes_and_is_never_stored(tmp_path):
    from leaderboard.runner import failure_of
    from leaderboard.spec import ScorerEnvironmentError

    e = pickle.loads(pickle.dumps(ScorerEnvironmentError("cgroup", "cannot create the run's cgroup: EACCES")))
    assert isinstance(e, ScorerEnvironmentError) and (e.reason, e.detail) == ("cgroup", "cannot create the run's cgroup: EACCES")
    with pytest.raises(ValueError, match="reason must be one of"):
        ScorerEnvironmentError("disk", "x")
    spec = SUITE.runs("dev", track="agent")[0]
    res = failure_of(load_submission("tilt"), spec, e)
    assert (res.status, res.reason) == ("unscored", "cgroup")
    with pytest.raises(ValueError):
        Store(f"sqlite:///{tmp_path / 'b.db'}").save(res)


def _cli(tmp_path, monkeypatch, capsys, time_limit: str):
    from leaderboard.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("leaderboard.suites.get_suite", lambda name: SUITE)
    db = f"sqlite:///{tmp_path / 'b.db'}"
    code = main(["score", "tilt", "--db", db, "--no-board", "--no-progress", "--split", "dev", "--time-limit", time_limit])  # own settings: own canary
    out = capsys.readouterr()
    return code, out.out, out.err, Store(db).runs(suite="tiny", version=1, split="dev")


def test_the_cli_lists_unscored_runs_and_exits_3(tmp_path, monkeypatch, capsys):
    _tmp_full(monkeypatch, tmp_path, skip=1)  # the CLI's settings run their own canary first: the fault skips it
    code, out, err, runs = _cli(tmp_path, monkeypatch, capsys, "100")
    assert code == 3, (out, err)
    assert "UNSCORED tilt hump#" in out and "FAILED" not in out, out
    assert "the scorer's environment failed on 1 run(s), not stored (first: tmp — cannot make the run's folder" in err
    assert len(runs) == 1 and (runs["status"] == "ok").all()


def test_the_cli_exits_3_when_the_canary_finds_no_environment(tmp_path, monkeypatch, capsys):
    _tmp_full(monkeypatch, tmp_path)
    code, out, err, runs = _cli(tmp_path, monkeypatch, capsys, "101")
    assert code == 3, (out, err)
    assert "the scorer's environment failed before any run (tmp — cannot make the run's folder" in err, err
    assert runs.empty
