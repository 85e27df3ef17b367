"""Throughput benchmark on one device: every figure is a ratio against a peer measured in the same run.

1. Vector env: ``gym.make_vec`` steps/s, default (``final_info=True``) and ``final_info=False``, at several N,
   against a bare batched torch loop on the same device doing the same sampling and scoring (the practical
   limit). Targets: default >= 0.7x the bare loop on the CPU (numpy and torch output), >= 0.8x at
   N >= 65,536 on a GPU. On the CPU also against Gymnasium's ``SyncVectorEnv`` over the single env.
2. Exact metrics on 10^6 contexts x K=16 float64 on the device against a plain copy of their inputs.
   Targets: kl / value / value_gap / tilt_logp <= 3x, best-of-n <= 10x.
3. Proxy build (``make_world``, cache off) of ``mlp`` and ``ensemble`` (k=5) at d=64, K=64, 16k labels,
   whole build and training alone. Targets: ensemble(5) <= 2x one member on either device; on a GPU,
   training >= 3x faster than on the CPU (the CPU build is timed in the same run).

Every timing is the best of a few runs, interleaved with the runs it is compared to, so that background
load hits both alike; on CUDA every timed run ends with ``torch.cuda.synchronize()``.

Usage: ``python scripts/bench.py [--device cpu|cuda|auto] [--quick] [--only env,metrics,proxy] [--threads N]``
(``--quick``: small sizes, for the test suite; ``--device auto``: CUDA when present).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable

import gymnasium as gym
import numpy as np
import torch

import tiltenv
from tiltenv import metrics as M
from tiltenv._profiling import DeviceOps, cuda_syncs
from tiltenv._validation import ArgumentParser, add_threads_argument, apply_threads

#: Targets (the issue's): vector env default / bare loop, metric / copy, proxy ratios.
ENV_TARGET = {"cpu": 0.7, "cuda": 0.8}
ENV_TARGET_MIN_N = {"cpu": 0, "cuda": 65_536}
METRIC_TARGET = {"kl_divergence": 3.0, "policy_value": 3.0, "value_gap": 3.0, "tilt_logp": 3.0,
                 "best_of_n_logp": 10.0, "best_of_n_tilted_ref": 10.0}
ENSEMBLE_TARGET = 2.0
GPU_TRAIN_SPEEDUP_TARGET = 3.0


def mark(ok: bool) -> str:
    """✓ when a figure meets its target, ✗ when it misses it."""
    return "✓" if ok else "✗"


def resolve(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("bench.py: error: --device cuda but CUDA is not available (use --device cpu or auto)")
    return torch.device(device)


def synchronizer(device: torch.device) -> Callable[[], None]:
    return torch.cuda.synchronize if device.type == "cuda" else (lambda: None)


def race(fns: dict[str, Callable[[], object]], repeat: int, sync: Callable[[], None] = lambda: None) -> dict[str, float]:
    """Best wall time of each function, the runs interleaved so background load hits all alike."""
    for fn in fns.values():
        fn()  # warm-up
    sync()
    best = {name: math.inf for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            sync()
            best[name] = min(best[name], time.perf_counter() - t0)
    return best


# --------------------------------------------------------------------------- 1. vector env


def bench_vector_env(num_envs: int, d: int, K: int, steps: int, repeat: int, device: torch.device,
                     output: str = "torch", sync_env: bool = False) -> dict[str, float]:
    """Default and ``final_info=False`` vector env vs the bare loop (and SyncVectorEnv) at one N."""
    kwargs = dict(d=d, K=K, n_labels=500, n_eval_contexts=16, n_norm_contexts=256)
    make = lambda **kw: gym.make_vec("tiltenv/SingleIndex-v0", num_envs=num_envs, device=str(device),  # noqa: E731
                                     output=output, **kwargs, **kw)
    default, lean = make(), make(final_info=False)
    default.reset(seed=0)
    lean.reset(seed=0)
    host = np.random.default_rng(0).integers(0, K, size=(steps, num_envs))
    acts = torch.from_numpy(host).to(device) if output == "torch" else host

    def run(venv):
        def go():
            for a in acts:
                venv.step(a)
        return go

    # The bare loop: the same sampling, reference log-probs and linear proxy, no env machinery.
    proxy = default.unwrapped.task.proxy
    w = (proxy.w / proxy.scale).to(device, torch.float32)
    b = float((proxy.b - proxy.shift) / proxy.scale)
    g = torch.Generator(device=device).manual_seed(0)
    rows = torch.arange(num_envs, device=device) * K
    x = torch.randn((num_envs, K, d), generator=g, device=device)
    acts_t = torch.from_numpy(host).to(device)
    to_host = output == "numpy"

    def run_bare():
        nonlocal x
        for a in acts_t:
            r = x.reshape(-1, d).index_select(0, rows + a) @ w + b
            x = torch.randn((num_envs, K, d), generator=g, device=device)
            ref = torch.full((num_envs, K), -math.log(K), device=device)
            if to_host:
                _ = (x.cpu().numpy(), ref.cpu().numpy(), r.cpu().numpy())

    fns = {"default": run(default), "lean": run(lean), "bare": run_bare}
    if sync_env:
        sync = gym.make_vec("tiltenv/SingleIndex-v0", num_envs=num_envs, vectorization_mode="sync", **kwargs)
        sync.reset(seed=0)
        sync_steps = max(2, steps // 8)

        def run_sync():
            for a in host[:sync_steps]:
                sync.step(a)
        fns["sync"] = run_sync
    t = race(fns, repeat, synchronizer(device))
    out = {
        "default_steps_per_s": num_envs * steps / t["default"],
        "lean_steps_per_s": num_envs * steps / t["lean"],
        "bare_steps_per_s": num_envs * steps / t["bare"],
        "default_vs_bare": t["bare"] / t["default"],
        "lean_vs_bare": t["bare"] / t["lean"],
    }
    # what bounds a small-N step on a GPU: its kernel launches and host syncs (counted, not timed)
    with DeviceOps() as ops:
        default.step(acts[0])
    out["ops_per_step"] = float(ops.launches)
    if device.type == "cuda":
        out["syncs_per_step"] = float(cuda_syncs(lambda: default.step(acts[0])))
    if sync_env:
        out["sync_steps_per_s"] = num_envs * sync_steps / t["sync"]
        out["default_vs_sync"] = (t["sync"] / sync_steps) / (t["default"] / steps)
    for venv in (default, lean):
        venv.close()
    return out


# --------------------------------------------------------------------------- 2. metrics


def bench_metrics(C: int, K: int, repeat: int, device: torch.device) -> dict[str, float]:
    g = torch.Generator(device=device).manual_seed(0)
    logp = torch.log_softmax(torch.randn((C, K), generator=g, dtype=torch.float64, device=device), -1)
    ref = torch.full((C, K), -math.log(K), dtype=torch.float64, device=device)
    gold = torch.randn((C, K), generator=g, dtype=torch.float64, device=device)
    beta = 0.5
    cases = {
        "kl_divergence": (lambda: M.kl_divergence(logp, ref), (logp, ref)),
        "policy_value": (lambda: M.policy_value(logp, gold), (logp, gold)),
        "value_gap": (lambda: M.value_gap(logp, ref, gold, beta), (logp, ref, gold)),
        "tilt_logp": (lambda: M.tilt_logp(ref, gold, beta), (ref, gold)),
        "reward_variance": (lambda: M.reward_variance(logp, gold), (logp, gold)),
        "best_of_n_logp": (lambda: M.best_of_n_logp(ref, gold, 16), (ref, gold)),  # uniform π_ref (η = 0)
        "best_of_n_tilted_ref": (lambda: M.best_of_n_logp(logp, gold, 16), (logp, gold)),  # non-uniform π_ref
    }
    out: dict[str, float] = {}
    for name, (fn, arrays) in cases.items():
        t = race({"metric": fn, "copy": lambda arrays=arrays: [a.clone() for a in arrays]}, repeat,
                 synchronizer(device))
        out[f"{name}_s"] = t["metric"]
        out[f"{name}_vs_copy"] = t["metric"] / t["copy"]
    return out


# --------------------------------------------------------------------------- 3. proxy build


def gemm_peak(device: torch.device, n: int = 2048, repeat: int = 3) -> float:
    """float32 matrix-multiply flops/s of ``device`` on an (n, n) @ (n, n) product, best of ``repeat``."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    return 2.0 * n**3 / _best_time(lambda: torch.mm(a, b), device, repeat)


