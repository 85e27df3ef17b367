"""Result 5 — the two temperatures of the single-index two-stage model (Wachi et al. 2026) on tiltenv.

(a) Feature learning vs β1: recovered fraction of neurons (|cos(w_j, θ*)| > 0.5), mean |cos|, the ESS of
the stage-1 weights and the collapse baseline, per link (relu, he2, he3), label count and β1 — measured by
``scripts/bench_proxies.py``'s ``two_stage`` section (d = 64, pointwise labels), folded in here unchanged.

(b) Deployment temperature β2: the two-stage proxy's readout is fit with label weights ``e^{y/β2}`` or
surrogate weights ``e^{r_a0(x)/β2}`` (or none), and the tilt ``π_ref e^{r̂/β2}`` is deployed at the same β2.
Its value gap ``J*_β2 − J_β2(π)`` and normalized score (``metrics.value_gap`` / ``metrics.normalized_score``)
are measured per β2, with a well-specified readout (random biases: a flexible 1-D function of the recovered
index) and a misspecified one (``bias_range = 0``: only ``a·relu(s) + b·relu(−s)``), on a saturating
(``tanh``) and a non-monotone (``hump``) gold. Good β2 ranges, two definitions: the β2 whose normalized score
is within 0.02 of the best of that (gold, readout) over every weighting and β2, and the β2 whose normalized
score is at least 0.9 (value gap at most a tenth of π_ref's).

Usage: ``python scripts/reproduce/wachi_temperatures.py [--quick] [--out DIR]``.
"""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from _common import ROOT, Output, parse_args, plt  # noqa: E402
from tiltenv import TaskConfig, make_world  # noqa: E402
from tiltenv import metrics as M  # noqa: E402

TOL = 0.02
ADMISSIBLE = 0.9


