"""The package imports only downward: no cycles in tiltenv's import graph (late imports included)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / "tiltenv"


def _modules() -> dict[str, Path]:
    mods = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = path
    return mods


def _imports(path: Path, name: str, mods: dict[str, Path]) -> set[str]:
    """Every tiltenv module that ``path`` imports, anywhere in the file (function-level imports too)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            # ``from pkg import sub`` imports the submodule sub
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in mods:  # ``import tiltenv.x.y`` -> the deepest module that exists
                t = t.rpartition(".")[0]
            if t.startswith("tiltenv") and t != name:
                out.add(t)
    return out


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    return {name: _imports(path, name, mods) for name, path in mods.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(u: str) -> list[str] | None:
        state[u] = 1
        stack.append(u)
        for v in sorted(graph.get(u, ())):
            if state.get(v) == 1:
                return stack[stack.index(v):] + [v]
            if v not in state and (found := visit(v)):
                return found
        state[u] = 2
        stack.pop()
        return None

    for u in sorted(graph):
        if u not in state and (found := visit(u)):
            return found
    return None


def test_tiltenv_import_graph_has_no_cycle():
    graph = _graph()
    assert {"tiltenv.worlds.world", "tiltenv.worlds.evaluation", "tiltenv.envs", "tiltenv.rewards.proxies", "tiltenv.metrics.policy"} <= set(graph)
    cycle = _cycle(graph)
    assert cycle is None, " -> ".join(cycle)


def test_the_cycle_finder_finds_the_circles_that_were_removed():
    # the two circles of issue 10, as they were: world -> evaluation -> envs -> world, proxies <-> reward_models
    old = {"tiltenv.worlds.world": {"tiltenv.worlds.evaluation"}, "tiltenv.worlds.evaluation": {"tiltenv.envs"},
           "tiltenv.envs": {"tiltenv.worlds.world"}}
    assert _cycle(old) == ["tiltenv.envs", "tiltenv.worlds.world", "tiltenv.worlds.evaluation", "tiltenv.envs"]
    assert _cycle({"tiltenv.rewards.proxies": {"tiltenv.rewards.reward_models"}, "tiltenv.rewards.reward_models": {"tiltenv.rewards.proxies"}})
    graph = _graph()  # the parser sees late (function-level) and ``from tiltenv import x`` imports
    assert "tiltenv.metrics" in graph["tiltenv.worlds.evaluation"] and "tiltenv.worlds.scoring" in graph["tiltenv.worlds.world"]


def test_public_names_stay_importable_where_they_were():
    from tiltenv.envs import _format_obs, _observation_space  # noqa: F401
    from tiltenv.worlds.evaluation import evaluate_on_judge, metrics_of_logp, policy_logp, resolve_judge  # noqa: F401
    from tiltenv.rewards.proxies import PROXIES, LinearProxy, Proxy, _build_linear, fit_linear_bt  # noqa: F401

    assert {"mlp", "two_stage", "ensemble", "parametric", "gold", "linear"} <= set(PROXIES)
