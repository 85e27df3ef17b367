"""``tiltenv sweep``: build a task, sweep the gold-blind proxy tilt and best-of-n, print the table.

Example:
    tiltenv sweep --env tiltenv/Hump-v0 --set d=16 --set seed=1
    tiltenv sweep --explain                 # what every column means, with its formula

Every row is an exact evaluation on the judge's held-out contexts. ``value_gap`` and ``normalized_score``
are computed at the **task's β** (the ``beta`` task parameter) on every row, not at the row's tilt
temperature: they score each policy on the task's objective J_β. Formulas: docs/metrics.md.
"""

from __future__ import annotations

import ast
import math
import sys

import gymnasium as gym
import pandas as pd

import tiltenv
from tiltenv._validation import ArgumentParser, add_threads_argument, apply_threads, check_env_id
from tiltenv.worlds.evaluation import overoptimization_report, resolve_judge
from tiltenv.glossary import OVEROPTIMIZATION_RULE, legend

DEFAULT_BETAS = (math.inf, 4.0, 2.0, 1.0, 0.5, 0.25, 0.125, 0.0625, 0.03, 0.01, 0.0)
DEFAULT_NS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


def _parse_set(items: list[str]) -> dict:
    out = {}
    for item in items:
        if "=" not in item:
            print(f"tiltenv sweep: error: --set expects key=value (got {item!r}).", file=sys.stderr)
            raise SystemExit(2)
        key, value = item.split("=", 1)
        if value.strip().lower() in ("inf", "+inf", "-inf", "nan"):  # numbers, not strings (one numeric type rule)
            out[key] = float(value)
            continue
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


COLUMNS = ("tilt_beta", "n", "kl", "sqrt_kl", "proxy_value", "gold_value", "value_gap", "normalized_score",
           "reward_variance_policy")


def _report(name: str, df: pd.DataFrame, judge) -> str:
    rep = overoptimization_report(df.to_dict("records"), judge)
    verdict = "OVEROPTIMIZED" if rep.overoptimized else "no overoptimization"
    return (f"{name}: peak gold {rep.peak_gold:+.4f} at KL {rep.kl_at_peak:.3f}, final gold {rep.final_gold:+.4f}, "
            f"drop {rep.drop:.4f} (threshold {rep.tol:.4f}) -> {verdict}")


def explain() -> str:
    """The legend of the sweep tables and the overoptimization rule."""
    return (legend(COLUMNS, width=23) + "\nvalue_gap and normalized_score use the task's β on every row (not tilt_beta)."
            + f"\n{OVEROPTIMIZATION_RULE}\nFormulas: docs/metrics.md.")


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="tiltenv sweep", description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="tiltenv/Hump-v0", help="registered env id (default: %(default)s)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="task parameter override")
    parser.add_argument("--explain", action="store_true", help="print what every column means (with formulas) and exit")
    add_threads_argument(parser)
    args = parser.parse_args(argv)
    if args.explain:
        print(explain())
        return 0
    apply_threads(parser, args.threads)
    try:
        check_env_id(args.env)
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
    judge = resolve_judge(env)
    pd.set_option("display.width", 160)
    at_beta = f"value_gap and normalized_score at the task's β = {cfg.beta:g} on every row"
    tilt = _table(tiltenv.tilt_sweep(env, DEFAULT_BETAS), "tilt_beta")
    print("Gold-blind tilt π ∝ π_ref·exp(r̂/tilt_beta) on the proxy (exact over K candidates, held-out contexts;\n"
          f"{at_beta}, not at tilt_beta):")
    print(tilt.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print(_report("tilt sweep", tilt, judge), "\n")
    bon = _table(tiltenv.best_of_n_sweep(env, [n for n in DEFAULT_NS if n <= K] or [1, K]), "n")
    print(f"Exact best-of-n on the proxy ({at_beta}):")
    print(bon.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print(_report("best-of-n", bon, judge))
    print(f"\nkl = KL(π‖π_ref); proxy_value/gold_value = V̂(π)/V*(π); value_gap = J*_β − J_β(π) (0 = optimal); "
          "normalized_score: 1 = gold tilt, 0 = π_ref;\nreward_variance_policy = proxy variance under π. "
          f"{OVEROPTIMIZATION_RULE}\n(tiltenv sweep --explain: every column with its formula; docs/metrics.md)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
