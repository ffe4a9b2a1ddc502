"""The course in a real browser: JupyterLab, as the README's `./course.sh lab` starts it, in chromium.

One JupyterLab server on a free local port (root_dir = the repository, a random token) and one
headless Debian chromium driven by Playwright (no browser download: executable_path is Debian's
binary). The tests open the welcome notebook (solution and student release), run all cells, move
the ipywidgets slider with the keyboard and check that the readout and the plot change, check the
error outputs, and click nbgrader's "Validate" button on a solved copy of the student notebook.

Full-page screenshots go to test-artifacts/browser/ (git-ignored) and to the test's tmp_path.
The committed notebooks are never written: autosave is off, only the scratch copy under
test-artifacts/ is saved (by the Validate button), and the server's log is checked for that. Deselect with ``-m "not browser"``.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

from nbgrader_course import release_path, solution_path, typed_solutions

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = ROOT / "test-artifacts" / "browser"
ASSIGNMENT = "00_welcome"  # cheap: runs in seconds, has a plot and an ipywidgets slider
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# JupyterLab user settings for the test server only (its own settings dir): every cell attached to the
# DOM (the default windowing leaves off-screen cells out), no autosave (the committed notebooks stay
# as they are), no news or update notifications over the notebook.
LAB_SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    "@jupyterlab/docmanager-extension/plugin.jupyterlab-settings": {"autosave": False},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false",
                                                                        "checkForUpdates": False},
}
ERROR_LINE = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception|Interrupt|Exit))\b:?\s*(.*)$", re.M)

try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:  # pragma: no cover - the test extra installs it
    sync_playwright = None
else:
    # Under pytest-xdist the kernels share the cores with other workers: allow slow redraws.
    expect.set_options(timeout=30_000)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A JupyterLab server on the course, as `./course.sh lab --no-browser` starts it; stopped by PID."""
    if sync_playwright is None:
        pytest.skip("playwright is not installed (pip install -e '.[test]')")
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: apt-get install chromium (./course.sh test does it as root)")
    home = tmp_path_factory.mktemp("lab")
    settings = home / "settings"
    for name, value in LAB_SETTINGS.items():
        (settings / name).parent.mkdir(parents=True, exist_ok=True)
        (settings / name).write_text(json.dumps(value))
    port, token = _free_port(), secrets.token_hex(16)
    env = dict(os.environ, JUPYTERLAB_SETTINGS_DIR=str(settings), JUPYTERLAB_WORKSPACES_DIR=str(home / "ws"))
    env.pop("MPLBACKEND", None)  # conftest's Agg would hide every plot: the kernel must pick the inline backend
    cmd = [str(Path(sys.executable).parent / "jupyter"), "lab", f"--ServerApp.root_dir={ROOT}", "--no-browser",
           f"--port={port}", "--ServerApp.port_retries=0", f"--ServerApp.token={token}", "--allow-root"]
    log = (home / "server.log").open("wb")
    server = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"JupyterLab did not answer on {base}:\n{(home / 'server.log').read_text()[-3000:]}")
            time.sleep(0.3)
        yield {"base": base, "token": token, "log": home / "server.log"}
    finally:
        # The server and the kernels it started share its process group (start_new_session).
        try:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=15)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(server.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            server.wait(timeout=5)
        log.close()


@pytest.fixture(scope="module")
def browser(lab, tmp_path_factory):
    """Headless Debian chromium with a fresh profile."""
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=str(CHROMIUM), headless=True,
            args=CHROMIUM_ARGS, viewport={"width": 1280, "height": 1000})
        context.set_default_timeout(60_000)
        try:
            yield context
        finally:
            context.close()


@pytest.fixture(scope="module")
def committed_notebooks(lab):
    """After the module's tests: JupyterLab saved no file of the repository but the scratch copies."""
    yield
    saved = re.findall(r"Saving file at (\S+)", lab["log"].read_text())
    outside = [p for p in saved if not p.startswith("/test-artifacts/")]
    assert not outside, f"the browser test saved committed files: {outside}"


