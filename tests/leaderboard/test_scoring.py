"""leaderboard.scoring: run metrics, rliable aggregation, probability of improvement, reward-model track."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from tiltenv.worlds.evaluation import gold_range, overoptimization_tol
import torch

from leaderboard import scoring as S
from leaderboard.spec import CheckpointRow
from tiltenv import TaskConfig, make_world
from tiltenv import metrics as M
from tiltenv.worlds.evaluation import metrics_of_logp

SMALL = dict(d=6, K=16, n_labels=400, n_eval_contexts=512, n_norm_contexts=512, beta=0.1)


@pytest.fixture(scope="module")
def hump():
    """Non-monotone gold, linear proxy, many candidates: tilting harder on the proxy overshoots the hump."""
    return make_world(TaskConfig(d=4, K=256, link="hump", n_labels=2000, n_eval_contexts=256, n_norm_contexts=512,
                                 beta=0.1, seed=3))


def _tilts(judge, betas, reward=None):
    r = judge.eval_proxy if reward is None else reward
    return torch.stack([M.tilt_logp(judge.eval_ref_logp, r, b) for b in betas])


# ------------------------------------------------------------------------------------------ one run


def test_run_metrics_are_the_judges_metrics_of_the_last_checkpoint(hump):
    j = hump.judge
    betas = [3.0, 1.0, 0.3, 0.1]
    lps = _tilts(j, betas)
    metrics, rows = S.score_agent_run(j, [0, 10, 100, 1000], lps)
    ref = metrics_of_logp(lps[-1], j)
    for k, v in ref.items():
        assert metrics[k] == pytest.approx(v, rel=1e-12, abs=1e-12), k
    assert metrics["proxy_gold_gap"] == pytest.approx(ref["proxy_value"] - ref["gold_value"])
    assert metrics["gold_gain"] == pytest.approx(ref["gold_value"] - ref["ref_gold_value"])
    assert set(S.AGENT_METRICS) <= set(metrics)
    assert [r.step for r in rows] == [0, 10, 100, 1000] and all(isinstance(r, CheckpointRow) for r in rows)
    for r, lp in zip(rows, lps):
        m = metrics_of_logp(lp, j)
        assert (r.gold_value, r.kl, r.normalized_score) == pytest.approx((m["gold_value"], m["kl"], m["normalized_score"]))
    # a different β changes the objective-based metrics but not the value or KL
    m2, _ = S.score_agent_run(j, [0, 10, 100, 1000], lps, beta=1.0)
    assert m2["kl"] == metrics["kl"] and m2["value_gap"] != metrics["value_gap"] and m2["beta"] == 1.0


def test_overoptimized_trajectory_is_flagged_with_its_peak(hump):
    j = hump.judge
    betas = [10.0, 3.0, 1.0, 0.3, 0.1, 0.03, 0.01, 0.001]
    lps = _tilts(j, betas)
    steps = [0, 1, 2, 4, 8, 16, 32, 64]
    m, rows = S.score_agent_run(j, steps, lps)
    gold = np.array([r.gold_value for r in rows])
    kl = np.array([r.kl for r in rows])
    assert np.all(np.diff(kl) > 0)
    i = int(np.argmax(gold))
    assert 0 < i < len(betas) - 1, "the hump world must peak inside the sweep"
    assert m["peak_gold"] == gold[i] and m["final_gold"] == gold[-1]
    assert m["gold_drop"] == pytest.approx(gold[i] - gold[-1]) and m["gold_drop"] > 10 * m["overopt_tol"]
    assert m["kl_at_peak"] == kl[i] and m["step_at_peak"] == steps[i]
    assert m["overoptimized"] == 1.0 and m["proxy_rising_while_gold_falls"] == 1.0
    # the paired standard error of the drop, by brute force over the evaluation contexts
    d = (torch.exp(lps[i]) * j.eval_gold).sum(-1) - (torch.exp(lps[-1]) * j.eval_gold).sum(-1)
    assert m["gold_drop_se"] == pytest.approx(float(d.std() / math.sqrt(d.numel())), rel=1e-9)
    for form in ("bon", "rl"):
        assert math.isfinite(m[f"gao_{form}_alpha"]) and math.isfinite(m[f"gao_{form}_r2"])


def test_monotone_trajectory_is_not_flagged(hump):
    j = hump.judge
    lps = _tilts(j, [10.0, 1.0, 0.3, 0.1], reward=j.eval_gold)  # the gold tilt: gold rises with KL
    m, _ = S.score_agent_run(j, [0, 1, 2, 3], lps)
    assert m["gold_drop"] == 0.0 and m["overoptimized"] == 0.0 and m["proxy_rising_while_gold_falls"] == 0.0


def test_tolerance_ignores_noise_sized_drops(hump):
    j = hump.judge
    sd = math.sqrt(M.reward_variance(j.eval_ref_logp, j.eval_gold))
    tiny = S.overoptimization_summary(j, [0.0, 1.0, 2.0], [0.0, 1.0, 1.0 - 1e-4 * sd], None)
    assert M.overoptimization([0.0, 1.0, 2.0], [0.0, 1.0, 1.0 - 1e-4 * sd]).overoptimized  # the exact-sweep default would
    assert tiny["overoptimized"] == 0.0 and tiny["overopt_tol"] == pytest.approx(overoptimization_tol(j))
    assert overoptimization_tol(j) == pytest.approx(0.01 * gold_range(j)) and 1e-4 * sd < overoptimization_tol(j) < 0.05 * sd
    real = S.overoptimization_summary(j, [0.0, 1.0, 2.0], [0.0, 1.0, 1.0 - 0.05 * sd], None)
    assert real["overoptimized"] == 1.0 and real["gold_drop"] == pytest.approx(0.05 * sd)
    one = S.overoptimization_summary(j, [0.0], [0.5], None)  # a single checkpoint: no fit possible, no drop
    assert one["overoptimized"] == 0.0 and math.isnan(one["gao_bon_alpha"]) and math.isnan(one["gao_rl_r2"])


def test_bad_run_inputs_are_named(hump):
    j = hump.judge
    lps = _tilts(j, [1.0, 0.1])
    with pytest.raises(ValueError, match="shape"):
        S.score_agent_run(j, [0, 1], lps[:, :10])
    with pytest.raises(ValueError, match="steps has 3 entries"):
        S.score_agent_run(j, [0, 1, 2], lps)
    with pytest.raises(ValueError, match="non-decreasing"):
        S.score_agent_run(j, [5, 1], lps)
    with pytest.raises(ValueError, match="normalized"):
        S.score_agent_run(j, [0, 1], lps + 0.1)
    bad = lps.clone()
    bad[1, 3, 2] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        S.score_agent_run(j, [0, 1], bad)


# ------------------------------------------------------------------------------------------ board


def _frame(scores: dict[str, np.ndarray], failed: dict[str, list[tuple[int, int]]] | None = None, **extra) -> pd.DataFrame:
    """scores[name]: (runs, tasks) normalized scores; failed[name]: (run, task) cells that failed."""
    rows = []
    for name, a in scores.items():
        for i in range(a.shape[0]):
            for t in range(a.shape[1]):
                bad = (i, t) in (failed or {}).get(name, [])
                rows.append({"submission": name, "code_hash": f"h-{name}", "suite": "quick", "suite_version": 1,
                             "split": "dev", "track": "agent", "task_key": f"task{t}", "seed_index": i,
                             "status": "failed" if bad else "ok", "normalized_score": math.nan if bad else a[i, t],
                             "value_gap": 1.0 - (0.0 if bad else a[i, t]), "kl": 0.5, "overoptimized": float(i == 0),
                             "fit_time": float(i + 1), **extra})
    return pd.DataFrame(rows)


def _brute_iqm(a: np.ndarray) -> float:
    v = np.sort(a.ravel())
    cut = int(0.25 * v.size)
    return float(v[cut:v.size - cut].mean())


def _brute_ci(a: np.ndarray, stat, reps: int, seed: int = 0) -> tuple[float, float]:
    """rliable's stratified bootstrap by hand: each replicate redraws the runs of every task (column)."""
    rng = np.random.default_rng(seed)
    R, T = a.shape
    s = []
    for _ in range(reps):
        idx = rng.integers(0, R, size=(R, T))
        res = np.empty_like(a)
        for t in range(T):
            for i in range(R):
                res[i, t] = a[idx[i, t], t]
        s.append(stat(res))
    lo, hi = np.percentile(s, [2.5, 97.5])
    return float(lo), float(hi)


