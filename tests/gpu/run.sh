#!/usr/bin/env bash
# The GPU check: the CUDA tests (pytest -m cuda) and the CUDA training benchmark, one table;
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
python -c "import torch; print(f'torch {torch.__version__}, CUDA {torch.version.cuda}, ' \
f'{torch.cuda.device_count()} GPU(s) visible')"
status=0
python -m tests.gpu.report --json "$results" "$@" || status=$?
# The exact dense CRF: pydensecrf (one CPU process) against the torch backend on the GPU.
if python -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
  python -m benchmarks.bench_crf_backends --device cuda --n-images 2
fi
exit $status
