"""leaderboard.report: one static HTML page, images embedded, escaped, deterministic, checked in headless Chromium.

Chromium is Debian's ``chromium`` (``scripts/chromium.sh`` installs it). Without it the browser test is
skipped, unless ``TILTENV_REQUIRE_SERVICES=1`` (CI), where its absence is a failure.
"""

from __future__ import annotations

import base64
import html
import math
import os
import re
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest

from leaderboard import report as R
from tiltenv import TaskConfig, make_world
from tiltenv import metrics as M

EVIL = '<img src=x onerror="alert(1)">&evil'
NAMES = ("tilt", "reinforce", EVIL)
TASKS = ("hump-beta0.1", "linear")


def _frames():
    """Hand-made runs / checkpoints / failures (no training): 3 submissions × 2 tasks × 3 seeds."""
    rng = np.random.default_rng(0)
    runs, cks = [], []
    quality = {"tilt": 0.9, "reinforce": 0.6, EVIL: 0.2}
    for name in NAMES:
        for t, task in enumerate(TASKS):
            for seed in range(3):
                failed = name == EVIL and task == "linear" and seed == 2
                key = dict(submission=name, code_hash=f"hash-{NAMES.index(name)}", suite="smoke", suite_version=1,
                           split="dev", task_key=task, seed_index=seed)
                q = quality[name] + 0.05 * rng.normal()
                gold = 1.2 * q
                row = dict(key, task_id="tiltenv/Hump-v0", track="agent", status="failed" if failed else "ok",
                           reason="timeout" if failed else None,
                           detail="killed after 5 s <script>alert('x')</script>" if failed else None,
                           proxy_queries=4096, fit_time=1.0 + seed, wall_time=2.0 + seed)
                if not failed:
                    row.update(normalized_score=q, value_gap=1 - q, kl=0.5 + q, kl_matched_gap=0.1 * (1 - q),
                               reward_variance_ref=0.9 + 0.01 * t, reward_variance_policy=0.5 * (1 - q), gold_value=gold,
                               ref_gold_value=0.0, gold_gain=gold, proxy_gold_gap=0.1, overoptimized=float(q < 0.3))
                    steps = [0, 10, 100, 1000, 4096]
                    for i, s in enumerate(steps):
                        f = i / (len(steps) - 1)
                        cks.append(dict(key, step=s, kl=(0.5 + q) * f, gold_value=gold * math.sin(f * 1.4) / math.sin(1.4),
                                        proxy_value=1.5 * f, value_gap=1 - q * f, normalized_score=q * f,
                                        reward_variance_policy=0.9 - 0.4 * f))
                runs.append(row)
    runs = pd.DataFrame(runs)
    failures = runs[runs["status"] == "failed"][["submission", "code_hash", "suite", "suite_version", "split",
                                                  "task_key", "seed_index", "reason", "detail"]]
    # a few reward-model-track rows (their own board and the predictiveness table)
    rms = []
    for i, n in enumerate((10, 40, 160, 640, 2560)):
        for task in TASKS:
            acc = 0.6 + 0.07 * i + 0.01 * rng.normal()
            rms.append(dict(submission=f"linear-{n}", code_hash=f"rm-{n}", suite="smoke", suite_version=1, split="dev",
                            task_key=task, seed_index=0, track="reward_model", status="ok", fit_time=0.1,
                            acc_onpolicy=acc, acc_offpolicy=acc - 0.1, spearman=acc - 0.05,
                            tilt_normalized_score=acc - 0.3 + 0.02 * rng.normal(), tilt_value_gap=1.3 - acc,
                            bon_peak_gold=2 * acc, rloo_normalized_score=acc - 0.35, bon_overoptimized=0.0))
    runs = pd.concat([runs, pd.DataFrame(rms)], ignore_index=True)
    return runs, pd.DataFrame(cks), failures


