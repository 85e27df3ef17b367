"""What a user submits: a built-in baseline, an importable module, or a Python file.

``load_submission(ref)`` validates a submission **in the scorer without executing it** (the code runs only
in the sandbox, :mod:`leaderboard.sandbox`) and identifies it by a hash of its code:

=====================================  ==========  =====================================================
``ref``                                kind        code hash (sha256 hex)
=====================================  ==========  =====================================================
``"reinforce"`` (+ ``config=``)        baseline    the files defining the agent and config classes (and
                                                   ``baselines/base.py``, ``policy.py``) + sorted config JSON
``"pkg.mod:make_agent"``, ``"pkg.mod"``  module      the bytes of the module's source file (found with
                                                   ``importlib.util.find_spec``-style lookup, not imported)
``"path/agent.py"``, ``"agent.py:f"``  file        the bytes of the file
``"proxy:mlp"`` (reward-model track)   proxy       the library's proxy sources + the kind and its options:
                                                   a built-in reward model (``linear``, ``mlp``, ``two_stage``,
                                                   ``ensemble``), trained and scored in the scorer (trusted code)
=====================================  ==========  =====================================================

The factory defaults to ``make_agent`` (agent track) or ``make_reward_model`` (reward-model track); a
factory named ``make_reward_model`` selects the reward-model track. An agent has ``fit(task, budget,
checkpoint)`` and ``policy(candidates, ref_logp)``; a reward model has ``fit(preferences)`` and
``score(candidates)``. ``leaderboard/examples/`` holds one of each.

Example:
    >>> sub = load_submission("reinforce", config={"learning_rate": 0.1})
    >>> sub.kind, sub.track, len(sub.code_hash)
    ('baseline', 'agent', 64)
    >>> load_submission("reinforc")
    Traceback (most recent call last):
    ...
    ValueError: 'reinforc' is not a built-in baseline, an importable module or a Python file; baselines are ['best_of_n', 'dpo', 'grpo', 'label_ceiling', 'ppo', 'reinforce', 'rloo', 'sb3_ppo', 'tilt', 'token_best_of_n', 'token_dpo', 'token_grpo', 'token_ppo', 'token_reinforce', 'token_rloo']. Did you mean 'reinforce'?
"""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import importlib
import importlib.machinery
import importlib.util
import inspect
import json
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from leaderboard.spec import TRACKS
from tiltenv._validation import suggest

__all__ = ["Submission", "load_submission", "DEFAULT_FACTORIES", "EXAMPLES_DIR", "reserved_name", "check_name"]

#: Factory called when the ref names none, per track.
DEFAULT_FACTORIES = {"agent": "make_agent", "reward_model": "make_reward_model"}
#: The example submissions shipped with the package.
EXAMPLES_DIR = Path(__file__).resolve().parent / "examples"
_MODULE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_IDENT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class Submission:
    """A validated submission.

    Attributes:
        name: display name on the board.
        ref: what the user passed (``"reinforce"``, ``"pkg.mod:make_agent"``, ``"path/agent.py[:factory]"``).
        kind: ``"baseline"``, ``"module"`` or ``"file"``.
        track: ``"agent"`` or ``"reward_model"``.
        code_hash: sha256 hex of the code (see the module docstring).
        config: baseline config overrides (``kind == "baseline"``), else ``{}``.
        target: the baseline name, the dotted module name, or the absolute path of the file.
        factory: the factory the sandbox calls (``""`` for baselines).
        root: the directory to put on ``sys.path`` to import a module submission (else ``None``).
    """

    name: str
    ref: str
    kind: str
    track: str
    code_hash: str
    config: dict = field(default_factory=dict)
    target: str = ""
    factory: str = ""
    root: str | None = None


def _sha256_files(paths: list[Path], extra: bytes = b"") -> str:
    h = hashlib.sha256()
    for p in paths:
        data = p.read_bytes()
        h.update(p.name.encode() + b"\0" + len(data).to_bytes(8, "little") + data)
    h.update(extra)
    return h.hexdigest()


def _top_level_names(source: bytes, where: str) -> set[str]:
    """Names bound at the top level of a module (defs, classes, assignments, imports), without running it."""
    try:
        tree = ast.parse(source, filename=where)
    except SyntaxError as e:
        raise ValueError(f"{where} is not valid Python: {e.msg} (line {e.lineno}).") from None
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                names.update(n.id for n in ast.walk(t) if isinstance(n, ast.Name))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
    return names


def _default_track(source: bytes, where: str, track: str | None, factory: str | None) -> str | None:
    """With neither a track nor a factory given, a source that defines only ``make_reward_model`` is a reward model."""
    if track is None and factory is None:
        names = _top_level_names(source, where)
        if DEFAULT_FACTORIES["agent"] not in names and DEFAULT_FACTORIES["reward_model"] in names:
            return "reward_model"
    return track


