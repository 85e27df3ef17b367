#!/usr/bin/env bash
# Set up ./.venv (scripts/setup.sh) and run the main job: score every built-in baseline on the `smoke` suite
# (its test split, the board: private worlds per submission from the salt in ~/.config/tiltenv/salt, created 0600 on
# first use, or $TILTENV_SALT; each run in its own sandboxed process), print the board and write the HTML report to
# reports/smoke.html. Results go to the SQLite board ./tiltenv-board.db: a second run re-scores nothing.
# Extra arguments go to `tiltenv score` (e.g. --backend serial, --db URL).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
# shellcheck disable=SC1091
. .venv/bin/activate
tiltenv score --baselines all --suite smoke --split test --backend pool --workers 2 --report reports/smoke.html "$@"
