"""Storage of scored runs: SQLAlchemy 2 models, one transaction per run, pandas frames out.

A board lives in one database: a SQLite file by default (``./tiltenv-board.db``), or any SQLAlchemy URL
(PostgreSQL is tested) for a board that several scorers share. Results are keyed by
:meth:`leaderboard.spec.RunResult.key` = (code hash, suite, suite version, split, task key, seed index):

- **re-scoring is a no-op**: :meth:`Store.save` of a key already stored writes nothing and returns ``False``
  (failed runs count as stored too: a failure is a result);
- **every write is one transaction**: a run's row, its metrics and its checkpoints are stored together or not
  at all, so a scorer killed at any moment leaves only complete runs, and :meth:`Store.done_keys` tells a
  restarted scorer what is left (**resume**);
- **concurrent scorers** may save the same key: the unique constraint on the key decides, the loser gets
  ``False`` (never a duplicate row, never an error).

Tables (schema version :data:`SCHEMA_VERSION`, recorded in ``tiltenv_schema``; a database written with another
version is refused with a clear error rather than misread):

========================  ==================================================================================
``submissions``           one row per code hash: name, ref, kind, track, config (JSON), created (UTC)
``runs``                  one row per key: task id and kwargs (JSON), track, status (``ok``/``failed``),
                          reason/detail (failed runs), proxy queries, fit and wall time, created (UTC);
                          schema 2: deployment queries, how the run was isolated (sandbox) and its bounded
                          output, provenance (tiltenv and torch versions and the device of the run)
``metrics``               long format (run id, name, value): one row per final metric of a run
``checkpoints``           (run id, step) and the fields of :class:`leaderboard.spec.CheckpointRow`
========================  ==================================================================================

**Failures** are runs with ``status = 'failed'`` and a ``reason`` (a key of
:data:`leaderboard.spec.FAILURE_REASONS`; a check constraint makes failed runs carry one) plus its ``detail``
message: one table, one key, so a failed run is resumed past like any other. :meth:`Store.failures` selects them.

**Floats** are stored as 8-byte doubles, bit for bit (``inf`` and ``-inf`` included). PostgreSQL stores NaN;
SQLite cannot (it turns NaN into NULL), so on SQLite NaN is stored as NULL and every float column reads NULL
back as NaN: both backends give the same frames. (SQLite also folds ``-0.0`` into ``0.0``.)

**SQLite** connections use WAL journaling, a busy timeout of :data:`SQLITE_BUSY_TIMEOUT_S` seconds,
``synchronous=NORMAL`` (a crashed or killed process never loses a committed run; a power cut may lose the
last few, which a rerun re-scores) and ``foreign_keys=ON``; writes take the lock up front (``BEGIN
IMMEDIATE``), so a pool of scorer processes and a reader can share one file.

Example:
    >>> from leaderboard.store import Store
    >>> store = Store("sqlite://")           # in memory; Store() is ./tiltenv-board.db
    >>> store.runs().shape[0]
    0
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import importlib.util
import json
import math
import os
import sqlite3
import time
import warnings
import weakref
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from leaderboard.spec import FAILURE_REASONS, OUTPUT_MAX, SANDBOX_MODES, SPLITS, TRACKS, CheckpointRow, RunResult
from tiltenv._validation import suggest

__all__ = [
    "Store",
    "StoreError",
    "SCHEMA_VERSION",
    "DEFAULT_URL",
    "KEY_COLUMNS",
    "RUN_COLUMNS",
    "CHECKPOINT_FIELDS",
    "EXPORT_FORMATS",
    "PROVENANCE_COLUMNS",
]

#: Bump on any change of the tables; a database with another version is refused (see :class:`Store`).
SCHEMA_VERSION = 2
#: The board used when no URL is given (a SQLite file in the current directory, made absolute on open).
DEFAULT_URL = "sqlite:///tiltenv-board.db"
#: Seconds a SQLite connection waits for another process's write lock before giving up.
SQLITE_BUSY_TIMEOUT_S = 60.0
#: Failure details longer than this are truncated (a submission controls its exception message).
MAX_DETAIL_CHARS = 65_536
STATUSES = ("ok", "failed")
EXPORT_FORMATS = ("csv", "parquet")

#: The key of a run, in sort order: every frame is sorted by these (then ``step`` for checkpoints).
KEY_COLUMNS = ["code_hash", "suite", "suite_version", "split", "task_key", "seed_index"]
#: Columns of :meth:`Store.runs` before the metric columns (one per metric name, sorted).
RUN_COLUMNS = [
    "submission", "code_hash", "suite", "suite_version", "split", "task_key", "task_id", "task_kwargs",
    "seed_index", "track", "status", "reason", "detail", "proxy_queries", "deployment_queries", "fit_time",
    "wall_time", "sandbox", "output", "tiltenv_version", "torch_version", "device", "created",
]  # fmt: skip
#: Provenance of a run (schema 2; NULL where unknown, read back as :data:`UNKNOWN`).
PROVENANCE_COLUMNS = ["tiltenv_version", "torch_version", "device"]
UNKNOWN = "unknown"
#: Float fields of a checkpoint row (:class:`leaderboard.spec.CheckpointRow` minus ``step``).
CHECKPOINT_FIELDS = [f.name for f in dataclasses.fields(CheckpointRow) if f.name != "step"]
FAILURE_COLUMNS = [
    "submission", *KEY_COLUMNS, "task_id", "track", "reason", "detail", "proxy_queries", "fit_time", "wall_time",
    "sandbox", "output",
]  # fmt: skip
SUBMISSION_COLUMNS = ["name", "code_hash", "ref", "kind", "track", "config", "created"]
_INT_COLUMNS = ("suite_version", "seed_index", "proxy_queries", "step")
_FLOAT_COLUMNS = ("fit_time", "wall_time", "deployment_queries", *CHECKPOINT_FIELDS)  # deployment_queries: NaN = none
_SUPPORTED_URLS = (
    "a SQLite file 'sqlite:///relative/board.db' or 'sqlite:////absolute/board.db' (or just a path ending in "
    ".db/.sqlite/.sqlite3), 'sqlite://' (in memory), PostgreSQL "
    "'postgresql+psycopg2://user:password@host:5432/dbname' (pip install 'tiltenv[postgres]'), or any other "
    "SQLAlchemy URL whose driver is installed"
)
_KNOWN_DIALECTS = ("sqlite", "postgresql", "postgresql+psycopg2", "postgresql+psycopg", "mysql", "mariadb")


class StoreError(RuntimeError):
    """The board database cannot be opened, has another schema, or a write failed (message says which)."""


# --------------------------------------------------------------------------------------------------- models


class _Float(sa.types.TypeDecorator):
    """An 8-byte float that keeps NaN on every backend: SQLite (which stores NaN as NULL) gets NULL, and NULL
    reads back as NaN everywhere (the columns of this type are NULL only for NaN)."""

    impl = sa.Double
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: sa.Dialect) -> float | None:
        if value is None:
            return None
        value = float(value)
        if math.isnan(value) and dialect.name == "sqlite":
            return None
        return value

    def process_result_value(self, value: Any, dialect: sa.Dialect) -> float:
        return math.nan if value is None else float(value)


class Base(DeclarativeBase):
    pass


class SchemaInfo(Base):
    __tablename__ = "tiltenv_schema"

    version: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=False)


class SubmissionRecord(Base):
    __tablename__ = "submissions"

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    code_hash: Mapped[str] = mapped_column(sa.String(128), unique=True)
    name: Mapped[str] = mapped_column(sa.String(200))
    ref: Mapped[str] = mapped_column(sa.Text)
    kind: Mapped[str] = mapped_column(sa.String(32))
    track: Mapped[str] = mapped_column(sa.String(32))
    config: Mapped[dict[str, Any]] = mapped_column(sa.JSON)
    created: Mapped[_dt.datetime] = mapped_column(sa.DateTime(timezone=True))


class RunRecord(Base):
    __tablename__ = "runs"
    __table_args__ = (
        sa.UniqueConstraint(
            "code_hash", "suite", "suite_version", "split", "task_key", "seed_index", name="uq_runs_key"
        ),
        sa.CheckConstraint("status IN ('ok', 'failed')", name="ck_runs_status"),
        # The reason's value is checked in Python (FAILURE_REASONS may grow without a schema change).
        sa.CheckConstraint(
            "(status = 'ok' AND reason IS NULL) OR (status = 'failed' AND reason IS NOT NULL)", name="ck_runs_reason"
        ),
        sa.Index("ix_runs_board", "suite", "suite_version", "split"),
    )

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    code_hash: Mapped[str] = mapped_column(sa.String(128), sa.ForeignKey("submissions.code_hash"))
    suite: Mapped[str] = mapped_column(sa.String(100))
    suite_version: Mapped[int] = mapped_column(sa.Integer)
    split: Mapped[str] = mapped_column(sa.String(16))
    task_key: Mapped[str] = mapped_column(sa.String(200))
    seed_index: Mapped[int] = mapped_column(sa.Integer)
    task_id: Mapped[str] = mapped_column(sa.String(200))
    task_kwargs: Mapped[dict[str, Any]] = mapped_column(sa.JSON)
    track: Mapped[str] = mapped_column(sa.String(32))
    status: Mapped[str] = mapped_column(sa.String(16))
    reason: Mapped[str | None] = mapped_column(sa.String(32), nullable=True)
    detail: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    proxy_queries: Mapped[int] = mapped_column(sa.BigInteger)
    #: candidates served from the scorer's cache while the checkpoints were evaluated (schema 2; NULL: none)
    deployment_queries: Mapped[int | None] = mapped_column(sa.BigInteger, nullable=True, default=None)
    fit_time: Mapped[float] = mapped_column(_Float, nullable=True)
    wall_time: Mapped[float] = mapped_column(_Float, nullable=True)
    created: Mapped[_dt.datetime] = mapped_column(sa.DateTime(timezone=True))
    # schema 2: how the run was isolated ("jail" / "trusted") and its own stdout/stderr (bounded)
    sandbox: Mapped[str | None] = mapped_column(sa.String(16), nullable=True)
    output: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    tiltenv_version: Mapped[str | None] = mapped_column(sa.String(64), nullable=True)
    torch_version: Mapped[str | None] = mapped_column(sa.String(64), nullable=True)
    device: Mapped[str | None] = mapped_column(sa.String(200), nullable=True)


class MetricRecord(Base):
    __tablename__ = "metrics"

    run_id: Mapped[int] = mapped_column(sa.ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(100), primary_key=True)
    value: Mapped[float] = mapped_column(_Float, nullable=True)


class CheckpointRecord(Base):
    __tablename__ = "checkpoints"

    run_id: Mapped[int] = mapped_column(sa.ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    step: Mapped[int] = mapped_column(sa.BigInteger, primary_key=True, autoincrement=False)
    gold_value: Mapped[float] = mapped_column(_Float, nullable=True)
    proxy_value: Mapped[float] = mapped_column(_Float, nullable=True)
    kl: Mapped[float] = mapped_column(_Float, nullable=True)
    value_gap: Mapped[float] = mapped_column(_Float, nullable=True)
    normalized_score: Mapped[float] = mapped_column(_Float, nullable=True)
    reward_variance_policy: Mapped[float] = mapped_column(_Float, nullable=True)


_TABLES = [SchemaInfo.__table__, SubmissionRecord.__table__, RunRecord.__table__, MetricRecord.__table__,
           CheckpointRecord.__table__]  # fmt: skip
assert [c for c in CHECKPOINT_FIELDS] == [c.name for c in CheckpointRecord.__table__.c if c.name not in
                                          ("run_id", "step")], "CheckpointRow and the checkpoints table differ"


# ---------------------------------------------------------------------------------------------------- store


class Store:
    """A leaderboard database: save scored runs, read them back as pandas frames.

    Args:
        url: a SQLAlchemy URL (see the module docstring), or a path ending in ``.db``/``.sqlite``/
            ``.sqlite3``; ``None`` opens :data:`DEFAULT_URL` (``./tiltenv-board.db``). A relative SQLite path
            is made absolute now, so a later ``chdir`` does not move the board. Tables are created on first
            use.

    Raises:
        StoreError: the URL is malformed, names an unknown dialect or a driver that is not installed, the
            database cannot be reached, or it holds a board of another schema version (or tables of the
            same names that are not a tiltenv board).

    A ``Store`` pickles as its URL (a worker process unpickles it into a fresh connection pool), and a forked
    child that inherits one uses new connections of its own (the parent's pooled ones are left to the parent).
    An in-memory ``sqlite://`` board is private to its process.
    """

    def __init__(self, url: str | None = None) -> None:
        self._engine = _make_engine(DEFAULT_URL if url is None else url)
        _ENGINES.add(self._engine)
        self.url: str = self._engine.url.render_as_string(hide_password=False)
        # Writes on SQLite take the write lock at BEGIN (see _install_sqlite_hooks); a no-op elsewhere.
        self._write_engine = self._engine.execution_options(tiltenv_write=True)
        self._known_hashes: set[str] = set()
        try:
            self._init_schema()
        except StoreError:
            self._engine.dispose()
            raise
        except sa_exc.SQLAlchemyError as e:
            self._engine.dispose()
            raise StoreError(f"cannot open the board database {self._display_url()}: {_orig(e)}") from e

    # -- lifecycle -------------------------------------------------------------------------------------

    def close(self) -> None:
        """Close every pooled connection (the store reopens them if used again)."""
        self._engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __reduce__(self):
        return (Store, (self.url,))

    def __repr__(self) -> str:
        return f"Store({self._display_url()!r})"

    def _display_url(self) -> str:
        return self._engine.url.render_as_string(hide_password=True)

    def _init_schema(self) -> None:
        with self._write_engine.begin() as conn:
            if conn.dialect.name == "postgresql":  # serialize concurrent first opens of one database
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(74170001)"))
            names = set(sa.inspect(conn).get_table_names())
            if SchemaInfo.__tablename__ in names:
                versions = conn.execute(sa.select(SchemaInfo.version)).scalars().all()
                if versions != [SCHEMA_VERSION]:
                    raise StoreError(
                        f"the board database {self._display_url()} has schema version "
                        f"{versions[0] if len(versions) == 1 else versions}, this tiltenv reads version "
                        f"{SCHEMA_VERSION}: open it with the tiltenv that wrote it (and export it), or use "
                        "another database."
                    )
                return
            ours = sorted(names & {t.name for t in _TABLES})
            if ours:
                raise StoreError(
                    f"the database {self._display_url()} has tables {ours} but no "
                    f"'{SchemaInfo.__tablename__}' table: it is not a tiltenv board (or one from before schema "
                    "versioning); use another database."
                )
            Base.metadata.create_all(conn)
            conn.execute(sa.insert(SchemaInfo).values(version=SCHEMA_VERSION))

    # -- writes ----------------------------------------------------------------------------------------

    def add_submission(self, sub: Any) -> bool:
        """Record a submission (a :class:`leaderboard.submission.Submission` or anything with its fields).

        Idempotent on ``code_hash``: the first record of a code hash wins (its name, ref, kind, track, config).

        Returns:
            ``True`` if it was new, ``False`` if its code hash was already there.
        """
        values = _submission_values(
            code_hash=getattr(sub, "code_hash", None), name=getattr(sub, "name", None),
            ref=getattr(sub, "ref", None), kind=getattr(sub, "kind", None), track=getattr(sub, "track", None),
            config=getattr(sub, "config", None),
        )  # fmt: skip
        return self._insert_submission(values)

    def _insert_submission(self, values: dict[str, Any]) -> bool:
        table = SubmissionRecord.__table__
        exists = sa.select(table.c.id).where(table.c.code_hash == values["code_hash"])
        try:
            with self._write_engine.begin() as conn:
                if conn.execute(exists).first() is not None:
                    added = False
                else:
                    conn.execute(sa.insert(table).values(**values))
                    added = True
        except sa_exc.IntegrityError as e:  # a concurrent writer added the same code hash first
            with self._engine.connect() as conn:
                if conn.execute(exists).first() is None:
                    raise StoreError(f"could not add submission {values['name']!r}: {_orig(e)}") from e
            added = False
        self._known_hashes.add(values["code_hash"])
        return added

    def rename_submission(self, code_hash: str, name: str) -> str | None:
        """Give the submission of ``code_hash`` a new display name (every board shows its runs under it).

        Returns:
            The previous name, or ``None`` if no submission has that code hash (nothing is written).
        """
        values = _submission_values(code_hash=code_hash, name=name, ref="-", kind="-", track="agent", config={})
        table = SubmissionRecord.__table__
        with self._write_engine.begin() as conn:
            old = conn.execute(sa.select(table.c.name).where(table.c.code_hash == code_hash)).scalar()
            if old is not None and old != values["name"]:
                conn.execute(sa.update(table).where(table.c.code_hash == code_hash).values(name=values["name"]))
        return old

    def save(self, result: RunResult) -> bool:
        """Store one run — its row, metrics and checkpoints — in one transaction.

        A result whose submission was never added gets a minimal submission row (name = ``result.submission``,
        kind ``"unknown"``); :meth:`add_submission` first records the full one.

        Returns:
            ``True`` if stored, ``False`` if its key was already stored (nothing is written: re-scoring and a
            concurrent scorer that saved the same key first are no-ops).

        Raises:
            ValueError, TypeError: the result is malformed (bad status/reason/split/track, a metric name that
                is empty or a reserved column, a value that is not a number, ...). Nothing is written.
            StoreError: the database refused the write (e.g. two checkpoints with one step). Nothing is
                written.
        """
        run, metrics, checkpoints = _rows_of(result)
        key = result.key()
        if run["code_hash"] not in self._known_hashes:
            self._insert_submission(_submission_values(
                code_hash=run["code_hash"], name=result.submission, ref=result.submission, kind="unknown",
                track=run["track"], config={},
            ))  # fmt: skip
        try:
            with self._write_engine.begin() as conn:
                if self._key_exists(conn, key):
                    return False
                run_id = conn.execute(sa.insert(RunRecord.__table__).values(**run)).inserted_primary_key[0]
                self._insert_metrics(conn, run_id, metrics)
                self._insert_checkpoints(conn, run_id, checkpoints)
        except sa_exc.IntegrityError as e:
            # The unique key decides between concurrent savers: if the key is there now, another writer won.
            with self._engine.connect() as conn:
                if self._key_exists(conn, key):
                    return False
            raise StoreError(f"could not save run {key}: {_orig(e)}") from e
        return True

    def forget_failed(self, **filters: Any) -> int:
        """Delete the failed runs matching ``filters`` (as in :meth:`runs`), in one transaction, so that the next
        scoring runs them again (a failure caused by a loaded machine, say). Successful runs are never touched.

        Returns:
            The number of failed runs deleted.
        """
        r = RunRecord.__table__.c
        ids = sa.select(r.id).where(r.status == "failed", *_filters(**filters))
        with self._write_engine.begin() as conn:
            run_ids = [i for (i,) in conn.execute(ids)]
            if not run_ids:
                return 0
            for table in (MetricRecord.__table__, CheckpointRecord.__table__):
                conn.execute(sa.delete(table).where(table.c.run_id.in_(run_ids)))
            conn.execute(sa.delete(RunRecord.__table__).where(r.id.in_(run_ids)))
        return len(run_ids)

    def remove(self, code_hashes: Iterable[str], *, suite: str | None = None) -> int:
        """Delete the runs (with their metrics and checkpoints) of these code hashes, in one transaction; without
        ``suite`` the submissions' records go too (``tiltenv remove``). Returns the number of runs deleted."""
        hashes = [str(h) for h in code_hashes]
        r = RunRecord.__table__.c
        ids = sa.select(r.id).where(r.code_hash.in_(hashes), *_filters(suite=suite))
        with self._write_engine.begin() as conn:
            run_ids = [i for (i,) in conn.execute(ids)]
            for table in (MetricRecord.__table__, CheckpointRecord.__table__):
                if run_ids:
                    conn.execute(sa.delete(table).where(table.c.run_id.in_(run_ids)))
            if run_ids:
                conn.execute(sa.delete(RunRecord.__table__).where(r.id.in_(run_ids)))
            if suite is None:
                sub = SubmissionRecord.__table__
                conn.execute(sa.delete(sub).where(sub.c.code_hash.in_(hashes)))
                self._known_hashes.difference_update(hashes)
        return len(run_ids)

    @staticmethod
    def _key_exists(conn: sa.Connection, key: tuple) -> bool:
        r = RunRecord.__table__.c
        q = sa.select(r.id).where(*(getattr(r, c) == v for c, v in zip(KEY_COLUMNS, key)))
        return conn.execute(q).first() is not None

    @staticmethod
    def _insert_metrics(conn: sa.Connection, run_id: int, metrics: list[tuple[str, float]]) -> None:
        if metrics:
            conn.execute(sa.insert(MetricRecord.__table__),
                         [{"run_id": run_id, "name": n, "value": v} for n, v in metrics])  # fmt: skip

    @staticmethod
    def _insert_checkpoints(conn: sa.Connection, run_id: int, checkpoints: list[dict[str, Any]]) -> None:
        if checkpoints:
            conn.execute(sa.insert(CheckpointRecord.__table__), [{"run_id": run_id, **c} for c in checkpoints])

    # -- reads -----------------------------------------------------------------------------------------

    def done_keys(self, code_hash: str, suite: str, version: int, split: str) -> set[tuple[str, int]]:
        """The ``(task_key, seed_index)`` pairs already stored (ok or failed) for one submission and suite
        version+split: what a resumed scoring skips."""
        r = RunRecord.__table__.c
        q = sa.select(r.task_key, r.seed_index).where(
            r.code_hash == code_hash, r.suite == suite, r.suite_version == int(version), r.split == split
        )
        with self._engine.connect() as conn:
            return {(str(k), int(i)) for k, i in conn.execute(q)}

    def runs(
        self,
        *,
        suite: str | None = None,
        version: int | None = None,
        split: str | None = None,
        track: str | None = None,
        code_hash: str | None = None,
    ) -> pd.DataFrame:
        """One row per stored run (ok and failed), sorted by :data:`KEY_COLUMNS`.

        Columns: :data:`RUN_COLUMNS` (``submission`` is the submission's name, ``task_kwargs`` canonical
        JSON text, :data:`PROVENANCE_COLUMNS` text (``"unknown"`` where not recorded), ``created`` the UTC time
        the run was stored as ISO 8601 text), then one float column per metric name (sorted; NaN where a run lacks that metric,
        e.g. a failed run). Filters combine with AND; ``None`` means any.
        """
        r, s = RunRecord.__table__.c, SubmissionRecord.__table__.c
        cols = [s.name.label("submission") if c == "submission" else getattr(r, c) for c in RUN_COLUMNS]
        q = _join_runs(sa.select(r.id, *cols))
        mq = sa.select(MetricRecord.run_id, MetricRecord.name, MetricRecord.value).join(
            RunRecord.__table__, RunRecord.id == MetricRecord.run_id
        )
        where = _filters(suite=suite, version=version, split=split, track=track, code_hash=code_hash)
        with self._engine.connect() as conn:  # one transaction: runs and metrics from one snapshot
            rows = conn.execute(q.where(*where)).all()
            mrows = conn.execute(mq.where(*where)).all()
        df = _frame(rows, ["id", *RUN_COLUMNS])
        df["task_kwargs"] = [_canonical_json(v) for v in df["task_kwargs"]]
        for c in PROVENANCE_COLUMNS:
            df[c] = df[c].fillna(UNKNOWN)
        # ISO 8601 UTC text (sorts chronologically, reads back from CSV/Parquet as it was written)
        df["created"] = [t.isoformat() for t in pd.to_datetime(df["created"], utc=True)]
        df = _typed(df)
        if mrows:
            m = _frame(mrows, ["id", "name", "value"])
            wide = m.pivot(index="id", columns="name", values="value").astype("float64")
            wide = wide[sorted(wide.columns)].rename_axis(None, axis=1)
            df = df.merge(wide, left_on="id", right_index=True, how="left")
        return _sorted(df.drop(columns="id"), KEY_COLUMNS)

    def checkpoints(self, **filters: Any) -> pd.DataFrame:
        """One row per stored checkpoint: ``submission``, :data:`KEY_COLUMNS`, ``step`` and
        :data:`CHECKPOINT_FIELDS`, sorted by key then step. Filters as in :meth:`runs`."""
        r, s, c = RunRecord.__table__.c, SubmissionRecord.__table__.c, CheckpointRecord.__table__.c
        cols = [s.name.label("submission"), *(getattr(r, k) for k in KEY_COLUMNS), c.step,
                *(getattr(c, f) for f in CHECKPOINT_FIELDS)]  # fmt: skip
        q = _join_runs(sa.select(*cols)).join(CheckpointRecord.__table__, c.run_id == r.id)
        with self._engine.connect() as conn:
            rows = conn.execute(q.where(*_filters(**filters))).all()
        names = ["submission", *KEY_COLUMNS, "step", *CHECKPOINT_FIELDS]
        return _sorted(_typed(_frame(rows, names)), [*KEY_COLUMNS, "step"])

    def failures(self, **filters: Any) -> pd.DataFrame:
        """One row per failed run: ``submission``, :data:`KEY_COLUMNS`, ``task_id``, ``track``, ``reason``
        (a key of :data:`leaderboard.spec.FAILURE_REASONS`), ``detail``, ``proxy_queries``, ``fit_time``,
        ``wall_time``; sorted by key. Filters as in :meth:`runs`."""
        r, s = RunRecord.__table__.c, SubmissionRecord.__table__.c
        cols = [s.name.label("submission") if c == "submission" else getattr(r, c) for c in FAILURE_COLUMNS]
        q = _join_runs(sa.select(*cols)).where(r.status == "failed", *_filters(**filters))
        with self._engine.connect() as conn:
            rows = conn.execute(q).all()
        return _sorted(_typed(_frame(rows, FAILURE_COLUMNS)), KEY_COLUMNS)

    def submissions(self) -> pd.DataFrame:
        """One row per submission: name, code_hash, ref, kind, track, config (dict), created (UTC
        timestamp); sorted by name then code hash."""
        s = SubmissionRecord.__table__.c
        with self._engine.connect() as conn:
            rows = conn.execute(sa.select(*(getattr(s, c) for c in SUBMISSION_COLUMNS))).all()
        df = _frame(rows, SUBMISSION_COLUMNS)
        df["created"] = pd.to_datetime(df["created"], utc=True).astype("datetime64[us, UTC]")
        for c in ("name", "code_hash", "ref", "kind", "track"):
            df[c] = df[c].astype("str")
        df["config"] = df["config"].astype(object)
        return _sorted(df, ["name", "code_hash"])

    def export(self, directory: str | Path, fmt: str = "csv", **filters: Any) -> list[Path]:
        """Write ``runs``, ``checkpoints``, ``failures`` and ``submissions`` as ``<directory>/<name>.<fmt>``.

        Args:
            directory: created if missing; existing files of these names are replaced.
            fmt: ``"csv"`` or ``"parquet"`` (Parquet needs ``pyarrow``: ``pip install 'tiltenv[leaderboard]'``).
            **filters: as in :meth:`runs` (the submissions table is written whole).

        Returns:
            The four paths written, in that order. Submission configs are written as JSON text. CSV floats
            are written with every digit (``pd.read_csv`` reads them back exactly).

        Raises:
            ValueError: unknown format. StoreError: Parquet without ``pyarrow``.
        """
        if fmt not in EXPORT_FORMATS:
            raise ValueError(f"fmt must be one of {list(EXPORT_FORMATS)} (got {fmt!r})." + suggest(fmt, EXPORT_FORMATS))
        if fmt == "parquet" and importlib.util.find_spec("pyarrow") is None:
            raise StoreError(
                "Parquet export needs pyarrow, which is not installed: pip install 'tiltenv[leaderboard]' "
                "(or pip install pyarrow), or export with fmt='csv'."
            )
        frames = {
            "runs": self.runs(**filters),
            "checkpoints": self.checkpoints(**filters),
            "failures": self.failures(**filters),
            "submissions": self.submissions(),
        }
        frames["submissions"]["config"] = [_canonical_json(c) for c in frames["submissions"]["config"]]
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        paths = []
        for name, df in frames.items():
            path = directory / f"{name}.{fmt}"
            if fmt == "csv":
                df.to_csv(path, index=False)
            else:
                df.to_parquet(path, index=False, engine="pyarrow")
            paths.append(path)
        return paths


# ---------------------------------------------------------------------------------------------- internals


def _orig(e: BaseException) -> str:
    """The driver's message of a SQLAlchemy error, on one line."""
    msg = str(getattr(e, "orig", None) or e)
    return " ".join(msg.split())


def _make_engine(url: str) -> sa.Engine:
    if not isinstance(url, (str, Path)):
        raise TypeError(
            f"url must be a string (got {url!r} of type {type(url).__name__}). Supported: {_SUPPORTED_URLS}."
        )
    raw = str(url)
    if "://" not in raw:
        if not raw.endswith((".db", ".sqlite", ".sqlite3")):
            raise StoreError(f"not a database URL: {raw!r}. Supported: {_SUPPORTED_URLS}.")
        raw = "sqlite:///" + str(Path(raw).expanduser().resolve())
    try:
        parsed = sa.engine.make_url(raw)
    except sa_exc.ArgumentError as e:
        raise StoreError(f"not a database URL: {raw!r} ({e}). Supported: {_SUPPORTED_URLS}.") from e
    shown = parsed.render_as_string(hide_password=True)
    kwargs: dict[str, Any] = {}
    board_file: Path | None = None
    if parsed.get_backend_name() == "sqlite":
        db = parsed.database
        if db and db != ":memory:" and not db.startswith("file:"):
            path = Path(db).expanduser().resolve()
            if not path.parent.is_dir():
                raise StoreError(
                    f"cannot open the board database {shown}: directory {str(path.parent)!r} does not exist."
                )
            parsed = parsed.set(database=str(path))
            board_file = path
        kwargs["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT_S}
    try:
        engine = sa.create_engine(parsed, **kwargs)
    except sa_exc.NoSuchModuleError as e:
        scheme = parsed.drivername
        raise StoreError(
            f"unknown database kind {scheme!r} in {shown}." + suggest(scheme, _KNOWN_DIALECTS)
            + f" Supported: {_SUPPORTED_URLS}."
        ) from e
    except ImportError as e:
        extra = " (pip install 'tiltenv[postgres]')" if parsed.get_backend_name() == "postgresql" else ""
        raise StoreError(
            f"the database driver for {shown} is not installed: {e}{extra}. Supported: {_SUPPORTED_URLS}."
        ) from e
    except (sa_exc.ArgumentError, TypeError, ValueError) as e:
        raise StoreError(f"cannot open the board database {shown}: {e}. Supported: {_SUPPORTED_URLS}.") from e
    if engine.dialect.name == "sqlite":
        _install_sqlite_hooks(engine)
        if board_file is not None:
            _private_board_file(board_file, shown)
    return engine


def _private_board_file(path: Path, shown: str) -> None:
    """Create a new SQLite board 0600 (SQLite gives its journal/WAL files the same mode); warn when an existing
    one, or its folder, is open to other users (a board holds every result and failure of every submission)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    except OSError:
        return  # not ours to create here (e.g. a read-only folder): SQLite reports it
    else:
        os.close(fd)
        return
    try:
        st, parent = path.stat(), path.parent.stat()
    except OSError:
        return
    if st.st_mode & 0o077:
        warnings.warn(f"the board file {path} is readable by other users (mode {st.st_mode & 0o777:o}): "
                      f"chmod 600 {path}", stacklevel=4)
    elif parent.st_mode & 0o022 and not parent.st_mode & 0o1000 and parent.st_uid != os.geteuid():
        warnings.warn(f"the board file {path} lies in a folder other users may write ({path.parent}, mode "
                      f"{parent.st_mode & 0o777:o}): keep it in a folder the scorer owns", stacklevel=4)


#: Engines of every open Store: a forked child drops the pooled connections it inherited (they belong to the
#: parent: sharing a socket or a SQLite handle across processes corrupts both) and opens its own.
_ENGINES: weakref.WeakSet[sa.Engine] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for engine in list(_ENGINES):
        engine.dispose(close=False)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _install_sqlite_hooks(engine: sa.Engine) -> None:
    """WAL, busy timeout, foreign keys; transactions begun by us (``BEGIN IMMEDIATE`` for writes, so two
    writers queue on the busy timeout instead of failing to upgrade a read lock)."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # the driver's own implicit BEGINs are off; see _on_begin
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout = {int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
        cur.execute("PRAGMA foreign_keys = ON")
        # Switching a new, empty board to WAL while other scorers open it can fail "database is locked" at once
        # (SQLite does not wait on the busy timeout for this lock): retry for up to the busy timeout.
        for attempt in range(int(SQLITE_BUSY_TIMEOUT_S / 0.05) + 1):
            try:
                cur.execute("PRAGMA journal_mode = WAL")
                break
            except sqlite3.OperationalError as e:
                if "locked" not in str(e) or attempt >= int(SQLITE_BUSY_TIMEOUT_S / 0.05):
                    raise
                time.sleep(0.05)
        cur.execute("PRAGMA synchronous = NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("tiltenv_write") else "BEGIN")


def _clean_text(value: Any, *, limit: int | None = None) -> str | None:
    """Text any database accepts: no NUL (PostgreSQL refuses it), no lone surrogates (not UTF-8)."""
    if value is None:
        return None
    text = str(value).encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")
    if limit is not None and len(text) > limit:
        text = text[:limit] + f"... [{len(text) - limit} more characters truncated]"
    return text


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (tuple, set, frozenset)):
        return list(o)
    raise TypeError(f"{o!r} of type {type(o).__name__} is not JSON serializable")


def _json_value(field: str, value: Any) -> Any:
    """A JSON-safe copy (numpy scalars/arrays to Python; NaN/inf refused: PostgreSQL's json rejects them)."""
    try:
        return json.loads(json.dumps(value if value is not None else {}, default=_json_default, allow_nan=False,
                                     sort_keys=True))  # fmt: skip
    except (TypeError, ValueError) as e:
        raise ValueError(f"{field} must be JSON-serializable without NaN/inf (got {value!r}): {e}") from e


def _canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def _check_str(field: str, value: Any, *, max_len: int) -> str:
    if not isinstance(value, str) or not value:
        raise TypeError(f"{field} must be a non-empty string (got {value!r}).")
    if len(value) > max_len:
        raise ValueError(f"{field} must have at most {max_len} characters (got {len(value)}: {value[:40]!r}...).")
    return value


def _check_choice(field: str, value: Any, choices: Iterable[str]) -> str:
    choices = list(choices)
    if value not in choices:
        raise ValueError(f"{field} must be one of {choices} (got {value!r})." + suggest(str(value), choices))
    return value


def _check_int(field: str, value: Any) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{field} must be an integer (got {value!r} of type {type(value).__name__}).")
    return int(value)


def _check_float(field: str, value: Any) -> float:
    if isinstance(value, (str, bytes)) or value is None:
        raise TypeError(f"{field} must be a number (got {value!r}).")
    try:
        return float(value)
    except (TypeError, ValueError) as e:
        raise TypeError(f"{field} must be a number (got {value!r} of type {type(value).__name__}).") from e


def _submission_values(*, code_hash, name, ref, kind, track, config) -> dict[str, Any]:
    return {
        "code_hash": _check_str("submission code_hash", code_hash, max_len=128),
        "name": _clean_text(_check_str("submission name", name, max_len=200)),
        "ref": _clean_text(_check_str("submission ref", ref, max_len=10_000)),
        "kind": _check_str("submission kind", kind, max_len=32),
        "track": _check_choice("submission track", track, TRACKS),
        "config": _json_value("submission config", config if config is not None else {}),
        "created": _dt.datetime.now(_dt.timezone.utc),
    }


_RESERVED_METRIC_NAMES = frozenset(RUN_COLUMNS) | {"id", "run_id", "step", "created"}


def _rows_of(result: RunResult) -> tuple[dict[str, Any], list[tuple[str, float]], list[dict[str, Any]]]:
    """Validate a result and turn it into (run row, metric rows, checkpoint rows)."""
    if not isinstance(result, RunResult):
        raise TypeError(f"save() takes a leaderboard.spec.RunResult (got {type(result).__name__}).")
    spec = result.spec
    status = _check_choice("RunResult.status", result.status, STATUSES)
    if status == "failed":
        _check_choice("RunResult.reason of a failed run", result.reason, FAILURE_REASONS)
    elif result.reason is not None:
        raise ValueError(f"an ok run has no failure reason (got reason={result.reason!r}); use status='failed'.")
    run = {
        "code_hash": _check_str("RunResult.code_hash", result.code_hash, max_len=128),
        "suite": _check_str("RunSpec.suite", spec.suite, max_len=100),
        "suite_version": _check_int("RunSpec.suite_version", spec.suite_version),
        "split": _check_choice("RunSpec.split", spec.split, SPLITS),
        "task_key": _check_str("RunSpec.task_key", spec.task_key, max_len=200),
        "seed_index": _check_int("RunSpec.seed_index", spec.seed_index),
        "task_id": _check_str("RunSpec.task_id", spec.task_id, max_len=200),
        "task_kwargs": _json_value("RunSpec.task_kwargs", spec.task_kwargs),
        "track": _check_choice("RunSpec.track", spec.track, TRACKS),
        "status": status,
        "reason": result.reason,
        "detail": _clean_text(result.detail, limit=MAX_DETAIL_CHARS),
        "proxy_queries": _check_int("RunResult.proxy_queries", result.proxy_queries),
        "deployment_queries": (None if getattr(result, "deployment_queries", None) is None
                               else _check_int("RunResult.deployment_queries", result.deployment_queries)),
        "fit_time": _check_float("RunResult.fit_time", result.fit_time),
        "wall_time": _check_float("RunResult.wall_time", result.wall_time),
        "created": _dt.datetime.now(_dt.timezone.utc),
        "sandbox": None if result.sandbox is None else _check_choice("RunResult.sandbox", result.sandbox, SANDBOX_MODES),
        "output": _clean_text(result.output, limit=OUTPUT_MAX),
        **{c: _clean_text(getattr(result, c, None), limit=200) for c in PROVENANCE_COLUMNS},
    }
    if not isinstance(result.metrics, Mapping):
        raise TypeError(f"RunResult.metrics must be a dict name -> float (got {type(result.metrics).__name__}).")
    metrics = []
    for name, value in result.metrics.items():
        _check_str("metric name", name, max_len=100)
        if name in _RESERVED_METRIC_NAMES:
            raise ValueError(
                f"metric name {name!r} is a column of the runs table; reserved: {sorted(_RESERVED_METRIC_NAMES)}."
            )
        metrics.append((name, _check_float(f"metric {name!r}", value)))
    checkpoints = []
    for i, c in enumerate(result.checkpoints):
        if not isinstance(c, CheckpointRow):
            raise TypeError(f"RunResult.checkpoints[{i}] must be a CheckpointRow (got {type(c).__name__}).")
        row = {"step": _check_int(f"checkpoints[{i}].step", c.step)}
        for f in CHECKPOINT_FIELDS:
            row[f] = _check_float(f"checkpoints[{i}].{f}", getattr(c, f))
        checkpoints.append(row)
    return run, metrics, checkpoints


def _join_runs(q: sa.Select) -> sa.Select:
    return q.select_from(RunRecord.__table__).join(
        SubmissionRecord.__table__, SubmissionRecord.code_hash == RunRecord.code_hash
    )


def _filters(*, suite=None, version=None, split=None, track=None, code_hash=None) -> list:
    r = RunRecord.__table__.c
    out = []
    if suite is not None:
        out.append(r.suite == suite)
    if version is not None:
        out.append(r.suite_version == _check_int("version", version))
    if split is not None:
        out.append(r.split == _check_choice("split", split, SPLITS))
    if track is not None:
        out.append(r.track == _check_choice("track", track, TRACKS))
    if code_hash is not None:
        out.append(r.code_hash == code_hash)
    return out


def _frame(rows: list, columns: list[str]) -> pd.DataFrame:
    # Plain tuples: pandas probes each SQLAlchemy Row for namedtuple fields, 10x slower than the query.
    return pd.DataFrame([tuple(r) for r in rows], columns=columns)


def _typed(df: pd.DataFrame) -> pd.DataFrame:
    """The same dtypes whatever the backend and however many rows: ints int64, floats float64, text str."""
    for c in df.columns:
        if c in _INT_COLUMNS or c == "id":
            df[c] = df[c].astype("int64")
        elif c in _FLOAT_COLUMNS:
            df[c] = df[c].astype("float64")
        else:
            df[c] = df[c].astype("str")
    return df


def _sorted(df: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Sorted in pandas (code-point order), not by the database, whose text collation varies."""
    return df.sort_values(by, kind="mergesort").reset_index(drop=True)