def _bench():
    spec = importlib.util.spec_from_file_location("bench_proxies", ROOT / "scripts" / "bench_proxies.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def recovery(quick: bool) -> pd.DataFrame:
    bench = _bench()
    if quick:
        return bench.two_stage(ns=(1280,), seeds=(0,), betas=(math.inf, 1.0, 0.03))
    return bench.two_stage()


def deployment(quick: bool) -> pd.DataFrame:
    betas2 = (0.05, 0.2, 1.0) if quick else (0.03, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0, 5.0)
    golds = ("hump",) if quick else ("tanh", "hump")
    seeds = (0,) if quick else (0, 1, 2)
    n_labels = 2000 if quick else 4000
    rows = []
    for gold in golds:
        for readout, bias_range in (("well-specified", 3.0), ("misspecified", 0.0)):
            for seed in seeds:
                for weighting in ("none", "label", "surrogate"):
                    for b2 in betas2:
                        cfg = TaskConfig(d=16, K=64, link=gold, label_kind="pointwise", n_labels=n_labels,
                                         proxy="two_stage", n_eval_contexts=1024 if quick else 2048,
                                         n_norm_contexts=1024, seed=seed,
                                         proxy_kwargs={"beta1": 1.0, "beta2": b2, "weighting": weighting,
                                                       "bias_range": bias_range, "width": 256, "device": "cpu"})
                        j = make_world(cfg).judge
                        ref, gold_r = j.eval_ref_logp, j.eval_gold
                        logp = M.tilt_logp(ref, j.eval_proxy, b2)
                        rows.append({"gold": gold, "readout": readout, "seed": seed, "weighting": weighting,
                                     "beta2": b2, "value_gap": M.value_gap(logp, ref, gold_r, b2),
                                     "normalized_score": M.normalized_score(logp, ref, gold_r, b2),
                                     "kl": M.kl_divergence(logp, ref), "gold_value": M.policy_value(logp, gold_r),
                                     "stage2_ess": float(make_world(cfg).task.proxy.stage2_ess)})
    return pd.DataFrame(rows)


def good_ranges(dep: pd.DataFrame) -> pd.DataFrame:
    g = dep.groupby(["gold", "readout", "weighting", "beta2"]).mean(numeric_only=True).reset_index()
    out = []
    for (gold, readout), h in g.groupby(["gold", "readout"]):
        best = h.normalized_score.max()
        for weighting, w in h.groupby("weighting"):
            good = w[w.normalized_score >= best - TOL].beta2.values
            adm = w[w.normalized_score >= ADMISSIBLE].beta2.values
            b = w.sort_values("normalized_score").iloc[-1]
            out.append({"gold": gold, "readout": readout, "weighting": weighting, "best_beta2": b.beta2,
                        "best_normalized_score": b.normalized_score,
                        "good_beta2": ", ".join(f"{v:g}" for v in sorted(good)) or "none",
                        "good_range_decades": float(np.log10(good.max() / good.min())) if len(good) else float("nan"),
                        "beta2_score_ge_0.9": ", ".join(f"{v:g}" for v in sorted(adm)) or "none",
                        "decades_ge_0.9": float(np.log10(adm.max() / adm.min())) if len(adm) else float("nan"),
                        "u_shape": _u_shape(w.sort_values("beta2").normalized_score.values)})
    return pd.DataFrame(out)


def _u_shape(score: np.ndarray) -> bool:
    """An interior optimum of the normalized score in β2 (the value gap's U, normalized): the best β2 is neither
    end of the grid and both ends are worse by more than TOL."""
    i = int(np.argmax(score))
    return bool(0 < i < len(score) - 1 and score[i] - score[0] > TOL and score[i] - score[-1] > TOL)


def main(argv=None) -> dict:
    args = parse_args(__doc__, argv)
    out = Output(args.out, "wachi_temperatures", args.quick)
    rec = recovery(args.quick)
    dep = deployment(args.quick)
    out.csv(pd.concat([rec.assign(part="recovery"), dep.assign(part="deployment")], ignore_index=True))
    ranges = good_ranges(dep)

    golds = list(dict.fromkeys(dep.gold))
    fig, axes = plt.subplots(1, 1 + 2 * len(golds), figsize=(5 * (1 + 2 * len(golds)), 4.2))
    ax = axes[0]
    for (link, n), h in rec.groupby(["link", "n"]):
        b = h.beta1.replace(math.inf, 1e3)
        ax.plot(b, h.recovered_fraction, "o-", label=f"{link} n={n}")
    ax.set(xscale="log", xlabel="β1 (1e3 = inf: uniform weights)", ylabel="recovered fraction",
           title="stage 1: recovery vs β1 (d = 64)")
    ax.legend(fontsize=7)
    g = dep.groupby(["gold", "readout", "weighting", "beta2"]).mean(numeric_only=True).reset_index()
    for k, (gold, readout) in enumerate([(gd, r) for gd in golds for r in ("well-specified", "misspecified")]):
        ax = axes[1 + k]
        for weighting, st in (("none", "k:"), ("label", "o-"), ("surrogate", "s--")):
            h = g[(g.gold == gold) & (g.readout == readout) & (g.weighting == weighting)]
            ax.plot(h.beta2, 1 - h.normalized_score, st, label=weighting)
        ax.set(xscale="log", yscale="log", xlabel="β2 (readout weighting and deployed tilt)",
               ylabel="value gap / (J*−J(π_ref)) = 1 − score", title=f"{gold} gold, {readout} readout")
        ax.legend(fontsize=7)
    out.figure(fig)

    out.section("Stage 1: recovered fraction vs β1 (means over seeds)")
    out.table(rec[["link", "n", "beta1", "recovered_fraction", "mean_abs_cos", "stage1_ess", "weighted_sample_cos"]])
    out.section("Deployment: value gap and normalized score vs β2 (means over seeds)")
    out.table(g[["gold", "readout", "weighting", "beta2", "value_gap", "normalized_score", "kl", "stage2_ess"]])
    out.section("Good β2 ranges", "`good_beta2`: normalized score within 0.02 of the best for that gold and readout; "
                "`beta2_score_ge_0.9`: normalized score ≥ 0.9. `u_shape`: an interior optimum of the score in β2.")
    out.table(ranges)
    out.finish()
    return {"recovery": rec, "deployment": dep, "ranges": ranges}


if __name__ == "__main__":
    main()
