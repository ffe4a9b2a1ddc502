#!/usr/bin/env python
"""The course's public repository and branch, written into everything that carries them.

The one place they are set by hand is pyproject.toml:

    [project.urls]
    Repository = "https://github.com/<owner>/<name>"
    [tool.course]
    branch = "main"

From it this module writes each solution notebook's Open-in-Colab badge (title cell), its locked
`setup` cell, and the README's badges. `scripts/generate_notebooks.py` calls `write()` before it
builds the student release, so a fork changes the two settings, regenerates, and is done;
`tests/deployment/test_colab_setup.py` fails when a file disagrees with the settings.

    python scripts/repository_links.py          # rewrite what disagrees
    python scripts/repository_links.py --check  # list what disagrees, exit 1 if anything does
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]

#: A Colab badge's target: colab.research.google.com/github/<owner>/<name>/blob/<branch>/<path>.
COLAB_LINK = re.compile(r"https://colab\.research\.google\.com/github/(?P<owner>[^/\s]+)/(?P<name>[^/\s]+)/blob/"
                        r"(?P<ref>[^/\s]+)/(?P<path>[^)\s]+\.ipynb)")

#: Notebooks whose code uses the course's compiled kernels: on a Colab GPU their set-up cell builds them.
USES_KERNELS = re.compile(r"from course_lib import[^\n]*\bkernels\b|course_lib\.kernels|from course_lib\.kernels")

SETUP_CELL = '''\
# Set-up. On Colab this installs the course into Colab's own torch and turns on its widgets;
# anywhere else it does nothing. (Written from pyproject.toml by scripts/generate_notebooks.py.){kernels_note}
import sys

if "google.colab" in sys.modules:
    import subprocess

    import torch

    REPO, REF = "{repository}", "{branch}"
    # torch pinned to the build Colab ships, so pip never downloads another one
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "-q", f"course_lib @ git+{{REPO}}@{{REF}}",
                          "ninja", "bitsandbytes", f"torch=={{torch.__version__}}"], capture_output=True, text=True)
    if pip.returncode:
        raise RuntimeError(f"pip could not install the course from {{REPO}}@{{REF}}:\\n{{pip.stderr[-3000:]}}")
    from google.colab import output

    output.enable_custom_widget_manager()
    from course_lib.env import setup_summary

    print(setup_summary(f"{{REPO}}@{{REF}}", build_kernels={build_kernels}))'''

KERNELS_NOTE = ("\n# On a GPU runtime it also builds the CUDA kernels for that GPU: any NVIDIA GPU from sm_75 on\n"
                "# (Colab's T4, L4 and A100 included), a few minutes the first time.")


def settings(root: Path = ROOT) -> tuple[str, str]:
    """(repository URL, branch) from ``root``/pyproject.toml."""
    meta = tomllib.loads((root / "pyproject.toml").read_text())
    try:
        repository = meta["project"]["urls"]["Repository"].rstrip("/")
        branch = meta["tool"]["course"]["branch"]
    except KeyError as exc:
        raise KeyError(f"pyproject.toml must set [project.urls] Repository and [tool.course] branch; {exc} is missing")
    if not re.fullmatch(r"https://github\.com/[^/\s]+/[^/\s]+", repository):
        raise ValueError(f"[project.urls] Repository must be https://github.com/<owner>/<name>, got {repository!r}")
    return repository, branch


def colab_url(repository: str, branch: str, notebook: str) -> str:
    """Colab's URL of ``notebook`` (a path like notebooks/00_welcome/welcome.ipynb) in the repository."""
    return f"https://colab.research.google.com/github/{repository.removeprefix('https://github.com/')}/blob/{branch}/{notebook}"


def setup_source(repository: str, branch: str, build_kernels: bool) -> str:
    """The locked ``setup`` cell of a notebook."""
    return SETUP_CELL.format(repository=repository, branch=branch, build_kernels=build_kernels,
                             kernels_note=KERNELS_NOTE if build_kernels else "")


def uses_kernels(nb) -> bool:
    """Whether a notebook's code (other than its set-up cell) uses course_lib.kernels."""
    return any(c.cell_type == "code" and c.metadata.get("nbgrader", {}).get("grade_id") != "setup"
               and USES_KERNELS.search(c.source) for c in nb.cells)


def _relink(text: str, repository: str, branch: str, expected_path: str | None = None) -> str:
    def replace(m: re.Match) -> str:
        if expected_path is not None and m["path"] != expected_path:
            raise ValueError(f"a Colab badge points at {m['path']}, expected {expected_path}")
        return colab_url(repository, branch, m["path"])

    return COLAB_LINK.sub(replace, text)


def _stamped_notebook(path: Path, repository: str, branch: str):
    """The solution notebook at ``path`` with its badge and set-up cell written from the settings."""
    nb = nbformat.read(path, as_version=4)
    release_path = f"notebooks/{path.parent.name}/{path.name}"
    title = nb.cells[0]
    if not COLAB_LINK.search(title.source):
        raise ValueError(f"{path}: the title cell has no Open in Colab badge (CONTRIBUTING.md, notebook layout)")
    title.source = _relink(title.source, repository, branch, expected_path=release_path)
    setup = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "setup"]
    if len(setup) != 1:
        raise ValueError(f"{path}: expected one cell with grade_id 'setup', found {len(setup)}")
    setup[0].source = setup_source(repository, branch, uses_kernels(nb))
    return nb


def _targets(root: Path) -> list[Path]:
    return sorted((root / "solutions").glob("*/*.ipynb"))


def write(root: Path = ROOT, check: bool = False) -> list[Path]:
    """Write the settings into the solutions' badges and set-up cells and the README's badges.

    Args:
        root: the course checkout.
        check: only report, write nothing.

    Returns:
        The files that disagreed with the settings (and, unless ``check``, were rewritten).
    """
    repository, branch = settings(root)
    changed = []
    for path in _targets(root):
        new = nbformat.writes(_stamped_notebook(path, repository, branch)) + "\n"
        if new != path.read_text():
            changed.append(path)
            if not check:
                path.write_text(new)
    readme = root / "README.md"
    text = readme.read_text()
    new = _relink(text, repository, branch)
    if new != text:
        changed.append(readme)
        if not check:
            readme.write_text(new)
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="list what disagrees with pyproject.toml; write nothing")
    args = parser.parse_args(argv)
    changed = write(check=args.check)
    for path in changed:
        print(("disagrees: " if args.check else "rewrote: ") + str(path.relative_to(ROOT)))
    return 1 if (args.check and changed) else 0


if __name__ == "__main__":
    sys.exit(main())
