# Sourced by the GPU-machine scripts: install the carried wheels (.whl/, for packages the machine lacks) and set
# the environment the course's tests expect.
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site:$PWD
else
    export PYTHONPATH=$PWD
fi
export HF_HUB_OFFLINE=1 MPLBACKEND=Agg PYTHONUNBUFFERED=1

# build_extension LIST LOG: build (or load from the cache) the CUDA extension with TORCH_CUDA_ARCH_LIST=LIST, output in
# LOG; prints what was built and the seconds it took, or "BUILD FAILED" and the log's tail (then returns 1).
build_extension() {
    local start=$SECONDS
    if ! TORCH_CUDA_ARCH_LIST="$1" python3 -c "from course_lib import kernels as K; K.load_extension('cuda'); print('built:', K.cuda_arch())" \
        > "$2" 2>&1; then
        echo "BUILD FAILED ($1)"
        tail -30 "$2"
        return 1
    fi
    tail -1 "$2"
    echo "build $1: $(( SECONDS - start )) s"
}
