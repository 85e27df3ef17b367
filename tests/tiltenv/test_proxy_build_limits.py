"""Proxy builds: option ranges by estimated cost, progress for long builds, Ctrl-C safety, cache fallbacks."""

from __future__ import annotations

import warnings

import gymnasium as gym
import pytest

import tiltenv  # noqa: F401
from tiltenv import TaskConfig, make_world, proxy_cache
from tiltenv.proxies import PROXIES

CFG = dict(d=8, K=8, n_labels=400, n_eval_contexts=64, n_norm_contexts=256, proxy="mlp", proxy_kwargs={"epochs": 5})


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TILTENV_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("TILTENV_PROXY_CACHE", "1")
    return tmp_path / "proxies"


@pytest.mark.parametrize("proxy, kwargs, knob", [
    ("mlp", {"epochs": 10**6}, "epochs"),
    ("mlp", {"width": 100_000}, "width"),
    ("ensemble", {"k": 1024, "member_kwargs": {"width": 4096}}, "k and the member"),
    ("two_stage", {"width": 1_000_000}, "width"),
])
def test_options_that_would_train_for_hours_are_refused_up_front(proxy, kwargs, knob, monkeypatch):
    monkeypatch.delenv("TILTENV_ALLOW_LONG_BUILDS", raising=False)
    with pytest.raises(ValueError, match=rf"would take about .* h to train.*{knob}.*TILTENV_ALLOW_LONG_BUILDS"):
        gym.make("tiltenv/SingleIndex-v0", proxy=proxy, proxy_kwargs=kwargs)
    monkeypatch.setenv("TILTENV_ALLOW_LONG_BUILDS", "1")
    TaskConfig(proxy=proxy, proxy_kwargs=kwargs)  # the config is accepted when the user means it
    TaskConfig(proxy="ensemble")  # and the defaults are far from the limit


def test_long_builds_announce_themselves(cache, monkeypatch, capsys):
    monkeypatch.setattr(proxy_cache, "ANNOUNCE_SECONDS", 0.0)
    make_world(TaskConfig(**CFG), fresh=True)
    assert "training the 'mlp' proxy (about" in capsys.readouterr().err
    monkeypatch.setattr(proxy_cache, "ANNOUNCE_SECONDS", 1e9)
    make_world(TaskConfig(**CFG, seed=1), fresh=True)
    assert "training" not in capsys.readouterr().err


def test_ctrl_c_during_a_build_leaves_no_partial_entry(cache, monkeypatch):
    spec = PROXIES["mlp"]

    def interrupted(options, ctx):
        raise KeyboardInterrupt

    import dataclasses

    monkeypatch.setitem(PROXIES, "mlp", dataclasses.replace(spec, build=interrupted))
    with pytest.raises(KeyboardInterrupt):
        make_world(TaskConfig(**CFG), fresh=True)
    assert not list(cache.glob("*.pt")) and not list(cache.glob("*.tmp"))
    monkeypatch.undo()
    monkeypatch.setenv("TILTENV_CACHE_DIR", str(cache.parent))
    make_world(TaskConfig(**CFG), fresh=True)  # the next run builds and stores it
    assert len(list(cache.glob("*.pt"))) == 1


def test_malformed_cache_switch_warns_and_keeps_the_cache(cache, monkeypatch):
    monkeypatch.setenv("TILTENV_PROXY_CACHE", "maybe")
    with pytest.warns(UserWarning, match="TILTENV_PROXY_CACHE='maybe' is not one of"):
        make_world(TaskConfig(**CFG), fresh=True)
    assert len(list(cache.glob("*.pt"))) == 1
    for off in ("0", "off", " FALSE "):
        monkeypatch.setenv("TILTENV_PROXY_CACHE", off)
        assert proxy_cache.cache_enabled() is False


def test_unusable_lock_warns_and_builds(cache, monkeypatch):
    cfg = TaskConfig(**CFG)
    spec = PROXIES["mlp"]
    from tiltenv.proxies import parse_options

    key = proxy_cache.cache_key(cfg, spec, parse_options("mlp", dict(cfg.proxy_kwargs)))
    cache.mkdir(parents=True)
    (cache / f"mlp-{key[:32]}.pt.lock").mkdir()  # a directory where the lock file should be
    with pytest.warns(UserWarning, match="lock .* is not usable"):
        world = make_world(cfg, fresh=True)
    assert world.task.proxy is not None and len(list(cache.glob("*.pt"))) == 1

    def no_flock(fd, op):
        raise OSError(37, "No locks available")

    monkeypatch.setattr(proxy_cache.fcntl, "flock", no_flock)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        make_world(cfg, fresh=True)  # a hit does not need the lock
    with pytest.warns(UserWarning, match="cannot be taken"):
        make_world(TaskConfig(**{**CFG, "seed": 3}), fresh=True)
