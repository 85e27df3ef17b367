"""Gao et al. (2023) at token level: token RL vs best-of-n on a non-monotone gold (``tiltenv/Tokens-v0``).

"Scaling laws for reward model overoptimization": with ``d = sqrt(KL(π‖π_ref))``, the gold gain of best-of-n
follows ``d (α − β d)`` and that of RL ``d (α − β log d)``; both rise, peak and fall while the proxy keeps rising.
Gao et al.'s RL is token-level PPO with several KL penalties; here, for each world:

* **best-of-n** exactly (``judge.best_of_n_logp(n)``, n = 1 … 512: the law of the proxy-best of n π_ref samples
  over all 512 responses), with one sampled best-of-n beside it (n π_ref responses drawn token by token, the
  proxy's best kept) as a check of the exact law;
* **the tilt path** ``π_ref e^{r̂/b}`` over a grid of b: the optimum of ``E r̂ − b KL`` at each b (where KL-penalized
  RL converges when its policy can represent it), and also the path of exact natural-gradient ascent on the
  proxy at b = 0 (multiplicative weights on a sequence-level softmax: ``π_t ∝ π_ref e^{t r̂}``) — RL's ideal path;
* **token RL**: RLOO with the KL in the reward (TRL's per-token k1), a GRU initialized at π_ref, Adam (lr 0.03,
  16 prompts × 4 responses an update), one run per KL penalty β, exact gold, KL and proxy at log-spaced
  checkpoints; in the full run also the exact expected gradient (``exact_expectation=True``: all 512 responses
  of 4 prompts an update, no sampling noise) at β = 0 and 0.1 on world 0;
* **a token-level table policy** (:func:`table_curve`: free logits per evaluation prompt and prefix, at π_ref)
  ascending the exact ``E r̂ − β KL`` with Adam, β = 0 (and 0.1 in the full run): token RL without the GRU's
  parameters shared across prompts and prefixes.

Each curve is fitted with ``tiltenv.metrics.gao_fit`` (its form: bon for best-of-n, rl for the tilt path and RL)
and summarized by ``tiltenv.metrics.overoptimization``: peak gold gain, gain at the largest KL, drop; a curve is
overoptimized when its drop exceeds 1% of the world's gold range (``tiltenv.worlds.evaluation.overoptimization_tol``,
the library's one rule), never on a fitted β.

**The setting, and why.** V=8, L=3, gold ``hump`` (``z e^{−z²/(2·1.5²)}`` of ``z = <θ*, φ>``: rises, peaks at
z = 1.5, falls), a linear Bradley–Terry proxy from 1,000 π_ref pairs, ``prompt_weight`` ρ = 0.2 (the share of the
prompt in φ; the default is 0.5). A non-monotone gold can only be overoptimized in a world where the proxy's best
responses lie past the hump's peak: where π_ref already sits near the top (a small gold range), not where it is far
below it (Spearman of gold range and tilt-path drop −0.8 over 8 worlds). With ρ = 0.5 the within-prompt spread
of z is √0.5 and the exact tilt path falls by more than 0.1 in 4 of 8 world seeds; with ρ = 0.2 (spread √0.8) in 7
of 8 (the full run's "world sweep" table, exact). The full run reports world seeds 0–3 (world 1 is the one that
does not overshoot) × β ∈ {0.01, 0.1, 0.3} × RL seeds 0–2, every run, and the same worlds with other proxies;
``--quick`` runs world 0 at β = 0.01 and 0.1 (RL seeds 0–2, 8,192 responses) on 16 evaluation prompts.

**Findings** (``docs/results/gao_tokens.md``). Best-of-n and the tilt path rise, peak and fall where the proxy's
best responses are past the hump (bon's form fits with r² ≥ 0.98, the RL form fits the tilt path with r² 0.94–0.98).
Token RL reproduces it only with a KL penalty that keeps the policy stochastic: at β = 0.1 its gold falls by more
than 0.1 while the proxy rises in 7 of 12 runs (3/3 in worlds 0 and 2, 1/3 in world 3, 0/3 in world 1, whose tilt
path does not fall), at β = 0.01 in 2 of 12 and at β = 0.3 in 2 of 12. It is not a matter of KL reached: at β ≈ 0
(0.01, or 0 with exact gradients) the GRU collapses within a few hundred responses onto a near-deterministic
response that is good for the gold (KL ≈ 4–6, past best-of-n's peak) and stays on that plateau (the softmax gradient
is near zero at a near-deterministic policy; the exact gradient stalls too, so it is not sampling noise), short of
the proxy's best responses; the k1 term in the reward keeps it stochastic and it then moves on to them (proxy up,
gold down). At β = 0.3 it stops on a mode before. The stall is the GRU's, not the token parametrization's: the table
policy (trained on the evaluation prompts) with exact gradients at β = 0 does not stall, reaches the proxy's best
response in every world (KL 6.9–9.4) and falls where the tilt path falls (by 0.51 in world 0, 0.21 in world 3, 0.07
in world 2), with Gao's RL form at r² 0.91–0.97. The GRU's drop comes as a jump between modes, not along a smooth
curve: the form fits the dropping GRU runs with r² 0.55–0.98, worse than the tilt path. Neither a weaker proxy (250
labels, an MLP) nor the sequence-native transformer makes token RL overoptimize more often; the transformer's best
responses are not past the hump in any of the four worlds (exact paths never fall).

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

from _common import Output, parse_args, plt, spearman  # noqa: E402
from baselines.token_best_of_n import best_of_n_responses  # noqa: E402
from baselines.token_pg import TokenPG, TokenPGConfig  # noqa: E402
from tiltenv import make_world  # noqa: E402
from tiltenv import metrics as M  # noqa: E402
from tiltenv.worlds.evaluation import gold_range, overoptimization_tol  # noqa: E402
from tiltenv.worlds.tokens import TokenConfig  # noqa: E402
from tiltenv.worlds.world import torch_generator  # noqa: E402

WORLD = dict(V=8, L=3, link="hump", prompt_weight=0.2, n_labels=1000, n_norm_contexts=64, beta=0.05)
TILT_BETAS = np.geomspace(30.0, 0.01, 24)


def settings(quick: bool) -> dict:
    if quick:
        return dict(seeds=(0,), rl_seeds=(0, 1, 2), n_eval=16, betas=(0.01, 0.1), budget=8_192, exact=(), table=(0.0,),
                    sweep_seeds=(), bon_reps=20, variants=())
    return dict(seeds=(0, 1, 2, 3), rl_seeds=(0, 1, 2), n_eval=64, betas=(0.01, 0.1, 0.3), budget=32_768,
                exact=(0.0, 0.1), table=(0.0, 0.1), sweep_seeds=tuple(range(8)), bon_reps=200,
                variants=(("linear", 250), ("mlp", 1000), ("transformer", 1000)))


def sampled_best_of_n(world, n: int, reps: int, seed: int = 0) -> tuple[float, float]:
    """Mean gold of the proxy-best of n π_ref responses per evaluation prompt (reps draws each), and its SE."""
    j, task = world.judge, world.task
    prompts = j.eval_prompts.repeat_interleave(reps, 0)
    ys = best_of_n_responses(task, prompts, n, torch_generator(seed))
    gold = j.gold(task.features(prompts, ys))
    return float(gold.mean()), float(gold.std() / math.sqrt(gold.numel()))


def point(j, lp: torch.Tensor, ref_gold: float) -> dict:
    return {"kl": max(0.0, M.kl_divergence(lp, j.eval_ref_logp)),
            "gold_gain": M.policy_value(lp, j.eval_gold) - ref_gold,
            "proxy": M.policy_value(lp, j.eval_proxy)}


def exact_curves(j, ref_gold: float) -> list[dict]:
    """Best-of-n (n = 1 … V^L) and the proxy tilt path, exactly."""
    rows = []
    K = j.eval_proxy.shape[1]
    for n in [2**i for i in range(int(math.log2(K)) + 1)]:
        rows.append({"method": "bon", "beta": np.nan, "rl_seed": np.nan, "x": n,
                     **point(j, j.best_of_n_logp(n), ref_gold)})
    for b in TILT_BETAS:
        rows.append({"method": "tilt", "beta": np.nan, "rl_seed": np.nan, "x": b,
                     **point(j, M.tilt_logp(j.eval_ref_logp, j.eval_proxy, float(b)), ref_gold)})
    return rows


def rl_curve(world, ref_gold: float, method: str, beta: float, budget: int, seed: int) -> list[dict]:
    j, rows = world.judge, []

    def record(step, policy):
        rows.append({"method": method, "beta": beta, "rl_seed": seed, "x": step,
                     **point(j, j.policy_logp(policy), ref_gold)})

    if method == "rl":
        cfg = TokenPGConfig(algorithm="rloo", beta=beta, learning_rate=0.03, batch_size=16, num_generations=4,
                            seed=seed)
    else:  # exact expected gradients: all V^L responses of 4 prompts an update
        cfg = TokenPGConfig(algorithm="rloo", beta=beta, learning_rate=0.01, batch_size=4, exact_expectation=True,
                            seed=seed)
    TokenPG(cfg).fit(world.task, proxy_queries=budget, checkpoint=record, n_checkpoints=16)
    return rows


def table_curve(j, ref_gold: float, beta: float, steps: int = 1000, lr: float = 0.03) -> list[dict]:
    """Token RL with a **table** policy and exact gradients: a free logit vector per (evaluation prompt, prefix),
    initialized at π_ref's next-token conditionals (step 0 is π_ref), ``π(y|c) = Π_t softmax(θ[c, y_<t])[y_t]``;
    Adam ascends the exact ``E_π r̂ − β KL(π‖π_ref)`` (all V^L responses enumerated). No parameter is shared between
    prompts or prefixes: this separates the token parametrization from the GRU's."""
    ref = j.eval_ref_logp
    C = ref.shape[0]
    V, L = j.config.V, j.config.L
    marg = [ref]  # log mass of each prefix, level by level: marg[l] (C, V^l) after the reverse
    for _ in range(L):
        marg.append(torch.logsumexp(marg[-1].reshape(C, -1, V), -1))
    marg.reverse()
    theta = [marg[t + 1].reshape(C, -1, V).clone().requires_grad_(True) for t in range(L)]

    def logp() -> torch.Tensor:
        lp = torch.zeros(C, 1, dtype=torch.float64)
        for t in range(L):
            lp = (lp[:, :, None] + torch.log_softmax(theta[t], -1)).reshape(C, -1)
        return lp

    opt = torch.optim.Adam(theta, lr=lr)
    marks = {0, *np.unique(np.geomspace(1, steps, 20).astype(int)).tolist()}
    rows = []
    for step in range(steps + 1):
        lp = logp()
        if step in marks:
            rows.append({"method": "rl_table", "beta": beta, "rl_seed": 0, "x": step,
                         **point(j, lp.detach(), ref_gold)})
        objective = (lp.exp() * (j.eval_proxy - beta * (lp - ref))).sum(-1).mean()
        opt.zero_grad()
        (-objective).backward()
        opt.step()
    return rows


