#!/usr/bin/env bash
# Reproduce every figure of benchmarks/RESULTS.md: benchmarks/run.sh [--quick] [--only SECTION...]
# Sets up Triton + perf_analyzer (../shared/tools/peers/setup.sh) when missing, installs matplotlib
# into the environment when missing, starts and stops every server itself on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-}
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
exec "$PY" -m benchmarks "$@"
