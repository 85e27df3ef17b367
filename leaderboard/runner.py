"""Execution: score submissions on a suite — serially, on a local process pool, or on Ray.

For every (submission, :class:`~leaderboard.spec.RunSpec`) not already in the store, :func:`score_one`

1. builds the world **in the scorer's process** (θ*, the judge and the proxy never leave it);
2. runs the submission in its own sandboxed process (:mod:`leaderboard.sandbox`) that sees only the public
   task and reaches the proxy through a counting channel;
3. scores the checkpoints' log-probabilities on the judge's hidden evaluation contexts
   (:mod:`leaderboard.scoring`);

and :func:`score` stores each :class:`~leaderboard.spec.RunResult` in one transaction as it arrives. Results
are keyed by (code hash, suite, version, split, task, seed index): re-scoring is a no-op and an interrupted
scoring resumes where it stopped. Every backend runs the same :func:`score_one`, so the same submission and
seed give identical metrics serially, on the pool and on Ray.

Example:
    >>> from leaderboard.runner import score
    >>> from leaderboard.store import Store
    >>> from leaderboard.submission import load_submission
    >>> from leaderboard.suites import get_suite
    >>> summary = score([load_submission("tilt")], get_suite("smoke"), store=Store("sqlite://"),
    ...                 progress=False)  # doctest: +SKIP
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

from leaderboard.spec import Limits, RunResult, RunSpec, SandboxFailure, ScorerEnvironmentError
from tiltenv._validation import suggest

__all__ = ["BACKENDS", "ScoreSummary", "ScorerSettingsError", "world_of", "judge_on", "score_one", "plan", "score",
           "not_applicable",
           "check_device", "describe_device", "preflight"]

BACKENDS = ("serial", "pool", "ray")


@dataclass
class ScoreSummary:
    """What :func:`score` did: runs scored now, skipped (already stored), failed, and the wall time.

    ``unscored``: the runs the scorer's environment could not host (status ``"unscored"``, reason a key of
    :data:`leaderboard.spec.ENVIRONMENT_FAILURES`): not stored, so the next scoring runs them again.
    """

    scored: int = 0
    skipped: int = 0
    failed: int = 0
    wall_time: float = 0.0
    unscored: list[RunResult] = field(default_factory=list)
    results: list[RunResult] = field(default_factory=list, repr=False)


def world_of(spec: RunSpec):
    """The :class:`tiltenv.worlds.world.World` of a run (built in the scorer's process, cached by config)."""
    import gymnasium as gym

    import tiltenv  # noqa: F401  (registers the ids)
    from tiltenv.worlds.world import make_world

    env = gym.make(spec.task_id, **spec.task_kwargs, seed=spec.seed)
    try:
        return make_world(env.unwrapped.config)
    finally:
        env.close()


def judge_on(judge: Any, device: str) -> Any:
    """The judge's evaluation tensors on ``device`` (a view for exact scoring there; the judge itself is untouched).

    On ``cpu`` the judge itself. Elsewhere a namespace with ``config`` and the ``eval_*`` tensors moved: what
    :func:`leaderboard.scoring.score_agent_run` reads.
    """
    import types

    import torch

    dev = torch.device(device)
    if dev.type == "cpu":
        return judge
    keys = ("eval_ref_logp", "eval_gold", "eval_proxy") + (() if hasattr(judge, "eval_prompts") else ("eval_candidates",))
    return types.SimpleNamespace(config=judge.config, theta=None, **{k: getattr(judge, k).to(dev) for k in keys})


def _seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)


def score_one(sub: Any, spec: RunSpec, limits: Limits = Limits(), device: str = "cpu") -> RunResult:
    """Score one submission on one run: build the world, run the sandbox, score, return the result.

    Never raises: a failure is a :class:`RunResult` with ``status="failed"`` and its reason — the submission's
    (:class:`~leaderboard.spec.SandboxFailure`), ``invalid_output`` for outputs the scorer cannot score
    (:class:`leaderboard.scoring.UnscorableOutput`, e.g. a constant reward model), or ``scoring`` with the
    traceback for any other exception of the scorer's own code on this run (building its world, reading,
    validating or scoring its output), so one run never stops a scoring. A failure of the scorer's environment
    (:class:`~leaderboard.spec.ScorerEnvironmentError`: no folder, cgroup, jail, zygote or GPU for the run) is a
    result with ``status="unscored"``, which :func:`score` never stores.
    """
    started = time.perf_counter()
    base = dict(submission=sub.name, code_hash=sub.code_hash, spec=spec, device=describe_device(device))
    try:
        if str(device).startswith("cuda"):  # the GPU checked before the scoring may be gone by now
            try:
                check_device(device)
            except ScorerSettingsError as e:
                raise ScorerEnvironmentError("gpu", str(e)) from None
        return _score_one(sub, spec, limits, device, base, started)
    except Exception as exc:  # noqa: BLE001 - every exception becomes this run's failure
        return failure_of(sub, spec, exc, wall_time=time.perf_counter() - started)


