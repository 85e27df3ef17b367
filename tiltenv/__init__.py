"""tiltenv: Gymnasium contextual bandits for reward-model overoptimization.

Importing ``tiltenv`` registers the environments::

    import gymnasium as gym
    import tiltenv                      # or: gym.register_envs(tiltenv)
    env = gym.make("tiltenv/Hump-v0")  # or, without the import: gym.make("tiltenv:tiltenv/Hump-v0")
    venv = gym.make_vec("tiltenv/Hump-v0", num_envs=1024)   # native torch vector env
    tiltenv.evaluate(policy, env)       # exact gold metrics from the judge

Every task parameter is a keyword argument recorded in ``env.spec.kwargs`` (``env.spec.to_json()`` is
the provenance record). Ids carry ``-vN``; N is bumped whenever the gold, labels or proxy change.
"""

from __future__ import annotations

import dataclasses

import gymnasium as gym

from tiltenv.worlds.config import TabularConfig, TaskConfig
from tiltenv.worlds.evaluation import best_of_n_sweep, evaluate, tilt_sweep
from tiltenv.rewards.links import LINKS, get_link
from tiltenv.worlds.multiobjective import MultiObjectiveConfig
from tiltenv.worlds.tokens import TokenConfig
from tiltenv.worlds.world import Judge, PublicTask, World, make_world

__version__ = "0.1.0"

__all__ = [
    "TaskConfig",
    "TabularConfig",
    "MultiObjectiveConfig",
    "TokenConfig",
    "make_world",
    "World",
    "PublicTask",
    "Judge",
    "evaluate",
    "tilt_sweep",
    "best_of_n_sweep",
    "LINKS",
    "get_link",
    "TASKS",
    "register_all",
]


def _defaults(cls: type) -> dict:
    return {f.name: f.default for f in dataclasses.fields(cls)}


