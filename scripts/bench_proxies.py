"""Proxy benchmark and measurements (issue 4): every figure in the proxy report comes from here.

Sections (each a function returning a pandas DataFrame):

1. ``timings``   — training time of each proxy kind on the default task (CPU), cached construction time
   (``make_world`` from the on-disk cache, and ``gym.make`` of a fresh env id in a new process).
   Targets: cached construction < 0.2 s; any default proxy trains in < 10 s on 2 cores.
2. ``two_stage`` — recovered fraction / mean |cos| / ESS / collapse baseline of the two-stage model per
   link, β1 and n at d = 64 (pointwise labels, the paper's setting).
3. ``labels``    — gold correlation and accuracy of the ``mlp`` proxy vs label budget and flip rate.
4. ``hump``      — best-of-n drop of gold from its peak on Hump-v0 for single proxies (measured drop with
   its paired standard error; decided by ``metrics.overoptimization``).
5. ``ensembles`` — the drop per diversity source × aggregator (members trained once per diversity source;
   aggregators applied to the same members).

Usage: ``.venv/bin/python scripts/bench_proxies.py [--quick] [--only timings,two_stage,...] [--threads N]``.
The proxy cache goes to a temporary directory unless ``TILTENV_CACHE_DIR`` is set.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import tempfile
import time

import pandas as pd
import torch

from tiltenv._validation import ArgumentParser, add_threads_argument, apply_threads

NS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
#: Targets of section 1: a cached construction (make_world from the cache; gym.make in a new process) and the
#: training of any default proxy on 2 cores.
CACHED_TARGET_S = 0.2
TRAIN_TARGET_S = 10.0


def mark(ok: bool) -> str:
    """✓ when a figure meets its target, ✗ when it misses it."""
    return "✓" if ok else "✗"


def with_targets(df: pd.DataFrame) -> pd.DataFrame:
    """The timings table with a ✓/✗ column after every figure that has a target."""
    out = df.copy()
    out.insert(out.columns.get_loc("build_uncached_s") + 1, f"<{TRAIN_TARGET_S:g}s",
               [mark(v < TRAIN_TARGET_S) for v in df["build_uncached_s"]])
    out.insert(out.columns.get_loc("build_cached_s") + 1, f"<{CACHED_TARGET_S:g}s",
               [mark(v < CACHED_TARGET_S) for v in df["build_cached_s"]])
    out[f"new_process_<{CACHED_TARGET_S:g}s"] = [mark(v < CACHED_TARGET_S) for v in df["gym_make_new_process_s"]]
    return out


def _cfg(**kw):
    from tiltenv import TaskConfig

    return TaskConfig(**kw)


def timings(repeat: int = 3) -> pd.DataFrame:
    """Training time per kind (default task, cache off) and cached construction times."""
    from tiltenv import make_world
    from tiltenv.rewards import proxy_cache

    rows = []
    kinds = {"linear": {}, "parametric": {"angle": 30.0}, "mlp": {}, "two_stage": {}, "ensemble": {}}
    make_world(_cfg(proxy="mlp", n_labels=64, proxy_kwargs={"epochs": 1}), fresh=True)  # warm-up
    for kind, kw in kinds.items():
        cfg = _cfg(proxy=kind, proxy_kwargs=kw)
        os.environ["TILTENV_PROXY_CACHE"] = "0"
        train = min(_time(lambda: make_world(cfg, fresh=True)) for _ in range(repeat))
        os.environ["TILTENV_PROXY_CACHE"] = "1"
        make_world(cfg, fresh=True)  # fill the cache
        hits = proxy_cache.stats["hits"]
        cached = min(_time(lambda: make_world(cfg, fresh=True)) for _ in range(repeat))
        hit = proxy_cache.stats["hits"] > hits
        rows.append({"proxy": kind, "build_uncached_s": train, "build_cached_s": cached, "cache_hit": hit,
                     "gym_make_new_process_s": _gym_make_new_process(kind, kw)})
    return pd.DataFrame(rows).set_index("proxy")


def _time(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def _gym_make_new_process(kind: str, kw: dict) -> float:
    """``gym.make`` time in a fresh interpreter (after ``import tiltenv``), with a warm disk cache."""
    code = (
        "import time, torch; torch.set_num_threads(%d)\n"
        "import gymnasium as gym, tiltenv\n"
        "t = time.perf_counter(); gym.make('tiltenv/SingleIndex-v0', proxy=%r, proxy_kwargs=%r)\n"
        "print(time.perf_counter() - t)\n" % (torch.get_num_threads(), kind, kw)
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=os.environ)
    return float(out.stdout.strip().splitlines()[-1])


def two_stage(d: int = 64, ns=(1280, 2560), betas=(math.inf, 3.0, 1.0, 0.5, 0.3, 0.1, 0.03),
              links=("he3", "relu", "he2"), seeds=(0, 1, 2), m: int = 256) -> pd.DataFrame:
    """Stage-1 recovery per link × n × β1 (means over seeds)."""
    from tiltenv import make_world
    from tiltenv.lifecycle.diagnostics import two_stage_report
    from tiltenv.rewards.reward_models import TrainData

    rows = []
    for link in links:
        for n in ns:
            for b1 in betas:
                acc = []
                for seed in seeds:
                    cfg = _cfg(d=d, K=4, link=link, label_kind="pointwise", n_labels=n, proxy="two_stage",
                               proxy_kwargs={"beta1": b1, "width": m}, n_eval_contexts=16, n_norm_contexts=64,
                               seed=seed)
                    w = make_world(cfg, fresh=True)
                    data = TrainData("pointwise", x=w.task.pointwise.x, y=w.task.pointwise.y)
                    rep = two_stage_report(w.task.proxy, w.judge.theta, data, b1)
                    acc.append({k: v for k, v in rep.items() if not isinstance(v, torch.Tensor)})
                mean = pd.DataFrame(acc).mean()
                rows.append({"link": link, "n": n, "n/d": n / d, "beta1": b1, **mean.to_dict()})
    return pd.DataFrame(rows)


def labels(ns=(250, 1000, 4000), flips=(0.0, 0.1, 0.25, 0.4), seeds=(0, 1, 2)) -> pd.DataFrame:
    """mlp proxy quality vs label budget (no flips) and vs flip rate (n = 2000), relu gold, d = 16."""
    from tiltenv import make_world
    from tiltenv.lifecycle.diagnostics import proxy_report

    rows = []
    for n, flip in [(n, 0.0) for n in ns] + [(2000, f) for f in flips]:
        reps = [proxy_report(make_world(_cfg(proxy="mlp", n_labels=n, flip_rate=flip, seed=s, n_eval_contexts=1024)))
                for s in seeds]
        df = pd.DataFrame(reps)
        rows.append({"n_labels": n, "flip_rate": flip, "gold_corr_mean": df.gold_corr_ref.mean(),
                     "gold_corr_sd": df.gold_corr_ref.std(), "acc_ref_mean": df.acc_ref.mean(),
                     "acc_ref_sd": df.acc_ref.std()})
    return pd.DataFrame(rows)


def hump(seeds=(0, 1, 2), n_eval: int = 2048) -> pd.DataFrame:
    """Best-of-n drop on Hump-v0 (K = 256) for single proxies."""
    import gymnasium as gym

    import tiltenv  # noqa: F401
    from tiltenv.lifecycle.diagnostics import best_of_n_drop

    rows = []
    for kind, extra in [("gold", {}), ("linear", {}), ("mlp", {}), ("mlp", {"n_labels": 500}),
                        ("mlp", {"n_labels": 8000}), ("mlp", {"flip_rate": 0.25}), ("two_stage", {}),
                        ("two_stage", {"label_kind": "pointwise"})]:
        for seed in seeds:
            env = gym.make("tiltenv/Hump-v0", proxy=kind, seed=seed, n_eval_contexts=n_eval, **extra)
            r = best_of_n_drop(env, NS)
            rows.append({"proxy": kind, "setting": str(extra or "default"), "seed": seed, "peak_n": r["peak_n"],
                         "peak_gold": r["report"].peak_gold, "final_gold": r["report"].final_gold,
                         "drop": r["drop"], "drop_se": r["drop_se"], "overoptimized": r["report"].overoptimized})
    return pd.DataFrame(rows)


AGGS = (("mean", 1.0), ("min", 1.0), ("uwo", 1.0), ("uwo", 4.0), ("median", 1.0), ("mean_minus_std", 1.0),
        ("mean_minus_std", 2.0))


def ensembles(n_labels: int = 500, members=("mlp",), seeds=(0, 1, 2), k: int = 5, n_eval: int = 2048,
              diversities=("init", "bootstrap", "independent_features", "shared_features")) -> pd.DataFrame:
    """Best-of-n drop on the hump per member kind × diversity × aggregator (plus the single proxy)."""
    from tiltenv import make_world
    from tiltenv.lifecycle.diagnostics import best_of_n_drop, ensemble_disagreement
    from tiltenv.rewards.reward_models import aggregate

    base = dict(link="hump", K=256, n_labels=n_labels, n_eval_contexts=n_eval)
    rows = []
    for member in members:
        for seed in seeds:
            single = best_of_n_drop(make_world(_cfg(**base, proxy=member, seed=seed)), NS)
            rows.append({"member": member, "seed": seed, "diversity": "single", "aggregator": "-",
                         "drop": single["drop"], "drop_se": single["drop_se"],
                         "peak_gold": single["report"].peak_gold, "final_gold": single["report"].final_gold})
            for div in diversities:
                w = make_world(_cfg(**base, proxy="ensemble", seed=seed,
                                    proxy_kwargs={"k": k, "member": member, "diversity": div}))
                ens = w.task.proxy
                dis = ensemble_disagreement(ens, w.judge.eval_candidates, w.judge.eval_ref_logp.double())
                with torch.no_grad():
                    members_r = ens.member_rewards(w.judge.eval_candidates)  # (k, C, K), scored once
                for agg, lam in AGGS:
                    r = best_of_n_drop(w, NS, aggregate(members_r, agg, lam))
                    name = agg if agg in ("mean", "min", "median") else f"{agg}(λ={lam:g})"
                    rows.append({"member": member, "seed": seed, "diversity": div, "aggregator": name,
                                 "drop": r["drop"], "drop_se": r["drop_se"], "peak_gold": r["report"].peak_gold,
                                 "final_gold": r["report"].final_gold, "disagreement_ref": dis["ref"],
                                 "disagreement_top": dis["top"]})
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> dict[str, pd.DataFrame]:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, one seed")
    parser.add_argument("--only", default="timings,two_stage,labels,hump,ensembles")
    add_threads_argument(parser)
    args = parser.parse_args(argv)
    apply_threads(parser, args.threads)
    known = ("timings", "two_stage", "labels", "hump", "ensembles")
    for name in args.only.split(","):
        if name not in known:
            from tiltenv._validation import suggest

            print(f"{parser.prog}: error: --only takes a comma-separated list of {list(known)} (got {name!r})."
                  + suggest(name, known), file=sys.stderr)
            raise SystemExit(2)
    if "TILTENV_CACHE_DIR" not in os.environ:
        os.environ["TILTENV_CACHE_DIR"] = tempfile.mkdtemp(prefix="tiltenv-bench-")
    pd.set_option("display.width", 200, "display.max_columns", 30, "display.precision", 3)
    quick = args.quick
    sections = {
        "timings": lambda: timings(repeat=1 if quick else 3),
        "two_stage": lambda: two_stage(ns=(1280,), seeds=(0,), betas=(math.inf, 1.0, 0.03)) if quick else two_stage(),
        "labels": lambda: labels(seeds=(0,)) if quick else labels(),
        "hump": lambda: hump(seeds=(0,), n_eval=512) if quick else hump(),
        "ensembles": lambda: ensembles(seeds=(0,), n_eval=512, diversities=("bootstrap",)) if quick else pd.concat(
            [ensembles(n_labels=n).assign(n_labels=n) for n in (500, 2000)]),
    }
    out = {}
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, cache {os.environ['TILTENV_CACHE_DIR']}")
    for name in args.only.split(","):
        t = time.perf_counter()
        df = sections[name]()
        out[name] = df
        print(f"\n[{name}] ({time.perf_counter() - t:.0f} s)")
        if name == "ensembles":
            keys = ["n_labels"] * ("n_labels" in df) + ["member", "diversity", "aggregator"]
            piv = df.groupby(keys, sort=False)[["drop", "drop_se", "final_gold",
                                                                                "disagreement_top"]].mean()
            print(piv.to_string())
        elif name == "hump":
            print(df.groupby(["proxy", "setting"], sort=False)[["drop", "drop_se", "peak_n", "peak_gold",
                                                               "final_gold"]].agg(["mean", "min", "max"]).to_string())
        elif name == "timings":
            print(with_targets(df).to_string())
            print(f"(targets: train < {TRAIN_TARGET_S:g} s, cached construction < {CACHED_TARGET_S:g} s; "
                  "✓ met, ✗ missed; the other sections are measurements without targets)")
        else:
            print(df.to_string())
    return out


if __name__ == "__main__":
    main()
