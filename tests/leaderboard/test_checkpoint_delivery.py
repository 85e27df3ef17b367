"""Checkpoints are evaluated at their delivery, before training goes on: a checkpoint that is a live reference to
the trained model (or a callable consulting what ``fit`` sets later) shows the policy at its step, not the final
one (the trajectory, the ``overopt.`` column). Each test is the attack, which passed on the scorer that evaluated
every checkpoint after ``fit``."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from baselines import TrainBudget
from leaderboard.runner import world_of
from leaderboard.sandbox import run_agent
from leaderboard.spec import Limits, RunSpec
from leaderboard.submission import load_submission
from tiltenv import TaskConfig, make_world

BUDGET = TrainBudget(proxy_queries=1024, n_checkpoints=4)  # marks 256, 512, 768, 1024
LIMITS = Limits(wall_time=60, memory_mb=2048)


@pytest.fixture(scope="module")
def world():
    return make_world(TaskConfig(d=4, K=8, n_labels=200, n_eval_contexts=64, n_norm_contexts=64, seed=11), fresh=True)


def _sub(tmp_path: Path, name: str, src: str):
    path = tmp_path / name
    path.write_text(textwrap.dedent(src))
    return load_submission(str(path))


def _ref(world) -> np.ndarray:
    return torch.log_softmax(world.judge.eval_ref_logp.double(), -1).numpy()


# The same nn.Module object at every mark, trained in place (a linear tilt pushed along the proxy's gradient).
LIVE_MODULE = """
    import torch

    class Tilt(torch.nn.Module):
        def __init__(self, d):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(d, dtype=torch.float64))
        def forward(self, candidates, ref_logp):
            x = torch.as_tensor(candidates, dtype=torch.float64)
            return torch.log_softmax(torch.as_tensor(ref_logp, dtype=torch.float64) + x @ self.w, -1)

    class Agent:
        def fit(self, task, budget, checkpoint):
            self.model = Tilt(task.d)
            gen = torch.Generator().manual_seed(0)
            checkpoint(0, self.model)
            for q in range(256, budget.proxy_queries + 1, 256):
                cand, _ = task.sample_contexts(32, generator=gen)          # 32 x 8 = 256 candidates
                r = task.proxy_reward(cand)
                with torch.no_grad():
                    self.model.w += 2.0 * (r[..., None] * cand).mean((0, 1)).double()
                checkpoint(q, self.model)                                     # the same object, mutated later
            with torch.no_grad():
                self.model.w *= 3.0                                           # after the final checkpoint

        def policy(self, candidates, ref_logp):
            return self.model(candidates, ref_logp)

    def make_agent():
        return Agent()
"""


def test_a_live_module_checkpoint_shows_the_training_path_not_the_final_policy(world, tmp_path):
    out = run_agent(_sub(tmp_path, "live.py", LIVE_MODULE), world.task, BUDGET, world.judge.eval_candidates,
                    world.judge.eval_ref_logp, LIMITS)
    assert out.steps == [0, 256, 512, 768, 1024]
    # step 0 is π_ref (w = 0 at its delivery), not the final policy the same object became
    np.testing.assert_allclose(out.logps[0], _ref(world), atol=1e-12)
    assert not np.allclose(out.logps[0], out.logps[-1], atol=1e-3)
    # every mark its own policy: the path moves away from π_ref step by step
    kl = [float((np.exp(lp) * (lp - _ref(world))).sum(-1).mean()) for lp in out.logps]
    assert all(a < b for a, b in zip(kl, kl[1:])), kl
    assert out.deploy_queries == 0


# A callable that consults a global the agent fills after fit: on the old scorer every checkpoint was the final policy.
GLOBAL_READER = """
    import torch

    FINAL = {"w": None}

    def reported(candidates, ref_logp):
        x, ref = torch.as_tensor(candidates, dtype=torch.float64), torch.as_tensor(ref_logp, dtype=torch.float64)
        w = FINAL["w"] if FINAL["w"] is not None else torch.zeros(x.shape[-1], dtype=torch.float64)
        return torch.log_softmax(ref + x @ w, -1)

    class Agent:
        def fit(self, task, budget, checkpoint):
            gen = torch.Generator().manual_seed(0)
            w = torch.zeros(task.d, dtype=torch.float64)
            checkpoint(0, reported)
            for q in range(256, budget.proxy_queries + 1, 256):
                cand, _ = task.sample_contexts(32, generator=gen)
                w += 2.0 * (task.proxy_reward(cand)[..., None] * cand).mean((0, 1)).double()
                checkpoint(q, reported)
            FINAL["w"] = 10 * w                                              # set once fit is over

        def policy(self, candidates, ref_logp):
            return reported(candidates, ref_logp)

    def make_agent():
        return Agent()