def test_board_iqm_mean_and_cis_match_brute_force():
    rng = np.random.default_rng(1)
    a = rng.normal(0.6, 0.2, size=(6, 3))
    b = rng.normal(0.3, 0.2, size=(6, 3))
    df = _frame({"alpha": a, "beta<script>": b}, failed={"alpha": [(2, 1)]})
    brd = S.board(df, n_boot=300)
    assert list(brd["submission"]) == ["alpha", "beta<script>"] and list(brd["rank"]) == [1, 2]
    a0 = a.copy()
    a0[2, 1] = S.FAILED_SCORE  # a failed run scores as π_ref
    row = brd.iloc[0]
    assert row["iqm"] == pytest.approx(_brute_iqm(a0), abs=1e-12)
    assert row["mean"] == pytest.approx(a0.mean(0).mean(), abs=1e-12)
    lo, hi = _brute_ci(a0, _brute_iqm, 300)
    assert (row["iqm_lo"], row["iqm_hi"]) == pytest.approx((lo, hi), abs=1e-12)
    lo, hi = _brute_ci(a0, lambda s: s.mean(0).mean(), 300)
    assert (row["mean_lo"], row["mean_hi"]) == pytest.approx((lo, hi), abs=1e-12)
    assert row["failed"] == 1 and row["runs"] == 18 and row["tasks"] == 3
    # other columns average the successful runs only
    ok = np.ones_like(a, dtype=bool)
    ok[2, 1] = False
    assert row["value_gap"] == pytest.approx((1 - a[ok]).mean())
    assert row["overoptimization_rate"] == pytest.approx(3 / 17)
    assert row["median_fit_time"] == pytest.approx(np.median(np.repeat(np.arange(1, 7), 3)[np.r_[0:7, 8:18]]))
    # dropping failed runs instead
    brd2 = S.board(df, n_boot=50, failed_score=None)
    assert brd2.iloc[0]["iqm"] == pytest.approx(_brute_iqm(a[ok]))
    # a metric that is not a normalized score leaves failed runs out by default (0 would mean nothing there)
    gap = S.board(df, metric="value_gap", n_boot=50).set_index("submission").loc["alpha"]
    assert gap["iqm"] == pytest.approx(_brute_iqm(1 - a[ok])) and gap["failed"] == 1
    with pytest.raises(ValueError, match="failed_score"):
        S.board(df, failed_score="zero")


