"""CLI and output plumbing shared by the reproduction scripts (no formulas here: those live in the library).

Each script calls :func:`parse_args` (``--quick``, ``--out DIR``, ``--threads``) and writes through an
:class:`Output`: ``<name>.csv`` (every point), ``<name>.png`` (matplotlib Agg) and ``<name>.md`` (the fitted
numbers). It also provides the trajectory recorder used with ``TrainBudget(checkpoint_every=...)``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tiltenv import metrics as M  # noqa: E402
from tiltenv.worlds.evaluation import policy_logp  # noqa: E402


def parse_args(doc: str, argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=doc.strip().splitlines()[0])
    p.add_argument("--quick", action="store_true", help="seconds-sized run (what the tests run)")
    p.add_argument("--out", default=None, help="output directory (default: a new temporary directory)")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1: a shared machine)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if "TILTENV_CACHE_DIR" not in os.environ:  # a cold private proxy cache: honest timings, no user state
        os.environ["TILTENV_CACHE_DIR"] = tempfile.mkdtemp(prefix="tiltenv-repro-cache-")
    args.out = Path(args.out or tempfile.mkdtemp(prefix="tiltenv-repro-"))
    args.out.mkdir(parents=True, exist_ok=True)
    return args


class Output:
    """Writes the CSV / PNG / markdown of one result into ``out``."""

    def __init__(self, out: Path, name: str, quick: bool) -> None:
        self.out, self.name, self.quick = Path(out), name, quick
        self.started = time.perf_counter()
        self.md: list[str] = [f"# {name}{' (quick run)' if quick else ''}", ""]

    def csv(self, df: pd.DataFrame, suffix: str = "") -> Path:
        path = self.out / f"{self.name}{suffix}.csv"
        df.to_csv(path, index=False)
        return path

    def section(self, title: str, text: str = "") -> None:
        self.md += [f"## {title}", ""] + ([text, ""] if text else [])

    def table(self, df: pd.DataFrame, floatfmt: str = ".3g") -> None:
        self.md += [markdown_table(df, floatfmt), ""]

    def line(self, text: str) -> None:
        self.md += [text, ""]

    def figure(self, fig: plt.Figure) -> Path:
        path = self.out / f"{self.name}.png"
        fig.savefig(path, dpi=80, bbox_inches="tight")
        plt.close(fig)
        return path

    def finish(self) -> Path:
        wall = time.perf_counter() - self.started
        self.md += [f"_wall time: {wall:.0f} s, torch threads: {torch.get_num_threads()}, device: cpu_", ""]
        path = self.out / f"{self.name}.md"
        path.write_text("\n".join(self.md))
        print("\n".join(self.md))
        print(f"wrote {self.out}/{self.name}.{{csv,png,md}}")
        return path


def markdown_table(df: pd.DataFrame, floatfmt: str = ".3g") -> str:
    cols = list(df.columns)

    def fmt(v: Any) -> str:
        if isinstance(v, (float, np.floating)):
            return "nan" if np.isnan(v) else ("inf" if np.isinf(v) else format(float(v), floatfmt))
        return str(v)

    rows = ["| " + " | ".join(map(str, cols)) + " |", "|" + "---|" * len(cols)]
    rows += ["| " + " | ".join(fmt(v) for v in r) + " |" for r in df.itertuples(index=False)]
    return "\n".join(rows)


class Trajectory:
    """Records (step, KL, gold, proxy) of every snapshot an agent hands to ``checkpoint``, exactly on the judge."""

    def __init__(self, judge: Any) -> None:
        self.judge = judge
        self.rows: list[dict[str, float]] = []

    def __call__(self, step: int, policy: Any) -> None:
        j = self.judge
        logp = policy_logp(policy, j.eval_candidates, j.eval_ref_logp)
        self.rows.append({"step": int(step), "kl": max(0.0, M.kl_divergence(logp, j.eval_ref_logp)),
                          "gold": M.policy_value(logp, j.eval_gold), "proxy": M.policy_value(logp, j.eval_proxy)})

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows)


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rank correlation: Pearson's on average ranks (ties share their mean rank)."""
    return pearson(pd.Series(np.asarray(x, float)).rank().values, pd.Series(np.asarray(y, float)).rank().values)


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    return float(pd.Series(np.asarray(x, float)).corr(pd.Series(np.asarray(y, float)), method="pearson"))


def paired_bootstrap_ci(x: np.ndarray, y: np.ndarray, corr=spearman, reps: int = 2000, seed: int = 0):
    """Correlation with a percentile bootstrap CI over *pairs*, via ``metrics.stratified_bootstrap_ci``.

    The pairs are resampled by resampling their indices (one "task" column of indices), so the pairing of
    x and y is kept.
    """
    x, y = np.asarray(x, float), np.asarray(y, float)
    idx = np.arange(x.size, dtype=float)
    stat = lambda a: corr(x[a[:, 0].astype(int)], y[a[:, 0].astype(int)])  # noqa: E731
    return M.stratified_bootstrap_ci(idx, statistic=stat, reps=reps, seed=seed)
