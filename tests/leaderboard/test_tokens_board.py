"""Token tasks on the board (issue 20, item 6): sequence policies scored by a scorer that expands the prefix tree on
its side over the channel; every attack of a sequence submission is the run's failure (never the scoring's); the
token baselines are built-in entries; bandit baselines run on the bandit view; token baselines on bandit tasks are
not applicable, listed and unranked."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest
import torch

from leaderboard.runner import score, score_one, world_of
from leaderboard.scoring import board
from leaderboard.spec import Limits, SandboxFailure
from leaderboard.store import Store
from leaderboard.submission import load_submission
from leaderboard.suites import Suite, SuiteEntry, get_suite
from tiltenv.worlds.tokens import ARModel, tree_logp
from tiltenv.worlds.tokens.tree import expand_tree

from _token_harness import AGENT, JAIL_OK, KW, L, TRUSTED, V, run, spec  # tests/leaderboard/_token_harness.py


@pytest.fixture(scope="module")
def world():
    return world_of(spec())


GOOD = '''
class Pol(torch.nn.Module):
    def __init__(self, task):
        super().__init__()
        self.task, self.V = task, task.V
        self.net = ARModel.draw(task.V, 8, 1.5, 7)
    def initial_state(self, prompts):
        return self.net.initial_state(prompts)
    def next_logits(self, state):
        {next}
    def advance(self, state, tokens):
        return self.net.advance(state, tokens)
'''


def agent_file(tmp_path, next_body="return self.net.next_logits(state)", policy=None, queries=0, name="agent.py"):
    pol = policy if policy is not None else GOOD.replace("{next}", next_body)
    path = tmp_path / name
    path.write_text(AGENT.format(policy=textwrap.dedent(pol), queries=queries))
    return str(path)


@pytest.mark.parametrize("sandbox", ["trusted"] + (["jail"] if JAIL_OK else []))
def test_scorer_tree_expansion_equals_tree_logp_in_process(world, tmp_path, sandbox):
    """The scorer's expansion over the channel (jailed or not) equals tree_logp of the same policy in-process."""
    out = run(world, load_submission(agent_file(tmp_path)), Limits(wall_time=60, memory_mb=2048, sandbox=sandbox))
    want = tree_logp(ARModel.draw(V, 8, 1.5, 7), world.judge.eval_prompts, L).numpy()
    assert out.logps.shape == (1, 8, V**L) and out.deploy_queries == 0
    assert np.abs(out.logps[-1] - want).max() <= 1e-12


def test_a_stateless_next_logp_policy_is_expanded_too(world, tmp_path):
    """next_logp(prompts, prefix) (a PrefixPolicy-like submission) gets the same expansion."""
    pol = '''
    class Pol(torch.nn.Module):
        def __init__(self, task):
            super().__init__()
            self.net = ARModel.draw(task.V, 8, 1.5, 7)
        def next_logp(self, prompts, prefix):
            s = self.net.initial_state(prompts)
            for t in range(prefix.shape[1]):
                s = self.net.advance(s, prefix[:, t])
            return torch.log_softmax(self.net.next_logits(s).double(), -1)
    '''
    out = run(world, load_submission(agent_file(tmp_path, policy=pol)))
    want = tree_logp(ARModel.draw(V, 8, 1.5, 7), world.judge.eval_prompts, L).numpy()
    assert np.abs(out.logps[-1] - want).max() <= 1e-12


