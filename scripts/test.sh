#!/usr/bin/env bash
# Set up ./.venv (scripts/setup.sh) and run the test suite. Extra arguments go to pytest.
# The tests use every extra: dev, leaderboard, postgres (psycopg2) and ray (a local Ray instance). The
# PostgreSQL and Chromium tests skip when those services are absent (see .ci/run, which provides both).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
TILTENV_EXTRAS="${TILTENV_EXTRAS:-dev,leaderboard,postgres,ray}" bash scripts/setup.sh
# shellcheck disable=SC1091
. .venv/bin/activate
# pytest exits 5 when it collects no tests: that is a failure here, never a silent pass.
python -m pytest -q "$@"