def _check_factory(source: bytes, factory: str, where: str) -> None:
    names = _top_level_names(source, where)
    if factory not in names and "*" not in names:
        funcs = sorted(n for n in names if not n.startswith("_"))
        raise ValueError(f"{where} defines no top-level {factory!r} (it defines {funcs[:12]})." + suggest(factory, funcs))


def _resolve_track(track: str | None, factory: str | None) -> tuple[str, str]:
    if track is not None and track not in TRACKS:
        raise ValueError(f"track must be one of {list(TRACKS)} (got {track!r})." + suggest(str(track), TRACKS))
    if track is None:
        track = "reward_model" if factory == DEFAULT_FACTORIES["reward_model"] else "agent"
    if factory is not None and not _IDENT_RE.match(factory):
        raise ValueError(f"factory must be a Python identifier (got {factory!r}).")
    return track, factory or DEFAULT_FACTORIES[track]


def reserved_name(name: str) -> bool:
    """Names only the built-in entries may carry: a baseline's name (``tilt``, ``tilt(temperature=2)``) and
    ``proxy:<kind>`` (the built-in reward models)."""
    from baselines import ALL_BASELINES as BASELINES  # the token-level entries too

    name = str(name).strip()
    return name in BASELINES or name.startswith(PROXY_PREFIX) or any(name.startswith(b + "(") for b in BASELINES)


