"""Old module paths of tiltenv, from before the regroup by concern (issue 20, item 0).

An old dotted path stays importable and is THE SAME module object as the new one: ``import tiltenv.links``,
``from tiltenv.links import get_link``, the attribute ``tiltenv.links`` (:func:`tiltenv.__getattr__`) and pickles
that name ``tiltenv.links.X`` all reach ``tiltenv.rewards.links``. A ``sys.meta_path`` finder answers the old
names (an alias, not a copy); nothing is imported before it is asked for.
"""

from __future__ import annotations

import importlib
import sys

#: Old dotted path -> new one (a package's submodules follow it: ``tiltenv.tokens.tree`` ->
#: ``tiltenv.worlds.tokens.tree``).
MOVED_MODULES: dict[str, str] = {
    "tiltenv.active": "tiltenv.lifecycle.active",
    "tiltenv.calibration": "tiltenv.lifecycle.calibration",
    "tiltenv.config": "tiltenv.worlds.config",
    "tiltenv.diagnostics": "tiltenv.lifecycle.diagnostics",
    "tiltenv.evaluation": "tiltenv.worlds.evaluation",
    "tiltenv.families": "tiltenv.rewards.families",
    "tiltenv.feedback": "tiltenv.rewards.feedback",
    "tiltenv.labels": "tiltenv.rewards.labels",
    "tiltenv.links": "tiltenv.rewards.links",
    "tiltenv.mo_envs": "tiltenv.envs.mo_envs",
    "tiltenv.monitor": "tiltenv.lifecycle.monitor",
    "tiltenv.multiobjective": "tiltenv.worlds.multiobjective",
    "tiltenv.proxies": "tiltenv.rewards.proxies",
    "tiltenv.proxy_base": "tiltenv.rewards.proxy_base",
    "tiltenv.proxy_cache": "tiltenv.rewards.proxy_cache",
    "tiltenv.reward_models": "tiltenv.rewards.reward_models",
    "tiltenv.scoring": "tiltenv.worlds.scoring",
    "tiltenv.tokens": "tiltenv.worlds.tokens",
    "tiltenv.tokens.env": "tiltenv.envs.tokens",
    "tiltenv.world": "tiltenv.worlds.world",
}


def new_name(name: str) -> str | None:
    """The new dotted path of an old one (its longest moved prefix replaced), or None."""
    head, tail = name, ""
    while "." in head:
        if head in MOVED_MODULES:
            return MOVED_MODULES[head] + tail
        head, _, last = head.rpartition(".")
        tail = "." + last + tail
    return None


class MovedModules:
    """A ``sys.meta_path`` finder and loader: ``tiltenv.<old>[.sub]`` -> the module at its new path."""

    def find_spec(self, name, path=None, target=None):
        if not name.startswith("tiltenv.") or new_name(name) is None:
            return None
        import importlib.machinery

        return importlib.machinery.ModuleSpec(name, self)

    def create_module(self, spec):
        module = importlib.import_module(new_name(spec.name))
        spec.loader_state = module.__spec__  # the import system sets module.__spec__ to the alias's spec ...
        return module

    def exec_module(self, module) -> None:
        module.__spec__ = module.__spec__.loader_state  # ... which the module's own spec replaces here


def install() -> None:
    """Put the finder first on ``sys.meta_path`` (before the path finder, so that an old submodule path is never
    loaded a second time as a module of its own); idempotent."""
    if not any(type(f).__name__ == "MovedModules" and type(f).__module__ == __name__ for f in sys.meta_path):
        sys.meta_path.insert(0, MovedModules())


def attribute(name: str):
    """``tiltenv.<name>`` for an old module name (the package's ``__getattr__``)."""
    if "tiltenv." + name in MOVED_MODULES:
        return importlib.import_module("tiltenv." + name)  # the import sets it on the package too
    raise AttributeError(f"module 'tiltenv' has no attribute {name!r}")
