"""The token-level reproduction scripts (issue 20) run in --quick mode and show their qualitative result."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="module")
def razin(run_reproduction):
    return run_reproduction("razin_tokens")


def test_razin_token_level_less_accurate_higher_variance_teaches_faster(razin):
    t = razin["table"].set_index("proxy")
    hi, lo = t.loc[razin["high_variance"]], t.loc["gold x0.3"]
    assert hi.accuracy_pi0 < 0.95 and lo.accuracy_pi0 > 1 - 1e-9  # the fast teacher is the less accurate one
    assert hi.reward_var_pi0 > 10 * lo.reward_var_pi0
    assert np.isfinite(hi.token_updates_to_level) and razin["effect"]["token"] >= 2.0, razin["effect"]
    # at a fixed budget, the gold gain ranks with the reward variance under π_ref, not with accuracy
    assert t.token_gold_gain.rank().corr(t.reward_var_pi0.rank()) > 0.5


@pytest.fixture(scope="module")
def gao(run_reproduction):
    return run_reproduction("gao_tokens")


def test_gao_token_world_best_of_n_and_token_rl_overoptimize_the_hump(gao):
    t = gao["fits"].query("world_seed == 0")
    end = gao["ends"].query("world_seed == 0").iloc[0]  # the proxy's best response: where every path ends
    bon, tilt = t[t.method == "bon"].iloc[0], t[t.method == "tilt"].iloc[0]
    assert bon["drop"] > 0.2 and bon.r2 > 0.95 and bon.beta_fit > 0 and bon.proxy_up_gold_down
    assert tilt["drop"] > 0.2 and tilt.proxy_up_gold_down  # RL's ideal path (exact KL-regularized optima)
    # token RL with a KL penalty that keeps it stochastic: gold rises, peaks and falls while the proxy rises, on
    # the way to the proxy's best response. Over RL seeds 0-5 of the quick setting it does so in 4 of 6 (seeds
    # 0, 1, 2, 4); the full run's 32k responses: 3 of 3 in this world.
    rl = t[(t.method == "rl") & (t.beta == 0.1)]
    falls = rl[(rl["drop"] > 0.3) & rl.proxy_up_gold_down & (rl.peak_gain > end.argmax_gain + 0.3)]
    assert len(rl) == 3 and len(falls) >= 2, rl
    assert (falls.max_kl > end.argmax_kl - 1.5).all()
    mc, se, exact = gao["bon_check"]
    assert abs(mc - exact) < 4 * se  # sampled best-of-n agrees with its exact law


def test_gao_token_rl_at_near_zero_kl_penalty_stalls_on_a_mode_and_does_not_fall(gao):
    """What does not reproduce: at β = 0.01 token RL (the GRU) mostly collapses onto a near-deterministic response
    early and stays there, short of the proxy's best response, so its gold does not fall (over RL seeds 0-5 of the
    quick setting 5 of 6 stall; seed 2 escapes and falls; the full run: 2 of 12 runs fall)."""
    t = gao["fits"].query("world_seed == 0")
    end = gao["ends"].query("world_seed == 0").iloc[0]
    rl0, rl1 = t[(t.method == "rl") & (t.beta == 0.01)], t[(t.method == "rl") & (t.beta == 0.1)]
    stall = rl0[(rl0["drop"] < 0.1) & (rl0.max_kl < end.argmax_kl - 1.0) & (rl0.proxy_final < end.argmax_proxy - 0.5)]
    assert len(stall) >= 2, rl0
    assert (rl0["drop"] > 0.1).sum() < (rl1["drop"] > 0.1).sum()  # the larger penalty falls more often
    # the stall is the GRU's, not the token parametrization's: a table policy (free logits per prompt and prefix)
    # with exact gradients at β = 0 follows the tilt path down to the proxy's best response
    table = t[t.method == "rl_table"].iloc[0]
    assert table["drop"] > 0.3 and table.proxy_up_gold_down and table.max_kl > end.argmax_kl - 0.5


def test_token_reward_models_quick_the_transformer_learns_from_tokens(run_reproduction):
    res = run_reproduction("token_reward_models")
    s = res["summary"].set_index("proxy")
    assert set(s.index) == {"linear", "two_stage", "mlp", "transformer"}
    assert np.isfinite(res["table"][["gold_corr", "accuracy", "reward_var", "build_s"]].to_numpy()).all()
    assert s.loc["transformer", "accuracy"] > 0.8 and s.loc["transformer", "gold_corr"] > 0.6
