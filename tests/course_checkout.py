"""Helpers for tests that read the repository as a clone holds it or start the course's own commands: the
files a clone holds, a scratch copy of them, a free port, and whether the running venv was installed by
`./course.sh test` (so `./course.sh lab` skips pip)."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def install_key() -> str:
    """The key course.sh writes in the venv's install stamp (requirements and torch choice)."""
    torch_version = re.search(r"^TORCH_VERSION=(\S+)$", (ROOT / "course.sh").read_text(), re.M)[1]
    choice = f"torch=={torch_version} {os.environ.get('TORCH_PIP_ARGS', '')}"
    return hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + choice.encode()).hexdigest()[:16]


def installed_by_course_sh() -> bool:
    """The venv running the tests was installed by `./course.sh test` with today's pyproject.toml."""
    stamp = Path(sys.prefix) / ".course-installed"
    return stamp.is_file() and f"[test] {install_key()}" in stamp.read_text().splitlines()


NOT_INSTALLED_BY_COURSE_SH = ("the test environment was not installed by ./course.sh test (its install stamp is "
                              "what lets ./course.sh lab start without pip)")


def tracked_files(root: Path = ROOT) -> list[str]:
    """What a clone (or a fork after a commit) holds: tracked files and new files git does not ignore, that exist
    on disk, sorted."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=root,
                         capture_output=True, check=True).stdout.decode()
    return sorted({name for name in out.split("\0") if name and (root / name).is_file()})


def free_port() -> int:
    """A free TCP port on the loopback interface, for a server a test starts."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def checkout(target: Path) -> Path:
    """A copy of the repository's files in ``target`` (course_lib itself stays the installed one)."""
    for name in tracked_files():
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, target / name)
    return target


def course_sh_env(home: Path, **extra: str) -> dict[str, str]:
    """The environment for `./course.sh lab|instructor` on the running venv, with its own HOME."""
    env = {**os.environ, "VENV": sys.prefix, "HOME": str(home), "JUPYTER_CONFIG_PATH": "", "PYTHONUNBUFFERED": "1",
           **extra}
    env.pop("JUPYTER_CONFIG_DIR", None)
    return env