@pytest.fixture(scope="module")
def frontiers():
    j = make_world(TaskConfig(d=4, K=8, n_labels=100, n_eval_contexts=128, n_norm_contexts=128)).judge
    hand = pd.DataFrame({"kl": [0.0, 0.5, 1.0, 2.0], "gold_value": [0.0, 0.9, 1.2, 1.35]})
    return {"hump-beta0.1": hand, "linear": R.frontier_curve([j, j])}


@pytest.fixture(scope="module")
def page(tmp_path_factory, frontiers):
    runs, cks, fails = _frames()
    path = R.write_report(runs, cks, fails, tmp_path_factory.mktemp("report") / "sub" / "board.html",
                          title="smoke <v1>", frontiers=frontiers, n_boot=200)
    return path


def _imgs(text: str) -> list[str]:
    return re.findall(r'<img alt="[^"]*" data-axes="[A-Za-z0-9+/=]*" data-legend="[A-Za-z0-9+/=]*" src="data:image/png;base64,([A-Za-z0-9+/=]+)">', text)


def test_frontier_curve_is_the_gold_tilt_frontier():
    j = make_world(TaskConfig(d=4, K=8, n_labels=100, n_eval_contexts=128, n_norm_contexts=128)).judge
    f = R.frontier_curve(j, betas=[math.inf, 1.0, 0.1])
    kl, v = M.tilt_frontier(j.eval_ref_logp, j.eval_gold, [math.inf, 1.0, 0.1])
    assert list(f["beta"]) == [math.inf, 1.0, 0.1]
    assert np.allclose(f["kl"], kl) and np.allclose(f["gold_value"], v) and f["kl"].iloc[0] == 0.0
    # the frontier dominates: no policy beats it at its KL (here, the proxy tilt at β = 0.3)
    lp = M.tilt_logp(j.eval_ref_logp, j.eval_proxy, 0.3)
    assert M.policy_value(lp, j.eval_gold) <= M.frontier_value(j.eval_ref_logp, j.eval_gold, M.kl_divergence(lp, j.eval_ref_logp)) + 1e-12
    full = R.frontier_curve([j, j])
    assert full["kl"].is_monotonic_increasing and full["gold_value"].is_monotonic_increasing
    with pytest.raises(ValueError, match="at least one judge"):
        R.frontier_curve([])


def test_page_embeds_images_escapes_and_lists_everyone(page):
    text = page.read_text(encoding="utf-8")
    imgs = _imgs(text)
    # bars + performance profiles + P(X > Y) matrix + 2 tasks' trajectories + variance scatter + predictiveness bars
    assert len(imgs) == 7 and text.count("<img") == 7
    for b in imgs:
        png = base64.b64decode(b)
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    assert "src=x onerror" not in text.replace(html.escape(EVIL, quote=True), "")  # only ever escaped
    assert "<script>alert" not in text
    board = text[text.index('class="board"'):]
    board = board[: board.index("</table>")]
    for name in NAMES:
        assert f"<td class=\"l\">{html.escape(name, quote=True)}</td>" in board
    assert board.index(">tilt<") < board.index(">reinforce<") < board.index(html.escape(EVIL, quote=True))  # by IQM
    assert "1 / 6" in board  # the failed run counted
    fails = text[text.index('class="failures"'):]
    assert "timeout" in fails and html.escape("<script>alert('x')</script>", quote=True) in fails
    assert "smoke &lt;v1&gt;" in text
    for task in TASKS:
        assert f"<h3>{task}</h3>" in text
    assert "acc_onpolicy" in text and "Reward-model track" in text


def test_page_is_deterministic(tmp_path, frontiers):
    runs, cks, fails = _frames()
    a = R.write_report(runs, cks, fails, tmp_path / "a.html", frontiers=frontiers, n_boot=50)
    b = R.write_report(runs, cks, fails, tmp_path / "b.html", frontiers=frontiers, n_boot=50)
    assert a.read_bytes() == b.read_bytes()
    small = runs[runs["track"] == "reward_model"]
    c = R.render_html(small, None, None, n_boot=20, generated="2026-01-01 <utc>")
    assert "Generated 2026-01-01 &lt;utc&gt;" in c and "Generated" not in R.render_html(small, None, None, n_boot=20)


