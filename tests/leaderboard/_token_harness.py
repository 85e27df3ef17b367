"""The shared harness of the token-board tests (test_tokens_board.py, test_tokens_attacks.py): a tiny token world,
its run spec, one sandboxed run of a submission on it, and the submission template whose fit checkpoints a
sequence policy before and after spending some proxy queries."""

from __future__ import annotations

import shutil

from baselines import TrainBudget
from leaderboard.sandbox import run_agent
from leaderboard.spec import Limits, RunSpec

V, L = 3, 3
KW = {"V": V, "L": L, "n_labels": 200, "n_eval_contexts": 8, "n_norm_contexts": 8, "link": "hump", "beta": 0.1}
BUDGET = TrainBudget(proxy_queries=1024, n_checkpoints=4)
TRUSTED = Limits(wall_time=60, memory_mb=2048, sandbox="trusted")
JAIL_OK = shutil.which("bwrap") is not None


def spec(task_id="tiltenv/Tokens-v0", kwargs=None, key="tok", split="dev", queries=1024) -> RunSpec:
    return RunSpec("t", 1, split, key, task_id, dict(KW if kwargs is None else kwargs), 0, seed=5,
                   proxy_queries=queries, n_checkpoints=4)


def run(world, sub, limits=TRUSTED, budget=BUDGET):
    j = world.judge
    return run_agent(sub, world.task, budget, lambda: j.eval_candidates, j.eval_ref_logp, limits,
                     eval_prompts=j.eval_prompts)


# A submission whose checkpoints are sequence policies. {policy} defines class Pol(torch.nn.Module) (from the public
# task); fit checkpoints it before and after spending {queries} proxy queries. `_child` lets an attack speak the
# channel itself.
AGENT = '''
import time
import torch
from leaderboard.sandbox import child as _child
from tiltenv.worlds.tokens import ARModel

{policy}

class Agent:
    def fit(self, task, budget, checkpoint):
        self.model = Pol(task)
        checkpoint(0, self.model)
        p = task.sample_prompts(4, seed=0)
        y = torch.zeros((4, task.L), dtype=torch.int64)
        for _ in range({queries}):
            task.reward(p, y)
        checkpoint(0, self.model)

def make_agent():
    return Agent()
'''
