"""Issue 17, items 5-7: trajectories the submission cannot choose, deployment queries are deployment, and one run
never stops a scoring. Each attack of the issue's table is written here as a submission file."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from baselines import TrainBudget
from leaderboard import scoring
from leaderboard.runner import score, world_of
from leaderboard.sandbox import run_agent
from leaderboard.spec import Limits, SandboxFailure
from leaderboard.store import Store
from leaderboard.submission import EXAMPLES_DIR, load_submission
from leaderboard.suites import Suite, SuiteEntry, get_suite
from tiltenv import TaskConfig, make_world
from tiltenv.worlds.evaluation import policy_logp

TINY = dict(d=4, K=16, n_labels=200, n_eval_contexts=128, n_norm_contexts=256)
SUITE = Suite("traj", 1, (SuiteEntry("hump", "tiltenv/Hump-v0", {**TINY, "beta": 0.05}, 4096, 4),),
              n_dev_seeds=1, n_test_seeds=1)
LIMITS = Limits(wall_time=120, memory_mb=4096, threads=1)
BUDGET = TrainBudget(proxy_queries=4096, n_checkpoints=4)


@pytest.fixture(scope="module")
def world():
    return make_world(TaskConfig(d=4, K=8, n_labels=200, n_eval_contexts=64, n_norm_contexts=64, seed=11), fresh=True)


def _file(tmp_path: Path, name: str, src: str) -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(src))
    return str(path)


def _run(world, path: str, budget: TrainBudget = BUDGET):
    return run_agent(load_submission(path), world.task, budget, world.judge.eval_candidates,
                     world.judge.eval_ref_logp, Limits(wall_time=60, memory_mb=2048))


# ------------------------------------------------------------------------------------------------ item 6: deployment
DEPLOYMENT_TRAINER = """
    import torch

    class Agent:
        '''Does nothing in fit; trains a linear tilt inside policy(), on proxy scores of contexts it samples.'''
        def fit(self, task, budget, checkpoint):
            self.task, self.w = task, torch.zeros(task.d)
            checkpoint(0, self)

        def policy(self, candidates, ref_logp):
            for _ in range(20):
                cand, ref = self.task.sample_contexts(4, generator=torch.Generator().manual_seed(0))
                r = self.task.proxy_reward(cand, count=False)            # 32 candidates it is not evaluated on
                self.w += 0.1 * (r[..., None] * cand).mean((0, 1))
            return torch.log_softmax(torch.as_tensor(ref_logp) + torch.as_tensor(candidates) @ self.w, -1)

    def make_agent():
        return Agent()
"""


def test_training_inside_policy_during_evaluation_fails_budget(world, tmp_path):
    with pytest.raises(SandboxFailure) as info:
        _run(world, _file(tmp_path, "deploy_trainer.py", DEPLOYMENT_TRAINER))
    assert info.value.reason == "budget" and "not evaluated on" in info.value.detail


def test_deployment_queries_are_stored_beside_proxy_queries(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'b.db'}")
    score([load_submission("tilt"), load_submission("reinforce")], SUITE, store=store, limits=LIMITS, progress=False)
    runs = store.runs(suite="traj", version=1, split="dev").set_index("submission")
    cols = list(runs.columns)
    assert cols.index("deployment_queries") == cols.index("proxy_queries") + 1
    C, K = 128, 16
    assert runs.loc["tilt", "proxy_queries"] == 0 and runs.loc["tilt", "deployment_queries"] == C * K
    assert runs.loc["reinforce", "proxy_queries"] == 4096 and runs.loc["reinforce", "deployment_queries"] == 0


# ------------------------------------------------------------------------------------------------ item 5: schedule
FIRST_AND_LAST = """
    import torch

    def _logp(w, candidates, ref_logp):
        x, ref = torch.as_tensor(candidates, dtype=torch.float64), torch.as_tensor(ref_logp, dtype=torch.float64)
        return torch.log_softmax(ref + x @ w, dim=-1)

    class Agent:
        '''The example REINFORCE agent, reporting only its first and last checkpoints.'''
        def policy(self, candidates, ref_logp):
            return _logp(self.w.detach(), candidates, ref_logp)

        def fit(self, task, budget, checkpoint):
            gen = torch.Generator().manual_seed(0)
            self.w = torch.zeros(task.d, dtype=torch.float64, requires_grad=True)
            opt = torch.optim.Adam([self.w], lr=0.05)
            n_updates = budget.proxy_queries // 256
            checkpoint(0, self._frozen())
            for update in range(1, n_updates + 1):
                cand, ref = task.sample_contexts(256, generator=gen)
                logp = _logp(self.w, cand, ref)
                rows = torch.arange(256)
                a = torch.multinomial(logp.detach().exp(), 1, generator=gen).squeeze(1)
                reward = task.proxy_reward(cand[rows, a]).double() - task.beta * (logp.detach() - ref.double())[rows, a]
                loss = -((reward - reward.mean()) * logp[rows, a]).mean()
                opt.zero_grad(); loss.backward(); opt.step()
                if update == n_updates:
                    checkpoint(update * 256, self._frozen())

        def _frozen(self):
            w = self.w.detach().clone()
            return lambda candidates, ref_logp: _logp(w, candidates, ref_logp)

    def make_agent():
        return Agent()