def member_gemm_seconds(opts, d: int, n_labels: int, device: torch.device, steps: int = 200, repeat: int = 3) -> float:
    """The matrix products alone of one MLP member's whole training, at the training's own shapes.

    Per step (pairwise: 2·batch rows): the forward product of every layer, and the backward products
    (weight gradients of every layer, input gradients of every layer but the first), as plain ``torch.mm``;
    timed over ``steps`` steps and scaled to the training's step count. No autograd, optimizer or
    elementwise work: a lower bound on what each extra ensemble member adds.
    """
    from tiltenv._cost import _mlp_steps

    rows = 2 * (n_labels if opts.batch_size == 0 or opts.batch_size >= n_labels else opts.batch_size)
    dims = [d] + [opts.width] * opts.depth + [1]
    acts = [torch.randn(rows, i, device=device) for i in dims]
    weights = [torch.randn(o, i, device=device) for i, o in zip(dims, dims[1:])]

    def step() -> None:
        for j, W in enumerate(weights):
            torch.mm(acts[j], W.t())  # forward
            torch.mm(acts[j + 1].t(), acts[j])  # weight gradient (out, in)
            if j:
                torch.mm(acts[j + 1], W)  # input gradient

    def run() -> None:
        for _ in range(steps):
            step()

    return _best_time(run, device, repeat) * _mlp_steps(opts, n_labels) / steps


