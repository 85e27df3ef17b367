"""A sandboxed run's side: the proxy stubs of its task and its protocol loop (:func:`serve`).

A sandboxed run is one child process that holds only the **public task**, with its proxy replaced by a
:class:`RemoteProxy` whose ``forward`` asks the scorer (the parent, :mod:`leaderboard.sandbox`) to score
the candidates. The scorer keeps the real proxy, counts every candidate and refuses past the budget.

**Processes.** A child starts either as ``python -m leaderboard.sandbox.child --run CONFIG`` (one fresh
interpreter per run, :func:`main`) or is forked by the **zygote** (:mod:`leaderboard.sandbox.zygote`),
``python -m leaderboard.sandbox.child --zygote FD``. Either way the child, before it reads anything from the
scorer, confines itself (:func:`leaderboard.sandbox.confine.enter_sandbox`), then :func:`serve` runs the
submission: it loads it (:func:`_load`), fits it and answers the scorer (:func:`_serve_agent`,
:func:`_serve_reward_model`); a failure of the submission is reported to the scorer (:func:`_report`).

This module is imported by the scorer only for :class:`RemoteProxy` and its kin (pickled into the task it
sends); everything else runs in the child.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from leaderboard.sandbox.channel import Channel, ProtocolError

__all__ = [
    "RemoteProxy",
    "NoProxy",
    "serve",
    "main",
]

#: The channel of this (child) process; set by :func:`serve`.
CHANNEL: "Channel | None" = None


# ----------------------------------------------------------------------------------------------- proxy stub


def _remote_score(x: Any, d: int, header: dict[str, Any], outside: str, what: str) -> torch.Tensor:
    """Send candidates ``x`` (last dimension ``d``) to the scorer with ``header`` and return its scores on x's device:
    the one path of every reward model the child reaches through the channel."""
    x = torch.as_tensor(x)
    if x.ndim < 1 or x.shape[-1] != d:
        raise ValueError(f"candidates must have last dimension d={d} (got shape {tuple(x.shape)}).")
    if CHANNEL is None:
        raise RuntimeError(outside)
    dtype = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
    CHANNEL.send(header, [x.detach().to("cpu", dtype).contiguous().numpy()])
    reply, arrays = CHANNEL.recv_arrays()
    if reply["op"] != "proxy_ok" or len(arrays) != 1:
        raise RuntimeError(f"the scorer refused {what}: {reply.get('message', reply['op'])}")
    return torch.from_numpy(arrays[0]).to(x.device)


class RemoteProxy(torch.nn.Module):
    """The proxy as the sandboxed child sees it: ``forward`` sends the candidates to the scorer.

    The scorer scores them with the real proxy (same dtype as sent, float32 or float64), counts them and
    returns the rewards; a request past the budget ends the run (reason ``budget``). ``task.proxy_reward``,
    ``task.proxy(x)``, ``task.proxy_on(device)(x)`` and the envs of ``TiltEnv.from_task(task)`` all go through
    here. The rewards carry no gradient. Deep copies share the channel (``proxy_on`` copies its proxy).
    """

    def __init__(self, kind: str, d: int) -> None:
        super().__init__()
        self.kind = str(kind)
        self.d = int(d)

    def forward(self, x: Any) -> torch.Tensor:
        return _remote_score(x, self.d, {"op": "proxy"}, "this proxy lives in the scorer's process and is reached "
                             "through the sandbox's channel only.", "the proxy query")

    def raw(self, x: Any) -> torch.Tensor:
        raise NotImplementedError("only the normalized proxy is served (task.proxy_reward / task.proxy(x)).")

    def __deepcopy__(self, memo: dict) -> "RemoteProxy":
        return self

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}, d={self.d}, remote"


class RemoteDimStack(torch.nn.Module):
    """A multi-objective task's per-dimension reward models as the child sees them: ``dim_rewards(x)`` sends the
    candidates to the scorer, which scores them with every dimension's real model and counts one query per
    candidate (as ``task.dim_proxy_rewards`` does in-process). The weights never reach the child."""

    def __init__(self, m: int, d: int) -> None:
        super().__init__()
        self.m, self.d = int(m), int(d)

    def dim_rewards(self, x: Any) -> torch.Tensor:
        return _remote_score(x, self.d, {"op": "proxy", "model": "dims"}, "these reward models live in the scorer's "
                             "process and are reached through the sandbox's channel only.", "the query")

    def __deepcopy__(self, memo: dict) -> "RemoteDimStack":
        return self


class RemoteDimProxy(torch.nn.Module):
    """One dimension's reward model in the child: ``forward(x)`` is column ``index`` of the remote stack (each call
    counts its candidates)."""

    def __init__(self, stack: RemoteDimStack, index: int, kind: str) -> None:
        super().__init__()
        self.stack, self.index, self.kind, self.d = stack, int(index), str(kind), stack.d

    def forward(self, x: Any) -> torch.Tensor:
        return self.stack.dim_rewards(x)[..., self.index]

    def __deepcopy__(self, memo: dict) -> "RemoteDimProxy":
        return self


class NoProxy(RemoteProxy):
    """The reward-model track's task: there is no proxy to query (learn from ``task.preferences``)."""

    def forward(self, x: Any) -> torch.Tensor:
        raise RuntimeError("the reward-model track has no proxy: learn from the preference data given to fit().")