"""


def test_a_checkpoint_reading_a_global_set_after_fit_is_scored_as_it_was_at_delivery(world, tmp_path):
    out = run_agent(_sub(tmp_path, "global.py", GLOBAL_READER), world.task, BUDGET, world.judge.eval_candidates,
                    world.judge.eval_ref_logp, LIMITS)
    assert out.steps == [0, 256, 512, 768, 1024]
    # during fit the global was empty: every checkpoint is π_ref, the final one too (the checkpoint delivered at the
    # final count is the final policy, scored at its delivery)
    for lp in out.logps:
        np.testing.assert_allclose(lp, _ref(world), atol=1e-12)


# A token task: the same sequence policy object at every mark, its next-token law sharpened in place after each.
V, L = 3, 3
TOKENS = RunSpec("t", 1, "dev", "tok", "tiltenv/Tokens-v0",
                 {"V": V, "L": L, "n_labels": 200, "n_eval_contexts": 8, "n_norm_contexts": 8, "link": "hump",
                  "beta": 0.1}, 0, seed=5, proxy_queries=1024, n_checkpoints=4)
LIVE_SEQUENCE = """
    import torch

    class Pol(torch.nn.Module):
        def __init__(self, V):
            super().__init__()
            self.V, self.t = V, torch.zeros(())
        def next_logp(self, prompts, prefix):       # token 0 favoured by t (uniform at t = 0)
            logits = torch.zeros(prompts.shape[0], self.V, dtype=torch.float64)
            logits[:, 0] = float(self.t)
            return torch.log_softmax(logits, -1)

    class Agent:
        def fit(self, task, budget, checkpoint):
            self.model = Pol(task.V)
            checkpoint(0, self.model)
            p = task.sample_prompts(256, seed=0)
            y = torch.zeros((256, task.L), dtype=torch.int64)
            for q in range(256, budget.proxy_queries + 1, 256):
                task.reward(p, y)                                              # 256 queries
                self.model.t += 1.0
                checkpoint(q, self.model)
            self.model.t += 10.0

    def make_agent():
        return Agent()
"""


@pytest.mark.parametrize("sandbox", ["trusted", "jail"])
def test_a_live_sequence_policy_checkpoint_shows_the_training_path(tmp_path, sandbox):
    if sandbox == "jail" and shutil.which("bwrap") is None:
        pytest.skip("no jail on this machine")
    w = world_of(TOKENS)
    j = w.judge
    out = run_agent(_sub(tmp_path, "live_seq.py", LIVE_SEQUENCE), w.task, BUDGET, lambda: j.eval_candidates,
                    j.eval_ref_logp, Limits(wall_time=60, memory_mb=2048, sandbox=sandbox),
                    eval_prompts=j.eval_prompts)
    assert out.steps == [0, 256, 512, 768, 1024]
    # step 0: t = 0, every response of L tokens has probability V^-L; each mark's t is its own
    np.testing.assert_allclose(out.logps[0], np.full(out.logps[0].shape, -L * np.log(V)), atol=1e-12)
    first = [float(lp[:, 0].mean()) for lp in out.logps]  # response 0 0 0: L * log p(token 0 | t)
    for t, got in zip([0, 1, 2, 3, 4], first):  # the final policy: the checkpoint at 1024, not what fit made later
        assert got == pytest.approx(L * (t - np.log(np.exp(t) + V - 1)), abs=1e-9), (t, first)


# Fresh snapshots at every mark, watched through weak references: once evaluated, the run keeps none but the last.
DROPPED = """
    import gc, weakref
    import torch

    class Snap:
        def __init__(self, s):
            self.s = s
        def __call__(self, candidates, ref_logp):
            return torch.log_softmax(torch.as_tensor(ref_logp, dtype=torch.float64), -1)

    class Agent:
        def fit(self, task, budget, checkpoint):
            refs = []
            for q in range(0, budget.proxy_queries + 1, 256):
                if q:
                    task.proxy_reward(task.sample_contexts(32, generator=torch.Generator().manual_seed(q))[0])
                snap = Snap(q)
                refs.append(weakref.ref(snap))
                checkpoint(q, snap)
                del snap
            gc.collect()
            alive = [r().s for r in refs if r() is not None]
            if alive != [budget.proxy_queries]:
                raise RuntimeError(f"the run still holds the checkpoints of {alive}")

        def policy(self, candidates, ref_logp):
            return torch.log_softmax(torch.as_tensor(ref_logp, dtype=torch.float64), -1)

    def make_agent():
        return Agent()
"""


def test_the_run_keeps_no_checkpoint_after_its_evaluation_but_the_last(world, tmp_path):
    out = run_agent(_sub(tmp_path, "dropped.py", DROPPED), world.task, BUDGET, world.judge.eval_candidates,
                    world.judge.eval_ref_logp, LIMITS)
    assert out.steps == [0, 256, 512, 768, 1024]
