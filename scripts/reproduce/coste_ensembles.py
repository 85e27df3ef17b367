"""Result 4 — conservative reward-model ensembles (Coste et al. 2024; Eisenstein et al. 2023) on tiltenv.

Hump gold (K = 256), k = 5 Bradley–Terry MLP members per ensemble, for every diversity source of the
library (``init``, ``bootstrap``, ``independent_features``, ``shared_features``) × label count × label
condition: ``clean``, ``flips`` (25% symmetric flips, Coste et al.'s noise) and ``shared error`` (a biased
labeler ``r* + 0.5 <v, x>``, v ⟂ θ*: every member inherits the same spurious direction). The members are trained
once; the aggregators (mean, min = WCO, uwo, mean − 2·std) are applied to the same member rewards
(``reward_models.aggregate``). Overoptimization of exact best-of-n (n = 1 … 256) is the measured drop
(``diagnostics.best_of_n_drop``), next to the single proxy trained on the same labels.

Why an ensemble can or cannot help is read off the members at each context's best-of-K pick: the spread of
the members there (√ of ``diagnostics.ensemble_disagreement``'s ``top``) against their shared error (mean
member reward minus gold, both unit-variance under π_ref).

Usage: ``python scripts/reproduce/coste_ensembles.py [--quick] [--out DIR]``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from _common import Output, parse_args, plt  # noqa: E402
from tiltenv import TaskConfig, make_world  # noqa: E402
from tiltenv.lifecycle.diagnostics import best_of_n_drop, ensemble_disagreement  # noqa: E402
from tiltenv.rewards.reward_models import aggregate  # noqa: E402

NS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
AGGS = (("mean", 1.0), ("min", 1.0), ("uwo", 1.0), ("uwo", 4.0), ("mean_minus_std", 2.0))
CONDITIONS = {"clean": {}, "flips": {"flip_rate": 0.25}, "shared error": {"label_bias": 0.5}}


def settings(quick: bool) -> dict:
    if quick:
        return dict(labels=(500,), conditions=("clean", "shared error"), diversities=("bootstrap",), seeds=(0,),
                    n_eval=256, epochs=10)
    return dict(labels=(250, 1000, 4000), conditions=tuple(CONDITIONS), seeds=(0, 1), n_eval=512, epochs=20,
                diversities=("init", "bootstrap", "independent_features", "shared_features"))


def agg_name(agg: str, lam: float) -> str:
    return agg if agg in ("mean", "min") else f"{agg}(λ={lam:g})"


def main(argv=None) -> dict:
    args = parse_args(__doc__, argv)
    s = settings(args.quick)
    out = Output(args.out, "coste_ensembles", args.quick)
    member = {"width": 64, "depth": 2, "epochs": s["epochs"], "device": "cpu"}
    rows = []
    for n in s["labels"]:
        for cond in s["conditions"]:
            for seed in s["seeds"]:
                base = dict(d=16, link="hump", K=256, n_labels=n, n_eval_contexts=s["n_eval"], n_norm_contexts=1024,
                            seed=seed, **CONDITIONS[cond])
                key = {"n_labels": n, "condition": cond, "seed": seed}
                single = best_of_n_drop(make_world(TaskConfig(**base, proxy="mlp", proxy_kwargs=member)), NS)
                rows.append({**key, "diversity": "single", "aggregator": "-", "drop": single["drop"],
                             "drop_se": single["drop_se"], "peak_gold": single["report"].peak_gold,
                             "final_gold": single["report"].final_gold, "peak_n": single["peak_n"]})
                for div in s["diversities"]:
                    w = make_world(TaskConfig(**base, proxy="ensemble", proxy_kwargs={
                        "k": 5, "member": "mlp", "member_kwargs": {k: v for k, v in member.items() if k != "device"}, "diversity": div, "device": "cpu"}))
                    ens, j = w.task.proxy, w.judge
                    with torch.no_grad():
                        members = ens.member_rewards(j.eval_candidates)  # (k, C, K), scored once
                    dis = ensemble_disagreement(ens, j.eval_candidates, j.eval_ref_logp)
                    mean_r = members.mean(0)
                    top = mean_r.argmax(-1, keepdim=True)
                    shared_err = float((mean_r.gather(-1, top) - j.eval_gold.gather(-1, top)).mean())
                    for agg, lam in AGGS:
                        r = best_of_n_drop(w, NS, aggregate(members, agg, lam))
                        rows.append({**key, "diversity": div, "aggregator": agg_name(agg, lam), "drop": r["drop"],
                                     "drop_se": r["drop_se"], "peak_gold": r["report"].peak_gold,
                                     "final_gold": r["report"].final_gold, "peak_n": r["peak_n"],
                                     "spread_top": float(np.sqrt(dis["top"])), "spread_ref": float(np.sqrt(dis["ref"])),
                                     "shared_error_top": shared_err})
                print(f"  n={n} {cond} seed={seed}: single drop {single['drop']:.3f}", flush=True)
    df = pd.DataFrame(rows)
    out.csv(df)

    g = df.groupby(["n_labels", "condition", "diversity", "aggregator"], sort=False).mean(numeric_only=True).reset_index()
    ref = g[g.aggregator == "mean"].set_index(["n_labels", "condition", "diversity"])["drop"]
    single = g[g.diversity == "single"].set_index(["n_labels", "condition"])["drop"]
    g["drop_vs_mean"] = [r["drop"] - ref.get((r.n_labels, r.condition, r.diversity), np.nan) for _, r in g.iterrows()]
    g["removed_of_single"] = [1 - r["drop"] / single[(r.n_labels, r.condition)] if single[(r.n_labels, r.condition)] > 0
                              else np.nan for _, r in g.iterrows()]

    fig, axes = plt.subplots(1, len(s["conditions"]), figsize=(5.5 * len(s["conditions"]), 4.2), squeeze=False)
    for ax, cond in zip(axes[0], s["conditions"]):
        h = g[(g.condition == cond)]
        labels = [f"{a}" for a in dict.fromkeys(h.aggregator) if a != "-"]
        x = np.arange(len(s["diversities"]))
        for i, agg in enumerate(labels):
            vals = [h[(h.diversity == dv) & (h.aggregator == agg)]["drop"].mean() for dv in s["diversities"]]
            ax.bar(x + i * 0.15, vals, 0.15, label=agg)
        ax.axhline(h[h.diversity == "single"]["drop"].mean(), color="k", ls="--", lw=1, label="single proxy")
        ax.set_xticks(x + 0.3, [dv.replace("_", "\n") for dv in s["diversities"]], fontsize=7)
        ax.set(ylabel="best-of-n gold drop (mean over labels, seeds)", title=f"hump, {cond}")
        ax.legend(fontsize=6)
    out.figure(fig)

    out.section("Best-of-n drop per condition × labels × diversity × aggregator (means over seeds)",
                "`drop_vs_mean` = drop minus the mean-aggregated ensemble's drop (same members); `removed_of_single` = "
                "1 − drop / single proxy's drop (Coste et al.: conservative ensembles remove most of it). "
                "`spread_top` = member std at the best-of-K pick, `shared_error_top` = mean member reward − gold there.")
    cols = ["n_labels", "condition", "diversity", "aggregator", "drop", "drop_se", "drop_vs_mean", "removed_of_single",
            "peak_gold", "final_gold", "spread_top", "shared_error_top"]
    out.table(g[cols])
    best = g[g.aggregator != "-"].sort_values("removed_of_single", ascending=False).head(8)
    out.section("Where conservative aggregation removes the most of the single proxy's drop")
    out.table(best[cols])
    out.finish()
    return {"rows": df, "summary": g}


if __name__ == "__main__":
    main()
