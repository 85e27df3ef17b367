"""A board no submission can game (issue 17, items 1–4): private test worlds per submission, a hidden gold member,
the test split as the board, the label ceiling.

Each attack of the issue's table (rows 1–4) is a submission file scored by the real runner and sandbox:

1. rebuild the world from the public dev-seed formula and return the gold tilt → 1.000 on dev, not on test;
2. read the public config's link and gold scale, fit θ by maximum likelihood on the preferences, tilt → ≈ 1.0
   on main's test split, here like the label ceiling;
3. tilt the Shang et al. bandit's gold copied from ``leaderboard/suites.py`` → 1.000 on main's test split;
4. learn from earlier results → nothing: two code hashes get disjoint worlds.
"""

from __future__ import annotations

import textwrap

import numpy as np
import pytest
import torch

from leaderboard.runner import score, world_of
from leaderboard.seeds import test_seed
from leaderboard.spec import Limits
from leaderboard.store import Store
from leaderboard.submission import load_submission
from leaderboard.suites import HUMP_TEST_LABELS, SUITES, Suite, SuiteEntry, get_suite

SALT = b"integrity-test-salt"
LIMITS = Limits(wall_time=120, memory_mb=4096, threads=1)
# The smoke suite's hump (K 64 instead of 256, fewer evaluation contexts) with its test-split label budget.
HUMP = dict(K=64, n_eval_contexts=256, n_norm_contexts=256, beta=0.05)
SHANG = dict(SUITES["quick"].entry("shang-bandit").kwargs)
SUITE = Suite(
    "integrity", 1,
    (SuiteEntry("hump", "tiltenv/Hump-v0", HUMP, 1024, 2, test_kwargs=HUMP_TEST_LABELS),
     SuiteEntry("shang", "tiltenv/Tabular-v0", SHANG, 1024, 2)),
    n_dev_seeds=3, n_test_seeds=3,
)

# Row 1: the world rebuilt from the public dev-seed formula (suite and task names are public), its gold tilted.
REBUILD = '''
import gymnasium as gym, torch
import tiltenv
from leaderboard.seeds import dev_seed
from tiltenv import metrics as M
from tiltenv.worlds.world import make_world

class Agent:
    def fit(self, task, budget=None, checkpoint=None):
        self.task, self.worlds = task, []
        for i in range(3):  # every dev seed of the task: the one whose proxy matches is the scored world
            cfg = task.config.replace(seed=dev_seed("integrity", "hump", i), gold_family=False)
            self.worlds.append(make_world(cfg, fresh=True))
        probe = task.sample_contexts(4, seed=1)[0]
        mine = task.proxy_reward(probe)
        self.world = min(self.worlds, key=lambda w: float((w.task.proxy_reward(probe, count=False) - mine).abs().max()))
        if checkpoint is not None:
            checkpoint(0, self.policy)
        return self

    def policy(self, candidates, ref_logp):
        gold = self.world.judge.gold(torch.as_tensor(candidates))
        return M.tilt_logp(torch.as_tensor(ref_logp, dtype=torch.float64), gold, self.task.beta)

def make_agent():
    return Agent()
'''

