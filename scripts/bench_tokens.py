"""Token world benchmark (issue 20): exact metrics over C prompts × V^L responses, and the token env's speed.

1. **Exact metrics**: build a ``TokenConfig(V, L)`` world with C evaluation prompts (its judge holds π_ref, gold
   and proxy as (C, V^L) float64), then score a policy away from π_ref: the prefix-tree enumeration
   (``tree_logp``: Σ_l V^l network evaluations a prompt) and every metric of ``metrics_of_logp``. Reports the
   seconds of each and the process's peak resident memory (``VmHWM``) above what it held before.
2. **Token env**: ``gym.make_vec("tiltenv/Tokens-v0", num_envs=N)`` token steps/s with random actions, against a
   bare batched torch loop doing the same work (draw prompts, write tokens, score the finished responses with
   the proxy); and the single env (``gym.make``) steps/s. Target (issue 20): vector env ≥ 0.7× the bare loop.
3. **Race to a gold level** (``--only race``): token-level PPO, GRPO and RLOO (``baselines.TokenPG``, policy at
   π_ref, the task's β as TRL applies it) and SB3 PPO on ``tiltenv/Tokens-v0`` (``MultiInputPolicy``, its own
   initialization; ``kl_coef = ent_coef = β``: the same objective J_β in expectation): responses scored
   and training seconds (exact evaluations excluded) until the exact gold value reaches π_ref's + 60% of the way
   to the best response's.

Usage: ``python scripts/bench_tokens.py [--quick] [--C 512 --V 16 --L 4] [--threads N]``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import tiltenv  # noqa: E402,F401
from tiltenv._validation import ArgumentParser, add_threads_argument, apply_threads  # noqa: E402
from tiltenv.worlds.scoring import metrics_of_logp  # noqa: E402
from tiltenv.worlds.tokens import TokenConfig  # noqa: E402
from tiltenv.worlds.world import make_world, torch_generator  # noqa: E402

ENV_TARGET = 0.7
#: The race's gold level: π_ref's gold + LEVEL × (the best response's − π_ref's), averaged over prompts.
LEVEL = 0.6


def rss_peak() -> tuple[int, int]:
    """(current, peak) resident bytes of this process."""
    vals = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(("VmRSS:", "VmHWM:")):
                vals[line.split(":")[0]] = int(line.split()[1]) * 1024
    return vals.get("VmRSS", 0), vals.get("VmHWM", 0)


def exact_metrics(C: int, V: int, L: int) -> dict:
    base, _ = rss_peak()
    t, c = time.perf_counter(), time.process_time()
    world = make_world(TokenConfig(V=V, L=L, n_eval_contexts=C, n_norm_contexts=64, n_labels=2000), fresh=True)
    build, build_cpu = time.perf_counter() - t, time.process_time() - c
    policy = world.task.make_policy().requires_grad_(False)
    with torch.no_grad():
        policy.head.weight.add_(torch.randn(policy.head.weight.shape, generator=torch.Generator().manual_seed(0)))
    t, c = time.perf_counter(), time.process_time()
    logp = world.judge.policy_logp(policy)
    tree, tree_cpu = time.perf_counter() - t, time.process_time() - c
    t, c = time.perf_counter(), time.process_time()
    res = metrics_of_logp(logp, world.judge)
    metrics, metrics_cpu = time.perf_counter() - t, time.process_time() - c
    _, peak = rss_peak()
    return {"C": C, "V": V, "L": L, "K": V**L, "build_s": build, "tree_logp_s": tree, "metrics_s": metrics,
            "build_cpu_s": build_cpu, "tree_logp_cpu_s": tree_cpu, "metrics_cpu_s": metrics_cpu,
            "peak_mib_above_start": (peak - base) / 2**20, "kl": res["kl"], "gold_value": res["gold_value"],
            "value_gap": res["value_gap"], "prefix_evals_per_prompt": sum(V**lv for lv in range(L))}


def env_speed(N: int, episodes: int, V: int = 8, L: int = 4) -> dict:
    kw = dict(V=V, L=L, n_labels=500, n_eval_contexts=8, n_norm_contexts=8)
    venv = gym.make_vec("tiltenv/Tokens-v0", num_envs=N, **kw)
    task = venv.unwrapped.task if hasattr(venv, "unwrapped") else venv.task
    rng = np.random.default_rng(0)
    actions = [rng.integers(0, V, N) for _ in range(L)]

    def run_env():
        venv.reset(seed=0)
        for _ in range(episodes):
            for t in range(L):
                venv.step(actions[t])

    def run_bare():
        g = torch_generator(0)
        acts = [torch.as_tensor(a) for a in actions]
        for _ in range(episodes):
            prompts = task.sampler.prompts(N, g)
            tokens = torch.full((N, L), V, dtype=torch.int64)
            for t in range(L):
                tokens[:, t] = acts[t]
            task.reward(prompts, tokens).to(torch.float32).numpy()

    best = {"env": float("inf"), "bare": float("inf")}
    for _ in range(3):  # interleaved, best of 3: background load hits both alike
        for name, fn in (("env", run_env), ("bare", run_bare)):
            t = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t)
    steps = N * episodes * L
    env = gym.make("tiltenv/Tokens-v0", **kw)
    env.reset(seed=0)
    n_single = 400 * L
    t = time.perf_counter()
    for i in range(n_single):
        _, _, term, _, _ = env.step(int(actions[i % L][0]))
        if term:
            env.reset()
    single = n_single / (time.perf_counter() - t)
    return {"num_envs": N, "vector_steps_per_s": steps / best["env"], "bare_steps_per_s": steps / best["bare"],
            "ratio": best["bare"] / best["env"], "single_env_steps_per_s": single}


def race(quick: bool) -> list[dict]:
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import BaseCallback

    from baselines.token_pg import TokenPG, TokenPGConfig
    from baselines.token_sb3 import SB3TokenPolicy
    from tiltenv import metrics as M

    kw = dict(V=8, L=3, n_labels=1000, n_eval_contexts=32, n_norm_contexts=64)
    world = make_world(TokenConfig(**kw))
    j = world.judge
    ref = M.policy_value(j.eval_ref_logp, j.eval_gold)
    level = ref + LEVEL * (float(j.eval_gold.max(-1).values.mean()) - ref)
    TokenPG(TokenPGConfig(batch_size=2, num_generations=2)).fit(world.task, proxy_queries=4)  # warm-up: first-use imports
    budget = 4096 if quick else 49_152  # responses scored
    out = []

    class Clock:
        def __init__(self) -> None:
            self.start, self.paused, self.hit = time.perf_counter(), 0.0, None

        def check(self, responses: int, policy) -> None:
            t = time.perf_counter()
            gold = M.policy_value(j.policy_logp(policy), j.eval_gold)
            if self.hit is None and gold >= level:
                self.hit = (responses, t - self.start - self.paused, gold)
            self.paused += time.perf_counter() - t

    for alg in ("ppo", "grpo", "rloo"):
        clock = Clock()
        TokenPG(TokenPGConfig(algorithm=alg, learning_rate=0.01, batch_size=16, num_generations=4,
                              num_iterations=2 if alg == "ppo" else 1)).fit(
            world.task, proxy_queries=budget, checkpoint=lambda step, pol: clock.check(step, pol), n_checkpoints=40)
        out.append({"method": f"token {alg}", "level": level, "responses": clock.hit and clock.hit[0],
                    "seconds": clock.hit and clock.hit[1]})
    beta = world.task.beta  # the same objective J_β: per-token β log π_ref from the env, the entropy bonus β
    env = gym.make("tiltenv/Tokens-v0", kl_coef=beta, **kw)
    model = PPO("MultiInputPolicy", env, n_steps=192, batch_size=64, n_epochs=4, learning_rate=3e-3, ent_coef=beta,
                seed=0, verbose=0, device="cpu")
    clock = Clock()
    adapter = SB3TokenPolicy(model, world.task)

    class Every(BaseCallback):
        def _on_step(self) -> bool:
            return True

        def _on_rollout_end(self) -> None:
            clock.check(self.num_timesteps // kw["L"], adapter)

    model.learn(budget * kw["L"], callback=Every())
    out.append({"method": "SB3 PPO (env)", "level": level, "responses": clock.hit and clock.hit[0],
                "seconds": clock.hit and clock.hit[1]})
    return out


def main(argv: list[str] | None = None) -> dict:
    p = ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small sizes (the test suite)")
    p.add_argument("--C", type=int, default=512)
    p.add_argument("--V", type=int, default=16)
    p.add_argument("--L", type=int, default=4)
    p.add_argument("--only", default="metrics,env", help="comma-separated: metrics, env, race")
    add_threads_argument(p)
    args = p.parse_args(argv)
    apply_threads(p, args.threads)
    only = set(args.only.split(","))
    out: dict = {}
    if "metrics" in only:
        C, V, L = (16, 8, 3) if args.quick else (args.C, args.V, args.L)
        out["metrics"] = m = exact_metrics(C, V, L)
        print(f"exact metrics, C={C} prompts × V^L={V}^{L}={V**L} responses: build {m['build_s']:.1f} s, tree_logp "
              f"{m['tree_logp_s']:.2f} s, all metrics {m['metrics_s']:.2f} s (CPU seconds: {m['build_cpu_s']:.1f}, "
              f"{m['tree_logp_cpu_s']:.2f}, {m['metrics_cpu_s']:.2f}), peak +{m['peak_mib_above_start']:.0f} MiB",
              flush=True)
    if "env" in only:
        out["env"] = []
        for N in ((64,) if args.quick else (256, 4096)):
            e = env_speed(N, 3 if args.quick else 20)
            out["env"].append(e)
            print(f"token env N={N}: {e['vector_steps_per_s']:,.0f} token steps/s vs bare loop "
                  f"{e['bare_steps_per_s']:,.0f} ({e['ratio']:.2f}x, target ≥ {ENV_TARGET}x "
                  f"{'✓' if e['ratio'] >= ENV_TARGET else '✗'}); single env {e['single_env_steps_per_s']:,.0f} steps/s",
                  flush=True)
    if "race" in only:
        out["race"] = race(args.quick)
        for r in out["race"]:
            reached = (f"{r['responses']:,} responses, {r['seconds']:.1f} s" if r["responses"] is not None
                       else "not reached within the budget")
            print(f"race to gold {r['level']:.3f}: {r['method']:<14} {reached}", flush=True)
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
