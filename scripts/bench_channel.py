"""Channel benchmark: one baseline run in-process vs through the sandbox (``leaderboard.sandbox.run_agent``).

In-process: ``agent.fit(task, budget, checkpoint)`` on the public task, then every checkpoint's policy on
the judge's evaluation contexts (``tiltenv.worlds.evaluation.policy_logp``) — what scoring without a sandbox
costs. Sandboxed: ``run_agent`` (a child process, every proxy query through the counting channel, the
checkpoints' log-probabilities validated on the way back). Both on ``tiltenv/Hump-v0`` (default kwargs)
at the quick budget (65,536 proxy queries), REINFORCE and GRPO with their defaults, CPU, one thread.
Runs are interleaved and repeated; each figure is the best of ``--repeat``. The zygote (started once per
scorer process) is started before timing and its start-up reported on its own; ``--spawn popen`` times
one fresh interpreter per run instead. Target: sandboxed / in-process ≤ 1.3.

Usage: ``python scripts/bench_channel.py [--quick] [--repeat N] [--spawn zygote|popen] [--json out.json]``
(``--quick``: a smaller task and budget, a few seconds, for the test suite).
"""

from __future__ import annotations

import argparse
import json
import time

import gymnasium as gym
import numpy as np
import torch

import tiltenv  # noqa: F401  (registers the envs)
from baselines import TrainBudget, make_agent
from leaderboard import sandbox
from leaderboard.sandbox import zygote
from leaderboard.spec import Limits
from leaderboard.submission import load_submission
from tiltenv.worlds.evaluation import policy_logp, resolve_judge

TARGET = 1.3


def in_process(name: str, task, judge, budget: TrainBudget) -> tuple[float, np.ndarray, int]:
    task.budget.reset()
    started = time.perf_counter()
    snaps = []
    make_agent(name, device="cpu").fit(task, budget, lambda step, policy: snaps.append((step, policy)))
    logps = np.stack([policy_logp(p, judge.eval_candidates, judge.eval_ref_logp).numpy() for _, p in snaps])
    return time.perf_counter() - started, logps, task.budget.proxy_queries


def sandboxed(name: str, task, judge, budget: TrainBudget, spawn: str) -> tuple[float, np.ndarray, int]:
    sub = load_submission(name, config={"device": "cpu"})
    started = time.perf_counter()
    out = sandbox.run_agent(sub, task, budget, judge.eval_candidates, judge.eval_ref_logp,
                            Limits(wall_time=600, memory_mb=8192), spawn=spawn)
    return time.perf_counter() - started, out.logps, out.proxy_queries


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small task and budget (a few seconds)")
    parser.add_argument("--repeat", type=int, default=None, help="runs per figure (best kept); default 3, quick 1")
    parser.add_argument("--spawn", default="zygote", choices=sandbox.SPAWN_MODES)
    parser.add_argument("--baselines", default="reinforce,grpo")
    parser.add_argument("--json", default=None, help="write the figures to this file")
    args = parser.parse_args()
    torch.set_num_threads(1)
    repeat = args.repeat or (1 if args.quick else 3)
    kwargs = {"n_eval_contexts": 128, "K": 32} if args.quick else {}
    budget = TrainBudget(proxy_queries=4096 if args.quick else 65_536)
    env = gym.make("tiltenv/Hump-v0", **kwargs)
    task, judge = env.unwrapped.task, resolve_judge(env)

    started = time.perf_counter()
    if args.spawn == "zygote":
        zygote._zygote()
    startup = time.perf_counter() - started
    print(f"Hump-v0 {kwargs or '(default kwargs)'}, budget {budget.proxy_queries} proxy queries, "
          f"C={judge.eval_candidates.shape[0]}, K={task.K}, spawn={args.spawn} (zygote start-up {startup:.2f} s, once)")
    rows = []
    for name in args.baselines.split(","):
        in_process(name, task, judge, TrainBudget(proxy_queries=min(budget.proxy_queries, 4096)))  # warm-up
        t_in, t_sb = [], []
        for _ in range(repeat):
            t, lp_in, q_in = in_process(name, task, judge, budget)
            t_in.append(t)
            t, lp_sb, q_sb = sandboxed(name, task, judge, budget, args.spawn)
            t_sb.append(t)
        ratio = min(t_sb) / min(t_in)
        same = bool(np.array_equal(lp_in, lp_sb))
        diff = float(np.max(np.abs(lp_in - lp_sb))) if lp_in.shape == lp_sb.shape else float("nan")
        rows.append({"baseline": name, "in_process_s": min(t_in), "sandbox_s": min(t_sb), "ratio": ratio,
                     "queries_in_process": q_in, "queries_sandbox": q_sb, "bit_identical": same, "max_abs_diff": diff})
        mark = "✓" if ratio <= TARGET else "✗"
        print(f"  {name:<10} in-process {min(t_in):7.3f} s   sandbox {min(t_sb):7.3f} s   ratio {ratio:5.2f}× {mark} "
              f"(target ≤ {TARGET})   queries {q_in} / {q_sb}   log-probs {'bit-identical' if same else f'max |Δ| {diff:.2e}'}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"task": "tiltenv/Hump-v0", "kwargs": kwargs, "budget": budget.proxy_queries, "spawn": args.spawn,
                       "zygote_startup_s": startup, "repeat": repeat, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
