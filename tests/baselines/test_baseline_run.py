"""Run one: baselines.run.train, its report, override parsing, scripts/train.py."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from baseline_helpers import SMALL

from baselines import BASELINES, GRPOConfig, TrainBudget
from baselines.run import TRAJECTORY_METRICS, format_result, parse_overrides, train

ROOT = Path(__file__).resolve().parents[2]


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_train_scores_final_policy_and_trajectory():
    res = train("grpo", "tiltenv/SingleIndex-v0", overrides=["scale_rewards=none", "device=cpu"], env_kwargs=SMALL,
                budget=TrainBudget(proxy_queries=8192, n_checkpoints=5), seed=2)
    assert res.config.scale_rewards == "none" and res.config.seed == 2
    assert res.proxy_queries == 8192 and res.fit_time > 0
    assert res.trajectory[0]["step"] == 0 and res.trajectory[0]["kl"] == pytest.approx(0.0, abs=1e-9)
    assert res.trajectory[-1]["step"] == 8192
    for row in res.trajectory:
        assert set(TRAJECTORY_METRICS) <= set(row)
    last = res.trajectory[-1]
    for key in TRAJECTORY_METRICS:  # the last checkpoint is the final policy
        assert last[key] == pytest.approx(res.metrics[key], rel=1e-6, abs=1e-9)
    assert res.overoptimization is not None
    text = format_result(res)
    for needle in ("gold value", "proxy value", "KL", "value gap", "normalized score", "trajectory", "8192"):
        assert needle in text


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_last_trajectory_row_is_the_summary_for_every_baseline(name):
    # issue 9: sb3_ppo printed gold 0.0580 / KL 1.7744 in its summary but 0.0519 / 1.3516 in its last row
    over = ["device=cpu"] + (["n_envs=4", "n_steps=16", "batch_size=32"] if name == "sb3_ppo" else [])
    res = train(name, "tiltenv/SingleIndex-v0", overrides=over, env_kwargs=SMALL,
                budget=TrainBudget(proxy_queries=4096, n_checkpoints=4))
    for key in TRAJECTORY_METRICS:
        assert res.trajectory[-1][key] == pytest.approx(res.metrics[key], rel=1e-6, abs=1e-9), key


def test_parse_overrides_types_and_errors():
    kw = parse_overrides(GRPOConfig, ["hidden_sizes=64,64", "beta=none", "scale_rewards=false", "policy=mlp",
                                      "learning_rate=1e-2"])
    assert kw == {"hidden_sizes": (64, 64), "beta": None, "scale_rewards": False, "policy": "mlp", "learning_rate": 0.01}
    assert GRPOConfig(**kw).scale_rewards == "none"
    with pytest.raises(ValueError, match="Did you mean 'learning_rate'"):
        parse_overrides(GRPOConfig, ["learning_rat=0.1"])
    with pytest.raises(ValueError, match="key=value"):
        parse_overrides(GRPOConfig, ["learning_rate"])
    with pytest.raises(ValueError, match="baseline must be one of"):
        train("reinfroce")


def test_train_script_prints_report_and_json(capsys):
    script = load_script("train")
    task_args = [a for k, v in SMALL.items() for a in ("--task", f"{k}={v}")]
    assert script.main(["reinforce", *task_args, "--queries", "4096", "--checkpoints", "4", "--set", "device=cpu"]) == 0
    out = capsys.readouterr().out
    assert "gold value" in out and "trajectory" in out
    assert script.main(["tilt", "--env", "tiltenv/Hump-v0", *task_args, "--json", "--set", "beta=0.1"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["baseline"] == "tilt" and data["metrics"]["kl"] > 0 and len(data["trajectory"]) == 1
    assert script.main(["--list"]) == 0
    assert "scale_rewards" in capsys.readouterr().out
    assert script.main(["reinforce", "--set", "optimiser=sgd"]) == 2
    assert "Did you mean 'optimizer'" in capsys.readouterr().err


def test_near_zero_normalized_score_explains_itself():
    # issue 9: default REINFORCE on Hump-v0 ends with "normalized score -0.0020" (gold 0.9308 from -0.0017,
    # KL 3.7381 at β = 0.25): it gained gold and paid it all back in β·KL.
    from baselines.run import interpret

    m = {"gold_value": 0.9308, "ref_gold_value": -0.0017, "kl": 3.7381, "beta": 0.25,
         "optimal_objective": 0.9937, "normalized_score": -0.0020}
    text = interpret(m)
    assert "gold gain +0.9325" in text and "β·KL 0.9345" in text and "went past the gold tilt" in text
    near_ref = dict(m, gold_value=0.0, kl=0.001, normalized_score=0.001)
    assert "close to π_ref" in interpret(near_ref) and "went past" not in interpret(near_ref)
    assert "went past" not in interpret(dict(m, kl=1.0, normalized_score=0.7))


def test_report_has_legend_rule_and_budget_notes(capsys):
    res = train("dpo", "tiltenv/SingleIndex-v0", overrides=["device=cpu", "num_train_epochs=1"], env_kwargs=SMALL,
                budget=TrainBudget(proxy_queries=1000, n_checkpoints=3))
    assert any("does not spend proxy queries" in n and "1000" in n for n in res.notes)
    text = format_result(res, explain=True)
    assert "columns: step" in text and "rule: OVEROPTIMIZED when" in text and "legend:" in text
    assert "note: dpo does not spend proxy queries" in text
    assert res.overoptimization.tol > 1e-3  # relative to the task's gold range, not 1e-6 of the curve
    res = train("reinforce", "tiltenv/SingleIndex-v0", overrides=["device=cpu"], env_kwargs=SMALL,
                budget=TrainBudget(proxy_queries=4096, n_checkpoints=3))
    assert res.notes == []
    from baselines.run import budget_notes

    assert "over the wall-time budget of 1 s" in budget_notes("reinforce", TrainBudget(wall_time=1.0), 10, 2.5)[0]