# ----------------------------------------------------------------------------------------------- serving a run
def _is_memory_error(e: BaseException) -> bool:
    msg = str(e)
    return isinstance(e, MemoryError) or "can't allocate memory" in msg or "not enough memory" in msg


class _InvalidOutput(Exception):
    pass


def _as_array(out: Any) -> np.ndarray:
    if isinstance(out, torch.Tensor):
        out = out.detach().cpu()
        if out.dtype in (torch.bfloat16, torch.float16):
            out = out.to(torch.float32)
        return out.numpy()
    try:
        arr = np.asarray(out)
    except Exception as e:  # noqa: BLE001 - anything the submission returned
        raise _InvalidOutput(f"the output {type(out).__name__} is not an array ({e})") from None
    if arr.dtype.hasobject:
        raise _InvalidOutput(f"the output is an array of dtype object (a {type(out).__name__})")
    return arr


def _load(start: dict[str, Any]) -> Any:
    """Build the submission's agent / reward model inside the child."""
    import importlib
    import importlib.util
    import inspect

    sub, device = start["submission"], start["device"]
    if sub["kind"] == "baseline":
        import dataclasses

        from baselines import get_baseline

        agent_cls, config_cls = get_baseline(sub["target"])
        cfg = dict(sub["config"])
        if "device" in {f.name for f in dataclasses.fields(config_cls)} and "device" not in cfg:
            cfg["device"] = device
        return agent_cls(config_cls(**cfg))
    if sub["kind"] == "module":
        if sub.get("root"):
            sys.path.insert(0, sub["root"])
        module = importlib.import_module(sub["target"])
    else:
        spec = importlib.util.spec_from_file_location("submission", start["file"])
        module = importlib.util.module_from_spec(spec)
        sys.modules["submission"] = module
        sys.path.insert(0, os.path.dirname(start["file"]))
        spec.loader.exec_module(module)
    factory = getattr(module, sub["factory"], None)
    if not callable(factory):
        raise AttributeError(f"{sub['ref']} has no callable {sub['factory']!r}")
    try:
        takes_device = "device" in inspect.signature(factory).parameters
    except (TypeError, ValueError):
        takes_device = False
    obj = factory(device=device) if takes_device else factory()
    need = ("fit", "policy") if start["track"] == "agent" else ("fit", "score")
    if start["track"] == "agent" and _is_token_task(start.get("task")):
        need = ("fit",)  # a token task takes sequence policies too (no policy(candidates, ref_logp) needed)
    missing = [m for m in need if not callable(getattr(obj, m, None))]
    if missing:
        raise TypeError(f"{sub['factory']}() returned a {type(obj).__name__} without {missing} (needs {list(need)})")
    return obj