def test_bad_inputs_are_named(tmp_path):
    runs, cks, fails = _frames()
    with pytest.raises(TypeError, match="runs must be a pandas DataFrame"):
        R.write_report(runs.to_dict(), cks, fails, tmp_path / "x.html")
    with pytest.raises(ValueError, match="frontiers\\['linear'\\]"):
        R.write_report(runs, cks, fails, tmp_path / "x.html", frontiers={"linear": pd.DataFrame({"kl": [0.0]})})
    with pytest.raises(ValueError, match="lacks the column"):
        R.write_report(runs, cks.drop(columns=["proxy_value"]), fails, tmp_path / "x.html")
    # an empty store still gives a page
    empty = R.write_report(runs.iloc[:0], None, None, tmp_path / "empty.html")
    assert "No runs." in empty.read_text() and "No failed runs." in empty.read_text()


# ------------------------------------------------------------------------------------------ Chromium


def _chromium() -> str | None:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        if os.environ.get("TILTENV_REQUIRE_SERVICES") == "1":
            pytest.fail("chromium is required (TILTENV_REQUIRE_SERVICES=1) but not installed; run scripts/chromium.sh")
        pytest.skip("chromium not installed (scripts/chromium.sh installs it)")
    return exe


def _run(exe: str, tmp_path, *args: str) -> subprocess.CompletedProcess:
    cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
           "--hide-scrollbars", f"--user-data-dir={tmp_path / 'chromium-profile'}", *args]
    env = {**os.environ, "HOME": str(tmp_path)}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)


