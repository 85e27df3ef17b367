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
    env.update(TILTENV_DB=db, COLUMNS="200", PYTHONPATH=str(ROOT))
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
    assert "scored 16 runs (0 failed)" in out.stdout
    html = (tmp_path / "smoke.html").read_text()
    assert all(name in html for name in BASELINES)
    runs = Store(db).runs(suite="smoke", version=1, split="dev")
    assert len(runs) == 16 and (runs["status"] == "ok").all()
    # the hump entry shows the phenomenon: some optimizer overoptimizes there, none on the linear control
    assert runs.loc[runs.task_key == "hump", "overoptimized"].sum() >= 1
    assert runs.loc[runs.task_key == "linear", "overoptimized"].sum() == 0
    again = cli(*args, "--no-progress", "--no-board", db=db)
    assert again.returncode == 0 and "scored 0 runs (0 failed), 16 already stored" in again.stdout


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
            assert entry_shape(e) == {"K": kw.get("K"), "d": kw.get("d")}, (s.name, e.key)
