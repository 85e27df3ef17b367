"""How stable is the test split's ranking of the built-in baselines between two independent salts? (issue 17)

Test worlds are private per submission (seed = HMAC(salt, suite, version, task, index, code hash)), so the
test board compares submissions across *different* worlds of the same task family. This script scores the
built-in baselines on a suite's test split under two independent salts (each baseline on its own private
worlds, exactly the seeds the scorer would use), and reports

* the IQM of the normalized score per baseline and salt, with its 95% stratified-bootstrap CI
  (:func:`leaderboard.scoring.board`, the board's own statistic);
* Kendall's τ between the two salts' IQM rankings;
* for the pairs of baselines that really differ (same order under both salts, CIs apart with all seeds), the
  fewest seeds per task at which their CIs no longer overlap under both salts (measured on the first n seeds
  for n up to the seeds scored; beyond that extrapolated with the CI width ∝ 1/√n);
* per task, the label ceiling's normalized score (its mean over seeds and salts).

The baselines run in this process (they are the library's own trusted code, not submissions): the numbers are
the scorer's metrics on the same worlds, without the sandbox's cost. ``--quick`` is a seconds-long subset that
``tests/test_scripts.py``-style tests run; the figures of the issue come from the default arguments (see the
``--help`` of every option for how to trade time against seeds).

Usage:
    python scripts/ranking_stability.py --suite quick --seeds 4 --out results/ranking_stability.json
    python scripts/ranking_stability.py --quick
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DEFAULT_BASELINES = ("tilt", "best_of_n", "reinforce", "dpo", "label_ceiling")


def score_runs(suite, salt: bytes, baselines, tasks, n_seeds: int, queries: int | None, log=print):
    """One row per (baseline, task, seed index): the normalized score on the baseline's private test world."""
    import torch

    from baselines import BASELINES, TrainBudget
    from leaderboard.runner import world_of
    from leaderboard.submission import load_submission

    rows = []
    for name in baselines:
        sub = load_submission(name)
        agent_cls, config_cls = BASELINES[name]
        for spec in suite.runs("test", salt=salt, tasks=tasks, n_seeds=n_seeds, code_hash=sub.code_hash):
            torch.manual_seed(spec.seed_index)
            t0 = time.perf_counter()
            world = world_of(spec)
            budget = TrainBudget(proxy_queries=queries or spec.proxy_queries, n_checkpoints=2)
            try:
                agent = agent_cls(config_cls(device="cpu")).fit(world.task, budget)
                score, status = float(world.judge.evaluate(agent)["normalized_score"]), "ok"
            except ValueError as exc:  # e.g. DPO on a task without pairs: a failed run, 0 on the board
                score, status = float("nan"), "failed"
                log(f"  {name} {spec.task_key}: failed ({str(exc)[:80]})")
            rows.append({"submission": name, "task_key": spec.task_key, "seed_index": spec.seed_index,
                         "status": status, "normalized_score": score})
            log(f"  {name:14s} {spec.task_key:16s} #{spec.seed_index}: {score:+.4f} ({time.perf_counter() - t0:.1f} s)")
    return rows


def _board(rows, n_seeds: int | None = None):
    import pandas as pd

    from leaderboard.scoring import board

    df = pd.DataFrame(rows)
    if n_seeds is not None:
        df = df[df.seed_index < n_seeds]
    return board(df, n_boot=1000, seed=0).set_index("submission")


def kendall_tau(a: list[float], b: list[float]) -> float:
    """Kendall's τ-b of two score lists over the same items."""
    from scipy.stats import kendalltau

    return float(kendalltau(a, b).statistic)


