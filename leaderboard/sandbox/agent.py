"""An agent submission trained in its sandboxed process (:func:`run_agent`): the scorer serves its proxy
queries under the budget and the checkpoint schedule (:func:`_serve_proxy`), reads each kept checkpoint's
log-probabilities on the evaluation contexts at its delivery and the final policy's after ``fit``
(:class:`_Evaluator`), serving their deployment queries from a cache (:class:`_DeployCache`). The rules are those
of :mod:`leaderboard.sandbox`."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from leaderboard.sandbox.channel import FLOAT_DTYPES, ProtocolError, check_array_specs, unpack_arrays
from leaderboard.sandbox.child import RemoteProxy
from leaderboard.sandbox.outputs import _check_output_dtype, _validate_logp
from leaderboard.sandbox.process import _Child, _public_copy, _start_payload
from leaderboard.spec import Limits, SandboxFailure
from leaderboard.submission import Submission
from tiltenv._validation import check_footprint

__all__ = ["AgentOutcome", "run_agent"]


@dataclass
class AgentOutcome:
    """What a sandboxed agent run produced (validated by the scorer).

    Attributes:
        steps: checkpoint steps in order, strictly increasing: the channel's query count when each checkpoint
            arrived (step 0 = initial policy, last = fitted policy at the final count).
        logps: ``(n_ckpt, C, K)`` float64 log-probabilities on the evaluation contexts, validated and
            renormalized in float64 (``log_softmax``, as :func:`tiltenv.worlds.evaluation.policy_logp` does in-process,
            so the same policy gives the same bits; each row was already within 1e-3 of normalized).
        proxy_queries: candidates the scorer's side of the channel scored during ``fit``.
        deploy_queries: candidates served from the deployment cache while the checkpoints were evaluated.
        fit_time: seconds from the child's ``ready`` to the end of ``fit`` (measured by the scorer), less the
            evaluation exchanges at delivery (the scorer's; the wall-time limit covers them all the same).
        wall_time: seconds of the whole sandboxed run, start of the process to its result.
        output: the run's own stdout/stderr (last 64 KiB); sandbox: ``"jail"`` or ``"trusted"``.
    """

    steps: list[int]
    logps: np.ndarray
    proxy_queries: int
    deploy_queries: int
    fit_time: float
    wall_time: float
    output: str | None = None
    sandbox: str = "jail"


def _model_of(task: Any, header: dict[str, Any]) -> Any:
    """The real model a proxy request asks for: the task's proxy, or (``model: dims``) every dimension's."""
    model = header.get("model", "proxy")
    if model == "dims" and hasattr(task, "dim_proxies"):
        return task._stack.dim_rewards
    if model == "proxy":
        return task.proxy
    return None


def _serve_proxy(child: _Child, task: Any, d: int, header: dict[str, Any], plen: int, left: int, what: str,
                 allow: Any = None, cache: "_DeployCache | None" = None) -> int:
    """Score one ``proxy`` request (the task's proxy, or ``model: dims``: a multi-objective task's per-dimension
    models) if it fits in ``left`` candidates and ``allow(n)`` does not fail the run (the checkpoint schedule);
    with ``cache`` (deployment) the answers come from the scorer's cache of the evaluation candidates. Returns the
    number scored."""
    proxy = _model_of(task, header)
    if proxy is None:
        child.fail("protocol", f"a proxy request names an unknown model {str(header.get('model'))[:40]!r}")
    try:
        specs = check_array_specs(header, plen, FLOAT_DTYPES)
    except ProtocolError as e:
        child.fail("protocol", f"bad proxy request: {e}")
    if len(specs) != 1 or len(specs[0][1]) < 1 or specs[0][1][-1] != d:
        child.fail("protocol", f"a proxy request must be one (..., d={d}) array (got {[list(s) for _, s in specs]})")
    n = int(np.prod(specs[0][1][:-1], dtype=np.int64))
    if n > left:
        child.fail("budget", f"asked to score {n} candidates with {left} left of the {what}")
    if allow is not None:
        allow(n)
    (x,) = unpack_arrays(specs, child.chan.recv_payload(plen))
    if cache is not None:
        y = cache.serve(str(header.get("model", "proxy")), proxy, x)
    else:
        with torch.no_grad():
            y = proxy(torch.from_numpy(x)).detach().cpu().numpy()
    child.send({"op": "proxy_ok"}, [y])
    return n


class _DeployCache:
    """Deployment: while checkpoint ``i`` is evaluated its policy may score exactly the candidates it is evaluated
    on, each at most once (per model), answered from values the scorer computes once on the whole ``(C, K, d)``
    array (the same bits as scoring that array in one call); anything else fails the run (``budget``).

    Requests are matched to the evaluation candidates by their bytes, vectorized (``np.unique`` over rows; all of
    them in order is matched at once): a candidate that appears m times among the evaluation candidates may be
    asked m times per checkpoint.
    """

    def __init__(self, child: _Child, task: Any, cand: torch.Tensor) -> None:
        self.child, self.task, self.cand = child, task, cand
        self.d = int(cand.shape[-1])
        self.n = int(np.prod(cand.shape[:-1]))
        self.rows: dict[str, np.ndarray] = {}  # dtype -> the (C·K, d) evaluation candidates
        self.index: dict[str, tuple[np.ndarray, ...]] = {}  # dtype -> (unique row keys, counts, members, starts)
        self.values: dict[tuple[str, str], np.ndarray] = {}  # (model, dtype) -> (C·K, ...) answers
        self.checkpoint = 0
        self.served = 0
        self.start(0)

    def start(self, i: int) -> None:
        self.checkpoint = i
        self.used: dict[tuple[str, str], np.ndarray] = {}  # (model, dtype) -> times each unique row was served
        self.taken: dict[str, np.ndarray] = {}  # model -> which evaluation candidates were served (any dtype)

    def _rows(self, dt: str) -> np.ndarray:
        if dt not in self.rows:
            self.rows[dt] = np.ascontiguousarray(self.cand.to(torch.float64 if dt == "<f8" else torch.float32)
                                                 .reshape(-1, self.d).numpy())
        return self.rows[dt]

    @staticmethod
    def _keys(rows: np.ndarray) -> np.ndarray:
        """Each row as one opaque value (its bytes): exact matching, sorted as bytes."""
        return rows.view(np.dtype((np.void, rows.dtype.itemsize * rows.shape[1]))).reshape(-1)

    def _index_of(self, dt: str) -> tuple[np.ndarray, ...]:
        if dt not in self.index:
            uniq, inv, cnt = np.unique(self._keys(self._rows(dt)), return_inverse=True, return_counts=True)
            members = np.argsort(inv.reshape(-1), kind="stable")
            starts = np.concatenate([[0], np.cumsum(cnt)[:-1]])
            self.index[dt] = (uniq, cnt, members, starts)
        return self.index[dt]

    def _refuse(self, j: int, why: str) -> None:
        self.child.fail("budget", f"while checkpoint {self.checkpoint} was evaluated, its policy asked the proxy to "
                                  f"score {why} (row {j} of the request): at deployment a policy may score only the "
                                  "candidates it is evaluated on, each once per checkpoint")

    def serve(self, model: str, proxy: Any, x: np.ndarray) -> np.ndarray:
        dt = x.dtype.str
        rows = self._rows(dt)
        flat = np.ascontiguousarray(x).reshape(-1, self.d)
        m = flat.shape[0]
        taken = self.taken.setdefault(model, np.zeros(self.n, dtype=bool))
        if flat.shape == rows.shape and np.array_equal(flat, rows):  # all of them, in order (Tilt, BestOfN)
            if taken.any():
                self._refuse(int(np.argmax(taken)), "one of its evaluation candidates a second time")
            taken[:] = True
            take = np.arange(m)
        else:
            take = self._match(model, dt, flat, taken)
        if (model, dt) not in self.values:
            with torch.no_grad():
                y = proxy(torch.from_numpy(rows.reshape(self.cand.shape)))
            y = y.detach().cpu().numpy()
            self.values[(model, dt)] = y.reshape(rows.shape[0], *y.shape[len(self.cand.shape) - 1:])
        self.served += m
        vals = self.values[(model, dt)]
        return vals[take].reshape(*x.shape[:-1], *vals.shape[1:])

    def _match(self, model: str, dt: str, flat: np.ndarray, taken: np.ndarray) -> np.ndarray:
        """The evaluation candidate each requested row is (the k-th request of one value takes its k-th copy)."""
        uniq, cnt, members, starts = self._index_of(dt)
        m = flat.shape[0]
        _, inv = np.unique(np.concatenate([uniq, self._keys(flat)]), return_inverse=True)
        inv = inv.reshape(-1)
        lut = np.full(int(inv.max()) + 1, -1, dtype=np.int64)
        lut[inv[:len(uniq)]] = np.arange(len(uniq))
        u = lut[inv[len(uniq):]]  # the unique evaluation row of each requested row, -1: none
        if (u < 0).any():
            self._refuse(int(np.argmax(u < 0)), "a candidate it is not evaluated on")
        order = np.argsort(u, kind="stable")  # the k-th request of one row takes its k-th copy
        su = u[order]
        first = np.r_[True, su[1:] != su[:-1]]
        rank = np.empty(m, dtype=np.int64)
        rank[order] = np.arange(m) - np.maximum.accumulate(np.where(first, np.arange(m), 0))
        used = self.used.setdefault((model, dt), np.zeros(len(uniq), dtype=np.int64))
        occ = used[u] + rank
        over = occ >= cnt[u]
        if over.any():
            self._refuse(int(np.argmax(over)), "one of its evaluation candidates a second time")
        take = members[starts[u] + occ]
        if taken[take].any():  # asked before in the other dtype, or after all of them at once
            self._refuse(int(np.argmax(taken[take])), "one of its evaluation candidates a second time")
        taken[take] = True
        np.add.at(used, u, 1)
        return take


def run_agent(sub: Submission, task: Any, budget: Any, eval_candidates: Any, eval_ref_logp: torch.Tensor,
              limits: Limits, *, device: str = "cpu", spawn: str = "zygote",
              eval_prompts: torch.Tensor | None = None) -> AgentOutcome:
    """Train an agent submission on ``task`` in a sandboxed child and get its checkpoints' log-probabilities.

    Each checkpoint kept at a mark is evaluated **at its delivery**: the scorer answers its ``checkpoint`` frame
    with the evaluation exchange (:class:`_Evaluator`: the bandit candidates, sent once, or the prefix-tree
    expansion) while the child's ``checkpoint`` call waits, so the stored trajectory is the policy at each step even
    when the checkpoint is a live reference to the model being trained. A later checkpoint at the same count is
    evaluated again and replaces it. The final policy is the checkpoint delivered at the final count (already
    evaluated), else the agent, evaluated after ``fit``. What the scorer cannot see: which policy the agent chooses
    to deliver (a separate "reported" policy is the agent's choice; the rank is the final policy's alone).

    Args:
        sub: a :class:`~leaderboard.submission.Submission` of the ``agent`` track.
        task: the :class:`tiltenv.PublicTask` (its proxy stays here; the child gets a counting stub).
        budget: the :class:`baselines.TrainBudget` (``proxy_queries`` is enforced here).
        eval_candidates: ``(C, K, d)`` contexts the checkpoints are evaluated on (the judge's), or a function
            returning them, called only when needed (a token task's bandit view, C × V^L × d).
        eval_ref_logp: ``(C, K)`` log π_ref on them.
        eval_prompts: a token task's ``(C, P)`` evaluation prompts (``K = V^L``): a run whose policies are
            sequence policies (``fit_done`` says ``"policy": "sequence"``) is evaluated over the prefix tree,
            which the scorer expands on its side (:func:`_expand_sequence`); a bandit agent on the same task is
            evaluated on the bandit view as everywhere else.
        limits: :class:`~leaderboard.spec.Limits` (wall time, memory, threads).
        device: the agent's device (``"cpu"``, ``"cuda"``): a baseline's ``device`` field unless its config
            sets one; a factory with a ``device`` parameter receives it. Arrays cross the channel on the CPU.
        spawn: ``"zygote"`` (fork from a clean pre-imported interpreter) or ``"popen"`` (fresh interpreter).
    Returns:
        :class:`AgentOutcome`.
    Raises:
        SandboxFailure: ``error``, ``timeout``, ``memory``, ``budget``, ``checkpoint``, ``invalid_output``,
            ``protocol`` or ``load`` (see :data:`leaderboard.spec.FAILURE_REASONS`).
        TypeError, ValueError: bad arguments (not a failure of the submission).
    """
    from baselines.base import TrainBudget

    if not isinstance(sub, Submission) or sub.track != "agent":
        raise TypeError(f"run_agent needs an agent-track Submission (got {sub!r}).")
    if not isinstance(budget, TrainBudget):
        raise TypeError(f"budget must be a baselines.TrainBudget (got {type(budget).__name__}).")
    ref = torch.as_tensor(eval_ref_logp).detach().cpu()
    lazy = callable(eval_candidates)
    cand_of = _lazy(eval_candidates if lazy else lambda: eval_candidates)
    if not lazy:
        cand = cand_of()
        if cand.ndim != 3 or ref.shape != cand.shape[:2]:
            raise ValueError(f"eval_candidates must be (C, K, d) and eval_ref_logp (C, K) (got {tuple(cand.shape)}, {tuple(ref.shape)}).")
    if ref.ndim != 2:
        raise ValueError(f"eval_ref_logp must be (C, K) (got {tuple(ref.shape)}).")
    C, K = ref.shape
    d = int(task.d)
    if eval_prompts is not None:
        eval_prompts = torch.as_tensor(eval_prompts).detach().cpu().to(torch.int64)
        if eval_prompts.ndim != 2 or eval_prompts.shape[0] != C or int(task.V) ** int(task.L) != K:
            raise ValueError(f"eval_prompts must be (C={C}, P) prompts of a token task with V^L = K = {K} "
                             f"(got {tuple(eval_prompts.shape)}).")
    n_max = len(budget.checkpoint_marks()) + 2  # the most checkpoints a run can have evaluated (marks, 0, final)
    check_footprint("the checkpoints' log-probabilities", 8 * n_max * C * K,
                    f"up to {n_max} checkpoints × C {C} × K {K}" + (
                        f" (V^L = {task.V}^{task.L})" if eval_prompts is not None else "") + " float64",
                    "score fewer evaluation contexts (n_eval_contexts) or checkpoints")  # before the run starts
    public = _public_copy(task, RemoteProxy(getattr(task.proxy, "kind", "proxy"), task.d))
    child = _Child(sub, limits, device, spawn)
    try:
        child.send({"op": "start", "payload": "pickle"}, raw=_start_payload(sub, "agent", public, budget, device, child.file))
        child.expect("ready")
        fit_started = time.monotonic()
        used = 0
        marks = [0, *budget.checkpoint_marks()]  # mark 0: the initial policy, before the first mark of the budget
        kept: list[int] = []  # the channel's count at each kept checkpoint (slot i = kept[i]); strictly increasing
        covered = 0  # marks[:covered] have their checkpoint
        last_count = None  # the count at the last checkpoint delivered
        # row i: kept checkpoint i's log-probabilities, evaluated at its delivery; the final policy's after fit
        logps = np.empty((n_max, C, K), dtype=np.float64)  # untouched rows cost no memory
        ev = _Evaluator(child, task, d, cand_of, ref, eval_prompts, logps)

        def allow(n: int) -> None:
            """Refuse a query that would reach the next mark while a mark is still owed."""
            if covered < len(marks) and marks[covered] <= used and covered + 1 < len(marks) \
                    and marks[covered + 1] <= used + n:
                what = "the initial policy, before any query" if covered == 0 else f"{marks[covered]} proxy queries"
                child.fail("checkpoint", f"the run passed checkpoint mark {covered} of {len(marks) - 1} ({what}) "
                                         f"without delivering a checkpoint: a query of {n} candidates at {used} "
                                         f"queries would reach mark {covered + 1} ({marks[covered + 1]}). The "
                                         f"scorer's marks are budget.checkpoint_marks() = {marks[1:][:20]}; call "
                                         "checkpoint() once the query count reaches each of them.")

        while True:
            header, plen = child.recv_header("a proxy query, a checkpoint or the end of fit")
            if header["op"] == "proxy":
                used += _serve_proxy(child, task, d, header, plen, budget.proxy_queries - used,
                                     f"budget of {budget.proxy_queries} proxy queries ({used} used)", allow=allow)
            elif header["op"] == "checkpoint" and not plen:
                new = False
                while covered < len(marks) and marks[covered] <= used:
                    covered, new = covered + 1, True
                if kept and kept[-1] == used:  # a later snapshot at the same count replaces the kept one
                    slot = len(kept) - 1
                elif new:  # the first checkpoint once a mark is reached is that mark's
                    kept.append(used)
                    slot = len(kept) - 1
                else:  # between marks: not kept (only the last one delivered is, as the possible final policy)
                    slot = None
                last_count = used
                if slot is None:
                    child.send({"op": "checkpoint_ok", "slot": None, "step": used})
                else:  # evaluated now, before training goes on: a live reference shows the policy at this step
                    ev.at_delivery(slot, used, header.get("policy", "bandit"))
            elif header["op"] == "fit_done" and not plen:
                kind = header.get("policy", "bandit")
                ev.check_kind(kind, "the final policy")
                break
            else:
                child.fail("protocol", f"unexpected {str(header['op'])[:40]!r} frame during fit")
        fit_time = time.monotonic() - fit_started - ev.seconds
        # the final policy (step = the final count): the last checkpoint if delivered at the final count, else the
        # agent itself, evaluated now; before it the kept checkpoints, each at the channel's count when it arrived.
        # A kept checkpoint at the final count is the last one delivered (a later one at that count replaces it):
        # it is the final policy, already evaluated at its delivery.
        row = len(kept) if not kept or kept[-1] < used else len(kept) - 1
        ev.final(None if row < len(kept) else "last" if last_count == used else "agent", row, used, kind)
        child.expect("done")
        return AgentOutcome(kept[:row] + [used], logps[:row + 1], used, ev.deploy_queries, fit_time,
                            time.monotonic() - child.started, child.output_tail(), child.sandbox)
    finally:
        child.close()


def _lazy(fn: Any) -> Any:
    """``fn()`` on the first call, the same tensor (CPU) after."""
    held: list[Any] = []

    def get() -> torch.Tensor:
        if not held:
            held.append(torch.as_tensor(fn()).detach().cpu())
        return held[0]

    return get


#: Prefix rows one request of the tree expansion carries at most (about: a prompt's last level is never split).
SEQUENCE_REQUEST_ROWS = 1 << 16


class _Evaluator:
    """The scorer's evaluation exchanges of one run: each kept checkpoint at its delivery (:meth:`at_delivery`, in
    the ``checkpoint_ok`` answer, while the child's ``checkpoint`` call waits), the final policy after ``fit``
    (:meth:`final`). A bandit policy gets the ``(C, K, d)`` evaluation candidates and ``(C, K)`` log π_ref once (the
    first evaluation; the child keeps them) and answers ``logp``, ``(C, K)``; a token task's sequence policy answers
    the scorer's prefix-tree expansion (:func:`_expand_sequence`). Either may use the deployment cache meanwhile.
    Every policy of a run is of one kind (the first evaluated fixes it)."""

    def __init__(self, child: _Child, task: Any, d: int, cand_of: Any, ref: torch.Tensor,
                 prompts: torch.Tensor | None, logps: np.ndarray) -> None:
        self.child, self.task, self.d, self.cand_of, self.ref, self.prompts = child, task, d, cand_of, ref, prompts
        self.logps = logps
        self.kind: str | None = None
        self.sent = False  # the bandit evaluation candidates went to the child
        self.cache: _DeployCache | None = None
        self.seconds = 0.0  # spent in evaluations at delivery (not the agent's fit time)

    @property
    def deploy_queries(self) -> int:
        return self.cache.served if self.cache is not None else 0

    def cache_for(self, row: int) -> _DeployCache:
        if self.cache is None:
            self.cache = _DeployCache(self.child, self.task, self.cand_of())
        self.cache.start(row)
        return self.cache

    def check_kind(self, kind: Any, what: str) -> None:
        if kind not in ("bandit", "sequence") or (kind == "sequence" and self.prompts is None):
            self.child.fail("protocol", f"{what} names policies of kind {str(kind)[:40]!r}: "
                                        + ("this task takes bandit policies only ((C, K) log-probabilities)"
                                           if kind == "sequence" else "expected 'bandit' or 'sequence'"))
        if self.kind is not None and kind != self.kind:
            self.child.fail("invalid_output", (
                f"{what} is a sequence policy, the checkpoints before it are not a sequence policy"
                if kind == "sequence" else f"{what} is not a sequence policy (initial_state, next_logits, advance, "
                "or next_logp(prompts, prefix)), the checkpoints before it are") + " (on a token task): every "
                "checkpoint must be of the same kind")
        self.kind = kind

    def _arrays(self) -> list[np.ndarray]:
        if self.sent:
            return []
        self.sent = True
        return [self.cand_of().numpy(), self.ref.numpy()]

    def at_delivery(self, row: int, step: int, kind: Any) -> None:
        started = time.monotonic()
        self.check_kind(kind, f"checkpoint {row} (step {step})")
        if kind == "sequence":
            V, L = int(self.task.V), int(self.task.L)
            self.child.send({"op": "checkpoint_ok", "slot": row, "step": step, "eval": "sequence", "index": row,
                             "V": V, "L": L})
            _expand_sequence(self, row, step)
            self.child.send({"op": "eval_done"})
        else:
            self.child.send({"op": "checkpoint_ok", "slot": row, "step": step, "eval": "bandit", "index": row},
                            self._arrays())
            self._read_logp(row, step)
        self.seconds += time.monotonic() - started

    def final(self, which: str | None, row: int, step: int, kind: str) -> None:
        """Evaluate the final policy (``"agent"`` or ``"last"``) into ``row``; ``None``: it was, at its delivery."""
        names = [] if which is None else [which]
        if kind == "sequence":
            V, L = int(self.task.V), int(self.task.L)
            self.child.send({"op": "eval_sequence", "checkpoints": names, "first": row, "V": V, "L": L})
            if names:
                _expand_sequence(self, row, step)
            self.child.send({"op": "eval_done"})
        else:
            self.child.send({"op": "eval", "checkpoints": names, "first": row}, self._arrays() if names else [])
            if names:
                self._read_logp(row, step)

    def _read_logp(self, i: int, step: int) -> None:
        child, logps = self.child, self.logps
        C, K = logps.shape[1:]
        cache = self.cache_for(i)
        while True:
            header, plen = child.recv_header(f"checkpoint {i}'s log-probabilities")
            if header["op"] != "proxy":
                break
            _serve_proxy(child, self.task, self.d, header, plen, C * K,
                         f"deployment allowance of checkpoint {i}: its C·K = {C * K} evaluation candidates",
                         cache=cache)
        if header["op"] != "logp" or header.get("index") != i:
            child.fail("protocol", f"expected checkpoint {i}'s log-probabilities, got {str(header['op'])[:40]!r}")
        what = f"checkpoint {i} (step {step})"
        _check_output_dtype(child, header, what)
        try:
            ((dt, shape),) = check_array_specs(header, plen, FLOAT_DTYPES)
        except ProtocolError as e:
            child.fail("protocol", f"bad {what} frame: {e}")
        if shape != (C, K):
            child.fail("invalid_output", f"{what} returned shape {shape}, expected (C, K) = ({C}, {K})")
        if dt == np.float64:  # read straight into the result: no copy, no extra pages
            child.read_into(memoryview(logps[i]).cast("B"), what)
            arr = logps[i]
        else:
            (arr,) = child.recv_arrays(header, plen)
        try:
            _validate_logp(arr, C, K, what, logps[i])
        except SandboxFailure:
            child.kill()
            raise


def _expand_sequence(ev: _Evaluator, i: int, step: int) -> None:
    """Evaluate a token task's sequence-policy checkpoint ``i``: the scorer expands its prefix tree on its
    side (:func:`tiltenv.worlds.tokens.tree.expand_tree`, the in-process enumeration's own loop), level by level over chunks
    of prompts. Each level is one request ``next`` of (N, P) prompts and (N, l) prefixes (int64); the child answers
    ``next_logp``, (N, V) float32/float64 log-probabilities, checked like any output (shape, NaN/+inf, rows
    normalized to 1e-3: ``invalid_output``) and renormalized in float64. Between a request and its answer the child
    may score exactly the candidates (the V^L responses of the evaluation prompts) it is evaluated on, once per
    checkpoint (the deployment cache, built on its first query). Fills ``ev.logps[i]``."""
    from tiltenv.worlds.tokens.tree import expand_tree

    child, task, prompts = ev.child, ev.task, ev.prompts
    V, L, d = int(task.V), int(task.L), int(task.d)
    C, K = prompts.shape[0], V**L
    chunk = max(1, SEQUENCE_REQUEST_ROWS // V ** max(L - 1, 0))
    if ev.cache is not None:
        ev.cache.start(i)

    def answer(p: torch.Tensor, level: int, prefixes: torch.Tensor) -> torch.Tensor:
        n = prefixes.shape[0]
        what = f"checkpoint {i} (step {step}), level {level} ({n} prefixes of {level} tokens)"
        child.send({"op": "next", "index": i, "level": level},
                   [p.repeat_interleave(V**level, 0).numpy(), prefixes.numpy()])
        while True:
            header, plen = child.recv_header(f"the next-token log-probabilities of {what}")
            if header["op"] != "proxy":
                break
            cache = ev.cache if ev.cache is not None else ev.cache_for(i)
            _serve_proxy(child, task, d, header, plen, C * K,
                         f"deployment allowance of checkpoint {i}: its C·V^L = {C * K} evaluation responses",
                         cache=cache)
        if header["op"] != "next_logp" or header.get("index") != i or header.get("level") != level:
            child.fail("protocol", f"expected the next-token log-probabilities of {what}, got "
                                   f"{str(header['op'])[:40]!r}")
        _check_output_dtype(child, header, what)
        try:
            ((_, shape),) = check_array_specs(header, plen, FLOAT_DTYPES)
        except ProtocolError as e:
            child.fail("protocol", f"bad {what} frame: {e}")
        if shape != (n, V):  # before reading the payload: a gigantic answer is never read
            child.fail("invalid_output", f"{what} returned shape {shape}, expected (N prefixes, V) = ({n}, {V})")
        (arr,) = child.recv_arrays(header, plen)
        out = np.empty((n, V), dtype=np.float64)
        try:
            _validate_logp(arr, n, V, what, out, rows="prefix", cols="token")
        except SandboxFailure:
            child.kill()
            raise
        return torch.from_numpy(out)

    expand_tree(answer, prompts, V, L, chunk=chunk, out=torch.from_numpy(ev.logps[i]),
                what=f"checkpoint {i}'s log-probabilities")
