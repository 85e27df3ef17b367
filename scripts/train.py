"""Train one baseline on one tiltenv task and print its exact gold metrics and trajectory.

Usage (from the repository root, after the Quickstart; or ``source .venv/bin/activate`` and drop ``.venv/bin/``)::

    .venv/bin/python scripts/train.py reinforce --env tiltenv/Hump-v0 --task beta=0.01 --set learning_rate=0.1
    .venv/bin/python scripts/train.py grpo --set scale_rewards=none --set kl_estimator=k3 --queries 131072
    .venv/bin/python scripts/train.py --list                     # baselines and their config fields
    .venv/bin/python scripts/train.py reinforce --explain        # ... and what every printed number means

``--set key=value`` overrides an agent config field, ``--task key=value`` a task parameter (a kwarg of
``gym.make``). The logic is :func:`baselines.run.train` (later the ``tiltenv train`` subcommand).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from baselines import BASELINES, TrainBudget
from baselines.run import _coerce, format_result, train
from tiltenv._validation import ArgumentParser, add_threads_argument, apply_threads
from tiltenv.glossary import OVEROPTIMIZATION_RULE


def _list() -> str:
    out = []
    for name, (_agent, cfg) in BASELINES.items():
        out.append(f"{name}  ({cfg.__name__})")
        for f in dataclasses.fields(cfg):
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            out.append(f"    {f.name} = {default!r}: {f.metadata.get('help', '')}")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("baseline", nargs="?", help=f"one of {sorted(BASELINES)}")
    p.add_argument("--env", default="tiltenv/SingleIndex-v0", help="registered env id (default: %(default)s)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="agent config field")
    p.add_argument("--task", action="append", default=[], metavar="KEY=VALUE", help="task parameter (gym.make kwarg)")
    p.add_argument("--queries", type=int, default=TrainBudget().proxy_queries, help="proxy query budget (default: %(default)s)")
    p.add_argument("--wall-time", type=float, default=None, help="wall-time budget in seconds")
    p.add_argument("--checkpoints", type=int, default=TrainBudget().n_checkpoints, help="log-spaced checkpoints")
    p.add_argument("--seed", type=int, default=None, help="agent seed")
    add_threads_argument(p)
    p.add_argument("--json", action="store_true", help="print metrics and trajectory as JSON")
    p.add_argument("--list", action="store_true", help="list baselines and their config fields")
    p.add_argument("--explain", action="store_true", help="append each printed metric's meaning and formula")
    args = p.parse_args(argv)
    if args.list:
        print(_list())
        return 0
    if args.baseline is None:
        p.error("a baseline name is required (or --list)")
    apply_threads(p, args.threads)
    env_kwargs = {}
    for item in args.task:
        if "=" not in item:
            p.error(f"--task {item!r} must look like key=value")
        key, value = item.split("=", 1)
        env_kwargs[key.strip()] = _coerce(value)
    try:
        budget = TrainBudget(proxy_queries=args.queries, wall_time=args.wall_time, n_checkpoints=args.checkpoints)
        res = train(args.baseline, args.env, overrides=args.overrides, env_kwargs=env_kwargs, budget=budget, seed=args.seed)
    except (ValueError, TypeError, FloatingPointError) as exc:  # user errors: one line, exit 2
        print(f"{p.prog}: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        rep = res.overoptimization
        print(json.dumps({
            "baseline": res.baseline, "env_id": res.env_id, "env_kwargs": res.env_kwargs,
            "config": dataclasses.asdict(res.config), "fit_time": res.fit_time, "proxy_queries": res.proxy_queries,
            "metrics": res.metrics, "trajectory": res.trajectory,
            "overoptimization": None if rep is None else {"drop": rep.drop, "overoptimized": rep.overoptimized,
                                                          "peak_gold": rep.peak_gold, "kl_at_peak": rep.kl_at_peak,
                                                          "tol": rep.tol, "rule": OVEROPTIMIZATION_RULE},
            "notes": res.notes,
        }, indent=2, default=str))
    else:
        print(format_result(res, explain=args.explain))
    for note in res.notes:
        print(f"warning: {note}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
