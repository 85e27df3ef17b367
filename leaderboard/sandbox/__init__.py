"""Run a submission in its own sandboxed process; the proxy stays in the scorer behind a counting channel.

:func:`run_agent` runs one (submission, task) in a **fresh child process** (see :mod:`leaderboard.sandbox.child`)
that receives only the public task, its proxy replaced by a stub. The scorer keeps the real proxy and
serves the child's queries over two pipes with a small framed protocol (JSON header + raw little-endian
float arrays); it never unpickles anything the child sends. What it enforces:

* **Budget** — every candidate the child asks to score during ``fit`` is counted here, whatever the child's
  ``count=False`` says; a query that would exceed ``budget.proxy_queries`` ends the run (``budget``).
* **Checkpoint schedule** — the scorer owns it: marks 0 (the initial policy) and
  ``budget.checkpoint_marks()`` (``ceil(j · proxy_queries / n_checkpoints)``). ``checkpoint(step, policy)``
  tells the scorer, which stores **its own query count** as the step (the agent's ``step`` is ignored); the
  first checkpoint once a mark is reached is that mark's. A query that would reach the next mark while a mark
  is still owed ends the run (``checkpoint``, naming the mark). The final policy is the last checkpoint if it
  came at the final count, else the agent itself. At most ``n_checkpoints + 2`` checkpoints are evaluated;
  steps are strictly increasing. Each kept checkpoint is **evaluated at its delivery**, in the answer to its
  ``checkpoint`` frame, before the child's ``checkpoint`` call returns and training goes on: a live reference to
  the trained model is scored as it is at that step (the child keeps no delivered checkpoint but the last). That
  exchange's time is the scorer's, not the run's ``fit_time``; the wall-time limit covers it.
* **Deployment** — while checkpoint ``i`` is evaluated its policy may score exactly the candidates it is
  evaluated on, each at most once, answered from a cache the scorer fills (Tilt/BestOfN score at
  deployment); anything else ends the run (``budget``). These are counted apart as ``deploy_queries``.
* **Outputs** — every array the child returns is checked: float32/float64 only, declared shape matches the
  byte length, shape ``(C, K)``, no NaN or +inf (−inf is probability 0), rows normalized
  (``|logsumexp| ≤ 1e-3``) → otherwise ``invalid_output`` saying what was returned.
* **Sequence policies** (a token task, ``eval_prompts``) — the scorer expands each checkpoint's prefix tree on its
  side (:func:`tiltenv.worlds.tokens.tree.expand_tree`): level by level it sends (prompt, prefix) batches and checks each
  ``(N, V)`` answer as above (dtype; shape before the payload is read; NaN/+inf; rows normalized) before building
  the ``(C, V^L)`` float64 log-probabilities (memory checked first); deployment queries as above.
* **Wall time** — every wait on the child, and every frame read from it, has a deadline (``limits.wall_time``
  from the start of the run; a run that never lets a read block is stopped too); past it the child's process
  group is killed (``timeout``).
* **Jail** (``limits.sandbox="jail"``, the default) — every run lives in its own bubblewrap jail
  (:mod:`leaderboard.sandbox.jail`): pid, mount, network, ipc, uts and cgroup namespaces (plus a user namespace for
  a non-root scorer), a root holding only read-only binds of ``/usr``, the interpreter, its site-packages and
  the three package folders, a ``/proc`` of the run's own processes, size-capped tmpfs (``limits.disk_mb``)
  for the working folder, ``/tmp`` and ``/dev/shm``, and a seccomp filter (:mod:`leaderboard.sandbox.seccomp`). When
  the run ends, for any reason, the jail's pid 1 exits and the kernel kills every process of the run, however
  it forked or hopped. As root, the run also gets a **cgroup** (:mod:`leaderboard.sandbox.cgroup`, v2 or v1) and a
  fresh unprivileged uid/gid (not repeated within a scorer's life, no supplementary groups).
  Where no jail can be started the scorer refuses (:func:`sandbox_mode` says why); ``sandbox="trusted"``
  runs without it (own code, built-in baselines), with a warning.
* **Memory** — with a cgroup: ``memory_mb`` is its limit, covering every process of the run and its shmem,
  tmpfs and memfd pages, each page counted once (copy-on-write copies of the zygote's pages are not counted
  per process); a process the kernel kills there → ``memory``. Without one (non-root scorer): the scorer
  polls the proportional memory (PSS) of the jail's processes. In both, ``RLIMIT_DATA = limits.memory_mb``
  (``RLIMIT_AS`` is not used: torch reserves more address space than it touches). A ``MemoryError`` in the
  child or a SIGKILL the scorer did not send (the kernel's OOM killer) → ``memory``.
* **Processes and CPU** — ``limits.max_processes`` (cgroup ``pids.max`` and ``RLIMIT_NPROC``) and
  ``limits.cpu_seconds`` (the cgroup's CPU time, polled; ``RLIMIT_CPU`` per process) → ``timeout``.
* **Isolation** — the child gets a scrubbed environment (``PATH``, ``LANG``/``LC_ALL``, ``PYTHONPATH``,
  ``HOME`` = ``TMPDIR`` = its private working directory, which is also its cwd, thread counts
  ``= limits.threads``): no salt, no ``TILTENV_*`` variable, no cache directory. It never sees θ*, the seed,
  the judge or the evaluation gold: they are not in its memory (it is not forked from the scorer), nor in
  its filesystem (the jail has no home folder, board, salt or proxy cache, whoever runs the scorer).
* **Network** — a jailed run has its own network namespace with only its own loopback
  (``limits.network="allow"`` shares the scorer's). A trusted run gets an empty network namespace of its own
  where the kernel allows it (:mod:`leaderboard.sandbox.netns`), else a warning (``network="require"`` refuses).
* **Output** — the run's stdout/stderr go to a file of the scorer; its last 64 KiB are returned with the
  outcome (:attr:`AgentOutcome.output`, :attr:`SandboxFailure.output <leaderboard.spec.SandboxFailure>`).

Processes: by default (``spawn="zygote"``) runs are forked from a **zygote**, a clean interpreter started
once per scorer process with ``Popen([sys.executable, "-m", "leaderboard.sandbox.child", "--zygote", ...])`` that
has imported only libraries (never a world, judge, salt or seed); each run is still its own process with
its own session, rlimits and uid, and it skips the 1-2 s import of torch. ``spawn="popen"`` starts one
fresh interpreter per run instead. Either way the run's process joins its jail (cgroups first, then the
namespaces, then it drops its uid or capabilities) and forks once more: the grandchild, inside the jail's pid
namespace, runs the submission; the process the scorer knows relays its exit status.

Example:
    >>> from tiltenv import TaskConfig, make_world            # doctest: +SKIP
    >>> world = make_world(TaskConfig(d=4, K=8, n_labels=200, n_eval_contexts=64))
    >>> out = run_agent(load_submission("tilt"), world.task, TrainBudget(proxy_queries=1024),
    ...                 world.judge.eval_candidates, world.judge.eval_ref_logp, Limits(wall_time=60))
    >>> out.logps.shape, out.proxy_queries
    ((1, 64, 8), 0)

Layout (one concern a module; each readable on its own):

=======================  ==========================================================================================
module                   what
=======================  ==========================================================================================
:mod:`.agent`            :func:`run_agent`: the checkpoint schedule, the budget, the deployment cache
:mod:`.reward_model`     :class:`RemoteRewardModel`
:mod:`.outputs`          checks of what a run returns (``invalid_output``)
:mod:`.process`          the scorer's handle on one run's process (``_Child``): start, I/O, deadline, memory, kill
:mod:`.isolation`        what a run gets here: jail or trusted, network, uid, environment
:mod:`.zygote`           the clean fork server (its side and the scorer's)
:mod:`.channel`          the framing both sides speak (JSON header + raw float arrays)
:mod:`.child`            the run's side: the proxy stubs and the protocol loop; ``python -m leaderboard.sandbox.child``
:mod:`.confine`          how a run's process enters its sandbox before it reads anything
:mod:`.jail`             bubblewrap namespaces the run joins
:mod:`.cgroup`           a cgroup (v2 or v1) per run
:mod:`.seccomp`          the system calls a run may not make
:mod:`.netns`            a trusted run's own empty network namespace
=======================  ==========================================================================================

The run's process imports this package (for :mod:`.child`): the names below are therefore loaded on first
use, so that a run imports nothing of the scorer's side. Patch a name in the module that uses it (e.g.
``leaderboard.sandbox.isolation.network_isolation``), not here.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["AgentOutcome", "run_agent", "RemoteRewardModel", "SPAWN_MODES", "NORMALIZATION_TOL", "shutdown",
           "network_isolation", "network_mode"]

#: name -> the module of this package that defines it
_EXPORTS = {
    "AgentOutcome": "agent", "run_agent": "agent", "_DeployCache": "agent",
    "RemoteRewardModel": "reward_model",
    "NORMALIZATION_TOL": "outputs", "_validate_logp": "outputs",
    "SPAWN_MODES": "process", "DETAIL_MAX": "process", "MEMORY_POLL_S": "process", "_Child": "process",
    "sandbox_mode": "isolation", "network_mode": "isolation", "network_isolation": "isolation", "_run_ids": "isolation",
    "shutdown": "zygote", "_zygote": "zygote",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
