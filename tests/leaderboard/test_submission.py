"""Submissions: the three kinds, their code hashes, and clear errors; nothing is executed in the scorer."""

from __future__ import annotations

import hashlib
import sys

import pytest

from leaderboard.submission import EXAMPLES_DIR, Submission, load_submission


def test_baseline_with_config_overrides():
    a = load_submission("reinforce")
    b = load_submission("reinforce", config={"learning_rate": 0.1})
    assert (a.kind, a.track, a.factory, a.config) == ("baseline", "agent", "", {})
    assert b.config == {"learning_rate": 0.1} and b.name == "reinforce(learning_rate=0.1)"
    assert a.code_hash != b.code_hash and len(a.code_hash) == 64
    assert load_submission("reinforce").code_hash == a.code_hash  # deterministic
    # a default spelled out is the same config, so the same code
    assert load_submission("reinforce", config={"baseline": "mean"}).code_hash == a.code_hash
    assert load_submission("grpo").code_hash != a.code_hash


def test_baseline_errors():
    with pytest.raises(ValueError, match="Did you mean 'reinforce'"):
        load_submission("reinforc")
    with pytest.raises(ValueError, match="learning_rate"):
        load_submission("reinforce", config={"learning_rat": 0.1})
    with pytest.raises(ValueError):
        load_submission("reinforce", config={"baseline": "nope"})
    with pytest.raises(ValueError, match="agent"):
        load_submission("reinforce", track="reward_model")
    with pytest.raises(TypeError):
        load_submission("")


def test_file_submission(tmp_path):
    path = tmp_path / "my_agent.py"
    path.write_text("def make_agent():\n    return None\n\ndef other():\n    return None\n")
    sub = load_submission(str(path))
    assert (sub.kind, sub.track, sub.factory, sub.name) == ("file", "agent", "make_agent", "my_agent")
    assert sub.code_hash == hashlib.sha256(path.read_bytes()).hexdigest()
    assert sub.target == str(path.resolve())
    other = load_submission(f"{path}:other")
    assert other.factory == "other" and other.name == "my_agent:other" and other.code_hash == sub.code_hash
    with pytest.raises(ValueError, match="no top-level 'make_agnt'.*Did you mean 'make_agent'"):
        load_submission(f"{path}:make_agnt")
    with pytest.raises(ValueError, match="config overrides"):
        load_submission(str(path), config={"x": 1})


def test_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_submission(str(tmp_path / "missing.py"))
    bad = tmp_path / "bad.py"
    bad.write_text("def make_agent(:\n")
    with pytest.raises(ValueError, match="not valid Python"):
        load_submission(str(bad))
    txt = tmp_path / "agent.txt"
    txt.write_text("x")
    with pytest.raises(ValueError, match=".py"):
        load_submission(str(txt))


def test_examples_and_track_inference():
    agent = load_submission(str(EXAMPLES_DIR / "reinforce_agent.py"))
    rm = load_submission(str(EXAMPLES_DIR / "linear_reward_model.py"))
    assert agent.track == "agent" and rm.track == "reward_model" and rm.factory == "make_reward_model"
    with pytest.raises(ValueError, match="make_agent"):
        load_submission(str(EXAMPLES_DIR / "linear_reward_model.py"), track="agent")
    with pytest.raises(ValueError, match="track must be one of"):
        load_submission(str(EXAMPLES_DIR / "reinforce_agent.py"), track="agents")


def test_module_submission_is_not_executed(tmp_path, monkeypatch):
    pkg = tmp_path / "sidefx_pkg"
    pkg.mkdir()
    canary = tmp_path / "executed"
    (pkg / "__init__.py").write_text(f"open({str(canary)!r}, 'w').write('package ran')\n")
    (pkg / "agent.py").write_text(f"open({str(canary)!r}, 'w').write('module ran')\ndef make_agent():\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    sub = load_submission("sidefx_pkg.agent:make_agent")
    assert not canary.exists() and "sidefx_pkg" not in sys.modules
    assert (sub.kind, sub.target, sub.factory, sub.root) == ("module", "sidefx_pkg.agent", "make_agent", str(tmp_path.resolve()))
    assert sub.code_hash == hashlib.sha256((pkg / "agent.py").read_bytes()).hexdigest()
    assert load_submission("sidefx_pkg.agent").code_hash == sub.code_hash  # default factory
    top = load_submission("leaderboard.examples.reinforce_agent")
    assert top.root and (EXAMPLES_DIR / "reinforce_agent.py").is_file()


def test_module_errors():
    with pytest.raises(ValueError, match="no module named 'no_such_pkg.mod'"):
        load_submission("no_such_pkg.mod:make_agent")
    with pytest.raises(ValueError, match="not a built-in baseline"):
        load_submission("definitely_not_a_module_xyz")
    with pytest.raises(ValueError, match="no top-level 'make_agent'"):
        load_submission("leaderboard.spec")


def test_submission_record():
    sub = load_submission("tilt", name="my tilt")
    assert isinstance(sub, Submission) and sub.name == "my tilt" and sub.ref == "tilt"


def test_baseline_code_hash_covers_its_module_base_and_policy(monkeypatch):
    """Editing the baseline's own module (or base.py / policy.py) must change its code hash."""
    import inspect
    from pathlib import Path

    from baselines import BASELINES
    from leaderboard import submission

    seen = []
    real = submission._sha256_files
    monkeypatch.setattr(submission, "_sha256_files", lambda paths, extra=b"": seen.append(list(paths)) or real(paths, extra))
    for name in ("reinforce", "tilt"):
        load_submission(name)
        files = {p.name for p in seen[-1]}
        own = Path(inspect.getsourcefile(sys.modules[BASELINES[name][0].__module__])).name
        assert {own, "base.py", "policy.py"} <= files, (name, files)


def test_code_hash_is_the_documented_sha256_over_named_files(tmp_path):
    from leaderboard.submission import _sha256_files

    a, b = tmp_path / "a.py", tmp_path / "b.py"
    a.write_bytes(b"x = 1\n")
    b.write_bytes(b"y")
    h = hashlib.sha256()
    for p in (a, b):
        data = p.read_bytes()
        h.update(p.name.encode() + b"\0" + len(data).to_bytes(8, "little") + data)
    h.update(b"extra")
    assert _sha256_files([a, b], b"extra") == h.hexdigest()


def test_builtin_proxy_hash_covers_its_options():
    base = load_submission("proxy:mlp")
    assert (base.kind, base.track, base.target) == ("proxy", "reward_model", "mlp")
    assert load_submission("proxy:mlp").code_hash == base.code_hash
    assert load_submission("proxy:mlp", config={"hidden": 7}).code_hash != base.code_hash
    assert load_submission("proxy:linear").code_hash != base.code_hash