# Row 2: the public link and gold scale taken as the member; θ by maximum likelihood on the preferences.
KNOWN_LINK = '''
import torch
from tiltenv import metrics as M
from tiltenv.rewards.links import get_link

class Agent:
    def fit(self, task, budget=None, checkpoint=None):
        cfg, p = task.config, task.preferences
        self.task, self.link, self.a = task, get_link(cfg.link), cfg.gold_scale
        x = task.sample_contexts(1, seed=0)[0].reshape(-1, task.d)
        r = task.proxy_reward(x[:17]).double()  # 17 proxy queries: the sign/direction to start from
        X = torch.cat([x[:17].double(), torch.ones(17, 1, dtype=torch.float64)], 1)
        th = torch.linalg.lstsq(X, r.unsqueeze(1)).solution[:-1, 0].clone().requires_grad_(True)
        logk = torch.tensor(2.3, dtype=torch.float64, requires_grad=True)
        xa, xb, y = p.x_a.double(), p.x_b.double(), p.label.double()
        opt = torch.optim.Adam([th, logk], lr=0.05)
        for _ in range(300):
            opt.zero_grad()
            u = th / th.norm()
            q = torch.sigmoid(logk.exp() * self.a * (self.link(xa @ u) - self.link(xb @ u))).clamp(1e-9, 1 - 1e-9)
            (-(y * q.log() + (1 - y) * (1 - q).log()).mean()).backward()
            opt.step()
        self.theta = (th / th.norm()).detach()
        if checkpoint is not None:
            checkpoint(0, self.policy)
        return self

    def policy(self, candidates, ref_logp):
        z = torch.as_tensor(candidates).double() @ self.theta
        return M.tilt_logp(torch.as_tensor(ref_logp, dtype=torch.float64), self.a * self.link(z), self.task.beta)

def make_agent():
    return Agent()
'''

# Row 3: Shang et al.'s gold, copied from the public source, tilted arm by arm.
SHANG_GOLD = '''
import torch
from leaderboard.suites import _SHANG
from tiltenv import metrics as M

class Agent:
    def fit(self, task, budget=None, checkpoint=None):
        self.task = task
        if checkpoint is not None:
            checkpoint(0, self.policy)
        return self

    def policy(self, candidates, ref_logp):
        arm = torch.as_tensor(candidates).argmax(-1)  # one-hot arms
        gold = torch.tensor(_SHANG["gold"], dtype=torch.float64)[arm]
        return M.tilt_logp(torch.as_tensor(ref_logp, dtype=torch.float64), gold, self.task.beta)

def make_agent():
    return Agent()
'''


def _write(tmp_path, name: str, source: str, extra: str = "") -> str:
    path = tmp_path / f"{name}.py"
    path.write_text(textwrap.dedent(source) + extra)
    return str(path)


def _scores(store: Store, split: str, task: str, sub: str) -> np.ndarray:
    runs = store.runs(suite="integrity", version=1, split=split)
    runs = runs[(runs.task_key == task) & (runs.submission == sub)]
    assert (runs.status == "ok").all(), runs[["status", "reason", "detail"]].to_string()
    return runs.sort_values("seed_index").normalized_score.to_numpy()


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    """The attacks and the label ceiling scored on both splits of the tiny suite (sandboxed, serial)."""
    tmp = tmp_path_factory.mktemp("attacks")
    store = Store(f"sqlite:///{tmp / 'board.db'}")
    hump = [load_submission(_write(tmp, "rebuild", REBUILD)), load_submission(_write(tmp, "known_link", KNOWN_LINK))]
    both = [load_submission("label_ceiling")]
    shang = [load_submission(_write(tmp, "shang_gold", SHANG_GOLD))]
    for split in ("dev", "test"):
        for subs, tasks in ((hump + both, ["hump"]), (shang + both, ["shang"])):
            summ = score(subs, SUITE, store=store, split=split, salt=SALT, limits=LIMITS, progress=False, tasks=tasks)
            assert summ.failed == 0, [(r.submission, r.reason, r.detail) for r in summ.results if not r.ok]
    return store


def test_rebuilding_the_world_from_the_public_dev_seed_formula_does_not_reach_the_test_world(board):
    """Row 1: 1.000 on the dev split (anyone can rebuild those worlds: not a ranking), far below on the test split."""
    dev = _scores(board, "dev", "hump", "rebuild")
    test = _scores(board, "test", "hump", "rebuild")
    assert dev.min() > 0.999  # the attack is real: it is the gold optimum wherever the world is public
    assert test.mean() < 0.9 and test.max() < 0.99