def test_board_ci_contains_point_and_shrinks_with_more_runs():
    rng = np.random.default_rng(7)
    widths = []
    for R in (5, 80):
        df = _frame({"x": rng.normal(0.5, 0.3, size=(R, 4))})
        row = S.board(df, n_boot=400).iloc[0]
        for stat in ("iqm", "mean"):
            assert row[f"{stat}_lo"] <= row[stat] <= row[f"{stat}_hi"]
        widths.append(row["iqm_hi"] - row["iqm_lo"])
    assert widths[1] < 0.5 * widths[0]


def test_board_is_deterministic_and_handles_missing_runs():
    rng = np.random.default_rng(3)
    df = _frame({"x": rng.normal(size=(5, 3)), "y": rng.normal(size=(5, 3))})
    pd.testing.assert_frame_equal(S.board(df, n_boot=100, seed=4), S.board(df, n_boot=100, seed=4))
    ragged = df.drop(index=df.index[(df["submission"] == "x") & (df["task_key"] == "task0") & (df["seed_index"] == 4)])
    row = S.board(ragged, n_boot=200).set_index("submission").loc["x"]
    assert row["runs"] == 14 and row["iqm_lo"] < row["iqm"] < row["iqm_hi"] and row["mean_lo"] < row["mean"] < row["mean_hi"]
    xs = ragged[ragged["submission"] == "x"]
    # the ragged stratified bootstrap by hand: each task's runs redrawn to their own count
    cols = [g.sort_values("seed_index")["normalized_score"].to_numpy() for _, g in xs.groupby("task_key")]
    rng = np.random.default_rng(0)
    reps = []
    for _ in range(200):
        reps.append(_brute_iqm(np.concatenate([c[rng.integers(0, len(c), size=len(c))] for c in cols])))
    assert (row["iqm_lo"], row["iqm_hi"]) == pytest.approx(tuple(np.percentile(reps, [2.5, 97.5])), abs=1e-12)
    assert row["iqm"] == pytest.approx(_brute_iqm(xs["normalized_score"].to_numpy()))
    assert row["mean"] == pytest.approx(xs.groupby("task_key")["normalized_score"].mean().mean())


def test_board_rejects_bad_frames():
    df = _frame({"x": np.ones((3, 2))})
    with pytest.raises(ValueError, match="Did you mean 'normalized_score'"):
        S.board(df, metric="normalised_score")
    mixed = pd.concat([df, df.assign(suite_version=2)])
    with pytest.raises(ValueError, match="never mix"):
        S.board(mixed)
    with pytest.raises(ValueError, match="lacks the column"):
        S.board(df.drop(columns=["task_key"]))
    nan = df.copy()
    nan.loc[0, "normalized_score"] = math.nan
    with pytest.raises(ValueError, match="NaN"):
        S.board(nan)
    # a lower-is-better metric ranks ascending
    two = _frame({"good": np.full((3, 2), 0.9), "bad": np.full((3, 2), 0.1)})
    assert list(S.board(two, metric="value_gap", n_boot=20)["submission"]) == ["good", "bad"]


