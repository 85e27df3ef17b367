"""Baselines benchmark: wall time per baseline at the quick budget, and proxy queries/s of the torch PG
agents against stable-baselines3 PPO on the same task, measured in the same run.

1. **Wall time** of ``fit`` (checkpoints off) for every registered baseline with its default config at the
   quick budget (:data:`baselines.QUICK_BUDGET`, 65,536 proxy queries), on ``SingleIndex-v0`` (K=16) and
   ``Hump-v0`` (K=256), CPU. Target: < 60 s each on 2 cores.
2. **Throughput** (proxy queries per second of training) of REINFORCE, RLOO, GRPO and PPO with their
   default configs vs SB3 PPO on the same task: out of the box through ``gym.make`` (one env at a time,
   SB3's default hyperparameters), and through tiltenv's ``SB3VecEnv`` adapter (16 envs, the ``sb3_ppo``
   baseline's defaults). Target: torch PG ≥ 50× SB3 PPO. Runs are interleaved and repeated; each figure is
   the best of ``--repeat`` runs, so background load on a shared machine biases every figure the same way.

Usage: ``python scripts/bench_baselines.py [--quick] [--threads N] [--json out.json]``
(``--quick``: tiny budgets, a smoke test for the test suite).
"""

from __future__ import annotations

import json
import math
import platform
import time

import gymnasium as gym
import torch

import tiltenv  # noqa: F401  (registers the envs)
from baselines import BASELINES, PG_BASELINES, QUICK_BUDGET, TrainBudget, make_agent
from tiltenv._validation import ArgumentParser, add_threads_argument, apply_threads

#: Targets (issue 3 of the baselines): every fit at the quick budget under this many seconds; every torch PG agent
#: at least this many times SB3 PPO's proxy queries/s through gym.make.
FIT_TARGET_S = 60.0
PG_RATIO_TARGET = 50.0


def mark(ok: bool) -> str:
    """✓ when a figure meets its target, ✗ when it misses it."""
    return "✓" if ok else "✗"

TASKS = {"SingleIndex-v0": {}, "Hump-v0": {}}
#: SB3 PPO as a user would first run it: gym.make, one env at a time, SB3's default hyperparameters.
SB3_OUT_OF_THE_BOX = dict(vec_env="dummy", n_envs=1, n_steps=2048, batch_size=64, n_epochs=10, learning_rate=3e-4)


def fresh_task(env_id: str, **kwargs):
    task = gym.make(f"tiltenv/{env_id}", n_eval_contexts=64, **kwargs).unwrapped.task
    return task


def timed_fit(name: str, env_id: str, budget: TrainBudget, **config) -> tuple[float, int]:
    """(seconds in fit, proxy queries spent) for one fresh agent on a fresh copy of the task."""
    task = fresh_task(env_id)
    agent = make_agent(name, device="cpu", **config)
    q0 = task.budget.proxy_queries
    start = time.perf_counter()
    agent.fit(task, budget)
    return time.perf_counter() - start, task.budget.proxy_queries - q0


def best_of(repeat: int, fn):
    runs = [fn() for _ in range(repeat)]
    return min(runs, key=lambda r: r[0])


