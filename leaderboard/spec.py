"""The records every part of the leaderboard passes around (the contract between its modules).

A **suite** (:mod:`leaderboard.suites`) expands into :class:`RunSpec` s, one per (task entry, seed index) of a
split. The **runner** (:mod:`leaderboard.runner`) builds the world for each spec *in the scorer's process*,
hands the submission only the public task inside a **sandbox** child process (:mod:`leaderboard.sandbox`),
gets back the checkpoints' log-probabilities on the judge's evaluation contexts, has them **scored**
(:mod:`leaderboard.scoring`) and **stores** one :class:`RunResult` per spec in one transaction
(:mod:`leaderboard.store`). Boards and the **report** (:mod:`leaderboard.report`) read the store.

Keys: a result is identified by :meth:`RunResult.key` = (code hash of the submission, suite name, suite
version, split, task key, seed index). The world seed itself is never stored for the ``test`` split (it is
derived from the scorer's secret salt, :mod:`leaderboard.seeds`).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "SPLITS",
    "TRACKS",
    "FAILURE_REASONS",
    "ENVIRONMENT_FAILURES",
    "ScorerEnvironmentError",
    "RunSpec",
    "RunResult",
    "CheckpointRow",
    "Limits",
    "NETWORK_MODES",
    "SANDBOX_MODES",
    "OUTPUT_MAX",
    "SandboxFailure",
    "versions",
]

#: ``dev``: public seeds anyone can run; ``test``: seeds derived from the scorer's secret salt.
SPLITS = ("dev", "test")
#: ``agent``: a policy optimizer (``fit(task, budget, checkpoint)``); ``reward_model``: learns a reward model
#: from the public preferences (``fit(preferences)`` then ``score(candidates)``).
TRACKS = ("agent", "reward_model")

#: What a sandboxed run may do with the network (:attr:`Limits.network`).
NETWORK_MODES = ("isolate", "require", "allow")
#: ``Limits.sandbox``: ``"jail"`` (bubblewrap namespaces, a cgroup, seccomp; refuses where unavailable) or
#: ``"trusted"`` (one's own code / the built-in baselines, without the jail; marked on the board).
SANDBOX_MODES = ("jail", "trusted")
#: A run's stored output (stdout + stderr) is its last this many bytes.
OUTPUT_MAX = 64 * 1024

#: Why a run failed (the ``reason`` column of the failures table). ``detail`` carries the message.
FAILURE_REASONS = {
    "error": "the submission raised an exception",
    "timeout": "the run exceeded its wall-time limit and was killed",
    "memory": "the run exceeded its memory limit",
    "budget": "the submission asked for more proxy queries than its budget",
    "invalid_output": "a policy returned NaN/inf, the wrong shape or log-probabilities that are not normalized",
    "protocol": "the child broke the channel protocol (malformed message, wrong dtype, died without a result)",
    "load": "the submission could not be loaded (missing module, file or factory)",
    "checkpoint": "the run passed a mark of the scorer's checkpoint schedule without delivering the checkpoint due there",
    "not_applicable": "a built-in baseline of another kind of task (a token-level agent on a bandit task): not run, "
                      "left out of the scores (not counted as π_ref) and listed on the board",
    "scoring": "the scorer's own code failed on this run's output (reading, validating, scoring or storing it); "
               "the detail holds the traceback",
}

#: Why the scorer's *environment* could not host a run (:class:`ScorerEnvironmentError`). Such a run is not
#: the submission's failure: it is never stored (status ``"unscored"``), reported at the end of the scoring,
#: and scored again by the next scoring.
ENVIRONMENT_FAILURES = {
    "tmp": "the scorer could not make the run's folder (its temporary directory is full or unwritable)",
    "cgroup": "the run's cgroup could not be created or written",
    "jail": "the run's jail did not start (bubblewrap missing or failing)",
    "zygote": "the sandbox zygote did not start or died",
    "spawn": "the run's process could not be started (fork/exec, pipes or file descriptors)",
    "gpu": "a GPU the scorer asked for is not available",
}


@dataclass(frozen=True)
class RunSpec:
    """One (suite entry, seed) to score.

    Attributes:
        suite, suite_version: the suite this run belongs to (boards never mix versions).
        split: ``"dev"`` or ``"test"``.
        task_key: the entry's unique name inside the suite (e.g. ``"hump-beta0.01"``).
        task_id: the registered env id (``"tiltenv/Hump-v0"``).
        task_kwargs: keyword arguments for the task (without ``seed``).
        seed_index: index of the seed within the split (stored).
        seed: the world seed (dev: public; test: derived from the salt — never stored, never sent to a
            submission).
        proxy_queries, wall_time, n_checkpoints: the :class:`baselines.TrainBudget` of the run.
        track: ``"agent"`` or ``"reward_model"``.
    """

    suite: str
    suite_version: int
    split: str
    task_key: str
    task_id: str
    task_kwargs: dict[str, Any]
    seed_index: int
    seed: int = field(repr=False)
    proxy_queries: int = 65_536
    wall_time: float | None = None
    n_checkpoints: int = 12
    track: str = "agent"

    def key(self, code_hash: str) -> tuple[str, str, int, str, str, int]:
        return (code_hash, self.suite, int(self.suite_version), self.split, self.task_key, int(self.seed_index))

    def budget(self):
        """The :class:`baselines.TrainBudget` of this run."""
        from baselines.base import TrainBudget

        return TrainBudget(proxy_queries=self.proxy_queries, wall_time=self.wall_time, n_checkpoints=self.n_checkpoints)


@dataclass(frozen=True)
class Limits:
    """Resources of one sandboxed run (enforced by the scorer, not by honor).

    Attributes:
        wall_time: seconds the child may live in total (fit plus producing the checkpoints' outputs).
        memory_mb: address-space / resident-memory cap of the child in MiB.
        threads: torch/BLAS threads in the child.
        network: ``"isolate"`` (default): each run in its own empty network namespace (no interface but a
            loopback that is down) where the kernel allows it (root, or unprivileged user namespaces),
            else a warning and no isolation; ``"require"``: refuse to score where runs cannot be isolated;
            ``"allow"``: the runs share the scorer's network.
        sandbox: ``"jail"`` (default): every run in its own bubblewrap jail (:mod:`leaderboard.sandbox.jail`), cgroup
            and seccomp filter; the scorer refuses to run where jails are unavailable. ``"trusted"``: no jail
            (the previous process sandbox only), for one's own code and the built-in baselines; such runs are
            stored with ``sandbox = "trusted"``.
        disk_mb: size of each of the run's private tmpfs (its working folder and ``/tmp``, ``/dev/shm``), MiB.
        max_processes: processes and threads the run may have at once (cgroup ``pids.max``, ``RLIMIT_NPROC``).
        cpu_time: CPU seconds the run's processes may use together; ``None``: ``2 · wall_time · threads``.
    """

    wall_time: float = 300.0
    memory_mb: int = 4096
    threads: int = 1
    network: str = "isolate"
    sandbox: str = "jail"
    disk_mb: int = 1024
    max_processes: int = 256
    cpu_time: float | None = None

    def __post_init__(self) -> None:
        from tiltenv._validation import check_choice

        check_choice("network", self.network, NETWORK_MODES)
        # A scorer setting that no run can live with would be stored as every submission's failure: refused here.
        import numbers

        wall = self.wall_time
        if isinstance(wall, bool) or not isinstance(wall, numbers.Real) or not (0 < wall < float("inf")):
            raise ValueError(f"wall_time must be a finite number of seconds > 0 (got {wall!r}).")
        for name, value in (("memory_mb", self.memory_mb), ("threads", self.threads)):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1 (got {value!r}).")

        check_choice("sandbox", self.sandbox, SANDBOX_MODES)
        for name in ("disk_mb", "max_processes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"Limits.{name} must be an integer >= 1 (got {value!r}).")
        if self.cpu_time is not None and not self.cpu_time > 0:
            raise ValueError(f"Limits.cpu_time must be > 0 seconds or None (got {self.cpu_time!r}).")

    @property
    def cpu_seconds(self) -> float:
        """The CPU-time cap of a run (``cpu_time``, or ``2 · wall_time · threads``)."""
        return float(self.cpu_time) if self.cpu_time is not None else 2.0 * float(self.wall_time) * max(1, int(self.threads))


@dataclass
class CheckpointRow:
    """Exact metrics of one checkpoint (snapshot) of a run, scored on the judge's evaluation contexts."""

    step: int
    gold_value: float
    proxy_value: float
    kl: float
    value_gap: float
    normalized_score: float
    reward_variance_policy: float


@dataclass
class RunResult:
    """The stored outcome of one :class:`RunSpec` for one submission.

    Attributes:
        submission: the submission's display name; code_hash: hash of its code (the key).
        spec: the run.
        status: ``"ok"`` or ``"failed"``; ``"unscored"``: the scorer's environment could not host the run
            (reason: a key of :data:`ENVIRONMENT_FAILURES`), never stored.
        reason, detail: for failed runs, a key of :data:`FAILURE_REASONS` and the message.
        metrics: final metrics (the last checkpoint; :func:`tiltenv.worlds.evaluation.metrics_of_logp`'s names plus
            the overoptimization summary ``peak_gold``, ``gold_drop``, ``kl_at_peak``, ``overoptimized``,
            Gao fits ``gao_rl_alpha`` ...). Empty when failed.
        checkpoints: the trajectory, one :class:`CheckpointRow` per snapshot, in step order.
        proxy_queries: candidates the scorer's channel scored for this run during ``fit``;
        deployment_queries: candidates served while its checkpoints were evaluated (from the scorer's cache of
        exactly the candidates each checkpoint is evaluated on; ``None`` where not applicable);
        fit_time: seconds in ``fit``; wall_time: seconds of the whole sandboxed run.
        sandbox: how the run was isolated: ``"jail"`` or ``"trusted"`` (see :attr:`Limits.sandbox`).
        output: the run's own stdout/stderr, its last :data:`OUTPUT_MAX` bytes (``None``: not captured).
        proxy_queries: candidates the scorer's channel scored for this run; fit_time: seconds in ``fit``;
        wall_time: seconds of the whole sandboxed run.
        device: where the run trained and was scored (``"cpu"``, ``"cuda:0 (NVIDIA H200)"``; None: unknown);
        tiltenv_version, torch_version: the scorer's versions (provenance, filled in when the result is made).
    """

    submission: str
    code_hash: str
    spec: RunSpec
    status: str
    reason: str | None = None
    detail: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    checkpoints: list[CheckpointRow] = field(default_factory=list)
    proxy_queries: int = 0
    fit_time: float = 0.0
    wall_time: float = 0.0
    deployment_queries: int | None = None
    sandbox: str | None = None
    output: str | None = None
    device: str | None = None
    tiltenv_version: str | None = field(default_factory=lambda: versions()[0])
    torch_version: str | None = field(default_factory=lambda: versions()[1])

    def key(self) -> tuple[str, str, int, str, str, int]:
        return self.spec.key(self.code_hash)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_json(self) -> str:
        d = dataclasses.asdict(self)
        d["spec"].pop("seed")  # never serialized
        return json.dumps(d, sort_keys=True, default=float)


_VERSIONS: tuple[str | None, str | None] | None = None


def versions() -> tuple[str | None, str | None]:
    """``(tiltenv version, torch version)`` of this process (provenance of a run; torch is not imported for it)."""
    global _VERSIONS
    if _VERSIONS is None:
        import sys
        from importlib import metadata

        def version(module: str) -> str | None:
            v = getattr(sys.modules.get(module), "__version__", None)
            if v is None:
                try:
                    v = metadata.version(module)
                except metadata.PackageNotFoundError:
                    return None
            return str(v)

        _VERSIONS = (version("tiltenv"), version("torch"))
    return _VERSIONS


class SandboxFailure(Exception):
    """A sandboxed run failed: ``reason`` is a key of :data:`FAILURE_REASONS`, ``detail`` the message;
    ``output``: the run's own stdout/stderr (last :data:`OUTPUT_MAX` bytes), set by the sandbox."""

    def __init__(self, reason: str, detail: str) -> None:
        if reason not in FAILURE_REASONS:
            raise ValueError(f"reason must be one of {sorted(FAILURE_REASONS)} (got {reason!r}).")
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.output: str | None = None


class ScorerEnvironmentError(RuntimeError):
    """The scorer's environment could not host a run (``reason``: a key of :data:`ENVIRONMENT_FAILURES`,
    ``detail``: the message): not the submission's fault, so the run is never stored as its failure."""

    def __init__(self, reason: str, detail: str) -> None:
        if reason not in ENVIRONMENT_FAILURES:
            raise ValueError(f"reason must be one of {sorted(ENVIRONMENT_FAILURES)} (got {reason!r}).")
        super().__init__(f"the scorer's environment failed ({reason}): {detail}")
        self.reason = reason
        self.detail = detail

    def __reduce__(self):  # crosses process boundaries (pool, Ray) as itself
        return (type(self), (self.reason, self.detail))