def _serve_agent(chan: Channel, agent: Any, start: dict[str, Any], stage: list[str]) -> None:
    """Fit, answering the scorer's evaluation of each checkpoint at its delivery; then evaluate the final policy.

    The scorer owns the checkpoint schedule (:func:`leaderboard.sandbox.run_agent`): each ``checkpoint(step,
    policy)`` sends a ``checkpoint`` frame (the agent's ``step`` is not sent: the scorer stores its own query count;
    ``policy`` says whether it is a token task's sequence policy) and the scorer answers which slot the snapshot
    fills (``None``: not kept; a slot filled again is replaced). A kept checkpoint is **evaluated inside that call**,
    before training goes on: the answer carries ``eval`` (``"bandit"``: its ``(C, K)`` log-probabilities on the
    evaluation candidates, sent with the first such answer and kept here; ``"sequence"``: the scorer's prefix-tree
    requests until ``eval_done``), so a checkpoint that is a live reference to the trained model is scored as it is
    at its step. The random generators (torch CPU, numpy, random) are restored after it, so training goes on as if
    nothing happened. Delivered checkpoints are not kept, except the last one (it may be the final policy).
    """
    import random

    task = start["task"]
    token = _is_token_task(task)
    last: list[Any] = [None]
    contexts: list[torch.Tensor] = []  # the bandit evaluation candidates and log π_ref, from the first evaluation

    def checkpoint(step: int, policy: Any) -> None:
        kind = "sequence" if token and _sequence_policy(policy) is not None else "bandit"
        chan.send({"op": "checkpoint", "policy": kind})
        header, arrays = chan.recv_arrays()
        if header["op"] != "checkpoint_ok":
            raise RuntimeError(f"the scorer refused the checkpoint: {header.get('message', header['op'])}")
        last[0] = None  # a checkpoint at a new count replaces the last one: keep no reference while evaluating
        if header.get("eval") in ("bandit", "sequence"):
            states = (torch.random.get_rng_state(), np.random.get_state(), random.getstate())
            try:
                if header["eval"] == "bandit":
                    if arrays:
                        contexts[:] = [torch.from_numpy(a) for a in arrays]
                    _send_logp(chan, policy, contexts, int(header["index"]))
                else:
                    _answer_sequence(chan, {int(header["index"]): _Expansion(_sequence_policy(policy), int(task.V))})
            finally:
                torch.random.set_rng_state(states[0])
                np.random.set_state(states[1])
                random.setstate(states[2])
        last[0] = policy

    stage[0] = "fit"
    agent.fit(task, start["budget"], checkpoint)
    if token and any(_sequence_policy(p) is not None for p in (agent, last[0])):
        chan.send({"op": "fit_done", "policy": "sequence"})
        stage[0] = "eval"
        return _serve_sequence(chan, agent, last[0], int(task.V))
    chan.send({"op": "fit_done"})
    stage[0] = "eval"
    header, arrays = chan.recv_arrays()
    if header["op"] != "eval" or len(arrays) not in (0, 2) or not isinstance(header.get("checkpoints"), list):
        raise ProtocolError(f"expected the eval contexts, got {header['op']!r}")
    if arrays:
        contexts[:] = [torch.from_numpy(a) for a in arrays]
    for i, which in enumerate(header["checkpoints"], int(header.get("first", 0))):
        _send_logp(chan, agent if which == "agent" else last[0], contexts, i)
    chan.send({"op": "done"})


def _send_logp(chan: Channel, policy: Any, contexts: list[torch.Tensor], i: int) -> None:
    """A bandit checkpoint's ``(C, K)`` log-probabilities on the evaluation candidates, sent as ``logp``."""
    if len(contexts) != 2:
        raise ProtocolError("an evaluation before the evaluation candidates arrived")
    fn = policy.policy if hasattr(policy, "policy") and not isinstance(policy, torch.nn.Module) else policy
    with torch.no_grad():
        out = fn(*contexts)
    try:
        arr = _as_array(out)
        chan.send({"op": "logp", "index": i}, [arr])
    except (_InvalidOutput, TypeError) as e:
        raise _InvalidOutput(f"checkpoint {i}: {e}") from None


def _is_token_task(task: Any) -> bool:
    return callable(getattr(task, "sample_prompts", None)) and hasattr(task, "L") and hasattr(task, "V")


