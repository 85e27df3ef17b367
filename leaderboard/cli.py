"""The ``tiltenv`` command line (also ``python -m tiltenv``): envs, suites, train, check, score, board, failures,
remove, report, export.

Examples::

    tiltenv envs                                   # registered task ids and what each isolates
    tiltenv suites smoke                           # the entries of a suite
    tiltenv score --baselines all --suite smoke    # score every built-in baseline on the smoke suite (dev seeds)
    tiltenv score leaderboard/examples/reinforce_agent.py --suite quick
    tiltenv check my_agent.py                      # seconds: the scorer's checks on one task at a tiny budget
    tiltenv board --suite smoke                    # the ranked board with bootstrap CIs (--json / --csv for scripts)
    tiltenv board --by-task --compare my_agent@1a2b3c4d,tilt   # per-task table; P(A > B) for one version of A
    tiltenv failures                               # every failed run: reason, traceback, captured output
    tiltenv remove my_agent --yes                  # a submission and its runs off the board
    tiltenv report --suite smoke                   # reports/smoke-dev.html
    tiltenv export --out exports --format parquet
    tiltenv train grpo --env tiltenv/Hump-v0 --task beta=0.01
    tiltenv sweep --env tiltenv/Hump-v0            # gold-blind tilt and best-of-n sweeps of one task

The board lives in a database: ``--db`` takes any SQLAlchemy URL (default: the SQLite file
``tiltenv-board.db`` in the current directory, or ``$TILTENV_DB``). Every user error prints one line and exits
with status 2; a scoring run with failed runs exits 0 (failures are results, listed on the board and in the
report) unless ``--strict``; runs the scorer's own environment could not host (no folder, cgroup, jail, zygote or
GPU for them) are not stored and make ``score`` exit 3, naming the first reason (score again once it is fixed).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

__all__ = ["app", "main"]

app = typer.Typer(
    name="tiltenv",
    help="tiltenv: exact reward-model overoptimization benchmarks — envs, baselines, scoring, leaderboard.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# A pipe gets rich's 80 columns by default, which wraps the board: use a wide console unless COLUMNS says otherwise.
_WIDTH = int(os.environ.get("COLUMNS", "0") or 0) or (None if sys.stdout.isatty() else 200)
console = Console(width=_WIDTH)
err = Console(stderr=True, width=_WIDTH)

DB_HELP = "SQLAlchemy URL of the board (default: $TILTENV_DB or sqlite:///tiltenv-board.db)."


class UserError(Exception):
    """A mistake in the command line: printed as one line, exit status 2."""


def _fail(msg: str, code: int = 2) -> None:
    err.print(f"[bold red]error:[/] {msg}", highlight=False, markup=True, soft_wrap=True)
    raise typer.Exit(code)


def _db(url: str | None) -> str:
    if url and "://" in url:
        try:
            import sqlalchemy as sa

            if sa.engine.make_url(url).password:
                err.print("[bold yellow]warning:[/] the --db URL holds a password, which every process can read in "
                          "/proc/<pid>/cmdline: pass the URL in $TILTENV_DB, or keep the password in ~/.pgpass "
                          "(PGPASSFILE), instead.", highlight=False)
        except Exception:  # noqa: BLE001 - a bad URL is reported by the store
            pass
    return url or os.environ.get("TILTENV_DB") or "sqlite:///tiltenv-board.db"


def _store(url: str | None):
    from leaderboard.store import Store

    return Store(_db(url))


def _parse_kv(items: list[str] | None, what: str) -> dict:
    from baselines.run import _coerce

    out = {}
    for item in items or []:
        if "=" not in item:
            raise UserError(f"{what} {item!r} must look like key=value.")
        k, v = item.split("=", 1)
        out[k.strip()] = _coerce(v)
    return out


def _guard(fn):
    """Turn user errors (ValueError/TypeError/UserError/RuntimeError raised by validation) into one line, exit 2."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except typer.Exit:
            raise
        except (UserError, ValueError, TypeError, FileNotFoundError, RuntimeError) as exc:
            _fail(str(exc))
        except OSError as exc:  # an unwritable report / export path (found before the work, see _check_writable)
            _fail(f"{exc.strerror or exc}: {exc.filename}" if exc.filename else str(exc))
        except Exception as exc:
            if type(exc).__module__.startswith("sqlalchemy"):  # read-only or locked board: one line, no traceback
                _fail(f"the board database refused the operation: {_db_message(exc)}")
            raise
        except KeyboardInterrupt:
            _fail("interrupted (results stored so far are kept; rerun to resume).", 130)

    return wrapper


def _db_message(exc: Exception) -> str:
    """The driver's message of a SQLAlchemy error, on one line, with what to do for the usual two."""
    msg = " ".join(str(getattr(exc, "orig", None) or exc).split())
    if "readonly" in msg or "read-only" in msg or "read only" in msg:
        msg += " (the database file or its directory is not writable: use --db to point at a writable copy)"
    elif "locked" in msg:
        msg += " (another process holds the write lock; retry when it has finished)"
    return msg


def _check_writable(path: Path, *, directory: bool = False) -> Path:
    """Fail now, before any work, when ``path`` (a file, or with ``directory`` a folder) cannot be written."""
    import tempfile

    path = Path(path)
    folder = path if directory else path.parent
    probe_dir = folder
    while not probe_dir.exists():  # the nearest existing ancestor must let us create the missing folders
        probe_dir = probe_dir.parent
    if not probe_dir.is_dir():
        raise UserError(f"cannot write {str(path)!r}: {str(probe_dir)!r} is not a directory.")
    if not directory and path.is_dir():
        raise UserError(f"cannot write {str(path)!r}: it is a directory; give a file name (e.g. {str(path / 'report.html')!r}).")
    try:
        with tempfile.NamedTemporaryFile(dir=probe_dir, prefix=".tiltenv-write-check-"):
            pass
    except OSError as exc:
        raise UserError(f"cannot write {str(path)!r}: {str(probe_dir)!r} is not writable ({exc.strerror}).") from None
    return path