def test_known_link_fit_without_the_member_scores_like_the_label_ceiling_not_one(board):
    """Row 2: on main's test split the known-link MLE reached 0.99995 on hump; the member is hidden now."""
    dev = _scores(board, "dev", "hump", "known_link")
    test = _scores(board, "test", "hump", "known_link")
    ceiling = _scores(board, "test", "hump", "label_ceiling")
    assert dev.mean() > 0.99  # with the member public (dev), the labels give the gold away
    assert test.mean() < 0.97
    assert abs(test.mean() - ceiling.mean()) < 0.1  # other worlds of the same family: like the ceiling, not above


def test_shang_bandit_gold_from_public_source_is_not_the_test_gold(board):
    """Row 3: the paper's gold in leaderboard/suites.py is every dev world's gold, no test world's."""
    dev = _scores(board, "dev", "shang", "shang_gold")
    test = _scores(board, "test", "shang", "shang_gold")
    assert dev.min() > 0.999
    assert test.mean() < 0.8
    sub = load_submission("label_ceiling")
    for spec in SUITE.runs("test", salt=SALT, tasks=["shang"], code_hash=sub.code_hash):
        world = world_of(spec)
        gold = world.judge.eval_gold[0].numpy()
        assert not np.allclose(gold, SHANG["gold"], atol=0.05)
        assert world.task.config.seed is None and world.task.config.gold is None  # no public view carries a seed
        assert world.task.config == world_of(SUITE.runs("test", salt=SALT, tasks=["shang"], code_hash="x" * 64)[0]).task.config


#: A token entry (a small world: 64 responses a prompt) in a suite of its own; the suites' test-split mechanism
#: (``gold_family=True`` on every task that has it) applies to it as to every other entry.
TOKENS = dict(V=4, L=3, prompt_len=3, link="hump", n_labels=300, n_eval_contexts=32, n_norm_contexts=32)
TOKEN_SUITE = Suite("integrity-tokens", 1, (SuiteEntry("tokens", "tiltenv/Tokens-v0", TOKENS, 1024, 2),),
                    n_dev_seeds=3, n_test_seeds=2)


def _token_gold(world, prompts, responses):
    """The world's gold of given token sequences (through its own public featurizer)."""
    return world.judge.gold(world.task.features(prompts, responses)).to(torch.float64)


def test_token_test_worlds_gold_is_not_rebuildable_from_the_dev_seed_formula_or_the_public_source():
    """Row 1 and row 2 for the token world: every dev world rebuilt from the public seed formula (with the public
    config's link and scale, or a family member drawn from the dev seed) has another gold than the test world on
    the same token sequences; and even the test world's own seed (θ*, π_ref, φ) with the public source's link and
    gold scale misses its gold, because the member is drawn per world and shown nowhere."""
    from leaderboard.seeds import dev_seed
    from tiltenv.worlds.tokens import TokenConfig, all_responses
    from tiltenv.worlds.world import make_world

    dev = TOKEN_SUITE.runs("dev")
    test = TOKEN_SUITE.runs("test", salt=SALT, code_hash="t" * 64)
    assert all("gold_family" not in r.task_kwargs for r in dev)
    assert all(r.task_kwargs["gold_family"] is True for r in test)
    other = TOKEN_SUITE.runs("test", salt=SALT, code_hash="u" * 64)
    ys = all_responses(TOKENS["V"], TOKENS["L"])
    for spec, spec_other in zip(test, other):
        world = world_of(spec)
        public = world.task.config.public()
        assert isinstance(public, TokenConfig) and public.seed is None and public.gold_family
        assert public == world_of(spec_other).task.config.public()  # no member in any public view
        with pytest.raises(ValueError, match="hides its gold member"):
            public.member()
        member = world.judge.extras["member"]
        assert member.params and member.spec() != public.replace(gold_family=False).member().spec()
        prompts = world.judge.eval_prompts[:8].repeat_interleave(ys.shape[0], 0)
        responses = ys.repeat(8, 1)
        gold = _token_gold(world, prompts, responses)
        assert torch.allclose(gold, world.judge.eval_gold[:8].reshape(-1))
        rebuilt = [public.replace(seed=dev_seed("integrity-tokens", "tokens", i), gold_family=fam)
                   for i in range(TOKEN_SUITE.n_dev_seeds) for fam in (False, True)]
        rebuilt.append(public.replace(seed=spec.seed, gold_family=False))  # even the seed, with the public member
        for cfg in rebuilt:
            guess = _token_gold(make_world(cfg, fresh=True), prompts, responses)
            assert not torch.allclose(guess, gold, atol=0.05), cfg
            if cfg.seed != spec.seed:  # another θ*, other features: unrelated to the test gold
                assert abs(float(torch.corrcoef(torch.stack([guess, gold]))[0, 1])) < 0.9, cfg