def _sequence_policy(obj: Any) -> Any:
    """The sequence policy an agent or checkpoint stands for (itself, or its ``model``), or None: an object with
    ``initial_state``, ``next_logits``, ``advance`` (:mod:`tiltenv.worlds.tokens.model`) or ``next_logp(prompts, prefix)``."""
    for cand in (obj, getattr(obj, "model", None)):
        if cand is None:
            continue
        if all(callable(getattr(cand, m, None)) for m in ("initial_state", "next_logits", "advance")):
            return cand
        if callable(getattr(cand, "next_logp", None)):
            return cand
    return None


class _Expansion:
    """One checkpoint's side of the scorer's tree expansion: ``next_logp(prompts, prefixes)`` answers a level.

    A state-protocol policy keeps the state of the last level: when a request holds that level's prefixes each
    followed by 0..V-1 (the scorer's order, that of :func:`tiltenv.worlds.tokens.tree.tree_logp`), the state is advanced by
    one token, else rebuilt from the prompt; the logits are normalized by ``log_softmax`` in float64, as in-process.
    A ``next_logp(prompts, prefix)`` policy answers itself (normalized log-probabilities, checked by the scorer)."""

    def __init__(self, policy: Any, V: int) -> None:
        self.policy, self.V = policy, V
        self.last: tuple[torch.Tensor, torch.Tensor, Any] | None = None

    def __call__(self, prompts: torch.Tensor, prefixes: torch.Tensor) -> Any:
        pol, V = self.policy, self.V
        if not callable(getattr(pol, "next_logits", None)):
            return pol.next_logp(prompts, prefixes)
        level = prefixes.shape[1]
        last = self.last
        if level == 0:
            state = pol.initial_state(prompts)
        elif (last is not None and last[1].shape[1] == level - 1 and last[1].shape[0] * V == prefixes.shape[0]
              and torch.equal(prompts, last[0].repeat_interleave(V, 0))
              and torch.equal(prefixes[:, :-1], last[1].repeat_interleave(V, 0))
              and torch.equal(prefixes[:, -1], torch.arange(V).repeat(last[1].shape[0]))):
            state = pol.advance(last[2].repeat_interleave(V, 0), prefixes[:, -1])
        else:
            state = pol.initial_state(prompts)
            for t in range(level):
                state = pol.advance(state, prefixes[:, t])
        self.last = (prompts, prefixes, state)
        return torch.log_softmax(pol.next_logits(state).to(torch.float64), -1)


def _serve_sequence(chan: Channel, agent: Any, last: Any, V: int) -> None:
    """A token task's final evaluation: answer the scorer's ``next`` requests (prompts, prefixes) with the next-token
    log-probabilities of the final policy (the scorer expands the tree, :mod:`leaderboard.sandbox.agent`)."""
    header, _ = chan.recv_arrays()
    if header["op"] != "eval_sequence" or not isinstance(header.get("checkpoints"), list):
        raise ProtocolError(f"expected the sequence evaluation, got {header['op']!r}")
    experts = {}
    for i, which in enumerate(header["checkpoints"], int(header.get("first", 0))):
        obj = agent if which == "agent" else last
        pol = _sequence_policy(obj)
        if pol is None:
            raise _InvalidOutput(f"checkpoint {i} is a {type(obj).__name__}, not a sequence policy (initial_state, "
                                 "next_logits, advance, or next_logp(prompts, prefix)), on a token task whose final "
                                 "policy is one: every checkpoint must be of the same kind")
        experts[i] = _Expansion(pol, V)
    _answer_sequence(chan, experts)
    chan.send({"op": "done"})


def _answer_sequence(chan: Channel, experts: dict[int, "_Expansion"]) -> None:
    """Answer the scorer's ``next`` requests for the checkpoints in ``experts`` until ``eval_done``."""
    while True:
        header, arrays = chan.recv_arrays(allowed=("<i8",))
        if header["op"] == "eval_done":
            return
        if header["op"] != "next" or len(arrays) != 2 or int(header.get("index", -1)) not in experts:
            raise ProtocolError(f"expected a next-token request, got {header['op']!r}")
        i = int(header["index"])
        prompts, prefixes = torch.from_numpy(arrays[0]), torch.from_numpy(arrays[1])
        with torch.no_grad():
            out = experts[i](prompts, prefixes)
        try:
            arr = _as_array(out)
        except (_InvalidOutput, TypeError) as e:
            raise _InvalidOutput(f"checkpoint {i}: {e}") from None
        chan.send({"op": "next_logp", "index": i, "level": int(header["level"])}, [arr])


