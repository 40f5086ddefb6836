#!/usr/bin/env bash
# The GPU check: the CUDA tests (pytest -m cuda), the CUDA training benchmark in one table,
# then the dense CRF's two backends side by side.
#
#   pip install -r requirements.txt      # with the CUDA build of torch (see README)
#   bash tests/gpu/run.sh gpu-results.json [--skip-benchmark]
#
# About 5 minutes on one H100. On a machine without CUDA it runs too, skipping the CUDA parts and
# saying so, and still ends with the table. Exit code 1 if a CUDA test failed.
set -euo pipefail
cd "$(dirname "$0")/../.."
results="${1:?usage: bash tests/gpu/run.sh RESULTS.json [--skip-benchmark]}"
shift
exec python -m tests.gpu.report --json "$results" "$@"
