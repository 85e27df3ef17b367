"""The ``tiltenv`` command line: the main job end to end, every README command as pasted, clear user errors."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from leaderboard.store import Store

ROOT = Path(__file__).resolve().parents[2]
TILTENV = Path(sys.executable).with_name("tiltenv")


def _env(db: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TILTENV_DB")}
    env.update(TILTENV_DB=db, COLUMNS="200", PYTHONPATH=str(ROOT), TILTENV_SALT="cli-test-salt")
    return env


def cli(*args: str, db: str, cwd: Path = ROOT, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tiltenv", *args], capture_output=True, text=True, cwd=cwd,
                          env=_env(db), timeout=timeout)


def test_main_job_scores_every_baseline_on_smoke_prints_the_board_and_writes_the_report(tmp_path):
    """What scripts/quickstart.sh runs after the set-up (its last line), on a private database."""
    line = (ROOT / "scripts" / "quickstart.sh").read_text().strip().splitlines()[-1]
    assert line.startswith("tiltenv score --baselines all --suite smoke")
    args = shlex.split(line.replace('"$@"', ""))[1:]
    args = [a if a != "reports/smoke.html" else str(tmp_path / "smoke.html") for a in args]
    db = f"sqlite:///{tmp_path / 'board.db'}"
    out = cli(*args, "--no-progress", db=db)
    assert out.returncode == 0, out.stderr[-3000:]
    from baselines import BASELINES

    for name in BASELINES:
        assert re.search(rf"│\s+\d+ │ {name}\s", out.stdout), (name, out.stdout)
    n = 2 * len(BASELINES)
    assert f"scored {n} runs (0 failed)" in out.stdout
    assert "test — private worlds per submission" in out.stdout  # the main job ranks the test split
    html = (tmp_path / "smoke.html").read_text()
    assert all(name in html for name in BASELINES)
    runs = Store(db).runs(suite="smoke", version=2, split="test")
    assert len(runs) == n and (runs["status"] == "ok").all()
    # the hump entry shows the phenomenon: some optimizer overoptimizes there, none on the linear control
    assert runs.loc[runs.task_key == "hump", "overoptimized"].sum() >= 1
    assert runs.loc[runs.task_key == "linear", "overoptimized"].sum() == 0
    again = cli(*args, "--no-progress", "--no-board", db=db)
    assert again.returncode == 0 and f"scored 0 runs (0 failed), {n} already stored" in again.stdout


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    cmds = []
    for block in blocks:
        for line in block.splitlines():
            line = line.split("  #", 1)[0].strip()
            if line.startswith(".venv/bin/tiltenv"):
                cmds.append(line)
    return cmds


def test_readme_leaderboard_commands_work_as_pasted(tmp_path):
    """Every `.venv/bin/tiltenv ...` line of the README, in a directory laid out like a fresh clone."""
    cmds = _readme_commands()
    assert any(" score " in c for c in cmds) and any(" board" in c for c in cmds) and any(" report" in c for c in cmds)
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    (tmp_path / ".venv" / "bin" / "tiltenv").write_text(f"#!/bin/sh\nexec {sys.executable} -m tiltenv \"$@\"\n")
    (tmp_path / ".venv" / "bin" / "tiltenv").chmod(0o755)
    (tmp_path / "leaderboard").symlink_to(ROOT / "leaderboard")
    env = _env(f"sqlite:///{tmp_path / 'board.db'}")
    for cmd in cmds:
        out = subprocess.run(cmd, shell=True, capture_output=True, text=True,
                             cwd=tmp_path, env=env, timeout=900)
        assert out.returncode == 0, (cmd, out.stdout[-2000:], out.stderr[-2000:])
    assert (tmp_path / "reports" / "smoke.html").exists()
    assert (tmp_path / "exports").is_dir() and any((tmp_path / "exports").iterdir())


@pytest.mark.parametrize("args, words", [
    (("score", "reinforc"), "Did you mean 'reinforce'"),
    (("score", "tilt", "--suite", "smok"), "Did you mean 'smoke'"),
    (("score", "tilt", "--split", "tset"), "Did you mean 'test'"),
    (("score", "tilt", "--backend", "pol"), "Did you mean 'pool'"),
    (("score", "tilt", "--network", "isolated"), "Did you mean 'isolate'"),
    (("score", "tilt", "--tasks", "hmp"), "Did you mean 'hump'"),
    (("score",), "nothing to score"),
    (("score", "no/such/agent.py"), "no/such/agent.py"),
    (("board", "--suite", "quick"), "no results"),
    (("export", "--format", "xlsx"), "csv"),
    (("scor",), "Did you mean 'score'"),
    (("score", "tilt", "--suit", "x"), "--suite"),
])
def test_user_errors_are_one_clear_line_and_exit_2(tmp_path, args, words):
    out = cli(*args, db=f"sqlite:///{tmp_path / 'b.db'}")
    assert out.returncode == 2, (out.stdout, out.stderr)
    assert words in out.stderr, out.stderr
    assert "Traceback" not in out.stderr


def test_console_script_and_module_are_the_same_cli(tmp_path):
    if not TILTENV.exists():
        pytest.skip("the tiltenv console script is not installed next to this interpreter")
    a = subprocess.run([str(TILTENV), "suites"], capture_output=True, text=True, env=_env("sqlite://"))
    b = cli("suites", db="sqlite://")
    assert a.returncode == b.returncode == 0 and a.stdout == b.stdout
    assert "smoke" in a.stdout and "quick" in a.stdout and "full" in a.stdout


def test_board_and_report_rank_the_test_split_and_label_the_dev_split(tmp_path):
    """The test split is the board (the default of score, board and report); the dev split is labelled as no ranking."""
    from leaderboard.suites import DEV_LABEL

    db = f"sqlite:///{tmp_path / 'b.db'}"
    out = cli("score", "tilt", "--suite", "smoke", "--tasks", "linear", "--no-progress", db=db)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "test — private worlds per submission" in out.stdout
    assert len(Store(db).runs(split="test")) == 1 and len(Store(db).runs(split="dev")) == 0
    dev = cli("score", "tilt", "--suite", "smoke", "--tasks", "linear", "--split", "dev", "--no-progress", db=db)
    assert dev.returncode == 0 and DEV_LABEL in " ".join(dev.stdout.split()), dev.stdout
    board = cli("board", "--suite", "smoke", db=db)
    assert board.returncode == 0 and "test — private worlds" in board.stdout and DEV_LABEL not in board.stdout
    rep = cli("report", "--suite", "smoke", "--split", "dev", "--out", str(tmp_path / "r.html"), db=db)
    assert rep.returncode == 0 and DEV_LABEL in (tmp_path / "r.html").read_text()
# ------------------------------------------------------------------------------------------ issue 19: the CLI


def test_suites_imports_neither_torch_nor_pandas_and_shows_k_and_d():
    """`tiltenv suites` took 5-10 s (it imported torch through tiltenv); a static table needs none of it."""
    code = ("import sys, time; t = time.perf_counter(); from leaderboard.cli import main; rc = main(['suites', 'quick']); "
            "print('heavy:', sorted(m for m in ('torch', 'pandas', 'tiltenv') if m in sys.modules)); "
            "print(f'seconds: {time.perf_counter() - t:.2f}'); sys.exit(rc)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env("sqlite://"), cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert "heavy: []" in out.stdout, out.stdout[-500:]
    assert re.search(r"│ hump-beta0\.01\s+│ tiltenv/Hump-v0\s+│ 256\s+│ 16\s+│", out.stdout), out.stdout
    assert re.search(r"│ shang-bandit\s+│ tiltenv/Tabular-v0\s+│ 5\s+│ –\s+│", out.stdout), out.stdout


def test_suite_shapes_match_the_registered_presets():
    import dataclasses

    import tiltenv
    from leaderboard.suites import SUITES, TASK_SHAPES, entry_shape

    for name, (cls, preset, _) in tiltenv.TASKS.items():
        fields = {**{f.name: f.default for f in dataclasses.fields(cls)}, **preset}
        assert TASK_SHAPES[f"tiltenv/{name}-v0"] == (fields.get("K"), fields.get("d")), name
    for s in SUITES.values():
        for e in s.entries:
            if e.task_id == "tiltenv/Tabular-v0":
                continue
            kw = {**{f.name: f.default for f in dataclasses.fields(tiltenv.TASKS[e.task_id[8:-3]][0])},
                  **tiltenv.TASKS[e.task_id[8:-3]][1], **e.kwargs}
            K = kw["V"] ** kw["L"] if e.task_id == "tiltenv/Tokens-v0" else kw.get("K")  # a token task: V^L responses
            assert entry_shape(e) == {"K": K, "d": kw.get("d")}, (s.name, e.key)


BROKEN = '''
class Broken:
    def fit(self, task, budget, checkpoint):
        print("starting to train")
        print("step 1 loss 0.3", flush=True)
        raise RuntimeError("the optimizer diverged at step 3")

    def policy(self, candidates, ref_logp):
        return ref_logp


def make_agent():
    return Broken()
'''

PROBABILITIES = '''
import torch


class Probs:
    def fit(self, task, budget, checkpoint):
        pass

    def policy(self, candidates, ref_logp):
        return torch.softmax(ref_logp, -1)   # probabilities, not log-probabilities


def make_agent():
    return Probs()
'''


@pytest.fixture(scope="module")
def failed_board(tmp_path_factory):
    """A fresh board whose first (and only) submission failed: `score --strict` on it, kept for the other tests."""
    tmp = tmp_path_factory.mktemp("failed-board")
    (tmp / "broken_agent.py").write_text(BROKEN)
    db = f"sqlite:///{tmp / 'board.db'}"
    out = cli("score", str(tmp / "broken_agent.py"), "--tasks", "linear", "--strict", db=db, cwd=tmp)
    return tmp, db, out


def test_score_on_a_fresh_board_whose_first_submission_failed_says_why(failed_board):
    """Was: exit 2 with "metric must be one of the numeric columns"; --strict exited 1 without a word."""
    _, _, out = failed_board
    assert out.returncode == 1, (out.stdout, out.stderr)
    assert "numeric columns" not in out.stdout + out.stderr and "Traceback" not in out.stderr
    # one plain line per run (stdout is a pipe), each failure's reason, the empty board explained, --strict's reason
    assert "broken_agent linear#0: FAILED (error)" in out.stdout
    assert "FAILED broken_agent linear#0: error — [fit] RuntimeError: the optimizer diverged at step 3" in out.stdout
    assert "no successful run on smoke v2" in out.stdout
    assert "--strict: 1 of 1 runs failed" in out.stderr


def test_board_and_report_on_an_all_failed_board(failed_board):
    tmp, db, _ = failed_board
    b = cli("board", db=db, cwd=tmp)
    assert b.returncode == 0 and "no successful run" in b.stdout and "diverged at step 3" in b.stdout, b.stdout + b.stderr
    r = cli("report", db=db, cwd=tmp)
    assert r.returncode == 0, r.stderr
    page = (tmp / "reports" / "smoke-test.html").read_text()
    assert "No successful run yet" in page and "diverged at step 3" in page


def test_failures_lists_reasons_and_tracebacks(failed_board):
    tmp, db, _ = failed_board
    out = cli("failures", db=db, cwd=tmp)
    assert out.returncode == 0, out.stderr
    assert "1 failed runs (1 error)" in out.stdout
    assert "broken_agent linear#0 (test): error — [fit] RuntimeError: the optimizer diverged at step 3" in out.stdout
    assert "Traceback (most recent call last)" in out.stdout and 'in fit' in out.stdout
    short = cli("failures", "--no-tracebacks", "--reason", "error", db=db, cwd=tmp)
    assert short.returncode == 0 and "Traceback" not in short.stdout and "diverged" in short.stdout
    none = cli("failures", "--reason", "timeout", db=db, cwd=tmp)
    assert none.returncode == 0 and "no failed runs matching" in none.stdout
    typo = cli("failures", "--reason", "timeot", db=db, cwd=tmp)
    assert typo.returncode == 2 and "Did you mean 'timeout'" in typo.stderr


def test_failures_shows_the_runs_captured_output(failed_board):
    """The run's own prints (stored with it by the jail, issue 18) are what `failures` shows under the traceback."""
    tmp, db, _ = failed_board
    assert "starting to train" in Store(db).failures()["output"].iloc[0]
    out = cli("failures", db=db, cwd=tmp)
    assert out.returncode == 0, out.stderr
    assert "captured output:" in out.stdout and "| step 1 loss 0.3" in out.stdout, out.stdout