def failure_of(sub: Any, spec: RunSpec, exc: BaseException, *, wall_time: float = 0.0) -> RunResult:
    """The failed :class:`RunResult` of ``(sub, spec)`` for an exception of the scorer's code (reason ``scoring``,
    the detail ends with the traceback; :class:`~leaderboard.scoring.UnscorableOutput`: ``invalid_output``;
    :class:`~leaderboard.spec.ScorerEnvironmentError`: not a failure but an ``unscored`` result, never stored)."""
    import traceback

    from leaderboard.scoring import UnscorableOutput

    if isinstance(exc, ScorerEnvironmentError):
        return RunResult(submission=str(getattr(sub, "name", "?")), code_hash=str(getattr(sub, "code_hash", "?")),
                         spec=spec, status="unscored", reason=exc.reason, detail=exc.detail,
                         wall_time=float(wall_time))
    if isinstance(exc, SandboxFailure):
        reason, detail = exc.reason, exc.detail
    elif isinstance(exc, UnscorableOutput):
        reason, detail = "invalid_output", str(exc)
    else:
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        head = f"{type(exc).__name__}: {str(exc)[:2000]}"
        reason, detail = "scoring", f"{head}\n{tb[-6000:]}"
    return RunResult(submission=str(getattr(sub, "name", "?")), code_hash=str(getattr(sub, "code_hash", "?")),
                     spec=spec, status="failed", reason=reason, detail=detail, wall_time=float(wall_time),
                     output=getattr(exc, "output", None))


def _score_one(sub: Any, spec: RunSpec, limits: Limits, device: str, base: dict, started: float) -> RunResult:
    from leaderboard import sandbox, scoring

    why = not_applicable(sub, spec)
    if why is not None:  # a token-level baseline on a bandit task: nothing to run, the board says why
        return RunResult(**base, status="failed", reason="not_applicable", detail=why,
                         wall_time=time.perf_counter() - started)
    world = world_of(spec)
    try:
        if spec.track == "agent":
            judge = world.judge
            tokens = hasattr(judge, "eval_prompts")  # a token task: sequence policies are expanded over the tree
            out = sandbox.run_agent(
                sub, world.task, spec.budget(), (lambda: judge.eval_candidates) if tokens else judge.eval_candidates,
                judge.eval_ref_logp, limits, device=device, eval_prompts=judge.eval_prompts if tokens else None,
            )
            # a trajectory: the checkpoints at the scorer's marks of a run that queried the proxy in training, at
            # least 3 (a peak between the start and the end can be seen; a run that spent its queries before the
            # first mark has only its start and end); without queries, the scorer's own path where it defines
            # one (tilt, best-of-n); else "n/a — no trajectory"
            has_trajectory = out.proxy_queries > 0 and len(out.steps) >= 3
            judge = judge_on(world.judge, device)
            metrics, rows = scoring.score_agent_run(
                judge, out.steps, out.logps, trajectory=has_trajectory,
                path=None if out.proxy_queries > 0 else scoring.scorer_path(sub, judge))
            return RunResult(**base, status="ok", metrics=metrics, checkpoints=rows,
                             proxy_queries=int(out.proxy_queries), deployment_queries=int(out.deploy_queries),
                             fit_time=float(out.fit_time), wall_time=time.perf_counter() - started,
                             sandbox=out.sandbox, output=out.output)
        _seed_everything(spec.seed_index)
        if sub.kind == "proxy":  # a built-in reward model: the library's own (trusted) proxy, scored in-process
            fit_start = time.perf_counter()  # fit = building the world with this proxy, i.e. training it
            rm_world = scoring.builtin_reward_model_world(sub.target, world.judge.config, proxy_kwargs=sub.config,
                                                          fresh=True)
            fit_time = time.perf_counter() - fit_start
            metrics = scoring.score_reward_model(rm_world.judge, rm_world.task, rm_world.task.proxy,
                                                 seed=spec.seed_index, device=device)
            return RunResult(**base, status="ok", metrics=metrics, fit_time=fit_time,
                             wall_time=time.perf_counter() - started, sandbox="trusted")  # library code, in-process
        with sandbox.RemoteRewardModel(sub, world.task, limits, device=device) as rm:
            metrics = scoring.score_reward_model(world.judge, world.task, rm.score, seed=spec.seed_index)
        return RunResult(**base, status="ok", metrics=metrics, fit_time=float(rm.fit_time),
                         wall_time=time.perf_counter() - started, sandbox=rm.sandbox, output=rm.output)
    except SandboxFailure as exc:
        return RunResult(**base, status="failed", reason=exc.reason, detail=exc.detail,
                         wall_time=time.perf_counter() - started, sandbox=limits.sandbox, output=exc.output)


