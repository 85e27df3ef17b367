"""Adversarial submissions to the token entry (issue 20, item 6): for each promise the scorer makes about sequence
policies, the submission that tries to break it. A run that speaks the channel itself (a submission's code holds the
child's channel, ``leaderboard.sandbox.child.CHANNEL``) is as much an attacker as one whose policy misbehaves."""

from __future__ import annotations

import textwrap

import numpy as np
import pandas as pd
import pytest

from leaderboard.runner import score, score_one, world_of
from leaderboard.scoring import board, score_agent_run
from leaderboard.spec import Limits, SandboxFailure
from leaderboard.store import Store
from leaderboard.submission import load_submission
from leaderboard.suites import Suite, SuiteEntry
from tiltenv.worlds.tokens import ARModel, tree_logp

from _token_harness import AGENT, JAIL_OK, KW, L, TRUSTED, V, run, spec  # tests/leaderboard/_token_harness.py

HUMP = {"n_eval_contexts": 16, "n_labels": 200}


@pytest.fixture(scope="module")
def world():
    return world_of(spec())


# the honest next-token law of a GRU drawn from seed 7; {attack} runs first and may return or send frames itself
HONEST = '''
class Pol(torch.nn.Module):
    def __init__(self, task):
        super().__init__()
        self.task, self.V = task, task.V
        self.net = ARModel.draw(task.V, 8, 1.5, 7)
    def honest(self, prompts, prefix):
        s = self.net.initial_state(prompts)
        for t in range(prefix.shape[1]):
            s = self.net.advance(s, prefix[:, t])
        return torch.log_softmax(self.net.next_logits(s).double(), -1)
    def next_logp(self, prompts, prefix):
        out, level = self.honest(prompts, prefix), prefix.shape[1]
        {attack}
        return out
'''


def agent_file(tmp_path, attack="pass", policy=None, queries=0, name="agent.py"):
    pol = policy if policy is not None else HONEST.replace("{attack}", attack)
    path = tmp_path / name
    path.write_text(AGENT.format(policy=textwrap.dedent(pol), queries=queries))
    return str(path)


def honest_logp(world):
    return tree_logp(ARModel.draw(V, 8, 1.5, 7), world.judge.eval_prompts, L).numpy()


# ------------------------------------------------------------------------------------------ policies at the extremes


def test_a_deterministic_policy_is_scored_exactly_without_nan(world, tmp_path):
    """-inf for every token but one at every prefix: one response per prompt, KL = −log π_ref(y*) exactly, no NaN
    in any metric the board reads (0 · log 0 = 0 throughout)."""
    pol = '''
    class Pol(torch.nn.Module):
        def __init__(self, task):
            super().__init__()
            self.V = task.V
        def next_logp(self, prompts, prefix):
            out = torch.full((prompts.shape[0], self.V), float('-inf'), dtype=torch.float64)
            out[:, 1] = 0.0
            return out
    '''
    out = run(world, load_submission(agent_file(tmp_path, policy=pol, queries=40)))
    k = 1 * V**2 + 1 * V + 1  # the response (1, 1, 1)
    lp = out.logps[-1]
    assert (lp[:, k] == 0).all() and np.isneginf(np.delete(lp, k, axis=1)).all()
    metrics, rows = score_agent_run(world.judge, out.steps, out.logps, trajectory=False, path=None)
    ref = world.judge.eval_ref_logp.numpy()
    assert abs(metrics["kl"] + ref[:, k].mean()) < 1e-12
    assert abs(metrics["gold_value"] - world.judge.eval_gold.numpy()[:, k].mean()) < 1e-12
    assert metrics["reward_variance_policy"] == 0.0
    board_keys = ("gold_value", "proxy_value", "kl", "chi2", "objective", "value_gap", "normalized_score",
                  "kl_matched_gap", "reward_variance_policy", "proxy_gold_gap")
    assert all(np.isfinite(metrics[m]) for m in board_keys), {m: metrics[m] for m in board_keys}
    assert all(np.isfinite(r.kl) and np.isfinite(r.normalized_score) for r in rows)


