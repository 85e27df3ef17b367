"""Gao et al. (2023) at token level: token RL vs best-of-n on a non-monotone gold (``tiltenv/Tokens-v0``).

"Scaling laws for reward model overoptimization": with ``d = sqrt(KL(π‖π_ref))``, the gold gain of best-of-n
follows ``d (α − β d)`` and that of RL ``d (α − β log d)``; both rise, peak and fall when the proxy is optimized
past the point where it tracks the gold. Gao et al.'s RL is token-level PPO; here:

* one token world (V=8, L=3: 512 responses a prompt), gold ``hump`` (rises, peaks, falls along θ*), a linear
  Bradley–Terry proxy learned from 1,000 π_ref pairs;
* **best-of-n** exactly (``judge.best_of_n_logp(n)``, n = 1 … 512: the law of the proxy-best of n π_ref
  samples over all 512 responses), with one sampled best-of-n beside it (n π_ref responses drawn token by token,
  the proxy's best kept) as a check of the exact law;
* **token RL**: RLOO with the KL in the reward (TRL's per-token k1), a GRU initialized at π_ref, Adam; the
  exact gold and KL at log-spaced checkpoints.

Each curve is fitted with ``tiltenv.metrics.gao_fit`` (its form) and reported with its peak and its drop
(peak gain − final gain).

Usage: ``python scripts/reproduce/gao_tokens.py [--quick] [--out DIR]``.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from _common import Output, parse_args, plt  # noqa: E402
from baselines.token_best_of_n import best_of_n_responses  # noqa: E402
from baselines.token_pg import TokenPG, TokenPGConfig  # noqa: E402
from tiltenv import make_world  # noqa: E402
from tiltenv import metrics as M  # noqa: E402
from tiltenv.tokens import TokenConfig  # noqa: E402
from tiltenv.world import torch_generator  # noqa: E402


def sampled_best_of_n(world, n: int, reps: int, seed: int = 0) -> tuple[float, float]:
    """Mean gold of the proxy-best of n π_ref responses per evaluation prompt (reps draws each), and its SE."""
    j, task = world.judge, world.task
    prompts = j.eval_prompts.repeat_interleave(reps, 0)
    ys = best_of_n_responses(task, prompts, n, torch_generator(seed))
    gold = j.gold(task.features(prompts, ys))
    return float(gold.mean()), float(gold.std() / math.sqrt(gold.numel()))


def main(argv=None) -> dict:
    args = parse_args(__doc__, argv)
    quick = args.quick
    out = Output(args.out, "gao_tokens", quick)
    world = make_world(TokenConfig(V=8, L=3, link="hump", n_labels=1000, n_eval_contexts=16 if quick else 64,
                                   n_norm_contexts=64, beta=0.05, seed=0))
    j = world.judge
    ref_gold = M.policy_value(j.eval_ref_logp, j.eval_gold)
    rows = []
    for n in [2**i for i in range(10)]:
        lp = j.best_of_n_logp(n)
        rows.append({"method": "bon", "n_or_step": n, "kl": max(0.0, M.kl_divergence(lp, j.eval_ref_logp)),
                     "gold_gain": M.policy_value(lp, j.eval_gold) - ref_gold, "proxy": M.policy_value(lp, j.eval_proxy)})
    n_check = 16
    exact16 = next(r for r in rows if r["n_or_step"] == n_check)["gold_gain"] + ref_gold
    mc, se = sampled_best_of_n(world, n_check, reps=20 if quick else 200)

    def record(step, policy):
        lp = j.policy_logp(policy)
        rows.append({"method": "rl", "n_or_step": step, "kl": max(0.0, M.kl_divergence(lp, j.eval_ref_logp)),
                     "gold_gain": M.policy_value(lp, j.eval_gold) - ref_gold,
                     "proxy": M.policy_value(lp, j.eval_proxy)})

    budget = 6_144 if quick else 65_536
    TokenPG(TokenPGConfig(algorithm="rloo", beta=0.01, learning_rate=0.01, batch_size=16, num_generations=4,
                          seed=0)).fit(world.task, proxy_queries=budget, checkpoint=record, n_checkpoints=12)
    df = pd.DataFrame(rows)
    out.csv(df)
    fits = []
    for method, form in (("bon", "bon"), ("rl", "rl")):
        d = df[df.method == method]
        f = M.gao_fit(d.kl.values, d.gold_gain.values, form)
        fits.append({"method": method, "form": form, "alpha": f.alpha, "beta": f.beta, "r2": f.r2,
                     "kl_star": f.kl_star, "peak_gain": float(d.gold_gain.max()),
                     "gain_drop": float(d.gold_gain.max() - d.gold_gain.iloc[-1]), "max_kl": float(d.kl.max())})
    fits = pd.DataFrame(fits)

    fig, ax = plt.subplots(1, 1, figsize=(6.5, 4.2))
    for method, style in (("bon", "o-"), ("rl", "s-")):
        d = df[df.method == method]
        ax.plot(np.sqrt(d.kl), d.gold_gain, style, ms=4, label=f"{method} (exact)")
        f = fits[fits.method == method].iloc[0]
        grid = np.linspace(1e-3, math.sqrt(d.kl.max()), 100)
        fit = grid * (f.alpha - f.beta * (grid if method == "bon" else np.log(grid)))
        ax.plot(grid, fit, ":", color=ax.lines[-1].get_color(), label=f"{method} fit, r²={f.r2:.2f}")
    ax.set(xlabel="sqrt(KL(π‖π_ref))", ylabel="gold gain over π_ref", title="token world, hump gold, linear BT proxy")
    ax.legend(fontsize=7)
    out.figure(fig)
    out.section("Fits of Gao et al.'s forms", "bon: d(α − βd); rl: d(α − β log d); d = sqrt(KL). gain_drop = peak − final.")
    out.table(fits)
    best = j.eval_proxy.argmax(-1, keepdim=True)
    argmax_gain = float(j.eval_gold.gather(1, best).mean()) - ref_gold
    max_kl = float(-j.eval_ref_logp.gather(1, best).mean())
    for _, f in fits.iterrows():
        verdict = (f"peaks at gold gain {f.peak_gain:.3f} and falls by {f.gain_drop:.3f}" if f.gain_drop > 0.01 else
                   f"does not fall within the KL it reached ({f.max_kl:.2f})")
        out.line(f"{f.method}: {verdict}.")
    out.line(f"In a finite response set both paths end at the proxy's best response (KL = −log π_ref of it, "
             f"{max_kl:.2f} on average; gold gain {argmax_gain:.3f}): the RL curve cannot be followed past that KL, "
             "so Gao et al.'s RL drop shows only where the proxy's best response is worse for the gold than a point "
             "on the way to it.")
    out.line(f"Sampled best-of-{n_check} (π_ref responses drawn token by token, proxy-best kept): gold {mc:.4f} ± "
             f"{se:.4f} (SE) vs the exact law's {exact16:.4f}.")
    out.finish()
    return {"points": df, "fits": fits, "bon_check": (mc, se, exact16), "argmax_gain": argmax_gain}


if __name__ == "__main__":
    main()