def not_applicable(sub: Any, spec: RunSpec) -> str | None:
    """Why a built-in baseline does not apply to a run's task (its ``task_kinds``: the token-level baselines run on
    token tasks only), or None. Every other submission applies everywhere: a bandit agent runs on a token task's
    bandit view (K = V^L responses as candidates), and a file's code is never guessed at."""
    if getattr(sub, "kind", None) != "baseline":
        return None
    from baselines import ALL_BASELINES
    from leaderboard.suites import task_kind

    kinds = getattr(ALL_BASELINES.get(sub.target, (None,))[0], "task_kinds", None)
    kind = task_kind(spec.task_id)
    if kinds is None or kind in kinds:
        return None
    return (f"{sub.target} is a token-level agent (sequence policies, tasks of kind {list(kinds)}): it does not "
            f"apply to {spec.task_id}, a {kind} task over K candidate vectors; not run, and left out of its scores")


class ScorerSettingsError(RuntimeError):
    """The scorer's own settings (limits, device) cannot host a run: nothing is scored, nothing is stored."""


def check_device(device: Any) -> str:
    """``"cpu"``, ``"cuda"`` or ``"cuda:N"`` that this machine has, else a :class:`ScorerSettingsError` naming it."""
    import torch

    choices = "'cpu', 'cuda' or 'cuda:N'"
    if not isinstance(device, str):
        raise ScorerSettingsError(f"device must be {choices} (got {device!r}).")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ScorerSettingsError(f"device must be {choices} (got {device!r}).") from None
    if dev.type not in ("cpu", "cuda") or (dev.type == "cpu" and dev.index not in (None, 0)):
        raise ScorerSettingsError(f"device must be {choices} (got {device!r}).")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ScorerSettingsError(f"device {device!r}: CUDA is not available on this machine; use 'cpu'.")
        n = torch.cuda.device_count()
        if dev.index is not None and dev.index >= n:
            raise ScorerSettingsError(f"device {device!r}: this machine has {n} CUDA device(s), cuda:0 to cuda:{n - 1}.")
    return device


_DEVICE_NAMES: dict[str, str] = {}


def describe_device(device: str) -> str:
    """The device of a run as stored with it: ``"cpu"``, or ``"cuda:0 (NVIDIA H200)"``."""
    if device not in _DEVICE_NAMES:
        name = str(device)
        if name.startswith("cuda"):
            try:
                import torch

                idx = torch.device(name).index or 0
                name = f"cuda:{idx} ({torch.cuda.get_device_name(idx)})"
            except Exception:  # noqa: BLE001 - provenance must never fail a run
                pass
        _DEVICE_NAMES[device] = name
    return _DEVICE_NAMES[device]


#: Settings a canary already ran under in this process (see :func:`preflight`).
_PREFLIGHT_OK: set[tuple] = set()


def preflight(limits: Limits, device: str = "cpu") -> None:
    """Check that the scorer's settings can host a run before any submission's run is scored.

    A limit that no run can live with (a memory cap below what the sandbox's interpreter needs, a wall time
    shorter than its start) would otherwise be stored as **every submission's failure**. So a canary — the
    built-in ``tilt`` agent (trusted code, training-free) on a tiny task — runs in the sandbox under the same
    limits and device first; if it fails, nothing is scored and nothing is stored. Done once per process and
    settings.

    Raises:
        ScorerSettingsError: the canary failed (the message names the settings and the canary's failure).
    """
    key = (limits, device)
    if key in _PREFLIGHT_OK:
        return
    from baselines.base import TrainBudget
    from leaderboard import sandbox
    from leaderboard.submission import load_submission
    from tiltenv.worlds.config import TaskConfig
    from tiltenv.worlds.world import make_world

    world = make_world(TaskConfig(d=2, K=4, n_labels=16, n_eval_contexts=8, n_norm_contexts=16, proxy="gold", seed=0))
    try:
        sandbox.run_agent(load_submission("tilt"), world.task, TrainBudget(proxy_queries=64, n_checkpoints=1),
                          world.judge.eval_candidates, world.judge.eval_ref_logp, limits, device=device)
    except SandboxFailure as e:
        raise ScorerSettingsError(
            f"the scorer's settings cannot host a run: a canary (the built-in tilt agent on a tiny task) failed "
            f"under --time-limit {limits.wall_time:g} s, --memory-mb {limits.memory_mb}, --threads {limits.threads}, "
            f"--device {device} ({e.reason}: {e.detail}); nothing was scored or stored. Raise the limit."
        ) from None
    _PREFLIGHT_OK.add(key)


