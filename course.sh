#!/usr/bin/env bash
# The course's two commands, on a fresh machine (Linux or macOS, Python >= 3.11):
#   ./course.sh lab    install everything into .venv and launch JupyterLab on the course
#   ./course.sh test   install everything (with test tools) into .venv and run every test
# Extra arguments go to JupyterLab (lab) or pytest (test).
#
# torch is installed first and explicitly, so that no other requirement pulls a different build:
#   - no NVIDIA GPU: the CPU build of torch 2.13.0 (from PyTorch's CPU index when it is reachable);
#   - NVIDIA GPU (nvidia-smi works): PyPI's default torch 2.13.0, which is the CUDA build on Linux.
#   TORCH_PIP_ARGS overrides the choice, e.g. TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cu130".
set -euo pipefail
cd "$(dirname "$0")"

TORCH_VERSION=2.13.0
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}

install() {
    local extras=$1
    [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
    # shellcheck disable=SC1091
    . "$VENV/bin/activate"
    if ! python -c "import torch" >/dev/null 2>&1; then
        if [ -n "${TORCH_PIP_ARGS:-}" ]; then
            # shellcheck disable=SC2086
            python -m pip install "torch==$TORCH_VERSION" $TORCH_PIP_ARGS
        elif ! command -v nvidia-smi >/dev/null 2>&1 && [ "$(uname -s)" = Linux ] && python - <<'PY'
import sys, urllib.request
try:
    urllib.request.urlopen("https://download.pytorch.org/whl/cpu/torch/", timeout=5)
except Exception:
    sys.exit(1)
PY
        then
            python -m pip install "torch==$TORCH_VERSION" --index-url https://download.pytorch.org/whl/cpu \
                || python -m pip install "torch==$TORCH_VERSION"
        else
            python -m pip install "torch==$TORCH_VERSION"
        fi
    fi
    python -m pip install -e ".$extras"
}

case "${1:-}" in
    lab)
        shift
        install ""
        exec jupyter lab --ServerApp.root_dir="$PWD" "$@"
        ;;
    test)
        shift
        install "[test]"
        # The browser test (tests/test_browser.py) drives JupyterLab in Debian's chromium through
        # Playwright, which downloads no browser of its own; the JupyterHub test (tests/test_jupyterhub.py)
        # lets its learner accounts reach a Python under a private /root with setfacl (package acl).
        # As root on Debian/Ubuntu, install what is missing (about 30 s); elsewhere, or if apt fails,
        # those tests are skipped and say why.
        missing=""
        [ -x /usr/bin/chromium ] || missing="chromium"
        command -v setfacl >/dev/null 2>&1 || missing="$missing acl"
        if [ -n "$missing" ] && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
            # shellcheck disable=SC2086
            { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing; } >/dev/null \
                || echo "($missing could not be installed with apt-get; the tests that need it will be skipped)"
        fi
        export HF_HUB_OFFLINE=1 MPLBACKEND=Agg
        # pytest-xdist already keeps every core busy with one worker each: one thread per worker (and per
        # notebook kernel it starts) avoids oversubscription, which slows small torch ops down tenfold.
        export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" MKL_NUM_THREADS="${MKL_NUM_THREADS:-1}"
        # Library tests, the nbgrader round trip on every notebook, and every solution notebook
        # executed headless (nbval), spread over all cores.
        # Build the C++ kernels once, up front (about a minute on 2 cores), instead of inside a
        # notebook's time budget or in several workers at once.
        python -c "from course_lib import kernels; kernels.load_extension('cpp')" || echo "(the C++ kernels could not be built; their tests will say why)"
        exec python -m pytest -n auto --dist loadscope --nbval-lax tests solutions "$@"
        ;;
    *)
        echo "usage: ./course.sh lab [jupyterlab args] | ./course.sh test [pytest args]" >&2
        exit 2
        ;;
esac