# ------------------------------------------------------------------------------------------ P(X > Y)


def test_probability_of_improvement():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 3))
    df = _frame({"hi": x + 10, "lo": x, "same": x.copy()})
    assert S.probability_of_improvement(df, "hi", "lo", n_boot=100) == (1.0, 1.0, 1.0)
    assert S.probability_of_improvement(df, "lo", "hi", n_boot=100) == (0.0, 0.0, 0.0)
    p, lo, hi = S.probability_of_improvement(df, "lo", "same", n_boot=300)
    assert p == 0.5 and lo < 0.5 < hi
    p1 = S.probability_of_improvement(df, "hi", "same", n_boot=10)[0]
    assert p1 + S.probability_of_improvement(df, "same", "hi", n_boot=10)[0] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="Did you mean 'same'"):
        S.probability_of_improvement(df, "sane", "lo")


def test_probability_of_improvement_hand_case():
    # task0: x = [1, 2] vs y = [1.5, 1.5] -> S = (0 + 0 + 1 + 1)/4 = 0.5
    # task1: x = [0, 1] vs y = [0, 2]     -> S = (0.5 + 0 + 1 + 0)/4 = 0.375      P = 0.4375
    df = _frame({"x": np.array([[1.0, 0.0], [2.0, 1.0]]), "y": np.array([[1.5, 0.0], [1.5, 2.0]])})
    p, lo, hi = S.probability_of_improvement(df, "x", "y", n_boot=500)
    assert p == pytest.approx(0.4375) and lo <= p <= hi
    # a failed run counts as 0: x's 2.0 in task0 fails -> task0 S = (0 + 0 + 0 + 0)/4 ... x = [1, 0] vs 1.5
    dff = _frame({"x": np.array([[1.0, 0.0], [2.0, 1.0]]), "y": np.array([[1.5, 0.0], [1.5, 2.0]])},
                 failed={"x": [(1, 0)]})
    assert S.probability_of_improvement(dff, "x", "y", n_boot=10)[0] == pytest.approx((0.0 + 0.375) / 2)


# ------------------------------------------------------------------------------------------ Spearman


def test_spearman_matches_brute_force_with_ties():
    rng = np.random.default_rng(5)
    x = rng.integers(0, 4, size=(50, 9)).astype(float)  # many ties
    y = x + rng.integers(0, 3, size=(50, 9))

    def ranks(v):  # average rank of ties: 1 + #smaller + (#equal - 1) / 2
        return np.array([1 + np.sum(v < v[i]) + 0.5 * (np.sum(v == v[i]) - 1) for i in range(len(v))])

    rho = S.spearman(x, y, per_context=True)
    for c in range(50):
        rx, ry = ranks(x[c]), ranks(y[c])
        if rx.std() == 0 or ry.std() == 0:
            assert math.isnan(rho[c])
        else:
            assert rho[c] == pytest.approx(np.corrcoef(rx, ry)[0, 1], abs=1e-12)
    assert S.spearman(np.arange(6.0), np.exp(np.arange(6.0))) == pytest.approx(1.0)
    assert S.spearman(np.arange(6.0), -np.arange(6.0) ** 3) == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="same shape"):
        S.spearman(np.ones((2, 3)), np.ones((3, 2)))


# ------------------------------------------------------------------------------------------ reward-model track


@pytest.fixture(scope="module")
def rm_world():
    return make_world(TaskConfig(**SMALL, seed=1))


def test_gold_reward_model_is_perfect_and_best(rm_world):
    cfg = TaskConfig(**SMALL, seed=1)
    gold = S.score_builtin_reward_model("gold", cfg, rloo_queries=0)
    lin = S.score_builtin_reward_model("linear", cfg.replace(n_labels=30, flip_rate=0.2), rloo_queries=0)
    for k in ("acc_onpolicy", "acc_offpolicy", "acc_uniform", "spearman", "hacc", "gold_corr_ref"):
        assert gold[k] == pytest.approx(1.0), k
        assert lin[k] < 1.0, k
    assert gold["bon_peak_gold"] > lin["bon_peak_gold"]
    assert gold["tilt_normalized_score"] > lin["tilt_normalized_score"]
    assert gold["tilt_value_gap"] < lin["tilt_value_gap"]
    # best-of-n by the gold itself peaks at n = K (it never overoptimizes)
    assert gold["bon_n_at_peak"] == cfg.K and gold["bon_drop"] == 0.0 and gold["bon_overoptimized"] == 0.0
    assert set(S.RM_OFFLINE_METRICS) | set(S.RM_DOWNSTREAM_METRICS) <= set(gold)


