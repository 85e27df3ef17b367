"""The static HTML report: one self-contained page (images embedded as base64 PNG), deterministic.

Sections, per suite version and split found in the runs frame:

1. **Board** (agents track): rank by the IQM of the normalized score with its stratified-bootstrap 95% CI, the
   mean with its CI and the other columns of :func:`leaderboard.scoring.board`; a bar chart of IQM and mean
   with their CIs.
2. **Trajectories**: per task, gold and proxy value against √KL of every submission's checkpoints (mean over
   seeds at each step) with Gao et al.'s RL-form fit (dotted), beside the gold-tilt frontier (the best gold any
   policy reaches at that KL, :func:`frontier_curve`).
3. **Reward variance vs gold gain**: one point per successful run, against the proxy's reward variance
   under π_ref and under the final policy (Razin et al.: low reward variance slows optimization).
4. **Reward-model track** (when the frame has ``track == "reward_model"`` rows): its board and how well each
   offline metric predicts downstream gold (:func:`leaderboard.scoring.metric_predictiveness`).
5. **Failures**: submission, task, seed, reason, detail.

Every string from the frames (submission names are user input, failure details are exception text) is
HTML-escaped. Figures are drawn with matplotlib's Agg canvas (no pyplot, no global backend switch). The
page has no timestamp unless one is passed (``generated=``), so the same frames give the same bytes.

Example:
    >>> from leaderboard.report import write_report            # doctest: +SKIP
    >>> write_report(store.runs(suite="smoke", version=1, split="dev"), store.checkpoints(...),
    ...              store.failures(...), "reports/smoke.html", frontiers={"hump": frontier_curve(judges)})
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from leaderboard import scoring

__all__ = ["frontier_curve", "write_report", "report_for_suite", "render_html"]

#: Default β grid of :func:`frontier_curve` (``inf`` gives π_ref, KL = 0).
DEFAULT_BETAS = tuple([math.inf] + list(np.geomspace(100.0, 1e-3, 48)))


# ==================================================================================================
# Frontier
# ==================================================================================================


def frontier_curve(judges: Any, betas: Sequence[float] | None = None) -> pd.DataFrame:
    """The gold-tilt frontier ``β ↦ (KL(π*_β‖π_ref), V*(π*_β))`` of one judge, or its mean over several.

    Args:
        judges: a :class:`~tiltenv.worlds.world.Judge` or a sequence of them (the seeds of one task: KL and gold are
            averaged at each β, like the trajectories averaged over seeds).
        betas: tilt temperatures (default :data:`DEFAULT_BETAS`, from ``inf`` = π_ref down to 1e-3).

    Returns:
        DataFrame with columns ``beta, kl, gold_value`` sorted by KL (one row per β).

    Raises:
        ValueError: no judge; invalid β (from :func:`tiltenv.metrics.tilt_frontier`).
    """
    from tiltenv import metrics as M

    js = list(judges) if isinstance(judges, (list, tuple)) else [judges]
    if not js:
        raise ValueError("frontier_curve needs at least one judge (got an empty sequence).")
    betas = np.asarray(DEFAULT_BETAS if betas is None else betas, dtype=np.float64)
    kls, vals = [], []
    for j in js:
        kl, v = M.tilt_frontier(j.eval_ref_logp, j.eval_gold, betas)
        kls.append(kl)
        vals.append(v)
    df = pd.DataFrame({"beta": np.atleast_1d(betas), "kl": np.mean(kls, axis=0), "gold_value": np.mean(vals, axis=0)})
    return df.sort_values(["kl", "beta"], ascending=[True, False], kind="mergesort").reset_index(drop=True)


# ==================================================================================================
# HTML helpers
# ==================================================================================================

_CSS = """
body{font-family:DejaVu Sans,Helvetica,Arial,sans-serif;margin:16px auto;max-width:1200px;padding:0 12px;color:#222}
h1{font-size:1.6em;margin-bottom:0.2em} h2{margin-top:1.4em;border-bottom:1px solid #ccc}
h3{margin:1.1em 0 0.3em}
table{border-collapse:collapse;font-size:0.82em;margin:0.5em 0;max-width:100%}
th,td{border:1px solid #ddd;padding:2px 6px;text-align:right;vertical-align:top}
th{background:#f3f3f3;white-space:normal} td.l,th.l{text-align:left} td{white-space:nowrap}
td.l{white-space:normal;overflow-wrap:anywhere;max-width:16em} td.l:nth-child(3){white-space:nowrap}
td small{display:block;color:#666;font-size:0.85em}
table.failures td:last-child{white-space:pre-wrap;max-width:44em;overflow-wrap:anywhere;font-family:DejaVu Sans Mono,monospace;font-size:0.9em}
table.meta td,table.meta th{text-align:left;border:none;padding:1px 10px 1px 0;background:none}
tbody tr:nth-child(even){background:#fafafa}
img{max-width:100%;height:auto;display:block;margin:0.4em 0}
.note{color:#555;font-size:0.9em;max-width:70em}
"""

_CHECK_SCRIPT = """
window.addEventListener('load', function () {
  var imgs = document.images, ok = true;
  for (var i = 0; i < imgs.length; i++) {
    if (!(imgs[i].complete && imgs[i].naturalWidth > 0)) { ok = false; }
  }
  document.body.dataset.imagesOk = ok ? 'true' : 'false';
  document.body.dataset.imagesCount = String(imgs.length);
  document.body.dataset.scrollWidth = String(document.documentElement.scrollWidth);
  var unlabelled = 0;
  for (var j = 0; j < imgs.length; j++) {
    var raw = atob(imgs[j].dataset.axes || 'W10=');
    var axes = JSON.parse(new TextDecoder().decode(Uint8Array.from(raw, function (c) { return c.charCodeAt(0); })));
    if (axes.length === 0) { unlabelled++; continue; }
    for (var a = 0; a < axes.length; a++) {
      if ('colorbar' in axes[a]) { if (!axes[a].colorbar) { unlabelled++; } continue; }
      if (!axes[a].x || !axes[a].y) { unlabelled++; }
    }
  }
  document.body.dataset.unlabelledAxes = String(unlabelled);
});
"""


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return ""
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    if math.isnan(f):
        return "–"
    if math.isinf(f):
        return "∞" if f > 0 else "−∞"
    if f != 0 and (abs(f) < 10 ** -(digits) or abs(f) >= 1e5):
        return f"{f:.{digits - 1}e}"
    return f"{f:.{digits}f}"


def _ci(p: Any, lo: Any, hi: Any) -> str:
    if _fmt(lo) == "" and _fmt(p) != "":  # one seed per task: no interval (not a zero-width one)
        return f"{_fmt(p)} (CI n/a: 1 seed)"
    return f"{_fmt(p)} [{_fmt(lo)}, {_fmt(hi)}]"


def _ci_cell(p: Any, lo: Any, hi: Any) -> tuple[str, str]:
    """The point estimate, and below it the 95% CI — or "n/a (1 seed)" where the interval has zero width (one run
    per task: the bootstrap has nothing to resample, the interval says nothing)."""
    try:
        zero = float(lo) == float(hi) == float(p)
    except (TypeError, ValueError):
        zero = False
    return _fmt(p), "CI n/a (1 seed)" if zero else f"[{_fmt(lo)}, {_fmt(hi)}]"


def _table(rows: list[list[str]], header: list[str], left: Sequence[int] = (), cls: str = "") -> str:
    """A table from already-formatted cells (escaped here)."""
    lset = set(left)
    th = "".join(f'<th class="l">{_e(h)}</th>' if i in lset else f"<th>{_e(h)}</th>" for i, h in enumerate(header))
    def cell(c: Any) -> str:  # a (value, note) pair is shown on two lines: the note small, below
        return f"{_e(c[0])}<small>{_e(c[1])}</small>" if isinstance(c, tuple) else _e(c)

    body = []
    for r in rows:
        tds = "".join(f'<td class="l">{cell(c)}</td>' if i in lset else f"<td>{cell(c)}</td>" for i, c in enumerate(r))
        body.append(f"<tr>{tds}</tr>")
    c = f' class="{_e(cls)}"' if cls else ""
    return f"<table{c}><thead><tr>{th}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _png(fig: Any) -> str:
    """A matplotlib Figure as an escaped <img> tag with a base64 PNG (no metadata: deterministic bytes)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=96, metadata={"Software": None})
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return data


def _img(fig: Any, alt: str) -> str:
    """The figure as an <img>; ``data-axes`` lists each visible axes' x and y labels (the browser test checks that
    every plot has both) and ``data-legend`` the legend entries, both as base64 JSON."""
    import json

    axes = []
    for ax in fig.axes:
        if not (ax.get_visible() and ax.axison):
            continue
        cb = getattr(ax, "_colorbar", None)  # a colour bar has one axis: its label
        axes.append({"colorbar": (ax.get_ylabel() or ax.get_xlabel())} if cb is not None
                    else {"x": ax.get_xlabel(), "y": ax.get_ylabel()})
    legends = [t.get_text() for lg in [*fig.legends, *(ax.get_legend() for ax in fig.axes)] if lg is not None
               for t in lg.get_texts()]
    def b64(obj: Any) -> str:  # base64 JSON: user text (submission names) never appears in the markup, even escaped
        return base64.b64encode(json.dumps(obj, ensure_ascii=False).encode("utf-8")).decode("ascii")

    return (f'<img alt="{_e(alt)}" data-axes="{b64(axes)}" data-legend="{b64(legends)}" '
            f'src="data:image/png;base64,{_png(fig)}">')


def _figure(w: float, h: float, ncols: int = 1):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h))
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, list(axes)


#: Okabe & Ito's colour-blind-safe palette (yellow left out: too light on white), for the highlighted submissions.
OKABE_ITO = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000")
#: How many submissions get a colour in the plots; the others are drawn faint grey.
HIGHLIGHT = 4
FAINT = "#9a9a9a"


def _colors(names: Sequence[str]) -> dict[str, Any]:
    """Colours by rank: ``names`` in board order; the first :data:`HIGHLIGHT` get Okabe–Ito colours, the rest grey."""
    return {n: (OKABE_ITO[i] if i < HIGHLIGHT else FAINT) for i, n in enumerate(names)}


def _style(name: str, colors: Mapping[str, Any]) -> dict[str, Any]:
    c = colors.get(name, FAINT)
    faint = c == FAINT
    return {"color": c, "alpha": 0.45 if faint else 1.0, "lw": 0.9 if faint else 1.8, "zorder": 2 if faint else 3,
            "faint": faint}


def _short(name: str, n: int = 28) -> str:
    return name if len(name) <= n else name[: n - 1] + "…"


# ==================================================================================================
# Sections
# ==================================================================================================

_BOARD_LABELS = (
    ("value_gap", "value gap"), ("kl", "KL"), ("kl_matched_gap", "KL-matched gap"),
    ("reward_variance_policy", "reward var. (π)"), ("proxy_gold_gap", "proxy − gold"),
    ("overoptimization_rate", "overopt. rate"), ("median_fit_time", "median fit s"),
)
_RM_LABELS = (
    ("acc_onpolicy", "acc on-policy"), ("acc_offpolicy", "acc off-policy"), ("spearman", "Spearman"),
    ("bon_peak_gold", "BoN peak gold"), ("tilt_value_gap", "tilt value gap"), ("rloo_normalized_score", "RLOO score"),
    ("overoptimization_rate", "BoN overopt. rate"), ("median_fit_time", "median fit s"),
)


def _board_html(brd: pd.DataFrame, labels: Sequence[tuple[str, str]], score_name: str) -> str:
    header = ["rank", "submission", "code", f"IQM {score_name} [95% CI]", f"mean {score_name} [95% CI]",
              "failed / runs", "tasks"] + [lab for _, lab in labels]
    rows = []
    for r in brd.itertuples(index=False):
        d = r._asdict()
        complete = bool(d.get("complete", True))
        rows.append(["—" if pd.isna(d["rank"]) else str(d["rank"]), str(d["submission"]), str(d["code_hash"])[:8],
                     _ci_cell(d["iqm"], d["iqm_lo"], d["iqm_hi"]), _ci_cell(d["mean"], d["mean_lo"], d["mean_hi"]),
                     (f"{d['failed']} / {d['runs']}" if complete else
                      f"{d['failed']} / {d['runs']} (incomplete: {d['runs']}/{d['expected_runs']} runs)")
                     + (f" ({d['not_applicable']} not applicable: unranked)" if d.get("not_applicable") else ""),
                     str(d["tasks"])] + [_overopt_cell(d) if c == "overoptimization_rate" else _fmt(d.get(c))
                                         for c, _ in labels])
    return _table(rows, header, left=(1, 2), cls="board")


def _overopt_cell(d: Mapping[str, Any]) -> str:
    """The agent board's overoptimization share over the runs with a trajectory ("x% of n"), "n/a — no trajectory"
    where none has one (never "0%" for a run nobody could judge); the reward-model track's plain rate."""
    n = d.get("overoptimization_runs")
    if n is None or (isinstance(n, float) and math.isnan(n)):
        return _fmt(d.get("overoptimization_rate"))
    if int(n) == 0:
        return "n/a — no trajectory"
    return f"{100 * float(d['overoptimization_rate']):.0f}% of {int(n)}"


def _bars(brd: pd.DataFrame, colors: Mapping[str, Any], score_name: str) -> str:
    n = len(brd)
    fig, (ax,) = _figure(11.5, 0.8 + 0.32 * max(n, 1))
    y = np.arange(n)[::-1]
    names = [str(s) for s in brd["submission"]]
    for stat, off, alpha in (("iqm", 0.18, 0.95), ("mean", -0.18, 0.45)):
        p = brd[stat].to_numpy(float)
        err = np.vstack([p - brd[f"{stat}_lo"].to_numpy(float), brd[f"{stat}_hi"].to_numpy(float) - p])
        ax.barh(y + off, np.nan_to_num(p), height=0.34, xerr=np.nan_to_num(err),
                color=[colors.get(s, FAINT) for s in names], alpha=alpha, ecolor="#333", capsize=2,
                label="IQM" if stat == "iqm" else "mean")
    ax.set_yticks(y, [_short(s) for s in names])
    ax.axvline(0.0, color="#888", lw=0.8)
    ax.axvline(1.0, color="#888", lw=0.8, ls=":")
    ax.set_xlabel(f"{score_name} (1 = gold optimum π*_β, 0 = π_ref; dark: IQM, light: mean; bars: 95% CI)")
    ax.set_ylabel("submission (by rank)")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return _img(fig, f"{score_name}: IQM and mean with 95% CIs")


def _run_scores(ag: pd.DataFrame, metric: str = "normalized_score") -> pd.DataFrame:
    """submission, task_key, score: one row per run, a failed run at :data:`leaderboard.scoring.FAILED_SCORE`; a
    ``not_applicable`` run (a built-in baseline of another kind of task) is no score, and no row (as on the board)."""
    ag = ag[~scoring._not_applicable(ag)]
    ok = (ag["status"] == "ok") if "status" in ag.columns else pd.Series(True, index=ag.index)
    vals = ag[metric].astype(float) if metric in ag.columns else pd.Series(np.nan, index=ag.index)
    score = vals.where(ok, scoring.FAILED_SCORE)
    return pd.DataFrame({"submission": ag["submission"].astype(str), "task_key": ag["task_key"].astype(str),
                         "score": score.to_numpy(float)})


def performance_profile(runs: pd.DataFrame, taus: np.ndarray, metric: str = "normalized_score") -> dict[str, np.ndarray]:
    """rliable's run-score distribution of each submission: the fraction of runs scoring above τ, averaged over
    tasks (each task weighs the same whatever its number of seeds); a failed run scores
    :data:`leaderboard.scoring.FAILED_SCORE`. Returns ``{submission: (len(taus),) array}``."""
    sc = _run_scores(runs, metric)
    out = {}
    for name, g in sc.groupby("submission", sort=True):
        per_task = [(t["score"].to_numpy(float)[:, None] > taus[None, :]).mean(0) for _, t in g.groupby("task_key")]
        out[str(name)] = np.mean(per_task, axis=0)
    return out


def _profiles(ag: pd.DataFrame, order: Sequence[str], colors: Mapping[str, Any]) -> str:
    sc = _run_scores(ag)
    finite = sc["score"][np.isfinite(sc["score"])]
    if finite.empty:
        return ""
    lo, hi = min(float(finite.min()), 0.0), max(float(finite.max()), 1.0)
    taus = np.linspace(lo - 0.02 * (hi - lo), hi + 0.02 * (hi - lo), 201)
    prof = performance_profile(ag, taus)
    fig, (ax,) = _figure(11.5, 3.6)
    for name in reversed(list(order)):  # the highlighted ones drawn last, on top
        if name not in prof:
            continue
        st = _style(name, colors)
        ax.step(taus, prof[name], where="post", color=st["color"], alpha=st["alpha"], lw=st["lw"], zorder=st["zorder"],
                label=None if st["faint"] else _short(name))
    if any(_style(n, colors)["faint"] for n in prof):
        ax.plot([], [], color=FAINT, lw=0.9, label="others (faint)")
    ax.axvline(0.0, color="#888", lw=0.8)
    ax.axvline(1.0, color="#888", lw=0.8, ls=":")
    ax.set_xlabel("normalized score threshold τ (1 = gold optimum, 0 = π_ref)")
    ax.set_ylabel("fraction of runs with score > τ")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.tight_layout()
    return _img(fig, "performance profiles")


def _poi_matrix(ag: pd.DataFrame, order: Sequence[str], n_boot: int, seed: int) -> str:
    names = [n for n in order if n in set(ag["submission"].astype(str))]
    if len(names) < 2:
        return ""
    n = len(names)
    P = np.full((n, n), np.nan)
    for i, a in enumerate(names):
        for j, b in enumerate(names):
            if i != j:
                try:
                    P[i, j] = scoring.probability_of_improvement(ag, a, b, n_boot=max(1, min(n_boot, 200)), seed=seed)[0]
                except ValueError:
                    pass
    fig, (ax,) = _figure(min(11.5, 3.2 + 0.55 * n), 1.5 + 0.36 * n)
    im = ax.imshow(P, cmap="RdBu", vmin=0.0, vmax=1.0)
    for i in range(n):
        for j in range(n):
            if np.isfinite(P[i, j]):
                ax.text(j, i, f"{P[i, j]:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if abs(P[i, j] - 0.5) > 0.3 else "black")
    ax.set_xticks(range(n), [_short(x, 16) for x in names], rotation=35, ha="right", fontsize=8)
    ax.set_yticks(range(n), [_short(x, 24) for x in names], fontsize=8)
    ax.set_xlabel("submission Y")
    ax.set_ylabel("submission X")
    fig.colorbar(im, ax=ax, label="P(X > Y)")
    fig.tight_layout()
    return _img(fig, "probability of improvement matrix")


def _per_task_table(ag: pd.DataFrame, task: str, order: Sequence[str], n_boot: int, seed: int) -> str:
    """One row per submission on one task: runs, mean normalized score [CI or n/a], final KL and gold, peak gold."""
    from tiltenv import metrics as M

    t = ag[ag["task_key"].astype(str) == task]
    rows = []
    for name in order:
        g = t[t["submission"].astype(str) == name]
        if g.empty:
            continue
        ok = g[g["status"] == "ok"] if "status" in g.columns else g
        sc = _run_scores(g)["score"].to_numpy(float)
        if len(sc) >= 2 and np.isfinite(sc).all():
            p, lo, hi = M.stratified_bootstrap_ci(sc, M.aggregate_mean, reps=n_boot, seed=seed)
            cell = (_fmt(p), f"[{_fmt(lo)}, {_fmt(hi)}]")
        else:
            cell = (_fmt(float(np.mean(sc))) if len(sc) else "–", "CI n/a (1 seed)" if len(sc) == 1 else "")

        def mean(col: str) -> str:
            return _fmt(float(ok[col].astype(float).mean())) if col in ok.columns and len(ok) else "–"

        over = ok["overoptimized"].astype(float) if "overoptimized" in ok.columns else pd.Series(dtype=float)
        na = int(scoring._not_applicable(g).sum())
        rows.append([name, f"{len(ok)} / {len(g)}" + (f" ({na} not applicable)" if na else ""), cell, mean("kl"), mean("gold_value"), mean("peak_gold"),
                     mean("gold_drop"), f"{int(np.nansum(over))} / {int(over.notna().sum())}" if len(over) else "–"])
    header = ["submission", "ok / runs", "mean normalized score [95% CI]", "final KL (nats)", "final gold V*",
              "peak gold", "gold drop", "overoptimized runs"]
    return _table(rows, header, left=(0,), cls="task")


def _trajectory_figure(task: str, sub: pd.DataFrame, front: pd.DataFrame | None, order: Sequence[str],
                       colors: Mapping[str, Any], optimum: tuple[float, float, float] | None) -> str:
    """Gold and proxy value vs √KL on one task: the frontier, every submission (highlighted or faint), its final
    checkpoint (●) and gold peak (★), the gold optimum π*_β at the task's β (◆), Gao's RL fit where it has points."""
    fig, (axg, axp) = _figure(12.0, 3.9, ncols=2)
    if front is not None and len(front):
        fkl = np.maximum(np.asarray(front["kl"], dtype=float), 0.0)
        fv = np.asarray(front["gold_value"], dtype=float)
        if len(sub):  # draw the frontier over the submissions' KL range (and a bit beyond), not to log K
            kl_all = sub["kl"].to_numpy(float)
            kmax = max(float(np.nanmax(np.where(np.isfinite(kl_all), kl_all, np.nan))) if np.isfinite(kl_all).any() else 1e-3, 1e-3)
            if optimum is not None:
                kmax = max(kmax, optimum[1])
            keep = fkl <= 1.5 * kmax
            keep[: max(2, int(np.argmax(~keep)) + 1 if (~keep).any() else len(keep))] = True
            fkl, fv = fkl[keep], fv[keep]
            if kmax > fkl[-1]:  # past the gold argmax's KL the frontier is flat (frontier_value's vmax)
                fkl, fv = np.append(fkl, kmax), np.append(fv, fv[-1])
        axg.plot(np.sqrt(fkl), fv, color="black", ls="--", lw=1.3, label="gold-tilt frontier", zorder=4)
    if optimum is not None:
        beta, okl, ov = optimum
        axg.plot([math.sqrt(max(okl, 0.0))], [ov], marker="D", ms=8, color="black", ls="none", zorder=6,
                 label=f"gold optimum π*_β (β = {beta:g})")
    names = [n for n in order if n in set(sub["submission"].astype(str))] if len(sub) else []
    for name in reversed(names):  # highlighted last (on top)
        s = sub[sub["submission"].astype(str) == name]
        m = s.groupby("step", sort=True)[["kl", "gold_value", "proxy_value"]].mean()
        m = m[np.isfinite(m["kl"].to_numpy(float))]
        if m.empty:
            continue
        st = _style(name, colors)
        x = np.sqrt(np.maximum(m["kl"].to_numpy(float), 0.0))
        gold, proxy = m["gold_value"].to_numpy(float), m["proxy_value"].to_numpy(float)
        label = None if st["faint"] else _short(name)
        kw = dict(color=st["color"], alpha=st["alpha"], lw=st["lw"], zorder=st["zorder"])
        axg.plot(x, gold, marker="o", ms=2.5, label=label, **kw)
        axp.plot(x, proxy, marker="o", ms=2.5, label=label, **kw)
        if not st["faint"]:  # the gold peak: a big star, under the final checkpoint's dot when they coincide
            ip = int(np.argmax(gold))
            axg.plot([x[ip]], [gold[ip]], marker="*", ms=15, mfc=st["color"], mec="black", mew=0.6, ls="none",
                     alpha=0.8, zorder=st["zorder"] + 1)
        for ax, y in ((axg, gold), (axp, proxy)):  # the final checkpoint
            ax.plot([x[-1]], [y[-1]], marker="o", ms=6 if not st["faint"] else 5, mfc="white", mec=st["color"],
                    mew=2.0, ls="none", alpha=st["alpha"], zorder=st["zorder"] + 2)
            fit = _gao_rl_curve(m["kl"].to_numpy(float), gold)
            if fit is not None:
                axg.plot(*fit, color=st["color"], ls=":", lw=1.1, zorder=st["zorder"])
    if any(_style(n, colors)["faint"] for n in names):
        axg.plot([], [], color=FAINT, lw=0.9, label="others (faint)")
    axg.plot([], [], marker="o", ms=6, mfc="white", mec="black", mew=2.0, ls="none", label="final checkpoint")
    axg.plot([], [], marker="*", ms=11, mfc="white", mec="black", ls="none", label="gold peak")
    axg.plot([], [], color="#555", ls=":", lw=1.1, label=f"Gao RL fit (≥ {GAO_MIN_POINTS} checkpoints)")
    axg.set_title(f"{_short(task, 40)}: gold value", fontsize=10)
    axp.set_title(f"{_short(task, 40)}: proxy value (what the agent optimizes)", fontsize=10)
    axg.set_ylabel("gold value V*(π) (gold reward units)")
    axp.set_ylabel("proxy value V̂(π) (sd units under π_ref)")
    for ax in (axg, axp):
        ax.set_xlabel("√KL(π‖π_ref) (√nats)")
        ax.grid(alpha=0.3)
    fig.tight_layout(rect=(0.0, 0.0, 0.79, 1.0))  # the legend gets the right-hand strip, off the data
    fig.legend(*axg.get_legend_handles_labels(), fontsize=8, loc="center left", bbox_to_anchor=(0.79, 0.5),
               frameon=False)
    return _img(fig, f"{task}: gold and proxy value vs sqrt KL")


#: Fewest checkpoints with KL > 0 for which the Gao RL fit (two parameters) is drawn.
GAO_MIN_POINTS = 5


def _gao_rl_curve(kl: np.ndarray, gold: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Gao et al.'s RL form fitted to a mean trajectory that starts at π_ref (:func:`tiltenv.metrics.gao_fit`),
    as (√KL, gold) points for drawing; None where no fit is possible or where it has fewer than
    :data:`GAO_MIN_POINTS` checkpoints with KL > 0 to fit (two parameters through two points fit anything)."""
    from tiltenv import metrics as M

    if len(kl) < 3 or kl[0] > 1e-9 or not np.isfinite(kl).all() or not np.isfinite(gold).all():
        return None
    if int(np.sum(kl > 1e-9)) < GAO_MIN_POINTS:
        return None
    try:
        fit = M.gao_fit(np.maximum(kl, 0.0), gold - gold[0], "rl")
    except ValueError:
        return None
    grid = np.linspace(0.0, float(np.max(kl)), 64)
    return np.sqrt(grid), gold[0] + fit.predict(grid)


_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "h")


def _variance_scatter(runs: pd.DataFrame, order: Sequence[str], colors: Mapping[str, Any]) -> str:
    """Proxy reward variance under the final policy vs gold gain, one point per successful run; the marker and the
    label name the task (under π_ref the variance is a property of the task: the per-task tables give it)."""
    ok = runs[runs["status"] == "ok"] if "status" in runs.columns else runs
    if "gold_gain" in ok.columns:
        gain = ok["gold_gain"].astype(float)
    elif {"gold_value", "ref_gold_value"} <= set(ok.columns):
        gain = ok["gold_value"].astype(float) - ok["ref_gold_value"].astype(float)
    else:
        return ""
    if "reward_variance_policy" not in ok.columns or ok.empty:
        return ""
    fig, (ax,) = _figure(11.5, 4.2)
    tasks = sorted(set(ok["task_key"].astype(str)))
    x_all = ok["reward_variance_policy"].astype(float)
    for ti, task in enumerate(tasks):
        mt = ok["task_key"].astype(str) == task
        for name in reversed([n for n in order if n in set(ok.loc[mt, "submission"].astype(str))]):
            m = mt & (ok["submission"].astype(str) == name)
            st = _style(name, colors)
            ax.scatter(x_all[m], gain[m], s=30, marker=_MARKERS[ti % len(_MARKERS)], color=st["color"],
                       alpha=0.5 if st["faint"] else 0.9, edgecolors="black", linewidths=0.3, zorder=st["zorder"])
        xs, ys = x_all[mt].to_numpy(float), gain[mt].to_numpy(float)
        good = np.isfinite(xs) & np.isfinite(ys)
        if good.any():  # the task's name beside its points
            i = int(np.argmax(ys[good]))
            ax.annotate(task, (xs[good][i], ys[good][i]), xytext=(8, 4 - 11 * (ti % 3)), textcoords="offset points",
                        fontsize=8, color="#333", arrowprops={"arrowstyle": "-", "color": "#999", "lw": 0.6})
    for ti, task in enumerate(tasks):
        ax.scatter([], [], marker=_MARKERS[ti % len(_MARKERS)], color="white", edgecolors="black", label=f"task {task}")
    for name in order:
        st = _style(name, colors)
        if not st["faint"] and name in set(ok["submission"].astype(str)):
            ax.scatter([], [], marker="o", color=st["color"], label=_short(name))
    ax.set_xlabel("proxy reward variance under the final policy, E_x Var_π r̂ (proxy units²)")
    ax.set_ylabel("gold gain V*(π) − V*(π_ref) (gold units)")
    ax.axhline(0.0, color="#888", lw=0.8)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.tight_layout()
    return _img(fig, "reward variance vs gold gain")


def _predictiveness(rm: pd.DataFrame, n_boot: int, seed: int) -> str:
    ok = rm[rm["status"] == "ok"] if "status" in rm.columns else rm
    if "tilt_normalized_score" not in ok.columns or len(ok) < 3:
        return '<p class="note">Too few scored reward models (≥ 3 needed) for the predictiveness table.</p>'
    try:
        pred = scoring.metric_predictiveness(rm, n_boot=n_boot, seed=seed)
    except ValueError as exc:
        return f'<p class="note">Predictiveness not available: {_e(exc)}</p>'
    rows = [[str(r.metric) + (f" (= {r.same_as})" if r.same_as else ""), str(r.downstream),
             _ci(r.rho_within, r.rho_within_lo, r.rho_within_hi), str(r.n_groups),
             _ci(r.rho_pooled, r.rho_pooled_lo, r.rho_pooled_hi), str(r.n)] for r in pred.itertuples(index=False)]
    table = _table(rows, ["offline metric", "downstream", "ρ within task (mean over worlds) [95% CI]", "worlds",
                          "ρ pooled across tasks [95% CI]", "n"], left=(0, 1))
    fig, (ax,) = _figure(8.0, 0.9 + 0.36 * len(pred))
    y = np.arange(len(pred))[::-1]
    p = pred["rho_within"].to_numpy(float)
    err = np.vstack([p - pred["rho_within_lo"].to_numpy(float), pred["rho_within_hi"].to_numpy(float) - p])
    ax.barh(y, np.nan_to_num(p), xerr=np.nan_to_num(err), color="#4c72b0", ecolor="#333", capsize=3)
    ax.set_yticks(y, [str(m) for m in pred["metric"]])
    ax.axvline(0.0, color="#888", lw=0.8)
    ax.set_xlim(-1.05, 1.05)
    ax.set_xlabel("Spearman ρ with downstream gold (tilt normalized score) within a task, 95% CI")
    ax.set_ylabel("offline metric")
    fig.tight_layout()
    return table + _img(fig, "offline metric predictiveness")


def _failures_html(failures: pd.DataFrame | None, runs: pd.DataFrame) -> str:
    if failures is None or len(failures) == 0:
        if "status" in runs.columns and (runs["status"] == "failed").any():
            failures = runs[runs["status"] == "failed"]
        else:
            return "<p>No failed runs.</p>"
    cols = ["submission", "suite", "suite_version", "split", "task_key", "seed_index", "reason", "detail"]
    have = [c for c in cols if c in failures.columns]
    order = [c for c in ("submission", "task_key", "seed_index") if c in failures.columns]
    f = failures.sort_values(order, kind="mergesort") if order else failures
    rows = []
    for r in f[have].itertuples(index=False):
        d = r._asdict()
        rows.append(["" if d.get(c) is None or (isinstance(d.get(c), float) and math.isnan(d.get(c))) else str(d[c])
                     for c in have])
    header = {"task_key": "task", "seed_index": "seed", "suite_version": "version"}
    return _table(rows, [header.get(c, c) for c in have], left=tuple(range(len(have))), cls="failures")


# ==================================================================================================
# The page
# ==================================================================================================


def _group_keys(df: pd.DataFrame) -> list[str]:
    return [c for c in ("suite", "suite_version", "split") if c in df.columns]


def _select(df: pd.DataFrame | None, keys: Sequence[str], values: Sequence[Any]) -> pd.DataFrame:
    if df is None or len(df) == 0:
        return pd.DataFrame() if df is None else df
    m = pd.Series(True, index=df.index)
    for k, v in zip(keys, values):
        if k in df.columns:
            m &= df[k] == v
    return df[m]


def _labelled(runs: pd.DataFrame, *others: pd.DataFrame | None) -> tuple:
    """The frames with ``submission`` replaced by the board's label (:func:`leaderboard.scoring.submission_labels`)."""
    if not {"submission", "code_hash"} <= set(runs.columns) or runs.empty:
        return (runs, *others)
    labels = scoring.submission_labels(runs)
    by_key = {(str(n), str(h)): lab for n, h, lab in zip(runs["submission"], runs["code_hash"], labels)}
    out = [runs.assign(submission=labels)]
    for df in others:
        if df is not None and {"submission", "code_hash"} <= set(df.columns) and len(df):
            df = df.assign(submission=[by_key.get((str(n), str(h)), str(n))
                                       for n, h in zip(df["submission"], df["code_hash"])])
        out.append(df)
    return tuple(out)
def _provenance(runs: pd.DataFrame, meta: Mapping[str, Any] | None, generated: str | None) -> str:
    """The header: date, tiltenv / torch versions, device, suite digest. Stored per-run provenance columns
    (``tiltenv_version``, ``torch_version``, ``device``) are shown when the board has them; otherwise this report's
    environment, labelled as such."""
    import torch

    import tiltenv

    def stored(col: str) -> str | None:
        if col in runs.columns:
            vals = sorted({str(v) for v in runs[col].dropna()})
            if vals:
                return ", ".join(vals)
        return None

    rows = []
    rows.append(("tiltenv", stored("tiltenv_version") or f"{tiltenv.__version__} (this report's environment)"))
    rows.append(("torch", stored("torch_version") or f"{torch.__version__} (this report's environment)"))
    rows.append(("device", stored("device") or "not recorded with the runs"))
    for k, v in (meta or {}).items():
        rows.append((str(k), str(v)))
    cells = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows)
    return f'<table class="meta">{cells}</table>'


def _optima(frontiers: Mapping[str, pd.DataFrame] | None, runs: pd.DataFrame) -> dict[str, tuple[float, float, float]]:
    """``{task: (β, KL, gold)}`` of the gold optimum π*_β at the task's β: the frontier row whose ``beta`` is the
    runs' ``beta`` (report_for_suite adds it to the frontier's β grid)."""
    out = {}
    if not frontiers or "beta" not in runs.columns:
        return out
    for task, f in frontiers.items():
        b = runs.loc[runs["task_key"].astype(str) == str(task), "beta"].astype(float).dropna()
        if b.empty or "beta" not in f.columns:
            continue
        beta = float(b.iloc[0])
        hit = f[np.isclose(f["beta"].astype(float), beta, rtol=1e-12, atol=0.0)]
        if len(hit):
            out[str(task)] = (beta, float(hit["kl"].iloc[0]), float(hit["gold_value"].iloc[0]))
    return out


def render_html(
    runs: pd.DataFrame,
    checkpoints: pd.DataFrame | None,
    failures: pd.DataFrame | None,
    *,
    title: str = "tiltenv leaderboard",
    frontiers: Mapping[str, pd.DataFrame] | None = None,
    generated: str | None = None,
    n_boot: int = 2000,
    seed: int = 0,
    meta: Mapping[str, Any] | None = None,
) -> str:
    """The report as an HTML string (see :func:`write_report`)."""
    if not isinstance(runs, pd.DataFrame):
        raise TypeError(f"runs must be a pandas DataFrame (got {type(runs).__name__}).")
    for name, df in (("checkpoints", checkpoints), ("failures", failures)):
        if df is not None and not isinstance(df, pd.DataFrame):
            raise TypeError(f"{name} must be a pandas DataFrame or None (got {type(df).__name__}).")
    if frontiers is not None and not isinstance(frontiers, Mapping):
        raise TypeError(f"frontiers must map task keys to DataFrames of (kl, gold_value) (got {type(frontiers).__name__}).")
    for k, f in (frontiers or {}).items():
        if not isinstance(f, pd.DataFrame) or not {"kl", "gold_value"} <= set(f.columns):
            raise ValueError(f"frontiers[{k!r}] must be a DataFrame with columns 'kl' and 'gold_value'.")
    ck_all = checkpoints if checkpoints is not None else pd.DataFrame()
    # a submission is its code: versions of one name are drawn and listed apart, as name@hash
    runs, ck_all, failures = _labelled(runs, ck_all, failures)
    if len(ck_all):
        scoring._require_columns(ck_all, ("submission", "task_key", "step", "kl", "gold_value", "proxy_value"),
                                 "checkpoints")
    parts = [f"<h1>{_e(title)}</h1>", _provenance(runs, meta, generated)]
    if generated:
        parts.append(f'<p class="note">Generated {_e(generated)}.</p>')
    parts.append(
        '<p class="note">Exact metrics on each task\'s held-out evaluation contexts. Submissions are ranked by the '
        "interquartile mean (IQM) of the normalized score (1 = the optimal KL-regularized policy π*_β, 0 = π_ref, "
        "&lt; 0 harmful) over all runs of all tasks, with 95% stratified-bootstrap confidence intervals "
        "(rliable); with one seed per task an interval says nothing and reads \"n/a (1 seed)\". A failed run scores 0 "
        "(π_ref) in the IQM, the mean and the profiles; the other columns average successful runs. In the plots the "
        f"{HIGHLIGHT} best-ranked submissions have colours (Okabe–Ito, colour-blind safe), the others are faint grey."
        "</p>"
    )
    track = runs["track"] if "track" in runs.columns else pd.Series("agent", index=runs.index)
    agents, rms = runs[track != "reward_model"], runs[track == "reward_model"]
    keys = _group_keys(runs)
    groups = [()] if not keys else [tuple(g) for g in runs[keys].drop_duplicates().sort_values(keys).itertuples(index=False)]
    if len(runs) == 0:
        parts.append("<p>No runs.</p>")
    optima = _optima(frontiers, runs)
    for g in groups:
        label = " · ".join(f"{k.replace('suite_version', 'v')}={v}" for k, v in zip(keys, g)) if keys else "all runs"
        ag = _select(agents, keys, g)
        if len(ag) and "status" in ag.columns and not (ag["status"] == "ok").any():
            parts.append(f"<h2>Agents board — {_e(label)}</h2>")
            parts.append(f'<p class="note">No successful run yet: all {len(ag)} runs failed, so there is nothing to '
                         "rank. The failures and their reasons are listed below.</p>")
        elif len(ag):
            brd = scoring.board(ag, n_boot=n_boot, seed=seed)
            order = [str(x) for x in brd["submission"]]
            colors = _colors(order)
            parts.append(f"<h2>Agents board — {_e(label)}</h2>")
            parts.append(_board_html(brd, _BOARD_LABELS, "normalized score"))
            parts.append(_bars(brd, colors, "normalized score"))
            prof = _profiles(ag, order, colors)
            if prof:
                parts.append("<h3>Performance profiles</h3>")
                parts.append('<p class="note">rliable\'s run-score distributions: the fraction of runs whose normalized '
                             "score exceeds τ (averaged over tasks). A curve above another everywhere dominates it "
                             "stochastically.</p>" + prof)
            poi = _poi_matrix(ag, order, n_boot, seed)
            if poi:
                parts.append("<h3>Probability of improvement</h3>")
                parts.append('<p class="note">P(X &gt; Y): the chance that a run of X (row) scores above a run of Y '
                             "(column) on the same task (Mann–Whitney, ties ½), averaged over the tasks both ran "
                             "(rliable).</p>" + poi)
            ck = _select(ck_all, keys, g)
            if "track" in ck.columns:
                ck = ck[ck["track"] != "reward_model"]
            tasks = sorted(set(ag["task_key"].astype(str)))
            parts.append(f"<h2>Tasks — {_e(label)}</h2>")
            parts.append('<p class="note">Per task: the submissions\' runs, and the gold and proxy value of every '
                         "checkpoint against √KL (mean over seeds at each step) beside the gold-tilt frontier, the "
                         "best gold any policy reaches at that KL. ● final checkpoint, ★ gold peak, ◆ the gold "
                         "optimum π*_β at the task's β (where the normalized score is 1). Gold falling while the "
                         "proxy keeps rising is overoptimization.</p>")
            for task in tasks:
                sub = ck[ck["task_key"].astype(str) == task] if len(ck) else ck
                front = (frontiers or {}).get(task)
                rv = ag.loc[(ag["task_key"].astype(str) == task), "reward_variance_ref"].astype(float).dropna() \
                    if "reward_variance_ref" in ag.columns else pd.Series(dtype=float)
                beta = optima.get(task, (None,))[0]
                facts = ([f"β = {beta:g}"] if beta is not None else []) + (
                    [f"proxy reward variance under π_ref {_fmt(float(rv.mean()))}"] if len(rv) else [])
                parts.append(f"<h3>{_e(task)}</h3>")
                if facts:
                    parts.append(f'<p class="note">{_e(" · ".join(facts))}</p>')
                parts.append(_per_task_table(ag, task, order, n_boot, seed))
                if len(sub) or (front is not None and len(front)):
                    parts.append(_trajectory_figure(task, sub, front, order, colors, optima.get(task)))
            sc = _variance_scatter(ag, order, colors)
            if sc:
                parts.append(f"<h2>Reward variance vs gold gain — {_e(label)}</h2>")
                parts.append('<p class="note">Razin et al.: a proxy with low reward variance under the policy gives '
                             "a flat objective. One point per successful run; the marker and the label name the task."
                             "</p>" + sc)
        rm = _select(rms, keys, g)
        if len(rm):
            parts.append(f"<h2>Reward-model track — {_e(label)}</h2>")
            try:
                rbrd = scoring.board(rm, n_boot=n_boot, seed=seed)
                parts.append(_board_html(rbrd, _RM_LABELS, "tilt normalized score"))
            except ValueError as exc:
                parts.append(f'<p class="note">Board not available: {_e(exc)}</p>')
            parts.append("<h3>How well offline metrics predict downstream gold</h3>")
            parts.append(_predictiveness(rm, n_boot, seed))
    parts.append("<h2>Failures</h2>")
    parts.append(_failures_html(failures, runs))
    body = "\n".join(parts)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{_CSS}</style><script>{_CHECK_SCRIPT}</script></head>\n"
        f"<body>\n{body}\n</body></html>\n"
    )


def write_report(
    runs: pd.DataFrame,
    checkpoints: pd.DataFrame | None,
    failures: pd.DataFrame | None,
    path: str | Path,
    *,
    title: str = "tiltenv leaderboard",
    frontiers: Mapping[str, pd.DataFrame] | None = None,
    generated: str | None = None,
    n_boot: int = 2000,
    seed: int = 0,
    meta: Mapping[str, Any] | None = None,
) -> Path:
    """Write the static HTML report (one file, images embedded) and return its path.

    Args:
        runs: the store's runs frame (one row per run, both tracks, any number of suite versions / splits:
            one section per version and split).
        checkpoints: the store's checkpoints frame (``submission``, ``task_key``, ``step``, ``kl``,
            ``gold_value``, ``proxy_value`` …) or None.
        failures: the store's failures frame or None (then the failed rows of ``runs`` are listed).
        path: the HTML file to write (parent directories are created).
        title: page title (escaped).
        frontiers: ``{task_key: DataFrame(kl, gold_value)}``, e.g. :func:`frontier_curve` of the task's judges.
        generated: an optional time stamp to print (none by default: same input, same bytes).
        n_boot, seed: bootstrap replicates and seed of the boards' CIs.
        meta: more header rows, e.g. ``{"suite digest": suite.digest()}`` (escaped).

    Returns:
        The path written.

    Raises:
        TypeError / ValueError: frames of the wrong type or lacking columns; see :func:`leaderboard.scoring.board`.
    """
    page = render_html(runs, checkpoints, failures, title=title, frontiers=frontiers, generated=generated,
                       n_boot=n_boot, seed=seed, meta=meta)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(path)
    return path


def report_for_suite(store: Any, suite: Any, split: str, path: str | Path, *, salt: bytes | None = None,
                     frontier_seeds: int | None = None, title: str | None = None) -> Path:
    """Write the report of one suite version and split from a :class:`~leaderboard.store.Store`.

    The frontier of each agent-track task is :func:`frontier_curve` over the judges of the seeds that have runs
    (``frontier_seeds`` caps how many; the test split's judges need the scorer's salt, default
    :func:`leaderboard.seeds.load_salt`). On the test split every submission has its own worlds: the frontier
    shown is that of one member of the task's family (``frontier_seeds`` default 1), a reference, not each run's.
    """
    from leaderboard.runner import world_of

    filters = dict(suite=suite.name, version=suite.version, split=split)
    runs = store.runs(**filters)
    ck = store.checkpoints(**filters)
    fails = store.failures(**filters)
    frontiers: dict[str, pd.DataFrame] = {}
    if len(runs):
        ag = runs[runs["track"] != "reward_model"] if "track" in runs.columns else runs
        wanted = {(str(t), int(i)) for t, i in zip(ag["task_key"], ag["seed_index"])}
        if wanted:
            tasks = sorted({t for t, _ in wanted})
            if split == "test":  # private worlds per submission: the frontier of one member of the family (one judge per task)
                hashes = sorted(set(ag["code_hash"]))
                specs = [sp for h in hashes for sp in suite.runs(split, salt=salt, tasks=tasks, code_hash=h)]
                frontier_seeds = 1 if frontier_seeds is None else frontier_seeds
            else:
                specs = suite.runs(split, salt=salt, tasks=tasks)
            by_task: dict[str, list] = {}
            for spec in specs:
                if (spec.task_key, spec.seed_index) in wanted:
                    if frontier_seeds is None or len(by_task.get(spec.task_key, [])) < frontier_seeds:
                        by_task.setdefault(spec.task_key, []).append(world_of(spec).judge)
            betas = {}  # the task's β joins the grid: the report marks the gold optimum π*_β
            if "beta" in ag.columns:
                for t, b in zip(ag["task_key"].astype(str), ag["beta"].astype(float)):
                    if math.isfinite(b) and b > 0:
                        betas.setdefault(t, b)
            frontiers = {k: frontier_curve(js, betas=list(DEFAULT_BETAS) + ([betas[k]] if k in betas else []))
                         for k, js in sorted(by_task.items())}
    from leaderboard.suites import split_label

    import datetime

    generated = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    meta = {"suite": f"{suite.name} v{suite.version}, {split_label(split)}, {len(suite.entries)} tasks",
            "suite digest": suite.digest()}
    return write_report(runs, ck, fails, path, title=title or f"tiltenv — {suite.name} v{suite.version} ({split_label(split)})",
                        frontiers=frontiers, generated=generated, meta=meta)
