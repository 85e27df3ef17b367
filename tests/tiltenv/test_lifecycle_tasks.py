"""Issue 12: the new task ids, their parameters in spec.kwargs, and clear errors for bad values."""

from __future__ import annotations

import gymnasium as gym
import pytest

import tiltenv
from tiltenv import TaskConfig, make_world

SMALL = dict(d=4, K=8, n_eval_contexts=64, n_norm_contexts=64)


@pytest.mark.parametrize("env_id", ["tiltenv/AIFeedback-v0", "tiltenv/Shift-v0", "tiltenv/ActiveLabels-v0"])
def test_new_ids_record_every_parameter(env_id):
    spec = gym.spec(env_id)
    fields = {f for f in TaskConfig.__dataclass_fields__}
    assert fields <= set(spec.kwargs)
    env = gym.make(env_id, **SMALL, n_labels=200)
    assert fields <= set(env.spec.kwargs)
    assert env.spec.kwargs["d"] == 4
    preset = tiltenv.TASKS[env_id.split("/")[1].removesuffix("-v0")][1]
    for k, v in preset.items():
        if k not in SMALL and k != "n_labels":
            assert env.spec.kwargs[k] == v


def test_ai_labels_cost_and_preferences():
    env = gym.make("tiltenv/AIFeedback-v0", **SMALL, n_labels=2000, ai_labeler_labels=100)
    cfg = env.unwrapped.config
    assert cfg.label_cost == pytest.approx(2.0) and cfg.labeler_cost == pytest.approx(100.0)
    assert len(env.unwrapped.task.preferences) == 2000
    assert TaskConfig(n_labels=30).label_cost == 30.0
    assert TaskConfig(n_labels=30, human_label_cost=2.5).label_cost == 75.0


@pytest.mark.parametrize("kwargs, match", [
    ({"ai_bias": 0.5}, r"ai_bias=0.5 only applies to AI labels; set label_kind='ai'"),
    ({"label_kind": "aii"}, r"label_kind must be one of \['pairwise', 'pointwise', 'ai'\] \(got 'aii'\). Did you mean 'ai'\?"),
    ({"shift_length_scale": 1.5}, r"shift_length_scale must be in \[0, 1\] \(got 1.5\)"),
    ({"shift_length_angle": -1}, r"shift_length_angle must be in \[0, 180\] \(got -1\)"),
    ({"ai_label_cost": -0.1}, r"ai_label_cost must be in \[0, inf\) \(got -0.1\)"),
    ({"label_budget": -3}, r"label_budget must be in \[0, inf\) \(got -3\)"),
    ({"ai_labeler_labels": 1}, r"ai_labeler_labels must be in \[2, inf\) \(got 1\)"),
    ({"label_cost_budget": 10, "n_labels": 20}, r"label_cost_budget=10 is exceeded: n_labels 20 × pairwise label cost 1 = 20; "
                                                 r"lower n_labels to at most 10"),
    ({"label_kind": "ai", "label_cost_budget": 1, "n_labels": 2000},
     r"n_labels 2000 × ai label cost 0.001 = 2; lower n_labels to at most 1000"),
])
def test_bad_parameters_get_clear_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TaskConfig(**kwargs)
    with pytest.raises(ValueError, match=match):
        gym.make("tiltenv/SingleIndex-v0", **kwargs)


def test_unknown_parameter_gets_closest_name():
    with pytest.raises(TypeError, match=r"unknown task parameter 'ai_bais'.* Did you mean 'ai_bias'\?"):
        gym.make("tiltenv/AIFeedback-v0", ai_bais=1.0)
    with pytest.raises(TypeError, match=r"ai_bias must be a real number \(got 'high', a string\)"):
        gym.make("tiltenv/AIFeedback-v0", ai_bias="high")


def test_new_fields_leave_existing_tasks_unchanged():
    """θ*, the labels and the proxy of a default task do not depend on the new (appended) streams and directions."""
    w = make_world(TaskConfig(**SMALL, n_labels=100))
    shifted = make_world(TaskConfig(**SMALL, n_labels=100, shift_length_scale=1.0, label_budget=5, ai_label_cost=0.5))
    assert (w.judge.theta == shifted.judge.theta).all()
    assert (w.task.preferences.label == shifted.task.preferences.label).all()
    assert (w.judge.eval_proxy == shifted.judge.eval_proxy).all()
