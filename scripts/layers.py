"""How often a submission's path through the scorer climbs back up the layers (issue 20, item 0).

regroup: keep-old-names (this file names the modules of both layouts on purpose: the regroup leaves it alone)

**Groups**, lowest first (:data:`ORDER`): ``core`` (tiltenv's private helpers, the glossary, the observation
layout) < ``metrics`` (:mod:`tiltenv.metrics`) < ``rewards`` (links, gold families, labels and label sources,
proxies, reward models, their cache) < ``worlds`` (configs, the world builders, the judge's scoring, evaluation,
the token world) < ``envs`` (the Gymnasium envs) < ``lifecycle`` (calibration, diagnostics, active labels,
monitor, the life-cycle experiments) < ``api`` (``tiltenv`` itself, ``python -m tiltenv``, the sweep) <
``baselines`` < ``leaderboard``. :data:`TILTENV` places every tiltenv module under **both layouts** — the flat
one (``tiltenv.links``) and the regrouped one (``tiltenv.rewards.links``) — in the same group, so the same
script measures either tree.

**A climb back up** is a call from a function of a module in a lower group into a function of a module in a
higher group (callbacks included: an agent calling the scorer's checkpoint function is one). It is counted as
a distinct ``(caller module -> callee module)`` edge, however often it is taken. Frames of modules outside
these packages (torch, gymnasium, the standard library) are seen through: the caller is the nearest frame of a
placed module. Calls within one module are not edges.

**The path** (one submission, as the leaderboard scores it): the built-in ``tilt`` baseline on the first run of
the ``smoke`` suite's dev split (``--quick``; without it, every run of that split):

* the scorer's side, :func:`leaderboard.runner.score_one` in trusted mode (``Limits(sandbox="trusted")``):
  building the world, serving the sandboxed agent's proxy queries and checkpoints, scoring the checkpoints;
* the agent's side, which runs in the sandbox's child process where no profiler of this process can see it,
  run here in-process by the child's own code (:func:`leaderboard.sandbox.child._load` and
  :func:`~leaderboard.sandbox.child._serve_agent`) over a scripted channel that answers as the scorer does.

Both are traced with :func:`sys.setprofile` (the modules they import lazily included; the packages are imported
before the trace starts, as in a running scorer). The proxy cache is off (``TILTENV_PROXY_CACHE=0``): the proxy's
training is on the path whatever this machine has cached.

Usage::

    python scripts/layers.py --quick          # prints the upward edges and their count
    python scripts/layers.py --quick --json   # the same as JSON
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

ORDER = ("core", "metrics", "rewards", "worlds", "envs", "lifecycle", "api", "baselines", "leaderboard")
RANK = {g: i for i, g in enumerate(ORDER)}

#: tiltenv module (or package: its submodules too) -> group, under both layouts (the flat names of before the
#: regroup and the regrouped packages). ``tiltenv`` itself is matched exactly; a tiltenv module placed nowhere
#: has no group (the layering test names it).
TILTENV: dict[str, str] = {
    # core: the private helpers at the top in both layouts
    "tiltenv._validation": "core", "tiltenv._streams": "core", "tiltenv._cost": "core", "tiltenv._profiling": "core",
    "tiltenv.glossary": "core", "tiltenv.observations": "core", "tiltenv._moved": "core",  # _moved: the old paths
    "tiltenv.metrics": "metrics",
    # rewards
    "tiltenv.rewards": "rewards",
    "tiltenv.links": "rewards", "tiltenv.families": "rewards", "tiltenv.labels": "rewards", "tiltenv.feedback": "rewards",
    "tiltenv.proxy_base": "rewards", "tiltenv.reward_models": "rewards", "tiltenv.proxies": "rewards",
    "tiltenv.proxy_cache": "rewards",
    # worlds
    "tiltenv.worlds": "worlds",
    "tiltenv.config": "worlds", "tiltenv.scoring": "worlds", "tiltenv.world": "worlds", "tiltenv.multiobjective": "worlds",
    "tiltenv.evaluation": "worlds", "tiltenv.tokens": "worlds",
    # envs (tiltenv.envs keeps its name: the flat module becomes the package)
    "tiltenv.envs": "envs", "tiltenv.mo_envs": "envs", "tiltenv.tokens.env": "envs",
    # lifecycle (tiltenv.lifecycle keeps its name too)
    "tiltenv.lifecycle": "lifecycle", "tiltenv.calibration": "lifecycle", "tiltenv.active": "lifecycle",
    "tiltenv.monitor": "lifecycle", "tiltenv.diagnostics": "lifecycle",
    # api
    "tiltenv.__main__": "api", "tiltenv.sweep": "api",
}


def group_of(module: str | None) -> str | None:
    """The group of a module name (longest placed prefix), ``None`` outside the three packages or unplaced."""
    if not module:
        return None
    if module == "tiltenv":
        return "api"
    head = module.split(".")[0]
    if head in ("baselines", "leaderboard"):
        return head
    if head != "tiltenv":
        return None
    name = module
    while "." in name:
        if name in TILTENV:
            return TILTENV[name]
        name = name.rpartition(".")[0]
    return None


def layout() -> str:
    """``"regrouped"`` or ``"flat"``: which tree this is."""
    return "regrouped" if (ROOT / "tiltenv" / "rewards").is_dir() else "flat"


class Tracer:
    """``sys.setprofile`` hook: the upward (caller module -> callee module) edges, with one example call each."""

    def __init__(self) -> None:
        self.edges: Counter[tuple[str, str]] = Counter()
        self.example: dict[tuple[str, str], str] = {}
        self.calls = 0

    def __call__(self, frame, event, arg):
        if event != "call":
            return
        callee = frame.f_globals.get("__name__")
        g_callee = group_of(callee)
        if g_callee is None:
            return
        self.calls += 1
        f = frame.f_back
        while f is not None:
            caller = f.f_globals.get("__name__")
            g_caller = group_of(caller)
            if g_caller is not None:
                break
            f = f.f_back
        else:
            return
        if caller != callee and RANK[g_caller] < RANK[g_callee]:
            key = (caller, callee)
            self.edges[key] += 1
            self.example.setdefault(key, f"{f.f_code.co_name} -> {frame.f_code.co_name}")

    def __enter__(self) -> "Tracer":
        threading.setprofile(self)
        sys.setprofile(self)
        return self

    def __exit__(self, *exc) -> None:
        sys.setprofile(None)
        threading.setprofile(None)


class ScriptedChannel:
    """The child's channel, answered in-process the way the scorer answers (:func:`leaderboard.sandbox.run_agent`):
    every checkpoint kept in its own slot and evaluated at its delivery (the evaluation contexts with the first), then
    the agent's; the log-probabilities collected."""

    def __init__(self, cand, ref) -> None:
        self.cand, self.ref = cand, ref
        self.replies: list = []
        self.n_ckpt = 0
        self.logps: list = []

    def send(self, header, arrays=()) -> None:
        op = header["op"]
        if op == "checkpoint":
            self.replies.append(({"op": "checkpoint_ok", "slot": self.n_ckpt, "eval": "bandit", "index": self.n_ckpt},
                                 [] if self.n_ckpt else [self.cand, self.ref]))
            self.n_ckpt += 1
        elif op == "fit_done":
            self.replies.append(({"op": "eval", "checkpoints": ["agent"], "first": self.n_ckpt},
                                 [] if self.n_ckpt else [self.cand, self.ref]))
        elif op == "logp":
            self.logps.append(arrays[0])

    def recv_arrays(self):
        return self.replies.pop(0)


