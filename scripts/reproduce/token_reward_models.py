"""A sequence-native reward model against the φ proxies on the token world (issue 20).

The φ proxies (``linear``, ``two_stage``, ``mlp``) read a response through the public features φ(c, y), the very
features the gold is a link of; ``transformer`` (:mod:`tiltenv.worlds.tokens.reward_model`) reads the prompt and response
tokens, as a language-model reward model does, and must learn φ's role from the pairs. All are trained on the
same preference pairs (two π_ref responses a prompt, Bradley–Terry labels) and normalized under π_ref the same
way. Per world and proxy, exactly over all V^L responses of the evaluation prompts:

* ``gold_corr``: Pearson correlation of proxy and gold over (prompt, response), responses weighted by π_ref;
* ``accuracy``: the pairwise accuracy on independent π_ref pairs of held-out prompts
  (:func:`tiltenv.metrics.ranking_accuracy`);
* ``reward_var``: the proxy's reward variance under π_ref, within prompts (Razin et al.'s teacher signal; the
  normalization sets the pooled variance to 1, the within-prompt share is what the policy can act on);
* ``build_s``: the world's build time with the proxy trained (cold cache), wall seconds on one torch thread.

A second table times the build at V=16, L=4 (65,536 responses a prompt; fewer prompts) against ``two_stage``.

Usage: ``python scripts/reproduce/token_reward_models.py [--quick] [--out DIR]``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from _common import Output, parse_args, plt  # noqa: E402
from tiltenv import make_world  # noqa: E402
from tiltenv import metrics as M  # noqa: E402
from tiltenv.worlds.tokens import TokenConfig  # noqa: E402

PROXIES = ("linear", "two_stage", "mlp", "transformer")


def _weighted_corr(logp: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> float:
    """Correlation of a and b over (prompt, response), responses weighted by π_ref, prompts equally."""
    w = logp.exp() / logp.shape[0]
    ma, mb = (w * a).sum(), (w * b).sum()
    cov = (w * (a - ma) * (b - mb)).sum()
    return float(cov / ((w * (a - ma) ** 2).sum() * (w * (b - mb) ** 2).sum()).sqrt())


def measure(cfg: TokenConfig) -> dict:
    t = time.perf_counter()
    world = make_world(cfg, fresh=True)
    build = time.perf_counter() - t
    j = world.judge
    return {"build_s": build, "gold_corr": _weighted_corr(j.eval_ref_logp, j.eval_proxy, j.eval_gold),
            "accuracy": float(M.ranking_accuracy(j.eval_proxy, j.eval_gold, j.eval_ref_logp)),
            "reward_var": float(M.reward_variance(j.eval_ref_logp, j.eval_proxy))}


def figure(summary: pd.DataFrame) -> plt.Figure:
    """Gold correlation, accuracy and reward variance under π_ref, per link and proxy."""
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    for ax, col in zip(axes, ("gold_corr", "accuracy", "reward_var")):
        piv = summary.pivot(index="link", columns="proxy", values=col)[list(PROXIES)]
        piv.plot.bar(ax=ax, rot=0, legend=col == "gold_corr")
        ax.set_title(col + (" under π_ref" if col != "gold_corr" else " (π_ref-weighted)"), fontsize=9)
        if col == "accuracy":
            ax.set_ylim(0.5, 1.0)
    fig.suptitle("token world: a transformer over tokens vs proxies over φ (same pairs)", y=1.02)
    fig.tight_layout()
    return fig


def main(argv=None) -> dict:
    args = parse_args(__doc__, argv)
    quick = args.quick
    out = Output(args.out, "token_reward_models", quick)
    size = dict(V=4, L=3, n_labels=1000, n_eval_contexts=32, n_norm_contexts=32) if quick else \
        dict(V=8, L=4, n_labels=2000, n_eval_contexts=128, n_norm_contexts=128)
    links = ("relu",) if quick else ("relu", "hump", "he2")
    seeds = (0,) if quick else (0, 1, 2)
    rows = []
    for link in links:
        for seed in seeds:
            for proxy in PROXIES:
                cfg = TokenConfig(**size, link=link, proxy=proxy, flip_rate=0.05, seed=seed)
                rows.append({"link": link, "seed": seed, "proxy": proxy, **measure(cfg)})
    table = pd.DataFrame(rows)
    out.csv(table)
    summary = table.groupby(["link", "proxy"], sort=False)[["gold_corr", "accuracy", "reward_var", "build_s"]].mean()
    summary = summary.reset_index()
    out.section(f"Proxies on the token world (V={size['V']}, L={size['L']}, {size['n_labels']} pairs, flip rate "
                f"0.05; means over {len(seeds)} seed(s))")
    out.table(summary)
    timing = []
    if not quick:
        for V, L, n in ((8, 4, 128), (16, 4, 32)):
            for proxy in ("two_stage", "transformer"):
                cfg = TokenConfig(V=V, L=L, n_labels=2000, n_eval_contexts=n, n_norm_contexts=n, proxy=proxy, seed=0)
                t = time.perf_counter()
                make_world(cfg, fresh=True)
                timing.append({"V": V, "L": L, "prompts (eval = norm)": n, "proxy": proxy,
                               "build_s": time.perf_counter() - t})
        out.section("World build time (wall s, cold cache, one torch thread)")
        out.table(pd.DataFrame(timing))
    out.figure(figure(summary))
    tf = summary[summary.proxy == "transformer"]
    best = summary[summary.proxy != "transformer"].groupby("link").accuracy.max()
    gap = float(np.mean([best[r.link] - r.accuracy for r in tf.itertuples()]))
    side = (f"{gap:.3f} below the best φ proxy's of each link: the φ proxies, which read the features the gold is "
            "a link of, stay ahead" if gap > 0 else f"{-gap:.3f} above the best φ proxy's of each link")
    out.line(f"The transformer's pairwise accuracy under π_ref is {tf.accuracy.mean():.3f} on average (gold "
             f"correlation {tf.gold_corr.mean():.3f}, reward variance under π_ref {tf.reward_var.mean():.3f}), "
             f"{side}; it learns the gold from the tokens alone.")
    out.finish()
    return {"table": table, "summary": summary, "timing": pd.DataFrame(timing)}


if __name__ == "__main__":
    main()