def plan(subs: Sequence[Any], specs: Sequence[RunSpec], store: Any) -> tuple[list[tuple[Any, RunSpec]], int]:
    """The (submission, spec) pairs not yet stored, and how many are already there."""
    todo, skipped = [], 0
    for sub in subs:
        store.add_submission(sub)
        by_split: dict[tuple, set] = {}
        for spec in specs:
            if spec.track != sub.track:
                continue
            k = (spec.suite, spec.suite_version, spec.split)
            if k not in by_split:
                by_split[k] = store.done_keys(sub.code_hash, *k)
            if (spec.task_key, spec.seed_index) in by_split[k]:
                skipped += 1
            else:
                todo.append((sub, spec))
    return todo, skipped


def _pool_worker_init(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _progress(enabled: bool, total: int, label: str):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    prog = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TextColumn("{task.fields[last]}"), disable=not enabled, transient=False)
    return prog, prog.add_task(label, total=total, last="")


def _run_serial(todo, limits, device, on_result):
    for sub, spec in todo:
        on_result(score_one(sub, spec, limits, device))


def _collect(sub: Any, spec: RunSpec, get: Callable[[], RunResult]) -> RunResult:
    """A worker's result, or the run's ``scoring`` failure when getting it raised (a worker that died, a result
    that could not be sent back): a finished neighbour's result is never dropped."""
    try:
        res = get()
        if not isinstance(res, RunResult):
            raise TypeError(f"a worker returned a {type(res).__name__}, not a RunResult")
        return res
    except Exception as exc:  # noqa: BLE001
        return failure_of(sub, spec, exc)


def _run_pool(todo, limits, device, on_result, workers):
    import multiprocessing as mp

    with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"),
                             initializer=_pool_worker_init, initargs=(limits.threads,)) as ex:
        pending: dict[Future, tuple[Any, RunSpec]] = {}
        it = iter(todo)
        # keep at most 2 × workers submitted so an interrupt loses little and memory stays bounded
        for sub, spec in it:
            pending[ex.submit(score_one, sub, spec, limits, device)] = (sub, spec)
            if len(pending) >= 2 * workers:
                break
        while pending:
            done, _ = wait(set(pending), return_when=FIRST_COMPLETED)
            for fut in done:
                sub, spec = pending.pop(fut)
                on_result(_collect(sub, spec, fut.result))
                nxt = next(it, None)
                if nxt is not None:
                    try:
                        pending[ex.submit(score_one, nxt[0], nxt[1], limits, device)] = nxt
                    except Exception as exc:  # noqa: BLE001 - a broken pool: the run fails, the others go on
                        on_result(failure_of(nxt[0], nxt[1], exc))


