"""On-disk proxy cache: hits are identical and fast, keys cover what matters, corrupt entries rebuild."""

from __future__ import annotations

import dataclasses
import threading
import time
import warnings

import pytest
import torch

from tiltenv import TaskConfig, make_world
from tiltenv.rewards import proxy_cache
from tiltenv.rewards.proxies import PROXIES, ProxySpec
from tiltenv.rewards.reward_models import MLPOptions, _mlp_skeleton

CFG = dict(d=8, K=8, n_labels=400, n_eval_contexts=64, n_norm_contexts=256, proxy="mlp", proxy_kwargs={"epochs": 5})


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A fresh, empty cache directory for this test."""
    monkeypatch.setenv("TILTENV_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("TILTENV_PROXY_CACHE", "1")
    return tmp_path / "proxies"


def _entries(cache):
    return sorted(cache.glob("*.pt")) if cache.exists() else []


def _same_params(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture
def counted(monkeypatch):
    """Counters of proxy builds (the mlp spec's builder), training calls (train_mlps) and entry reads."""
    from tiltenv.rewards import reward_models as R

    n = {"builds": 0, "trainings": 0, "reads": 0}
    spec = PROXIES["mlp"]

    def build(opts, ctx):
        n["builds"] += 1
        return spec.build(opts, ctx)

    def count(name, fn):
        def wrapped(*a, **k):
            n[name] += 1
            return fn(*a, **k)
        return wrapped

    monkeypatch.setitem(PROXIES, "mlp", dataclasses.replace(spec, build=build))
    monkeypatch.setattr(R, "train_mlps", count("trainings", R.train_mlps))
    monkeypatch.setattr(proxy_cache.torch, "load", count("reads", torch.load))
    return n


def test_hit_returns_identical_parameters_without_training(cache, counted):
    cfg = TaskConfig(**CFG)
    before = dict(proxy_cache.stats)
    first = make_world(cfg, fresh=True)
    assert len(_entries(cache)) == 1 and proxy_cache.stats["misses"] == before["misses"] + 1
    assert counted == {"builds": 1, "trainings": 1, "reads": 0}
    second = make_world(cfg, fresh=True)
    assert proxy_cache.stats["hits"] == before["hits"] + 1
    assert counted == {"builds": 1, "trainings": 1, "reads": 1}  # a hit reads the entry once, trains nothing
    assert _same_params(first.task.proxy, second.task.proxy)
    assert torch.equal(first.judge.eval_proxy, second.judge.eval_proxy)
    # The load path alone, for the default mlp: one read, no build.
    spec = PROXIES["mlp"]
    opts = MLPOptions(epochs=5)
    path = _entries(cache)[0]
    key = proxy_cache.cache_key(cfg, spec, opts)
    loaded = proxy_cache._load(path, key, spec, opts, cfg.d)
    assert counted == {"builds": 1, "trainings": 1, "reads": 2}
    assert all(torch.equal(v, first.task.proxy.state_dict()[k]) for k, v in loaded.state_dict().items()
               if k not in ("shift", "scale"))  # the world normalizes after the build


def test_keys_track_what_changes_the_proxy(cache):
    cfg = TaskConfig(**CFG)
    make_world(cfg, fresh=True)
    # Fields the proxy build never reads hit the same entry ...
    make_world(cfg.replace(beta=0.9, n_eval_contexts=32, n_norm_contexts=128), fresh=True)
    assert len(_entries(cache)) == 1
    # ... everything else is a new entry.
    make_world(cfg.replace(n_labels=401), fresh=True)
    make_world(cfg.replace(proxy_kwargs={"epochs": 6}), fresh=True)
    make_world(cfg.replace(seed=1), fresh=True)
    assert len(_entries(cache)) == 4
    # Spelling out a default option does not change the key.
    spec, opts = PROXIES["mlp"], MLPOptions(epochs=5)
    assert proxy_cache.cache_key(cfg, spec, opts) == proxy_cache.cache_key(
        cfg.replace(proxy_kwargs={"epochs": 5, "width": 64}), spec, MLPOptions(epochs=5, width=64))


def test_proxy_version_is_part_of_the_key(cache, monkeypatch):
    cfg = TaskConfig(**CFG)
    make_world(cfg, fresh=True)
    monkeypatch.setattr(proxy_cache, "PROXY_VERSION", proxy_cache.PROXY_VERSION + 1)
    make_world(cfg, fresh=True)
    assert len(_entries(cache)) == 2


def test_ensemble_aggregator_reuses_the_members(cache):
    kw = {"k": 2, "member_kwargs": {"epochs": 3}}
    cfg = TaskConfig(**{**CFG, "proxy": "ensemble", "proxy_kwargs": kw})
    make_world(cfg, fresh=True)
    hits = proxy_cache.stats["hits"]
    w = make_world(cfg.replace(proxy_kwargs={**kw, "aggregator": "uwo", "lam": 2.0}), fresh=True)
    assert proxy_cache.stats["hits"] == hits + 1 and len(_entries(cache)) == 1
    assert w.task.proxy.aggregator == "uwo" and w.task.proxy.lam == 2.0


@pytest.mark.parametrize("damage", ["truncate", "garbage", "flip_a_weight"])
def test_corrupted_entry_is_rebuilt_with_a_warning(cache, damage):
    cfg = TaskConfig(**CFG)
    good = make_world(cfg, fresh=True)
    (path,) = _entries(cache)
    blob = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(blob[: len(blob) // 2])
    elif damage == "garbage":
        path.write_bytes(b"not a torch file")
    else:  # a valid file whose tensors no longer match their checksum
        entry = torch.load(path, weights_only=True)
        name = next(k for k in entry["state_dict"] if k.endswith("weight"))
        entry["state_dict"][name].view(-1)[0] += 1.0
        torch.save(entry, path)
    with pytest.warns(UserWarning, match="unreadable.*rebuilding"):
        rebuilt = make_world(cfg, fresh=True)
    assert _same_params(good.task.proxy, rebuilt.task.proxy)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = make_world(cfg, fresh=True)  # the rebuilt entry is valid again
    assert _same_params(good.task.proxy, again.task.proxy)


def test_no_partial_files_and_cache_can_be_disabled(cache, monkeypatch):
    make_world(TaskConfig(**CFG), fresh=True)
    assert not list(cache.glob("*.tmp"))
    monkeypatch.setenv("TILTENV_PROXY_CACHE", "0")
    make_world(TaskConfig(**{**CFG, "seed": 5}), fresh=True)
    assert len(_entries(cache)) == 1
    assert proxy_cache.clear() == 1 and not _entries(cache)


def test_concurrent_builders_train_once(cache):
    """Builders of one key serialize on the lock: one trains, the others load its entry."""
    calls = []

    def slow_build(opts, ctx):
        calls.append(1)
        time.sleep(0.3)
        model = _mlp_skeleton(opts, ctx.d)
        model.init_parameters(torch.Generator().manual_seed(0))
        return model.requires_grad_(False)

    spec = ProxySpec("mlp", MLPOptions, slow_build, skeleton=_mlp_skeleton)
    cfg = TaskConfig(**CFG)
    ctx = type("Ctx", (), {"d": cfg.d})()
    results, errors = [None] * 4, []

    def worker(i):
        try:
            results[i] = proxy_cache.build_proxy(spec, MLPOptions(epochs=5), ctx, cfg)
        except Exception as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(calls) == 1
    assert all(_same_params(results[0], r) for r in results[1:])
    assert len(_entries(cache)) == 1


def test_concurrent_processes_share_one_entry(cache, tmp_path):
    """Two interpreters building the same proxy at once: one entry, identical proxies, no warnings."""
    import os
    import subprocess
    import sys

    code = (
        "import warnings, hashlib, torch; warnings.simplefilter('error'); torch.set_num_threads(1)\n"
        "from tiltenv import TaskConfig, make_world\n"
        f"w = make_world(TaskConfig(**{CFG!r}))\n"
        "print(hashlib.sha256(w.judge.eval_proxy.numpy().tobytes()).hexdigest())\n"
    )
    env = {**os.environ, "TILTENV_CACHE_DIR": str(cache.parent), "TILTENV_PROXY_CACHE": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=env) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-500:] for o in outs]
    digests = {o[0].strip() for o in outs}
    assert len(digests) == 1
    assert len(_entries(cache)) == 1 and not list(cache.glob("*.tmp"))
