"""Issue 19 item 8: a policy with mass off π_ref's support scores −∞ (KL = ∞); scoring it never aborts."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch

from leaderboard import scoring as S
from tiltenv import TabularConfig, make_world


def _tabular_with_a_partial_reference():
    return make_world(TabularConfig(gold=(0.0, 0.3, 0.5, 0.8, 1.0), proxy=(0.0, 0.3, 0.5, 1.2, 0.9),
                                    ref_probs=(0.5, 0.5, 0.0, 0.0, 0.0))).judge


def test_mass_off_the_reference_support_scores_minus_infinity_instead_of_aborting():
    j = _tabular_with_a_partial_reference()
    C, K = j.eval_ref_logp.shape
    uniform = torch.full((C, K), -math.log(K), dtype=torch.float64)  # puts mass on arms π_ref never plays
    metrics, rows = S.score_agent_run(j, [0, 10, 20], torch.stack([j.eval_ref_logp, j.eval_ref_logp, uniform]))
    assert metrics["kl"] == math.inf and metrics["normalized_score"] == -math.inf and metrics["objective"] == -math.inf
    assert metrics["value_gap"] == math.inf
    assert [r.kl for r in rows] == [0.0, 0.0, math.inf] and rows[-1].normalized_score == -math.inf
    # the curve is the checkpoints that have a KL: here two at π_ref, nothing to overoptimize
    assert metrics["overoptimized"] == 0.0 and metrics["step_at_peak"] in (0.0, 10.0)
    only_off, _ = S.score_agent_run(j, [5], uniform[None])
    assert only_off["normalized_score"] == -math.inf and math.isnan(only_off["overoptimized"])


def test_a_minus_infinity_run_ranks_last_on_the_board():
    rows = []
    for name, score in (("on-support", 0.2), ("off-support", -math.inf)):
        for seed in range(3):
            rows.append(dict(submission=name, code_hash=name, suite="s", suite_version=1, split="dev", track="agent",
                             task_key="t", seed_index=seed, status="ok", normalized_score=score))
    b = S.board(pd.DataFrame(rows), n_boot=50)
    assert list(b["submission"]) == ["on-support", "off-support"]
    assert np.isneginf(b.loc[b["submission"] == "off-support", "mean"]).all()


def test_the_two_standard_error_guard_is_documented_where_readers_look():
    """Issue 19: the leaderboard's 2-SE overoptimization guard was documented only in code."""
    from pathlib import Path

    from tiltenv import glossary

    assert S.OVEROPT_Z == glossary.OVEROPTIMIZATION_SE_Z == 2.0
    assert "2 × SE(drop)" in glossary.LEADERBOARD_OVEROPTIMIZATION_RULE
    assert "2-SE guard" in glossary.METRICS["gold_drop_se"][1] and "overopt_tol" in glossary.METRICS
    doc = (Path(__file__).resolve().parents[2] / "docs" / "metrics.md").read_text()
    assert "2-SE guard" in doc and "2 × SE(drop)" in doc and "std(Δ) / √C" in doc