# Each attack: (next_logits body or a whole policy, reason, words of the stored detail).
ATTACKS = {
    "unnormalized_logits": ('''
        class Pol(torch.nn.Module):
            def __init__(self, task):
                super().__init__()
                self.net = ARModel.draw(task.V, 8, 1.5, 7)
            def next_logp(self, prompts, prefix):
                s = self.net.initial_state(prompts)
                for t in range(prefix.shape[1]):
                    s = self.net.advance(s, prefix[:, t])
                return self.net.next_logits(s)
        ''', "invalid_output", "not normalized log-probabilities"),
    "nan_at_one_prefix": ("x = self.net.next_logits(state).clone()\n"
                          "        if x.shape[0] == 8 * 9: x[41, 1] = float('nan')\n"
                          "        return x", "invalid_output", "NaN value(s) (first at prefix 41,"),
    "wrong_V": ("return torch.zeros((state.shape[0], self.V + 1))", "invalid_output", "expected (N prefixes, V) = (8, 3)"),
    "other_shape_on_last_level": ("x = self.net.next_logits(state)\n"
                                  "        return x[:-1] if x.shape[0] == 8 * 9 else x", "invalid_output",
                                  "level 2 (72 prefixes of 2 tokens) returned shape (71, 3)"),
    "proxy_beyond_deployment": ("self.task.proxy(torch.randn(5, self.task.d))\n"
                                "        return self.net.next_logits(state)", "budget",
                                "a candidate it is not evaluated on"),
    "gigantic_answer": ("import os, json, struct\n"
                        "        from leaderboard.sandbox import child\n"
                        "        h = json.dumps({'op': 'next_logp', 'index': 0, 'level': 0, "
                        "'arrays': [{'dtype': '<f8', 'shape': [2**37, 3]}]}).encode()\n"
                        "        os.write(child.CHANNEL.wfd, struct.pack('<4sIQ', b'TLT1', len(h), 3 * 2**40) + h)\n"
                        "        time.sleep(30)", "invalid_output", "returned shape (137438953472, 3)"),
    "too_slow": ("time.sleep(3600)", "timeout", ""),
    "int_answer": ('''
        class Pol(torch.nn.Module):
            def __init__(self, task):
                super().__init__()
            def next_logp(self, prompts, prefix):
                return torch.zeros((prompts.shape[0], 3), dtype=torch.int64)
        ''', "invalid_output", "dtype int64"),
}


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_sequence_attacks_fail_the_run_with_their_reason(world, tmp_path, attack):
    body, reason, words = ATTACKS[attack]
    path = agent_file(tmp_path, policy=body) if body.lstrip().startswith("class") else agent_file(tmp_path, body)
    limits = Limits(wall_time=5, memory_mb=2048, sandbox="trusted") if attack == "too_slow" else TRUSTED
    with pytest.raises(SandboxFailure) as info:
        run(world, load_submission(path), limits)
    assert info.value.reason == reason and words in info.value.detail, info.value.detail


def test_a_bandit_checkpoint_among_sequence_ones_is_invalid(world, tmp_path):
    path = tmp_path / "mixed.py"
    path.write_text(textwrap.dedent('''
        from tiltenv.worlds.tokens import ARModel
        class Agent:
            def fit(self, task, budget, checkpoint):
                checkpoint(0, lambda cand, ref: ref)          # a bandit policy first
                for _ in range(50):
                    task.reward(task.sample_prompts(4, seed=0), __import__("torch").zeros((4, task.L), dtype=__import__("torch").int64))
                self.model = ARModel.draw(task.V, 8, 1.0, 3)  # then a sequence policy as the final one
        def make_agent():
            return Agent()
    '''))
    with pytest.raises(SandboxFailure) as info:
        run(world, load_submission(str(path)))
    assert info.value.reason == "invalid_output" and "not a sequence policy" in info.value.detail


def test_attacks_are_stored_failures_beside_an_intact_neighbour(tmp_path):
    """Scored by `score`: each attack is its run's stored failure; the good neighbour's run is stored intact."""
    suite = Suite("tok-test", 1, (SuiteEntry("tok", "tiltenv/Tokens-v0", dict(KW), 1024, 4),))
    good = load_submission(agent_file(tmp_path, queries=40, name="good.py"))
    bad = [load_submission(agent_file(tmp_path, ATTACKS[a][0], name=f"{a}.py"))
           for a in ("nan_at_one_prefix", "wrong_V", "proxy_beyond_deployment")]
    st = Store("sqlite://")
    summary = score([bad[0], good, *bad[1:]], suite, store=st, limits=TRUSTED, progress=False)
    assert summary.scored == 4 and summary.failed == 3
    runs = st.runs(suite="tok-test", version=1, split="dev")
    by = dict(zip(runs["submission"], zip(runs["status"], runs["reason"])))
    assert by["good"][0] == "ok"
    assert [by[s.name] for s in bad] == [("failed", "invalid_output"), ("failed", "invalid_output"), ("failed", "budget")]
    ok = runs[runs["submission"] == "good"].iloc[0]
    assert ok["proxy_queries"] == 160 and np.isfinite(ok["normalized_score"])


