"""Suites and seeds: versioned digests, public dev seeds, HMAC test seeds from a 0600 salt."""

from __future__ import annotations

import hashlib
import hmac
import os
import stat

import gymnasium as gym
import pytest

import tiltenv  # noqa: F401
from leaderboard import seeds as S
from leaderboard.suites import SUITES, Suite, SuiteEntry, get_suite

# A changed suite is a new version: editing an entry must come with a version bump and a new pin here.
PINNED = {
    # issue 17: the hump tasks get 100 labels on the test split (label ceiling), test seeds from the ranking
    # measurement (quick 3 -> 5, full 10 -> 25); smoke v1 was c2ee0327bf, quick v1 589f770240, full v2 bf4dece2c0
    ("smoke", 2): "258fefc7f1",
    # issue 20: quick v3 and full v4 add the token task (quick v2 was 9e10db9c7d, full v3 6d5d596be5)
    ("quick", 3): "a550b3adeb",
    ("full", 4): "e346b0b442",  # v2: issues 12 and 13 add the life-cycle and multi-objective tasks (v1 was b1f290b208)
}


def test_every_suite_version_is_pinned():
    assert {(s.name, s.version): s.digest()[:10] for s in SUITES.values()} == PINNED


def test_digest_changes_with_any_entry_field():
    base = Suite("x", 1, (SuiteEntry("a", "tiltenv/Hump-v0", {"beta": 0.1}, 1024),))
    for changed in (
        SuiteEntry("a", "tiltenv/Hump-v0", {"beta": 0.2}, 1024),
        SuiteEntry("a", "tiltenv/Hump-v0", {"beta": 0.1}, 2048),
        SuiteEntry("b", "tiltenv/Hump-v0", {"beta": 0.1}, 1024),
        SuiteEntry("a", "tiltenv/Linear-v0", {"beta": 0.1}, 1024),
        SuiteEntry("a", "tiltenv/Hump-v0", {"beta": 0.1}, 1024, n_checkpoints=3),
    ):
        assert Suite("x", 1, (changed,)).digest() != base.digest()
    assert Suite("x", 1, base.entries, n_dev_seeds=2).digest() != base.digest()
    changed = SuiteEntry("a", "tiltenv/Hump-v0", {"beta": 0.1}, 1024, test_kwargs={"n_labels": 100})
    assert Suite("x", 1, (changed,)).digest() != base.digest()  # the test split's own kwargs define runs too
    # the description and 'what' are documentation, not part of the runs
    assert Suite("x", 1, base.entries, description="other").digest() == base.digest()


@pytest.mark.parametrize("name", sorted(SUITES))
def test_every_entry_is_a_valid_task_config(name):
    """Each entry's kwargs on top of its registered preset make a valid config (building proxies is the runner's job)."""
    import json

    from tiltenv.worlds.config import config_from_kwargs

    for e in get_suite(name).entries:
        cfg_cls = tiltenv.TASKS[e.task_id.split("/")[1].rsplit("-v", 1)[0]][0]
        cfg = config_from_kwargs({**gym.spec(e.task_id).kwargs, **e.kwargs, "seed": 0}, cfg_cls)
        for k, v in e.kwargs.items():
            assert json.loads(json.dumps(getattr(cfg, k))) == json.loads(json.dumps(v))


def test_runs_cover_entries_and_seeds_and_never_store_test_seeds():
    quick = get_suite("quick")
    dev = quick.runs("dev")
    assert len(dev) == len(quick.entries) * quick.n_dev_seeds
    assert {(r.task_key, r.seed_index) for r in dev} == {(e.key, i) for e in quick.entries for i in range(quick.n_dev_seeds)}
    assert all(r.seed == S.dev_seed("quick", r.task_key, r.seed_index) for r in dev)
    test = quick.runs("test", salt=b"s3cret", code_hash="c0de")
    assert len({r.seed for r in test}) == len(test)  # distinct worlds
    assert not {r.seed for r in test} & {r.seed for r in dev}
    for r in test:
        assert str(r.seed) not in repr(r)  # the seed is not in the repr
        res_json = __import__("leaderboard.spec", fromlist=["RunResult"]).RunResult("x", "h", r, "ok").to_json()
        assert str(r.seed) not in res_json


def test_test_seed_is_the_documented_hmac():
    salt, h = b"k", "ab" * 32
    msg = f"tiltenv-test/quick/1/linear/2/{h}".encode()
    want = int.from_bytes(hmac.new(salt, msg, hashlib.sha256).digest()[:8], "big") & ((1 << 63) - 1)
    assert S.test_seed(salt, "quick", 1, "linear", 2, h) == want
    # every input matters, the submission's code hash included (private worlds, issue 17)
    base = S.test_seed(salt, "quick", 1, "linear", 2, h)
    assert len({base, S.test_seed(b"j", "quick", 1, "linear", 2, h), S.test_seed(salt, "full", 1, "linear", 2, h),
                S.test_seed(salt, "quick", 2, "linear", 2, h), S.test_seed(salt, "quick", 1, "hump", 2, h),
                S.test_seed(salt, "quick", 1, "linear", 3, h), S.test_seed(salt, "quick", 1, "linear", 2, "cd" * 32)}) == 7
    with pytest.raises(ValueError, match="code_hash"):
        S.test_seed(salt, "quick", 1, "linear", 2, "")