def summarize(c: pd.DataFrame, tol: float) -> dict:
    form = "bon" if c.method.iloc[0] == "bon" else "rl"
    rep = M.overoptimization(c.kl.values, c.gold_gain.values, c.proxy.values, tol=tol)
    f = M.gao_fit(c.kl.values, c.gold_gain.values, form)
    return {"form": form, "alpha": f.alpha, "beta_fit": f.beta, "r2": f.r2, "max_kl": float(c.kl.max()),
            "kl_peak": rep.kl_at_peak, "peak_gain": rep.peak_gold, "final_gain": rep.final_gold, "drop": rep.drop,
            "proxy_peak": float(c.proxy.values[rep.peak_index]), "proxy_final": float(c.proxy.values[rep.final_index]),
            "overoptimized": bool(rep.overoptimized), "proxy_up_gold_down": bool(rep.proxy_rising_while_gold_falls)}


def world_sweep(seeds, n_eval: int) -> pd.DataFrame:
    """Exact drops of best-of-n and of the tilt path over world seeds at ρ = 0.5 (default) and 0.2."""
    rows = []
    for rho in (0.5, 0.2):
        for s in seeds:
            world = make_world(TokenConfig(**{**WORLD, "prompt_weight": rho}, n_eval_contexts=n_eval, seed=s))
            j = world.judge
            ref_gold = M.policy_value(j.eval_ref_logp, j.eval_gold)
            c = pd.DataFrame(exact_curves(j, ref_gold))
            tol = overoptimization_tol(j)
            row = {"prompt_weight": rho, "world_seed": s, "gold_range": gold_range(j)}
            for m in ("bon", "tilt"):
                sm = summarize(c[c.method == m], tol)
                row |= {f"{m}_drop": sm["drop"], f"{m}_kl_peak": sm["kl_peak"]}
            rows.append(row)
    return pd.DataFrame(rows)