def test_two_code_hashes_get_disjoint_test_worlds_probing_earlier_results_gives_nothing(tmp_path):
    """Row 4: a probe submission's results are about its own worlds only; an edited file gets new worlds."""
    a = load_submission(_write(tmp_path, "probe", SHANG_GOLD))
    b = load_submission(_write(tmp_path, "probe_edited", SHANG_GOLD, "\n# one more line\n"))
    assert a.code_hash != b.code_hash
    quick = get_suite("quick")
    ra = quick.runs("test", salt=SALT, code_hash=a.code_hash)
    rb = quick.runs("test", salt=SALT, code_hash=b.code_hash)
    assert not {r.seed for r in ra} & {r.seed for r in rb}
    assert [r.seed for r in ra] == [r.seed for r in quick.runs("test", salt=SALT, code_hash=a.code_hash)]
    assert [r.seed for r in ra] == [test_seed(SALT, "quick", quick.version, r.task_key, r.seed_index, a.code_hash)
                                    for r in ra]
    # the gold directions of the two submissions' worlds of one task are unrelated
    spa, spb = (next(r for r in runs if r.task_key == "linear" and r.seed_index == 0) for runs in (ra, rb))
    import dataclasses

    small = {"n_eval_contexts": 8, "n_norm_contexts": 8}
    ta = world_of(dataclasses.replace(spa, task_kwargs={**spa.task_kwargs, **small})).judge.theta
    tb = world_of(dataclasses.replace(spb, task_kwargs={**spb.task_kwargs, **small})).judge.theta
    assert abs(float(ta @ tb)) < 0.9
    with pytest.raises(ValueError, match="private to a submission"):
        quick.runs("test", salt=SALT)


#: A deterministic file submission (the tilt of the proxy: the scorer's own arithmetic). KNOWN_LINK is not: its fit
#: (lstsq + Adam through MKL) gave last-bit differences between two processes on the same inputs in 1 run of 4 here
#: (the scorer's proxy answers to it were bit-identical), so it cannot show that the worlds are the same.
TILT_FILE = """
from baselines import Tilt


def make_agent():
    return Tilt()
"""


def test_the_same_file_twice_gets_bit_identical_test_metrics(tmp_path):
    path = _write(tmp_path, "same", TILT_FILE)
    tiny = Suite("integrity", 1, (SuiteEntry("hump", "tiltenv/Hump-v0", HUMP, 512, 2, test_kwargs=HUMP_TEST_LABELS),),
                 n_test_seeds=1)
    frames = []
    for i in range(2):
        store = Store(f"sqlite:///{tmp_path / f'b{i}.db'}")
        score([load_submission(path)], tiny, store=store, split="test", salt=SALT, limits=LIMITS, progress=False)
        frames.append(store.runs(suite="integrity", version=1, split="test"))
        assert (frames[-1].status == "ok").all()
    cols = [c for c in frames[0].columns if c not in ("fit_time", "wall_time", "created_at", "id", "scored_at")
            and frames[0][c].dtype.kind == "f"]
    assert len(cols) > 5
    diff = [(c, frames[0][c].tolist(), frames[1][c].tolist()) for c in cols if not frames[0][c].equals(frames[1][c])]
    assert not diff, diff


def _family_tasks():
    import gymnasium as gym

    import tiltenv

    return sorted(f"tiltenv/{n}-v{tiltenv.VERSION}" for n in tiltenv.TASKS
                  if "gold_family" in gym.spec(f"tiltenv/{n}-v{tiltenv.VERSION}").kwargs)


