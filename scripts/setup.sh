#!/usr/bin/env bash
# Create (or reuse) ./.venv and install tiltenv into it.
#
# torch: installs torch==2.13.0 (never an unpinned torch, which pulls the newest multi-GB CUDA build).
# On plain PyPI, Linux wheels of torch are CUDA builds: for the CPU build there, set
#   TILTENV_TORCH_SPEC="torch==2.13.0 --index-url <the PyTorch CPU wheel index>"
# (the value is split into pip arguments). If .venv already has a torch (e.g. a CUDA build you installed
# yourself, see the README), it is kept as it is. TILTENV_EXTRAS picks the extras (default: dev,leaderboard).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTHON="${PYTHON:-python3}"
TORCH_SPEC="${TILTENV_TORCH_SPEC:-torch==2.13.0}"
EXTRAS="${TILTENV_EXTRAS:-dev,leaderboard}"

if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
# shellcheck disable=SC1091
. .venv/bin/activate
export PIP_DISABLE_PIP_VERSION_CHECK=1
if ! python -c "import torch" >/dev/null 2>&1; then
  echo "[setup] installing $TORCH_SPEC"
  # shellcheck disable=SC2086  # the spec may carry pip options
  python -m pip install -q $TORCH_SPEC
fi
echo "[setup] installing tiltenv[$EXTRAS] (editable)"
python -m pip install -q -e ".[$EXTRAS]"
python -c "import torch, tiltenv; print(f'[setup] tiltenv {tiltenv.__version__}, torch {torch.__version__}, cuda={torch.cuda.is_available()}')"
# The leaderboard runs every submission in a bubblewrap jail (leaderboard/sandbox/jail.py): install bwrap where we can.
if ! command -v bwrap >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "[setup] installing bubblewrap (the leaderboard's jail)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q bubblewrap >/dev/null 2>&1 \
      || { apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q bubblewrap >/dev/null; } \
      || echo "[setup] could not install bubblewrap: install it (apt-get install bubblewrap) before scoring submissions"
  else
    echo "[setup] bubblewrap (bwrap) is missing: the scorer refuses to run submissions without it." \
         "Install it: sudo apt-get install bubblewrap (Debian/Ubuntu) or sudo dnf install bubblewrap (Fedora)."
  fi
fi