@pytest.mark.parametrize("offset", [9e-4, -9e-4])
def test_the_normalization_tolerance_buys_nothing(world, tmp_path, offset):
    """Rows off by just under the 1e-3 tolerance at every prefix (L levels: e^{±0.0027} of mass if taken as
    given) are scored as the renormalized policy: the honest one to 1e-12, each prompt's mass 1 to 1e-12."""
    out = run(world, load_submission(agent_file(tmp_path, f"out = out + {offset!r}")))
    lp = out.logps[-1]
    assert np.abs(np.exp(lp).sum(1) - 1).max() < 1e-12
    assert np.abs(lp - honest_logp(world)).max() < 1e-12


# ------------------------------------------------------------------------------------------ speaking the channel


SEND = "_child.CHANNEL.send({header}, [out]); time.sleep(30)"

# Each attack: (code run inside next_logp, reason, words of the detail)
CHANNEL_ATTACKS = {
    # an answer naming the previous level (a stale answer replayed)
    "stale_level": ("if level == 1: " + SEND.format(header="{'op': 'next_logp', 'index': 0, 'level': 0}"),
                    "protocol", "expected the next-token log-probabilities of checkpoint 0 (step 0), level 1"),
    # an answer naming another checkpoint
    "stale_index": (SEND.format(header="{'op': 'next_logp', 'index': 1, 'level': level}"), "protocol",
                    "expected the next-token log-probabilities of checkpoint 0 (step 0), level 0"),
    # one answer too many: the extra frame is read as the next level's answer
    "extra_frame": ("if level == 0: _child.CHANNEL.send({'op': 'next_logp', 'index': 0, 'level': 0}, [out])",
                    "protocol", "level 1"),
    # a bandit answer (the (C, K) log-probabilities) in place of a next-token one
    "bandit_answer": (SEND.format(header="{'op': 'logp', 'index': 0}").replace(
        "[out]", "[torch.full((8, 27), -3 * float(torch.log(torch.tensor(3.0))), dtype=torch.float64)]"),
        "protocol", "got 'logp'"),
    # the end of the evaluation, announced by the run in the middle of it
    "early_done": ("_child.CHANNEL.send({'op': 'done'}); time.sleep(30)", "protocol", "got 'done'"),
    # a checkpoint frame at evaluation (a last-minute swap of the policy)
    "checkpoint_at_eval": ("_child.CHANNEL.send({'op': 'checkpoint'}); time.sleep(30)", "protocol",
                           "got 'checkpoint'"),
    # a per-dimension proxy request (a multi-objective task's) on a token task
    "dims_request": ("_child.CHANNEL.send({'op': 'proxy', 'model': 'dims'}, [torch.zeros((1, self.task.d))]); "
                     "time.sleep(30)", "protocol", "unknown model 'dims'"),
    # two arrays in one answer
    "two_arrays": (SEND.format(header="{'op': 'next_logp', 'index': 0, 'level': level}").replace("[out]", "[out, out]"),
                   "invalid_output", "must return one array"),
}


@pytest.mark.parametrize("attack", sorted(CHANNEL_ATTACKS))
def test_a_run_speaking_the_channel_out_of_turn_fails(world, tmp_path, attack):
    code, reason, words = CHANNEL_ATTACKS[attack]
    with pytest.raises(SandboxFailure) as info:
        run(world, load_submission(agent_file(tmp_path, code)))
    assert info.value.reason == reason and words in info.value.detail, info.value.detail


FIT_DONE = '''
import time
from leaderboard.sandbox import child as _child

class Agent:
    def fit(self, task, budget, checkpoint):
        checkpoint(0, lambda cand, ref: ref)
        _child.CHANNEL.send({header})
        time.sleep(30)
    def policy(self, cand, ref):
        return ref

def make_agent():
    return Agent()
'''


@pytest.mark.parametrize("task, header, words", [
    ("hump", "{'op': 'fit_done', 'policy': 'sequence'}", "this task takes bandit policies only"),
    ("tok", "{'op': 'fit_done', 'policy': 'table'}", "expected 'bandit' or 'sequence'"),
    ("tok", "{'op': 'fit_done', 'policy': ['sequence']}", "expected 'bandit' or 'sequence'"),
])
def test_a_run_cannot_claim_a_kind_of_policy_the_task_does_not_take(tmp_path, task, header, words):
    """The kind of policy is the run's claim (fit_done): sequence policies on a bandit task, or an unknown kind, fail
    the run (protocol) before anything is evaluated."""
    path = tmp_path / "claim.py"
    path.write_text(FIT_DONE.format(header=header))
    s = spec("tiltenv/Hump-v0", HUMP, key="hump") if task == "hump" else spec()
    res = score_one(load_submission(str(path)), s, TRUSTED)
    assert res.status == "failed" and res.reason == "protocol" and words in res.detail, res.detail


