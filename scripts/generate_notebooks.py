#!/usr/bin/env python
"""Regenerate the student notebooks (notebooks/) from the solutions (solutions/) with nbgrader.

    python scripts/generate_notebooks.py            # rewrite notebooks/ in place
    python scripts/generate_notebooks.py --out DIR  # write the release into DIR instead (for the drift test)
    python scripts/generate_notebooks.py --only 05_nf4  # regenerate one assignment, leave the others alone

First the repository's URL and branch (pyproject.toml) are written into the solutions' Colab
badges and set-up cells and the README (scripts/repository_links.py). Then nbgrader's generate_assignment strips solutions and hidden tests, clears outputs and records
checksums of the locked cells. It runs in a scratch copy of the course with a throw-away
gradebook, so the repository's own gradebook (if an instructor has one) is never touched.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# nbgrader runs the `alembic` command of its own environment: make sure that environment's
# bin/ is on PATH even when this script is started as .venv/bin/python without activation.
os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")


def assignments(solutions: Path = ROOT / "solutions") -> list[str]:
    """Assignment ids, in course order: the folders of solutions/ that hold a notebook."""
    return sorted(p.name for p in solutions.iterdir() if p.is_dir() and any(p.glob("*.ipynb")))


def scratch_config(root: Path, source_directory: str, release_directory: str = "release"):
    """nbgrader configuration of a scratch course in ``root`` with its own gradebook and exchange."""
    from traitlets.config import Config

    config = Config()
    config.CourseDirectory.root = str(root)
    config.CourseDirectory.source_directory = source_directory
    config.CourseDirectory.release_directory = release_directory
    config.CourseDirectory.db_url = f"sqlite:///{root / 'gradebook.db'}"
    config.Exchange.root = str(root / "exchange")
    if str(ROOT) not in sys.path:  # course_lib from this checkout, also when run without installing it
        sys.path.insert(0, str(ROOT))
    from course_lib import nbgrader_hooks

    nbgrader_hooks.configure_release(config)  # the release's answer and test cells let Run All go on
    return config


def generate(out: Path, root: Path = ROOT, only: list[str] | None = None) -> list[Path]:
    """Generate the assignments' release into ``out``; returns the notebooks.

    ``only=None`` regenerates every assignment and replaces ``out``; otherwise only the named
    assignments' folders of ``out`` are replaced.
    """
    from nbgrader.apps import NbGraderAPI

    with tempfile.TemporaryDirectory(prefix="course-generate-") as scratch:
        scratch = Path(scratch)
        shutil.copytree(root / "solutions", scratch / "solutions",
                        ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"))
        api = NbGraderAPI(config=scratch_config(scratch, source_directory="solutions"))
        names = assignments(scratch / "solutions")
        unknown = sorted(set(only or ()) - set(names))
        if unknown:
            raise ValueError(f"only: no such assignment(s) {unknown}; choose from {names}")
        for assignment in (only or names):
            result = api.generate_assignment(assignment, force=True, create=True)
            if not result["success"]:
                raise RuntimeError(f"nbgrader could not generate {assignment}:\n{result['log']}\n{result.get('error', '')}")
        if only:
            for assignment in only:
                shutil.rmtree(out / assignment, ignore_errors=True)
                shutil.copytree(scratch / "release" / assignment, out / assignment)
            return sorted(nb for a in only for nb in (out / a).rglob("*.ipynb"))
        if out.exists():
            shutil.rmtree(out)
        shutil.copytree(scratch / "release", out)
    return sorted(out.rglob("*.ipynb"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "notebooks", help="release directory to write")
    parser.add_argument("--only", nargs="+", metavar="ASSIGNMENT", help="regenerate only these assignments")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import repository_links

    for path in repository_links.write(ROOT):
        print(f"{path.relative_to(ROOT)}: repository links rewritten from pyproject.toml")
    for nb in generate(args.out, only=args.only):
        print(nb.relative_to(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
