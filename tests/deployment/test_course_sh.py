"""`./course.sh lab` and `./course.sh instructor` as a learner and an instructor start them.

- The learner's working copy (scripts/learner_workspace.py): copied once, updated where unedited, never
  overwritten where edited, old work in notebooks/ kept.
- A start with nothing changed runs no pip; JupyterLab prints only the URL, last; the first start opens
  notebook 00 from the working copy; the news check is off; the instructor tools appear only in
  instructor mode.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
import learner_workspace  # noqa: E402
from course_checkout import (NOT_INSTALLED_BY_COURSE_SH, checkout, course_sh_env, free_port,  # noqa: E402
                             installed_by_course_sh)

INSTRUCTOR_PLUGINS = {"@jupyter/nbgrader:formgrader", "@jupyter/nbgrader:create-assignment",
                      "@jupyter/nbgrader:course-list", "@jupyter/nbgrader:assignment-list"}


def _release(tmp_path: Path, notebooks: dict[str, str]) -> Path:
    release = tmp_path / "notebooks"
    for name, text in notebooks.items():
        (release / name).parent.mkdir(parents=True, exist_ok=True)
        (release / name).write_text(text)
    return release


def test_first_sync_copies_every_notebook(tmp_path):
    release = _release(tmp_path, {"00_a/a.ipynb": "a1", "01_b/b.ipynb": "b1"})
    report = learner_workspace.sync(release, tmp_path / "my_work")
    assert report == {"copied": ["00_a/a.ipynb", "01_b/b.ipynb"], "updated": [], "kept": []}
    assert (tmp_path / "my_work" / "01_b" / "b.ipynb").read_text() == "b1"
    assert learner_workspace.sync(release, tmp_path / "my_work") == {"copied": [], "updated": [], "kept": []}


def test_an_update_replaces_unedited_notebooks_and_lands_beside_edited_ones(tmp_path):
    release = _release(tmp_path, {"00_a/a.ipynb": "a1", "01_b/b.ipynb": "b1", "02_c/c.ipynb": "c1"})
    work = tmp_path / "my_work"
    learner_workspace.sync(release, work)
    (work / "01_b" / "b.ipynb").write_text("b1 + my answers")
    (release / "00_a" / "a.ipynb").write_text("a2")
    (release / "01_b" / "b.ipynb").write_text("b2")
    (release / "03_d").mkdir()
    (release / "03_d" / "d.ipynb").write_text("d1")
    report = learner_workspace.sync(release, work)
    assert report == {"copied": ["03_d/d.ipynb"], "updated": ["00_a/a.ipynb"], "kept": ["01_b/b.ipynb"]}
    assert (work / "00_a" / "a.ipynb").read_text() == "a2"
    assert (work / "01_b" / "b.ipynb").read_text() == "b1 + my answers"
    assert (work / "01_b" / "b.course-update.ipynb").read_text() == "b2"
    lines = learner_workspace.describe(report, "my_work")
    assert any("01_b/b.ipynb" in ln and "keeps your work" in ln and "b.course-update.ipynb" in ln for ln in lines), lines
    # told once: the next start is quiet, and the learner's copy is still theirs
    assert learner_workspace.sync(release, work) == {"copied": [], "updated": [], "kept": []}
    (release / "01_b" / "b.ipynb").write_text("b3")
    assert learner_workspace.sync(release, work)["kept"] == ["01_b/b.ipynb"]
    assert (work / "01_b" / "b.ipynb").read_text() == "b1 + my answers"


def test_work_done_in_the_release_folder_counts_as_edited(tmp_path):
    release = _release(tmp_path, {"00_a/a.ipynb": "a1 + answers written into notebooks/"})
    work = tmp_path / "my_work"
    learner_workspace.sync(release, work, edited=frozenset({"00_a/a.ipynb"}))
    (release / "00_a" / "a.ipynb").write_text("a2")  # the learner ran git checkout, then git pull
    assert learner_workspace.sync(release, work)["kept"] == ["00_a/a.ipynb"]
    assert (work / "00_a" / "a.ipynb").read_text() == "a1 + answers written into notebooks/"


def test_git_tells_which_release_notebooks_hold_local_edits(tmp_path):
    release = _release(tmp_path, {"00_a/a.ipynb": "a1", "01_b/b.ipynb": "b1"})
    git = ["git", "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run([*git, "add", "."], cwd=tmp_path, check=True)
    subprocess.run([*git, "commit", "-qm", "release"], cwd=tmp_path, check=True)
    (release / "01_b" / "b.ipynb").write_text("b1 + answers")
    assert learner_workspace.locally_edited(release) == {"01_b/b.ipynb"}


# --- course.sh itself -------------------------------------------------------------------------------------

def _banner_only(lines: list[str]) -> list[str]:
    """The lines that are not part of jupyter_server's "To access the server ... URLs" banner."""
    banner = ("To access the server", "file://", "Or copy and paste", "http://")
    return [ln for ln in lines if ln.strip() and not ln.startswith("[C ") and not any(b in ln for b in banner)]