def check_name(name: Any, *, builtin_default: str | None = None) -> str:
    """A display name a submitter chose: non-empty, at most 200 characters, no ``@`` (the board writes versions of
    a name as ``name@hash``), not a built-in's name (:func:`reserved_name`) unless it is that built-in's own.

    Raises:
        ValueError: the name, and why it cannot be used.
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"name must be a non-empty string (got {name!r}).")
    name = name.strip()
    if len(name) > 200:
        raise ValueError(f"name must have at most 200 characters (got {len(name)}).")
    if "@" in name:
        raise ValueError(f"name {name!r} must not contain '@': the board names versions of a submission name@hash.")
    if reserved_name(name) and name != builtin_default:
        raise ValueError(f"name {name!r} is reserved for a built-in entry (baseline names, their configured "
                         f"variants 'name(...)' and '{PROXY_PREFIX}<kind>'); choose another name.")
    return name


def _find_module_spec(modname: str):
    """The spec of ``modname`` found on ``sys.path`` **without importing** any package of it."""
    parts = modname.split(".")
    spec = importlib.machinery.PathFinder.find_spec(parts[0], sys.path)
    for i in range(1, len(parts)):
        if spec is None or not spec.submodule_search_locations:
            return None
        spec = importlib.machinery.PathFinder.find_spec(".".join(parts[: i + 1]), list(spec.submodule_search_locations))
    return spec


def _baseline_submission(ref: str, name: str | None, track: str | None, config: dict | None) -> Submission:
    from baselines import ALL_BASELINES as BASELINES  # the token-level entries too
    from baselines.run import parse_overrides

    if track not in (None, "agent"):
        raise ValueError(f"built-in baseline {ref!r} is an agent, not a {track} submission.")
    agent_cls, config_cls = BASELINES[ref]
    overrides = parse_overrides(config_cls, dict(config or {}))
    full = dataclasses.asdict(config_cls(**overrides))  # validates the values
    files: set[Path] = set()
    for cls in (*agent_cls.__mro__, *config_cls.__mro__):
        mod = sys.modules.get(cls.__module__)
        if mod is not None and cls.__module__.split(".")[0] == "baselines":
            files.add(Path(inspect.getsourcefile(mod)).resolve())
    base = Path(inspect.getsourcefile(sys.modules["baselines.base"])).resolve().parent
    files |= {base / "base.py", base / "policy.py"}
    code_hash = _sha256_files(sorted(files), json.dumps(full, sort_keys=True, default=str).encode())
    shown = ", ".join(f"{k}={v!r}" for k, v in sorted(overrides.items()))
    default = f"{ref}({shown})" if shown else ref
    name = default if name is None else check_name(name, builtin_default=default)
    return Submission(name, ref, "baseline", "agent", code_hash,
                      dict(sorted(overrides.items())), target=ref, factory="")


#: Prefix of the built-in reward-model entries: ``proxy:<kind>``.
PROXY_PREFIX = "proxy:"


def _proxy_submission(ref: str, name: str | None, track: str | None, config: dict | None) -> Submission:
    """A library proxy kind as a reward-model entry (``proxy:mlp``); ``config`` holds its ``proxy_kwargs``."""
    from tiltenv.rewards.proxies import PROXIES

    kind = ref[len(PROXY_PREFIX):]
    if kind not in PROXIES:
        raise ValueError(f"{ref!r}: the proxy kind must be one of {sorted(PROXIES)} (got {kind!r})." + suggest(kind, PROXIES))
    if track not in (None, "reward_model"):
        raise ValueError(f"built-in proxy {ref!r} is a reward model, not a {track} submission.")
    files = sorted(Path(inspect.getsourcefile(importlib.import_module(m))).resolve()
                   for m in ("tiltenv.rewards.reward_models", "tiltenv.rewards.proxies", "tiltenv.rewards.labels",
                             "tiltenv.worlds.world"))  # the modules a built-in proxy's scores depend on
    opts = dict(sorted((config or {}).items()))
    code_hash = _sha256_files(files, json.dumps({"kind": kind, "proxy_kwargs": opts}, sort_keys=True, default=str).encode())
    shown = ", ".join(f"{k}={v!r}" for k, v in opts.items())
    default = f"{ref}({shown})" if shown else ref
    name = default if name is None else check_name(name, builtin_default=default)
    return Submission(name, ref, "proxy", "reward_model", code_hash, opts,
                      target=kind, factory="")


def load_submission(ref: str, *, name: str | None = None, track: str | None = None, config: dict | None = None) -> Submission:
    """Validate a submission reference (nothing of it is executed here).

    Args:
        ref: a baseline name (:data:`baselines.BASELINES`), ``"module.path[:factory]"`` or
            ``"path/to/file.py[:factory]"``.
        name: display name (default: the baseline name with its overrides, the module ref, or the file stem —
            the file name where the stem is a built-in's name); checked by :func:`check_name` (built-in names are
            reserved, no ``@``).
        track: ``"agent"`` or ``"reward_model"`` (default: ``reward_model`` when the factory is
            ``make_reward_model``, else ``agent``).
        config: config overrides of a baseline (validated against its config dataclass).
    Returns:
        :class:`Submission`.
    Raises:
        FileNotFoundError: a file ref whose file does not exist.
        ValueError: unknown baseline (with the closest name), module not found, no such factory in the
            source, invalid Python, a bad track, config overrides for a non-baseline.
        TypeError: ``ref`` is not a non-empty string.
    """
    from baselines import ALL_BASELINES as BASELINES  # the token-level entries too

    if not isinstance(ref, str) or not ref.strip():
        raise TypeError(f"ref must be a non-empty string (got {ref!r}).")
    ref = ref.strip()
    if name is not None and not (ref in BASELINES or ref.startswith(PROXY_PREFIX)):
        name = check_name(name)
    if ref in BASELINES:
        return _baseline_submission(ref, name, track, config)
    if ref.startswith(PROXY_PREFIX):
        return _proxy_submission(ref, name, track, config)
    if config:
        raise ValueError(f"config overrides apply to built-in baselines only ({sorted(BASELINES)}); {ref!r} is not one.")
    target, factory = ref, None
    if ":" in ref:
        head, tail = ref.rsplit(":", 1)
        if _IDENT_RE.match(tail):
            target, factory = head, tail
    looks_like_file = target.endswith(".py") or os.sep in target or "/" in target
    if looks_like_file:
        path = Path(target).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"submission file {str(path)!r} does not exist" + (" (it is a directory)." if path.is_dir() else "."))
        if path.suffix != ".py":
            raise ValueError(f"a submission file must be a .py file (got {str(path)!r}).")
        source = path.read_bytes()
        track, factory = _resolve_track(_default_track(source, str(path), track, factory), factory)
        _check_factory(source, factory, str(path))
        default = factory == DEFAULT_FACTORIES[track]
        shown = path.stem if default else f"{path.stem}:{factory}"
        if reserved_name(shown) or "@" in shown:  # a file tilt.py is not the built-in tilt
            shown = path.name if default else f"{path.name}:{factory}"
        return Submission(name or shown, ref, "file", track,
                          hashlib.sha256(source).hexdigest(), {}, target=str(path.resolve()), factory=factory)
    if not _MODULE_RE.match(target):
        raise ValueError(f"{ref!r} is not a built-in baseline ({sorted(BASELINES)}), a 'module.path[:factory]' or a "
                         f"'path/to/file.py[:factory]'." + suggest(target, BASELINES))
    spec = _find_module_spec(target)
    if spec is None:
        hint = suggest(target, BASELINES)
        if "." not in target and factory is None:
            raise ValueError(f"{target!r} is not a built-in baseline, an importable module or a Python file; "
                             f"baselines are {sorted(BASELINES)}.{hint}")
        raise ValueError(f"no module named {target!r} on the scorer's sys.path (looked it up without importing it)."
                         + hint)
    if not spec.origin or not spec.origin.endswith(".py") or not os.path.isfile(spec.origin):
        raise ValueError(f"module {target!r} has no Python source file ({spec.origin!r}); submit a .py module.")
    origin = Path(spec.origin).resolve()
    source = origin.read_bytes()
    track, factory = _resolve_track(_default_track(source, str(origin), track, factory), factory)
    _check_factory(source, factory, f"module {target!r} ({origin})")
    depth = target.count(".") + (1 if origin.name == "__init__.py" else 0)
    root = origin.parent
    for _ in range(depth):
        root = root.parent
    default = factory == DEFAULT_FACTORIES[track]
    shown = target if default and not reserved_name(target) else f"{target}:{factory}"
    return Submission(name or shown, ref, "module", track,
                      hashlib.sha256(source).hexdigest(), {}, target=target, factory=factory, root=str(root))