def proxy_variants(s: dict) -> pd.DataFrame:
    """Other proxies (fewer labels, an MLP over φ, the transformer over tokens) in the same worlds: exact
    best-of-n and tilt-path drops, and token RL at β = 0.01 and 0.1."""
    rows = []
    for proxy, n_labels in s["variants"]:
        for seed in s["seeds"]:
            world = make_world(TokenConfig(**{**WORLD, "proxy": proxy, "n_labels": n_labels},
                                           n_eval_contexts=s["n_eval"], seed=seed))
            j = world.judge
            ref_gold = M.policy_value(j.eval_ref_logp, j.eval_gold)
            tol = overoptimization_tol(j)
            c = pd.DataFrame(exact_curves(j, ref_gold))
            row = {"proxy": proxy, "n_labels": n_labels, "world_seed": seed,
                   "bon_drop": summarize(c[c.method == "bon"], tol)["drop"],
                   "tilt_drop": summarize(c[c.method == "tilt"], tol)["drop"]}
            for b in (0.01, 0.1):
                sm = summarize(pd.DataFrame(rl_curve(world, ref_gold, "rl", b, s["budget"], 0)), tol)
                row |= {f"rl{b:g}_max_kl": sm["max_kl"], f"rl{b:g}_peak": sm["peak_gain"], f"rl{b:g}_drop": sm["drop"],
                        f"rl{b:g}_proxy_up": sm["proxy_up_gold_down"]}
            rows.append(row)
            print(f"  variant {proxy} n={n_labels} world {seed}: " + ", ".join(
                f"{k}={v:.3f}" for k, v in row.items() if k.endswith("drop")), flush=True)
    return pd.DataFrame(rows)


