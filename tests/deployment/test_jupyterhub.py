"""The course on a real JupyterHub with nbgrader's exchange, end to end, on loopback.

One JupyterHub (DummyAuthenticator, LocalProcessSpawner: each server runs as its Unix user) with an
instructor and two learners (real Unix users, created with useradd when missing), an nbgrader exchange
in a temporary directory (1777) and every step of an assignment's life run by nbgrader's own commands as
the user who would run it: release, fetch, submit (learner1 the solutions typed into the student
notebook, learner2 the unmodified release plus a line that replaces the grading helpers with no-ops),
collect, autograde, export, generate/release/fetch feedback. Every user's nbgrader configuration is the
course's: each user's ~/.jupyter/nbgrader_config.py is the hub image's jupyterhub/nbgrader_config.py (its
exchange path pointed at the test's) and the instructor's course directory gets
``course_grading.write_config`` (what course copies and benchmarks/grade_at_scale.py use), both calling
``course_lib.course_grading.configure``. So autograde runs the course's GuardedExecute (learner2's no-op
helpers are undone: 0 points) and generate_feedback its HideHiddenTests: no learner's fetched feedback
shows a hidden test line, while the visible tests are there. The hub's REST API (a service token from the config) starts both learners' servers and checks that they
run during the flow. Needs root (useradd, the spawner's setuid), node/npm (configurable-http-proxy, installed
once into ~/.cache/quantization-course/chp) and setfacl when the interpreter lives under a private /root.

The jupyterhub/ folder's files (config, values) are checked to compile/parse here too.
"""

from __future__ import annotations

import csv
import io
import json
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import nbformat
import pytest

from adversarial_submissions import index_of
from course_checkout import free_port
from nbgrader_course import ROOT, release_path, solution_path, typed_solutions

from course_lib import course_grading

ASSIGNMENT = "00_welcome"
NOTEBOOK = "welcome"
COURSE_ID = course_grading.COURSE_ID
INSTRUCTOR, LEARNERS = "instructor", ("learner1", "learner2")
PASSWORD = "quantization-course-test"
VENV_BIN = Path(sys.executable).parent
CHP_CACHE = Path.home() / ".cache" / "quantization-course" / "chp"


# --- the jupyterhub/ folder ---------------------------------------------------------------------------

def test_jupyterhub_folder_files_compile_and_parse():
    yaml = pytest.importorskip("yaml")
    for name in ("jupyterhub_config.py", "nbgrader_config.py"):
        compile((ROOT / "jupyterhub" / name).read_text(), name, "exec")
    values = yaml.safe_load((ROOT / "jupyterhub" / "z2jh-values.yaml").read_text())
    assert values["singleuser"]["memory"] == {"limit": "2G", "guarantee": "1G"}
    assert values["cull"]["enabled"] is True
    mounts = values["singleuser"]["storage"]["extraVolumeMounts"]
    assert {"name": "nbgrader-exchange", "mountPath": "/srv/nbgrader/exchange"} in mounts
    volume = list(yaml.safe_load_all((ROOT / "jupyterhub" / "z2jh-exchange-volume.yaml").read_text()))
    assert {d["kind"] for d in volume} == {"PersistentVolume", "PersistentVolumeClaim"}
    assert "2G" in (ROOT / "jupyterhub" / "jupyterhub_config.py").read_text()
    dockerfile = (ROOT / "jupyterhub" / "Dockerfile").read_text()
    copies = [ln for ln in dockerfile.splitlines() if ln.startswith("COPY")]
    assert any("environment.yml" in ln for ln in copies)
    assert not any("solutions" in ln for ln in copies), "the learners' image must not contain the solutions"


# --- system set-up (cached) ---------------------------------------------------------------------------

def _chp() -> Path:
    exe = CHP_CACHE / "node_modules" / ".bin" / "configurable-http-proxy"
    if not exe.exists():
        if not shutil.which("npm"):
            pytest.skip("npm is needed to install configurable-http-proxy")
        CHP_CACHE.mkdir(parents=True, exist_ok=True)
        subprocess.run(["npm", "install", "--prefix", str(CHP_CACHE), "configurable-http-proxy@4",
                        "--no-audit", "--no-fund"], check=True, capture_output=True, timeout=300)
    return exe