def test_every_registered_task_with_a_family_has_one():
    """Every registered task has a hidden gold family on the test split, the token world included (issue 20)."""
    import tiltenv

    assert {f"tiltenv/{n}-v0" for n in tiltenv.TASKS} == set(_family_tasks())
    assert "tiltenv/Tokens-v0" in _family_tasks()


@pytest.mark.parametrize("task_id", _family_tasks())
def test_every_registered_tasks_test_family_sampled_200_times_gives_valid_members(task_id):
    """All members valid (normalized links with the family's stated exponents, scale and labeler in their ranges),
    and every member has the same public config. A multi-objective task draws one member per dimension."""
    import gymnasium as gym

    from tiltenv.worlds.config import TabularConfig, config_from_kwargs
    from tiltenv.rewards.families import FLIP_RATE_SPREAD, GOLD_SCALE_RANGE, LABEL_TEMP_RANGE
    from tiltenv.rewards.links import gaussian_expectation
    from tiltenv.worlds.multiobjective import MultiObjectiveConfig

    import tiltenv
    from tiltenv.worlds.tokens import TokenConfig

    kwargs = dict(gym.spec(task_id).kwargs, gold_family=True)
    multi = "n_objectives" in kwargs
    cls = TabularConfig if "ref_probs" in kwargs else None
    if tiltenv.TASKS[task_id.split("/")[1].rsplit("-v", 1)[0]][0] is TokenConfig:
        cls = TokenConfig  # a token config: the same member draw (tiltenv.rewards.families), from its own `family` stream
    publics, members = set(), set()
    for seed in range(200):
        if multi:
            cfg = config_from_kwargs({**kwargs, "seed": seed}, MultiObjectiveConfig)
        else:
            cfg = config_from_kwargs({**kwargs, "seed": seed}, *([cls] if cls else []))
        publics.add(cfg.public())
        if cls is TabularConfig:
            gold, proxy, ref = cfg.arms()
            assert np.abs(np.sort(gold) - np.sort(cfg.gold)).max() <= 0.1 + 1e-12  # the paper's values up to ±0.1, arms permuted
            assert np.abs(gold - np.asarray(cfg.gold)).max() > 0  # never the source's table
            members.add(tuple(np.round(gold, 12)))
            continue
        if multi:
            drawn = list(zip(cfg.members(), cfg.families(), cfg.gold_scales))
            assert len(drawn) == cfg.n_objectives
        else:
            drawn = [(cfg.member(), cfg.family(), cfg.gold_scale)]
        members.add(tuple(tuple(sorted(m.params.items())) for m, _, _ in drawn))
        for m, fam, centre in drawn:
            link = m.link
            mean = gaussian_expectation(link, link.breakpoints)
            var = gaussian_expectation(lambda z: link(z) ** 2, link.breakpoints)
            assert abs(mean) < 1e-9 and abs(var - 1) < 1e-9, (m.params, mean, var)
            c = link.hermite(fam.info_exponent)
            assert np.all(np.abs(c[1:fam.info_exponent]) < 1e-9), (m.params, c)
            assert abs(c[fam.info_exponent]) > 0.05, (m.params, c)
            assert link.info_exponent == fam.info_exponent and link.gen_exponent == fam.gen_exponent
            for k, (lo, hi) in fam.ranges.items():
                assert lo <= m.params[k] <= hi
            assert GOLD_SCALE_RANGE[0] * centre <= m.gold_scale <= GOLD_SCALE_RANGE[1] * centre
            assert LABEL_TEMP_RANGE[0] <= m.label_temp <= LABEL_TEMP_RANGE[1]
            assert abs(m.flip_rate - cfg.flip_rate) <= FLIP_RATE_SPREAD + 1e-12
            if fam.monotone:
                z = torch.linspace(-6, 6, 2001, dtype=torch.float64)
                assert (link(z).diff() >= -1e-12).all()
        if multi:  # the dimensions draw independently: no two share a member
            assert len({tuple(sorted(m.params.items())) for m, _, _ in drawn}) == cfg.n_objectives
    assert len(publics) == 1  # the public config is identical across members
    assert len(members) == 200  # and the members really differ


