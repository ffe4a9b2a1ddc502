#!/usr/bin/env bash
# GPU machine, one call (about 2 minutes on an H100: builds 16-18 s each, tests 48 s, 7.5+PTX tests 15 s, sweep
# 8 s): NF4 GEMV v10 checked and timed.
#   1. native build (TORCH_CUDA_ARCH_LIST=9.0, or ARCH=...) + tests/library/test_kernels.py and test_nf4_linear.py
#   2. a "7.5+PTX" build (the sm_75 code paths: v7 and v10 fall back) + the gemv tests of test_kernels.py
#   3. benchmarks/kernels.py --sweep-v10 (validates every v10 configuration, then times them next to cuBLAS fp16,
#      v7, v8 and the default at six shapes and batch 1, 2, 4, 8, 16; bf16 at batch 1, 2, 4)
# Logs and the sweep's tables go to $OUT (or /tmp); the summary table is printed last.
#   bash scripts/gemv_v10_check.sh                 # all three stages
#   STAGES="sweep tests" bash scripts/gemv_v10_check.sh   # a subset, in this order (build runs first anyway)
# Each stage has a time limit (seconds: TESTS_S, PTX_S, SWEEP_S) so that the call returns with what it has.
set -uo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=gpu_env.sh
. scripts/gpu_env.sh
out=${OUT:-/tmp}
arch=${ARCH:-9.0}
stages=${STAGES:-tests ptx sweep}
status=0
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,memory.total --format=csv,noheader || true
python3 -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda, torch.cuda.get_device_name(0))"

build() {  # $1: TORCH_CUDA_ARCH_LIST (build_extension: scripts/gpu_env.sh)
    build_extension "$1" "$out/build_$(echo "$1" | tr -c 'A-Za-z0-9' '_').log"
}

echo "=== native build ($arch)"
build "$arch" || exit 1
for stage in $stages; do
    start=$(date +%s)
    case "$stage" in
    tests)
        echo "=== tests (native $arch): test_kernels.py, test_nf4_linear.py"
        TORCH_CUDA_ARCH_LIST="$arch" timeout "${TESTS_S:-240}" python3 -m pytest -q -p no:cacheprovider \
            tests/library/test_kernels.py tests/library/test_nf4_linear.py > "$out/tests_native.log" 2>&1
        rc=$?
        tail -3 "$out/tests_native.log"
        [ $rc -eq 0 ] || { status=1; grep -E "^(FAILED|ERROR)|Fatal Python error|Timeout" "$out/tests_native.log" | head -20; }
        ;;
    ptx)
        echo "=== 7.5+PTX build + gemv tests (sm_75 code: no tensor cores)"
        build "7.5+PTX" || { status=1; continue; }
        TORCH_CUDA_ARCH_LIST="7.5+PTX" timeout "${PTX_S:-150}" python3 -m pytest -q -p no:cacheprovider \
            tests/library/test_kernels.py -k "gemv and not cpu or cuda_arch" > "$out/tests_ptx75.log" 2>&1
        rc=$?
        tail -3 "$out/tests_ptx75.log"
        [ $rc -eq 0 ] || { status=1; grep -E "^(FAILED|ERROR)|Fatal Python error" "$out/tests_ptx75.log" | head -20; }
        ;;
    sweep)
        echo "=== sweep (native $arch)"
        TORCH_CUDA_ARCH_LIST="$arch" timeout "${SWEEP_S:-240}" python3 benchmarks/kernels.py --sweep-v10 \
            --out "$out/sweep_v10.md" ${SWEEP_ARGS:-} > "$out/sweep_v10.log" 2>&1
        rc=$?
        [ $rc -eq 0 ] || status=1
        sed -n '/^Summary:/,$p' "$out/sweep_v10.log"
        [ $rc -eq 0 ] || tail -5 "$out/sweep_v10.log"
        ;;
    esac
    echo "stage $stage: $(( $(date +%s) - start )) s"
done
exit $status
