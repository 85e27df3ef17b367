"""Result 2 — reward variance vs accuracy (Razin et al. 2025) on tiltenv.

(a) Tabular task (``TabularConfig``: explicit arms, the proxy used as given — single-index proxies are
normalized to unit variance under π_ref pooled over contexts, which pins their per-context variance, see (c)).
A family of proxies over the same arms: the gold, scaled golds (perfectly accurate, lower variance), squashed
golds ``r*^p`` (perfectly accurate, flat where π_0 puts its mass), noisy golds at several scales (less
accurate, more variance). Each is optimized by RLOO with exact expected gradients (``exact_expectation``,
β = 0) for a fixed number of updates, with plain SGD (the theory is gradient flow) and with Adam. We report
the gold gain against the initial reward variance under π_0 (``metrics.reward_variance``) and against the
ranking accuracy (``metrics.ranking_accuracy``), with Pearson correlations.

(b) Single-index task: the same learned linear Bradley–Terry proxy under reference policies of growing
concentration ``ref_eta`` (``u ⟂ θ*``, so every π_0 has the same gold value): the variance it induces
under π_0 and the gold gain of RLOO (sampled, β = 0) at a fixed budget, SGD and Adam.

(c) For the record: reward variance and accuracy of parametric single-index proxies (uniform π_ref) under
the library's pooled normalization.

Usage: ``python scripts/reproduce/razin_variance.py [--quick] [--out DIR]``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from _common import Output, Trajectory, parse_args, pearson, plt  # noqa: E402
from baselines import RLOO, RLOOConfig, TrainBudget  # noqa: E402
from tiltenv import TabularConfig, TaskConfig, make_world  # noqa: E402
from tiltenv import metrics as M  # noqa: E402

K_ARMS = 10
GOLD = np.linspace(0.0, 1.0, K_ARMS)
# π_0: most mass on the low and middle arms (a weak initial policy), the best arms rare
_LOGITS = -0.5 * ((np.arange(K_ARMS) - 3.0) / 1.5) ** 2
PI0 = np.exp(_LOGITS) / np.exp(_LOGITS).sum()


def proxy_family(quick: bool) -> dict[str, np.ndarray]:
    fam = {"gold": GOLD, "gold x0.3": 0.3 * GOLD, "gold x0.1": 0.1 * GOLD, "squashed gold^4": GOLD**4,
           "squashed gold^8": GOLD**8}
    rng = np.random.default_rng(0)
    sigmas, scales, reps = ((0.3,), (1.0, 3.0), 1) if quick else ((0.1, 0.2, 0.4, 0.8), (1.0, 3.0), 2)
    for rep in range(reps):
        xi = rng.standard_normal(K_ARMS)
        for s in sigmas:
            for c in scales:
                fam[f"noisy σ={s} x{c:g} #{rep}"] = c * (GOLD + s * xi)
    return fam


def tabular(quick: bool) -> tuple[pd.DataFrame, pd.DataFrame]:
    updates = 60 if quick else 150
    rows, trajs = [], []
    for name, r in proxy_family(quick).items():
        cfg = TabularConfig(gold=GOLD.tolist(), proxy=r.tolist(), ref_probs=PI0.tolist(), beta=0.1)
        world = make_world(cfg)
        j = world.judge
        var0 = M.reward_variance(j.eval_ref_logp, j.eval_proxy)
        acc = M.ranking_accuracy(j.eval_proxy, j.eval_gold)
        acc_ref = M.ranking_accuracy(j.eval_proxy, j.eval_gold, j.eval_ref_logp)
        for opt, lr in (("sgd", 2.0), ("adam", 0.05)):
            traj = Trajectory(j)
            agent = RLOO(RLOOConfig(beta=0.0, optimizer=opt, learning_rate=lr, batch_size=1, exact_expectation=True,
                                    device="cpu"))
            agent.fit(world.task, TrainBudget(proxy_queries=K_ARMS * updates, n_checkpoints=1, checkpoint_every=1), traj)
            t = traj.frame().assign(n_update=lambda f: f.step // K_ARMS)
            gain = float(t.gold.iloc[-1] - t.gold.iloc[0])
            rows.append({"part": "tabular", "proxy": name, "optimizer": opt, "lr": lr, "updates": updates,
                         "reward_var_pi0": var0, "accuracy": acc, "accuracy_pi0": acc_ref, "gold_gain": gain})
            trajs.append(t.assign(proxy=name, optimizer=opt))
    return pd.DataFrame(rows), pd.concat(trajs, ignore_index=True)


def single_index(quick: bool) -> pd.DataFrame:
    etas = (0.0, 2.0, 4.0) if quick else (0.0, 0.5, 1.0, 2.0, 3.0, 4.0)
    seeds = (0,) if quick else (0, 1)
    updates = 40 if quick else 100
    rows = []
    for seed in seeds:
        for eta in etas:
            world = make_world(TaskConfig(d=16, K=16, link="linear", ref_eta=eta, ref_angle=90.0, n_labels=2000,
                                          n_eval_contexts=2048, n_norm_contexts=4096, seed=seed))
            j = world.judge
            var0 = M.reward_variance(j.eval_ref_logp, j.eval_proxy)
            acc = M.ranking_accuracy(j.eval_proxy, j.eval_gold, j.eval_ref_logp)
            for opt, lr in (("sgd", 0.05), ("adam", 0.01)):
                traj = Trajectory(j)
                agent = RLOO(RLOOConfig(beta=0.0, optimizer=opt, learning_rate=lr, batch_size=64, num_generations=4,
                                        seed=seed, device="cpu"))
                agent.fit(world.task, TrainBudget(proxy_queries=256 * updates, n_checkpoints=1, checkpoint_every=10),
                          traj)
                t = traj.frame()
                rows.append({"part": "ref_eta", "ref_eta": eta, "seed": seed, "optimizer": opt, "lr": lr,
                             "updates": updates, "reward_var_pi0": var0, "accuracy_pi0": acc,
                             "gold_pi0": float(t.gold.iloc[0]), "gold_gain": float(t.gold.iloc[-1] - t.gold.iloc[0])})
    return pd.DataFrame(rows)


def normalized_family() -> pd.DataFrame:
    rows = []
    for pk in ({"link": "linear"}, {"link": "tanh", "index_scale": 2.5}, {"link": "relu"}, {"link": "step"},
               {"link": "linear", "angle": 30.0}, {"link": "linear", "angle": 60.0}):
        w = make_world(TaskConfig(d=16, K=16, link="linear", proxy="parametric", proxy_kwargs=pk,
                                  n_eval_contexts=1024, n_norm_contexts=1024))
        j = w.judge
        rows.append({"proxy": str(pk), "reward_var_pi0": M.reward_variance(j.eval_ref_logp, j.eval_proxy),
                     "accuracy": M.ranking_accuracy(j.eval_proxy, j.eval_gold)})
    return pd.DataFrame(rows)


def main(argv=None) -> dict:
    args = parse_args(__doc__, argv)
    out = Output(args.out, "razin_variance", args.quick)
    tab, trajs = tabular(args.quick)
    si = single_index(args.quick)
    norm = normalized_family()
    out.csv(pd.concat([tab, si], ignore_index=True))
    out.csv(trajs, "_trajectories")

    fig, axes = plt.subplots(1, 4, figsize=(19, 4.2))
    for ax, opt in zip(axes[:2], ("sgd", "adam")):
        t = tab[tab.optimizer == opt]
        sc = ax.scatter(t.reward_var_pi0, t.gold_gain, c=t.accuracy, cmap="coolwarm_r", vmin=0.5, vmax=1.0)
        for _, r in t.iterrows():
            if not r.proxy.startswith("noisy"):
                ax.annotate(r.proxy, (r.reward_var_pi0, r.gold_gain), fontsize=6)
        ax.set(xscale="log", xlabel="reward variance under π_0", ylabel="gold gain (fixed budget)",
               title=f"tabular, RLOO exact gradient, {opt.upper()}")
        fig.colorbar(sc, ax=ax, label="accuracy")
    ax = axes[2]
    for name in ("gold", "gold x0.1", "squashed gold^8"):
        for opt, st in (("sgd", "-"), ("adam", ":")):
            t = trajs[(trajs.proxy == name) & (trajs.optimizer == opt)]
            ax.plot(t.n_update, t.gold, st, label=f"{name} ({opt})")
    noisy = [p for p in trajs.proxy.unique() if p.startswith("noisy") and "x3" in p][:1]
    for name in noisy:
        t = trajs[(trajs.proxy == name) & (trajs.optimizer == "sgd")]
        ax.plot(t.n_update, t.gold, "--", label=f"{name} (sgd)")
    ax.set(xlabel="update", ylabel="gold value", title="accurate-but-flat vs noisy-with-variance")
    ax.legend(fontsize=6)
    ax = axes[3]
    g = si.groupby(["optimizer", "ref_eta"]).mean(numeric_only=True).reset_index()
    for opt, mk in (("sgd", "o-"), ("adam", "s--")):
        h = g[g.optimizer == opt]
        ax.plot(h.reward_var_pi0, h.gold_gain, mk, label=opt)
        for _, r in h.iterrows():
            ax.annotate(f"η={r.ref_eta:g}", (r.reward_var_pi0, r.gold_gain), fontsize=6)
    ax.set(xlabel="reward variance of the same proxy under π_0", ylabel="gold gain", title="single index: vary ref_eta")
    ax.legend(fontsize=7)
    out.figure(fig)

    corr = []
    for opt in ("sgd", "adam"):
        t = tab[tab.optimizer == opt]
        corr.append({"part": "tabular family", "optimizer": opt, "n": len(t),
                     "pearson(gain, variance)": pearson(t.gold_gain, t.reward_var_pi0),
                     "pearson(gain, log variance)": pearson(t.gold_gain, np.log(t.reward_var_pi0)),
                     "pearson(gain, accuracy)": pearson(t.gold_gain, t.accuracy)})
        s = si[si.optimizer == opt]
        corr.append({"part": "same proxy, vary ref_eta", "optimizer": opt, "n": len(s),
                     "pearson(gain, variance)": pearson(s.gold_gain, s.reward_var_pi0),
                     "pearson(gain, log variance)": pearson(s.gold_gain, np.log(s.reward_var_pi0)),
                     "pearson(gain, accuracy)": pearson(s.gold_gain, s.accuracy_pi0)})
    out.section("Pearson correlations of the gold gain (fixed budget)")
    out.table(pd.DataFrame(corr))
    piv = tab.pivot_table(index=["proxy", "reward_var_pi0", "accuracy"], columns="optimizer", values="gold_gain")
    out.section("Tabular family: gold gain per proxy", f"{K_ARMS} arms, gold = linspace(0, 1), π_0 peaked on arm 3; "
                f"RLOO with exact expected gradients, β = 0; SGD lr 2.0, Adam lr 0.05.")
    out.table(piv.reset_index().sort_values("reward_var_pi0"))
    out.section("Same proxy under different π_0 (single index, ref_eta, u ⟂ θ*)")
    out.table(si.groupby(["ref_eta", "optimizer"]).mean(numeric_only=True).reset_index()[
        ["ref_eta", "optimizer", "reward_var_pi0", "accuracy_pi0", "gold_pi0", "gold_gain"]])
    out.section("Pooled normalization pins the variance of single-index proxies (uniform π_ref, K = 16)")
    out.table(norm)
    out.finish()
    return {"tabular": tab, "single_index": si, "normalized": norm, "trajectories": trajs}


if __name__ == "__main__":
    main()