def test_remove_needs_confirmation_off_a_terminal_and_removes_everything(failed_board, tmp_path):
    import shutil

    tmp, _, _ = failed_board
    shutil.copy(tmp / "board.db", tmp_path / "copy.db")
    db = f"sqlite:///{tmp_path / 'copy.db'}"
    ask = cli("remove", "broken_agent", db=db)
    assert ask.returncode == 2 and "add --yes" in ask.stderr
    typo = cli("remove", "broken_agen", "--yes", db=db)
    assert typo.returncode == 2 and "Did you mean 'broken_agent'" in typo.stderr
    out = cli("remove", "broken_agent", "--yes", db=db)
    assert out.returncode == 0 and "and its 1 runs" in out.stdout, out.stdout + out.stderr
    st = Store(db)
    assert st.runs().empty and st.submissions().empty


def test_board_json_and_csv(tmp_path):
    from leaderboard.spec import RunResult
    from leaderboard.suites import get_suite

    db = f"sqlite:///{tmp_path / 'b.db'}"
    st = Store(db)
    spec = get_suite("smoke").runs("dev")[0]

    class Sub:
        def __init__(self, name):
            self.name, self.code_hash, self.ref, self.kind, self.track, self.config = name, name * 8, name, "file", "agent", {}

    for name, score in (("aa", 0.5), ("bb", 0.25)):
        st.add_submission(Sub(name))
        st.save(RunResult(submission=name, code_hash=name * 8, spec=spec, status="ok",
                          metrics={"normalized_score": score, "kl": 1.0 / 3.0}))
    j = cli("board", "--json", "--split", "dev", db=db)
    assert j.returncode == 0, j.stderr
    import json

    rows = json.loads(j.stdout)
    assert [r["submission"] for r in rows] == ["aa", "bb"] and rows[0]["kl"] == 1.0 / 3.0  # every digit
    c = cli("board", "--csv", "--split", "dev", db=db)
    assert c.returncode == 0 and c.stdout.splitlines()[0].startswith("rank,submission,name,code_hash")
    assert len(c.stdout.splitlines()) == 3


