"""evaluate(): any policy form, exact metrics against the judge, closed forms, determinism."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import torch

import tiltenv
from tiltenv import TaskConfig, make_world
from tiltenv import metrics as M

SMALL = dict(d=4, K=8, n_labels=300, n_eval_contexts=256, n_norm_contexts=256)


def test_reference_policy_scores_zero_and_gold_tilt_scores_one():
    env = gym.make("tiltenv/SingleIndex-v0", **SMALL)
    ref = tiltenv.evaluate(lambda cand, ref_logp: ref_logp, env)
    assert ref["kl"] == pytest.approx(0, abs=1e-12) and ref["normalized_score"] == pytest.approx(0, abs=1e-12)
    judge = tiltenv.worlds.evaluation.resolve_judge(env)
    beta = env.unwrapped.config.beta
    star = M.tilt_logp(judge.eval_ref_logp.double(), judge.eval_gold, beta)
    res = tiltenv.evaluate(star, env)
    assert res["normalized_score"] == pytest.approx(1, abs=1e-9)
    assert res["value_gap"] == pytest.approx(0, abs=1e-9)
    assert res["objective"] == pytest.approx(res["optimal_objective"], abs=1e-9)
    assert res["kl_matched_gap"] == pytest.approx(0, abs=1e-6)  # the gold tilt is on the frontier


def test_policy_forms_agree():
    world = make_world(TaskConfig(**SMALL))
    j = world.judge
    logits = torch.randn(j.eval_ref_logp.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    logp = torch.log_softmax(logits, -1)
    a = tiltenv.evaluate(logp, world)
    b = tiltenv.evaluate(logp.numpy(), world)
    c = tiltenv.evaluate(lambda cand, ref: logits, world, logits=True)  # explicit: never guessed

    class Agent:
        def policy(self, cand, ref):
            return logp

    d = tiltenv.evaluate(Agent(), j)
    e = tiltenv.evaluate(lambda cand, ref: logp.float(), world)  # float32 log-probs are accepted
    for key in a:
        assert a[key] == pytest.approx(b[key], rel=1e-9, abs=1e-12)
        assert a[key] == pytest.approx(c[key], rel=1e-9, abs=1e-12)
        assert a[key] == pytest.approx(d[key], rel=1e-9, abs=1e-12)
        assert a[key] == pytest.approx(e[key], rel=1e-5, abs=1e-6)


def _probs_and_logits(world):
    g = torch.Generator().manual_seed(1)
    logits = 3 * torch.randn(world.judge.eval_ref_logp.shape, generator=g, dtype=torch.float64)
    return torch.softmax(logits, -1), logits


@pytest.mark.parametrize("form", ["callable", "array", "agent"])
@pytest.mark.parametrize("case, match", [
    ("probs", "look like probabilities"),
    ("scaled_probs", "non-negative"),
    ("float16_probs", "float16"),
    ("float16_logp", "float16"),
    ("logits", "look like logits"),
    ("shifted_logp", "not normalized"),
])
def test_evaluate_never_guesses(form, case, match):
    # issue 9: softmax probabilities from a callable were read as logits (KL 0.001 / gold 0.008, truth 3.78 / 0.912)
    world = make_world(TaskConfig(**SMALL))
    probs, logits = _probs_and_logits(world)
    out = {"probs": probs, "scaled_probs": 0.9 * probs, "float16_probs": probs.half(),
           "float16_logp": torch.log_softmax(logits, -1).half(), "logits": logits,
           "shifted_logp": torch.log_softmax(logits, -1) - 0.5}[case]

    class Agent:
        def policy(self, cand, ref):
            return out

    policy = {"callable": lambda c, r: out, "array": out.numpy() if out.dtype != torch.float16 else out,
              "agent": Agent()}[form]
    with pytest.raises(ValueError, match=match) as err:
        tiltenv.evaluate(policy, world)
    msg = str(err.value)
    assert "log_softmax" in msg or "float32" in msg  # says how to fix it
    if case in ("probs", "scaled_probs", "logits"):
        assert "logits=True" in msg and "row 0" in msg  # and what was returned
    truth = tiltenv.evaluate(torch.log_softmax(logits, -1), world)
    fixed = tiltenv.evaluate(torch.log(probs), world)
    assert fixed["kl"] == pytest.approx(truth["kl"]) and fixed["gold_value"] == pytest.approx(truth["gold_value"])


def test_infinities_are_named_and_minus_inf_is_probability_zero():
    world = make_world(TaskConfig(**SMALL))
    ref = world.judge.eval_ref_logp.double()
    one_hot = torch.full_like(ref, -math.inf)
    one_hot[:, 0] = 0.0  # always candidate 0: -inf is probability 0, a valid log-probability
    res = tiltenv.evaluate(one_hot, world)
    assert math.isfinite(res["kl"]) and res["kl"] == pytest.approx(math.log(SMALL["K"]))
    bad = ref.clone()
    bad[3, 2] = math.inf
    with pytest.raises(ValueError, match=r"\+inf .*row 3, candidate 2"):
        tiltenv.evaluate(bad, world)
    with pytest.raises(ValueError, match="all -inf"):
        tiltenv.evaluate(torch.full_like(ref, -math.inf), world)
    bad = ref.clone()
    bad[5, 1] = math.nan
    with pytest.raises(ValueError, match="NaN .*row 5, candidate 1"):
        tiltenv.evaluate(lambda c, r: bad, world)
    with pytest.raises(ValueError, match=r"\+inf"):
        tiltenv.evaluate(lambda c, r: bad.nan_to_num(nan=math.inf), world, logits=True)
    with pytest.raises(TypeError, match="logits must be True or False"):
        tiltenv.evaluate(ref, world, logits="yes")


def test_evaluate_result_is_a_dict_with_a_readable_table():
    import json

    world = make_world(TaskConfig(**SMALL))
    res = tiltenv.evaluate(lambda c, r: r, world)
    assert isinstance(res, dict) and json.loads(json.dumps(res)) == dict(res) and res.kl == res["kl"]
    text, legend = str(res), res.explain()
    for key in res:
        assert key in text and key in legend
    assert "J*_β − J_β" in text and "docs/metrics.md" in text
    assert "1 = the gold tilt" in legend and "at the task's β" in legend


def test_bad_policies_are_rejected_clearly():
    world = make_world(TaskConfig(**SMALL))
    with pytest.raises(ValueError, match=r"shape \(C=256, K=8\)"):
        tiltenv.evaluate(np.log(np.ones((3, 8)) / 8), world)
    with pytest.raises(ValueError, match="NaN"):
        tiltenv.evaluate(lambda c, r: torch.full(r.shape, float("nan")), world)
    with pytest.raises(ValueError, match="probabilities"):
        tiltenv.evaluate(np.full((256, 8), 0.5), world)
    with pytest.raises(ValueError, match="numeric"):
        tiltenv.evaluate(np.full((256, 8), "a"), world)
    with pytest.raises(TypeError, match="unsupported policy"):
        tiltenv.evaluate(object(), world)
    with pytest.raises(TypeError, match="cannot find a tiltenv task"):
        tiltenv.evaluate(lambda c, r: r, "tiltenv/Hump-v0")


def test_linear_gold_tilt_matches_the_gaussian_closed_form():
    # Linear gold, uniform π_ref over many candidates: the gold tilt of N(0,1) along θ* is N(1/β, 1),
    # so V = 1/β, KL = 1/(2β²), J*_β = 1/(2β). Finite K = 2048 biases these by < 3% at β ≥ 1.
    world = make_world(TaskConfig(d=8, K=2048, link="linear", proxy="gold", n_eval_contexts=256, n_norm_contexts=64))
    for beta in (1.0, 2.0):
        res = tiltenv.tilt_sweep(world, [beta], reward="gold")[0]
        assert res["gold_value"] == pytest.approx(1 / beta, rel=0.03)
        assert res["kl"] == pytest.approx(1 / (2 * beta**2), rel=0.03)
        assert M.soft_value(world.judge.eval_ref_logp, world.judge.eval_gold, beta) == pytest.approx(1 / (2 * beta), rel=0.03)


def test_same_seed_gives_bit_identical_metrics():
    a = tiltenv.tilt_sweep(make_world(TaskConfig(**SMALL, seed=7), fresh=True), [0.5, 0.1])
    b = tiltenv.tilt_sweep(make_world(TaskConfig(**SMALL, seed=7), fresh=True), [0.5, 0.1])
    assert a == b


def test_tabular_task_evaluates_exactly():
    env = gym.make("tiltenv/Tabular-v0")
    cfg = env.unwrapped.config
    probs = np.zeros((1, cfg.K))
    probs[0, int(np.argmax(cfg.proxy))] = 1.0
    with np.errstate(divide="ignore"):
        logp = np.log(probs)
    res = tiltenv.evaluate(logp, env)  # -inf log-probabilities: probability 0
    assert res["gold_value"] == pytest.approx(cfg.gold[int(np.argmax(cfg.proxy))])
    assert res["kl"] == pytest.approx(math.log(cfg.K))


def test_sweeps_label_rows_exactly_and_public_tasks_cannot_be_judged():
    world = make_world(TaskConfig(**SMALL))
    rows = tiltenv.best_of_n_sweep(world, [2, 2.7])
    assert [r["n"] for r in rows] == [2, 2.7] and rows[0]["kl"] < rows[1]["kl"]
    env = tiltenv.envs.TiltEnv.from_task(world.task)
    with pytest.raises(ValueError, match="public view"):
        tiltenv.evaluate(lambda c, r: r, env)
    with pytest.raises(ValueError, match=r"beta must be in \(0, inf\]"):
        tiltenv.evaluate(lambda c, r: r, world, beta=-1)
    with pytest.raises(TypeError, match=r"beta must be a real number \(got 'x', a string\)"):
        tiltenv.evaluate(lambda c, r: r, world, beta="x")
