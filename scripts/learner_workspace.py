#!/usr/bin/env python
"""The learner's working copy of the student notebooks, kept apart from the course's own files.

`./course.sh lab` opens JupyterLab on this copy (``my_work/``, git-ignored) instead of ``notebooks/``,
so a learner's answers are never saved into tracked files and ``git pull`` of a course update never
conflicts with them. Each start syncs the copy with the release:

- a notebook the copy lacks is copied in (the first start copies them all);
- a notebook the course changed since it was copied is replaced when the learner has not edited it;
  when the learner has, their copy is kept, the new version is put beside it as
  ``<name>.course-update.ipynb``, and the learner is told (once per update);
- nothing else is ever overwritten or deleted.

A learner who worked in ``notebooks/`` before this copy existed keeps that work: a release notebook that
differs from git's committed version is copied like the others but counts as edited, so a later update
lands beside it.

``my_work/.course-release.json`` remembers which release each notebook was copied from.

    python scripts/learner_workspace.py [--release notebooks] [--workspace my_work]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = ".course-release.json"
UPDATE_SUFFIX = ".course-update.ipynb"


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def sync(release: Path, workspace: Path, edited: frozenset[str] = frozenset()) -> dict[str, list[str]]:
    """Bring ``workspace`` up to date with the student ``release`` without touching the learner's work.

    Args:
        release: the student notebooks (``notebooks/``: ``<assignment>/<name>.ipynb``).
        workspace: the learner's copy (created when missing).
        edited: release notebooks (paths relative to ``release``) that hold the learner's own edits.

    Returns:
        ``{"copied": [...], "updated": [...], "kept": [...]}``: notebook paths relative to ``workspace``:
        copied in (new), replaced by the course's new version (unedited), kept with the update beside them.
    """
    if not release.is_dir():
        raise FileNotFoundError(f"release: no folder {release}")
    workspace.mkdir(parents=True, exist_ok=True)
    manifest_path = workspace / MANIFEST
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    report: dict[str, list[str]] = {"copied": [], "updated": [], "kept": []}
    for source in sorted(release.glob("*/*.ipynb")):
        name = source.relative_to(release).as_posix()
        target = workspace / name
        new = _digest(source)
        entry = manifest.get(name, {})
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
            report["copied"].append(name)
            # "as copied" is what an unedited copy looks like; None: it already held the learner's work
            manifest[name] = {"release": new, "as copied": None if name in edited else new}
            continue
        if entry.get("release") == new:
            continue  # the course did not change this notebook
        mine = _digest(target)
        if mine == new:
            pass  # already the course's version (e.g. the manifest was lost)
        elif entry and mine == entry.get("as copied"):
            shutil.copyfile(source, target)  # the learner never edited it: take the update
            report["updated"].append(name)
        else:
            shutil.copyfile(source, target.with_name(target.name.removesuffix(".ipynb") + UPDATE_SUFFIX))
            report["kept"].append(name)
            manifest[name] = {"release": new, "as copied": entry.get("as copied")}
            continue
        manifest[name] = {"release": new, "as copied": new}
    manifest_path.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return report


def locally_edited(release: Path) -> frozenset[str]:
    """Release notebooks that differ from git's committed version (none outside a git checkout)."""
    try:
        out = subprocess.run(["git", "diff", "--name-only", "--relative", "HEAD", "--", "."], cwd=release,
                             capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return frozenset()
    return frozenset(line for line in out.splitlines() if line.endswith(".ipynb"))


def describe(report: dict[str, list[str]], workspace: Path) -> list[str]:
    """The lines `./course.sh lab` prints about a sync (none when nothing changed)."""
    lines = []
    if report["copied"]:
        lines.append(f"Copied {len(report['copied'])} notebook(s) into {workspace}/ (your working copy).")
    for name in report["updated"]:
        lines.append(f"Updated {name}: the course changed it and you had not edited it.")
    for name in report["kept"]:
        update = name.removesuffix(".ipynb") + UPDATE_SUFFIX
        lines.append(f"The course changed {name}; your copy keeps your work, the new version is {update}.")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--release", type=Path, default=ROOT / "notebooks")
    parser.add_argument("--workspace", type=Path, default=ROOT / "my_work")
    args = parser.parse_args(argv)
    edited = locally_edited(args.release)
    report = sync(args.release, args.workspace, edited)
    for line in describe(report, args.workspace.name):
        print(line)
    if edited & set(report["copied"]):
        print(f"Your edits in {args.release.name}/ were copied into {args.workspace.name}/; "
              f"`git checkout -- {args.release.name}` restores the course's files so that `git pull` stays clean.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
