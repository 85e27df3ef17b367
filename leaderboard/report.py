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
        judges: a :class:`~tiltenv.world.Judge` or a sequence of them (the seeds of one task: KL and gold are
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
body{font-family:DejaVu Sans,Helvetica,Arial,sans-serif;margin:24px auto;max-width:1200px;color:#222}
h1{font-size:1.6em;margin-bottom:0.2em} h2{margin-top:1.6em;border-bottom:1px solid #ccc}
h3{margin-top:1.2em}
table{border-collapse:collapse;font-size:0.86em;margin:0.6em 0}
th,td{border:1px solid #ddd;padding:3px 7px;text-align:right}
th{background:#f3f3f3} td.l,th.l{text-align:left} td{white-space:nowrap}
table.failures td:last-child{white-space:pre-wrap;max-width:40em;font-family:DejaVu Sans Mono,monospace}
tbody tr:nth-child(even){background:#fafafa}
img{max-width:100%;display:block;margin:0.6em 0}
.note{color:#555;font-size:0.9em;max-width:60em}
"""

_CHECK_SCRIPT = """
window.addEventListener('load', function () {
  var imgs = document.images, ok = true;
  for (var i = 0; i < imgs.length; i++) {
    if (!(imgs[i].complete && imgs[i].naturalWidth > 0)) { ok = false; }
  }
  document.body.dataset.imagesOk = ok ? 'true' : 'false';
  document.body.dataset.imagesCount = String(imgs.length);
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
    return f"{_fmt(p)} [{_fmt(lo)}, {_fmt(hi)}]"


def _table(rows: list[list[str]], header: list[str], left: Sequence[int] = (), cls: str = "") -> str:
    """A table from already-formatted cells (escaped here)."""
    lset = set(left)
    th = "".join(f'<th class="l">{_e(h)}</th>' if i in lset else f"<th>{_e(h)}</th>" for i, h in enumerate(header))
    body = []
    for r in rows:
        tds = "".join(f'<td class="l">{_e(c)}</td>' if i in lset else f"<td>{_e(c)}</td>" for i, c in enumerate(r))
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
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{_png(fig)}">'


def _figure(w: float, h: float, ncols: int = 1):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h))
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, list(axes)


def _colors(names: Sequence[str]) -> dict[str, Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if len(names) <= 10 else "tab20"]
    return {n: cmap(i % cmap.N) for i, n in enumerate(sorted(names))}


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
        rows.append([str(d["rank"]), str(d["submission"]), str(d["code_hash"])[:10],
                     _ci(d["iqm"], d["iqm_lo"], d["iqm_hi"]), _ci(d["mean"], d["mean_lo"], d["mean_hi"]),
                     f"{d['failed']} / {d['runs']}", str(d["tasks"])] + [_fmt(d[c]) for c, _ in labels])
    return _table(rows, header, left=(1, 2), cls="board")


def _bars(brd: pd.DataFrame, colors: Mapping[str, Any], score_name: str) -> str:
    n = len(brd)
    fig, (ax,) = _figure(8.0, 0.9 + 0.42 * max(n, 1))
    y = np.arange(n)[::-1]
    names = [str(s) for s in brd["submission"]]
    for stat, off, alpha in (("iqm", 0.18, 0.9), ("mean", -0.18, 0.45)):
        p = brd[stat].to_numpy(float)
        err = np.vstack([p - brd[f"{stat}_lo"].to_numpy(float), brd[f"{stat}_hi"].to_numpy(float) - p])
        ax.barh(y + off, p, height=0.34, xerr=np.nan_to_num(err), color=[colors[s] for s in names], alpha=alpha,
                ecolor="#333", capsize=3, label=stat.upper() if stat == "iqm" else "mean")
    ax.set_yticks(y, [_short(s) for s in names])
    ax.axvline(0.0, color="#888", lw=0.8)
    ax.set_xlabel(f"{score_name} (IQM: dark, mean: light; bars: 95% stratified-bootstrap CI)")
    fig.tight_layout()
    return _img(fig, f"{score_name}: IQM and mean with 95% CIs")


def _trajectories(ck: pd.DataFrame, frontiers: Mapping[str, pd.DataFrame] | None,
                  colors: Mapping[str, Any]) -> list[str]:
    out = []
    tasks = sorted(set(ck["task_key"].astype(str))) if len(ck) else []
    if frontiers:
        tasks = sorted(set(tasks) | {str(k) for k in frontiers if len(ck) == 0})
    for task in tasks:
        fig, (axg, axp) = _figure(11.0, 3.9, ncols=2)
        sub = ck[ck["task_key"].astype(str) == task] if len(ck) else ck
        front = (frontiers or {}).get(task)
        if front is not None and len(front):
            fkl = np.maximum(np.asarray(front["kl"], dtype=float), 0.0)
            fv = np.asarray(front["gold_value"], dtype=float)
            if len(sub):  # draw the frontier over the submissions' KL range (and a bit beyond), not to log K
                kmax = max(float(np.nanmax(sub["kl"].to_numpy(float))), 1e-3)
                keep = fkl <= 1.5 * kmax
                keep[: max(2, int(np.argmax(~keep)) + 1 if (~keep).any() else len(keep))] = True
                fkl, fv = fkl[keep], fv[keep]
                if kmax > fkl[-1]:  # past the gold argmax's KL the frontier is flat (frontier_value's vmax)
                    fkl, fv = np.append(fkl, kmax), np.append(fv, fv[-1])
            axg.plot(np.sqrt(fkl), fv, color="black", ls="--", lw=1.4, label="gold-tilt frontier")
        for name in sorted(set(sub["submission"].astype(str))) if len(sub) else []:
            s = sub[sub["submission"].astype(str) == name]
            m = s.groupby("step", sort=True)[["kl", "gold_value", "proxy_value"]].mean()
            x = np.sqrt(np.maximum(m["kl"].to_numpy(float), 0.0))
            c = colors.get(name, "gray")
            axg.plot(x, m["gold_value"].to_numpy(float), marker="o", ms=3, color=c, label=_short(name))
            fit = _gao_rl_curve(m["kl"].to_numpy(float), m["gold_value"].to_numpy(float))
            if fit is not None:
                axg.plot(*fit, color=c, ls=":", lw=1.0)
            axp.plot(x, m["proxy_value"].to_numpy(float), marker="o", ms=3, color=c, label=_short(name))
        axg.set_title(f"{_short(task, 40)}: gold value (dotted: Gao RL fit)")
        axp.set_title(f"{_short(task, 40)}: proxy value")
        for ax in (axg, axp):
            ax.set_xlabel("√KL(π‖π_ref)")
            ax.grid(alpha=0.3)
        if axg.lines:
            axg.legend(fontsize=7, loc="best")
        fig.tight_layout()
        out.append(f"<h3>{_e(task)}</h3>" + _img(fig, f"{task}: gold and proxy value vs sqrt KL"))
    return out


def _gao_rl_curve(kl: np.ndarray, gold: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Gao et al.'s RL form fitted to a mean trajectory that starts at π_ref (:func:`tiltenv.metrics.gao_fit`),
    as (√KL, gold) points for drawing; None where no fit is possible."""
    from tiltenv import metrics as M

    if len(kl) < 3 or kl[0] > 1e-9 or not np.isfinite(kl).all() or not np.isfinite(gold).all():
        return None
    try:
        fit = M.gao_fit(np.maximum(kl, 0.0), gold - gold[0], "rl")
    except ValueError:
        return None
    grid = np.linspace(0.0, float(np.max(kl)), 64)
    return np.sqrt(grid), gold[0] + fit.predict(grid)


def _variance_scatter(runs: pd.DataFrame, colors: Mapping[str, Any]) -> str:
    ok = runs[runs["status"] == "ok"] if "status" in runs.columns else runs
    if "gold_gain" in ok.columns:
        gain = ok["gold_gain"].astype(float)
    elif {"gold_value", "ref_gold_value"} <= set(ok.columns):
        gain = ok["gold_value"].astype(float) - ok["ref_gold_value"].astype(float)
    else:
        return ""
    fig, axes = _figure(11.0, 3.9, ncols=2)
    drawn = False
    for ax, col, lab in zip(axes, ("reward_variance_ref", "reward_variance_policy"), ("π_ref", "the final policy")):
        if col not in ok.columns:
            ax.set_visible(False)
            continue
        for name in sorted(set(ok["submission"].astype(str))):
            m = ok["submission"].astype(str) == name
            ax.scatter(ok.loc[m, col].astype(float), gain[m], s=18, color=colors.get(name, "gray"), label=_short(name),
                       alpha=0.85)
            drawn = True
        ax.set_xlabel(f"proxy reward variance under {lab}")
        ax.set_ylabel("gold gain V*(π) − V*(π_ref)")
        ax.grid(alpha=0.3)
    if not drawn:
        return ""
    axes[0].legend(fontsize=7, loc="best")
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
    rows = [[str(r.metric), str(r.downstream), str(r.n), _ci(r.rho, r.rho_lo, r.rho_hi), _fmt(r.rho_within),
             str(r.n_groups)] for r in pred.itertuples(index=False)]
    table = _table(rows, ["offline metric", "downstream", "n", "Spearman ρ [95% CI]", "ρ within task", "groups"],
                   left=(0, 1))
    fig, (ax,) = _figure(8.0, 0.9 + 0.36 * len(pred))
    y = np.arange(len(pred))[::-1]
    p = pred["rho"].to_numpy(float)
    err = np.vstack([p - pred["rho_lo"].to_numpy(float), pred["rho_hi"].to_numpy(float) - p])
    ax.barh(y, np.nan_to_num(p), xerr=np.nan_to_num(err), color="#4c72b0", ecolor="#333", capsize=3)
    ax.set_yticks(y, [str(m) for m in pred["metric"]])
    ax.axvline(0.0, color="#888", lw=0.8)
    ax.set_xlim(-1.05, 1.05)
    ax.set_xlabel("Spearman ρ with downstream gold (tilt normalized score), 95% CI")
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
    if len(ck_all):
        scoring._require_columns(ck_all, ("submission", "task_key", "step", "kl", "gold_value", "proxy_value"),
                                 "checkpoints")
    parts = [f"<h1>{_e(title)}</h1>"]
    if generated:
        parts.append(f'<p class="note">Generated {_e(generated)}.</p>')
    parts.append(
        '<p class="note">Exact metrics on each task\'s held-out evaluation contexts. Submissions are ranked by the '
        "interquartile mean (IQM) of the normalized score (1 = the optimal KL-regularized policy, 0 = π_ref, "
        "&lt; 0 harmful) over all runs of all tasks, with 95% stratified-bootstrap confidence intervals "
        "(rliable). A failed run scores 0 (π_ref) in the IQM and mean; the other columns average successful runs."
        "</p>"
    )
    track = runs["track"] if "track" in runs.columns else pd.Series("agent", index=runs.index)
    agents, rms = runs[track != "reward_model"], runs[track == "reward_model"]
    keys = _group_keys(runs)
    groups = [()] if not keys else [tuple(g) for g in runs[keys].drop_duplicates().sort_values(keys).itertuples(index=False)]
    if len(runs) == 0:
        parts.append("<p>No runs.</p>")
    for g in groups:
        label = " · ".join(f"{k.replace('suite_version', 'v')}={v}" for k, v in zip(keys, g)) if keys else "all runs"
        ag = _select(agents, keys, g)
        if len(ag):
            brd = scoring.board(ag, n_boot=n_boot, seed=seed)
            colors = _colors([str(s) for s in set(ag["submission"].astype(str))])
            parts.append(f"<h2>Agents board — {_e(label)}</h2>")
            parts.append(_board_html(brd, _BOARD_LABELS, "normalized score"))
            parts.append(_bars(brd, colors, "normalized score"))
            ck = _select(ck_all, keys, g)
            if "track" in ck.columns:
                ck = ck[ck["track"] != "reward_model"]
            traj = _trajectories(ck, frontiers, colors)
            if traj:
                parts.append(f"<h2>Trajectories — {_e(label)}</h2>")
                parts.append('<p class="note">Gold and proxy value of every checkpoint against √KL (mean over seeds '
                             "at each step), beside the gold-tilt frontier: the best gold any policy reaches at that "
                             "KL. Gold falling while the proxy keeps rising is overoptimization.</p>")
                parts.extend(traj)
            sc = _variance_scatter(ag, colors)
            if sc:
                parts.append(f"<h2>Reward variance vs gold gain — {_e(label)}</h2>" + sc)
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

    Returns:
        The path written.

    Raises:
        TypeError / ValueError: frames of the wrong type or lacking columns; see :func:`leaderboard.scoring.board`.
    """
    page = render_html(runs, checkpoints, failures, title=title, frontiers=frontiers, generated=generated,
                       n_boot=n_boot, seed=seed)
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
            frontiers = {k: frontier_curve(js) for k, js in sorted(by_task.items())}
    from leaderboard.suites import split_label

    return write_report(runs, ck, fails, path, title=title or f"tiltenv — {suite.name} v{suite.version} ({split_label(split)})",
                        frontiers=frontiers)