def main(argv: list[str] | None = None) -> dict:
    p = ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny budgets (smoke test)")
    add_threads_argument(p)
    p.add_argument("--repeat", type=int, default=2, help="runs per figure; the best is reported")
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = p.parse_args(argv)
    args.threads = apply_threads(p, args.threads)
    quick = QUICK_BUDGET if not args.quick else TrainBudget(proxy_queries=4096)
    sb3_budget = TrainBudget(proxy_queries=8192 if not args.quick else 2048)
    repeat = 1 if args.quick else args.repeat
    out: dict = {"machine": f"{platform.processor() or platform.machine()}, torch threads {args.threads}",
                 "quick_budget": quick.proxy_queries, "wall_time": {}, "throughput": {}}

    for name in BASELINES if not args.quick else ():  # warm-up: first calls pay for lazy imports, allocations
        timed_fit(name, "SingleIndex-v0", TrainBudget(proxy_queries=2048),
                  **(dict(n_envs=4, n_steps=32) if name == "sb3_ppo" else {}))

    print(f"1. fit wall time at the quick budget ({quick.proxy_queries:,} proxy queries), CPU, "
          f"{args.threads} torch thread(s), best of {repeat}")
    print(f"   {'baseline':<10}" + "".join(f"{t:>18}" for t in TASKS) + f"   target < {FIT_TARGET_S:g} s")
    for name in BASELINES:
        row = {}
        for env_id in TASKS:
            seconds, queries = best_of(repeat, lambda: timed_fit(name, env_id, quick))
            row[env_id] = {"seconds": seconds, "queries": queries}
        out["wall_time"][name] = row
        ok = max(row[t]["seconds"] for t in TASKS) < FIT_TARGET_S
        print(f"   {name:<10}" + "".join(f"{row[t]['seconds']:>16.2f} s" for t in TASKS) + f"   {mark(ok)}", flush=True)

    print(f"\n2. proxy queries/s on SingleIndex-v0 (torch PG: quick budget; SB3: {sb3_budget.proxy_queries:,} queries)")
    contenders = [(n, n, {}, quick) for n in PG_BASELINES] + [
        ("sb3_ppo (gym.make, 1 env, SB3 defaults)", "sb3_ppo", SB3_OUT_OF_THE_BOX, sb3_budget),
        ("sb3_ppo (SB3VecEnv adapter, 16 envs)", "sb3_ppo", {}, sb3_budget),
    ]
    rates: dict[str, float] = {label: 0.0 for label, *_ in contenders}
    for _ in range(repeat):  # interleaved: load changes hit every contender alike
        for label, name, cfg, budget in contenders:
            seconds, queries = timed_fit(name, "SingleIndex-v0", budget, **cfg)
            rates[label] = max(rates[label], queries / seconds)
    ref_1env = rates["sb3_ppo (gym.make, 1 env, SB3 defaults)"]
    ref_vec = rates["sb3_ppo (SB3VecEnv adapter, 16 envs)"]
    print(f"   {'agent':<42}{'queries/s':>12}{'vs SB3 1 env':>14}{'vs SB3 adapter':>16}   target >= {PG_RATIO_TARGET:g}x SB3 1 env")
    for label, rate in rates.items():
        out["throughput"][label] = {"queries_per_s": rate, "ratio_vs_sb3_1env": rate / ref_1env,
                                    "ratio_vs_sb3_adapter": rate / ref_vec}
        verdict = f"   {mark(rate / ref_1env >= PG_RATIO_TARGET)}" if label in PG_BASELINES else "   (reference)"
        print(f"   {label:<42}{rate:>12,.0f}{rate / ref_1env:>13.1f}x{rate / ref_vec:>15.1f}x{verdict}")
    worst = min(rates[n] for n in PG_BASELINES)
    slowest = max(r[t]["seconds"] for r in out["wall_time"].values() for t in TASKS)
    out["summary"] = {"slowest_fit_s": slowest, "min_pg_ratio_vs_sb3_1env": worst / ref_1env,
                      "min_pg_ratio_vs_sb3_adapter": worst / ref_vec}
    out["summary"]["pass"] = {"fit": slowest < FIT_TARGET_S, "pg_ratio": worst / ref_1env >= PG_RATIO_TARGET}
    print(f"\n   {mark(slowest < FIT_TARGET_S)} slowest baseline fit: {slowest:.1f} s (target < {FIT_TARGET_S:g} s)")
    print(f"   {mark(worst / ref_1env >= PG_RATIO_TARGET)} slowest torch PG agent: {worst / ref_1env:.0f}x SB3 PPO through "
          f"gym.make (target >= {PG_RATIO_TARGET:g}x); {worst / ref_vec:.1f}x SB3 on the adapter (no target)")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=2)
    assert all(math.isfinite(v["queries_per_s"]) for v in out["throughput"].values())
    return out


if __name__ == "__main__":
    main()