def test_a_run_that_claims_bandit_policies_cannot_answer_with_next_token_ones(world, tmp_path):
    """A run evaluated on the bandit view (it claimed bandit policies) answering the scorer's (C, K) request with a
    next-token frame fails (protocol): the kind is fixed once fit is done."""
    path = tmp_path / "swap.py"
    path.write_text(textwrap.dedent('''
        import torch
        from leaderboard.sandbox import child as _child
        class Agent:
            def fit(self, task, budget, checkpoint):
                checkpoint(0, self)
            def policy(self, cand, ref):
                _child.CHANNEL.send({'op': 'next_logp', 'index': 0, 'level': 0}, [ref.double()])
                import time; time.sleep(30)
        def make_agent():
            return Agent()
    '''))
    with pytest.raises(SandboxFailure) as info:
        run(world, load_submission(str(path)))
    assert info.value.reason == "protocol" and "expected checkpoint 0's log-probabilities" in info.value.detail


# ------------------------------------------------------------------------------------------ not applicable


NOT_APPLICABLE = '''
import torch
from leaderboard.sandbox import child as _child

class Agent:
    task_kinds = ("tokens",)          # a built-in token baseline's declaration: worth nothing in a file
    def fit(self, task, budget, checkpoint):
        if not hasattr(task, "sample_prompts"):   # a bandit task: try to leave it out of the scores
            _child.CHANNEL.send({"op": "error", "stage": "fit", "kind": "not_applicable", "type": "NotApplicable",
                                 "message": "not applicable", "traceback": ""})
            raise SystemExit(0)
        self.model = task.make_policy()   # π_ref on the token task
    def policy(self, cand, ref):
        return ref

def make_agent():
    return Agent()
'''


PI_REF = '''
class Agent:
    def fit(self, task, budget, checkpoint):
        pass
    def policy(self, cand, ref):
        return ref

def make_agent():
    return Agent()
'''


def test_a_submission_cannot_declare_itself_not_applicable(tmp_path):
    """Only the scorer decides not_applicable (a built-in baseline's task_kinds): a file that declares task_kinds
    and reports a 'not_applicable' error on the bandit task gets an ordinary failure there (error, π_ref's 0 in
    its IQM) and is ranked on both tasks, below an honest neighbour that is π_ref everywhere."""
    suite = Suite("na-test", 1, (SuiteEntry("hump", "tiltenv/Hump-v0", dict(HUMP), 1024, 4),
                                 SuiteEntry("tok", "tiltenv/Tokens-v0", dict(KW), 1024, 4)))
    path = tmp_path / "escape.py"
    path.write_text(NOT_APPLICABLE)
    st = Store("sqlite://")
    sub = load_submission(str(path))
    (tmp_path / "pi_ref.py").write_text(PI_REF)
    ref = load_submission(str(tmp_path / "pi_ref.py"))  # π_ref everywhere (the bandit view on the token task)
    score([sub, ref], suite, store=st, limits=TRUSTED, progress=False)
    runs = st.runs(suite="na-test", version=1, split="dev")
    mine = runs[runs["submission"] == sub.name].set_index("task_key")
    assert tuple(mine.loc["hump", ["status", "reason"]]) == ("failed", "error"), mine.loc["hump", "detail"]
    assert mine.loc["tok", "status"] == "ok" and abs(mine.loc["tok", "normalized_score"]) < 1e-9
    b = board(runs, n_boot=50).set_index("name")
    assert b.loc[sub.name, "not_applicable"] == 0 and b.loc[sub.name, "failed"] == 1
    assert not pd.isna(b.loc[sub.name, "rank"]) and not pd.isna(b.loc["pi_ref", "rank"])
    assert abs(b.loc[sub.name, "iqm"] - (0.0 + mine.loc["tok", "normalized_score"]) / 2) < 1e-12  # the hump at 0


