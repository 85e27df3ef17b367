"""Result 3 — beneficial reward errors (Shang et al. 2026) on tiltenv.

(a) Controlled 5-arm bandit (``TabularConfig``; gold ``(0, .3, .5, .8, 1)``). The initial policy π_0 puts
``p*`` on the best arm and 85% of the rest on the mediocre arm (gold 0.8), where softmax policy gradient
stalls. Proxies: the gold itself; a *beneficial error* that under-rates the mediocre arm (0.8 → 0.3, below
arm 2: a ranking error); a *harmful error* that over-rates it (0.8 → 0.95). Softmax policy gradient with exact
expected gradients (RLOO ``exact_expectation``, plain SGD, β = 0), read at every update
(``TrainBudget(checkpoint_every=1)``): updates until the gold value reaches 0.9, over a grid of p*.

(b) ≥ 20 proxies on one single-index task (relu gold, non-uniform π_0 = π_ref with ``ref_eta`` = 1):
parametric proxies at several angles with error pockets above / below the bulk (raising or lowering the
proxy there), and learned proxies. Each is optimized by RLOO (Adam, β = 0, MLP policy) for a fixed budget;
the gold gain is set against plain accuracy and Shang et al.'s harm-aware accuracies under π_0
(``metrics.harm_aware_accuracies``): Spearman rank correlations with paired-bootstrap 95% CIs.

Usage: ``python scripts/reproduce/shang_beneficial_errors.py [--quick] [--out DIR]``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from _common import Output, Trajectory, paired_bootstrap_ci, parse_args, plt, spearman  # noqa: E402
from baselines import RLOO, RLOOConfig, TrainBudget  # noqa: E402
from tiltenv import TabularConfig, TaskConfig, make_world  # noqa: E402
from tiltenv import metrics as M  # noqa: E402

GOLD = (0.0, 0.3, 0.5, 0.8, 1.0)
PROXIES = {"gold": GOLD, "beneficial error (0.8→0.3)": (0.0, 0.3, 0.5, 0.3, 1.0),
           "harmful error (0.8→0.95)": (0.0, 0.3, 0.5, 0.95, 1.0)}
TARGET = 0.9
LR = 5.0


def pi0(p_star: float) -> list[float]:
    rest = 1.0 - p_star
    return [0.05 * rest, 0.05 * rest, 0.05 * rest, 0.85 * rest, p_star]


def bandit(quick: bool) -> tuple[pd.DataFrame, pd.DataFrame]:
    grid = (0.02, 0.2) if quick else (0.003, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5)
    max_updates = 300 if quick else 2000
    rows, trajs = [], []
    for p in grid:
        for name, proxy in PROXIES.items():
            world = make_world(TabularConfig(gold=GOLD, proxy=proxy, ref_probs=pi0(p), beta=0.1))
            traj = Trajectory(world.judge)
            agent = RLOO(RLOOConfig(beta=0.0, optimizer="sgd", learning_rate=LR, batch_size=1, exact_expectation=True,
                                    device="cpu"))
            agent.fit(world.task, TrainBudget(proxy_queries=5 * max_updates, n_checkpoints=1, checkpoint_every=1), traj)
            t = traj.frame().assign(n_update=lambda f: f.step // 5)
            hit = t[t.gold >= TARGET]
            steps = int(hit.n_update.iloc[0]) if len(hit) else np.inf
            rows.append({"p_star": p, "proxy": name, "updates_to_0.9": steps, "final_gold": float(t.gold.iloc[-1])})
            trajs.append(t.assign(p_star=p, proxy=name))
    return pd.DataFrame(rows), pd.concat(trajs, ignore_index=True)


def proxy_grid(quick: bool) -> list[tuple[str, str, dict, dict]]:
    """(name, proxy kind, proxy_kwargs, task overrides)."""
    pockets = {"none": (), "high+": ((1.5, 0.4, 1.5),), "high-": ((1.5, 0.4, -1.5),), "low+": ((-0.5, 0.4, 1.5),),
               "low-": ((-0.5, 0.4, -1.5),)}
    angles = (0.0, 45.0) if quick else (0.0, 25.0, 45.0, 65.0)
    if quick:
        pockets = {k: pockets[k] for k in ("none", "low+")}
    out = [(f"angle {a:g}, pocket {p}", "parametric", {"angle": a, "pockets": v}, {})
           for a in angles for p, v in pockets.items()]
    if not quick:
        out += [(f"mlp n={n}{', flips 0.25' if f else ''}", "mlp", {"epochs": 20, "device": "cpu"},
                 {"n_labels": n, "flip_rate": f}) for n, f in ((250, 0.0), (1000, 0.0), (4000, 0.0), (1000, 0.25))]
    return out


def predictors(quick: bool) -> pd.DataFrame:
    updates = 30 if quick else 120
    seeds = (0,) if quick else (0, 1)
    rows = []
    for seed in seeds:
        for name, kind, kw, extra in proxy_grid(quick):
            cfg = TaskConfig(**{**dict(d=16, K=16, link="relu", ref_eta=1.0, ref_angle=90.0, n_labels=1000,
                                       proxy=kind, proxy_kwargs=kw, n_eval_contexts=2048, n_norm_contexts=4096,
                                       seed=seed), **extra})
            world = make_world(cfg)
            j = world.judge
            ref = j.eval_ref_logp
            harm = M.harm_aware_accuracies(j.eval_proxy, j.eval_gold, ref)
            traj = Trajectory(j)
            agent = RLOO(RLOOConfig(beta=0.0, optimizer="adam", learning_rate=0.01, batch_size=64, num_generations=4,
                                    policy="mlp", hidden_sizes=(32,), seed=seed, device="cpu"))
            agent.fit(world.task, TrainBudget(proxy_queries=256 * updates, n_checkpoints=4), traj)
            t = traj.frame()
            rows.append({"seed": seed, "proxy": name, "accuracy": M.ranking_accuracy(j.eval_proxy, j.eval_gold),
                         "acc_w": harm["acc_w"], "hacc": harm["hacc"], "hacc_w": harm["hacc_w"],
                         "gold_corr": M.proxy_gold_correlation(ref, j.eval_proxy, j.eval_gold),
                         "gold_gain": float(t.gold.iloc[-1] - t.gold.iloc[0]), "kl_final": float(t.kl.iloc[-1])})
    return pd.DataFrame(rows)


def main(argv=None) -> dict:
    args = parse_args(__doc__, argv)
    out = Output(args.out, "shang_beneficial_errors", args.quick)
    steps, trajs = bandit(args.quick)
    pred = predictors(args.quick)
    out.csv(pd.concat([steps.assign(part="bandit"), pred.assign(part="predictors")], ignore_index=True))
    out.csv(trajs, "_trajectories")

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.2))
    ax = axes[0]
    for name, mk in zip(PROXIES, ("o-", "s-", "^--")):
        s = steps[steps.proxy == name]
        ax.plot(s.p_star, s["updates_to_0.9"], mk, label=name)
    ax.set(xscale="log", yscale="log", xlabel="p* = π_0(best arm)", ylabel="updates until gold ≥ 0.9",
           title="5-arm bandit, softmax PG (exact, SGD)")
    ax.legend(fontsize=7)
    ax = axes[1]
    p_show = sorted(steps.p_star.unique())[0 if args.quick else 1]
    for name in PROXIES:
        t = trajs[(trajs.proxy == name) & (trajs.p_star == p_show)]
        ax.plot(t.n_update, t.gold, label=name)
    ax.axhline(TARGET, color="grey", lw=0.5)
    ax.set(xscale="symlog", xlabel="update", ylabel="gold value", title=f"trajectories at p* = {p_show:g}")
    ax.legend(fontsize=7)
    ax = axes[2]
    g = pred.groupby("proxy").mean(numeric_only=True)
    ax.scatter(g.accuracy, g.gold_gain, label="accuracy")
    ax.scatter(g.hacc_w, g.gold_gain, marker="x", label="HAcc-W (π_0)")
    ax.set(xlabel="metric", ylabel="gold gain (RLOO, fixed budget)", title=f"{len(g)} proxies, single-index relu")
    ax.legend(fontsize=7)
    out.figure(fig)

    piv = steps.pivot_table(index="p_star", columns="proxy", values="updates_to_0.9")
    piv["gold / beneficial"] = piv["gold"] / piv["beneficial error (0.8→0.3)"]
    piv["gold − beneficial"] = piv["gold"] - piv["beneficial error (0.8→0.3)"]
    out.section("5-arm bandit: updates until gold ≥ 0.9",
                f"gold (0, .3, .5, .8, 1); π_0 = p* on the best arm, 85% of the rest on the 0.8 arm; SGD lr {LR:g}; inf = not reached within the budget.")
    out.table(piv.reset_index())
    g = pred.groupby("proxy").mean(numeric_only=True).reset_index()
    corr = []
    for metric in ("accuracy", "acc_w", "hacc", "hacc_w", "gold_corr"):
        point, lo, hi = paired_bootstrap_ci(g[metric].values, g.gold_gain.values, spearman, reps=200 if args.quick else 2000)
        corr.append({"metric": metric, "spearman(metric, gold gain)": point, "95% CI lo": lo, "95% CI hi": hi})
    out.section(f"Predicting the gold gain across {len(g)} proxies (means over seeds)",
                "Spearman rank correlation, percentile CI from a paired bootstrap over proxies "
                "(metrics.stratified_bootstrap_ci over the proxies' indices).")
    out.table(pd.DataFrame(corr))
    out.section("Per proxy")
    out.table(g.sort_values("gold_gain"))
    out.finish()
    return {"bandit": steps, "predictors": pred, "correlations": pd.DataFrame(corr)}


if __name__ == "__main__":
    main()