def _rich_table(df, title: str | None = None, floats: str = "{:.3f}") -> Table:
    import math

    t = Table(title=title, header_style="bold", show_lines=False)
    for c in df.columns:
        t.add_column(str(c), justify="right" if df[c].dtype.kind in "fiu" or c == "rank" else "left")
    for _, row in df.iterrows():
        cells = []
        for v in row.tolist():
            if isinstance(v, float):
                cells.append("" if math.isnan(v) else floats.format(v))
            else:
                cells.append(str(v))
        t.add_row(*cells)
    return t


@app.command()
@_guard
def envs() -> None:
    """List the registered task ids and what each isolates."""
    import pandas as pd

    import tiltenv

    df = pd.DataFrame([{"id": f"tiltenv/{name}-v0", "what it isolates": what} for name, (_c, _p, what) in tiltenv.TASKS.items()])
    console.print(_rich_table(df))


@app.command()
@_guard
def suites(name: Annotated[Optional[str], typer.Argument(help="a suite to show in full")] = None) -> None:
    """List the suites, or the entries of one suite (K and d of each task, budget, seeds)."""
    # No pandas / torch / tiltenv import here: a static table prints in well under a second (issue 19).
    from leaderboard.suites import SUITES, get_suite

    if name is None:
        rows = [{"suite": s.name, "version": s.version, "tasks": len(s.entries), "dev seeds": s.n_dev_seeds,
                 "test seeds": s.n_test_seeds, "digest": s.digest(), "what": s.description} for s in SUITES.values()]
        console.print(_plain_table(rows))
        return
    s = get_suite(name)
    rows = [{"task": e.key, "env id": e.task_id, "K": _entry_dim(e, "K"), "d": _entry_dim(e, "d"),
             "kwargs": ", ".join(f"{k}={v}" for k, v in e.kwargs.items()), "proxy queries": e.proxy_queries,
             "checkpoints": e.n_checkpoints, "dev seeds": s.n_dev_seeds, "test seeds": s.n_test_seeds, "what": e.what}
            for e in s.entries]
    console.print(_plain_table(rows, title=f"{s.name} v{s.version} ({s.digest()}): {s.description}"))


def _entry_dim(entry, field: str) -> str:
    """K or d of a suite entry: its kwargs, else the registered preset (read from leaderboard.suites' table of
    presets, no tiltenv import), else '–' (a tabular task has K arms and no d)."""
    from leaderboard.suites import entry_shape

    v = entry_shape(entry).get(field)
    return "–" if v is None else str(v)


def _plain_table(rows: list[dict], title: str | None = None) -> Table:
    t = Table(title=title, header_style="bold")
    if not rows:
        return t
    for c in rows[0]:
        t.add_column(str(c), justify="right" if isinstance(rows[0][c], int) else "left")
    for r in rows:
        t.add_row(*[str(v) for v in r.values()])
    return t