def _best_time(fn: Callable[[], object], device: torch.device, repeat: int) -> float:
    sync = synchronizer(device)
    fn()
    sync()
    best = math.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - t0)
    return best


def bench_proxy(d: int, K: int, n_labels: int, k: int, repeat: int, device: torch.device,
                member_kwargs: dict | None = None) -> dict[str, float]:
    """Whole ``make_world`` build and training alone of ``mlp`` and ``ensemble`` (k members), cache off,
    on ``device`` and (when that is not the CPU) on the CPU, all runs interleaved."""
    from tiltenv import TaskConfig, make_world
    from tiltenv.rewards import reward_models as R
    from tiltenv._cost import proxy_flops, proxy_seconds
    from tiltenv.rewards.proxy_base import parse_options

    member_kwargs = dict(member_kwargs or {})
    devices = [device] if device.type == "cpu" else [device, torch.device("cpu")]
    cfgs = {}
    for dev in devices:
        tag = "" if dev == device else "_cpu"
        cfgs[f"mlp{tag}"] = TaskConfig(d=d, K=K, n_labels=n_labels, proxy="mlp",
                                       proxy_kwargs={**member_kwargs, "device": dev.type})
        cfgs[f"ensemble{tag}"] = TaskConfig(d=d, K=K, n_labels=n_labels, proxy="ensemble",
                                            proxy_kwargs={"k": k, "member_kwargs": member_kwargs,
                                                          "device": dev.type})
    training = {"s": 0.0}
    real = R.train_mlps

    def timed_train(*a, **kw):  # train_mlps returns CPU models: the copy back synchronizes the device
        t0 = time.perf_counter()
        out = real(*a, **kw)
        training["s"] += time.perf_counter() - t0
        return out

    saved = os.environ.get("TILTENV_PROXY_CACHE")
    os.environ["TILTENV_PROXY_CACHE"] = "0"
    R.train_mlps = timed_train
    best = {name: [math.inf, math.inf] for name in cfgs}
    try:
        make_world(TaskConfig(d=8, K=8, n_labels=64, proxy="mlp", proxy_kwargs={"epochs": 1, "device": device.type}),
                   fresh=True)  # warm-up (CUDA context, kernels)
        for _ in range(repeat):
            for name, cfg in cfgs.items():
                training["s"] = 0.0
                t0 = time.perf_counter()
                make_world(cfg, fresh=True)
                whole = time.perf_counter() - t0
                best[name] = [min(best[name][0], whole), min(best[name][1], training["s"])]
    finally:
        R.train_mlps = real
        if saved is None:
            os.environ.pop("TILTENV_PROXY_CACHE", None)
        else:
            os.environ["TILTENV_PROXY_CACHE"] = saved
    out: dict[str, float] = {}
    for name, (whole, train) in best.items():
        out[f"{name}_build_s"], out[f"{name}_train_s"] = whole, train
    for name in ("mlp", "ensemble"):  # the pre-build estimate users see, against the measured training
        cfg = cfgs[name]
        out[f"{name}_estimate_s"] = proxy_seconds(cfg.proxy, parse_options(cfg.proxy, dict(cfg.proxy_kwargs)),
                                                  d=d, n_labels=n_labels, label_kind=cfg.label_kind)
    # The batched ensemble's floor: one member's measured training plus (k-1) members' matrix products alone
    # (no autograd, optimizer or elementwise work for the extra members), at the training's shapes and at
    # the device's large-GEMM peak. Above ENSEMBLE_TARGET, the target is out of reach on this device
    # whatever the batching (unless batching made the products faster than plain mm, which bmm does not).
    mlp_opts = parse_options("mlp", dict(cfgs["mlp"].proxy_kwargs))
    out["gemm_peak_flops"] = peak = gemm_peak(device)
    out["member_gemm_s"] = gemm_s = member_gemm_seconds(mlp_opts, d, n_labels, device)
    member_flops = proxy_flops("mlp", mlp_opts, d=d, n_labels=n_labels, label_kind=cfgs["mlp"].label_kind)
    out["ensemble_floor_train"] = 1.0 + (k - 1) * gemm_s / best["mlp"][1]
    out["ensemble_floor_train_at_peak"] = 1.0 + (k - 1) * member_flops / peak / best["mlp"][1]
    for tag in [""] + (["_cpu"] if device.type != "cpu" else []):
        out[f"ensemble_vs_mlp_build{tag}"] = best[f"ensemble{tag}"][0] / best[f"mlp{tag}"][0]
        out[f"ensemble_vs_mlp_train{tag}"] = best[f"ensemble{tag}"][1] / best[f"mlp{tag}"][1]
    if device.type != "cpu":
        for name in ("mlp", "ensemble"):
            out[f"{name}_train_speedup_vs_cpu"] = best[f"{name}_cpu"][1] / best[name][1]
            out[f"{name}_build_speedup_vs_cpu"] = best[f"{name}_cpu"][0] / best[name][0]
    return out


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    parser = ArgumentParser(prog="bench.py", description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"], help="device to benchmark")
    parser.add_argument("--quick", action="store_true", help="small sizes (for tests)")
    parser.add_argument("--only", default="env,metrics,proxy", help="comma-separated sections (env, metrics, proxy)")
    add_threads_argument(parser)
    args = parser.parse_args(argv)
    apply_threads(parser, args.threads)
    device = resolve(args.device)
    sections = {s.strip() for s in args.only.split(",") if s.strip()}
    unknown = sections - {"env", "metrics", "proxy"}
    if unknown:
        parser.error(f"--only: unknown section(s) {sorted(unknown)}; choose from env, metrics, proxy")
    gpu = device.type == "cuda"
    if args.quick:
        env_ns, env_cfg = [64], dict(d=32, K=16, steps=10, repeat=2)
        met_cfg = dict(C=20_000, K=16, repeat=2)
        proxy_cfg = dict(d=8, K=8, n_labels=512, k=5, repeat=1, member_kwargs={"epochs": 2})
    else:
        env_ns = [4096, 65_536, 262_144] if gpu else [1024, 4096]
        env_cfg = dict(d=32, K=16, steps=50, repeat=5)
        met_cfg = dict(C=1_000_000, K=16, repeat=5)
        proxy_cfg = dict(d=64, K=64, n_labels=16_384, k=5, repeat=3)
    name = torch.cuda.get_device_name(device) if gpu else "CPU"
    print(f"torch {torch.__version__}, device {device} ({name}), threads {torch.get_num_threads()}, "
          f"tiltenv {tiltenv.__version__}")
    results: dict[str, dict[str, float]] = {}

    if "env" in sections:
        outputs = ["torch"] if gpu else ["numpy", "torch"]
        target, min_n = ENV_TARGET[device.type], ENV_TARGET_MIN_N[device.type]
        print(f"\n[vector env] d={env_cfg['d']}, K={env_cfg['K']}, on {device}: env-steps/s and the ratio to a bare "
              f"torch loop (target default >= {target}x{f' at N >= {min_n:,}' if min_n else ''})")
        for output in outputs:
            for i, n in enumerate(env_ns):
                r = bench_vector_env(n, device=device, output=output, sync_env=not gpu and i == 0, **env_cfg)
                results[f"env_{output}_N{n}"] = r
                ok = r["default_vs_bare"] >= target
                tgt = f"{mark(ok)} (>= {target}x)" if n >= min_n else "(no target at this N)"
                print(f"  output={output:5s} N={n:>7,}: default {r['default_steps_per_s']:13,.0f}/s "
                      f"{r['default_vs_bare']:5.2f}x bare {tgt}; final_info=False {r['lean_vs_bare']:5.2f}x bare; "
                      f"bare {r['bare_steps_per_s']:13,.0f}/s"
                      + (f"; {r['default_vs_sync']:.0f}x SyncVectorEnv" if "default_vs_sync" in r else ""))
        r = results[f"env_{outputs[-1]}_N{env_ns[0]}"]
        print(f"  a default step ({outputs[-1]} output): {r['ops_per_step']:.0f} device ops (kernel launches on a GPU)"
              + (f", {r['syncs_per_step']:.0f} host syncs" if "syncs_per_step" in r else "; host syncs are counted on CUDA"))

    if "metrics" in sections:
        met = bench_metrics(device=device, **met_cfg)
        results["metrics"] = met
        print(f"\n[exact metrics] C={met_cfg['C']:,} contexts x K={met_cfg['K']}, float64, on {device} "
              "(time vs a plain copy of the inputs)")
        for key in [k for k in met if k.endswith("_s")]:
            metric = key[:-2]
            ratio = met[metric + "_vs_copy"]
            limit = METRIC_TARGET.get(metric)
            tgt = f"{mark(ratio <= limit)} (<= {limit:g}x)" if limit else "(no target)"
            print(f"  {metric:22s}: {met[key] * 1e3:9.2f} ms  {ratio:6.2f}x copy  {tgt}")

    if "proxy" in sections:
        pr = bench_proxy(device=device, **proxy_cfg)
        results["proxy"] = pr
        print(f"\n[proxy build] make_world, cache off, d={proxy_cfg['d']}, K={proxy_cfg['K']}, "
              f"{proxy_cfg['n_labels']:,} labels, ensemble of k={proxy_cfg['k']} mlp members "
              f"(best of {proxy_cfg['repeat']}, interleaved)")
        for tag, dev in [("", device)] + ([("_cpu", torch.device("cpu"))] if gpu else []):
            print(f"  on {dev}: mlp {pr[f'mlp{tag}_build_s']:.2f} s (training {pr[f'mlp{tag}_train_s']:.2f} s), "
                  f"ensemble {pr[f'ensemble{tag}_build_s']:.2f} s (training {pr[f'ensemble{tag}_train_s']:.2f} s)")
            for what in ("build", "train"):
                ratio = pr[f"ensemble_vs_mlp_{what}{tag}"]
                print(f"    ensemble / mlp, {'whole build' if what == 'build' else 'training'}: {ratio:.2f}x "
                      f"{mark(ratio <= ENSEMBLE_TARGET)} (<= {ENSEMBLE_TARGET:g}x)")
            if tag == "":
                print(f"    floor of ensemble / mlp training (one member + {proxy_cfg['k'] - 1} members' matrix products "
                      f"alone): {pr['ensemble_floor_train']:.2f}x at the training's shapes "
                      f"({pr['member_gemm_s']:.2f} s a member); {pr['ensemble_floor_train_at_peak']:.2f}x at the "
                      f"{pr['gemm_peak_flops'] / 1e9:.0f} GFLOP/s peak of a 2048² product")
        print(f"  pre-build estimate (reference 2-core CPU, one thread) vs measured training on {device}: "
              + "; ".join(f"{kind} {pr[f'{kind}_estimate_s']:.2f} s vs {pr[f'{kind}_train_s']:.2f} s "
                          f"({pr[f'{kind}_estimate_s'] / pr[f'{kind}_train_s']:.2f}x)" for kind in ("mlp", "ensemble")))
        if gpu:
            for kind in ("mlp", "ensemble"):
                s = pr[f"{kind}_train_speedup_vs_cpu"]
                print(f"  {kind} training on {device} vs CPU: {s:.2f}x faster {mark(s >= GPU_TRAIN_SPEEDUP_TARGET)} "
                      f"(>= {GPU_TRAIN_SPEEDUP_TARGET:g}x); whole build {pr[f'{kind}_build_speedup_vs_cpu']:.2f}x")
    return results


if __name__ == "__main__":
    main()