def test_report_renders_in_headless_chromium(page, tmp_path):
    exe = _chromium()
    url = page.resolve().as_uri()
    dom = _run(exe, tmp_path, "--window-size=1280,2000", "--virtual-time-budget=10000", "--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    body = re.search(r"<body[^>]*>", dom.stdout)
    assert body, dom.stdout[:500]
    assert 'data-images-ok="true"' in body.group(0), body.group(0)  # every image decoded (complete, naturalWidth > 0)
    assert 'data-images-count="7"' in body.group(0), body.group(0)
    # the page fits a 1280 px window (no horizontal scrolling) and every plot labels both axes
    width = re.search(r'data-scroll-width="(\d+)"', body.group(0))
    assert width and int(width.group(1)) <= 1280, body.group(0)
    assert 'data-unlabelled-axes="0"' in body.group(0), body.group(0)
    for name in NAMES:
        assert html.escape(name, quote=False) in dom.stdout
    assert "onerror" not in re.sub(r"&lt;img src=x onerror=.*?&amp;evil", "", dom.stdout)  # never live markup

    # negative control: the page's check reports a broken image as such
    broken = tmp_path / "broken.html"
    broken.write_text(R.render_html(pd.DataFrame(), None, None).replace(
        "<h2>Failures</h2>", '<img alt="bad" src="data:image/png;base64,iVBORw0KGgoAAAAbroken"><h2>Failures</h2>'))
    bad = _run(exe, tmp_path, "--virtual-time-budget=10000", "--dump-dom", broken.resolve().as_uri())
    assert 'data-images-ok="false"' in bad.stdout and 'data-images-count="1"' in bad.stdout, bad.stdout[:1000]
    # negative controls of the width and axis-label checks: a too-wide table, a plot without a y label
    fig, (ax,) = R._figure(4, 3)
    ax.plot([0, 1], [0, 1])
    ax.set_xlabel("x only")
    wide = tmp_path / "wide.html"
    wide.write_text(R.render_html(pd.DataFrame(), None, None).replace(
        "<h2>Failures</h2>", R._img(fig, "unlabelled") + '<div style="width:2000px">w</div><h2>Failures</h2>'))
    bad = _run(exe, tmp_path, "--window-size=1280,2000", "--virtual-time-budget=10000", "--dump-dom", wide.resolve().as_uri())
    assert int(re.search(r'data-scroll-width="(\d+)"', bad.stdout).group(1)) > 1280, bad.stdout[:1000]
    assert 'data-unlabelled-axes="1"' in bad.stdout, bad.stdout[:1000]

    shot = tmp_path / "report.png"
    res = _run(exe, tmp_path, f"--screenshot={shot}", "--window-size=1280,2000", "--virtual-time-budget=10000", url)
    assert res.returncode == 0 and shot.exists(), res.stderr[-2000:]
    from matplotlib.image import imread

    img = imread(shot)
    assert img.shape[:2] == (2000, 1280) and shot.stat().st_size > 30_000
    assert float(img[..., :3].std()) > 0.05  # not a blank page


# ------------------------------------------------------------------------------------------ issue 19: a report worth opening


def _many(n_subs: int = 6, n_steps: int = 8, seeds: int = 1):
    """n_subs submissions on one task with β = 0.1; the last submission has a 2-checkpoint trajectory."""
    runs, cks = [], []
    for i in range(n_subs):
        name = f"sub{i}"
        for seed in range(seeds):
            key = dict(submission=name, code_hash=f"h{i}", suite="smoke", suite_version=1, split="dev",
                       task_key="hump", seed_index=seed)
            q = 0.9 - 0.1 * i + 0.01 * seed
            runs.append(dict(key, task_id="tiltenv/Hump-v0", track="agent", status="ok", normalized_score=q,
                             value_gap=1 - q, kl=1.0 + i, kl_matched_gap=0.1, reward_variance_ref=0.9,
                             reward_variance_policy=0.5 - 0.05 * i, gold_value=q, ref_gold_value=0.0, gold_gain=q,
                             proxy_gold_gap=0.1, overoptimized=0.0, beta=0.1, peak_gold=q, gold_drop=0.0))
            steps = n_steps if i < n_subs - 1 else 2
            for s in range(steps):
                f = s / (steps - 1)
                cks.append(dict(key, step=10 * s, kl=(1.0 + i) * f, gold_value=q * math.sin(1.6 * f),
                                proxy_value=2 * f, value_gap=1 - q * f, normalized_score=q * f,
                                reward_variance_policy=0.9 - 0.4 * f))
    return pd.DataFrame(runs), pd.DataFrame(cks)


def _images(text: str) -> dict[str, tuple[list, list]]:
    """alt text -> (axes labels, legend texts) of every plot of a page."""
    import json

    out = {}
    for alt, axes, legend in re.findall(r'<img alt="([^"]*)" data-axes="([^"]*)" data-legend="([^"]*)"', text):
        out[html.unescape(alt)] = (json.loads(base64.b64decode(axes)), json.loads(base64.b64decode(legend)))
    return out


def test_trajectories_mark_final_checkpoint_gold_peak_and_beta_and_highlight_a_handful():
    runs, cks = _many()
    front = pd.DataFrame({"beta": [math.inf, 1.0, 0.1, 0.01], "kl": [0.0, 0.2, 1.0, 3.0],
                          "gold_value": [0.0, 0.5, 1.0, 1.1]})
    text = R.render_html(runs, cks, None, frontiers={"hump": front}, n_boot=50)
    axes, legend = _images(text)["hump: gold and proxy value vs sqrt KL"]
    assert "final checkpoint" in legend and "gold peak" in legend, legend
    assert "gold optimum π*_β (β = 0.1)" in legend, legend  # the task's β, read off the frontier's β grid
    assert [x for x in legend if x.startswith("sub")] == ["sub3", "sub2", "sub1", "sub0"]  # the 4 best-ranked
    assert "others (faint)" in legend
    assert all("√nats" in a["x"] and "units" in a["y"] for a in axes), axes  # labelled axes with units
    # a per-task section: its heading, its table (one seed: the CI says n/a), then its plot
    sec = text[text.index("<h3>hump</h3>"):]
    assert sec.index('class="task"') < sec.index("hump: gold and proxy value")
    assert "CI n/a (1 seed)" in sec[: sec.index("</table>")] and "β = 0.1" in sec[:400]


def test_palette_is_okabe_ito_for_the_best_ranked_and_grey_for_the_rest():
    names = [f"s{i}" for i in range(7)]
    c = R._colors(names)
    assert [c[n] for n in names[:R.HIGHLIGHT]] == list(R.OKABE_ITO[:R.HIGHLIGHT])
    assert {c[n] for n in names[R.HIGHLIGHT:]} == {R.FAINT}
    assert "#F0E442" not in R.OKABE_ITO  # Okabe–Ito's yellow is unreadable on white


def test_gao_fit_is_drawn_only_with_enough_checkpoints():
    kl = np.array([0.0, 0.5, 2.0])  # two checkpoints past π_ref: two parameters fit anything
    assert R._gao_rl_curve(kl, np.array([0.0, 0.4, 0.5])) is None
    kl = np.linspace(0.0, 4.0, 7)
    x, y = R._gao_rl_curve(kl, np.sqrt(kl) * (1.0 - 0.3 * np.log(np.maximum(np.sqrt(kl), 1e-3))))
    assert len(x) == len(y) == 64


def test_variance_scatter_plots_the_final_policy_and_names_every_task():
    runs, cks, fails = _frames()
    text = R.render_html(runs, cks, fails, n_boot=50)
    axes, legend = _images(text)["reward variance vs gold gain"]
    assert len(axes) == 1 and "final policy" in axes[0]["x"]  # π_ref's variance is constant per task: not an axis
    assert {f"task {t}" for t in TASKS} <= set(legend)


def test_performance_profiles_and_probability_of_improvement_matrix():
    runs, cks, fails = _frames()
    ag = runs[runs["track"] == "agent"]
    taus = np.array([-1.0, 0.5, 0.95])
    prof = R.performance_profile(ag, taus)
    # tilt: every run ≈ 0.9 → all above 0.5, none above 0.95; EVIL: one failed run (scores 0) of 6
    assert prof["tilt"].tolist() == [1.0, 1.0, 0.0]
    assert prof[EVIL][0] == 1.0 and prof[EVIL][1] == 0.0
    text = R.render_html(runs, cks, fails, n_boot=50)
    imgs = _images(text)
    assert imgs["performance profiles"][0][0]["y"] == "fraction of runs with score > τ"
    assert imgs["probability of improvement matrix"][0][-1] == {"colorbar": "P(X > Y)"}


def test_a_board_whose_runs_all_failed_still_gets_a_report_that_says_so(tmp_path):
    runs, _, fails = _frames()
    bad = runs[(runs["submission"] == EVIL) & (runs["status"] == "failed")]
    text = R.write_report(bad, None, fails, tmp_path / "r.html").read_text()
    assert "No successful run yet" in text and "timeout" in text


def test_header_names_the_date_versions_device_and_suite_digest(tmp_path):
    import torch

    import tiltenv
    from leaderboard.store import Store
    from leaderboard.suites import get_suite

    s = get_suite("smoke")
    path = R.report_for_suite(Store("sqlite://"), s, "dev", tmp_path / "r.html")
    head = path.read_text()[: path.read_text().index("</table>")]
    assert s.digest() in head and torch.__version__ in head and tiltenv.__version__ in head
    assert "device" in head and re.search(r"Generated \d{4}-\d\d-\d\d \d\d:\d\d UTC", path.read_text())


def test_board_html_says_no_trajectory_instead_of_zero_percent():
    """A run the scorer could not judge along a trajectory (no proxy queries in training, no scorer path) reads
    "n/a — no trajectory" in the report's board, never "0%"; a judged share reads "x% of n"."""
    from leaderboard.report import _overopt_cell

    assert _overopt_cell({"overoptimization_rate": float("nan"), "overoptimization_runs": 0}) == "n/a — no trajectory"
    assert _overopt_cell({"overoptimization_rate": 0.5, "overoptimization_runs": 4}) == "50% of 4"
    assert _overopt_cell({"overoptimization_rate": 0.25}) == "0.250"  # the reward-model track's best-of-n rate