def test_reward_model_scores_are_normalized_so_scale_does_not_matter(rm_world):
    j, task = rm_world.judge, rm_world.task
    base = S.score_reward_model(j, task, task.proxy, rloo_queries=0)
    scaled = S.score_reward_model(j, task, lambda x: 7.0 * task.proxy(x) + 3.0, rloo_queries=0)
    for k in S.RM_OFFLINE_METRICS + ("bon_peak_gold", "tilt_gold_value", "tilt_normalized_score"):
        assert scaled[k] == pytest.approx(base[k], rel=1e-9, abs=1e-12), k
    assert scaled["rm_scale"] == pytest.approx(7.0 * base["rm_scale"])
    # rank-based offline metrics equal the library's on the task's own proxy scores (affine invariance)
    r, g, ref = j.eval_proxy, j.eval_gold, j.eval_ref_logp
    harm = M.harm_aware_accuracies(r, g, ref)
    assert base["acc_onpolicy"] == pytest.approx(M.ranking_accuracy(r, g, ref))
    assert base["acc_uniform"] == pytest.approx(M.ranking_accuracy(r, g))
    assert base["acc_offpolicy"] == pytest.approx(M.ranking_accuracy(r, g, M.tilt_logp(ref, g, rm_world.task.beta)))
    assert (base["acc_onpolicy"], base["hacc"], base["hacc_w"]) == pytest.approx((harm["acc_w"], harm["hacc"],
                                                                                 harm["hacc_w"]))
    assert base["gold_corr_ref"] == pytest.approx(M.proxy_gold_correlation(ref, r, g))
    assert base["spearman"] == pytest.approx(S.spearman(r, g))
    # π_ref uniform: acc_uniform = acc_onpolicy, hacc_w = hacc (acc_w = acc_onpolicy always: not stored)
    assert len({base["acc_onpolicy"], base["acc_offpolicy"], base["hacc"], base["hacc_w"]}) == 3 and "acc_w" not in base


def test_rloo_trains_on_the_submitted_reward_model(rm_world):
    j, task = rm_world.judge, rm_world.task
    gold_fn = lambda x: j.gold(x)  # noqa: E731
    good = S.score_reward_model(j, task, gold_fn, rloo_queries=4096)
    bad = S.score_reward_model(j, task, lambda x: -j.gold(x), rloo_queries=4096)
    assert good["rloo_proxy_queries"] == 4096 and task.budget.proxy_queries == 0  # the public task is untouched
    assert good["rloo_normalized_score"] > 0.3
    assert bad["rloo_normalized_score"] < 0 and bad["tilt_normalized_score"] < 0 and bad["acc_onpolicy"] == 0.0
    again = S.score_reward_model(j, task, gold_fn, rloo_queries=4096)
    assert again == good  # deterministic


def test_bad_reward_models_are_named(rm_world):
    j, task = rm_world.judge, rm_world.task
    with pytest.raises(ValueError, match="shape"):
        S.score_reward_model(j, task, lambda x: x.sum(-1).reshape(-1), rloo_queries=0)
    with pytest.raises(ValueError, match="NaN or infinite"):
        S.score_reward_model(j, task, lambda x: torch.full(x.shape[:-1], float("nan")), rloo_queries=0)
    with pytest.raises(ValueError, match="constant"):
        S.score_reward_model(j, task, lambda x: torch.zeros(x.shape[:-1]), rloo_queries=0)
    with pytest.raises(ValueError, match="Did you mean 'linear'"):
        S.score_builtin_reward_model("linaer", TaskConfig(**SMALL))
    assert S.builtin_reward_models() == ("linear", "mlp", "two_stage", "ensemble")


def test_offline_accuracy_predicts_downstream_gold_across_label_counts():
    rows = []
    for seed in (0, 1):
        for n in (10, 20, 40, 80, 160, 640):
            cfg = TaskConfig(**{**SMALL, "n_labels": n}, flip_rate=0.1, seed=seed)
            rows.append({"submission": f"linear-{n}", "task_key": "relu", "seed_index": seed, "status": "ok",
                         **S.score_builtin_reward_model("linear", cfg, rloo_queries=0)})
    df = pd.DataFrame(rows)
    pred = S.metric_predictiveness(df, n_boot=300).set_index("metric")
    acc = pred.loc["acc_onpolicy"]
    assert acc["n"] == 12 and acc["rho_pooled"] > 0.6 and acc["rho_pooled_lo"] > 0
    assert acc["rho_pooled_lo"] <= acc["rho_pooled"] <= acc["rho_pooled_hi"]
    assert acc["rho_pooled"] == pytest.approx(S.spearman(df["acc_onpolicy"].to_numpy(),
                                                         df["tilt_normalized_score"].to_numpy()))
    assert acc["n_groups"] == 2 and acc["rho_within"] > 0.6
    assert acc["rho_within_lo"] <= acc["rho_within"] <= acc["rho_within_hi"]
    assert list(pred.index) == sorted(pred.index, key=lambda m: -pred.loc[m, "rho_within"])
    with pytest.raises(ValueError, match="Did you mean 'tilt_gold_value'"):
        S.metric_predictiveness(df, downstream="tilt_gold_valu")