def _setup():
    """Import what a running scorer has imported (outside the trace)."""
    import warnings

    import baselines  # noqa: F401
    import leaderboard.runner  # noqa: F401
    import leaderboard.sandbox  # noqa: F401
    import leaderboard.sandbox.child  # noqa: F401
    import leaderboard.sandbox.process  # noqa: F401
    import leaderboard.scoring  # noqa: F401
    import tiltenv  # noqa: F401
    from leaderboard.submission import load_submission
    from leaderboard.suites import get_suite

    warnings.filterwarnings("ignore", message=r"Limits\(sandbox=.trusted.\)")
    warnings.filterwarnings("ignore", message=r"the proxy cache .* is readable by the sandbox")
    return load_submission("tilt", config={"device": "cpu"}), get_suite("smoke")


def trace(quick: bool = True) -> dict:
    """Trace the path (module docstring) and return its upward edges."""
    import numpy as np

    from leaderboard.runner import score_one, world_of
    from leaderboard.sandbox import child
    from leaderboard.sandbox.process import _public_copy
    from leaderboard.scoring import score_agent_run
    from leaderboard.spec import Limits

    sub, suite = _setup()
    specs = list(suite.runs(split="dev"))
    if quick:
        specs = specs[:1]
    tracer = Tracer()
    statuses = []
    for spec in specs:
        with tracer:  # the scorer's side
            res = score_one(sub, spec, Limits(sandbox="trusted"), device="cpu")
        statuses.append(res.status)
        world = world_of(spec)  # cached: built in the traced run
        start = {"submission": {"kind": sub.kind, "target": sub.target, "config": dict(sub.config), "ref": sub.ref,
                                "factory": sub.factory, "root": sub.root},
                 "track": "agent", "task": _public_copy(world.task, world.task.proxy), "budget": spec.budget(),
                 "device": "cpu", "file": None}
        chan = ScriptedChannel(world.judge.eval_candidates.numpy(), world.judge.eval_ref_logp.numpy())
        with tracer:  # the agent's side, as the child runs it
            agent = child._load(start)
            child._serve_agent(chan, agent, start, ["load"])
            score_agent_run(world.judge, list(range(len(chan.logps))), np.stack(chan.logps).astype(np.float64),
                            trajectory=False)
    edges = sorted(tracer.edges.items(), key=lambda kv: (RANK[group_of(kv[0][0])], kv[0]))
    return {
        "layout": layout(), "runs": len(specs), "status": statuses, "calls_traced": tracer.calls,
        "upward_edges": [{"caller": a, "callee": b, "groups": f"{group_of(a)} -> {group_of(b)}", "calls": n,
                          "example": tracer.example[(a, b)]} for (a, b), n in edges],
        "count": len(edges),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="the first run of the smoke dev split only")
    ap.add_argument("--json", action="store_true", help="print the result as JSON")
    args = ap.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ["TILTENV_PROXY_CACHE"] = "0"  # the proxy is trained in the trace: a fresh scorer, whatever is cached
    out = trace(quick=args.quick)
    if args.json:
        print(json.dumps(out, indent=1))
        return 0
    print(f"layout: {out['layout']}; runs traced: {out['runs']} ({', '.join(out['status'])}); "
          f"calls into placed modules: {out['calls_traced']}")
    print(f"groups, lowest first: {' < '.join(ORDER)}")
    for e in out["upward_edges"]:
        print(f"  up: {e['caller']} -> {e['callee']}   [{e['groups']}]  x{e['calls']}  e.g. {e['example']}")
    print(f"climbs back up: {out['count']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
