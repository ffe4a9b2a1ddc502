#!/usr/bin/env bash
# The course's commands, on a fresh machine (Linux or macOS, Python >= 3.11):
#   ./course.sh lab         install everything into .venv and open JupyterLab on your working copy of the
#                           notebooks (my_work/, git-ignored: `git pull` of a course update never touches it)
#   ./course.sh instructor  the same at the repository root, with nbgrader's instructor tools (Formgrader,
#                           Create Assignment, Course and Assignment List; INSTRUCTORS.md)
#   ./course.sh test        install everything (with test tools) into .venv and run every test
# Extra arguments go to JupyterLab (lab, instructor) or pytest (test).
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
    # An install depends on the requirements (pyproject.toml) and the torch choice: when neither changed
    # since the last one (the stamp in the venv), pip is not run at all.
    local stamp="$VENV/.course-installed" key
    key=$(python -c 'import hashlib, sys; print(hashlib.sha256(open("pyproject.toml", "rb").read() + sys.argv[1].encode()).hexdigest()[:16])' \
          "torch==$TORCH_VERSION ${TORCH_PIP_ARGS:-}")
    if [ -f "$stamp" ] && { grep -qx "\[test\] $key" "$stamp" || { [ -z "$extras" ] && grep -qx " $key" "$stamp"; }; }; then
        return 0
    fi
    echo "Installing the course into $VENV (the first time takes a few minutes)..."
    # pip byte-compiles every package it installs: keep it so. Where PYTHONDONTWRITEBYTECODE is set (as on CI
    # machines), Python never writes a .pyc itself, and every kernel would compile torch and transformers from
    # source again (measured: twice the CPU time of the test command with --no-compile).
    local pip=(python -m pip install)
    if ! python -c "import torch" >/dev/null 2>&1; then
        if [ -n "${TORCH_PIP_ARGS:-}" ]; then
            # shellcheck disable=SC2086
            "${pip[@]}" "torch==$TORCH_VERSION" $TORCH_PIP_ARGS
        elif ! command -v nvidia-smi >/dev/null 2>&1 && [ "$(uname -s)" = Linux ] && python - <<'PY'
import sys, urllib.request
try:
    urllib.request.urlopen("https://download.pytorch.org/whl/cpu/torch/", timeout=5)
except Exception:
    sys.exit(1)
PY
        then
            "${pip[@]}" "torch==$TORCH_VERSION" --index-url https://download.pytorch.org/whl/cpu \
                || "${pip[@]}" "torch==$TORCH_VERSION"
        else
            "${pip[@]}" "torch==$TORCH_VERSION"
        fi
    fi
    "${pip[@]}" -q -e ".$extras"
    echo "$extras $key" >> "$stamp"
}

# JupyterLab prints only warnings and, last, the URL to open; its news pop-up and update check are off
# (lab_config/<mode>/overrides.json). Root (e.g. in a container) needs jupyter's --allow-root.
LAB_ARGS=(--ServerApp.log_level=WARN --LabApp.log_level=WARN)
[ "$(id -u)" != 0 ] || LAB_ARGS+=(--allow-root)

case "${1:-}" in
    lab)
        shift
        install ""
        # The learner's working copy (scripts/learner_workspace.py): copied from notebooks/ on the first
        # start, updated where the learner has not edited a notebook, never overwritten where they have.
        WORKSPACE=${COURSE_WORKSPACE:-$PWD/my_work}
        first=""
        [ -d "$WORKSPACE" ] || first=1
        python scripts/learner_workspace.py --release notebooks --workspace "$WORKSPACE"
        # Self-study: no instructor tools (lab_config/learner/page_config.json); the Validate button uses
        # the course's nbgrader settings (lab_config/learner/nbgrader_config.py).
        export JUPYTER_CONFIG_PATH="$PWD/lab_config/learner${JUPYTER_CONFIG_PATH:+:$JUPYTER_CONFIG_PATH}"
        [ -z "$first" ] || LAB_ARGS+=(--LabApp.default_url=/lab/tree/00_welcome/welcome.ipynb)
        settings="$PWD/lab_config/learner"
        cd "$WORKSPACE"
        exec jupyter lab --ServerApp.root_dir="$PWD" --LabApp.app_settings_dir="$settings" "${LAB_ARGS[@]}" "$@"
        ;;
    instructor)
        shift
        install ""
        exec jupyter lab --ServerApp.root_dir="$PWD" --LabApp.app_settings_dir="$PWD/lab_config/instructor" \
            "${LAB_ARGS[@]}" "$@"
        ;;
    test)
        shift
        install "[test]"
        # The browser test (tests/deployment/test_browser.py) drives JupyterLab in Debian's chromium through
        # Playwright, which downloads no browser of its own; the JupyterHub test (tests/deployment/test_jupyterhub.py)
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
        # Build the C++ kernels once (about a minute of one core), in the background while pytest collects
        # and starts on the other core, instead of inside a notebook's time budget. A test or notebook that
        # needs them before the build is done waits for it (torch's build lock), never starts a second one.
        python -c "from course_lib import kernels; kernels.load_extension('cpp')" >/dev/null \
            || echo "(the C++ kernels could not be built; their tests will say why)" &
        # --durations: the slowest tests, for whoever keeps the run under its time budget
        exec python -m pytest -n auto --dist loadscope --nbval-lax --durations=25 tests solutions "$@"
        ;;
    *)
        echo "usage: ./course.sh lab|instructor [jupyterlab args] | ./course.sh test [pytest args]" >&2
        exit 2
        ;;
esac
