"""Knobs added for the reproductions: ``World.with_proxy`` and the parametric proxy's ``index_scale``."""

from __future__ import annotations

import pytest
import torch

from tiltenv import TabularConfig, TaskConfig, make_world
from tiltenv import metrics as M

SMALL = dict(d=4, n_eval_contexts=256, n_norm_contexts=512)


def test_with_proxy_moves_a_proxy_to_a_world_with_the_same_gold_and_more_candidates():
    small = make_world(TaskConfig(K=8, n_labels=400, seed=3, **SMALL))
    big = make_world(TaskConfig(K=64, n_labels=10, seed=3, **SMALL))
    assert torch.equal(small.judge.theta, big.judge.theta)  # θ* depends on (seed, d) only
    moved = big.with_proxy(small.task.proxy)
    # the judge and the task both score the moved proxy; the original worlds are untouched
    w_small, w_moved = small.task.proxy.w, moved.task.proxy.w
    assert torch.equal(w_small, w_moved) and moved.task.proxy is not small.task.proxy
    assert torch.allclose(moved.judge.eval_proxy, moved.task.proxy_reward(big.judge.eval_candidates, count=False).double())
    assert not torch.allclose(moved.judge.eval_proxy, big.judge.eval_proxy)
    # renormalized under the big world's π_ref: mean 0, variance 1 pooled over its contexts (up to sampling)
    ref = moved.judge.eval_ref_logp
    r = moved.judge.eval_proxy
    mean = M.policy_value(ref, r)
    assert abs(mean) < 0.1 and abs(float((ref.exp() * (r - mean) ** 2).sum(-1).mean()) - 1) < 0.1
    assert moved.task.budget.proxy_queries == 0 and moved.task.K == 64
    with pytest.raises(TypeError, match="Proxy"):
        big.with_proxy(lambda x: x.sum(-1))


def test_with_proxy_without_renormalize_keeps_the_scale():
    w = make_world(TaskConfig(K=8, n_labels=200, **SMALL))
    p = w.task.proxy
    p2 = w.with_proxy(p, renormalize=False).task.proxy
    assert float(p2.shift) == float(p.shift) and float(p2.scale) == float(p.scale)


def test_index_scale_squashes_the_proxy_but_keeps_the_ranking():
    base = dict(d=8, K=16, link="linear", prompt_corr=0.8, proxy="parametric", n_eval_contexts=512, n_norm_contexts=512)
    plain = make_world(TaskConfig(**base, proxy_kwargs={"link": "tanh", "index_scale": 0.25}))
    squashed = make_world(TaskConfig(**base, proxy_kwargs={"link": "tanh", "index_scale": 2.0}))
    g = plain.judge.eval_gold
    for w in (plain, squashed):
        assert M.ranking_accuracy(w.judge.eval_proxy, g) > 0.999  # a monotone transform of the gold index
    # tanh(0.25 s) is nearly linear in s (= the linear gold after normalization); tanh(2 s) saturates
    ref = plain.judge.eval_ref_logp
    r = squashed.judge.eval_proxy
    assert M.proxy_gold_correlation(ref, plain.judge.eval_proxy, g) > 0.99
    assert M.proxy_gold_correlation(ref, r, g) < 0.97
    assert float((r.abs() > 0.95 * r.abs().max()).double().mean()) > 0.2
    # the pooled normalization: squashing moves variance from between contexts to within them, never lower
    assert M.reward_variance(ref, r) > M.reward_variance(ref, plain.judge.eval_proxy)
    with pytest.raises(ValueError, match="index_scale"):
        TaskConfig(**base, proxy_kwargs={"index_scale": 0.0})


def test_with_proxy_keeps_a_multi_objective_judge_and_its_normalization_contexts():
    """A multi-objective world's judge is kept (with its per-dimension golds), and renormalizing one of the world's
    own dimension proxies on the world's normalization contexts gives back exactly its shift and scale."""
    from tiltenv.worlds.multiobjective import MultiObjectiveConfig, MultiObjectiveJudge

    w = make_world(MultiObjectiveConfig(d=6, K=8, n_labels=100, n_eval_contexts=64, n_norm_contexts=64), fresh=True)
    dim0 = w.task.dim_proxies[0]
    moved = w.with_proxy(dim0)
    assert type(moved.judge) is MultiObjectiveJudge and torch.equal(moved.judge.dim_gold, w.judge.dim_gold)
    assert (float(moved.task.proxy.shift), float(moved.task.proxy.scale)) == (float(dim0.shift), float(dim0.scale))
    assert torch.equal(moved.judge.eval_proxy, dim0(w.judge.eval_candidates).double())
    assert not torch.equal(moved.judge.eval_proxy, w.judge.eval_proxy)  # the original judge is untouched
    from tiltenv import evaluate

    out = evaluate(lambda c, r: torch.as_tensor(r), moved)
    assert "gold_gain_dim0" in out and "min_dim_gain" in out
    tab = make_world(TabularConfig())
    with pytest.raises(ValueError, match=r"renormalize=True needs a world with π_ref normalization contexts.*TabularConfig"):
        tab.with_proxy(tab.task.proxy)
