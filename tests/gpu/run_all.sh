#!/usr/bin/env bash
# Run every GPU test (tests/gpu/) on a machine with an NVIDIA GPU, in a venv of its own.
#
#   tests/gpu/run_all.sh                 # create .venv-gpu, install the GPU extras, run tests/gpu
#   DAGSERVE_GPU_VENV=/path/venv tests/gpu/run_all.sh   # use (and fill) another venv
#   DAGSERVE_GPU_NO_INSTALL=1 tests/gpu/run_all.sh      # offline: use the venv as it is
#   tests/gpu/run_all.sh -k tensorrt     # extra arguments go to pytest
#
# Installs: dagserve[gpu,test] (cupy-cuda13x, tensorrt-cu13), onnxruntime-gpu in place of the CPU
# onnxruntime (the two are one module; see docs/backends.md), torch (a CUDA build from PyPI) and DALI
# (nvidia-dali-cuda130 when the driver supports CUDA 13, else nvidia-dali-cuda120). Tests whose package is missing skip with the reason, so the summary
# line ("N passed, M skipped") says exactly what ran. Exit status: pytest's.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="${DAGSERVE_GPU_VENV:-$ROOT/.venv-gpu}"
PYTHON="${PYTHON:-python3}"

if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
    echo "run_all.sh: no NVIDIA GPU visible (nvidia-smi -L failed); the GPU tests would all skip" >&2
    exit 2
fi
nvidia-smi -L

if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"

if [ -z "${DAGSERVE_GPU_NO_INSTALL:-}" ]; then
    "$PY" -m pip install --quiet --upgrade pip
    "$PY" -m pip install --quiet -e "$ROOT[gpu,test]"
    "$PY" -m pip uninstall --quiet -y onnxruntime
    "$PY" -m pip install --quiet "onnxruntime-gpu[cuda,cudnn]>=1.26"
    "$PY" -m pip install --quiet torch
    cuda_major="$(nvidia-smi | sed -n 's/.*CUDA Version: \([0-9]*\).*/\1/p' | head -n1)"
    if [ "${cuda_major:-0}" -ge 13 ]; then
        "$PY" -m pip install --quiet nvidia-dali-cuda130
    else
        "$PY" -m pip install --quiet nvidia-dali-cuda120
    fi
fi

"$PY" - <<'PYEOF'
import importlib
for name in ("cupy", "onnxruntime", "tensorrt", "torch", "nvidia.dali"):
    try:
        module = importlib.import_module(name)
        print(f"{name:12s} {getattr(module, '__version__', '?')}")
    except Exception as exc:  # report and go on: the tests that need it skip
        print(f"{name:12s} missing ({type(exc).__name__}: {exc})")
import onnxruntime
print("ORT providers:", onnxruntime.get_available_providers())
PYEOF

cd "$ROOT"
exec "$PY" -m pytest tests/gpu -ra -v -p no:cacheprovider "$@"
