"""Razin et al. (2025) in their own parametrization: token-level policy gradient on ``tiltenv/Tokens-v0``.

"What makes a reward model a good teacher?": the reward variance a reward model induces under the initial
policy lower-bounds how fast policy gradient can raise the expected reward, whatever the model's accuracy.
Razin et al. argue it for a softmax over tokens; tiltenv's other scripts test it in the bandit view.

Here: one token world (V=8, L=3, so 512 responses a prompt, π_ref a concentrated GRU, linear gold) and a family
of reward models over the responses' features, used as given (no renormalization): the gold; the gold ×0.3
(perfectly accurate, less variance); a squashed gold ``exp(4 (r* − max r*))`` (perfectly accurate, flat where
π_ref puts its mass); and noisy golds ``c (r* + σ ξ)`` (ξ a fixed random function of the features: less
accurate, more variance). Each is optimized by token-level RLOO with exact expected gradients (all 512
responses of each prompt weighted by π, ``exact_expectation``), β = 0, plain SGD (the theory is gradient flow;
Adam's normalization would hide the scale), the policy a GRU initialized at π_ref. The gold is read exactly on
the evaluation prompts at every update. We report, per reward model, its ranking accuracy and reward variance
under π_ref, and the updates needed to reach a gold level (a fixed fraction of the way from π_ref's gold to the
best response's).

The bandit view: the same task, the same reward models, the bandit RLOO (``baselines.RLOO``,
``log π = log π_ref + <w, φ>``, exact gradients, SGD) — the effect's size (updates-to-level of the accurate
low-variance model over the inaccurate high-variance one) in each parametrization.

Usage: ``python scripts/reproduce/razin_tokens.py [--quick] [--out DIR]``.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from _common import Output, Trajectory, parse_args, plt, spearman  # noqa: E402
from baselines import RLOO, RLOOConfig, TrainBudget  # noqa: E402
from baselines.token_pg import TokenPG, TokenPGConfig  # noqa: E402
from tiltenv import make_world  # noqa: E402
from tiltenv import metrics as M  # noqa: E402
from tiltenv.rewards.proxies import Proxy  # noqa: E402
from tiltenv.worlds.tokens import TokenConfig  # noqa: E402

#: SGD step sizes, one per parametrization (the GRU's gradients are larger than the bandit's linear f_φ's); under
#: gradient flow a step size rescales every reward model's time alike, so the ratios of updates-to-level are
#: what compares across the two views.
TOKEN_LR, BANDIT_LR = 0.01, 0.5
LEVEL = 0.25  # the gold level: π_ref's gold + LEVEL × (best response's gold − π_ref's), averaged over prompts


class FnProxy(Proxy):
    """A reward model given by a function of the features (used as given: identity normalization)."""

    kind = "function"

    def __init__(self, fn) -> None:
        super().__init__()
        self.fn = fn

    def raw(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)


def family(world, quick: bool) -> dict[str, Proxy]:
    gold = world.judge.gold
    d = world.task.d
    g = torch.Generator().manual_seed(123)
    W = torch.randn((64, d), generator=g, dtype=torch.float64) / math.sqrt(d)
    v = torch.randn(64, generator=g, dtype=torch.float64) / math.sqrt(64)

    def xi(x):  # a fixed random smooth function of the features, about unit variance
        return (torch.tanh(x.to(torch.float64) @ W.T) @ v) * 2.0

    gmax = float(world.judge.eval_gold.max())
    fam = {"gold": lambda x: gold(x), "gold x0.3": lambda x: 0.3 * gold(x),
           "squashed exp(4(r*-max))": lambda x: torch.exp(4.0 * (gold(x) - gmax))}
    for s, c in ((0.5, 1.0), (0.5, 3.0), (1.0, 3.0)) if not quick else ((0.5, 3.0),):
        fam[f"noisy σ={s} x{c:g}"] = (lambda s, c: lambda x: c * (gold(x) + s * xi(x)))(s, c)
    return {k: FnProxy(f) for k, f in fam.items()}


def updates_to_level(steps: np.ndarray, gold: np.ndarray, level: float) -> float:
    hit = np.nonzero(gold >= level)[0]
    return float(steps[hit[0]]) if hit.size else float("inf")


def main(argv=None) -> dict:
    args = parse_args(__doc__, argv)
    quick = args.quick
    out = Output(args.out, "razin_tokens", quick)
    V = 8
    K = V**3
    cfg = TokenConfig(V=V, L=3, link="linear", ref_sharpness=3.0, n_labels=200, n_eval_contexts=8 if quick else 64,
                      n_norm_contexts=16, seed=0)
    base = make_world(cfg)
    updates = 25 if quick else 150
    batch = 2 if quick else 8
    rows, curves = [], []
    for name, proxy in family(base, quick).items():
        world = base.with_proxy(proxy, renormalize=False)
        j = world.judge
        ref0 = float(M.policy_value(j.eval_ref_logp, j.eval_gold))
        best = float(j.eval_gold.max(-1).values.mean())
        level = ref0 + LEVEL * (best - ref0)
        row = {"proxy": name, "accuracy_pi0": M.ranking_accuracy(j.eval_proxy, j.eval_gold, j.eval_ref_logp),
               "reward_var_pi0": M.reward_variance(j.eval_ref_logp, j.eval_proxy), "gold_level": level}
        # token level: a GRU at π_ref, RLOO with exact expected gradients, SGD
        tok_rows = []

        def record(step, policy, tok_rows=tok_rows, j=j):
            lp = j.policy_logp(policy)
            tok_rows.append({"update": step // (batch * K), "gold": M.policy_value(lp, j.eval_gold),
                             "kl": max(0.0, M.kl_divergence(lp, j.eval_ref_logp))})

        TokenPG(TokenPGConfig(algorithm="rloo", beta=0.0, optimizer="sgd", learning_rate=TOKEN_LR, batch_size=batch,
                              exact_expectation=True, seed=0)).fit(world.task, proxy_queries=updates * batch * K,
                                                                   checkpoint=record, n_checkpoints=updates)
        t = pd.DataFrame(tok_rows)
        row["token_updates_to_level"] = updates_to_level(t["update"].values, t.gold.values, level)
        row["token_gold_gain"] = float(t.gold.iloc[-1] - t.gold.iloc[0])
        curves.append(t.assign(proxy=name, view="token"))
        # the bandit view: log π = log π_ref + <w, φ> over the 512 responses
        traj = Trajectory(j)
        RLOO(RLOOConfig(beta=0.0, optimizer="sgd", learning_rate=BANDIT_LR, batch_size=batch, exact_expectation=True,
                        device="cpu")).fit(world.task, TrainBudget(proxy_queries=updates * batch * K, n_checkpoints=1,
                                                                   checkpoint_every=1), traj)
        b = traj.frame().assign(update=lambda f: f.step // (batch * K))
        row["bandit_updates_to_level"] = updates_to_level(b["update"].values, b.gold.values, level)
        row["bandit_gold_gain"] = float(b.gold.iloc[-1] - b.gold.iloc[0])
        curves.append(b[["update", "gold", "kl"]].assign(proxy=name, view="bandit"))
        rows.append(row)
    table = pd.DataFrame(rows)
    curves = pd.concat(curves, ignore_index=True)
    out.csv(table)
    out.csv(curves, "_curves")

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.2))
    for ax, view in zip(axes[:2], ("token", "bandit")):
        for name, c in curves[curves.view == view].groupby("proxy", sort=False):
            ax.plot(c["update"], c.gold, label=name)
        ax.axhline(table.gold_level.iloc[0], color="gray", ls=":", lw=1)
        ax.set(xlabel="SGD update (exact expected gradient)", ylabel="gold value (exact)", title=f"{view} view, RLOO")
    axes[0].legend(fontsize=7)
    sp = axes[2]
    sc = sp.scatter(table.reward_var_pi0, table.token_gold_gain, c=table.accuracy_pi0, cmap="coolwarm_r", vmin=0.5,
                    vmax=1.0)
    for _, r in table.iterrows():
        sp.annotate(r.proxy, (r.reward_var_pi0, r.token_gold_gain), fontsize=6)
    sp.set(xscale="log", xlabel="reward variance under π_ref", ylabel="token-level gold gain (fixed budget)",
           title="gain vs variance (colour: accuracy under π_ref)")
    fig.colorbar(sc, ax=sp, label="accuracy")
    out.figure(fig)

    acc_low = table[table.proxy == "gold x0.3"].iloc[0]
    noisy = table[table.proxy.str.startswith("noisy")]
    hi = noisy.loc[noisy.reward_var_pi0.idxmax()]
    ratio = lambda a, b: a / b if np.isfinite(a) and b > 0 else float("inf")  # noqa: E731
    effect = {"token": ratio(acc_low.token_updates_to_level, hi.token_updates_to_level),
              "bandit": ratio(acc_low.bandit_updates_to_level, hi.bandit_updates_to_level)}
    out.section("Reward models, their accuracy and variance under π_ref, and updates to the gold level",
                f"Gold level: π_ref's gold + {LEVEL} × (best response's gold − π_ref's). RLOO, exact expected "
                f"gradients, β = 0, SGD (lr {TOKEN_LR} token level, {BANDIT_LR} bandit view), {batch} prompts an update, {updates} updates.")
    out.table(table)
    out.line(f"Spearman(reward variance under π_ref, token gold gain) = "
             f"{spearman(table.reward_var_pi0, table.token_gold_gain):.2f}; "
             f"Spearman(accuracy under π_ref, token gold gain) = {spearman(table.accuracy_pi0, table.token_gold_gain):.2f}.")
    out.line(f"Effect size — updates to the level of the accurate low-variance 'gold x0.3' over the inaccurate "
             f"high-variance '{hi.proxy}' (accuracy {hi.accuracy_pi0:.2f} vs {acc_low.accuracy_pi0:.2f}): token level "
             f"{effect['token']:.2f}×, bandit view {effect['bandit']:.2f}× (inf: 'gold x0.3' never reached it).")
    out.finish()
    return {"table": table, "curves": curves, "effect": effect, "high_variance": hi.proxy}


if __name__ == "__main__":
    main()
