"""Result 1 — overoptimization laws (Gao et al. 2023) on tiltenv.

Proxies: Bradley–Terry MLPs (depth 2) over widths × label counts, trained on labels drawn in contexts of
``K_LABEL`` candidates (π_ref uniform, so the label distribution and the pooled normalization do not depend
on K) and deployed by ``World.with_proxy`` in a world with the same θ* and K = 1024 candidates. Gold: the
non-monotone ``hump`` link (the proxy learns the rise from labels in the bulk and extrapolates in the tail);
controls: linear gold with the linear BT proxy, monotone ``relu`` / ``tanh`` gold with an MLP proxy.

For every proxy: exact best-of-n for n = 1 … K (``diagnostics.best_of_n_curve``), RLOO and PPO trajectories
at β = 0 read at every update (``TrainBudget(checkpoint_every=1)``), Gao fits ``d(α − βd)`` (best-of-n) and
``d(α − β log d)`` (RL), d = √KL, from ``metrics.overoptimization`` / ``metrics.gao_fit``. Overoptimization is
decided on the measured drop (peak gold minus final gold), never on a fitted β.

Usage: ``python scripts/reproduce/gao_overoptimization.py [--quick] [--out DIR]``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from _common import Output, Trajectory, parse_args, plt  # noqa: E402
from baselines import PPO, RLOO, PPOConfig, RLOOConfig, TrainBudget  # noqa: E402
from tiltenv import TaskConfig, make_world  # noqa: E402
from tiltenv import metrics as M  # noqa: E402
from tiltenv.lifecycle.diagnostics import best_of_n_curve  # noqa: E402

K_LABEL = 64


def settings(quick: bool) -> dict:
    if quick:
        return dict(d=8, K=256, n_eval=256, n_norm=128, widths=(16, 64), labels=(250, 4000), epochs=10,
                    controls=("linear",), rl_updates=60, ppo=False, seeds=(0,))
    return dict(d=16, K=1024, n_eval=256, n_norm=256, widths=(16, 64, 256), labels=(250, 1000, 4000, 16000),
                epochs=20, controls=("linear", "relu", "tanh"), rl_updates=160, ppo=True, seeds=(0,))


def ns_for(K: int) -> list[int]:
    return sorted({int(round(v)) for v in np.geomspace(1, K, 2 * int(np.log2(K)) + 1)})


def proxy_world(s: dict, link: str, proxy: str, width: int, n_labels: int, seed: int):
    """The proxy trained in a K_LABEL world, moved into the K-candidate evaluation world (same θ*)."""
    kw = {} if proxy == "linear" else {"width": width, "depth": 2, "epochs": s["epochs"], "device": "cpu"}
    label_world = make_world(TaskConfig(d=s["d"], K=K_LABEL, link=link, n_labels=n_labels, proxy=proxy,
                                        proxy_kwargs=kw, n_eval_contexts=16, n_norm_contexts=s["n_norm"], seed=seed))
    big = make_world(TaskConfig(d=s["d"], K=s["K"], link=link, n_labels=2, proxy="linear",
                                n_eval_contexts=s["n_eval"], n_norm_contexts=s["n_norm"], seed=seed, beta=1.0))
    return big.with_proxy(label_world.task.proxy)


def rl_curve(world, algo: str, updates: int, seed: int) -> pd.DataFrame:
    if algo == "rloo":
        agent, per = RLOO(RLOOConfig(beta=0.0, learning_rate=0.06, batch_size=64, num_generations=4, seed=seed,
                                     device="cpu")), 256
    else:
        agent, per = PPO(PPOConfig(beta=0.0, learning_rate=0.06, batch_size=256, num_generations=1, num_epochs=2,
                                   num_minibatches=4, max_grad_norm=None, seed=seed, device="cpu")), 256
    traj = Trajectory(world.judge)
    agent.fit(world.task, TrainBudget(proxy_queries=per * updates, n_checkpoints=1, checkpoint_every=1), traj)
    return traj.frame()


def summarize(curve: pd.DataFrame, form: str) -> dict:
    rep = M.overoptimization(curve.kl.values, curve.gold.values, curve.proxy.values)
    f = rep.fits[form]
    return {"alpha": f.alpha, "beta": f.beta, "r2": f.r2, "d_star_fit": f.d_star,
            "d_peak": float(np.sqrt(rep.kl_at_peak)), "peak_gold": rep.peak_gold, "gold_gain_peak":
            rep.peak_gold - float(curve.sort_values("kl").gold.iloc[0]), "final_gold": rep.final_gold,
            "drop": rep.drop, "kl_max": float(curve.kl.max()), "overoptimized": rep.overoptimized and rep.drop > 0.01,
            "proxy_rising_while_gold_falls": rep.proxy_rising_while_gold_falls}


def gold_at_kl(curve: pd.DataFrame, kl: float) -> float:
    """Gold at a given KL on the monotone-in-KL part of a curve (linear interpolation; nan beyond its range)."""
    c = curve.sort_values("kl")
    c = c[c.kl.cummax() == c.kl]
    if kl > c.kl.max():
        return float("nan")
    return float(np.interp(kl, c.kl.values, c.gold.values))


def main(argv=None) -> dict:
    args = parse_args(__doc__, argv)
    s = settings(args.quick)
    out = Output(args.out, "gao_overoptimization", args.quick)
    configs = [("hump", "mlp", w, n) for w in s["widths"] for n in s["labels"]]
    mid_n = s["labels"][len(s["labels"]) // 2]
    configs += [(c, "linear" if c == "linear" else "mlp", 0 if c == "linear" else 64, mid_n) for c in s["controls"]]
    points, rows = [], []
    ns = ns_for(s["K"])
    for seed in s["seeds"]:
        for link, proxy, width, n_labels in configs:
            world = proxy_world(s, link, proxy, width, n_labels, seed)
            key = dict(link=link, proxy_kind=proxy, width=width, n_labels=n_labels, seed=seed)
            bon = pd.DataFrame(best_of_n_curve(world, ns)).rename(columns={"n": "x"})
            bon["kl"] = bon.kl.clip(lower=0.0)  # KL(π_ref‖π_ref) is 0 up to rounding (−1e-16)
            curves = {"bon": bon}
            curves["rloo"] = rl_curve(world, "rloo", s["rl_updates"], seed).rename(columns={"step": "x"})
            if s["ppo"] and (link != "hump" or width == 64):
                curves["ppo"] = rl_curve(world, "ppo", s["rl_updates"], seed).rename(columns={"step": "x"})
            for method, c in curves.items():
                points.append(c.assign(method=method, **key))
                summ = summarize(c, "bon" if method == "bon" else "rl")
                extra = {f"gold_gain_at_kl{k:g}": gold_at_kl(c, k) - float(c.sort_values("kl").gold.iloc[0])
                         for k in (0.5, 2.0)}
                rows.append({**key, "method": method, **summ, **extra})
            print(f"  {link} {proxy} w={width} n={n_labels}: " + ", ".join(
                f"{r['method']} drop={r['drop']:.3f} d_peak={r['d_peak']:.2f}" for r in rows[-len(curves):]), flush=True)
    pts = pd.concat(points, ignore_index=True)
    table = pd.DataFrame(rows)
    out.csv(pts)
    out.csv(table, "_fits")

    # ---------------------------------------------------------------- figure
    hump = table[table.link == "hump"]
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    ax = axes[0]
    cmap = plt.get_cmap("viridis")
    mid_w = 64 if 64 in s["widths"] else s["widths"][-1]
    for i, n in enumerate(s["labels"]):
        c = pts[(pts.link == "hump") & (pts.method == "bon") & (pts.width == mid_w) & (pts.n_labels == n) & (pts.seed == 0)]
        d = np.sqrt(c.kl.values)
        ax.plot(d, c.gold.values - c.gold.values[0], "o", ms=3, color=cmap(i / max(1, len(s["labels"]) - 1)), label=f"n={n}")
        f = M.gao_fit(c.kl.values, c.gold.values - c.gold.values[0], "bon")
        dd = np.linspace(0, d.max(), 100)
        ax.plot(dd, f.predict(dd**2), "-", color=cmap(i / max(1, len(s["labels"]) - 1)), lw=1)
    ax.set(xlabel="d = sqrt(KL)", ylabel="gold gain", title=f"hump, best-of-n (width {mid_w}): d(α−βd) fits")
    ax.legend(fontsize=7)
    ax = axes[1]
    for form, mk in (("bon", "o-"), ("rloo", "s--")):
        for w in s["widths"]:
            h = hump[(hump.method == form) & (hump.width == w)].groupby("n_labels")[["d_peak", "peak_gold"]].mean()
            ax.plot(h.d_peak, h.peak_gold, mk, label=f"{form} w={w}")
            for n, r in h.iterrows():
                ax.annotate(str(n), (r.d_peak, r.peak_gold), fontsize=6)
    ax.set(xlabel="measured d at the gold peak", ylabel="peak gold", title="peak vs labels (annotated) and width")
    ax.legend(fontsize=7)
    ax = axes[2]
    for method, st in (("bon", "-"), ("rloo", "--"), ("ppo", ":")):
        c = pts[(pts.link == "hump") & (pts.method == method) & (pts.width == mid_w) & (pts.n_labels == mid_n) & (pts.seed == 0)]
        if len(c):
            c = c.sort_values("kl")
            ax.plot(np.sqrt(c.kl), c.gold, st, label=f"{method} gold")
            ax.plot(np.sqrt(c.kl), c.proxy / 4, st, alpha=0.4, label=f"{method} proxy/4")
    for ctrl in s["controls"]:
        c = pts[(pts.link == ctrl) & (pts.method == "bon") & (pts.seed == 0)].sort_values("kl")
        ax.plot(np.sqrt(c.kl), c.gold, "-", lw=0.8, label=f"control {ctrl} (bon)")
    ax.set(xlabel="d = sqrt(KL)", ylabel="gold value", title=f"hump w={mid_w} n={mid_n}: RL vs best-of-n; controls")
    ax.legend(fontsize=6)
    out.figure(fig)

    # ---------------------------------------------------------------- tables
    cols = ["link", "width", "n_labels", "method", "alpha", "beta", "r2", "d_star_fit", "d_peak", "peak_gold",
            "gold_gain_peak", "drop", "overoptimized"]
    agg = table.groupby(["link", "width", "n_labels", "method"], sort=False).mean(numeric_only=True).reset_index()
    agg["overoptimized"] = agg["drop"] > 0.01
    out.section("Fits and measured peaks",
                "α, β, R², d* from the Gao fits (best-of-n: d(α−βd); RL: d(α−β log d)); d_peak, peak gold and drop are "
                "measured on the curve. `overoptimized` = measured drop > 0.01.")
    out.table(agg[cols])
    hb = agg[(agg.link == "hump") & (agg.method == "bon")]
    moves = []
    for w in s["widths"]:
        h = hb[hb.width == w].sort_values("n_labels")
        moves.append({"width": w, "labels": " → ".join(map(str, h.n_labels)),
                      "d_peak": " → ".join(f"{v:.2f}" for v in h.d_peak),
                      "peak_gold": " → ".join(f"{v:.3f}" for v in h.peak_gold),
                      "drop": " → ".join(f"{v:.3f}" for v in h["drop"]),
                      "spearman(n, d_peak)": M_spear(h.n_labels, h.d_peak),
                      "spearman(n, peak_gold)": M_spear(h.n_labels, h.peak_gold)})
    out.section("How the best-of-n peak moves with labels (per width)")
    out.table(pd.DataFrame(moves))
    comp = agg[(agg.link == "hump")].pivot_table(index=["width", "n_labels"], columns="method",
                                                  values=["d_peak", "gold_gain_at_kl0.5", "gold_gain_at_kl2"])
    comp.columns = [f"{a}[{b}]" for a, b in comp.columns]
    out.section("RL vs best-of-n at equal KL (hump)",
                "Gold gain at KL = 0.5 and 2 (interpolated on each curve) and the measured d at the peak.")
    out.table(comp.reset_index())
    out.finish()
    return {"points": pts, "fits": table, "summary": agg}


def M_spear(x, y) -> float:
    from _common import spearman

    return spearman(np.asarray(x), np.asarray(y)) if len(x) > 2 else float("nan")


if __name__ == "__main__":
    main()
