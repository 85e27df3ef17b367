"""Errors that read well: through gym.make, one numeric type rule, closest field names."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import tiltenv  # noqa: F401
from tiltenv import TaskConfig
from tiltenv.worlds.config import config_from_kwargs
from tiltenv._validation import ParameterTypeError, check_float, check_int

SMALL = dict(d=4, K=8, n_labels=300, n_eval_contexts=64, n_norm_contexts=64)


@pytest.mark.parametrize("kwargs, match", [
    ({"bta": 0.1}, r"unknown task parameter 'bta'. Did you mean 'beta'\?"),
    ({"beta": "0.1"}, r"beta must be a real number \(got '0.1', a string\)"),
    ({"d": "16"}, r"d must be an integer \(got '16', a string\)"),
    ({"proxy_kwargs": [1, 2]}, "proxy_kwargs must be a mapping"),
])
def test_type_errors_through_gym_make_have_no_gymnasium_suffix(kwargs, match):
    with pytest.raises(TypeError, match=match) as err:
        gym.make("tiltenv/SingleIndex-v0", **{**SMALL, **kwargs})
    assert "was raised from the environment creator" not in str(err.value)
    with pytest.raises(TypeError) as direct:  # reads exactly as the config's own error (no Gymnasium suffix)
        config_from_kwargs({**SMALL, **kwargs})
    assert str(err.value) == str(direct.value)
    with pytest.raises(TypeError, match="final_info must be True or False") as err:
        gym.make_vec("tiltenv/SingleIndex-v0", num_envs=2, final_info="yes", **SMALL)
    assert "was raised from the environment creator" not in str(err.value)


def test_one_numeric_type_rule_for_every_field():
    # issue 9: beta="0.1" was accepted while d=16.0 was rejected
    assert TaskConfig(d=16.0, K=np.int64(8), beta=np.float32(0.5)).d == 16 and isinstance(TaskConfig(d=16.0).d, int)
    for field, value in [("beta", "0.1"), ("d", "16"), ("beta", True), ("d", True), ("beta", None)]:
        with pytest.raises(ParameterTypeError, match=f"{field} must be"):
            TaskConfig(**{field: value})
    with pytest.raises(ValueError, match=r"d must be an integer \(got 16.5, not a whole number\)"):
        TaskConfig(d=16.5)
    assert check_int("n", 3.0) == 3 and check_float("x", 3) == 3.0
    from baselines import make_agent

    assert make_agent("reinforce", batch_size=64.0).config.batch_size == 64
    with pytest.raises(TypeError, match="learning_rate must be a real number"):
        make_agent("reinforce", learning_rate="0.1")


def test_make_agent_typos_get_the_closest_field():
    from baselines import make_agent

    with pytest.raises(TypeError, match="Did you mean 'learning_rate'"):
        make_agent("reinforce", learning_rat=0.1)
