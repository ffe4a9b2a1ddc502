#!/usr/bin/env bash
# GPU machine: build the CUDA kernels for each architecture list and run every kernel test on each build.
# An H100 or H200 JIT-compiles the PTX of a "7.5+PTX" or "8.0+PTX" build, so the code paths of a T4 (sm_75)
# and an A100 (sm_80) really run there; "9.0" is the native build. Each list gets its own cached build
# (the list is part of the cache key). Logs go to $OUT (or /tmp). The native build also runs
# tests/library/test_kernels_build.py (nvcc for sm_75..sm_90, as CI does without a GPU).
#   bash scripts/gpu_kernel_archs.sh                       # "9.0" "7.5+PTX" "8.0+PTX"
#   bash scripts/gpu_kernel_archs.sh "8.6+PTX" -- -k gemv  # other lists; pytest arguments after --
# Wheels for packages the machine lacks (bitsandbytes) go in .whl/ (see scripts/gpu_check.sh).
set -uo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=gpu_env.sh
. scripts/gpu_env.sh
out=${OUT:-/tmp}
lists=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do lists+=("$1"); shift; done
[ "${1:-}" = "--" ] && shift
[ ${#lists[@]} -gt 0 ] || lists=("9.0" "7.5+PTX" "8.0+PTX")
python3 -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda, torch.cuda.get_device_name(0), torch.cuda.get_device_capability())"
status=0
for archs in "${lists[@]}"; do
    log="$out/kernel_tests_$(echo "$archs" | tr -c 'A-Za-z0-9' '_').log"
    echo "=== TORCH_CUDA_ARCH_LIST=$archs"
    build_extension "$archs" "$out/build_$(echo "$archs" | tr -c 'A-Za-z0-9' '_').log" || { status=1; continue; }
    # a PTX build changes only the CUDA kernels: its run leaves out the CPU-device tests (the native run has them)
    filter=()
    case "$archs" in *PTX*) filter=(-k "not cpu") ;; esac
    TORCH_CUDA_ARCH_LIST="$archs" python3 -m pytest -q -p no:cacheprovider tests/library/test_kernels.py "${filter[@]}" "$@" \
        > "$log" 2>&1
    rc=$?
    tail -4 "$log"
    [ $rc -eq 0 ] || { status=1; grep -E "^(FAILED|ERROR)|Fatal Python error" "$log" | head -20; }
done
python3 -m pytest -q -p no:cacheprovider tests/library/test_kernels_build.py 2>&1 | tail -2 || status=1
exit $status