# ------------------------------------------------------------------------------------------ mutation-probe additions


def test_overoptimization_tolerance_is_two_paired_standard_errors(hump):
    """tol = max(1% gold range, OVEROPT_Z·SE(drop), 1e-6·range) with OVEROPT_Z = 2: a drop between 1 and 2 SEs
    is not flagged, one above 2 SEs is. The per-context drops are made very unequal so that 2·SE > 1% range."""
    j = hump.judge
    g = j.eval_gold
    good = M.tilt_logp(j.eval_ref_logp, g, 0.1)
    bad = M.tilt_logp(j.eval_ref_logp, -g, 0.3)
    final = torch.where((torch.arange(g.shape[0]) % 2 == 0)[:, None], good, bad)  # half the contexts collapse
    lps = torch.stack([good, final])
    d = (torch.exp(good) * g).sum(-1) - (torch.exp(final) * g).sum(-1)
    se = float(d.std() / math.sqrt(d.numel()))  # paired SE (unbiased sd), by hand
    assert 2 * se > 2 * overoptimization_tol(j)  # the statistical part dominates the tolerance here
    assert S.OVEROPT_Z == 2.0
    inside = S.overoptimization_summary(j, [0.0, 1.0], [1.0, 1.0 - 1.5 * se], None, logps=lps)
    assert inside["gold_drop_se"] == pytest.approx(se, rel=1e-12)
    assert inside["overopt_tol"] == pytest.approx(2 * se, rel=1e-12)
    assert inside["overoptimized"] == 0.0  # within 2 SEs: an artefact of the finite evaluation set
    beyond = S.overoptimization_summary(j, [0.0, 1.0], [1.0, 1.0 - 2.5 * se], None, logps=lps)
    assert beyond["overoptimized"] == 1.0
    # without log-probabilities the statistical part is left out
    no_lp = S.overoptimization_summary(j, [0.0, 1.0], [1.0, 1.0 - 1.5 * se], None)
    assert math.isnan(no_lp["gold_drop_se"]) and no_lp["overoptimized"] == 1.0


def test_the_drops_standard_error_is_taken_at_the_reports_final_point(hump):
    """A KL of -1e-12 (rounding) is clipped to 0 by the metrics: the final point is then the last of the KL-0 ties,
    and the paired SE must be measured there too, not at the checkpoint a sort of the raw KLs would pick."""
    j = hump.judge
    g = j.eval_gold
    lps = torch.stack([M.tilt_logp(j.eval_ref_logp, g, 0.1), j.eval_ref_logp, M.tilt_logp(j.eval_ref_logp, -g, 0.3)])
    kl, gold = [0.0, 0.0, -1e-12], [float(M.policy_value(lp, g)) for lp in lps]
    rep = M.overoptimization(kl, gold)
    assert rep.final_index == 2 and rep.final_gold == gold[2]
    out = S.overoptimization_summary(j, kl, gold, None, logps=lps)
    d = M.policy_value(lps[0], g, per_context=True) - M.policy_value(lps[2], g, per_context=True)
    assert out["final_gold"] == gold[2]
    assert out["gold_drop_se"] == pytest.approx(float(d.std() / math.sqrt(d.numel())), rel=1e-12)


@pytest.fixture(scope="module")
def tilted_rm():
    """A hump world with a non-uniform π_ref (ref_eta=1) whose own proxy overoptimizes under best-of-n."""
    w = make_world(TaskConfig(d=4, K=64, link="hump", n_labels=2000, n_eval_contexts=256, n_norm_contexts=512,
                              beta=0.1, seed=3, ref_eta=1.0))
    return w, S.score_reward_model(w.judge, w.task, w.task.proxy, rloo_queries=0)