"""


def test_reporting_only_the_first_and_last_checkpoints_fails_naming_the_missed_mark(world, tmp_path):
    with pytest.raises(SandboxFailure) as info:
        _run(world, _file(tmp_path, "first_last.py", FIRST_AND_LAST))
    assert info.value.reason == "checkpoint", info.value.detail
    assert "passed checkpoint mark 1 of 4 (1024 proxy queries)" in info.value.detail


def test_the_example_agent_is_scored_at_the_scorers_marks_whatever_steps_it_reports(world):
    out = _run(world, str(EXAMPLES_DIR / "reinforce_agent.py"))
    assert out.steps == [0, *BUDGET.checkpoint_marks()] == [0, 1024, 2048, 3072, 4096]
    metrics, rows = scoring.score_agent_run(world.judge, out.steps, out.logps)
    assert metrics["trajectory"] == 1.0 and [r.step for r in rows] == out.steps


def test_every_builtin_proxy_querying_baseline_meets_the_schedule(world):
    """The built-in agents that query the proxy include the scorer's marks in their checkpoint points."""
    for name in ("reinforce", "rloo", "grpo", "ppo"):
        out = run_agent(load_submission(name, config={"device": "cpu"}), world.task, BUDGET,
                        world.judge.eval_candidates, world.judge.eval_ref_logp, Limits(wall_time=120, memory_mb=2048))
        assert out.steps[0] == 0 and set(BUDGET.checkpoint_marks()) - {4096} <= set(out.steps), (name, out.steps)


def test_training_free_runs_get_the_scorers_path_or_na_never_zero_percent(tmp_path):
    tilt_file = _file(tmp_path, "my_tilt.py", """
        from tiltenv import metrics as M
        class Agent:
            def fit(self, task, budget, checkpoint):
                self.task = task
            def policy(self, candidates, ref_logp):
                return M.tilt_logp(ref_logp, self.task.proxy_reward(candidates, count=False), self.task.beta)
        def make_agent():
            return Agent()
    """)
    one_shot = _file(tmp_path, "one_shot.py", """
        import torch
        class Agent:  # spends its whole budget in one query before the first mark: only 2 points
            def fit(self, task, budget, checkpoint):
                checkpoint(0, self)
                cand, _ = task.sample_contexts(budget.proxy_queries // task.K, seed=0)
                task.proxy_reward(cand)
            def policy(self, candidates, ref_logp):
                return torch.as_tensor(ref_logp)
        def make_agent():
            return Agent()
    """)
    subs = [load_submission("tilt"), load_submission("best_of_n"), load_submission("dpo"), load_submission(tilt_file),
            load_submission("reinforce"), load_submission(one_shot)]
    store = Store(f"sqlite:///{tmp_path / 'b.db'}")
    res = score(subs, SUITE, store=store, limits=LIMITS, progress=False)
    assert res.failed == 0
    runs = store.runs(suite="traj", version=1, split="dev").set_index("submission")
    assert runs.loc["tilt", "trajectory"] == 2 and runs.loc["best_of_n", "trajectory"] == 2
    assert runs.loc["reinforce", "trajectory"] == 1
    assert runs.loc["one_shot", "proxy_queries"] == 4096
    for name in ("dpo", "my_tilt", "one_shot"):  # no path the scorer can define, or no trajectory: n/a
        assert runs.loc[name, "trajectory"] == 0 and math.isnan(runs.loc[name, "overoptimized"])
    for name in ("tilt", "best_of_n", "reinforce"):
        assert runs.loc[name, "overoptimized"] in (0.0, 1.0)
    b = scoring.board(store.runs(suite="traj", version=1, split="dev"), n_boot=50).set_index("submission")
    assert b.loc["dpo", "overoptimization_runs"] == 0 and math.isnan(b.loc["dpo", "overoptimization_rate"])
    assert b.loc["tilt", "overoptimization_runs"] == 1


