"""Issue 12, part 5: held-out reward models monitor a run; the gold lost by stopping where they peak vs a fixed KL."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from baselines import REINFORCE, TrainBudget
from tiltenv import TaskConfig, make_world
from tiltenv import metrics as M
from tiltenv.lifecycle.monitor import (OveroptimizationMonitor, StopTraining, held_out_proxies, monitor_report, oracle_proxy,
                             run_monitored)

BETAS = np.geomspace(3, 0.003, 16)


def _tilt_path(world, monitor):
    """A tilt path over decreasing β stands in for training: checkpoint i is π_ref e^{r̂/β_i}."""
    for i, b in enumerate(BETAS):
        monitor(i, lambda c, ref, b=b: M.tilt_logp(ref, world.task.proxy_reward(c, count=False), b))


def _fmt(rep):
    fk = ", ".join(f"KL≤{k:g}: {v:.3f}" for k, v in rep["lost_fixed_kl"].items())
    return (f"gold peak {rep['gold_peak']:.3f} (ckpt {rep['peak_index']}), monitor ckpt {rep['chosen_index']} "
            f"(fired: {rep['stopped']}) lost {rep['lost_monitor']:.3f}, run to the end lost {rep['lost_final']:.3f}; "
            f"fixed KL lost {fk}")


def test_held_out_proxies_are_disjoint_learned_models():
    w = make_world(TaskConfig(d=4, K=8, n_labels=200, n_eval_contexts=64, n_norm_contexts=64))
    hp = held_out_proxies(w, k=3)
    ws = [p.w for p in hp] + [w.task.proxy.w]
    assert len({tuple(x.tolist()) for x in ws}) == 4  # different labels, different fits
    with pytest.raises(ValueError, match="not learned from labels"):
        held_out_proxies(w, proxy="gold")


def test_monitor_costs_nothing_where_gold_keeps_rising_unlike_a_fixed_kl():
    """Monotone gold (relu, linear proxies): nothing to catch; the monitor must not stop early."""
    for seed in range(3):
        w = make_world(TaskConfig(d=16, K=256, link="relu", n_labels=300, n_eval_contexts=512, n_norm_contexts=512,
                                  seed=seed))
        mon = OveroptimizationMonitor(held_out_proxies(w, k=3), w.task, n_contexts=512)
        _tilt_path(w, mon)
        rep = monitor_report(w, mon)
        print(f"relu seed {seed}: " + _fmt(rep))
        assert rep["lost_monitor"] < 0.02
        assert rep["lost_fixed_kl"][1.0] > 0.5 and rep["lost_fixed_kl"][2.0] > 0.2


def test_monitor_with_held_out_proxies_misses_a_shared_blind_spot():
    """Hump gold, MLP proxies: every proxy trained on π_ref labels extrapolates past the peak the same way, so the
    held-out proxies keep rising with the trained one and the monitor loses what running to the end loses.
    The oracle monitor (the gold itself as the held-out model) shows what the stopping rule costs when it can see."""
    for seed in range(2):
        w = make_world(TaskConfig(d=16, K=256, link="hump", proxy="mlp", n_labels=300, n_eval_contexts=512,
                                  n_norm_contexts=512, seed=seed))
        mon = OveroptimizationMonitor(held_out_proxies(w, k=3), w.task, n_contexts=512)
        _tilt_path(w, mon)
        rep = monitor_report(w, mon)
        t = rep["table"]
        oracle = OveroptimizationMonitor([oracle_proxy(w)], w.task, n_contexts=512)
        _tilt_path(w, oracle)
        orep = monitor_report(w, oracle)
        print(f"hump seed {seed}: " + _fmt(rep))
        print(f"  held-out mean at the gold peak {t.heldout[rep['peak_index']]:.3f} -> at the end {t.heldout.iloc[-1]:.3f}"
              f" (gold {t.gold[rep['peak_index']]:.3f} -> {t.gold.iloc[-1]:.3f})")
        print(f"  oracle monitor: ckpt {orep['chosen_index']} lost {orep['lost_monitor']:.3f}")
        assert rep["lost_final"] > 0.1  # the run overoptimizes ...
        assert t.heldout.iloc[-1] > t.heldout[rep["peak_index"]]  # ... the held-out proxies do not see it ...
        assert rep["lost_monitor"] > 0.8 * rep["lost_final"]  # ... so the monitor loses about as much
        assert min(rep["lost_fixed_kl"][2.0], rep["lost_fixed_kl"][4.0]) < 0.5 * rep["lost_monitor"]
        assert orep["lost_monitor"] < 0.01 and orep["stopped"]  # the rule itself works when its models can see


def test_monitor_from_an_agents_checkpoint_callback_halts_it():
    w = make_world(TaskConfig(d=8, K=64, link="hump", n_labels=300, n_eval_contexts=512, n_norm_contexts=512, beta=0.003))
    oracle = [oracle_proxy(w)]  # a held-out model that can see
    mon = OveroptimizationMonitor(oracle, w.task, n_contexts=512, halt=True)
    agent = REINFORCE(device="cpu", learning_rate=0.05)
    budget = TrainBudget(proxy_queries=65_536, checkpoint_every=4)
    run_monitored(agent, w.task, budget, mon)
    rep = monitor_report(w, mon)
    print(f"REINFORCE on the hump, β=0.003: {len(mon.history)} checkpoints, steps {mon.history[-1]['step']} of 65536; "
          + _fmt(rep))
    assert mon.stopped and mon.history[-1]["step"] < 65_536  # fit ended early
    assert rep["lost_monitor"] < 0.02
    free = OveroptimizationMonitor(oracle, w.task, n_contexts=512)  # watch only: no halt
    REINFORCE(device="cpu", learning_rate=0.05).fit(w.task, TrainBudget(proxy_queries=4096), checkpoint=free)
    assert len(free.history) >= 2
    with pytest.raises(StopTraining):
        m = OveroptimizationMonitor(oracle, w.task, n_contexts=64, halt=True, patience=1)
        for i, v in enumerate([1.0, 0.1, 0.01]):
            m(i, lambda c, ref, v=v: M.tilt_logp(ref, w.task.proxy_reward(c, count=False), 1 / v))
    with pytest.raises(ValueError, match="patience must be"):
        OveroptimizationMonitor(oracle, w.task, patience=0)


def test_stopping_rule_counts_consecutive_checkpoints_below_the_running_peak():
    """Held-out value rises with 1/β along a tilt of the held-out model itself, so the order of the βs sets the
    sequence of held-out values: ranks 1 3 2 4 3 2 5. With patience 2 the rule fires at checkpoint 5 (two in a row
    below the peak 4; the dip at checkpoint 2 was interrupted by a new peak), chooses checkpoint 3, and keeps that
    choice when a later checkpoint (6) beats it."""
    w = make_world(TaskConfig(d=4, K=8, n_labels=100, n_eval_contexts=64, n_norm_contexts=64))
    p = w.task.proxy
    betas = [3.0, 1.0, 0.3, 0.1, 0.03]  # increasing held-out value
    mon = OveroptimizationMonitor([p], w.task, n_contexts=256, patience=2)
    for i, r in enumerate([1, 3, 2, 4, 3, 2, 5]):
        mon(i, lambda c, ref, b=betas[r - 1]: M.tilt_logp(ref, p(c).double(), b))
    h = [row["heldout"] for row in mon.history]
    assert [sorted(set(h)).index(v) + 1 for v in h] == [1, 3, 2, 4, 3, 2, 5]  # the ranks are as intended
    assert mon.stopped and mon.stop_index == 5
    assert mon.chosen_index == 3 and mon.chosen_policy is mon.policies[3]
    # fixed-KL stopping: the last checkpoint within the budget (KL rises with 1/β like the held-out value)
    kls = [row["kl"] for row in mon.history]
    assert mon.fixed_kl_index(kls[1] + 1e-12) == 5 and mon.fixed_kl_index(-1.0) == 0