def test_reward_model_harm_aware_metrics_weight_by_pi_ref(tilted_rm):
    w, out = tilted_rm
    j = w.judge
    ref, g, r = j.eval_ref_logp, j.eval_gold, j.eval_proxy
    assert float(torch.exp(ref).amax()) > 2.0 / ref.shape[-1]  # π_ref is far from uniform
    harm = M.harm_aware_accuracies(r, g, ref)  # HAcc and Acc-W are invariant to the affine normalization
    uni = M.harm_aware_accuracies(r, g)
    assert (out["acc_onpolicy"], out["hacc"], out["hacc_w"]) == pytest.approx((harm["acc_w"], harm["hacc"], harm["hacc_w"]))
    assert abs(harm["hacc_w"] - uni["hacc_w"]) > 1e-3 and abs(harm["acc_w"] - uni["acc_w"]) > 1e-3
    assert "acc_w" not in out  # Acc-W is the π_ref-weighted ranking accuracy, acc_onpolicy: not stored twice


def test_reward_model_bon_overoptimized_uses_two_paired_standard_errors(tilted_rm, monkeypatch):
    w, out = tilted_rm
    j = w.judge
    drop, se = out["bon_drop"], out["bon_drop_se"]
    assert out["bon_overoptimized"] == 1.0 and se > 0 and drop > 2 * se and drop > overoptimization_tol(j)
    ratio = drop / se  # the drop, in paired standard errors
    for z, flagged in ((1.01 * ratio, 0.0), (0.99 * ratio, 1.0)):
        monkeypatch.setattr(S, "OVEROPT_Z", z)
        again = S.score_reward_model(j, w.task, w.task.proxy, rloo_queries=0)
        assert again["bon_drop_se"] == se and again["bon_overoptimized"] == flagged, z


def test_failed_run_scores_zero_on_the_reward_model_track():
    """'auto' gives FAILED_SCORE to every *normalized_score metric, e.g. the RM track's tilt_normalized_score."""
    a = np.array([[0.8, 0.6], [0.9, 0.7], [0.4, 0.5], [0.6, 0.9]])
    df = _frame({"rm": a}, failed={"rm": [(3, 0)]}).drop(columns=["normalized_score"])
    df["track"] = "reward_model"
    df["tilt_normalized_score"] = [math.nan if s == "failed" else v for s, v in
                                   zip(df["status"], [a[i, t] for i in range(4) for t in range(2)])]
    df["tilt_gold_value"] = df["tilt_normalized_score"] + 1.0
    row = S.board(df, n_boot=20).iloc[0]
    assert row["metric"] == "tilt_normalized_score" and row["failed"] == 1
    a0 = a.copy()
    a0[3, 0] = S.FAILED_SCORE
    assert row["iqm"] == pytest.approx(_brute_iqm(a0)) and row["mean"] == pytest.approx(a0.mean(0).mean())
    # a metric that is not a normalized score leaves the failed run out
    gv = S.board(df, metric="tilt_gold_value", n_boot=20).iloc[0]
    ok = np.ones_like(a, dtype=bool)
    ok[3, 0] = False
    assert gv["iqm"] == pytest.approx(_brute_iqm(a[ok] + 1.0))


def test_board_ranks_by_iqm_not_by_mean():
    # "outlier": one huge run per task lifts the mean (1.25) but not the IQM (0); "steady": 0.5 everywhere
    outlier = np.zeros((8, 2))
    outlier[0] = 10.0
    brd = S.board(_frame({"outlier": outlier, "steady": np.full((8, 2), 0.5)}), n_boot=20)
    assert list(brd["submission"]) == ["steady", "outlier"]
    assert brd.iloc[1]["mean"] == pytest.approx(1.25) and brd.iloc[1]["iqm"] == 0.0
    assert brd.iloc[1]["mean"] > brd.iloc[0]["mean"]


def test_probability_of_improvement_averages_only_the_tasks_in_common():
    # x ran task0 and task1, y ran task1 and task2: only task1 counts; x=[1, 3] vs y=[2, 2] -> (0 + 1)/2 = 0.5
    # (x wins task0 outright and loses task2 outright, which must not count)
    x = _frame({"x": np.array([[9.0, 1.0], [9.0, 3.0]])})
    y = _frame({"y": np.array([[2.0, -9.0], [2.0, -9.0]])})
    y["task_key"] = y["task_key"].map({"task0": "task1", "task1": "task2"})
    both = pd.concat([x, y], ignore_index=True)
    with pytest.raises(ValueError, match="ran different runs.*common_tasks=True"):  # never silently
        S.probability_of_improvement(both, "x", "y", n_boot=50)
    res = S.probability_of_improvement(both, "x", "y", n_boot=50, common_tasks=True)
    p, lo, hi = res
    assert p == 0.5 and 0.0 <= lo <= p <= hi <= 1.0
    assert res.common_only and res.tasks == ["task1"] and "1 of 3 tasks" in res.note