def test_salt_from_env_then_file_created_0600(tmp_path, monkeypatch):
    monkeypatch.setenv(S.SALT_ENV, "from-env")
    assert S.load_salt() == b"from-env"
    monkeypatch.delenv(S.SALT_ENV)
    path = tmp_path / "cfg" / "salt"
    monkeypatch.setenv(S.SALT_FILE_ENV, str(path))
    with pytest.raises(RuntimeError, match="no test-seed salt"):
        S.load_salt(create=False)
    first = S.load_salt()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
    assert len(first) == 64 and S.load_salt() == first  # stable
    os.chmod(path, 0o644)
    with pytest.raises(RuntimeError, match="chmod 600"):
        S.load_salt()


def test_bad_names_get_the_closest_valid_one():
    with pytest.raises(ValueError, match="Did you mean 'quick'"):
        get_suite("quik")
    with pytest.raises(ValueError, match="Did you mean 'test'"):
        get_suite("smoke").runs("tset")
    with pytest.raises(ValueError, match="Did you mean 'hump'"):
        get_suite("smoke").runs("dev", tasks=["hmp"])
    with pytest.raises(ValueError, match="n_seeds"):
        get_suite("smoke").runs("dev", n_seeds=5)
    with pytest.raises(ValueError, match="must not set 'seed'"):
        SuiteEntry("a", "tiltenv/Hump-v0", {"seed": 1})


def test_dev_seed_is_the_documented_hash_of_suite_task_and_index():
    def want(suite, key, i):
        return int.from_bytes(hashlib.sha256(f"tiltenv-dev/{suite}/{key}/{i}".encode()).digest()[:8], "big") & ((1 << 63) - 1)

    assert S.dev_seed("smoke", "hump", 0) == want("smoke", "hump", 0)
    assert len({S.dev_seed("smoke", "hump", 0), S.dev_seed("quick", "hump", 0), S.dev_seed("smoke", "linear", 0),
                S.dev_seed("smoke", "hump", 1)}) == 4


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o620, 0o700])
def test_a_salt_file_any_other_user_could_touch_is_refused(tmp_path, monkeypatch, mode):
    monkeypatch.delenv(S.SALT_ENV, raising=False)
    path = tmp_path / "salt"
    path.write_text("abc\n")
    monkeypatch.setenv(S.SALT_FILE_ENV, str(path))
    os.chmod(path, 0o600)
    assert S.load_salt() == b"abc"
    os.chmod(path, mode)
    if mode & 0o077:
        with pytest.raises(RuntimeError, match="chmod 600"):
            S.load_salt()
    else:  # the owner's own bits are the owner's business
        assert S.load_salt() == b"abc"


def test_an_empty_salt_is_never_used(tmp_path, monkeypatch):
    path = tmp_path / "salt"
    path.write_text("  \n")
    os.chmod(path, 0o600)
    monkeypatch.setenv(S.SALT_FILE_ENV, str(path))
    monkeypatch.setenv(S.SALT_ENV, "")  # an empty variable is unset: the file is read
    with pytest.raises(RuntimeError, match="is empty"):
        S.load_salt()
    path.write_text("from-file\n")
    assert S.load_salt() == b"from-file"


def test_test_runs_use_the_suite_version_and_carry_the_track():
    entries = (SuiteEntry("a", "tiltenv/Hump-v0", {"beta": 0.1}, 1024), SuiteEntry("b", "tiltenv/Linear-v0", {}, 2048, 3))
    v2 = Suite("x", 2, entries, n_dev_seeds=1, n_test_seeds=2)
    for track in ("agent", "reward_model"):
        runs = v2.runs("test", salt=b"k", track=track, code_hash="h")
        assert [(r.task_key, r.seed_index) for r in runs] == [("a", 0), ("a", 1), ("b", 0), ("b", 1)]
        assert [r.seed for r in runs] == [S.test_seed(b"k", "x", 2, r.task_key, r.seed_index, "h") for r in runs]
        assert all(r.track == track and r.suite_version == 2 and r.split == "test" for r in runs)
        assert [(r.proxy_queries, r.n_checkpoints) for r in runs] == [(1024, 12), (1024, 12), (2048, 3), (2048, 3)]
    v3 = Suite("x", 3, entries, n_dev_seeds=1, n_test_seeds=2)
    assert not {r.seed for r in v3.runs("test", salt=b"k", code_hash="h")} & {r.seed for r in v2.runs("test", salt=b"k", code_hash="h")}


def test_test_kwargs_apply_to_the_test_split_only_and_the_test_split_hides_the_gold_member():
    e = SuiteEntry("a", "tiltenv/Hump-v0", {"beta": 0.1}, 1024, test_kwargs={"n_labels": 100})
    s = Suite("x", 1, (e, SuiteEntry("t", "tiltenv/Tabular-v0", {}, 1024)), n_test_seeds=1)
    dev, test = s.runs("dev"), s.runs("test", salt=b"k", code_hash="h")
    assert dev[0].task_kwargs == {"beta": 0.1} and dev[1].task_kwargs == {}
    assert test[0].task_kwargs == {"beta": 0.1, "n_labels": 100, "gold_family": True}
    assert test[1].task_kwargs == {"gold_family": True}
    with pytest.raises(ValueError, match="must not set 'seed'"):
        SuiteEntry("a", "tiltenv/Hump-v0", {}, test_kwargs={"seed": 1})