def test_the_dev_split_keeps_todays_members_exactly():
    """gold_family=False (the dev split) builds the registry's link, scale and labeler: published figures stand."""
    from tiltenv.rewards.links import LINKS

    for spec in get_suite("smoke").runs("dev"):
        assert "gold_family" not in spec.task_kwargs
        world = world_of(spec)
        m = world.judge.extras["member"]
        assert m.params == {} and m.link is LINKS[world.judge.config.link]
    for spec in get_suite("smoke").runs("test", salt=SALT, code_hash="a" * 64):
        assert spec.task_kwargs["gold_family"] is True
        assert world_of(spec).judge.extras["member"].params  # a drawn member


@pytest.mark.parametrize("name", ["tiltenv.rewards.families", "baselines.label_ceiling", "leaderboard.seeds",
                                  "leaderboard.suites", "leaderboard.submission"])
def test_docstring_examples(name):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_label_ceiling_is_a_registered_reference_entry_that_knows_the_family_not_the_member():
    """Its fit reads only the public task; on the dev split (member public) it is the known-link MLE (≈ 1.0)."""
    import gymnasium as gym

    import tiltenv
    from baselines import BASELINES, TrainBudget
    from baselines.label_ceiling import LabelCeiling

    assert BASELINES["label_ceiling"][0] is LabelCeiling
    kw = dict(d=8, K=64, n_labels=400, n_eval_contexts=256, n_norm_contexts=256, beta=0.05, seed=3)
    dev = gym.make("tiltenv/Hump-v0", **kw)
    agent = LabelCeiling(device="cpu", steps=200).fit(dev.unwrapped.task, TrainBudget(proxy_queries=2048))
    assert dev.unwrapped.task.budget.proxy_queries <= 16 * 64  # its small proxy-query budget
    assert tiltenv.evaluate(agent, dev)["normalized_score"] > 0.98
    test = gym.make("tiltenv/Hump-v0", **kw, gold_family=True)
    agent = LabelCeiling(device="cpu", steps=200).fit(test.unwrapped.task, TrainBudget(proxy_queries=2048))
    est, member = agent.estimate_, test.unwrapped.config.member()
    assert est["family"] and set(est["shape"]) == set(member.params)
    assert float(est["theta"] @ tiltenv.make_world(test.unwrapped.config).judge.theta) > 0.9


def test_ranking_stability_script_quick(tmp_path):
    """scripts/ranking_stability.py --quick: two salts, the board's IQMs, Kendall's τ, seeds, the ceiling per task."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    out = tmp_path / "rs.json"
    proc = subprocess.run([sys.executable, str(root / "scripts" / "ranking_stability.py"), "--quick", "--out", str(out)],
                          capture_output=True, text=True, timeout=600, cwd=root)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(out.read_text())
    assert set(res["iqm"]) == {"salt0", "salt1"} and set(res["iqm"]["salt0"]) == {"tilt", "best_of_n", "label_ceiling"}
    assert -1.0 <= res["kendall_tau"] <= 1.0
    assert set(res["label_ceiling_per_task"]) == {"hump"} and res["label_ceiling_per_task"]["hump"] > 0.5
    # the two salts give different worlds: the same baseline's scores differ between them
    s0 = [r["normalized_score"] for r in res["runs"]["salt0"] if r["submission"] == "tilt"]
    s1 = [r["normalized_score"] for r in res["runs"]["salt1"] if r["submission"] == "tilt"]
    assert len(s0) == len(s1) == 2 and s0 != s1
    again = subprocess.run([sys.executable, str(root / "scripts" / "ranking_stability.py"), "--from-json", str(out)],
                           capture_output=True, text=True, timeout=120, cwd=root)
    assert again.returncode == 0 and '"kendall_tau"' in again.stdout