def test_spearman_mean_skips_rows_without_rank_variation():
    x = np.array([[1.0, 2.0, 3.0, 4.0], [5.0, 5.0, 5.0, 5.0], [1.0, 2.0, 3.0, 4.0]])
    y = np.array([[1.0, 2.0, 4.0, 3.0], [1.0, 2.0, 3.0, 4.0], [4.0, 3.0, 2.0, 1.0]])
    rho = S.spearman(x, y, per_context=True)
    assert math.isnan(rho[1]) and rho[0] == pytest.approx(0.8) and rho[2] == pytest.approx(-1.0)
    assert S.spearman(x, y) == pytest.approx((0.8 - 1.0) / 2)


def test_metric_predictiveness_ci_is_stratified_by_task_and_within_needs_three_models():
    rng = np.random.default_rng(2)
    rows = []
    for t, (shift, n_models) in enumerate(((0.0, 6), (5.0, 6), (-3.0, 6))):
        for seed in (0, 1):
            for m in range(n_models if seed == 0 else 2):  # seed 1: only 2 models per task (no within-ρ)
                acc = rng.uniform(0.5, 1.0)
                rows.append({"submission": f"rm{m}", "task_key": f"task{t}", "seed_index": seed, "status": "ok",
                             "acc_onpolicy": acc, "tilt_normalized_score": shift + acc + 0.2 * rng.normal()})
    df = pd.DataFrame(rows)
    out = S.metric_predictiveness(df, metrics=["acc_onpolicy"], n_boot=200, seed=5).iloc[0]
    x, y = df["acc_onpolicy"].to_numpy(), df["tilt_normalized_score"].to_numpy()
    assert out["n"] == len(df) == 24 and out["rho_pooled"] == pytest.approx(S.spearman(x, y))
    # the stratified bootstrap by hand: each replicate redraws the rows *of each task* (8 each), pooled ρ
    cols = np.stack([np.flatnonzero(df["task_key"].to_numpy() == f"task{t}") for t in range(3)], axis=1)
    boot = np.random.default_rng(5)
    reps = []
    for _ in range(200):
        idx = cols[boot.integers(0, cols.shape[0], size=cols.shape), np.arange(3)].ravel()
        reps.append(S.spearman(x[idx], y[idx]) if np.ptp(x[idx]) > 0 and np.ptp(y[idx]) > 0 else math.nan)
    assert (out["rho_pooled_lo"], out["rho_pooled_hi"]) == pytest.approx(tuple(np.percentile(reps, [2.5, 97.5])),
                                                                          abs=1e-12)
    # rho_within averages only the (task, seed) groups with at least 3 models: the 3 seed-0 groups
    within = [S.spearman(g["acc_onpolicy"].to_numpy(), g["tilt_normalized_score"].to_numpy())
              for _, g in df[df["seed_index"] == 0].groupby("task_key")]
    assert out["n_groups"] == 3 and out["rho_within"] == pytest.approx(np.mean(within))


def test_reward_model_scores_are_normalized_under_pi_ref(tilted_rm):
    """Gao et al.'s normalization: mean 0, variance 1 under π_ref pooled over the evaluation contexts (not uniform)."""
    w, out = tilted_rm
    j = w.judge
    ref, g = j.eval_ref_logp, j.eval_gold
    raw = w.task.proxy(j.eval_candidates).detach().to(torch.float64)
    p = torch.exp(ref)
    shift = float((p * raw).sum(-1).mean())
    scale = math.sqrt(float((p * (raw - shift) ** 2).sum(-1).mean()))
    uniform_scale = float((raw - raw.mean()).pow(2).mean().sqrt())
    assert abs(uniform_scale / scale - 1.0) > 5e-4  # π_ref weighting changes the scale (and so the tilt) here
    assert (out["rm_shift"], out["rm_scale"]) == pytest.approx((shift, scale), rel=1e-9)
    r = (raw - shift) / scale
    tilt = M.tilt_logp(ref, r, j.config.beta)  # the scale acts as the tilt's β: it must be π_ref's
    assert out["tilt_gold_value"] == pytest.approx(M.policy_value(tilt, g), rel=1e-9)
    assert out["tilt_kl"] == pytest.approx(M.kl_divergence(tilt, ref), rel=1e-9)


def test_board_bootstrap_follows_its_seed():
    a = np.random.default_rng(9).normal(0.5, 0.2, size=(5, 3))
    df = _frame({"x": a})
    for seed in (0, 7):
        row = S.board(df, n_boot=100, seed=seed).iloc[0]
        assert (row["iqm_lo"], row["iqm_hi"]) == pytest.approx(_brute_ci(a, _brute_iqm, 100, seed=seed), abs=1e-12)