#: Registered tasks: name -> (config class, preset overrides, the phenomenon it isolates).
TASKS: dict[str, tuple[type, dict, str]] = {
    "SingleIndex": (TaskConfig, {}, "General single-index task; every TaskConfig field is a kwarg."),
    "Linear": (
        TaskConfig,
        {"link": "linear", "K": 256},
        "Control: monotone linear gold; best-of-n / tilting on the proxy must not overoptimize.",
    ),
    "Hump": (
        TaskConfig,
        {"link": "hump", "K": 256},
        "Non-monotone gold (peaks at z = 1.5): best-of-n / tilting on the proxy shows gold peaking then falling.",
    ),
    "HighExponent": (
        TaskConfig,
        {"link": "he3", "d": 64, "K": 16, "label_kind": "pointwise", "n_labels": 2560, "proxy": "two_stage"},
        "Hard link (he3: information exponent 3, generative exponent 1; or link='he2'): the two-stage proxy "
        "recovers θ* only with a finite reward-weighting temperature beta1 (he3); for he2 weighting cannot help.",
    ),
    "NoisyLabels": (
        TaskConfig,
        {"flip_rate": 0.25, "proxy": "mlp"},
        "Label noise (25% symmetric flips, Coste et al.): the learned proxy ranks worse at the same label budget.",
    ),
    "Spurious": (
        TaskConfig,
        {"label_bias": 1.0, "K": 64, "proxy": "mlp"},
        "Biased labeler (utility r* + <v, x>, v ⟂ θ*): the proxy rewards the spurious direction, so optimizing "
        "it spends KL on v and falls behind the gold frontier.",
    ),
    "Ensemble": (
        TaskConfig,
        {"link": "hump", "K": 256, "n_labels": 500, "proxy": "ensemble"},
        "Ensemble proxies (k=5 bootstrap MLPs; proxy_kwargs picks aggregator mean/min/uwo/median/mean_minus_std "
        "and diversity) on an overoptimizing hump: does conservative aggregation reduce the gold drop?",
    ),
    "AIFeedback": (
        TaskConfig,
        {"label_kind": "ai", "n_labels": 20_000, "ai_labeler_labels": 500, "ai_bias": 0.5, "K": 16, "beta": 0.1},
        "RLAIF: 20,000 AI labels (cost 0.001 each: 20) from a labeler model fit on 500 gold-labeled pairs, with a "
        "self-preference bias toward a style direction; tiltenv.lifecycle.label_cost_trade weighs them against 20 "
        "human labels as the bias grows.",
    ),
    "Shift": (
        TaskConfig,
        {"link": "hump", "K": 64, "proxy": "mlp", "shift_length_scale": 0.3},
        "Distribution shift: the labels' contexts keep 30% of their spread along a length-like direction at 45° to θ*, "
        "so the MLP proxy extrapolates where the optimized policy goes (tiltenv.lifecycle.shift_path).",
    ),
    "ActiveLabels": (
        TaskConfig,
        {"K": 64, "n_labels": 50, "label_budget": 500, "beta": 0.05},
        "Active labeling: a proxy from 50 labels plus a label channel of 500 more (tiltenv.lifecycle.active.open_label_channel) "
        "for online RLHF agents (baselines.active): gold reached vs labels spent.",
    ),
    "Tabular": (
        TabularConfig,
        {},
        "Explicit arms (gold, proxy, π_ref): controlled experiments from papers through the same agents and scorer.",
    ),
    "HelpfulHarmless": (
        MultiObjectiveConfig,
        {"n_objectives": 2, "cosines": -0.5, "K": 64, "n_labels": (2000, 500)},
        "Two conflicting dimensions (cos -0.5; helpful has 4x the labels of harmless): per-dimension reward models "
        "and their weighted aggregate; optimizing one dimension costs the other; the exact Pareto front at any KL.",
    ),
    "MultiObjective": (
        MultiObjectiveConfig,
        {},
        "General multi-objective task: m hidden indices at set cosines, per-dimension links and labels, fixed / "
        "context-type / hidden (trade-off-revealed) weights; every MultiObjectiveConfig field is a kwarg.",
    ),
    "Tokens": (
        TokenConfig,
        {},
        "Token sequences: an autoregressive policy emits L tokens over V, one per step, proxy reward at the end; "
        "all V^L responses are enumerated, so gold value, KL, J*_β and the best-of-n law stay exact (tiltenv.worlds.tokens).",
    ),
}

#: Env classes of the config classes that are not single-index: (entry point, vector entry point).
_ENTRY_POINTS = {
    TabularConfig: ("tiltenv.envs:TabularEnv", "tiltenv.envs:TabularVectorEnv"),
    MultiObjectiveConfig: ("tiltenv.envs.mo_envs:MultiObjectiveEnv", "tiltenv.envs.mo_envs:MultiObjectiveVectorEnv"),
    TokenConfig: ("tiltenv.envs.tokens:TokenEnv", "tiltenv.envs.tokens:TokenVectorEnv"),
}

VERSION = 0


def register_all() -> None:
    """Register every task id (idempotent)."""
    for name, (cls, preset, _doc) in TASKS.items():
        env_id = f"tiltenv/{name}-v{VERSION}"
        if env_id in gym.registry:
            continue
        entry, vector_entry = _ENTRY_POINTS.get(cls, ("tiltenv.envs:TiltEnv", "tiltenv.envs:TiltVectorEnv"))
        kwargs = {**_defaults(cls), **preset}
        gym.register(id=env_id, entry_point=entry, vector_entry_point=vector_entry, kwargs=kwargs)


register_all()


# --- moved modules (regroup by concern, issue 20 item 0): tiltenv._moved ---
from tiltenv import _moved  # noqa: E402

_moved.install()


def __getattr__(name: str):
    """``tiltenv.links`` (an old module path, :mod:`tiltenv._moved`) as an attribute."""
    return _moved.attribute(name)
# --- end of moved modules ---