@app.command()
@_guard
def train(
    baseline: Annotated[str, typer.Argument(help="a built-in baseline (tiltenv train --list shows them)")] = "",
    env: Annotated[str, typer.Option(help="registered env id")] = "tiltenv/SingleIndex-v0",
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="agent config field KEY=VALUE")] = None,
    task: Annotated[Optional[list[str]], typer.Option(help="task parameter KEY=VALUE (a gym.make kwarg)")] = None,
    queries: Annotated[int, typer.Option(help="proxy query budget")] = 65_536,
    checkpoints: Annotated[int, typer.Option(help="log-spaced checkpoints")] = 12,
    seed: Annotated[Optional[int], typer.Option(help="agent seed")] = None,
    threads: Annotated[int, typer.Option(help="torch threads")] = 1,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    list_: Annotated[bool, typer.Option("--list", help="list baselines and their config fields")] = False,
) -> None:
    """Train one built-in baseline on one task and print its exact gold metrics and trajectory."""
    import dataclasses

    import torch

    from baselines import BASELINES, TrainBudget
    from baselines.run import format_result
    from baselines.run import train as run_train

    if list_:
        for name, (_a, cfg) in BASELINES.items():
            console.print(f"[bold]{name}[/] ({cfg.__name__})", highlight=False)
            for f in dataclasses.fields(cfg):
                default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
                console.print(f"    {f.name} = {default!r}: {f.metadata.get('help', '')}", highlight=False, markup=False)
        return
    if not baseline:
        raise UserError(f"a baseline name is required, one of {sorted(BASELINES)} (or --list).")
    torch.set_num_threads(threads)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    unit = "pairs" if baseline == "dpo" else "proxy queries"
    with Progress(TextColumn(f"[bold]training {baseline}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn(unit), TimeElapsedColumn(), console=err, transient=True,
                  disable=as_json or not err.is_terminal) as prog:
        bar = prog.add_task("train", total=queries)
        res = run_train(baseline, env, overrides=set_ or [], env_kwargs=_parse_kv(task, "--task"),
                        budget=TrainBudget(proxy_queries=queries, n_checkpoints=checkpoints), seed=seed,
                        on_checkpoint=lambda step: prog.update(bar, completed=min(step, queries)))
    if as_json:
        print(json.dumps({"baseline": res.baseline, "env_id": res.env_id, "metrics": res.metrics,
                          "trajectory": res.trajectory, "fit_time": res.fit_time}, indent=2, default=str))
    else:
        print(format_result(res))


@app.command()
@_guard
def score(
    submissions: Annotated[Optional[list[str]], typer.Argument(
        help="submissions: a built-in baseline name, module:make_agent, or path/to/agent.py[:factory]")] = None,
    suite: Annotated[str, typer.Option(help="suite name (tiltenv suites)")] = "smoke",
    split: Annotated[str, typer.Option(help="test (the board: private worlds per submission, from the scorer's secret "
                                            "salt) or dev (public seeds, anyone can rebuild these worlds; not a ranking)")] = "test",
    baselines_: Annotated[Optional[str], typer.Option(
        "--baselines", help="also score built-in entries: 'all' or a comma-separated list (agents: baselines; "
                            "reward models: the library's proxies linear, mlp, two_stage, ensemble)")] = None,
    track: Annotated[str, typer.Option(help="agent or reward_model")] = "agent",
    name: Annotated[Optional[str], typer.Option(help="display name (one submission only)")] = None,
    tasks: Annotated[Optional[str], typer.Option(help="comma-separated task keys of the suite (default all)")] = None,
    seeds: Annotated[Optional[int], typer.Option(help="score only the first N seeds of the split")] = None,
    db: Annotated[Optional[str], typer.Option(help=DB_HELP)] = None,
    backend: Annotated[str, typer.Option(help="serial, pool (local processes) or ray")] = "serial",
    workers: Annotated[int, typer.Option(help="parallel runs (pool / ray)")] = 2,
    device: Annotated[str, typer.Option(help="cpu or cuda (the submissions' training device)")] = "cpu",
    time_limit: Annotated[float, typer.Option(help="wall-time limit of one run, seconds")] = 300.0,
    memory_mb: Annotated[int, typer.Option(help="memory limit of one run, MiB")] = 4096,
    threads: Annotated[int, typer.Option(help="torch threads per run")] = 1,
    network: Annotated[str, typer.Option(help="isolate: each run in its own empty network namespace where the kernel "
                                              "allows it (else a warning); require: refuse to score without that; "
                                              "allow: runs share the scorer's network")] = "isolate",
    sandbox: Annotated[str, typer.Option(help="jail: each run in its own bubblewrap jail, cgroup and seccomp filter "
                                              "(refuses where jails are unavailable); trusted: no jail, for your own "
                                              "code and the built-in baselines only (runs are marked trusted)")] = "jail",
    disk_mb: Annotated[int, typer.Option(help="size of each private tmpfs of a run (its folder and /tmp, /dev/shm), MiB")] = 1024,
    board_: Annotated[bool, typer.Option("--board/--no-board", help="print the board afterwards")] = True,
    report: Annotated[Optional[Path], typer.Option(help="also write the HTML report here")] = None,
    strict: Annotated[bool, typer.Option(help="exit 1 if any run failed")] = False,
    retry_failed: Annotated[bool, typer.Option(help="score again the runs of these submissions that failed before")] = False,
    progress: Annotated[bool, typer.Option(help="progress bar")] = True,
) -> None:
    """Score submissions on a suite: each run in its own sandboxed process, every result stored as it arrives."""
    from baselines import BASELINES
    from leaderboard.runner import score as run_score
    from leaderboard.spec import Limits
    from leaderboard.submission import load_submission
    from leaderboard.suites import get_suite

    # every option first: a setting no run can live with must never become a submission's stored failure
    _check_score_options(split=split, track=track, backend=backend, workers=workers, device=device,
                         time_limit=time_limit, memory_mb=memory_mb, threads=threads, network=network, seeds=seeds)
    s = get_suite(suite)
    task_keys = [t.strip() for t in tasks.split(",")] if tasks else None
    for k in task_keys or []:
        s.entry(k)  # an unknown task key: the closest one suggested
    n_total = s.n_dev_seeds if split == "dev" else s.n_test_seeds
    if seeds is not None and seeds > n_total:
        raise UserError(f"--seeds must be in [1, {n_total}] for the {split} split of {s.name} (got {seeds}).")
    refs = list(submissions or [])
    if baselines_:
        if track == "reward_model":  # the built-in entries of the reward-model track are the library's proxies
            from leaderboard.scoring import builtin_reward_models
            from leaderboard.submission import PROXY_PREFIX

            names = list(builtin_reward_models()) if baselines_ == "all" else [b.strip() for b in baselines_.split(",") if b.strip()]
            refs += [n if n.startswith(PROXY_PREFIX) else PROXY_PREFIX + n for n in names]
        else:
            if baselines_ == "all":  # the token-level entries too where the suite has a token task
                from baselines import TOKEN_BASELINES
                from leaderboard.suites import task_kind

                tokens = any(task_kind(e.task_id) == "tokens" for e in s.entries)
                refs += sorted(BASELINES) + (sorted(TOKEN_BASELINES) if tokens else [])
            else:
                refs += [b.strip() for b in baselines_.split(",") if b.strip()]
    if not refs:
        raise UserError("nothing to score: name a submission or use --baselines all.")
    if name is not None and len(refs) != 1:
        raise UserError("--name needs exactly one submission.")
    subs = [load_submission(r, name=name, track=track) for r in refs]
    if report is not None:  # an unwritable --report fails now, not after the scoring
        _check_writable(Path(report))
    limits = Limits(wall_time=time_limit, memory_mb=memory_mb, threads=threads, network=network, sandbox=sandbox,
                    disk_mb=disk_mb)
    if sandbox == "trusted":
        err.print("[bold yellow]warning:[/] --sandbox trusted: runs are NOT jailed; score only your own code and the "
                  "built-in baselines this way (the runs are marked 'trusted' on the board).", highlight=False)
    st = _store(db)
    _name_notes(st, subs, renamed=name is not None)
    if retry_failed:
        n = sum(st.forget_failed(suite=s.name, version=s.version, split=split, code_hash=sub.code_hash) for sub in subs)
        console.print(f"retrying {n} failed runs", highlight=False)
    plain = not console.is_terminal  # a pipe or a log file: one plain line per run instead of a progress bar
    from leaderboard.spec import ScorerEnvironmentError

    try:
        summ = run_score(subs, s, store=st, split=split, tasks=task_keys, n_seeds=seeds,
                         backend=backend, workers=workers, limits=limits, device=device,
                         progress=progress and not plain, on_result=_print_run_line if plain and progress else None)
    except ScorerEnvironmentError as e:  # the canary (before any run) found no folder, jail, zygote ... for a run
        err.print(f"the scorer's environment failed before any run ({e.reason} — {_first_line(e.detail)}); nothing "
                  f"was scored or stored; fix it and score again; exit status 3.",
                  highlight=False, markup=False, soft_wrap=True)
        raise typer.Exit(3) from None
    console.print(f"scored {summ.scored} runs ({summ.failed} failed), {summ.skipped} already stored, "
                  f"{summ.wall_time:.1f} s", highlight=False)
    for res in summ.results:
        if not res.ok:
            console.print(f"  FAILED {res.submission} {res.spec.task_key}#{res.spec.seed_index}: {res.reason} — "
                          f"{_first_line(res.detail)}", highlight=False, markup=False, soft_wrap=True)
    if summ.failed:
        console.print("(tiltenv failures shows each failure's traceback)", highlight=False, markup=False)
    if board_:
        _show_board(st, s.name, s.version, split, track)
    if report is not None:
        _write_report(st, s, split, report)
    if summ.unscored:
        for res in summ.unscored:
            console.print(f"  UNSCORED {res.submission} {res.spec.task_key}#{res.spec.seed_index}: {res.reason} — "
                          f"{_first_line(res.detail)}", highlight=False, markup=False, soft_wrap=True)
        first = summ.unscored[0]
        err.print(f"the scorer's environment failed on {len(summ.unscored)} run(s), not stored (first: {first.reason} "
                  f"— {_first_line(first.detail)}); fix it and score again; exit status 3.",
                  highlight=False, markup=False, soft_wrap=True)
        raise typer.Exit(3)
    if strict and summ.failed:
        err.print(f"--strict: {summ.failed} of {summ.scored} runs failed (listed above); exit status 1.",
                  highlight=False, markup=False)
        raise typer.Exit(1)


def _print_run_line(res) -> None:
    """One plain line per finished run (stdout is not a terminal): a log reads as a list, not a redrawn bar."""
    key = "normalized_score" if res.spec.track == "agent" else "tilt_normalized_score"
    what = f"{key} {res.metrics.get(key, float('nan')):+.3f}" if res.ok else f"FAILED ({res.reason})"
    print(f"{res.submission} {res.spec.task_key}#{res.spec.seed_index}: {what} ({res.wall_time:.1f} s)", flush=True)



def _check_score_options(*, split, track, backend, workers, device, time_limit, memory_mb, threads, network,
                         seeds) -> None:
    """Every scorer option, before anything runs or is stored: one line naming the value and the valid range."""
    import math

    from leaderboard.runner import BACKENDS, ScorerSettingsError, check_device
    from leaderboard.spec import NETWORK_MODES, SPLITS, TRACKS
    from tiltenv._validation import suggest

    for flag, value, choices in (("--split", split, SPLITS), ("--track", track, TRACKS), ("--backend", backend, BACKENDS),
                                 ("--network", network, NETWORK_MODES)):
        if value not in choices:
            raise UserError(f"{flag} must be one of {', '.join(choices)} (got {value!r})." + suggest(str(value), choices))
    if not (math.isfinite(time_limit) and time_limit > 0):
        raise UserError(f"--time-limit must be a finite number of seconds > 0 (got {time_limit:g}).")
    for flag, value in (("--memory-mb", memory_mb), ("--threads", threads), ("--workers", workers), ("--seeds", seeds)):
        if value is not None and value < 1:
            raise UserError(f"{flag} must be an integer >= 1 (got {value}).")
    try:
        check_device(device)
    except ScorerSettingsError as e:
        raise UserError(f"--{e}") from None


def _name_notes(st, subs, *, renamed: bool) -> None:
    """Say what the board will call each submission: an explicit --name renames code already on the board (never
    silently ignored); a name another code already uses makes both versions name@hash."""
    from leaderboard.scoring import short_hash

    known = st.submissions()
    by_hash = dict(zip(known["code_hash"], known["name"]))
    for sub in subs:
        old = by_hash.get(sub.code_hash)
        if old is not None and old != sub.name:
            if renamed:
                st.rename_submission(sub.code_hash, sub.name)
                console.print(f"renamed {old!r} to {sub.name!r} (code {short_hash(sub.code_hash)}, already on the board)",
                              highlight=False)
            else:
                console.print(f"note: this code ({short_hash(sub.code_hash)}) is already on the board as {old!r}; its runs "
                              f"keep that name (--name {sub.name} renames it)", highlight=False)
            continue
        others = sorted(short_hash(h) for h, n in by_hash.items() if n == sub.name and h != sub.code_hash)
        if others:
            console.print(f"note: {sub.name!r} is already on the board with other code ({', '.join(others)}); each version "
                          f"is shown as {sub.name}@<code hash>: this one is {sub.name}@{short_hash(sub.code_hash)}",
                          highlight=False)


def _expected(s, version: int, split: str, track: str):
    """The (task, seed index) pairs a complete submission has on this suite version, split and track (None for a
    version other than the current one, whose entries this tiltenv does not know: then the board's own union)."""
    from leaderboard.suites import MULTI_OBJECTIVE_TASKS, NO_PREFERENCE_TASKS

    if version != s.version:
        return None
    entries = [e for e in s.entries
               if track != "reward_model" or e.task_id not in NO_PREFERENCE_TASKS + MULTI_OBJECTIVE_TASKS]
    n = s.n_dev_seeds if split == "dev" else s.n_test_seeds
    return [(e.key, i) for e in entries for i in range(n)]


def _board_runs(st, suite: str, version: int, split: str, track: str):
    runs = st.runs(suite=suite, version=version, split=split, track=track)
    if runs.empty:
        raise UserError(f"no results for suite {suite!r} v{version} ({split}, {track}) in this database; run `tiltenv score` first.")
    return runs


def _show_board(st, suite: str, version: int, split: str, track: str = "agent", by_task: bool = False):
    from leaderboard import scoring
    from leaderboard.suites import get_suite, split_label

    runs = _board_runs(st, suite, version, split, track)
    if "status" in runs.columns and not (runs["status"] == "ok").any():
        _no_successful_runs(st, suite, version, split, track, len(runs))
        return runs, None
    b = scoring.board(runs, expected=_expected(get_suite(suite), version, split, track))
    view, provenance = _board_view(b, track)
    console.print(_rich_table(view, title=f"{suite} v{version} — {split_label(split)} — ranked by IQM of {b['metric'].iloc[0]}"))
    console.print(BOARD_LEGEND[track], highlight=False)
    if provenance:
        console.print(f"scored with {provenance}", highlight=False)
    n_inc = int((~b["complete"]).sum())
    if n_inc:
        console.print(f"{n_inc} submission(s) without a result for every task × seed of the suite ({int(b['expected_runs'].iloc[0])} "
                      "runs) are listed below the ranking, unranked (score them on the whole suite to rank them).",
                      highlight=False)
    na = b[b["not_applicable"] > 0] if "not_applicable" in b.columns else b.iloc[:0]
    if len(na):
        console.print(f"not applicable, unranked (their scores are over the tasks of their kind only): "
                      f"{', '.join(na['submission'])} — built-in baselines of another kind of task (token-level "
                      "agents on bandit tasks; `tiltenv failures --reason not_applicable` says which)", highlight=False)
    for name, g in b.groupby("name", sort=True):
        if len(g) > 1:
            console.print(f"{name!r} has {len(g)} versions (different code) on this board: "
                          f"{', '.join(g['submission'])}", highlight=False)
    fails = st.failures(suite=suite, version=version, split=split, track=track)
    if len(fails) and "reason" in fails.columns:
        fails = fails[fails["reason"] != "not_applicable"]  # listed above, not failures of the submission
    if len(fails):
        console.print(f"[yellow]{len(fails)} failed runs[/] (tiltenv report lists them with their reasons)")
    if by_task:
        console.print(_rich_table(_by_task_view(scoring.board_by_task(runs), b),
                                  title=f"per task: mean {b['metric'].iloc[0]} over seeds [95% bootstrap CI]"))
    return runs, b


def _by_task_view(bt, b):
    """Submissions (board order) × tasks: mean [CI] per cell, "n/a (1 seed)" without a CI, failed runs counted."""
    import math

    import pandas as pd

    cells = {}
    for r in bt.itertuples(index=False):
        ci = f"[{r.mean_lo:.3f}, {r.mean_hi:.3f}]" if not math.isnan(r.mean_lo) else f"n/a ({r.runs} seed)"
        txt = "" if math.isnan(r.mean) else f"{r.mean:.3f} {ci}"
        if r.failed:
            txt += f" ({r.failed} failed)"
        if getattr(r, "not_applicable", 0) and r.not_applicable == r.runs:
            txt = "not applicable"
        cells[(r.submission, r.task_key)] = txt
    tasks = sorted(bt["task_key"].unique())
    rows = []
    for r in b.itertuples(index=False):
        rows.append({"rank": "—" if pd.isna(r.rank) else str(int(r.rank)), "submission": r.submission,
                     **{t: cells.get((r.submission, t), "") for t in tasks}})
    return pd.DataFrame(rows, columns=["rank", "submission", *tasks])


def _print_board_data(st, suite: str, version: int, split: str, track: str, fmt: str, both: bool = False,
                      by_task: bool = False) -> None:
    """``board --json`` / ``--csv``: scoring.board's frame, every column, for scripts (no table, no legend). With
    ``--by-task``: JSON is ``{"board": [...], "by_task": [...]}`` (scoring.board_by_task's rows); CSV is the per-task
    table alone (one table a CSV stream)."""
    from leaderboard import scoring
    from leaderboard.suites import get_suite

    if both:
        raise UserError("--json and --csv are exclusive: choose one.")
    runs = st.runs(suite=suite, version=version, split=split, track=track)
    if runs.empty:
        raise UserError(f"no results for suite {suite!r} v{version} ({split}, {track}) in this database; run `tiltenv score` first.")
    if "status" in runs.columns and not (runs["status"] == "ok").any():
        raise UserError(f"no successful run on {suite!r} v{version} ({split}, {track}): all {len(runs)} stored runs failed "
                        "(tiltenv failures lists why).")
    b = scoring.board(runs, expected=_expected(get_suite(suite), version, split, track))  # as the table ranks
    per_task = scoring.board_by_task(runs) if by_task else None
    if fmt == "json":
        import math

        import pandas as pd

        def clean(v):  # numpy scalars to Python, NaN / inf / NA to null (strict JSON), floats with every digit
            v = v.item() if hasattr(v, "item") and not isinstance(v, pd.Timestamp) else v
            if v is None or isinstance(v, (str, bool, int)):
                return v
            if isinstance(v, float):
                return v if math.isfinite(v) else None
            return None if pd.isna(v) else str(v)  # pd.NA (an unranked row's rank), timestamps as text

        def records(df):
            return [{k: clean(v) for k, v in r.items()} for r in df.to_dict("records")]

        out = records(b) if per_task is None else {"board": records(b), "by_task": records(per_task)}
        print(json.dumps(out, indent=2))
    else:
        print((b if per_task is None else per_task).to_csv(index=False), end="")


def _no_successful_runs(st, suite: str, version: int, split: str, track: str, n: int) -> None:
    """Every stored run of this board failed: say so, with each failure's reason, instead of an empty ranking."""
    console.print(f"[yellow]no successful run[/] on {suite} v{version} ({split}, {track}) yet: all {n} stored runs "
                  "failed, so there is nothing to rank. Their reasons:", highlight=False)
    _print_failures(st.failures(suite=suite, version=version, split=split, track=track), tracebacks=False)
    console.print("`tiltenv failures` shows the tracebacks; `tiltenv score --retry-failed` scores them again.",
                  highlight=False, markup=False)


def _first_line(text) -> str:
    text = "" if text is None or (isinstance(text, float) and text != text) else str(text)
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[0] if lines else ""


def _print_failures(fails, *, tracebacks: bool, output: bool = False) -> None:
    """One line per failed run (submission, task#seed, reason: first line of the detail); with ``tracebacks`` the
    whole detail, and with ``output`` the run's captured output where the board stores it (an ``output`` column)."""
    from leaderboard.spec import FAILURE_REASONS

    for r in fails.to_dict("records"):
        what = FAILURE_REASONS.get(r.get("reason"), "")
        console.print(f"{r['submission']} {r['task_key']}#{r['seed_index']} ({r['split']}): {r['reason']} — "
                      f"{_first_line(r.get('detail')) or what}", highlight=False, markup=False, soft_wrap=True)
        if tracebacks:
            rest = str(r.get("detail") or "").strip().splitlines()[1:]
            for ln in rest:
                console.print("    " + ln, highlight=False, markup=False, soft_wrap=True)
        if output:
            text = r.get("output")
            text = "" if text is None or (isinstance(text, float) and text != text) else str(text).rstrip()
            console.print("    captured output:" + ("" if text else " (none)"), highlight=False, markup=False)
            for ln in text.splitlines():
                console.print("    | " + ln, highlight=False, markup=False, soft_wrap=True)


#: Board columns shown in the terminal: (header, column of scoring.board, format).
_BOARD_VIEW = {
    "agent": (("value gap", "value_gap", "{:.3f}"), ("KL", "kl", "{:.3f}"), ("KL-matched gap", "kl_matched_gap", "{:.3f}"),
              ("reward var", "reward_variance_policy", "{:.3f}"), ("proxy-gold", "proxy_gold_gap", "{:+.3f}"),
              ("overopt.", "overoptimization_rate", "{:.0%}"), ("fit s", "median_fit_time", "{:.1f}")),
    "reward_model": (("acc on", "acc_onpolicy", "{:.3f}"), ("acc off", "acc_offpolicy", "{:.3f}"),
                     ("spearman", "spearman", "{:.3f}"), ("BoN peak gold", "bon_peak_gold", "{:.3f}"),
                     ("tilt gap", "tilt_value_gap", "{:.3f}"), ("RLOO score", "rloo_normalized_score", "{:.3f}"),
                     ("overopt.", "overoptimization_rate", "{:.0%}")),
}
BOARD_LEGEND = {
    "agent": (
        "IQM / mean: interquartile mean and mean of the normalized score (J_β(π) − J_β(π_ref)) / (J*_β − J_β(π_ref)) "
        "over runs (1 = the gold optimum, 0 = π_ref; a failed run counts 0; ties: fewer failures first), [95% "
        "stratified-bootstrap CI: runs are resampled within each task, so with one seed per task, like smoke, there "
        "is no CI: n/a (1 seed)]. code: the first digits of the code hash (a submission is its code). "
        "value gap: J*_β − J_β(π). KL: KL(π‖π_ref). KL-matched gap: best gold at that KL minus the policy's gold. "
        "reward var: the proxy's variance under π per context. proxy-gold: proxy value − gold value. "
        "overopt.: runs whose gold fell from its peak along training by more than the tolerance, of the runs with a "
        "trajectory (checkpoints at the scorer's marks, or the scorer's path for tilt / best-of-n)."
    ),
    "reward_model": (
        "Reward models are scored by fixed optimizers on their scores: IQM/mean of the tilt's normalized score at the "
        "task's β (CI n/a with one seed per task); code: the first digits of the code hash; acc on/off: pairwise ranking accuracy under π_ref / an optimized policy; spearman: rank correlation "
        "with the gold per context; BoN peak gold: best gold along the exact best-of-n sweep; RLOO score: normalized "
        "score of RLOO trained on the reward model."
    ),
}


def _board_view(b, track: str):
    """The board with CIs folded into one cell and the track's columns formatted, and its provenance: one line
    when every submission was scored with the same versions and device (else a column of the table)."""
    import math

    import pandas as pd

    from leaderboard.scoring import short_hash

    def ci(p, lo, hi, seeds):
        if math.isnan(p):
            return ""
        return f"{p:.3f} [{lo:.3f}, {hi:.3f}]" if not math.isnan(lo) else f"{p:.3f}, n/a ({seeds} seed)"

    def fmt(f, v):
        return "" if v is None or (isinstance(v, float) and math.isnan(v)) else f.format(v)

    def prov(r):
        if "tiltenv_version" not in r:
            return ""
        return (f"tiltenv {r['tiltenv_version']}, torch {r['torch_version']} on {r['device']}"
                + (f", {r['scored']}" if r.get("scored") else ""))

    rows, provs = [], []
    for _, r in b.iterrows():
        complete = bool(r["complete"])
        na = int(r.get("not_applicable", 0) or 0)
        row = {"rank": str(int(r["rank"])) if complete and not na else "—", "submission": r["submission"],
               "code": short_hash(r["code_hash"]),
               "runs": (f"{int(r['runs'])} ({na} not applicable)" if na else str(int(r["runs"]))) if complete
               else f"incomplete: {int(r['runs'])}/{int(r['expected_runs'])} runs",
               "failed": int(r["failed"]),
               "IQM [95% CI]": ci(r["iqm"], r["iqm_lo"], r["iqm_hi"], int(r["seeds"])),
               "mean [95% CI]": ci(r["mean"], r["mean_lo"], r["mean_hi"], int(r["seeds"]))}
        for head, col, f in _BOARD_VIEW[track]:
            row[head] = fmt(f, r.get(col, math.nan))
        if track == "agent" and "overoptimization_runs" in r:  # over the runs with a trajectory only (issue 17)
            n = int(r["overoptimization_runs"])
            row["overopt."] = "n/a — no trajectory" if n == 0 else f"{row['overopt.']} of {n}"
        rows.append(row)
        provs.append(prov(r))
    df = pd.DataFrame(rows)
    if len(set(provs)) > 1:
        df["scored with"] = provs
        return df, ""
    return df, (provs[0] if provs else "")


def _write_report(st, s, split: str, out: Path) -> None:
    from leaderboard import report as rep

    path = rep.report_for_suite(st, s, split, Path(out))
    console.print(f"report written to {path}", highlight=False)


@app.command()
@_guard
def board(
    suite: Annotated[str, typer.Option(help="suite name")] = "smoke",
    split: Annotated[str, typer.Option(help="test (the board) or dev (public seeds; not a ranking)")] = "test",
    track: Annotated[str, typer.Option(help="agent or reward_model")] = "agent",
    version: Annotated[Optional[int], typer.Option(help="suite version (default: the current one)")] = None,
    compare: Annotated[Optional[str], typer.Option(
        help="A,B: probability that submission A improves on B (rliable), with its 95% CI; a name with several "
             "versions on the board is written name@hash")] = None,
    common_tasks: Annotated[bool, typer.Option(
        help="--compare on the tasks and seeds both submissions ran when their runs differ (else refused)")] = False,
    by_task: Annotated[bool, typer.Option("--by-task", help="also print the per-task table (mean over seeds, CI)")] = False,
    db: Annotated[Optional[str], typer.Option(help=DB_HELP)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the board as JSON records (every column, unrounded)")] = False,
    as_csv: Annotated[bool, typer.Option("--csv", help="print the board as CSV (every column, unrounded)")] = False,
) -> None:
    """Show the ranked board of one suite version and split."""
    import math

    from leaderboard import scoring
    from leaderboard.suites import get_suite

    s = get_suite(suite)
    version = s.version if version is None else version
    if track not in ("agent", "reward_model"):
        raise UserError(f"--track must be one of agent, reward_model (got {track!r}).")
    names = None
    if as_json or as_csv:
        _print_board_data(_store(db), s.name, version, split, track, "json" if as_json else "csv", both=as_json and as_csv,
                          by_task=by_task)
        return
    if compare:
        names = [c.strip() for c in compare.split(",")]
        if len(names) != 2 or not all(names):
            raise UserError(f"--compare takes two submissions A,B (name, or name@hash) (got {compare!r}).")
    st = _store(db)
    runs, _b = _show_board(st, s.name, version, split, track, by_task=by_task)
    if names:
        metric = "normalized_score" if track == "agent" else "tilt_normalized_score"
        res = scoring.probability_of_improvement(runs, names[0], names[1], metric=metric, common_tasks=common_tasks)
        ci = (f"[{res.lo:.3f}, {res.hi:.3f}]" if not math.isnan(res.lo)
              else "CI n/a (1 seed: each task is a single run against a single run)")
        console.print(f"P({names[0]} > {names[1]}) = {res.p:.3f} {ci} on {metric} "
                      f"(per task: the chance a run of {names[0]} beats a run of {names[1]}, averaged over "
                      f"{len(res.tasks)} task(s))" + (f" — {res.note}" if res.note else ""), highlight=False,
                      soft_wrap=True)


@app.command()
@_guard
def report(
    suite: Annotated[str, typer.Option(help="suite name")] = "smoke",
    split: Annotated[str, typer.Option(help="test (the board) or dev (public seeds; not a ranking)")] = "test",
    out: Annotated[Optional[Path], typer.Option(help="HTML file to write (default: reports/<suite>-<split>.html)")] = None,
    db: Annotated[Optional[str], typer.Option(help=DB_HELP)] = None,
) -> None:
    """Write the static HTML report (board, trajectories vs the gold frontier, failures) of one suite."""
    from leaderboard.spec import SPLITS
    from leaderboard.suites import get_suite

    s = get_suite(suite)
    if split not in SPLITS:
        from tiltenv._validation import suggest

        raise UserError(f"split must be one of {SPLITS} (got {split!r})." + suggest(split, SPLITS))
    out = _check_writable(Path(out) if out is not None else default_report_path(s.name, split))
    _write_report(_store(db), s, split, out)


def default_report_path(suite: str, split: str) -> Path:
    """``reports/<suite>-<split>.html``: one file per suite and split, so a report never overwrites another's."""
    return Path("reports") / f"{suite}-{split}.html"


@app.command()
@_guard
def export(
    out: Annotated[Path, typer.Option(help="directory to write")] = Path("exports"),
    format_: Annotated[str, typer.Option("--format", help="csv or parquet")] = "csv",
    db: Annotated[Optional[str], typer.Option(help=DB_HELP)] = None,
) -> None:
    """Export every table of the board (submissions, runs, checkpoints, failures) as CSV or Parquet."""
    from leaderboard.store import EXPORT_FORMATS

    if format_ not in EXPORT_FORMATS:
        from tiltenv._validation import suggest

        raise UserError(f"--format must be one of {list(EXPORT_FORMATS)} (got {format_!r})." + suggest(format_, EXPORT_FORMATS))
    _check_writable(Path(out), directory=True)
    paths = _store(db).export(out, format_)
    for p in paths:
        console.print(str(p), highlight=False)


@app.command()
@_guard
def failures(
    submission: Annotated[Optional[str], typer.Argument(help="only this submission (a name or a code-hash prefix)")] = None,
    suite: Annotated[Optional[str], typer.Option(help="only this suite (default: every suite)")] = None,
    split: Annotated[Optional[str], typer.Option(help="only this split (dev or test)")] = None,
    reason: Annotated[Optional[str], typer.Option(help="only this failure reason (error, timeout, memory, ...)")] = None,
    tracebacks: Annotated[bool, typer.Option("--tracebacks/--no-tracebacks", help="print each failure's whole detail")] = True,
    db: Annotated[Optional[str], typer.Option(help=DB_HELP)] = None,
) -> None:
    """List the failed runs: reason, the scorer's message with the traceback, and the run's captured output."""
    from leaderboard.spec import FAILURE_REASONS, SPLITS
    from leaderboard.store import KEY_COLUMNS

    if split is not None and split not in SPLITS:
        raise UserError(f"--split must be one of {SPLITS} (got {split!r}).")
    if reason is not None and reason not in FAILURE_REASONS:
        from tiltenv._validation import suggest

        raise UserError(f"--reason must be one of {sorted(FAILURE_REASONS)} (got {reason!r})." + suggest(reason, FAILURE_REASONS))
    st = _store(db)
    filters = {k: v for k, v in (("suite", suite), ("split", split)) if v is not None}
    fails = st.failures(**filters)
    if "output" not in fails.columns and len(fails):  # the captured output lives on the runs table where stored
        runs = st.runs(**filters)
        if "output" in runs.columns:
            fails = fails.merge(runs[KEY_COLUMNS + ["output"]], on=KEY_COLUMNS, how="left")
    if submission is not None:
        fails = fails[(fails["submission"] == submission) | fails["code_hash"].astype(str).str.startswith(submission)]
    if reason is not None:
        fails = fails[fails["reason"] == reason]
    if fails.empty:
        console.print("no failed runs" + (f" matching {', '.join(f'{k}={v}' for k, v in {**filters, 'submission': submission, 'reason': reason}.items() if v)}" if (filters or submission or reason) else "") + ".", highlight=False, markup=False)
        return
    counts = fails["reason"].value_counts()
    console.print(f"{len(fails)} failed runs (" + ", ".join(f"{n} {r}" for r, n in counts.items()) + ")",
                  highlight=False, markup=False)
    _print_failures(fails, tracebacks=tracebacks, output="output" in fails.columns)


@app.command()
@_guard
def remove(
    submission: Annotated[str, typer.Argument(help="a submission name, name@hash or a code-hash prefix (≥ 6 hex digits)")],
    suite: Annotated[Optional[str], typer.Option(help="remove only its runs of this suite (default: the submission "
                                                      "and every run of it)")] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask for confirmation")] = False,
    db: Annotated[Optional[str], typer.Option(help=DB_HELP)] = None,
) -> None:
    """Remove a submission (or its runs of one suite) from the board."""
    st = _store(db)
    subs = st.submissions()
    name, _, prefix = submission.partition("@")
    match = subs[subs["name"] == name] if name else subs.iloc[:0]
    if prefix:
        match = match[match["code_hash"].str.startswith(prefix)]
    if match.empty and len(submission) >= 6:
        match = subs[subs["code_hash"].str.startswith(submission)]
    if match.empty:
        from tiltenv._validation import suggest

        names = sorted(set(subs["name"]))
        raise UserError(f"no submission {submission!r} on this board; its submissions are {names}." + suggest(submission, names))
    hashes = sorted(match["code_hash"])
    runs = st.runs(**({"suite": suite} if suite else {}))
    n = int(runs["code_hash"].isin(hashes).sum()) if len(runs) else 0
    what = (f"{n} runs of {submission!r} on suite {suite!r}" if suite
            else f"submission {submission!r} ({', '.join(h[:10] for h in hashes)}) and its {n} runs")
    if not yes:
        if not sys.stdin.isatty():
            raise UserError(f"would remove {what}; add --yes to confirm (stdin is not a terminal).")
        if not typer.confirm(f"remove {what}?"):
            raise typer.Exit(1)
    removed = st.remove(hashes, suite=suite)
    console.print(f"removed {what.replace(str(n) + ' runs', str(removed) + ' runs')}", highlight=False, markup=False)


@app.command()
@_guard
def check(
    submission: Annotated[str, typer.Argument(help="module:make_agent, path/to/agent.py[:factory] or a baseline name")],
    track: Annotated[str, typer.Option(help="agent or reward_model")] = "agent",
    suite: Annotated[str, typer.Option(help="the suite whose task is used")] = "smoke",
    task: Annotated[Optional[str], typer.Option(help="a task key of the suite (default: its first task of the track)")] = None,
    queries: Annotated[int, typer.Option(help="proxy-query budget of the check (tiny: seconds)")] = 1024,
    checkpoints: Annotated[int, typer.Option(help="checkpoints of the check")] = 3,
    time_limit: Annotated[float, typer.Option(help="wall-time limit, seconds")] = 120.0,
    memory_mb: Annotated[int, typer.Option(help="memory limit, MiB")] = 4096,
    device: Annotated[str, typer.Option(help="cpu or cuda")] = "cpu",
    sandbox: Annotated[bool, typer.Option("--sandbox/--in-process", help="run the submission in the scorer's jail "
                                          "(a fresh process) instead of a thread of this one")] = False,
) -> None:
    """Check a submission before scoring it: load it, train it on one task at a tiny budget and check its outputs
    with the scorer's own code (its channel, budget, checks and failure messages), in this process (--sandbox: in
    the scorer's jail); nothing is stored. Exit 0 if it passes, 1 with the scorer's failure message if not."""
    import dataclasses
    import math
    import time

    from leaderboard.runner import score_one
    from leaderboard.spec import Limits, TRACKS
    from leaderboard.submission import load_submission
    from leaderboard.suites import get_suite

    if track not in TRACKS:
        raise UserError(f"--track must be one of {TRACKS} (got {track!r}).")
    for opt, v in (("--queries", queries), ("--checkpoints", checkpoints), ("--memory-mb", memory_mb)):
        if not isinstance(v, int) or v < 1:
            raise UserError(f"{opt} must be a positive integer (got {v!r}).")
    if not time_limit > 0:
        raise UserError(f"--time-limit must be > 0 seconds (got {time_limit!r}).")
    t0 = time.perf_counter()
    sub = load_submission(submission, track=track)  # the scorer's loader: the same refusals and messages
    s = get_suite(suite)
    specs = s.runs("dev", tasks=[task] if task else None, n_seeds=1, track=track)
    if not specs:
        raise UserError(f"suite {suite!r} has no task for the {track} track.")
    spec = dataclasses.replace(specs[0], proxy_queries=queries, n_checkpoints=checkpoints)
    console.print(f"checking {sub.name} ({sub.kind}, code {sub.code_hash[:10]}) on {s.name}/{spec.task_key} "
                  f"({spec.task_id}), {queries} proxy queries, {checkpoints} checkpoints, "
                  f"{'in the scorer' + chr(39) + 's jail' if sandbox else 'in this process'} ...", highlight=False, markup=False)
    import contextlib

    from leaderboard.check import in_process

    if not sandbox:  # the jail's thread count, in this process too (more threads only contend on small tensors)
        import torch

        torch.set_num_threads(1)
    with contextlib.nullcontext() if sandbox else in_process():
        res = score_one(sub, spec, Limits(wall_time=time_limit, memory_mb=memory_mb, threads=1), device)
    took = time.perf_counter() - t0
    if res.status == "unscored":  # not the submission's failure: the scorer would not record it
        err.print(f"check could not run: the scorer's environment failed ({res.reason} — {res.detail}); exit status 3.",
                  highlight=False, markup=False, soft_wrap=True)
        raise typer.Exit(3)
    if not res.ok:
        console.print(f"FAILED ({res.reason}): {res.detail}", highlight=False, markup=False, soft_wrap=True)
        err.print(f"check failed after {took:.1f} s: the scorer would record this run as '{res.reason}'.",
                  highlight=False, markup=False)
        raise typer.Exit(1)
    key = "normalized_score" if track == "agent" else "tilt_normalized_score"
    val = res.metrics.get(key, math.nan)
    parts = [f"{key} {val:+.3f}"]
    if track == "agent":
        parts += [f"{len(res.checkpoints)} checkpoints at steps {[c.step for c in res.checkpoints]}",
                  f"{res.proxy_queries} of {queries} proxy queries used"]
    console.print("ok: " + ", ".join(parts) + f" ({took:.1f} s)", highlight=False, markup=False)
    if not math.isfinite(val):
        console.print(f"note: {key} is {val}: the final policy puts mass where π_ref has none (KL = ∞).",
                      highlight=False, markup=False)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []})
def sweep(ctx: typer.Context) -> None:
    """Gold-blind tilt and exact best-of-n sweeps of one task (--env ID, --set KEY=VALUE; see --help)."""
    from tiltenv.sweep import main as sweep_main

    raise typer.Exit(sweep_main(list(ctx.args)))


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``tiltenv`` console script and ``python -m tiltenv``."""
    try:
        app(args=argv, prog_name="tiltenv", standalone_mode=True)
    except SystemExit as exc:
        return int(exc.code or 0) if not isinstance(exc.code, str) else 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
