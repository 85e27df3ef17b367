#!/usr/bin/env bash
# The GPU check, as one short script: the CUDA-only tests, then every GPU figure of the benchmarks.
#
#   bash scripts/gpu_check.sh --fetch   # on a machine with pip access: wheels the GPU image lacks -> .whl/
#   bash scripts/gpu_check.sh           # on the GPU machine (CUDA torch installed, no network needed)
#
# --fetch downloads (into $TILTENV_WHEELS, default .whl), for CPython 3.12 on x86-64 Linux, the packages tiltenv needs beyond torch, numpy,
# pandas, rich and typer (which a CUDA image usually has): gymnasium, Farama-Notifications,
# stable-baselines3, cloudpickle, SQLAlchemy, greenlet, at the versions of this checkout's .venv when
# there is one. The run installs .whl/*.whl (if present) into /tmp/tiltenv-site, puts the repository on
# PYTHONPATH and runs, with `python3` (or $PYTHON):
#   1. pytest on the tests that need CUDA (they skip without it; here they must pass);
#   2. scripts/bench.py --device cuda (vector env, exact metrics, proxy training vs the CPU in the same run);
#   3. scripts/bench_leaderboard.py --scoring-only --device cuda (exact scoring throughput).
# Logs go to $OUT (when set, e.g. by a remote runner) or reports/gpu/. About 5 minutes on one H100.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
WHL=${TILTENV_WHEELS:-.whl}

if [ "${1:-}" = "--fetch" ]; then
  pick() {  # NAME DEFAULT_VERSION: the .venv's version when there is one
    local v=""
    [ -x .venv/bin/python ] && v=$(.venv/bin/python -c "import importlib.metadata as m; print(m.version('$1'))" 2>/dev/null)
    echo "$1==${v:-$2}"
  }
  mkdir -p "$WHL"
  for spec in "$(pick gymnasium 1.4.0)" "$(pick Farama-Notifications 0.0.6)" "$(pick stable_baselines3 2.9.2)" \
              "$(pick cloudpickle 3.1.3)" "$(pick SQLAlchemy 2.1.9)" "$(pick greenlet 3.2.4)"; do
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
      --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any -d "$WHL" "$spec" \
      || { echo "gpu_check.sh: could not download $spec" >&2; exit 2; }
  done
  ls -1 "$WHL"
  exit 0
fi
[ $# -eq 0 ] || { echo "usage: bash scripts/gpu_check.sh [--fetch]" >&2; exit 2; }

if compgen -G "$WHL/*.whl" >/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/tiltenv-site \
    "$WHL"/*.whl || exit 2
  export PYTHONPATH="$PWD:/tmp/tiltenv-site${PYTHONPATH:+:$PYTHONPATH}"
else
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1
"$PY" - <<'EOF' || exit 2
import torch
if not torch.cuda.is_available():
    raise SystemExit("gpu_check.sh: this torch sees no CUDA device (torch %s)" % torch.__version__)
print("torch", torch.__version__, "on", torch.cuda.get_device_name(0))
EOF
LOG=${OUT:-reports/gpu}
mkdir -p "$LOG"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>/dev/null | tee "$LOG/nvidia-smi.txt"

status=0
echo "== 1. CUDA tests"
"$PY" -m pytest -q -p no:cacheprovider -k "cuda" tests/baselines/test_baseline_determinism.py \
  tests/leaderboard/test_runner.py tests/tiltenv/test_envs.py tests/tiltenv/test_proxies.py \
  tests/tiltenv/test_metrics.py 2>&1 | tee "$LOG/cuda_tests.txt" || status=1
echo "== 2. bench.py --device cuda"
"$PY" scripts/bench.py --device cuda 2>&1 | tee "$LOG/bench_cuda.txt" || status=1
echo "== 3. bench_leaderboard.py --scoring-only --device cuda"
"$PY" scripts/bench_leaderboard.py --scoring-only --device cuda 2>&1 | tee "$LOG/bench_leaderboard_cuda.txt" || status=1
echo "gpu_check.sh: logs in $LOG (status $status)"
exit $status