def test_the_tilt_on_the_smoke_hump_is_overoptimized_along_its_own_path():
    """The issue's case: the tilt's hump gold is far past its own path's peak, which "0%" hid."""
    spec = get_suite("smoke").runs("dev", tasks=["hump"])[0]
    world = world_of(spec)
    sub = load_submission("tilt")
    from baselines import Tilt, TiltConfig

    agent = Tilt(TiltConfig(device="cpu")).fit(world.task)
    lp = policy_logp(agent, world.judge.eval_candidates, world.judge.eval_ref_logp)
    m, _ = scoring.score_agent_run(world.judge, [0], lp, trajectory=False, path=scoring.scorer_path(sub, world.judge))
    assert m["trajectory"] == 2 and m["overoptimized"] == 1.0 and m["peak_gold"] > m["final_gold"]


# ------------------------------------------------------------------------------------------------ item 7: robustness
_AGENT = """
    import os, struct, sys, time
    import torch

    class Agent:
        def fit(self, task, budget, checkpoint):
            cand, ref = task.sample_contexts(64, generator=torch.Generator().manual_seed(0))   # 1024 candidates
            checkpoint(0, self)
    {body}
        def policy(self, candidates, ref_logp):
            return torch.as_tensor(ref_logp)

    def make_agent():
        return Agent()
"""
_RM = """
    import torch

    class RM:
        def fit(self, data):
            return self
        def score(self, candidates):
            x = torch.as_tensor(candidates, dtype=torch.float64)
            return {expr}

    def make_reward_model():
        return RM()
"""
MALFORMED = {  # name: (source, expected status, expected reason)
    "duplicate_step": (_AGENT.format(body="""
            for _ in range(4):
                task.proxy_reward(cand)
                checkpoint(5, self); checkpoint(5, self)
    """), "ok", None),
    "huge_step": (_AGENT.format(body="""
            for _ in range(4):
                task.proxy_reward(cand)
                checkpoint(10**30, self)
    """), "ok", None),
    "deep_json_header": (_AGENT.format(body="""
            from leaderboard.sandbox import child
            hb = b"[" * 200_000 + b"]" * 200_000
            os.write(child.CHANNEL.wfd, struct.pack("<4sIQ", b"TLT1", len(hb), 0) + hb)
            time.sleep(30)
    """), "failed", "protocol"),
    "deep_directory": (_AGENT.format(body="""
            for _ in range(1200):
                os.mkdir("d"); os.chdir("d")
    """), "ok", None),
    "rm_constant": (_RM.format(expr="torch.zeros(x.shape[:-1], dtype=torch.float64)"), "failed", "invalid_output"),
    "rm_plus_minus_1e200": (_RM.format(expr="torch.sign(x[..., 0]) * 1e200"), "failed", "invalid_output"),
    "rm_1e200_linear": (_RM.format(expr="1e200 * x[..., 0]"), "failed", "invalid_output"),
    "rm_plus_1e200_one": (_RM.format(expr="(x[..., 0] > x[..., 1]).double() * 1e200"), "failed",
                          "invalid_output"),
}


def _malformed_subs(tmp_path):
    subs = [load_submission(_file(tmp_path, f"{name}.py", src)) for name, (src, _, _) in MALFORMED.items()]
    neighbours = [load_submission("tilt"), load_submission(str(EXAMPLES_DIR / "linear_reward_model.py"))]
    return subs, neighbours


def _check_malformed(store: Store) -> None:
    runs = pd.concat([store.runs(suite="traj", version=1, split="dev", track=t) for t in ("agent", "reward_model")])
    runs = runs.set_index("submission")
    for name, (_, status, reason) in MALFORMED.items():
        assert runs.loc[name, "status"] == status, (name, runs.loc[name, "detail"])
        if reason is not None:
            assert runs.loc[name, "reason"] == reason, (name, runs.loc[name, "detail"])
    assert runs.loc["tilt", "status"] == "ok" and runs.loc["linear_reward_model", "status"] == "ok"
    ck = store.checkpoints(suite="traj", version=1, split="dev")
    assert ck.loc[ck.submission == "huge_step", "step"].tolist() == [0, 1024, 2048, 3072, 4096]
    assert ck.loc[ck.submission == "duplicate_step", "step"].tolist() == [0, 1024, 2048, 3072, 4096]


@pytest.mark.parametrize("backend", ["serial", "pool"])
def test_malformed_outputs_fail_their_run_and_the_neighbours_are_stored(tmp_path, backend):
    subs, neighbours = _malformed_subs(tmp_path)
    store = Store(f"sqlite:///{tmp_path / 'b.db'}")
    # the bad runs first, the neighbours last: nothing before them may stop the scoring
    res = score(subs + neighbours, SUITE, store=store, limits=LIMITS, progress=False, backend=backend, workers=2)
    assert res.scored == len(MALFORMED) + 2
    _check_malformed(store)


