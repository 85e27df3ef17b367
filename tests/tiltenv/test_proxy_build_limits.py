"""Proxy builds: option ranges by estimated cost, progress for long builds, Ctrl-C safety, cache fallbacks."""

from __future__ import annotations

import warnings

import gymnasium as gym
import pytest

import tiltenv  # noqa: F401
from tiltenv import TaskConfig, make_world
from tiltenv.rewards import proxy_cache
from tiltenv.rewards.proxies import PROXIES

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


def _seconds(proxy, n_labels=16_384, d=64, label_kind="pairwise", **kwargs):
    from tiltenv._cost import proxy_seconds
    from tiltenv.rewards.proxy_base import parse_options

    return proxy_seconds(proxy, parse_options(proxy, kwargs), d=d, n_labels=n_labels, label_kind=label_kind)


def test_build_estimate_counts_optimizer_steps_and_batched_members():
    from tiltenv import _cost

    # same arithmetic, 4x the steps: the difference is the steps' fixed cost, nothing else
    small, large = _seconds("mlp", batch_size=32), _seconds("mlp", batch_size=128)
    steps = 20 * (16_384 // 32 - 16_384 // 128)
    assert small - large == pytest.approx(steps * _cost.STEP_SECONDS, rel=1e-9)
    # full batch: one step an epoch; batch_size >= n_labels is full batch too
    assert _seconds("mlp", batch_size=0) == _seconds("mlp", batch_size=16_384) == _seconds("mlp", batch_size=10**6)
    # mlp members train together (one step for all): less than k separate builds, more than one
    one, five = _seconds("mlp"), _seconds("ensemble", k=5)
    assert one < five < 5 * one
    # closed-form members are built one after another: exactly k builds
    assert _seconds("ensemble", k=5, member="two_stage") == pytest.approx(5 * _seconds("two_stage"), rel=1e-12)
    # a shared first layer trains once; own features add a readout refit on top of k members
    boot = _seconds("ensemble", k=5)
    assert _seconds("ensemble", k=5, diversity="shared_features") < boot < _seconds("ensemble", k=5,
                                                                                     diversity="independent_features")
    # monotone in every option that lengthens training
    for proxy, option, lo, hi in [("mlp", "epochs", 10, 20), ("mlp", "width", 32, 64), ("mlp", "depth", 1, 2),
                                  ("ensemble", "k", 2, 5), ("two_stage", "width", 128, 256)]:
        assert _seconds(proxy, **{option: lo}) < _seconds(proxy, **{option: hi}), (proxy, option)
    assert _seconds("mlp", n_labels=2048) < _seconds("mlp") and _seconds("mlp", d=16) < _seconds("mlp")


def test_default_builds_of_the_benchmark_size_are_not_announced_as_long():
    # the flops-only estimate (2 GFLOP/s) announced the 16k-label mlp as "about 16 s" (it trains in ~1.6 s)
    # and the ensemble of 5 as "about 81 s" (~3.6 s)
    for proxy in ("mlp", "ensemble", "two_stage"):
        assert _seconds(proxy) < proxy_cache.ANNOUNCE_SECONDS, proxy


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
    from tiltenv.rewards.proxies import parse_options

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