@pytest.mark.parametrize("sandbox", ["trusted"] + (["jail"] if JAIL_OK else []))
def test_a_token_baseline_end_to_end_and_deterministic(sandbox):
    """token_rloo scored by score_one, twice: ok, a trajectory at the scorer's marks, bit-identical metrics."""
    limits = Limits(wall_time=120, memory_mb=2048, sandbox=sandbox)
    sub = load_submission("token_rloo", config={"batch_size": 8})
    a, b = (score_one(sub, spec(), limits) for _ in range(2))
    assert a.status == "ok", a.detail
    assert [c.step for c in a.checkpoints] == [0, 256, 512, 768, 1024] and a.proxy_queries == 1024
    assert a.metrics["trajectory"] == 1.0 and a.sandbox == sandbox
    assert a.metrics.keys() == b.metrics.keys()
    assert all(x == b.metrics[k] or (np.isnan(x) and np.isnan(b.metrics[k])) for k, x in a.metrics.items())


def test_token_best_of_n_is_the_exact_law_and_bandit_baselines_use_the_bandit_view(world):
    """token_best_of_n deploys the judge's exact best-of-n law (through the deployment cache); the bandit best_of_n
    on the bandit view gives the same law; a bandit RLOO runs there too."""
    from tiltenv.worlds.scoring import metrics_of_logp

    j = world.judge

    exact = metrics_of_logp(j.best_of_n_logp(16), j)
    tok = score_one(load_submission("token_best_of_n"), spec(), TRUSTED)
    ban = score_one(load_submission("best_of_n", config={"n": 16}), spec(), TRUSTED)
    assert tok.status == ban.status == "ok", (tok.detail, ban.detail)
    assert tok.deployment_queries == 8 * V**L and tok.proxy_queries == 0
    assert abs(tok.metrics["gold_value"] - exact["gold_value"]) < 1e-9
    assert abs(ban.metrics["gold_value"] - exact["gold_value"]) < 1e-9
    rloo = score_one(load_submission("rloo"), spec(), TRUSTED)
    assert rloo.status == "ok" and rloo.proxy_queries > 0, rloo.detail


def test_token_baselines_are_not_applicable_to_bandit_tasks_and_unranked():
    hump = spec("tiltenv/Hump-v0", {"n_eval_contexts": 16}, key="hump")
    res = score_one(load_submission("token_rloo"), hump, TRUSTED)
    assert res.status == "failed" and res.reason == "not_applicable"
    assert "token-level agent" in res.detail and "tiltenv/Hump-v0" in res.detail
    import pandas as pd

    rows = []
    for name, key, status, reason, score_ in (("token_rloo", "hump", "failed", "not_applicable", np.nan),
                                              ("token_rloo", "tok", "ok", None, 0.5),
                                              ("rloo", "hump", "ok", None, 0.2), ("rloo", "tok", "ok", None, 0.1)):
        rows.append({"submission": name, "code_hash": name, "task_key": key, "seed_index": 0, "status": status,
                     "reason": reason, "normalized_score": score_})
    b = board(pd.DataFrame(rows), n_boot=50).set_index("submission")
    assert b.loc["rloo", "rank"] == 1 and pd.isna(b.loc["token_rloo", "rank"])
    assert b.loc["token_rloo", "not_applicable"] == 1 and b.loc["token_rloo", "failed"] == 0
    assert b.loc["token_rloo", "iqm"] == 0.5  # its token task only, the bandit task neither 0 nor counted
    from leaderboard.cli import _board_view, _by_task_view
    from leaderboard.scoring import board_by_task

    view, _ = _board_view(b.reset_index(), "agent")
    row = view.set_index("submission").loc["token_rloo"]
    assert row["rank"] == "—" and row["runs"] == "2 (1 not applicable)" and row["failed"] == 0
    cells = _by_task_view(board_by_task(pd.DataFrame(rows), n_boot=50), b.reset_index()).set_index("submission")
    assert cells.loc["token_rloo", "hump"] == "not applicable" and cells.loc["rloo", "hump"].startswith("0.200")


