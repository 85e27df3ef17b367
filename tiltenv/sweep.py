"""``tiltenv sweep``: build a task, sweep the gold-blind proxy tilt and best-of-n, print the table.

Example:
    tiltenv sweep --env tiltenv/Hump-v0 --set d=16 --set seed=1
"""

from __future__ import annotations

import argparse
import ast
import math
import sys

import gymnasium as gym
import pandas as pd

import tiltenv
from tiltenv import metrics as M

DEFAULT_BETAS = (math.inf, 4.0, 2.0, 1.0, 0.5, 0.25, 0.125, 0.0625, 0.03, 0.01, 0.0)
DEFAULT_NS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


def _parse_set(items: list[str]) -> dict:
    out = {}
    for item in items:
        if "=" not in item:
            raise SystemExit(f"--set expects key=value (got {item!r}).")
        key, value = item.split("=", 1)
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key] = value
    return out


def _table(rows: list[dict], first: str) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    df["kl"] = df["kl"].clip(lower=0.0)  # exact KL of π_ref is 0 up to ~1e-17 rounding; don't print "-0.0000"
    df["sqrt_kl"] = df["kl"] ** 0.5
    cols = [first, "kl", "sqrt_kl", "proxy_value", "gold_value", "value_gap", "normalized_score", "reward_variance_policy"]
    return df[cols]


def _report(name: str, df: pd.DataFrame) -> str:
    rep = M.overoptimization(df["kl"].to_numpy(), df["gold_value"].to_numpy(), df["proxy_value"].to_numpy())
    verdict = "OVEROPTIMIZED" if rep.overoptimized else "no overoptimization"
    return (f"{name}: peak gold {rep.peak_gold:+.4f} at KL {rep.kl_at_peak:.3f}, final gold {rep.final_gold:+.4f}, "
            f"drop {rep.drop:.4f} -> {verdict}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tiltenv sweep", description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="tiltenv/Hump-v0", help="registered env id (default: %(default)s)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="task parameter override")
    args = parser.parse_args(argv)
    try:
        env = gym.make(args.env, **_parse_set(args.set))
    except gym.error.Error as exc:
        ids = sorted(k for k in gym.registry if k.startswith("tiltenv/"))
        print(f"error: {exc}\nregistered tiltenv ids: {ids}", file=sys.stderr)
        return 2
    except (TypeError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    cfg = env.unwrapped.config
    print(f"{args.env}: {cfg}\n")
    K = env.unwrapped.K
    pd.set_option("display.width", 160)
    tilt = _table(tiltenv.tilt_sweep(env, DEFAULT_BETAS), "tilt_beta")
    print("Gold-blind tilt π ∝ π_ref·exp(r̂/β) on the proxy (exact over K candidates, held-out contexts):")
    print(tilt.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print(_report("tilt sweep", tilt), "\n")
    bon = _table(tiltenv.best_of_n_sweep(env, [n for n in DEFAULT_NS if n <= K] or [1, K]), "n")
    print("Exact best-of-n on the proxy:")
    print(bon.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print(_report("best-of-n", bon))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