def main(argv=None) -> dict:
    args = parse_args(__doc__, argv)
    s = settings(args.quick)
    out = Output(args.out, "gao_tokens", args.quick)
    points, summary, ends = [], [], []
    bon_check = None
    for seed in s["seeds"]:
        world = make_world(TokenConfig(**WORLD, n_eval_contexts=s["n_eval"], seed=seed))
        j = world.judge
        ref_gold = M.policy_value(j.eval_ref_logp, j.eval_gold)
        rows = exact_curves(j, ref_gold)
        for b in s["betas"]:
            for r in s["rl_seeds"]:
                rows += rl_curve(world, ref_gold, "rl", b, s["budget"], r)
        for b in s["table"]:
            rows += table_curve(j, ref_gold, b)
        if seed == s["seeds"][0]:
            for b in s["exact"]:
                rows += rl_curve(world, ref_gold, "rl_exact", b, 2048 * 200, 0)
            n_check = 16
            exact16 = next(r for r in rows if r["method"] == "bon" and r["x"] == n_check)["gold_gain"] + ref_gold
            bon_check = (*sampled_best_of_n(world, n_check, reps=s["bon_reps"]), exact16)
        df = pd.DataFrame(rows).assign(world_seed=seed)
        points.append(df)
        tol = overoptimization_tol(j)
        for (m, b, r), c in df.groupby(["method", "beta", "rl_seed"], dropna=False, sort=False):
            summary.append({"world_seed": seed, "method": m, "beta": b, "rl_seed": r, **summarize(c, tol)})
        best = j.eval_proxy.argmax(-1, keepdim=True)  # where every path ends: the proxy's best response
        ends.append({"world_seed": seed, "gold_range": gold_range(j), "tol": tol,
                     "argmax_kl": float(-j.eval_ref_logp.gather(1, best).mean()),
                     "argmax_gain": float(j.eval_gold.gather(1, best).mean()) - ref_gold,
                     "argmax_proxy": float(j.eval_proxy.gather(1, best).mean())})
        print(f"  world {seed}: " + ", ".join(f"{r['method']}{'' if np.isnan(r['beta']) else r['beta']} "
                                             f"drop={r['drop']:.3f}" for r in summary if r["world_seed"] == seed),
              flush=True)
    pts = pd.concat(points, ignore_index=True)
    table = pd.DataFrame(summary)
    ends = pd.DataFrame(ends)
    sweep = world_sweep(s["sweep_seeds"], 32) if s["sweep_seeds"] else None
    variants = proxy_variants(s) if s["variants"] else None
    out.csv(pts)
    out.csv(table, "_fits")

    # ---------------------------------------------------------------- figure
    w0 = s["seeds"][0]
    fig, axes = plt.subplots(1, 3, figsize=(17, 4.6))
    curves = [("bon", np.nan, "o-", "best-of-n")] + [("tilt", np.nan, "-", "tilt path (RL's ideal)")]
    curves += [("rl", b, "s-", f"token RLOO β={b:g}") for b in s["betas"]]
    curves += [("rl_exact", b, "^--", f"token RLOO exact grad β={b:g}") for b in s["exact"]]
    curves += [("rl_table", b, "v:", f"table policy exact grad β={b:g}") for b in s["table"]]
    d0 = pts[pts.world_seed == w0]
    for m, b, style, label in curves:
        c = d0[(d0.method == m) & ((d0.beta == b) if not np.isnan(b) else d0.beta.isna())]
        c = c[c.rl_seed.isna() | (c.rl_seed == 0)]  # one RL run per β in the figure (every run in the tables)
        axes[0].plot(np.sqrt(c.kl), c.gold_gain, style, ms=3, lw=1, label=label)
        axes[1].plot(np.sqrt(c.kl), c.proxy, style, ms=3, lw=1, label=label)
    for m, form in (("bon", "bon"), ("tilt", "rl")):
        f = table[(table.world_seed == w0) & (table.method == m)].iloc[0]  # exact curves: one row each
        grid = np.linspace(1e-3, math.sqrt(f.max_kl), 100)
        fit = M.GaoFit(form, f.alpha, f.beta_fit, f.r2, float("nan")).predict(grid**2)
        axes[0].plot(grid, fit, ":", color="gray", lw=1)
    e0 = ends[ends.world_seed == w0].iloc[0]
    axes[0].plot([math.sqrt(e0.argmax_kl)], [e0.argmax_gain], "k*", ms=10, label="proxy's best response")
    axes[1].plot([math.sqrt(e0.argmax_kl)], [e0.argmax_proxy], "k*", ms=10)
    axes[0].set(xlabel="d = sqrt(KL(π‖π_ref))", ylabel="gold gain over π_ref",
                title=f"world {w0}: gold (dotted: Gao fits of bon, tilt)")
    axes[1].set(xlabel="d = sqrt(KL)", ylabel="proxy value", title=f"world {w0}: the proxy keeps rising")
    axes[0].legend(fontsize=7)
    ax = axes[2]
    labels = [f"{m}" if np.isnan(b) else f"{m} β={b:g}" for m, b, _, _ in curves]
    for i, (m, b, _, _) in enumerate(curves):
        t = table[(table.method == m) & ((table.beta == b) if not np.isnan(b) else table.beta.isna())]
        ax.plot(np.full(len(t), i) + np.linspace(-0.15, 0.15, len(t)), t["drop"], "o")
    ax.set_xticks(range(len(curves)), labels, rotation=30, fontsize=7)
    ax.set(ylabel="gold drop (peak − gain at the largest KL)", title=f"drop per world (seeds {list(s['seeds'])})")
    out.figure(fig)

    # ---------------------------------------------------------------- tables
    out.section("Every curve: peak, drop and Gao fit",
                "Per world and method (β: the KL penalty of the RL run). bon fitted with d(α − βd), tilt and RL with "
                "d(α − β log d); d = sqrt(KL). peak/final gain and drop (peak − gain at the largest KL) measured on "
                "the curve; `overoptimized` = drop > 1% of the world's gold range; `proxy_up_gold_down` = proxy at "
                "the largest KL above its value at the gold peak while the gold dropped. rl_seed: the RL run's seed "
                "(sampling and prompts).")
    cols = ["world_seed", "method", "beta", "rl_seed", "max_kl", "kl_peak", "peak_gain", "final_gain", "drop", "r2",
            "proxy_peak", "proxy_final", "overoptimized", "proxy_up_gold_down"]
    out.table(table[cols])
    out.section("Where every path ends: the proxy's best response",
                "KL = −log π_ref of each prompt's proxy-best response (mean), its gold gain and proxy value.")
    out.table(ends)
    out.section("Counts")
    for (m, b), t in table.groupby(["method", "beta"], dropna=False, sort=False):
        name = m if np.isnan(b) else f"{m} β={b:g}"
        gao = (t["drop"] > 0.1) & t.proxy_up_gold_down
        out.line(f"**{name}**: gold falls by > 0.1 while the proxy rises in **{int(gao.sum())} of {len(t)}** runs "
                 f"(worlds × RL seeds), in worlds {sorted(set(t.world_seed[gao].tolist()))}; falls by > 0.1 in "
                 f"{int((t['drop'] > 0.1).sum())}; overoptimized by the library's rule (drop > 1% of the gold range) "
                 f"in {int(t.overoptimized.sum())}; drops {', '.join(f'{v:.3f}' for v in t['drop'])}; max KL reached "
                 f"{', '.join(f'{v:.2f}' for v in t.max_kl)}; "
                 f"Gao-form r² {', '.join(f'{v:.2f}' for v in t.r2)}.")
    if sweep is not None:
        out.section("World sweep (exact, 32 evaluation prompts)",
                    "Drops of best-of-n and of the tilt path over world seeds 0–7 at ρ = 0.5 (the default) and 0.2.")
        out.table(sweep)
        for rho, t in sweep.groupby("prompt_weight"):
            out.line(f"ρ = {rho:g}: tilt path drops by > 0.05 in {int((t.tilt_drop > 0.05).sum())} of {len(t)} worlds, "
                     f"by > 0.1 in {int((t.tilt_drop > 0.1).sum())}; best-of-n (n ≤ 512) by > 0.05 in "
                     f"{int((t.bon_drop > 0.05).sum())}. Spearman(gold range, tilt drop) = "
                     f"{spearman(t.gold_range.values, t.tilt_drop.values):.2f}: the hump is overshot where π_ref "
                     "already "
                     "sits near its top (small gold range), not where π_ref is far below it.")
    if variants is not None:
        out.section("Other proxies in the same worlds",
                    "Linear BT from 250 pairs, an MLP over φ (1,000 pairs), the sequence-native transformer "
                    "(1,000 pairs); "
                    "exact drops of best-of-n and the tilt path, token RLOO (same settings) at β = 0.01 and 0.1.")
        out.table(variants)
        for b in (0.01, 0.1):
            v = variants
            out.line(f"token RL β={b:g}: gold falls by > 0.1 while the proxy rises in "
                     f"{int(((v[f'rl{b:g}_drop'] > 0.1) & v[f'rl{b:g}_proxy_up']).sum())} of {len(v)} (proxy, world) "
                     f"pairs (falls by > 0.1 in {int((v[f'rl{b:g}_drop'] > 0.1).sum())}); the tilt path falls by > 0.1 "
                     "in "
                     f"{int((v.tilt_drop > 0.1).sum())}, best-of-n in {int((v.bon_drop > 0.1).sum())}.")
    mc, se, exact16 = bon_check
    out.line(f"Sampled best-of-16 (world {w0}; π_ref responses drawn token by token, proxy-best kept): gold {mc:.4f} ± "
             f"{se:.4f} (SE) vs the exact law's {exact16:.4f}.")
    out.finish()
    return {"points": pts, "fits": table, "ends": ends, "sweep": sweep, "variants": variants, "bon_check": bon_check}


if __name__ == "__main__":
    main()