def _open(browser, lab, relpath: str):
    page = browser.new_page()
    # A workspace of its own per notebook: JupyterLab does not restore the other tests' tabs (and kernels).
    workspace = re.sub(r"\W", "-", relpath)
    page.goto(f"{lab['base']}/lab/workspaces/{workspace}/tree/{relpath}?token={lab['token']}")
    notebook = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden)")
    expect(notebook.locator(".jp-Cell").first).to_be_visible(timeout=120_000)
    # The kernel started and is ready.
    expect(notebook.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']")).to_have_count(1, timeout=120_000)
    _wait_kernel_connected(lab, relpath)
    return page, notebook


def _wait_kernel_connected(lab, relpath: str, timeout_s: float = 120) -> None:
    """Wait until the server reports the notebook's kernel idle with the page connected to it. The toolbar can
    show "idle" before the server has connected to a kernel that is still starting, so a test could act on a
    kernel that is not there yet."""
    deadline = time.monotonic() + timeout_s
    sessions = []
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"{lab['base']}/api/sessions?token={lab['token']}", timeout=5) as r:
            sessions = json.loads(r.read())
        kernels = [s["kernel"] for s in sessions if s.get("path") == relpath and s.get("kernel")]
        if kernels and all(k.get("execution_state") == "idle" and k.get("connections", 0) >= 1 for k in kernels):
            return
        time.sleep(0.5)
    raise AssertionError(f"the kernel of {relpath} was not idle and connected within {timeout_s} s: {sessions}")


def _menu(page, menu: str, item: str):
    """Click a main-menu item by its labels, as a learner does (e.g. Run > Run All Cells)."""
    page.locator("#jp-MainMenu .lm-MenuBar-item", has_text=menu).click()
    page.locator(".lm-MenuBar-menu").get_by_role("menuitem", name=item, exact=True).click()


def _wait_idle(notebook, timeout_s: float = 240):
    """Wait until no cell is queued or running ("[*]") and the kernel is idle."""
    prompts = notebook.locator(".jp-CodeCell .jp-InputPrompt")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        busy = any("*" in t for t in prompts.all_inner_texts())
        status = notebook.locator(".jp-Notebook-ExecutionIndicator").get_attribute("data-status")
        if not busy and status == "idle":
            return
        time.sleep(0.3)
    raise AssertionError(f"the notebook did not finish running within {timeout_s} s")


def _run_all(page, notebook):
    # Select the first cell, so that the notebook is the application's current widget for the menu.
    first = notebook.locator(".jp-CodeCell .jp-InputPrompt").first
    first.click()
    for attempt in range(3):  # a menu click in the first moments after the page loads can be lost
        _menu(page, "Run", "Run All Cells")
        # The first code cell is queued, running or done ("[*]" or "[1]") before the idle wait counts.
        try:
            expect(first).to_have_text(re.compile(r"\[(\*|\d+)\]"), timeout=10_000)
            break
        except AssertionError:
            if attempt == 2:
                raise
    _wait_idle(notebook)


def _cells(notebook) -> list[dict]:
    """Every code cell: its prompt and the error (ename, message) its outputs show, if any."""
    cells = []
    for cell in notebook.locator(".jp-CodeCell").all():
        prompt = cell.locator(".jp-InputPrompt").inner_text().strip()
        errors = []
        for out in cell.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']").all():
            text = out.inner_text()
            if "Traceback" in text or "Cell In[" in text:
                found = ERROR_LINE.findall(text)
                errors.append(found[-1] if found else ("?", text[-300:]))
        cells.append({"prompt": prompt, "executed": bool(re.search(r"\[\d+\]", prompt)), "errors": errors})
    return cells


def _screenshot(page, notebook, name: str, tmp_path: Path):
    """A full-page screenshot of the whole notebook (the window is made as tall as the notebook)."""
    scroller = notebook.locator(".jp-WindowedPanel-outer")
    height = notebook.locator(".jp-WindowedPanel-viewport").evaluate("e => e.scrollHeight")
    page.set_viewport_size({"width": 1280, "height": min(int(height) + 250, 12_000)})
    page.wait_for_timeout(300)
    scroller.evaluate("e => { e.scrollTop = 0; }")
    page.wait_for_timeout(700)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    shutil.copy(path, tmp_path / path.name)
    page.set_viewport_size({"width": 1280, "height": 1000})