def test_an_exception_of_the_scorers_code_is_that_runs_scoring_failure(tmp_path, monkeypatch):
    """A bug of the scorer on one run's output (here: scoring raises on the tilt's run; the store refuses the
    best-of-n's result) fails that run with reason 'scoring' and its traceback; the neighbour is stored."""
    real_score, real_save = scoring.score_agent_run, Store.save

    def bad_score(judge, steps, logps, **kw):
        if kw.get("path") is not None and kw["path"].shape[0] == len(scoring.TILT_PATH_FACTORS) + 1:
            raise ZeroDivisionError("a bug of the scorer")
        return real_score(judge, steps, logps, **kw)

    def bad_save(self, result):
        if result.submission == "best_of_n" and result.ok:
            result.metrics["bad metric"] = "not a number"
        return real_save(self, result)

    monkeypatch.setattr(scoring, "score_agent_run", bad_score)
    monkeypatch.setattr(Store, "save", bad_save)
    store = Store(f"sqlite:///{tmp_path / 'b.db'}")
    res = score([load_submission("tilt"), load_submission("best_of_n"), load_submission("reinforce")], SUITE,
                store=store, limits=LIMITS, progress=False)
    assert (res.scored, res.failed) == (3, 2)
    runs = store.runs(suite="traj", version=1, split="dev").set_index("submission")
    assert runs.loc["tilt", "reason"] == "scoring" and "ZeroDivisionError: a bug of the scorer" in runs.loc["tilt", "detail"]
    assert "Traceback" in runs.loc["tilt", "detail"]
    assert runs.loc["best_of_n", "reason"] == "scoring" and "not a number" in runs.loc["best_of_n", "detail"]
    assert runs.loc["reinforce", "status"] == "ok"


def _score_one_raising_for_tilt(sub, spec, limits, device):
    """A pool worker whose result cannot come back for one run (module level: pickled by reference)."""
    from leaderboard import runner

    if sub.name == "tilt":
        raise MemoryError("the worker could not build this result")
    return runner.score_one(sub, spec, limits, device)


def test_the_pool_never_drops_a_finished_result(tmp_path, monkeypatch):
    """A future that raises (a worker's own failure, not the run's) becomes that run's 'scoring' failure; the
    other runs' results are stored."""
    from leaderboard import runner

    monkeypatch.setattr(runner, "score_one", _score_one_raising_for_tilt)
    store = Store(f"sqlite:///{tmp_path / 'b.db'}")
    res = score([load_submission("tilt"), load_submission("best_of_n"), load_submission("reinforce")], SUITE,
                store=store, limits=LIMITS, progress=False, backend="pool", workers=2)
    assert (res.scored, res.failed) == (3, 1)
    runs = store.runs(suite="traj", version=1, split="dev").set_index("submission")
    assert runs.loc["tilt", "reason"] == "scoring" and "MemoryError" in runs.loc["tilt", "detail"]
    assert (runs.loc[["best_of_n", "reinforce"], "status"] == "ok").all()


def test_the_deployment_cache_counts_duplicate_candidates_and_dtypes():
    """A candidate that appears twice among the evaluation candidates may be asked twice (not three times); one
    asked as float32 may not be asked again as float64; the answers are the proxy's on the whole array."""
    import types

    from leaderboard.sandbox.agent import _DeployCache

    def fail(reason, detail):
        raise SandboxFailure(reason, detail)

    cand = torch.arange(2 * 3 * 2, dtype=torch.float32).reshape(2, 3, 2)
    cand[1, 2] = cand[0, 0]  # a duplicate
    proxy = lambda x: x.sum(-1) * 10  # noqa: E731
    cache = _DeployCache(types.SimpleNamespace(fail=fail), None, cand)
    x = cand.numpy()
    np.testing.assert_array_equal(cache.serve("proxy", proxy, x[::-1].copy()), proxy(cand).numpy()[::-1])
    with pytest.raises(SandboxFailure, match="second time"):
        cache.serve("proxy", proxy, x[:1, :1].copy())
    cache.start(1)
    two = np.stack([x[0, 0], x[0, 0]])
    np.testing.assert_array_equal(cache.serve("proxy", proxy, two), [10.0, 10.0])  # its two copies
    with pytest.raises(SandboxFailure, match="second time"):
        cache.serve("proxy", proxy, x[0, :1].astype(np.float64))
    cache.start(2)
    with pytest.raises(SandboxFailure, match="not evaluated on"):
        cache.serve("proxy", proxy, x[0, :1] + 0.5)
    assert cache.served == 6 + 2
