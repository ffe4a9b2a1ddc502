#!/usr/bin/env bash
# One call on a GPU machine: run the library tests with CUDA present (the `device` fixture then
# runs every device-parametrized test on "cuda" as well as "cpu"), plus the grading helpers on CUDA.
# Used through the course's device tool:  bash scripts/gpu_check.sh  (wheels for missing packages in .whl/)
set -uo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=gpu_env.sh
. scripts/gpu_env.sh
python3 - <<'PY'
import torch, transformers
print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name(0), "transformers", transformers.__version__)
PY
# MiniLM ships in a PyPI package too large to carry, and ipywidgets is not on the GPU machine: those
# tests are deselected here (they run in CI); widget and MiniLM cells of the notebooks fail there for the same reason.
python3 -m pytest -q -p no:cacheprovider -rs tests \
    --ignore=tests/course/test_grading_roundtrip.py --ignore=tests/course/test_release_in_sync.py \
    --ignore=tests/course/test_notebook_lint.py --ignore=tests/deployment/test_environment_files.py \
    -k "not minilm and not MiniLM and not sentence and not embed and not widget and not paraphrases and not quiet_stderr and not runs_offline" "$@" 2>&1 | tee "${OUT:-/tmp}/gpu_tests.log"
status=${PIPESTATUS[0]}
# The notebooks' own test cells, with CUDA visible (grading checks then run on "cuda" too).
if [ -z "${SKIP_NOTEBOOKS:-}" ]; then
    for nb in solutions/*/*.ipynb; do
        python3 scripts/run_notebook_cells.py "$nb" 2>&1 | tail -20
    done
fi
# The kernels' benchmark table (builds the CUDA extension, validates every kernel, times them).
[ -n "${SKIP_BENCH:-}" ] || python3 benchmarks/kernels.py --out "${OUT:-/tmp}/kernels_h100.md" | tail -5
exit $status