def _run_ray(todo, limits, device, on_result, workers, address):
    try:
        import ray
    except ImportError:
        raise RuntimeError("backend 'ray' needs the ray extra: pip install 'tiltenv[ray]'.") from None
    started_here = not ray.is_initialized()
    if started_here:
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        ray.init(address=address, num_cpus=None if address else workers, include_dashboard=False,
                 log_to_driver=False, configure_logging=False,
                 runtime_env={"env_vars": {"PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}})
    try:
        remote = ray.remote(num_cpus=1)(score_one)
        runs = {}
        for sub, spec in todo:
            runs[remote.remote(sub, spec, limits, device)] = (sub, spec)
        pending = list(runs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            for ref in done:
                sub, spec = runs.pop(ref)
                on_result(_collect(sub, spec, lambda ref=ref: ray.get(ref)))
    finally:
        if started_here:
            ray.shutdown()


def score(
    subs: Iterable[Any],
    suite: Any,
    *,
    store: Any,
    split: str = "dev",
    tasks: list[str] | None = None,
    n_seeds: int | None = None,
    backend: str = "serial",
    workers: int = 2,
    limits: Limits = Limits(),
    device: str = "cpu",
    progress: bool = True,
    ray_address: str | None = None,
    salt: bytes | None = None,
    on_result: Callable[[RunResult], None] | None = None,
) -> ScoreSummary:
    """Score submissions on a suite's split and store every result as it arrives.

    Args:
        subs: :class:`~leaderboard.submission.Submission` s (each scored on the runs of its track).
        suite: a :class:`~leaderboard.suites.Suite`.
        store: a :class:`~leaderboard.store.Store`.
        split: ``"dev"`` or ``"test"``; tasks / n_seeds: a subset of the suite.
        backend: ``"serial"``, ``"pool"`` (local processes) or ``"ray"`` (the ``ray`` extra).
        workers: processes of the pool / CPUs of a local Ray instance.
        limits: the sandbox's wall-time and memory limits per run.
        device: ``"cpu"`` or ``"cuda"`` for the submissions' training.
        progress: show a rich progress bar.
        ray_address: an existing Ray cluster (default: start a local one).
        on_result: called with each result after it is stored (not with ``unscored`` runs: see
            :attr:`ScoreSummary.unscored`).

    Returns:
        :class:`ScoreSummary`.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS} (got {backend!r})." + suggest(str(backend), BACKENDS))
    if not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive integer (got {workers!r}).")
    if not isinstance(limits, Limits):
        raise TypeError(f"limits must be a leaderboard.spec.Limits (got {type(limits).__name__}).")
    check_device(device)
    subs = list(subs)
    tracks = {s.track for s in subs}
    if split == "test":  # private worlds: each submission's test seeds come from its own code hash
        if salt is None:
            from leaderboard.seeds import load_salt

            salt = load_salt()
        todo, skipped = [], 0
        for sub in subs:
            mine = suite.runs(split, salt=salt, tasks=tasks, n_seeds=n_seeds, track=sub.track, code_hash=sub.code_hash)
            t, k = plan([sub], mine, store)
            todo += t
            skipped += k
    else:
        specs = [sp for tr in sorted(tracks) for sp in suite.runs(split, salt=salt, tasks=tasks, n_seeds=n_seeds, track=tr)]
        todo, skipped = plan(subs, specs, store)
    if any(sub.kind != "proxy" for sub, _ in todo):  # sandboxed runs ahead: network="require" fails here, not per run
        from leaderboard import sandbox

        sandbox.sandbox_mode(limits)  # no jail here: refuses (saying why) unless Limits(sandbox="trusted")
        sandbox.network_mode(limits)
        preflight(limits, device)  # settings no run can live with fail here, not as every submission's failure
    summary = ScoreSummary(skipped=skipped)
    t0 = time.perf_counter()
    prog, bar = _progress(progress and bool(todo), len(todo), f"scoring {suite.name} v{suite.version} ({split})")

    def handle(res: RunResult) -> None:
        if res.status == "unscored":  # the scorer's environment failed: not this submission's result, not stored
            summary.unscored.append(res)
            prog.update(bar, advance=1, last=f"{res.submission} {res.spec.task_key}#{res.spec.seed_index}: "
                                             f"UNSCORED ({res.reason})")
            return
        try:
            store.save(res)
        except Exception as exc:  # noqa: BLE001 - a result the store refuses is this run's failure, stored instead
            failed = failure_of(None, res.spec, exc, wall_time=res.wall_time)
            failed.submission, failed.code_hash = res.submission, res.code_hash
            res = failed
            store.save(res)  # a store that refuses a bare failure too is down: that stops the scoring
        summary.scored += 1
        summary.failed += not res.ok
        summary.results.append(res)
        score_key = "normalized_score" if res.spec.track == "agent" else "tilt_normalized_score"
        what = f"{res.submission} {res.spec.task_key}#{res.spec.seed_index}: " + (
            f"{score_key} {res.metrics.get(score_key, float('nan')):+.3f}" if res.ok else f"FAILED ({res.reason})")
        prog.update(bar, advance=1, last=what)
        if on_result is not None:
            on_result(res)

    with prog:
        if backend == "serial" or not todo:
            _run_serial(todo, limits, device, handle)
        elif backend == "pool":
            _run_pool(todo, limits, device, handle, workers)
        else:
            _run_ray(todo, limits, device, handle, workers, ray_address)
    summary.wall_time = time.perf_counter() - t0
    return summary

