"""Shared fixtures of the leaderboard tests.

``store_url`` runs a test once on a SQLite file and once on PostgreSQL, each time in a fresh database.
PostgreSQL needs a server: ``bash scripts/postgres.sh start`` and
``export TILTENV_TEST_PG_URL=$(bash scripts/postgres.sh url)`` (its role must be allowed to create databases).
Without ``TILTENV_TEST_PG_URL`` the PostgreSQL cases are skipped, unless ``TILTENV_REQUIRE_SERVICES=1``
(CI), which makes them fail instead.
"""

from __future__ import annotations

import os
import uuid

import pytest

PG_URL_ENV = "TILTENV_TEST_PG_URL"
REQUIRE_SERVICES_ENV = "TILTENV_REQUIRE_SERVICES"


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    """A SQLAlchemy URL of a new SQLite file."""
    return f"sqlite:///{tmp_path / 'board.db'}"


@pytest.fixture
def postgresql_url():
    """A SQLAlchemy URL of a new, empty PostgreSQL database (dropped after the test)."""
    base = os.environ.get(PG_URL_ENV)
    if not base:
        msg = (f"no PostgreSQL server: set {PG_URL_ENV} (bash scripts/postgres.sh start; "
               f"export {PG_URL_ENV}=$(bash scripts/postgres.sh url))")  # fmt: skip
        if os.environ.get(REQUIRE_SERVICES_ENV) == "1":
            pytest.fail(f"{msg}; {REQUIRE_SERVICES_ENV}=1 requires it.")
        pytest.skip(msg)
    import sqlalchemy as sa
    from sqlalchemy.pool import NullPool

    url = sa.engine.make_url(base)
    name = f"tiltenv_test_{uuid.uuid4().hex[:16]}"
    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        import time

        # A backend still authenticating (e.g. a forked child's connection the test left opening) has no role yet,
        # and PostgreSQL lets only a superuser terminate such a backend: DROP ... WITH (FORCE) then fails with
        # InsufficientPrivilege for a while. Retry for a few seconds instead of failing the test's teardown.
        for attempt in range(50):
            try:
                with admin.connect() as conn:
                    conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                break
            except sa.exc.ProgrammingError:
                if attempt == 49:
                    raise
                time.sleep(0.1)
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request) -> str:
    """A fresh board database URL: SQLite file, then PostgreSQL (see the module docstring)."""
    return request.getfixturevalue(f"{request.param}_url")