def test_check_passes_a_good_submission_and_fails_a_bad_one_with_the_scorers_message(tmp_path):
    good = cli("check", str(ROOT / "leaderboard" / "examples" / "reinforce_agent.py"), "--queries", "512", db="sqlite://")
    assert good.returncode == 0, good.stdout + good.stderr
    assert re.search(r"ok: normalized_score [+-]\d\.\d{3}, \d checkpoints at steps \[0, .*512\], 512 of 512 proxy", good.stdout)
    (tmp_path / "probs.py").write_text(PROBABILITIES)
    bad = cli("check", str(tmp_path / "probs.py"), "--queries", "64", db="sqlite://")
    assert bad.returncode == 1, bad.stdout + bad.stderr
    # the scorer's own message (leaderboard.sandbox.outputs._validate_logp), word for word
    assert re.search(r"FAILED \(invalid_output\): checkpoint 0 \(step \d+\) returned rows that are not normalized "
                     r"log-probabilities: 512 of 512 rows", bad.stdout.replace("\n", " ")), bad.stdout
    assert "probabilities or logits instead of log-probabilities?" in bad.stdout
    assert "the scorer would record this run as 'invalid_output'" in bad.stderr
    # in this process (default) or in the scorer's jail: the same failure, word for word
    jailed = cli("check", str(tmp_path / "probs.py"), "--queries", "64", "--sandbox", db="sqlite://")
    assert jailed.returncode == 1 and "in the scorer's jail" in jailed.stdout, jailed.stdout + jailed.stderr
    failed = [ln for ln in bad.stdout.splitlines() if ln.startswith("FAILED")]
    assert failed and failed == [ln for ln in jailed.stdout.splitlines() if ln.startswith("FAILED")]
    missing = cli("check", str(tmp_path / "nope.py"), db="sqlite://")
    assert missing.returncode == 2 and "nope.py" in missing.stderr and "Traceback" not in missing.stderr