class _Lab:
    """`./course.sh <mode>` started in a clone; its output up to the URL, and the server's API."""

    def __init__(self, clone: Path, mode: str, home: Path):
        self.port = free_port()
        env = course_sh_env(home)
        self.proc = subprocess.Popen(["./course.sh", mode, "--no-browser", f"--port={self.port}"], cwd=clone, env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.lines.append(line.rstrip("\n"))
            if re.search(rf"http://127\.0\.0\.1:{self.port}/\S*token=", line):
                break
        urls = [ln.strip() for ln in self.lines if f"127.0.0.1:{self.port}" in ln]
        assert urls, "no URL within 120 s:\n" + "\n".join(self.lines)
        self.url = urls[-1]
        self.token = self.url.split("token=")[1]

    def get(self, path: str):
        assert self.proc.poll() is None, f"course.sh exited ({self.proc.returncode}):\n" + self.proc.stdout.read()
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}",
                                         headers={"Authorization": f"token {self.token}"})
        no_proxy = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        for attempt in range(40):  # the banner may come a moment before the server accepts
            try:
                with no_proxy.open(request, timeout=30) as response:
                    body = response.read().decode()
                break
            except urllib.error.URLError as exc:
                if not isinstance(exc.reason, ConnectionRefusedError) or attempt == 39:
                    raise
                time.sleep(0.25)
        return json.loads(body) if path.startswith(("/api", "/lab/api")) else body

    def disabled_extensions(self) -> set[str]:
        page = self.get("/lab")
        found = re.search(r'<script id="jupyter-config-data" type="application/json">(.*?)</script>', page, re.S)
        disabled = json.loads(found[1]).get("disabledExtensions", [])
        return {k for k, v in disabled.items() if v} if isinstance(disabled, dict) else set(disabled)

    def stop(self) -> list[str]:
        """Stop the server; the lines it printed after the URL."""
        time.sleep(1.0)
        self.proc.terminate()
        try:
            rest, _ = self.proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rest, _ = self.proc.communicate()
        return [ln for ln in rest.splitlines() if ln.strip()]


@pytest.mark.skipif(not installed_by_course_sh(), reason=NOT_INSTALLED_BY_COURSE_SH)
def test_lab_opens_notebook_00_from_the_working_copy_and_a_second_start_runs_no_pip(tmp_path):
    clone, home = checkout(tmp_path / "clone"), tmp_path / "home"
    lab = _Lab(clone, "lab", home)
    try:
        assert "/lab/tree/00_welcome/welcome.ipynb?token=" in lab.url, lab.url
        assert _banner_only(lab.lines) == ["Copied 15 notebook(s) into my_work/ (your working copy)."], lab.lines
        model = lab.get("/api/contents/00_welcome/welcome.ipynb?content=0")
        assert model["type"] == "notebook"
        assert (clone / "my_work" / "00_welcome" / "welcome.ipynb").read_bytes() == \
            (clone / "notebooks" / "00_welcome" / "welcome.ipynb").read_bytes()
        assert "solutions" not in {item["name"] for item in lab.get("/api/contents/")["content"]}
        assert INSTRUCTOR_PLUGINS <= lab.disabled_extensions()
        news = lab.get("/lab/api/settings/@jupyterlab/apputils-extension:notification")["schema"]["properties"]
        assert news["fetchNews"]["default"] == "false" and news["checkForUpdates"]["default"] is False
    finally:
        after = lab.stop()
    assert not [ln for ln in after if "[E " in ln or "Traceback" in ln], after

    # a learner edits a notebook, the course is not updated, the lab starts again
    (clone / "my_work" / "00_welcome" / "welcome.ipynb").write_text(
        (clone / "notebooks" / "00_welcome" / "welcome.ipynb").read_text().replace("YOUR CODE HERE", "my answer"))
    again = _Lab(clone, "lab", home)
    try:
        assert _banner_only(again.lines) == [], again.lines  # no pip, no copy: only the URL
        assert "/lab?token=" in again.url, again.url  # JupyterLab restores the learner's own layout
    finally:
        again.stop()
    assert "my answer" in (clone / "my_work" / "00_welcome" / "welcome.ipynb").read_text()


@pytest.mark.skipif(not installed_by_course_sh(), reason=NOT_INSTALLED_BY_COURSE_SH)
def test_instructor_mode_shows_the_nbgrader_tools(tmp_path):
    clone = checkout(tmp_path / "clone")
    lab = _Lab(clone, "instructor", tmp_path / "home")
    try:
        assert not INSTRUCTOR_PLUGINS & lab.disabled_extensions()
        names = {item["name"] for item in lab.get("/api/contents/")["content"]}
        assert {"solutions", "notebooks"} <= names, names
    finally:
        lab.stop()