def _serve_reward_model(chan: Channel, rm: Any, start: dict[str, Any], stage: list[str]) -> None:
    task = start["task"]
    stage[0] = "fit"
    data = task.preferences if task.preferences is not None else task.pointwise
    rm.fit(data)
    chan.send({"op": "fit_done"})
    stage[0] = "score"
    while True:
        try:
            header, arrays = chan.recv_arrays()
        except EOFError:
            return
        if header["op"] == "close":
            return
        if header["op"] != "score" or len(arrays) != 1:
            raise ProtocolError(f"expected a score request, got {header['op']!r}")
        with torch.no_grad():
            out = rm.score(torch.from_numpy(arrays[0]))
        chan.send({"op": "scores"}, [_as_array(out)])


def _report(chan: Channel, stage: str, e: BaseException) -> None:
    kind = "load" if stage == "load" else "memory" if _is_memory_error(e) else (
        "invalid_output" if isinstance(e, _InvalidOutput) else "error")
    tb = "".join(traceback.format_exception(type(e), e, e.__traceback__)).splitlines()[-25:] if kind != "memory" else []
    try:
        chan.send({"op": "error", "stage": stage, "kind": kind, "type": type(e).__name__,
                   "message": str(e)[:4000], "traceback": "\n".join(tb)[-6000:]})
    except Exception:  # noqa: BLE001 - the channel may be gone; the exit code tells the rest
        pass


def serve(chan: Channel) -> int:
    """Run one sandboxed submission over ``chan``; returns the process exit code."""
    import pickle

    global CHANNEL
    CHANNEL = chan
    header, plen = chan.recv_header()
    if header["op"] != "start" or header.get("payload") != "pickle":
        return 3
    start = pickle.loads(chan.recv_payload(plen))  # from the scorer (trusted), never the other way round
    stage = ["load"]
    try:
        obj = _load(start)
        chan.send({"op": "ready"})
        if start["track"] == "agent":
            _serve_agent(chan, obj, start, stage)
        else:
            _serve_reward_model(chan, obj, start, stage)
    except (EOFError, BrokenPipeError):
        return 4
    except BaseException as e:  # noqa: BLE001 - every failure of the submission is reported
        _report(chan, stage[0], e)
        return 1
    return 0



def main(argv: Sequence[str] | None = None) -> int:
    """``--zygote FD`` or ``--run CONFIG_JSON`` (a fresh interpreter for one run)."""
    from leaderboard.sandbox.confine import apply_network, enter_jail, enter_sandbox
    from leaderboard.sandbox.zygote import _set_parent_death_signal, _warm_up, zygote

    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) == 2 and argv[0] == "--zygote":
        return zygote(int(argv[1]))
    if len(argv) == 2 and argv[0] == "--run":
        cfg = json.loads(argv[1])
        _set_parent_death_signal()
        if cfg.get("jail"):
            enter_jail(cfg)  # while single-threaded (setns needs it): before torch starts threads
        else:
            apply_network(cfg)  # while single-threaded (an unprivileged user namespace needs it): before torch
        _warm_up()  # as in the zygote: libraries before the sandbox closes, lazy imports out of fit_time
        enter_sandbox(cfg)
        code = serve(Channel(cfg["rfd"], cfg["wfd"]))
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    print("usage: python -m leaderboard.sandbox.child (--zygote FD | --run CONFIG_JSON)", file=sys.stderr)
    return 2


if __name__ == "__main__":
    # Run as the importable module, not as __main__: the RemoteProxy that the scorer pickles refers to
    # leaderboard.sandbox.child, whose CHANNEL must be the one serve() sets.
    from leaderboard.sandbox import child

    sys.exit(child.main())
