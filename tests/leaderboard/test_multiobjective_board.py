"""Multi-objective tasks on the leaderboard: sandboxed runs carry per-dimension gold metrics, the board shows
per-dimension columns, the reward-model track leaves the tasks out."""

from __future__ import annotations

import math

from leaderboard.runner import score
from leaderboard.scoring import board
from leaderboard.spec import Limits
from leaderboard.store import Store
from leaderboard.submission import load_submission
from leaderboard.suites import Suite, SuiteEntry, get_suite

TINY = dict(d=6, K=16, n_labels=300, n_eval_contexts=128, n_norm_contexts=256)
SUITE = Suite(
    "tiny-mo", 1,
    (SuiteEntry("hh", "tiltenv/HelpfulHarmless-v0", {**TINY, "beta": 0.1}, 4096, 4),
     SuiteEntry("ctx", "tiltenv/MultiObjective-v0", {**TINY, "n_objectives": 3, "weight_mode": "context",
                                                     "cosines": [-0.3, 0.2, -0.4],
                                                     "weights": [[0.6, 0.2, 0.2], [0.1, 0.1, 0.8]],
                                                     "type_probs": [0.5, 0.5], "beta": 0.1}, 4096, 4)),
    n_dev_seeds=1, n_test_seeds=1,
)


def test_multi_objective_runs_have_per_dimension_metrics_and_board_columns(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'b.db'}")
    subs = [load_submission("tilt"), load_submission("baselines.constrained:ConstrainedPG")]
    out = score(subs, SUITE, store=store, limits=Limits(wall_time=120, memory_mb=4096, threads=1), progress=False)
    assert (out.scored, out.failed) == (4, 0)
    runs = store.runs(suite="tiny-mo", version=1, split="dev")
    hh = runs[runs.task_key == "hh"]
    assert hh[["gold_value_dim0", "gold_value_dim1", "gold_gain_dim1", "min_dim_gain"]].notna().all().all()
    ctx = runs[runs.task_key == "ctx"]
    assert ctx["gold_gain_dim2"].notna().all() and hh["gold_gain_dim2"].isna().all()
    b = board(runs, n_boot=50)
    for col in ("gold_value_dim0", "gold_gain_dim2", "min_dim_gain", "dims_at_or_above_ref_rate"):
        assert col in b.columns and b[col].notna().all()
    # the gain columns average each dimension over the runs that have it
    row = b[b.submission == "tilt"].iloc[0]
    assert math.isclose(row["gold_gain_dim2"], float(ctx[ctx.submission == "tilt"]["gold_gain_dim2"].mean()))


def test_full_lists_the_multi_objective_tasks_and_the_reward_model_track_leaves_them_out():
    full = get_suite("full")
    ids = {e.task_id for e in full.entries}
    assert {"tiltenv/HelpfulHarmless-v0", "tiltenv/MultiObjective-v0"} <= ids and full.version >= 3  # v4: + tokens
    rm = {r.task_id for r in full.runs("dev", track="reward_model", n_seeds=1)}
    assert not rm & {"tiltenv/HelpfulHarmless-v0", "tiltenv/MultiObjective-v0"}


MO_AGENT = '''
import torch

class Agent:
    def fit(self, task, budget, checkpoint):
        # no per-dimension weights reached this process: the models are stubs of the scorer's
        assert sum(p.numel() for m in task.dim_proxies for p in m.parameters()) == 0
        x, ref = task.sample_contexts(8, seed=0)                       # 8 x 16 = 128 candidates
        r = task.dim_proxy_rewards(x, count=False)                      # counted by the scorer all the same
        assert r.shape == (8, 16, task.n_objectives)
        one = task.dim_proxies[1](x)                                    # each call counts its candidates
        assert torch.allclose(one.double(), r[..., 1].double())
        self.ref = None
        checkpoint(0, lambda c, lp: torch.as_tensor(lp))
        {extra}

    def policy(self, candidates, ref_logp):
        return torch.as_tensor(ref_logp)

def make_agent():
    return Agent()
'''


def test_per_dimension_models_stay_in_the_scorer_and_every_query_counts(tmp_path):
    import pytest
    import torch

    from baselines import TrainBudget
    from leaderboard.runner import world_of
    from leaderboard.sandbox import run_agent
    from leaderboard.spec import SandboxFailure

    world = world_of(SUITE.runs("dev")[0])
    lim = Limits(wall_time=120, memory_mb=4096, threads=1)
    good = tmp_path / "mo_agent.py"
    good.write_text(MO_AGENT.format(extra="pass"))
    out = run_agent(load_submission(str(good)), world.task, TrainBudget(proxy_queries=1000, n_checkpoints=2),
                    world.judge.eval_candidates, world.judge.eval_ref_logp, lim)
    assert out.proxy_queries == 2 * 128  # the stack once, one dimension once: 128 candidates each
    greedy = tmp_path / "mo_greedy.py"
    greedy.write_text(MO_AGENT.format(extra="task.dim_proxy_rewards(task.sample_contexts(64, seed=1)[0])"))
    with pytest.raises(SandboxFailure) as info:
        run_agent(load_submission(str(greedy)), world.task, TrainBudget(proxy_queries=1000, n_checkpoints=2),
                  world.judge.eval_candidates, world.judge.eval_ref_logp, lim)
    assert info.value.reason == "budget"
    assert torch.is_tensor(world.task.dim_proxies[0].state_dict().popitem()[1])  # the scorer's models are untouched