# ------------------------------------------------------------------------------------------ what the run is given


def test_the_evaluation_prompts_are_not_in_what_the_run_receives(world):
    """The start payload (the pickled public task) holds neither the evaluation prompts nor their responses'
    features (nor the proxy's weights): a submission cannot read them during training (the prompts come with the
    evaluation's requests; on the test split their stream's seed is the secret world seed's)."""
    import pickle

    from leaderboard.sandbox.child import RemoteProxy
    from leaderboard.sandbox.process import _public_copy

    public = _public_copy(world.task, RemoteProxy("proxy", world.task.d))
    blob = pickle.dumps(public, protocol=pickle.HIGHEST_PROTOCOL)
    j = world.judge
    assert public.config.seed is None and not hasattr(public, "judge")
    for arr in (j.eval_prompts.numpy(), j.eval_candidates[:2].numpy(), j.eval_gold.numpy()[:1]):
        assert np.ascontiguousarray(arr).tobytes() not in blob
    weights = [t for t in (*world.task.proxy.parameters(), *world.task.proxy.buffers()) if t.numel() >= 4]
    assert weights and all(t.detach().numpy().tobytes() not in blob for t in weights)  # nor the proxy's weights


def test_training_queries_are_counted_per_response_whatever_its_tokens(world, tmp_path):
    """Responses with a negative token id (which indexes from the end of the public embeddings) still cost one
    query each: the channel counts the feature rows the scorer scores, not the child's budget."""
    path = tmp_path / "odd.py"
    path.write_text(textwrap.dedent('''
        import torch
        class Agent:
            def fit(self, task, budget, checkpoint):
                checkpoint(0, self)
                p = task.sample_prompts(5, seed=0)
                task.reward(p, torch.full((5, task.L), -1, dtype=torch.int64), count=False)  # "uncounted"
                task.budget.proxy_queries = 0                                                # and forgotten
            def policy(self, cand, ref):
                return ref
        def make_agent():
            return Agent()
    '''))
    assert run(world, load_submission(str(path))).proxy_queries == 5


# ------------------------------------------------------------------------------------------ determinism


@pytest.mark.skipif(not JAIL_OK, reason="bubblewrap (bwrap) is not installed")
def test_the_token_entry_on_the_test_split_is_bit_identical_twice():
    """The same file scored twice on a test-split run (hidden gold family, jailed): bit-identical metrics and rows."""
    s = spec(kwargs={**KW, "gold_family": True}, split="test")
    limits = Limits(wall_time=60, memory_mb=2048, sandbox="jail")
    sub = load_submission("token_rloo", config={"batch_size": 8})
    a, b = (score_one(sub, s, limits) for _ in range(2))
    assert a.status == b.status == "ok", (a.detail, b.detail)
    assert a.sandbox == "jail" and a.metrics.keys() == b.metrics.keys()
    assert all(x == b.metrics[k] or (np.isnan(x) and np.isnan(b.metrics[k])) for k, x in a.metrics.items())
    assert a.checkpoints == b.checkpoints


def test_a_not_applicable_run_is_no_score_in_a_comparison_either():
    """P(A > B) leaves a not-applicable run out as the board does (it used to count it as π_ref's 0, so a token
    baseline 'lost' every bandit task it never ran): compared on the runs both have, and the note says why."""
    from leaderboard.scoring import probability_of_improvement

    rows = []
    for name, key, status, reason, sc in (("token_rloo", "hump", "failed", "not_applicable", np.nan),
                                          ("token_rloo", "tok", "ok", None, 0.5),
                                          ("rloo", "hump", "ok", None, 0.2), ("rloo", "tok", "ok", None, 0.1)):
        for seed in (0, 1):
            rows.append({"submission": name, "code_hash": name, "task_key": key, "seed_index": seed,
                         "status": status, "reason": reason, "normalized_score": sc})
    runs = pd.DataFrame(rows)
    res = probability_of_improvement(runs, "token_rloo", "rloo", n_boot=50)
    assert res.p == 1.0 and res.tasks == ["tok"] and "not applicable" in res.note, res
    assert probability_of_improvement(runs, "rloo", "token_rloo", n_boot=50).p == 0.0
    # an ordinary failure on the same task is still π_ref's 0 (and runs that differ otherwise still need --common-tasks)
    failed = runs.assign(reason=runs["reason"].replace("not_applicable", "error"))
    assert probability_of_improvement(failed, "token_rloo", "rloo", n_boot=50).p == 0.5
    with pytest.raises(ValueError, match="common_tasks=True"):
        probability_of_improvement(runs[(runs["submission"] != "rloo") | (runs["seed_index"] == 0)], "token_rloo",
                                   "rloo", n_boot=50)


