"""The course in a real browser: JupyterLab in chromium, as learners and instructors start it.

Two JupyterLab servers on free local ports and one headless Debian chromium driven by Playwright (no
browser download: executable_path is Debian's binary):
- the learner's, started by `./course.sh lab` in a scratch clone (root = the working copy my_work/, the
  learner's settings): Run All on the untouched student notebook runs every cell, the widget and the plot
  render, and each unsolved test prints the course's message first with no frame of grading; a notebook
  with one right and one wrong answer shows the pass line and the failing case;
- the instructor's, at the repository root with the instructor settings (as `./course.sh instructor`): the
  solution notebook runs clean and its slider redraws the plot, nbgrader's Validate button passes a solved
  notebook, and Formgrader shows no exchange warning.

Full-page screenshots go to test-artifacts/browser/ (git-ignored) and to the test's tmp_path. The committed
notebooks are never written: autosave is off, only the scratch copy under test-artifacts/ is saved (by the
Validate button), and the server's log is checked for that. Deselect with ``-m "not browser"``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

from course_checkout import NOT_INSTALLED_BY_COURSE_SH, checkout, course_sh_env, free_port, installed_by_course_sh
from nbgrader_course import release_path, solution_path, typed_solutions

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
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


def _need_browser() -> None:
    if sync_playwright is None:
        pytest.skip("playwright is not installed (pip install -e '.[test]')")
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: apt-get install chromium (./course.sh test does it as root)")


def _user_settings(home: Path) -> Path:
    settings = home / "settings"
    for name, value in LAB_SETTINGS.items():
        (settings / name).parent.mkdir(parents=True, exist_ok=True)
        (settings / name).write_text(json.dumps(value))
    return settings


@contextlib.contextmanager
def _serve(cmd: list[str], cwd: Path, env: dict, home: Path, base: str, token: str):
    """A JupyterLab server for the duration of the block; stopped by its process group."""
    env.pop("MPLBACKEND", None)  # conftest's Agg would hide every plot: the kernel must pick the inline backend
    log = (home / "server.log").open("wb")
    server = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
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
        yield
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
def lab(tmp_path_factory):
    """The instructor's JupyterLab at the repository root, with `./course.sh instructor`'s settings."""
    _need_browser()
    home = tmp_path_factory.mktemp("lab")
    settings = _user_settings(home)
    port, token = free_port(), secrets.token_hex(16)
    env = dict(os.environ, JUPYTERLAB_SETTINGS_DIR=str(settings), JUPYTERLAB_WORKSPACES_DIR=str(home / "ws"))
    cmd = [str(Path(sys.executable).parent / "jupyter"), "lab", f"--ServerApp.root_dir={ROOT}", "--no-browser",
           f"--port={port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}", "--allow-root",
           f"--LabApp.app_settings_dir={ROOT / 'lab_config' / 'instructor'}"]
    base = f"http://127.0.0.1:{port}"
    with _serve(cmd, ROOT, env, home, base, token):
        yield {"base": base, "token": token, "log": home / "server.log", "root": ROOT}


@pytest.fixture(scope="module")
def learner_lab(tmp_path_factory):
    """The learner's JupyterLab, started by `./course.sh lab` in a scratch clone (root: its my_work/)."""
    _need_browser()
    if not installed_by_course_sh():
        pytest.skip(NOT_INSTALLED_BY_COURSE_SH)
    home = tmp_path_factory.mktemp("learner")
    clone = checkout(home / "clone")
    settings = _user_settings(home)
    port, token = free_port(), secrets.token_hex(16)
    env = course_sh_env(home, JUPYTERLAB_SETTINGS_DIR=str(settings), JUPYTERLAB_WORKSPACES_DIR=str(home / "ws"))
    cmd = ["./course.sh", "lab", "--no-browser", f"--port={port}", "--ServerApp.port_retries=0",
           f"--IdentityProvider.token={token}"]
    base = f"http://127.0.0.1:{port}"
    with _serve(cmd, clone, env, home, base, token):
        yield {"base": base, "token": token, "log": home / "server.log", "root": clone / "my_work"}


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
    """Every code cell: its prompt, the error (ename, message) its outputs show, if any, the text of its
    first output and of its tracebacks."""
    cells = []
    for cell in notebook.locator(".jp-CodeCell").all():
        prompt = cell.locator(".jp-InputPrompt").inner_text().strip()
        errors, tracebacks = [], []
        for out in cell.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']").all():
            text = out.inner_text()
            if "Traceback" in text or "Cell In[" in text:
                found = ERROR_LINE.findall(text)
                errors.append(found[-1] if found else ("?", text[-300:]))
                tracebacks.append(text)
        outputs = cell.locator(".jp-OutputArea-output")
        first = outputs.first.inner_text() if outputs.count() else ""
        cells.append({"prompt": prompt, "executed": bool(re.search(r"\[\d+\]", prompt)), "errors": errors,
                      "first_output": first, "traceback": "\n".join(tracebacks)})
    return cells


