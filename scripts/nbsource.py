#!/usr/bin/env python
"""Convert a solution notebook to and from a plain-text "percent" form for authoring and review.

The notebooks in solutions/ are the source of truth (nbgrader reads them). This tool lets an
author edit one as text and convert it back with its nbgrader metadata intact:

    python scripts/nbsource.py to-py  solutions/01_precision_formats/precision_formats.ipynb  nb.py
    python scripts/nbsource.py to-ipynb nb.py solutions/01_precision_formats/precision_formats.ipynb

Text form: each cell starts with a header line

    # %% [markdown]                     free markdown cell
    # %% [markdown] locked id=NAME      read-only markdown cell (an exercise prompt)
    # %%                                free code cell
    # %% locked id=NAME                 read-only code cell
    # %% solution id=NAME               answer cell (### BEGIN SOLUTION / ### END SOLUTION inside)
    # %% tests id=NAME points=N         autograded test cell (### BEGIN HIDDEN TESTS ... inside)
    # %% [markdown] manual id=NAME points=N   manually graded answer (a written answer the instructor grades)

and markdown lines carry a "# " prefix. Converting ipynb -> py -> ipynb is the identity
(tests/course/test_notebook_lint.py checks it on every solution notebook); outputs are not kept.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import nbformat

HEADER = re.compile(r"^# %%(?P<rest>.*)$")
KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
LANGUAGE_INFO = {"name": "python"}


def _nbgrader_meta(kind: str, grade_id: str | None, points: int | None) -> dict | None:
    if kind == "free":
        return None
    if not grade_id:
        raise ValueError(f"a {kind} cell needs id=NAME")
    meta = {"grade": False, "grade_id": grade_id, "locked": True, "schema_version": 3, "solution": False}
    if kind == "solution":
        meta.update(locked=False, solution=True)
    elif kind in ("tests", "manual"):
        if points is None:
            raise ValueError(f"{kind} cell {grade_id} needs points=N")
        meta.update(grade=True, points=points)
        if kind == "manual":
            meta.update(locked=False, solution=True)
    return meta


def parse_header(rest: str) -> tuple[str, str, str | None, int | None]:
    """Return (cell_type, kind, grade_id, points) from the text after '# %%'."""
    tokens = rest.split()
    cell_type = "code"
    if tokens and tokens[0] == "[markdown]":
        cell_type = "markdown"
        tokens = tokens[1:]
    kind, grade_id, points = "free", None, None
    for tok in tokens:
        if tok in ("locked", "solution", "tests", "manual"):
            kind = tok
        elif tok.startswith("id="):
            grade_id = tok[3:]
        elif tok.startswith("points="):
            points = int(tok[7:])
        else:
            raise ValueError(f"unknown token {tok!r} in cell header '# %%{rest}'")
    return cell_type, kind, grade_id, points


def py_to_notebook(text: str) -> nbformat.NotebookNode:
    """Build a notebook (no outputs) from the text form."""
    cells, current = [], None
    for line in text.splitlines():
        m = HEADER.match(line)
        if m:
            if current:
                cells.append(current)
            current = (parse_header(m.group("rest")), [])
            continue
        if current is None:
            if line.strip():
                raise ValueError(f"text before the first '# %%' header: {line!r}")
            continue
        current[1].append(line)
    if current:
        cells.append(current)

    nb = nbformat.v4.new_notebook()
    nb.metadata = {"kernelspec": KERNELSPEC, "language_info": LANGUAGE_INFO}
    for index, ((cell_type, kind, grade_id, points), lines) in enumerate(cells):
        while lines and not lines[-1].strip():
            lines.pop()
        if cell_type == "markdown":
            body = []
            for ln in lines:
                if ln == "#":
                    body.append("")
                elif ln.startswith("# "):
                    body.append(ln[2:])
                else:
                    raise ValueError(f"markdown line must start with '# ': {ln!r}")
            cell = nbformat.v4.new_markdown_cell("\n".join(body))
        else:
            cell = nbformat.v4.new_code_cell("\n".join(lines))
        cell.id = grade_id or f"cell-{index:03d}"
        meta = _nbgrader_meta(kind, grade_id, points)
        if meta:
            cell.metadata["nbgrader"] = meta
        if cell_type == "code" and kind in ("locked", "tests"):
            cell.metadata["deletable"] = False
            cell.metadata["editable"] = False
        cells_list = nb.cells
        cells_list.append(cell)
    return nb


def notebook_to_py(nb: nbformat.NotebookNode) -> str:
    """Text form of a notebook (outputs dropped)."""
    chunks = []
    for cell in nb.cells:
        meta = cell.metadata.get("nbgrader")
        head = "# %%"
        if cell.cell_type == "markdown":
            head += " [markdown]"
        if meta:
            if meta.get("solution") and meta.get("grade"):
                head += " manual"
            elif meta.get("solution") and not meta.get("grade"):
                head += " solution"
            elif meta.get("grade"):
                head += " tests"
            elif meta.get("locked"):
                head += " locked"
            head += f" id={meta['grade_id']}"
            if meta.get("grade"):
                head += f" points={int(meta['points'])}"
        if cell.cell_type == "markdown":
            body = "\n".join("#" if not ln else f"# {ln}" for ln in cell.source.split("\n"))
        else:
            body = cell.source
        chunks.append(f"{head}\n{body}".rstrip("\n"))
    return "\n\n".join(chunks) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("direction", choices=["to-py", "to-ipynb"])
    parser.add_argument("source", type=Path)
    parser.add_argument("target", type=Path)
    args = parser.parse_args(argv)
    if args.direction == "to-py":
        nb = nbformat.read(args.source, as_version=4)
        args.target.write_text(notebook_to_py(nb))
    else:
        nb = py_to_notebook(args.source.read_text())
        nbformat.validate(nb)
        args.target.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, args.target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
