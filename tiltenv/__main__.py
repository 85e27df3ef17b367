"""``python -m tiltenv``: the ``tiltenv`` command line (:mod:`leaderboard.cli`).

The command line lives in the ``leaderboard`` package (the top layer); this entry point only dispatches to
it. Without the leaderboard's extras installed, it falls back to the sweep of one task (:mod:`tiltenv.sweep`).
"""

from __future__ import annotations

import sys

if __name__ == "__main__":
    try:
        from leaderboard.cli import main
    except ImportError as exc:  # the leaderboard extra (typer, rich, sqlalchemy) is not installed
        print(f"note: the full CLI needs `pip install 'tiltenv[leaderboard]'` ({exc}); running the sweep.", file=sys.stderr)
        from tiltenv.sweep import main
    raise SystemExit(main())
