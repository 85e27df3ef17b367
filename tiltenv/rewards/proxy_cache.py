"""On-disk cache of trained proxies.

Proxies whose :class:`~tiltenv.rewards.proxies.ProxySpec` has a ``skeleton`` (``mlp``, ``two_stage``,
``ensemble``) are trained once per configuration and stored as a ``state_dict``; ``gold``, ``linear`` and
``parametric`` build instantly and are never cached.

* **Key**: SHA-256 of every :class:`~tiltenv.worlds.config.TaskConfig` field the proxy build reads (all of them
  except :data:`NOT_IN_PROXY`, which the world only uses after the build), the proxy options minus the
  spec's ``cache_ignore`` (e.g. an ensemble's aggregator, applied at inference), :data:`PROXY_VERSION`,
  the torch version and the training device type (CPU and CUDA training round differently).
* **Location**: ``$TILTENV_CACHE_DIR/proxies`` (default ``~/.cache/tiltenv/proxies``), read at each
  build. ``TILTENV_PROXY_CACHE=0`` disables the cache.
* **Atomic, concurrent-safe**: an entry is written to a temporary file in the same directory and moved
  into place with ``os.replace`` (readers see the old or the new file, never a partial one); builders of
  the same key serialize on an ``fcntl`` lock file (where available), so the second waits and loads what
  the first wrote. Without ``fcntl`` both build and the last identical write wins.
* **Integrity**: each entry stores its key and a SHA-256 of its tensors; a truncated, corrupted or
  mismatched entry is rebuilt with a :class:`warnings.warn`. Entries are loaded with
  ``torch.load(weights_only=True)`` (no arbitrary unpickling).

Bump :data:`PROXY_VERSION` whenever a change to training code changes trained parameters.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path
from typing import Any

import torch

from tiltenv.rewards.proxies import Proxy, ProxyContext, ProxySpec
from tiltenv.rewards.reward_models import resolve_device

try:  # POSIX only
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

__all__ = ["PROXY_VERSION", "NOT_IN_PROXY", "cache_dir", "cache_enabled", "cache_key", "build_proxy", "clear", "stats"]

#: Version of the proxy-training code; part of every cache key.
PROXY_VERSION = 3  # 2: MLP members trained together with batched weights (train_mlps); 3: fused AdamW on
# every device, ensemble members normalized on one shared sample in one batched forward
#: TaskConfig fields that the proxy build never reads (left out of the key so, e.g., a β sweep reuses a proxy).
NOT_IN_PROXY = ("beta", "n_eval_contexts", "n_norm_contexts", "human_label_cost", "ai_label_cost",
                "label_cost_budget", "label_budget")
#: Counters of this process's cache events (for tests and benchmarks).
stats = {"hits": 0, "misses": 0, "rebuilt": 0, "uncached": 0}


def cache_dir() -> Path:
    """``$TILTENV_CACHE_DIR/proxies`` (default ``~/.cache/tiltenv/proxies``)."""
    root = os.environ.get("TILTENV_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "tiltenv")
    return Path(root) / "proxies"


_ON, _OFF = ("1", "true", "on", "yes", ""), ("0", "false", "off", "no")


def cache_enabled() -> bool:
    """``TILTENV_PROXY_CACHE``: 1/true/on/yes (default) or 0/false/off/no; anything else warns and keeps the cache on."""
    raw = os.environ.get("TILTENV_PROXY_CACHE", "1")
    value = raw.strip().lower()
    if value in _OFF:
        return False
    if value not in _ON:
        warnings.warn(f"TILTENV_PROXY_CACHE={raw!r} is not one of 1/true/on/yes or 0/false/off/no; using the cache "
                      "(the default).", stacklevel=3)
    return True


def _training_device(options: Any) -> str:
    device = getattr(options, "device", "cpu")
    return resolve_device(device).type if isinstance(device, str) else torch.device(device).type


def cache_key(config: Any, spec: ProxySpec, options: Any) -> str:
    """The cache key of ``config``'s proxy (hex SHA-256)."""
    cfg = config.to_dict()
    for name in NOT_IN_PROXY:
        cfg.pop(name, None)
    # The validated options (defaults filled in) stand for proxy_kwargs: the key does not depend on
    # whether a default was spelled out.
    cfg.pop("proxy_kwargs", None)
    opts = {f.name: getattr(options, f.name) for f in fields(options) if f.name not in spec.cache_ignore}
    payload = {
        "config": cfg,
        "options": opts,
        "proxy_version": PROXY_VERSION,
        "torch": torch.__version__.split("+")[0],
        "device": _training_device(options),
    }
    blob = json.dumps(payload, sort_keys=True, default=repr)
    return hashlib.sha256(blob.encode()).hexdigest()