def test_a_not_applicable_run_is_no_score_in_the_reports_profiles_and_task_tables():
    """The report's performance profile and per-task table leave a not-applicable run out (they counted it as
    π_ref's 0: a token baseline's profile fell for the bandit tasks it never ran)."""
    from leaderboard import report as R

    rows = [{"submission": "token_rloo", "code_hash": "t", "task_key": k, "seed_index": i, "status": st,
             "reason": rs, "normalized_score": sc}
            for k, st, rs, sc in (("hump", "failed", "not_applicable", np.nan), ("tok", "ok", None, 0.5))
            for i in (0, 1)]
    ag = pd.DataFrame(rows)
    prof = R.performance_profile(ag, np.array([0.25, 0.75]))
    assert prof["token_rloo"].tolist() == [1.0, 0.0]  # its token task only (was [0.5, 0.0])
    html = R._per_task_table(ag, "hump", ["token_rloo"], n_boot=20, seed=0)
    assert "0.000" not in html and "0 / 2 (2 not applicable)" in html


FLOOD = '''
import os, time
from leaderboard.sandbox import child as _child
from leaderboard.sandbox.channel import MAGIC, _PREFIX

class Agent:
    def fit(self, task, budget, checkpoint):
        import torch
        checkpoint(0, lambda cand, ref: ref)   # mark 0, evaluated at its delivery; then frames between marks (free)
        task.reward(task.sample_prompts(4, seed=0), torch.zeros((4, task.L), dtype=torch.int64))
        ch = _child.CHANNEL
        hb = b'{"op":"checkpoint"}'
        burst = (_PREFIX.pack(MAGIC, len(hb), 0) + hb) * 20000   # 20,000 free frames a write
        stop = time.monotonic() + 25
        if os.fork() == 0:          # drain the scorer's answers, so that its writes never block either
            while True:
                os.read(ch.rfd, 1 << 20)
        if os.fork() == 0:          # one writer (frames stay whole): the scorer always has a frame to read
            while time.monotonic() < stop:
                os.write(ch.wfd, burst)
            os._exit(0)
        time.sleep(max(0.0, stop - time.monotonic()))
        os._exit(0)
    def policy(self, cand, ref):
        return ref

def make_agent():
    return Agent()
'''


def test_a_run_flooding_the_scorer_with_frames_is_stopped_at_its_deadline(world, tmp_path):
    """Frames that cost no budget (checkpoints), written faster than the scorer reads them, used to keep every read
    from blocking, and the deadline was checked only when a read blocked: a 3 s run held the scorer for as long as
    it flooded (25 s here). The deadline is now checked on every frame."""
    import time

    path = tmp_path / "flood.py"
    path.write_text(FLOOD)
    t0 = time.monotonic()
    with pytest.raises(SandboxFailure) as info:
        run(world, load_submission(str(path)), Limits(wall_time=3, memory_mb=2048, sandbox="trusted"))
    took = time.monotonic() - t0
    assert info.value.reason == "timeout" and took < 15, (info.value.reason, took, info.value.detail)


def test_a_sequence_run_that_skips_a_mark_fails_like_a_bandit_one(world, tmp_path):
    """The checkpoint schedule is the scorer's for sequence runs too: 640 queries with no checkpoint after mark 0
    reach mark 2 (512) while mark 1 (256) is owed."""
    with pytest.raises(SandboxFailure) as info:
        run(world, load_submission(agent_file(tmp_path, queries=160)))
    assert info.value.reason == "checkpoint" and "mark 1 of 4 (256 proxy queries)" in info.value.detail, \
        info.value.detail