def _assert_course_message_first(cell: dict) -> None:
    """A failing test cell: the course's message is the first thing shown, and no frame of grading."""
    (ename, message), = cell["errors"]
    assert ename == "AssertionError", cell["errors"]
    assert cell["first_output"].strip() == "\u2717 " + message.strip(), (cell["first_output"], message)
    assert "grading.py" not in cell["traceback"], cell["traceback"]


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


def test_student_notebook_runs_every_cell_and_each_unsolved_test_says_so_first(learner_lab, browser, tmp_path):
    """The learner's first Run All, on the untouched notebook 00 of their working copy: every cell runs (the
    release tags answer and test cells raises-exception), the widget and the plot render, and each test cell
    prints the course's message before a traceback without grading frames."""
    relpath = release_path(ASSIGNMENT).relative_to(ROOT / "notebooks").as_posix()
    assert (learner_lab["root"] / relpath).is_file(), "./course.sh lab did not copy the notebook into my_work/"
    page, notebook = _open(browser, learner_lab, relpath)
    _run_all(page, notebook)
    cells = _cells(notebook)
    assert all(c["executed"] for c in cells), f"Run All stopped early: {[c['prompt'] for c in cells]}"
    failing = [c for c in cells if c["errors"]]
    assert len(failing) == 3, f"the three exercises' test cells should fail, got {[c['errors'] for c in failing]}"
    for cell in failing:
        _assert_course_message_first(cell)
        assert "not implemented yet" in cell["errors"][0][1], cell["errors"]
    expect(notebook.locator(".widget-slider")).to_have_count(1)
    assert notebook.locator(".jp-OutputArea-output img").count() >= 1, "the plot should render"
    _screenshot(page, notebook, "student_welcome_run_all", tmp_path)
    page.close()


def test_a_right_answer_shows_its_pass_line_and_a_wrong_one_its_failing_case(learner_lab, browser, tmp_path):
    """In the learner's lab, a notebook with relative_error written right and sqnr_db wrong (a natural log
    where log10 belongs): the first test cell shows one pass line, the second the failing case and tolerance
    first, with the learner's frames and no grading frame."""
    release = nbformat.read(release_path(ASSIGNMENT), as_version=4)
    solved = typed_solutions(release, nbformat.read(solution_path(ASSIGNMENT), as_version=4))
    for cell in solved.cells:
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        if grade_id == "sqnr_db":
            assert "math.log10" in cell.source or "torch.log10" in cell.source, cell.source
            cell.source = cell.source.replace("math.log10", "math.log").replace("torch.log10", "torch.log")
        elif grade_id == "count_parameters":  # left unsolved
            cell.source = next(c.source for c in release.cells
                               if c.metadata.get("nbgrader", {}).get("grade_id") == "count_parameters")
    relpath = f"{ASSIGNMENT}/attempt.ipynb"
    nbformat.write(solved, learner_lab["root"] / relpath)
    page, notebook = _open(browser, learner_lab, relpath)
    _run_all(page, notebook)
    cells = _cells(notebook)
    assert all(c["executed"] for c in cells), f"Run All stopped early: {[c['prompt'] for c in cells]}"
    passed = [c for c in cells if c["first_output"].startswith("\u2713")]
    assert len(passed) == 1 and re.fullmatch(r"\u2713 \d+ checks passed \(relative_error on cpu\)",
                                             passed[0]["first_output"].strip()), [c["first_output"] for c in cells]
    assert not passed[0]["errors"]
    wrong = [c for c in cells if c["errors"] and "sqnr_db(" in c["errors"][0][1]]
    assert len(wrong) == 1, [c["errors"] for c in cells if c["errors"]]
    _assert_course_message_first(wrong[0])
    assert re.search(r"case 1 of 2.*rtol=1e-09", wrong[0]["first_output"], re.S), wrong[0]["first_output"]
    _screenshot(page, notebook, "student_welcome_right_and_wrong", tmp_path)
    page.close()


def test_formgrader_shows_no_exchange_warning(lab, browser):
    """Formgrader (instructor mode, a fresh clone's nbgrader config) lists the course's assignments and does
    not warn that the exchange is missing."""
    page = browser.new_page()
    page.goto(f"{lab['base']}/formgrader?token={lab['token']}")
    expect(page.locator("#main-table, table").first).to_be_visible(timeout=60_000)
    expect(page.get_by_text(ASSIGNMENT, exact=True).first).to_be_visible(timeout=60_000)
    assert page.locator("#warning-exchange").count() == 0, page.locator("#warning-exchange").inner_text()
    assert "exchange directory" not in page.inner_text("body")
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