def _tensor_digest(state: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _load(path: Path, key: str, spec: ProxySpec, options: Any, d: int) -> Proxy:
    """Load an entry; raises on any problem (missing, truncated, corrupted, mismatched)."""
    blob = torch.load(path, map_location="cpu", weights_only=True)
    meta, state = blob["meta"], blob["state_dict"]
    if meta.get("key") != key or meta.get("proxy_version") != PROXY_VERSION:
        raise ValueError("entry belongs to another key or proxy version")
    if meta.get("digest") != _tensor_digest(state):
        raise ValueError("tensor checksum mismatch")
    proxy = spec.skeleton(options, d)
    proxy.load_state_dict(state, strict=True)
    return proxy.requires_grad_(False)


def _save(path: Path, key: str, spec: ProxySpec, proxy: Proxy) -> None:
    state = {k: v.detach().cpu().clone() for k, v in proxy.state_dict().items()}
    blob = {"meta": {"key": key, "kind": spec.name, "proxy_version": PROXY_VERSION,
                     "digest": _tensor_digest(state)}, "state_dict": state}
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(blob, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold the entry's lock file; an unusable lock (unwritable, a directory, no ``flock`` on this filesystem)
    warns and goes on without it (write-then-rename alone keeps entries whole; two builders may both train)."""
    if fcntl is None:  # pragma: no cover - write-then-rename alone (last identical writer wins)
        yield
        return
    lock_path = path.with_name(path.name + ".lock")
    try:
        lock = open(lock_path, "a+b")
    except OSError as err:
        warnings.warn(f"tiltenv proxy cache lock {lock_path} is not usable ({err}); building without the lock.",
                      stacklevel=4)
        yield
        return
    with lock:
        try:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        except OSError as err:
            warnings.warn(f"tiltenv proxy cache lock {lock_path} cannot be taken ({err}); building without the lock.",
                          stacklevel=4)
            yield
            return
        try:
            yield
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


#: Builds estimated to take longer than this many seconds announce themselves (a rich spinner on a terminal).
ANNOUNCE_SECONDS = 5.0


def _train(spec: ProxySpec, options: Any, ctx: ProxyContext, config: Any) -> Proxy:
    """``spec.build`` with progress for long builds: a line on stderr, and a rich spinner with the elapsed time
    when stderr is a terminal. Ctrl-C stops it before anything is written (entries are saved only when complete)."""
    import sys

    from tiltenv._cost import proxy_seconds

    try:
        est = proxy_seconds(spec.name, options, d=ctx.d, n_labels=getattr(config, "n_labels", 0),
                            label_kind=getattr(config, "label_kind", "pairwise"),
                            seq_len=max(1, getattr(config, "prompt_len", 0) + getattr(config, "L", 0)))
    except Exception:  # an estimate must never stop a build
        est = 0.0
    if est < ANNOUNCE_SECONDS:
        return spec.build(options, ctx)
    what = f"training the {spec.name!r} proxy (about {est:.0f} s on a 2-core CPU; cached afterwards)"
    try:
        from rich.console import Console

        console = Console(stderr=True)
    except ImportError:
        console = None
    if console is None or not console.is_terminal:
        print(f"tiltenv: {what} ...", file=sys.stderr, flush=True)
        return spec.build(options, ctx)
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    with Progress(SpinnerColumn(), TextColumn("tiltenv: {task.description}"), TimeElapsedColumn(),
                  console=console, transient=True) as progress:
        progress.add_task(what, total=None)
        return spec.build(options, ctx)


def build_proxy(spec: ProxySpec, options: Any, ctx: ProxyContext, config: Any) -> Proxy:
    """``spec.build(options, ctx)``, through the on-disk cache when ``spec`` is cacheable.

    Returns the proxy before the world's π_ref normalization (identity ``shift``/``scale``).
    """
    if spec.skeleton is None or not cache_enabled():
        stats["uncached"] += 1
        return _train(spec, options, ctx, config)
    key = cache_key(config, spec, options)
    directory = cache_dir()
    path = directory / f"{spec.name}-{key[:32]}.pt"
    if path.exists():  # fast path: entries are complete once visible (atomic rename)
        with contextlib.suppress(Exception):
            proxy = _load(path, key, spec, options, ctx.d)
            stats["hits"] += 1
            return proxy
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        warnings.warn(f"tiltenv proxy cache directory {directory} is not usable ({err}); training without cache.",
                      stacklevel=2)
        stats["uncached"] += 1
        return _train(spec, options, ctx, config)
    with _locked(path):
        if path.exists():
            try:
                proxy = _load(path, key, spec, options, ctx.d)
                stats["hits"] += 1
                return proxy
            except Exception as err:  # truncated / corrupted / foreign entry
                reason = (str(err).strip().splitlines() or [""])[0][:160]
                warnings.warn(f"tiltenv proxy cache entry {path} is unreadable ({type(err).__name__}: {reason}); "
                              "rebuilding it.", stacklevel=2)
                stats["rebuilt"] += 1
        else:
            stats["misses"] += 1
        proxy = _train(spec, options, ctx, config)  # a Ctrl-C here leaves no entry: only complete ones are saved
        try:
            _save(path, key, spec, proxy)
        except OSError as err:
            warnings.warn(f"could not write tiltenv proxy cache entry {path} ({err}).", stacklevel=2)
    return proxy


def clear() -> int:
    """Delete every cached proxy in :func:`cache_dir`; returns the number of entries removed."""
    n = 0
    directory = cache_dir()
    if directory.is_dir():
        for p in directory.iterdir():
            if p.suffix in (".pt", ".lock", ".tmp"):
                with contextlib.suppress(OSError):
                    p.unlink()
                    n += p.suffix == ".pt"
    return n