def test_the_token_entry_is_in_quick_and_full_not_smoke():
    for name, K in (("quick", 512), ("full", 512)):
        (e,) = [e for e in get_suite(name).entries if e.task_id == "tiltenv/Tokens-v0"]
        assert e.kwargs["V"] ** e.kwargs["L"] == K
    assert all(e.task_id != "tiltenv/Tokens-v0" for e in get_suite("smoke").entries)
    # the reward-model track leaves the token task out (its scoring over a token world is not built)
    assert "tokens" not in {r.task_key for r in get_suite("quick").runs("dev", track="reward_model", n_seeds=1)}


def test_memory_is_checked_before_the_tree_is_allocated():
    prompts = torch.zeros((2**22, 1), dtype=torch.int64)
    with pytest.raises(ValueError) as info:
        expand_tree(lambda *a: None, prompts, 16, 5, what="the scorer's expansion")
    msg = str(info.value)
    assert "\n" not in msg and "C 4194304" in msg and "16^5" in msg, msg


def test_token_registry_names_configs_and_presets():
    import dataclasses

    from baselines import ALL_BASELINES, BASELINES, TOKEN_BASELINES, get_baseline

    assert set(TOKEN_BASELINES) == {"token_reinforce", "token_rloo", "token_grpo", "token_ppo", "token_dpo",
                                    "token_best_of_n"}
    assert not set(TOKEN_BASELINES) & set(BASELINES) and ALL_BASELINES == {**BASELINES, **TOKEN_BASELINES}
    for name, (agent_cls, config_cls) in TOKEN_BASELINES.items():
        assert agent_cls.name == name and agent_cls.config_class is config_cls and agent_cls.task_kinds == ("tokens",)
        assert all(f.metadata.get("help") for f in dataclasses.fields(config_cls)), name
        cfg = config_cls()
        if name.removeprefix("token_") in ("reinforce", "rloo", "grpo", "ppo"):
            assert cfg.algorithm == name.removeprefix("token_")
    assert get_baseline("token_grpo")[1]().kl_penalty == "loss"
    with pytest.raises(ValueError, match="Did you mean 'token_rloo'"):
        get_baseline("token_rlo")


def test_the_token_entry_gets_the_hidden_gold_family_like_every_entry():
    """On the test split the token entry gets gold_family=True exactly when the task's config has the field (the same
    rule as every entry: leaderboard.suites.has_gold_family), and the dev split keeps the public config."""
    from leaderboard.suites import has_gold_family

    quick = get_suite("quick")
    (test,) = [r for r in quick.runs("test", salt=b"s" * 32, code_hash="a" * 64, tasks=["tokens"], n_seeds=1)]
    (dev,) = quick.runs("dev", tasks=["tokens"], n_seeds=1)
    assert ("gold_family" in test.task_kwargs) == has_gold_family("tiltenv/Tokens-v0")
    assert "gold_family" not in dev.task_kwargs and dev.task_kwargs["L"] == 3


def test_the_scorer_checks_the_checkpoints_memory_before_the_run_starts(world, tmp_path, monkeypatch):
    """(n_checkpoints + 2) × C × V^L float64 is checked before the run starts: a one-line error naming C, K, V and L."""
    import tiltenv._validation as val

    monkeypatch.setattr(val, "MAX_FOOTPRINT_BYTES", 8 * 6 * 8 * V**L - 1)  # one byte short of 6 checkpoints
    with pytest.raises(ValueError) as info:
        run(world, load_submission(agent_file(tmp_path)))
    msg = str(info.value)
    assert "\n" not in msg and "up to 6 checkpoints × C 8 × K 27 (V^L = 3^3) float64" in msg, msg
    monkeypatch.setattr(val, "MAX_FOOTPRINT_BYTES", 8 * 6 * 8 * V**L)
    assert run(world, load_submission(agent_file(tmp_path))).logps.shape == (1, 8, V**L)
