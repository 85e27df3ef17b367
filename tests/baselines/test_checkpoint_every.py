"""``TrainBudget.checkpoint_every``: a trajectory read at every update, not only at log-spaced points."""

from __future__ import annotations

import pytest
from baseline_helpers import Arms

from baselines import RLOO, TrainBudget
from baselines.base import Checkpointer


def test_checkpointer_every_n_calls_adds_to_the_log_spaced_points():
    seen = []
    ck = Checkpointer(lambda s, p: seen.append(s), [10], every=2)
    ck.start(lambda: None)
    for step in (1, 2, 3, 4, 5, 10, 11):
        ck(step, lambda: None)
    ck.finish(11, lambda: None)
    # every 2nd call (steps 2, 4, 11), the point 10, and the initial policy; the final step is not repeated
    assert seen == [0, 2, 4, 10, 11]


@pytest.mark.parametrize("every", [1, 3])
def test_policy_gradient_checkpoints_at_every_update(every):
    arms = Arms()
    steps = []
    agent = RLOO(batch_size=4, num_generations=2, device="cpu")
    per_update = 4 * 2
    agent.fit(arms.task, TrainBudget(proxy_queries=per_update * 30, n_checkpoints=2, checkpoint_every=every),
              checkpoint=lambda step, policy: steps.append(step))
    updates = [h["step"] for h in agent.history]
    assert len(updates) == 30
    assert set(updates[every - 1::every]) <= set(steps)  # one snapshot per `every` updates
    assert steps[0] == 0 and steps[-1] == updates[-1] and steps == sorted(set(steps))
    assert len(steps) >= 1 + 30 // every


def test_checkpoint_every_is_validated():
    with pytest.raises(ValueError, match="checkpoint_every"):
        TrainBudget(checkpoint_every=-1)
    assert TrainBudget().checkpoint_every == 0  # default: log-spaced points only (unchanged behaviour)