def analyse(rows_by_salt: list[list[dict]], n_seeds: int) -> dict:
    boards = [_board(r) for r in rows_by_salt]
    names = sorted(boards[0].index)
    iqm = [[float(b.loc[n, "iqm"]) for n in names] for b in boards]
    tau = kendall_tau(iqm[0], iqm[1])
    # pairs that really differ: same order under both salts and CIs apart (all seeds) under at least one
    pairs = []
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            same = all(np.sign(bd.loc[a, "iqm"] - bd.loc[b, "iqm"]) == np.sign(boards[0].loc[a, "iqm"] - boards[0].loc[b, "iqm"])
                       for bd in boards)
            apart = any(_apart(bd, a, b) for bd in boards)
            if same and apart:
                pairs.append((a, b))
    needed = {}
    for a, b in pairs:
        n_ok = None
        for n in range(2, n_seeds + 1):  # one seed per task gives a zero-width CI: not a measurement
            if all(_apart(_board(r, n), a, b) for r in rows_by_salt):
                n_ok = n
                break
        if n_ok is None:  # extrapolate: the CI half-widths shrink like 1/sqrt(n)
            worst = 1.0
            for bd in boards:
                gap = abs(bd.loc[a, "iqm"] - bd.loc[b, "iqm"])
                half = 0.5 * ((bd.loc[a, "iqm_hi"] - bd.loc[a, "iqm_lo"]) + (bd.loc[b, "iqm_hi"] - bd.loc[b, "iqm_lo"]))
                worst = max(worst, (half / gap) ** 2 if gap > 0 else math.inf)
            n_ok = math.ceil(n_seeds * worst)
        needed[f"{a} vs {b}"] = n_ok
    # every pair in the same order under both salts: the seeds per task at which the CIs would part (1/sqrt(n))
    consistent = {}
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            if np.sign(boards[0].loc[a, "iqm"] - boards[0].loc[b, "iqm"]) != np.sign(boards[1].loc[a, "iqm"] - boards[1].loc[b, "iqm"]):
                continue
            worst = 0.0
            for bd in boards:
                gap = abs(bd.loc[a, "iqm"] - bd.loc[b, "iqm"])
                half = 0.5 * ((bd.loc[a, "iqm_hi"] - bd.loc[a, "iqm_lo"]) + (bd.loc[b, "iqm_hi"] - bd.loc[b, "iqm_lo"]))
                worst = max(worst, (half / gap) ** 2 if gap > 0 else math.inf)
            consistent[f"{a} vs {b}"] = {"gap": float(abs(boards[0].loc[a, "iqm"] - boards[0].loc[b, "iqm"])),
                                         "seeds": max(2, math.ceil(n_seeds * worst))}
    # Kendall's τ without the reference entry, and per task (the mean score per baseline under each salt)
    others = [k for k, n in enumerate(names) if n != "label_ceiling"]
    tau_others = kendall_tau([iqm[0][k] for k in others], [iqm[1][k] for k in others])
    per_task_tau = {}
    for task in sorted({r["task_key"] for r in rows_by_salt[0]}):
        means = [[float(np.nan_to_num(np.nanmean([r["normalized_score"] for r in rows if r["task_key"] == task
                                                   and r["submission"] == n] or [np.nan]), nan=0.0)) for n in names]
                 for rows in rows_by_salt]
        per_task_tau[task] = kendall_tau(means[0], means[1])
    per_task = {}
    ceiling = [r for rows in rows_by_salt for r in rows if r["submission"] == "label_ceiling"]
    for task in sorted({r["task_key"] for r in ceiling}):
        per_task[task] = float(np.nanmean([r["normalized_score"] for r in ceiling if r["task_key"] == task]))
    return {
        "baselines": names,
        "iqm": {f"salt{j}": dict(zip(names, iqm[j])) for j in range(len(boards))},
        "ci": {f"salt{j}": {n: [float(bd.loc[n, "iqm_lo"]), float(bd.loc[n, "iqm_hi"])] for n in names}
               for j, bd in enumerate(boards)},
        "kendall_tau": tau,
        "kendall_tau_without_label_ceiling": tau_others,
        "kendall_tau_per_task": per_task_tau,
        "same_order_pairs_seeds_extrapolated": consistent,
        "differing_pairs_seeds_needed": needed,
        "seeds_needed": max(needed.values()) if needed else None,
        "label_ceiling_per_task": per_task,
    }


def _apart(bd, a: str, b: str) -> bool:
    return bool(bd.loc[a, "iqm_lo"] > bd.loc[b, "iqm_hi"] or bd.loc[b, "iqm_lo"] > bd.loc[a, "iqm_hi"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--suite", default="quick", help="suite whose test split is measured (default quick)")
    ap.add_argument("--tasks", default=None, help="comma-separated task keys (default: every task of the suite)")
    ap.add_argument("--baselines", default=",".join(DEFAULT_BASELINES), help="comma-separated built-in baselines")
    ap.add_argument("--seeds", type=int, default=4, help="seeds per task and salt (at most the suite's test seeds... "
                                                         "or more: the measurement may use more seeds than the suite)")
    ap.add_argument("--queries", type=int, default=None, help="proxy-query budget per run (default: the suite's)")
    ap.add_argument("--salts", default="salt-A,salt-B", help="two comma-separated independent salts")
    ap.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    ap.add_argument("--from-json", type=Path, default=None, help="re-analyse the runs of an earlier --out (no scoring)")
    ap.add_argument("--quick", action="store_true", help="a seconds-long check: smoke's hump, 2 seeds, tilt, best_of_n "
                                                         "and label_ceiling (for the tests)")
    args = ap.parse_args(argv)

    import dataclasses

    import torch

    if args.from_json is not None:
        old = json.loads(args.from_json.read_text())
        rows = [old["runs"]["salt0"], old["runs"]["salt1"]]
        out = {**old, **analyse(rows, old["seeds"])}
        print(json.dumps({k: v for k, v in out.items() if k != "runs"}, indent=2))
        if args.out:
            args.out.write_text(json.dumps(out, indent=2))
        return 0

    from leaderboard.suites import get_suite

    torch.set_num_threads(1)
    if args.quick:
        args.suite, args.tasks, args.baselines, args.seeds, args.queries = "smoke", "hump", "tilt,best_of_n,label_ceiling", 2, 1024
    suite = get_suite(args.suite)
    if args.seeds > suite.n_test_seeds:  # a measurement may use more seeds than the suite scores
        suite = dataclasses.replace(suite, n_test_seeds=args.seeds)
    salts = [s.encode() for s in args.salts.split(",")]
    if len(salts) != 2 or not all(salts) or salts[0] == salts[1]:
        raise SystemExit(f"--salts must be two different non-empty salts (got {args.salts!r}).")
    baselines = [b.strip() for b in args.baselines.split(",") if b.strip()]
    tasks = args.tasks.split(",") if args.tasks else None
    t0 = time.perf_counter()
    rows = []
    for j, salt in enumerate(salts):
        print(f"salt {j}:", flush=True)
        rows.append(score_runs(suite, salt, baselines, tasks, args.seeds, args.queries))
    out = analyse(rows, args.seeds)
    out.update({"suite": f"{suite.name} v{suite.version}", "tasks": tasks or [e.key for e in suite.entries],
                "seeds": args.seeds, "queries": args.queries, "wall_time_s": time.perf_counter() - t0,
                "runs": {f"salt{j}": r for j, r in enumerate(rows)}})
    print(json.dumps({k: v for k, v in out.items() if k != "runs"}, indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