def _blocked_dirs(path: Path) -> list[Path]:
    """Parents of ``path`` that other users cannot traverse (e.g. /root holding pyenv's Python)."""
    return [p for p in path.resolve().parents if not os.stat(p).st_mode & 0o001]


def as_user(user: str, *cmd: str, cwd: str | None = None, check: bool = True, timeout: int = 600):
    """Run ``cmd`` as ``user`` with a login-like environment (HOME, USER) and the course's venv on PATH."""
    home = pwd.getpwnam(user).pw_dir
    env = {"HOME": home, "USER": user, "LOGNAME": user, "PATH": f"{VENV_BIN}:/usr/bin:/bin",
           "LANG": "C.UTF-8", "OMP_NUM_THREADS": "1", "PYTHONNOUSERSITE": "1"}
    proc = subprocess.run([shutil.which("runuser"), "-u", user, "--", *cmd], cwd=cwd or home, env=env,
                          capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{user}$ {' '.join(cmd)} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def nbgrader(user: str, *args: str, cwd: str | None = None):
    return as_user(user, str(VENV_BIN / "nbgrader"), *args, cwd=cwd)


def try_read(user: str, path: Path) -> str:
    """What ``user`` gets reading (or listing) ``path``: 'ok' or the exception's class name."""
    code = ("import os, sys\np = sys.argv[1]\ntry:\n"
            "    os.listdir(p) if os.path.isdir(p) else open(p, 'rb').read(1)\n    print('ok')\n"
            "except OSError as e:\n    print(type(e).__name__)")
    return as_user(user, sys.executable, "-c", code, str(path)).stdout.strip()


@pytest.fixture(scope="module")
def system():
    if os.geteuid() != 0 or not shutil.which("runuser") or not shutil.which("useradd"):
        pytest.skip("needs root (useradd, runuser, a setuid spawner)")
    if not shutil.which("node"):
        pytest.skip("needs node for configurable-http-proxy")
    pytest.importorskip("jupyterhub")
    chp = _chp()
    for user in (INSTRUCTOR, *LEARNERS):
        try:
            pwd.getpwnam(user)
        except KeyError:
            subprocess.run(["useradd", "--create-home", "--shell", "/bin/bash", user], check=True)
    granted = []
    blocked = _blocked_dirs(Path(sys.executable)) + _blocked_dirs(VENV_BIN) + _blocked_dirs(ROOT)
    for d in dict.fromkeys(blocked):  # traverse-only right for the three test users, taken back at the end
        if not shutil.which("setfacl"):
            pytest.skip(f"{d} is not traversable by other users and setfacl is missing (apt-get install acl)")
        for user in (INSTRUCTOR, *LEARNERS):
            subprocess.run(["setfacl", "-m", f"u:{user}:x", str(d)], check=True)
        granted.append(d)
    try:
        yield chp
    finally:
        for d in granted:
            for user in (INSTRUCTOR, *LEARNERS):
                subprocess.run(["setfacl", "-x", f"u:{user}", str(d)], check=False)


# --- the hub ------------------------------------------------------------------------------------------

class Hub:
    def __init__(self, base: Path, chp: Path):
        self.base, self.token = base, secrets.token_hex(16)
        self.port, hub_port, api_port = free_port(), free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = base / "jupyterhub_config.py"
        config.write_text(f"""
c = get_config()
c.JupyterHub.bind_url = {self.url + '/'!r}
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = {hub_port}
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{api_port}"
c.ConfigurableHTTPProxy.command = [{str(chp)!r}]
c.JupyterHub.db_url = "sqlite:///{base}/jupyterhub.sqlite"
c.JupyterHub.cookie_secret_file = "{base}/cookie_secret"
c.JupyterHub.pid_file = "{base}/jupyterhub.pid"
c.JupyterHub.cleanup_servers = True
c.JupyterHub.authenticator_class = "dummy"
c.DummyAuthenticator.password = {PASSWORD!r}
c.Authenticator.allowed_users = {set(LEARNERS) | {INSTRUCTOR}!r}
c.Authenticator.admin_users = {{{INSTRUCTOR!r}}}
c.JupyterHub.spawner_class = "localprocess"
c.Spawner.cmd = [{str(VENV_BIN / 'jupyterhub-singleuser')!r}]
c.Spawner.environment = {{"PATH": "{VENV_BIN}:/usr/bin:/bin", "OMP_NUM_THREADS": "1"}}
c.Spawner.mem_limit = "2G"
c.Spawner.start_timeout = 120
c.Spawner.http_timeout = 120
c.JupyterHub.services = [{{"name": "course-test", "api_token": {self.token!r}}}]
c.JupyterHub.load_roles = [{{"name": "course-test", "services": ["course-test"],
    "scopes": ["admin:users", "admin:servers", "admin:server_state", "list:users"]}}]
""")
        self.log = open(base / "jupyterhub.log", "wb")
        self.proc = subprocess.Popen([str(VENV_BIN / "jupyterhub"), "-f", str(config)], cwd=base,
                                     stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
                                     env={**os.environ, "PATH": f"{VENV_BIN}:{os.environ['PATH']}"})
        self.server_pids: set[int] = set()
        deadline = time.time() + 90
        while True:
            try:
                self.api("GET", "/")
                break
            except (urllib.error.URLError, ConnectionError):
                if self.proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError("JupyterHub did not start:\n" + (base / "jupyterhub.log").read_text())
                time.sleep(0.5)

    def api(self, method: str, path: str, body: dict | None = None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"{self.url}/hub/api{path}", data=data, method=method,
                                     headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            text = resp.read()
            return resp.status, (json.loads(text) if text else None)

    def user(self, name: str) -> dict:
        return self.api("GET", f"/users/{name}")[1]

    def start_server(self, name: str) -> None:
        status, _ = self.api("POST", f"/users/{name}/server")
        assert status in (201, 202), status

    def wait_ready(self, name: str, timeout: float = 120) -> dict:
        deadline = time.time() + timeout
        while time.time() < deadline:
            server = self.user(name)["servers"].get("")
            if server and server.get("ready"):
                if server.get("state", {}).get("pid"):
                    self.server_pids.add(server["state"]["pid"])
                return server
            time.sleep(0.5)
        raise AssertionError(f"{name}'s server not ready:\n" + (self.base / "jupyterhub.log").read_text()[-3000:])

    def stop(self) -> None:
        for pgid in [self.proc.pid, *self.server_pids]:  # the hub (and its proxy), then any server left
            try:
                os.killpg(pgid, signal.SIGTERM)
            except (ProcessLookupError, PermissionError):
                pass
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
        for pgid in self.server_pids:
            try:
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.log.close()


IMAGE_EXCHANGE = "/srv/nbgrader/exchange"
# Learner2's tampering: with the grading helpers no-ops, relative_error's tests (all grading calls) would pass.
TAMPER = "\ngrading.check_function = lambda *args, **kwargs: None\ngrading.check_raises = lambda *args, **kwargs: None\n"


def _user_config(home: Path, exchange: Path, user: str) -> None:
    """The hub image's /etc/jupyter/nbgrader_config.py as the user's own, with the test's exchange."""
    jupyter = home / ".jupyter"
    jupyter.mkdir(exist_ok=True)
    shipped = (ROOT / "jupyterhub" / "nbgrader_config.py").read_text()
    literal = f'"{IMAGE_EXCHANGE}"'
    assert shipped.count(literal) == 1, "jupyterhub/nbgrader_config.py: Exchange.root is not where the test looks"
    (jupyter / "nbgrader_config.py").write_text(shipped.replace(literal, repr(str(exchange))))
    shutil.chown(jupyter, user, user)
    shutil.chown(jupyter / "nbgrader_config.py", user, user)


@pytest.mark.hub
def test_course_on_jupyterhub_with_the_nbgrader_exchange(system):
    started = time.perf_counter()
    base = Path(tempfile.mkdtemp(prefix="course-hub-"))
    os.chmod(base, 0o755)
    exchange = base / "exchange"
    exchange.mkdir()
    os.chmod(exchange, 0o1777)  # nbgrader's exchange: everyone writes, the sticky bit protects each entry
    homes = {u: Path(pwd.getpwnam(u).pw_dir) for u in (INSTRUCTOR, *LEARNERS)}
    course = homes[INSTRUCTOR] / f"{COURSE_ID}-test"
    hub = None
    try:
        # Fresh state in the users' homes (a previous run may have left its files).
        for user, home in homes.items():
            for old in (home / ASSIGNMENT, course):
                if old.exists():
                    shutil.rmtree(old)
            _user_config(home, exchange, user)
        as_user(INSTRUCTOR, "mkdir", "-m", "700", str(course))  # the course directory is private
        as_user(INSTRUCTOR, "mkdir", "-p", str(course / "source"))
        as_user(INSTRUCTOR, "cp", "-r", str(ROOT / "solutions" / ASSIGNMENT), str(course / "source"))
        # The course's settings and hooks; 120 s per cell, not the course's 600: bounds a lost kernel reply
        # (seen once with TCP kernels under load).
        config = course_grading.write_config(course, exchange=exchange, timeout=120)
        shutil.chown(config, INSTRUCTOR, INSTRUCTOR)
        # The course's hooks are what the instructor's nbgrader loads (course_lib importable by that user).
        loaded = as_user(INSTRUCTOR, sys.executable, "-c", (
            "from traitlets.config.loader import PyFileConfigLoader as L; "
            "c = L('nbgrader_config.py', path='.').load_config(); "
            "print([p.__name__ for p in c.Autograde.autograde_preprocessors + c.GenerateFeedback.preprocessors])"),
            cwd=str(course)).stdout
        assert "GuardedExecute" in loaded and "HideHiddenTests" in loaded, loaded

        hub = Hub(base, system)
        for learner in LEARNERS:
            hub.start_server(learner)
        for learner in LEARNERS:
            server = hub.wait_ready(learner)
            assert server["ready"] and server["url"] == f"/user/{learner}/"

        # Instructor: generate and release the assignment.
        nbgrader(INSTRUCTOR, "generate_assignment", ASSIGNMENT, "--force", cwd=str(course))
        nbgrader(INSTRUCTOR, "release_assignment", ASSIGNMENT, "--force", cwd=str(course))
        listing = nbgrader(LEARNERS[0], "list").stdout + nbgrader(LEARNERS[0], "list").stderr
        assert ASSIGNMENT in listing

        # Learners: fetch, work, submit.
        for learner in LEARNERS:
            nbgrader(learner, "fetch_assignment", ASSIGNMENT)
        fetched = homes[LEARNERS[0]] / ASSIGNMENT / f"{NOTEBOOK}.ipynb"
        assert fetched.exists() and pwd.getpwuid(fetched.stat().st_uid).pw_name == LEARNERS[0]
        release = nbformat.read(release_path(ASSIGNMENT), as_version=4)
        assert nbformat.read(fetched, as_version=4).cells[-1].source == release.cells[-1].source
        typed = typed_solutions(nbformat.read(fetched, as_version=4),
                                nbformat.read(solution_path(ASSIGNMENT), as_version=4))
        nbformat.write(typed, fetched)
        shutil.chown(fetched, LEARNERS[0], LEARNERS[0])
        fetched2 = homes[LEARNERS[1]] / ASSIGNMENT / f"{NOTEBOOK}.ipynb"
        tampered = nbformat.read(fetched2, as_version=4)
        tampered.cells[index_of(tampered, "relative_error")].source += TAMPER
        nbformat.write(tampered, fetched2)
        shutil.chown(fetched2, LEARNERS[1], LEARNERS[1])
        for learner in LEARNERS:
            nbgrader(learner, "submit", ASSIGNMENT)

        # Both servers still run mid-flow (the hub sees them).
        for learner in LEARNERS:
            assert hub.user(learner)["servers"][""]["ready"]

        # Permissions, tried as learner2.
        source_nb = course / "source" / ASSIGNMENT / f"{NOTEBOOK}.ipynb"
        inbound = exchange / COURSE_ID / "inbound"
        (sub1,) = [p for p in inbound.iterdir() if p.name.startswith(f"{LEARNERS[0]}+{ASSIGNMENT}+")]
        checks = {
            "instructor's source": try_read(LEARNERS[1], source_nb),
            "instructor's course dir": try_read(LEARNERS[1], course),
            "exchange inbound listing": try_read(LEARNERS[1], inbound),
            "learner1's submission dir": try_read(LEARNERS[1], sub1),
            "learner1's submitted notebook": try_read(LEARNERS[1], sub1 / f"{NOTEBOOK}.ipynb"),
        }
        print("learner2 reading:", checks)
        assert checks["instructor's source"] == "PermissionError"
        assert checks["instructor's course dir"] == "PermissionError"
        assert checks["exchange inbound listing"] == "PermissionError"  # cannot list, so cannot find sub1
        # sub1's name ends in a random string (nbgrader 0.9): unguessable even where its files are readable.
        assert len(sub1.name.split("+")) == 4 and len(sub1.name.split("+")[3]) >= 8

        # Instructor: collect, autograde, export, feedback.
        nbgrader(INSTRUCTOR, "collect", ASSIGNMENT, cwd=str(course))
        nbgrader(INSTRUCTOR, "autograde", ASSIGNMENT, "--force", cwd=str(course))
        nbgrader(INSTRUCTOR, "export", "--to", str(course / "grades.csv"), cwd=str(course))
        assert try_read(LEARNERS[1], course / "gradebook.db") == "PermissionError"
        rows = {r["student_id"]: r for r in csv.DictReader(io.StringIO((course / "grades.csv").read_text()))}
        print("grades:", {s: (r["score"], r["max_score"]) for s, r in rows.items()})
        max_score = float(rows[LEARNERS[0]]["max_score"])
        assert max_score > 0
        assert float(rows[LEARNERS[0]]["score"]) == max_score
        assert float(rows[LEARNERS[1]]["score"]) == 0.0  # the no-op helpers were undone (GuardedExecute)
        graded2 = nbformat.read(course / "autograded" / LEARNERS[1] / ASSIGNMENT / f"{NOTEBOOK}.ipynb", as_version=4)
        restored = graded2.cells[index_of(graded2, "test_relative_error")].metadata.get("course_guard", {})
        assert any("check_function" in r for r in restored.get("restored") or []), restored

        nbgrader(INSTRUCTOR, "generate_feedback", ASSIGNMENT, "--force", cwd=str(course))
        nbgrader(INSTRUCTOR, "release_feedback", ASSIGNMENT, cwd=str(course))
        feedback = {}
        for learner in LEARNERS:
            nbgrader(learner, "fetch_feedback", ASSIGNMENT)
            files = sorted((homes[learner] / ASSIGNMENT / "feedback").rglob("*.html"))
            assert len(files) == 1, files  # one submission, one feedback: only their own
            feedback[learner] = files[0].read_text()
        assert f"Score: {max_score:g}" in feedback[LEARNERS[0]] or f"{max_score:g} / {max_score:g}" in feedback[LEARNERS[0]]
        assert f"0 / {max_score:g}" in feedback[LEARNERS[1]] or "Score: 0" in feedback[LEARNERS[1]]
        # The prompt text mentions NotImplementedError once; learner2's failing tests add tracebacks.
        assert feedback[LEARNERS[1]].count("NotImplementedError") > feedback[LEARNERS[0]].count("NotImplementedError")
        assert try_read(LEARNERS[1], exchange / COURSE_ID / "feedback") == "PermissionError"

        # Hidden tests: nbgrader 0.9.6's generate_feedback renders the autograded notebook, whose test cells
        # autograde restored from the gradebook *with* the hidden tests; the course's HideHiddenTests removes
        # them. No hidden line in what a learner fetched, while the visible tests are there (the check can fail).
        secret = course_grading.hidden_lines(course, ASSIGNMENT)
        assert "tied[1].weight = tied[0].weight" in secret and len(secret) > 10
        for learner, page in feedback.items():
            text = course_grading.page_text(page)
            leaked = course_grading.leaked_lines(page, secret)
            print(f"{learner}'s feedback: {len(leaked)} hidden test lines")
            assert not leaked and "BEGIN HIDDEN TESTS" not in text, f"{learner} sees hidden tests: {leaked[:3]}"
            assert "count_parameters(mlp) is" in text and "grading.check_raises(sqnr_db" in text  # visible tests

        for learner in LEARNERS:
            assert hub.user(learner)["servers"][""]["ready"]
        status, _ = hub.api("DELETE", f"/users/{LEARNERS[0]}/server")
        assert status in (202, 204)
    finally:
        if hub is not None:
            hub.stop()
        shutil.rmtree(base, ignore_errors=True)
        print(f"hub flow: {time.perf_counter() - started:.1f} s")