def test_solution_notebook_runs_clean_and_its_slider_redraws_the_plot(lab, browser, committed_notebooks, tmp_path):
    relpath = solution_path(ASSIGNMENT).relative_to(ROOT).as_posix()
    page, notebook = _open(browser, lab, relpath)
    _run_all(page, notebook)
    cells = _cells(notebook)
    assert cells and all(c["executed"] for c in cells), [c["prompt"] for c in cells]
    errors = [(i, c["errors"]) for i, c in enumerate(cells) if c["errors"]]
    assert not errors, f"{relpath}: error outputs in code cells {errors}"
    images = notebook.locator(".jp-OutputArea-output img")
    assert images.count() >= 2, "the static plot and the widget's plot should both be shown"

    widget = notebook.locator(".widget-vbox", has=page.locator(".widget-slider"))
    expect(widget).to_have_count(1)
    readout, value = widget.locator(".widget-html-content"), widget.locator(".widget-readout")
    plot = widget.locator(".widget-output img")
    expect(plot).to_have_count(1)
    before = readout.inner_text(), value.inner_text(), plot.get_attribute("src")
    assert "SQNR" in before[0] and before[1] == "3", before[:2]
    _screenshot(page, notebook, "solution_welcome_run_all", tmp_path)

    handle = widget.locator(".noUi-handle")
    handle.focus()
    handle.press("ArrowRight")
    handle.press("ArrowRight")
    expect(value).to_have_text("5")
    # The kernel redraws for 4 then 5 bits: the readout ends on 5 bits (6.02 x 5 = 30.1 dB), the plot is new.
    expect(readout).to_contain_text("= 30.1 dB", timeout=30_000)
    assert readout.inner_text() != before[0]
    expect(plot).to_have_count(1)
    expect(plot).not_to_have_attribute("src", before[2])
    expect(plot).to_have_attribute("src", re.compile(r"^data:image/png;base64,"))
    _screenshot(page, notebook, "solution_welcome_slider_moved", tmp_path)
    page.close()


def test_student_notebook_only_raises_not_implemented(lab, browser, committed_notebooks, tmp_path):
    """One Run All on the untouched student notebook runs every cell: the release tags answer and test cells
    raises-exception, so an unsolved exercise does not stop the run. Each error must say that an exercise is
    not written yet (the answer cells raise NotImplementedError), and the widget after them renders."""
    relpath = release_path(ASSIGNMENT).relative_to(ROOT).as_posix()
    page, notebook = _open(browser, lab, relpath)
    _run_all(page, notebook)
    cells = _cells(notebook)
    assert all(c["executed"] for c in cells), f"Run All stopped early: {[c['prompt'] for c in cells]}"
    errors = [e for c in cells for e in c["errors"]]
    assert len(errors) >= 3, f"every exercise's test cell should fail in the unsolved release, got {errors}"
    for ename, message in errors:
        assert ename == "NotImplementedError" or (ename == "AssertionError" and "not implemented yet" in message), \
            f"{relpath}: unexpected error {ename}: {message}"
    expect(notebook.locator(".widget-slider")).to_have_count(1)
    _screenshot(page, notebook, "student_welcome_run_all", tmp_path)
    page.close()


def test_nbgrader_validate_button_passes_a_solved_notebook(lab, browser, committed_notebooks, tmp_path):
    """nbgrader's lab extensions: the student notebook's toolbar has "Validate", and validating the
    release with the solutions typed in (a copy, saved by the button) reports success."""
    work = ARTIFACTS / "validate"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    release = nbformat.read(release_path(ASSIGNMENT), as_version=4)
    solved = typed_solutions(release, nbformat.read(solution_path(ASSIGNMENT), as_version=4))
    nbformat.write(solved, work / release_path(ASSIGNMENT).name)

    relpath = (work / release_path(ASSIGNMENT).name).relative_to(ROOT).as_posix()
    # The server side runs the whole notebook (nbgrader's Validator, a synchronous handler that blocks the
    # server), then the dialog shows the verdict: 12-32 s on a 2-core machine. Before the course's hooks
    # stopped nbclient imitating the Output widget, the handler hung for good at the rounding explorer's cell
    # on a loaded machine (course_lib/nbgrader_hooks.py, NoOutputWidgetMimic).
    page, notebook = _open(browser, lab, relpath)
    button = notebook.locator(".jp-Toolbar .validate-button")
    expect(button).to_be_visible()
    started = time.monotonic()
    button.click()
    dialog = page.locator(".jp-Dialog")
    try:
        expect(dialog.locator(".jp-Dialog-header")).to_have_text(re.compile("Validation"), timeout=300_000)
    except AssertionError:
        raise AssertionError("nbgrader's Validate dialog showed no verdict in 300 s; server log tail:\n"
                             + lab["log"].read_text()[-2000:]) from None
    print(f"Validate answered in {time.monotonic() - started:.0f} s")
    text = dialog.inner_text()
    page.screenshot(path=str(tmp_path / "validate_dialog.png"), full_page=True)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(tmp_path / "validate_dialog.png", ARTIFACTS / "validate_dialog.png")
    assert "Success! Your notebook passes all the tests." in text, text
    page.close()
