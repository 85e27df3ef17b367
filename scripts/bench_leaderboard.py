"""Leaderboard benchmark: what scoring costs, and what the sandbox and the parallel backends change.

Three figures, each measured in the same run:

1. **channel** — the same runs (built-in baselines on suite entries) scored in-process (``agent.fit`` on the
   public task, checkpoints' log-probabilities, :func:`leaderboard.scoring.score_agent_run`) vs through the
   sandbox serially (:func:`leaderboard.runner.score`, every proxy query through the counting channel).
   Target: sandboxed / in-process ≤ 1.3.
2. **backends** — the same runs serially, on the local process pool and on a local Ray instance (``--workers``
   processes each). Target: speedup over serial ≥ 1.7 on 2 cores.
3. **suite** — the wall time of a whole suite for every built-in baseline on the pool (``--suite``; not in
   ``--quick``). Targets: smoke ≤ 120 s, quick ≤ 600 s.

4. **scoring** — checkpoints per second that the exact scorer (:func:`leaderboard.scoring.score_agent_run`)
   handles with the judge's tensors on the CPU, and on ``--device cuda`` where a GPU is present
   (``--scoring-only --device cuda`` is the short GPU check).

Usage: ``python scripts/bench_leaderboard.py [--quick] [--suite smoke|quick] [--workers 2] [--no-ray] [--device cuda]``.
``--quick`` uses a tiny task and budget (seconds) and is what the tests run. Each figure is printed with
✓/✗ against its target; the machine's load average is printed too (a shared machine slows the parallel
backends most).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from baselines import BASELINES, make_agent  # noqa: E402
from leaderboard import scoring  # noqa: E402
from leaderboard.runner import score, world_of  # noqa: E402
from leaderboard.spec import Limits  # noqa: E402
from leaderboard.store import Store  # noqa: E402
from leaderboard.submission import load_submission  # noqa: E402
from leaderboard.suites import Suite, SuiteEntry, get_suite  # noqa: E402
from tiltenv.worlds.evaluation import policy_logp  # noqa: E402

TARGETS = {"channel": 1.3, "backends": 1.7, "smoke": 120.0, "quick": 600.0}


def mark(ok: bool) -> str:
    return "✓" if ok else "✗"


def bench_suite(quick: bool) -> Suite:
    if quick:
        tiny = dict(d=4, K=16, n_labels=200, n_eval_contexts=128, n_norm_contexts=256, beta=0.05)
        return Suite("bench-tiny", 1, (SuiteEntry("hump", "tiltenv/Hump-v0", tiny, 2048, 4),
                                       SuiteEntry("linear", "tiltenv/Linear-v0", tiny, 2048, 4)), n_dev_seeds=1)
    quick_suite = get_suite("quick")
    return Suite("bench", 1, tuple(quick_suite.entry(k) for k in ("hump-beta0.01", "linear", "spurious")), n_dev_seeds=2)


def in_process(names: list[str], suite: Suite) -> float:
    """Score every (baseline, run) without a sandbox: fit, checkpoints, exact scoring."""
    started = time.perf_counter()
    for spec in suite.runs("dev"):
        world = world_of(spec)
        for name in names:
            snaps = []
            world.task.budget.reset()
            make_agent(name, device="cpu").fit(world.task, spec.budget(), lambda s, p: snaps.append((s, p)))
            logps = torch.stack([policy_logp(p, world.judge.eval_candidates, world.judge.eval_ref_logp) for _, p in snaps])
            scoring.score_agent_run(world.judge, [s for s, _ in snaps], logps)
    return time.perf_counter() - started


def scored(names: list[str], suite: Suite, backend: str, workers: int, limits: Limits) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(f"sqlite:///{tmp}/bench.db")
        summary = score([load_submission(n) for n in names], suite, store=store, backend=backend, workers=workers,
                        limits=limits, progress=False)
        if summary.failed:
            fails = store.failures()
            raise RuntimeError(f"{summary.failed} runs failed: {fails[['submission', 'reason', 'detail']].to_string()[:2000]}")
        store.close()
    return summary.wall_time


def scoring_throughput(device: str, quick: bool) -> float:
    """Checkpoints scored per second by :func:`leaderboard.scoring.score_agent_run` with the judge's tensors on
    ``device`` (12 checkpoints of a (C, K) evaluation set: C=4096, K=256; quick: C=256, K=16)."""
    import types

    C, K, n = (256, 16, 12) if quick else (4096, 256, 12)
    gen = torch.Generator().manual_seed(0)
    gold = torch.randn(C, K, generator=gen, dtype=torch.float64)
    judge = types.SimpleNamespace(
        eval_ref_logp=torch.log_softmax(torch.randn(C, K, generator=gen, dtype=torch.float64), -1).to(device),
        eval_gold=gold.to(device), eval_proxy=(gold + 0.5 * torch.randn(C, K, generator=gen, dtype=torch.float64)).to(device),
        config=types.SimpleNamespace(beta=0.1))
    betas = torch.logspace(1, -2, n, dtype=torch.float64)
    logps = torch.stack([torch.log_softmax(judge.eval_ref_logp + judge.eval_proxy / b, -1) for b in betas.tolist()])
    scoring.score_agent_run(judge, list(range(n)), logps)  # warm-up (kernels, caches)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    started, reps = time.perf_counter(), 3
    for _ in range(reps):
        scoring.score_agent_run(judge, list(range(n)), logps)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return reps * n / (time.perf_counter() - started)


def _has_ray() -> bool:
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


def main(argv: list[str] | None = None) -> dict[str, float]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny task and budget (seconds), for the tests")
    p.add_argument("--suite", default=None, help="also time a whole registered suite for every baseline (smoke, quick), "
                   "serially, on the pool and on Ray: the backends' speedups on a real workload")
    p.add_argument("--suite-only", action="store_true", help="only the --suite figures")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--no-ray", action="store_true", help="skip the Ray backend")
    p.add_argument("--baselines", default=None, help="comma-separated (default: the torch agents and closed forms)")
    p.add_argument("--device", default="cpu", help="also time exact scoring on this device (e.g. cuda) against the CPU")
    p.add_argument("--scoring-only", action="store_true", help="only the scoring-throughput figure (a short GPU check)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    res: dict[str, float] = {}
    cpu = scoring_throughput("cpu", args.quick)
    res["scoring_cpu_ckpt_per_s"] = cpu
    line = f"scoring:  exact metrics of one checkpoint, cpu {cpu:8.1f} checkpoints/s"
    if args.device != "cpu":
        dev = scoring_throughput(args.device, args.quick)
        res[f"scoring_{args.device}_ckpt_per_s"] = dev
        line += f", {args.device} {dev:8.1f} checkpoints/s ({dev / cpu:.1f}x; {torch.cuda.get_device_name() if args.device.startswith('cuda') else ''})"
    print(line)
    if args.scoring_only:
        return res
    if args.suite_only and not args.suite:
        p.error("--suite-only needs --suite")
    names = args.baselines.split(",") if args.baselines else (
        ["tilt", "reinforce"] if args.quick else ["tilt", "best_of_n", "reinforce", "rloo", "grpo", "ppo", "dpo"])
    suite = bench_suite(args.quick)
    limits = Limits(wall_time=600, memory_mb=8192, threads=1)
    n_runs = len(suite.runs("dev")) * len(names)
    if not args.suite_only:
        print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores; {n_runs} runs "
              f"({', '.join(names)} on {[e.key for e in suite.entries]} x {suite.n_dev_seeds} seeds)")
        # warm the proxy cache and the imports so that neither side pays for them
        in_process(names[:1], suite)
        t_in = in_process(names, suite)
        t_serial = scored(names, suite, "serial", 1, limits)
        res["in_process_s"], res["serial_s"] = t_in, t_serial
        res["channel_ratio"] = t_serial / t_in
        print(f"channel:  in-process {t_in:7.2f} s   sandboxed serial {t_serial:7.2f} s   ratio {res['channel_ratio']:.2f}  "
              f"(target ≤ {TARGETS['channel']}) {mark(res['channel_ratio'] <= TARGETS['channel'])}")
        t_pool = scored(names, suite, "pool", args.workers, limits)
        res["pool_s"], res["pool_speedup"] = t_pool, t_serial / t_pool
        print(f"backends: pool ({args.workers}) {t_pool:7.2f} s   speedup {res['pool_speedup']:.2f}  "
              f"(target ≥ {TARGETS['backends']}) {mark(res['pool_speedup'] >= TARGETS['backends'])}")
        if not args.no_ray:
            try:
                import ray  # noqa: F401
            except ImportError:
                print("backends: ray not installed (pip install 'tiltenv[ray]'): skipped")
            else:
                t_ray = scored(names, suite, "ray", args.workers, limits)
                res["ray_s"], res["ray_speedup"] = t_ray, t_serial / t_ray
                print(f"backends: ray ({args.workers})  {t_ray:7.2f} s   speedup {res['ray_speedup']:.2f}  "
                      f"(target ≥ {TARGETS['backends']}) {mark(res['ray_speedup'] >= TARGETS['backends'])}")
    if args.suite:
        print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
        s = get_suite(args.suite)
        backends = ["serial", "pool"] + ([] if args.no_ray or not _has_ray() else ["ray"])
        times = {}
        for backend in backends:
            with tempfile.TemporaryDirectory() as tmp:
                summary = score([load_submission(n) for n in sorted(BASELINES)], s, store=Store(f"sqlite:///{tmp}/s.db"),
                                backend=backend, workers=args.workers, limits=Limits(), progress=False)
            times[backend] = summary.wall_time
            res[f"suite_{s.name}_{backend}_s"] = summary.wall_time
            target = TARGETS.get(s.name) if backend != "serial" else None
            verdict = f"(target ≤ {target:.0f} s) {mark(summary.wall_time <= target)}" if target else ""
            print(f"suite:    {s.name} v{s.version}, every built-in baseline ({summary.scored} runs, {summary.failed} "
                  f"failed) {backend}{'' if backend == 'serial' else f' ({args.workers})'}: {summary.wall_time:.1f} s {verdict}")
        for backend in backends[1:]:
            sp = times["serial"] / times[backend]
            res[f"suite_{s.name}_{backend}_speedup"] = sp
            print(f"backends: {backend} on the {s.name} suite: speedup {sp:.2f} over serial (target ≥ {TARGETS['backends']}) "
                  f"{mark(sp >= TARGETS['backends'])}")
    return res


if __name__ == "__main__":
    main()