def test_read_only_and_locked_databases_are_one_line_errors(failed_board, tmp_path):
    import sqlite3

    tmp, _, _ = failed_board
    path = tmp / "board.db"
    ro = f"sqlite:///file:{path}?mode=ro&uri=true"
    (tmp_path / "broken_agent.py").write_text(BROKEN)
    out = cli("score", str(tmp_path / "broken_agent.py"), "--tasks", "hump", db=ro)
    assert out.returncode == 2, (out.stdout, out.stderr)
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert "readonly" in out.stderr
    # a second process holds the write lock: the remove waits for the busy timeout, then says so in one line
    import leaderboard.store as S

    lock = sqlite3.connect(str(path))
    lock.execute("BEGIN EXCLUSIVE")
    try:
        env_code = ("import leaderboard.store as S; S.SQLITE_BUSY_TIMEOUT_S = 0.5; from leaderboard.cli import main; "
                    f"import sys; sys.exit(main(['remove', 'broken_agent', '--yes', '--db', 'sqlite:///{path}']))")
        locked = subprocess.run([sys.executable, "-c", env_code], capture_output=True, text=True, env=_env("x"), cwd=ROOT)
    finally:
        lock.rollback()
        lock.close()
    assert locked.returncode == 2, (locked.stdout, locked.stderr)
    assert "Traceback" not in locked.stderr and "locked" in locked.stderr and len(locked.stderr.strip().splitlines()) == 1
    assert S.SQLITE_BUSY_TIMEOUT_S == 60.0


def test_report_and_export_check_they_can_write_before_working(failed_board, tmp_path):
    tmp, db, _ = failed_board
    (tmp_path / "a-file").write_text("")
    for args in (("report", "--out", str(tmp_path / "a-file" / "r.html")),
                 ("export", "--out", str(tmp_path / "a-file" / "exports")),
                 ("score", "tilt", "--report", str(tmp_path / "a-file" / "r.html"))):  # before scoring, not after
        out = cli(*args, db=db)
        assert out.returncode == 2 and "is not a directory" in out.stderr and "Traceback" not in out.stderr, out.stderr
    assert Store(db).runs()["submission"].tolist() == ["broken_agent"]  # nothing was scored
    d = cli("report", "--out", str(tmp_path), db=db)
    assert d.returncode == 2 and "it is a directory" in d.stderr


def test_report_default_path_is_per_suite_and_split(tmp_path):
    out = cli("report", "--suite", "quick", db=f"sqlite:///{tmp_path / 'b.db'}", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "reports" / "quick-test.html").exists() and not (tmp_path / "reports" / "smoke.html").exists()
