#!/usr/bin/env python3
"""Build the course LM's text corpus, reproducibly and offline-friendly.

Source: the reStructuredText sources of the Python 3.11 documentation as Debian packages
them in ``python3.11-doc`` (``usr/share/doc/python3.11/html/_sources/**/*.rst.txt``).
Licence: the Python Software Foundation License Version 2 (the documentation is part of
"the software and its associated documentation"); the licence text is copied next to the
shipped texts from the same package's ``license.rst.txt``.

What it does:
1. gets the ``.deb`` (``--deb PATH``, or ``apt-get download python3.11-doc`` into a temp dir)
   and unpacks it with ``dpkg -x``;
2. cleans each ``.rst.txt`` file lightly (drops Sphinx metadata directives, index entries,
   labels and heading underlines; turns roles such as ``:func:`len``` into ``len`` and
   links into their text; keeps prose and code examples);
3. splits the files deterministically by a hash of their path: in hash order, the first
   files go to ``eval`` until it holds ``--split-bytes`` characters, the next to ``calib``,
   the next to ``valid``, and all the rest to ``train``; files larger than
   ``--max-heldout-file-bytes`` always go to ``train`` so that no split is one huge file;
4. writes ``eval.txt``, ``calib.txt``, ``LICENSE-PSF.txt`` and ``MANIFEST.txt`` to
   ``course_lib/assets/course_lm_corpus/`` (shipped with the course) and ``train.jsonl`` and
   ``valid.jsonl`` (one document per line) to ``.corpus/`` (ignored by git, rebuilt by this
   script).

Usage::

    python scripts/build_corpus.py                        # downloads the .deb with apt-get
    python scripts/build_corpus.py --deb python3.11-doc_3.11.2-6+deb12u8_all.deb
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "python3.11-doc"
#: The version the shipped texts were built from (Debian 12 "bookworm").
EXPECTED_VERSION = "3.11.2-6+deb12u8"
SOURCES_DIR = "usr/share/doc/python3.11/html/_sources"
HASH_SALT = "course-lm-v1:"

#: Files that are not prose about Python (legal text, the table of contents).
EXCLUDED = {"license.rst.txt", "copyright.rst.txt", "contents.rst.txt", "whatsnew/changelog.rst.txt"}

#: Directives whose argument is the name being documented: keep the argument as a line.
SIGNATURE_DIRECTIVES = {
    "function", "method", "class", "data", "attribute", "exception", "decorator",
    "decoratormethod", "classmethod", "staticmethod", "coroutinefunction", "coroutinemethod",
    "abstractmethod", "property", "describe", "object", "opcode", "pdbcommand", "cmdoption",
    "option", "envvar", "c:function", "c:member", "c:type", "c:var", "c:macro", "c:data",
    "c:struct", "c:enum", "c:enumerator",
}
#: Admonition-like directives, rewritten to a short English lead.
LEAD_DIRECTIVES = {
    "note": "Note:", "warning": "Warning:", "seealso": "See also:", "important": "Important:",
    "caution": "Caution:", "impl-detail": "CPython implementation detail:",
    "versionadded": "New in version {arg}.", "versionchanged": "Changed in version {arg}:",
    "deprecated": "Deprecated since version {arg}.",
    "deprecated-removed": "Deprecated since version {arg}.",
}
#: Directives whose whole indented body is metadata or markup, not text: dropped.
DROP_BODY_DIRECTIVES = {
    "index", "toctree", "testsetup", "testcleanup", "only", "raw", "include", "literalinclude",
    "tabularcolumns", "highlight", "module", "moduleauthor", "sectionauthor", "currentmodule",
    "program", "changelog", "availability", "image", "figure", "productionlist", "c:namespace",
    "c:namespace-push", "c:namespace-pop", "audit-event", "audit-event-table", "rst-class",
    "csv-table", "list-table", "miscnews", "limited-api-list", "opcode-list",
}

DIRECTIVE_RE = re.compile(r"^(\s*)\.\.\s+([A-Za-z][\w:-]*)::\s*(.*)$")
COMMENT_OR_TARGET_RE = re.compile(r"^(\s*)\.\.(\s|$)")
OPTION_RE = re.compile(r"^\s+:[\w-]+:(\s.*)?$")
UNDERLINE_RE = re.compile(r"^\s*([=\-~^\"'`#*+.:_])\1{2,}\s*$")
ROLE_RE = re.compile(r":[\w:+-]+:`([^`]+)`")
LINK_RE = re.compile(r"`([^`<]+?)\s*<[^`>]*>`__?")
REF_WORD_RE = re.compile(r"`([^`]+)`__?")
LITERAL_RE = re.compile(r"``(.+?)``")


def _role_text(match: re.Match) -> str:
    text = match.group(1)
    titled = re.match(r"^(.*?)\s*<[^<>]*>$", text, re.S)
    if titled and titled.group(1):
        return titled.group(1)
    text = text.lstrip("!")
    if text.startswith("~"):
        text = text[1:].split(".")[-1]
    return text


def clean_inline(line: str) -> str:
    """Rewrite reST inline markup to plain text (roles, links, literals)."""
    line = ROLE_RE.sub(_role_text, line)
    line = LINK_RE.sub(r"\1", line)
    line = LITERAL_RE.sub(r"\1", line)
    line = REF_WORD_RE.sub(r"\1", line)
    return line


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def clean_rst(text: str) -> str:
    """Turn one reStructuredText source into plain text that still reads like documentation.

    Args:
        text: the contents of one ``.rst.txt`` file.

    Returns:
        The cleaned text, paragraphs separated by single blank lines, ending in a newline.
    """
    lines = text.expandtabs(8).splitlines()
    out: list[str] = []
    i = 0
    n = len(lines)

    def skip_block(start: int, indent: int) -> int:
        j = start
        while j < n and (not lines[j].strip() or _indent(lines[j]) > indent):
            j += 1
        return j

    while i < n:
        line = lines[i].rstrip()
        m = DIRECTIVE_RE.match(line)
        if m:
            indent, name, arg = len(m.group(1)), m.group(2).lower(), m.group(3).strip()
            i += 1
            if name in DROP_BODY_DIRECTIVES:
                i = skip_block(i, indent)
                continue
            pad = " " * indent
            if name in SIGNATURE_DIRECTIVES and arg:
                out.append(pad + clean_inline(arg.rstrip("\\").strip()))
                # Further signatures follow on the next lines, before any blank line.
                while i < n and lines[i].strip() and not OPTION_RE.match(lines[i]):
                    out.append(pad + clean_inline(lines[i].strip().rstrip("\\").strip()))
                    i += 1
            elif name in LEAD_DIRECTIVES:
                template = LEAD_DIRECTIVES[name]
                if "{arg}" in template:
                    words = arg.split()
                    lead = template.format(arg=words[0] if words else "")
                    rest = " ".join(words[1:])
                else:
                    lead, rest = template, arg
                out.append(pad + (lead + (" " + clean_inline(rest) if rest else "")))
            elif name in {"topic", "sidebar", "rubric", "admonition"} and arg:
                out.append(pad + clean_inline(arg))
            # Other directives (code-block, doctest, ...): drop the line, keep the body.
            while i < n and OPTION_RE.match(lines[i]):
                i += 1
            continue
        m = COMMENT_OR_TARGET_RE.match(line)
        if m:  # a comment, a hyperlink target (.. _label:) or a substitution definition
            i = skip_block(i + 1, len(m.group(1)))
            continue
        if UNDERLINE_RE.match(line):
            i += 1
            continue
        if line.strip() == "::":
            i += 1
            continue
        if line.endswith("::"):
            line = line[:-2].rstrip()
            line = line + ":" if line and line[-1].isalnum() else line
        out.append(clean_inline(line))
        i += 1

    text = "\n".join(out)
    # Links and roles whose text wraps onto a second line.
    text = LINK_RE.sub(r"\1", text)
    text = ROLE_RE.sub(_role_text, text)
    text = re.sub(r"[ \t]+\n", "\n", text)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip("\n") + "\n"


def file_key(relpath: str) -> str:
    """Deterministic position of a file in the split order (hash of its relative path)."""
    return hashlib.sha256((HASH_SALT + relpath).encode("utf-8")).hexdigest()


def split_documents(docs: dict[str, str], split_bytes: int, max_heldout_file_bytes: int) -> dict[str, list[str]]:
    """Assign file paths to eval / calib / valid / train (see the module docstring)."""
    order = sorted(docs, key=file_key)
    splits: dict[str, list[str]] = {"eval": [], "calib": [], "valid": [], "train": []}
    sizes = {"eval": 0, "calib": 0, "valid": 0}
    for path in order:
        size = len(docs[path])
        target = "train"
        if size <= max_heldout_file_bytes:
            for name in ("eval", "calib", "valid"):
                if sizes[name] < split_bytes:
                    target = name
                    break
        if target != "train":
            sizes[target] += size
        splits[target].append(path)
    return splits


def get_deb(deb: str | None, workdir: Path) -> Path:
    if deb:
        path = Path(deb).resolve()
        if not path.is_file():
            sys.exit(f"--deb: no such file {path}")
        return path
    print(f"downloading {PACKAGE} with apt-get ...", flush=True)
    subprocess.run(["apt-get", "download", PACKAGE], cwd=workdir, check=True)
    found = sorted(workdir.glob(f"{PACKAGE}_*.deb"))
    if not found:
        sys.exit("apt-get download produced no .deb")
    return found[-1]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--deb", help="path of python3.11-doc_*.deb (default: apt-get download it)")
    parser.add_argument("--assets-dir", default=str(REPO / "course_lib/assets/course_lm_corpus"))
    parser.add_argument("--work-dir", default=str(REPO / ".corpus"), help="where train/valid go (not shipped)")
    parser.add_argument("--split-bytes", type=int, default=200_000, help="characters in each of eval, calib, valid")
    parser.add_argument("--max-heldout-file-bytes", type=int, default=60_000)
    args = parser.parse_args(argv)

    assets, work = Path(args.assets_dir), Path(args.work_dir)
    assets.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        deb = get_deb(args.deb, tmp)
        deb_sha = hashlib.sha256(deb.read_bytes()).hexdigest()
        version = subprocess.run(["dpkg-deb", "-f", str(deb), "Version"], capture_output=True, text=True, check=True).stdout.strip()
        if version != EXPECTED_VERSION:
            print(f"warning: {deb.name} is version {version}, the shipped texts came from {EXPECTED_VERSION}; "
                  "the split and texts may differ", file=sys.stderr)
        subprocess.run(["dpkg", "-x", str(deb), str(tmp / "x")], check=True)
        src = tmp / "x" / SOURCES_DIR
        files = sorted(p for p in src.rglob("*.rst.txt"))
        docs: dict[str, str] = {}
        for p in files:
            rel = p.relative_to(src).as_posix()
            if rel in EXCLUDED:
                continue
            cleaned = clean_rst(p.read_text(encoding="utf-8"))
            if len(cleaned.strip()) >= 200:
                docs[rel] = cleaned
        licence = (
            "eval.txt and calib.txt in this folder are derived from the Python 3.11 documentation\n"
            f"(Debian package {PACKAGE} {version}; see MANIFEST.txt). Below, verbatim from the same package:\n"
            "its copyright.rst.txt and license.rst.txt (the PSF License Agreement covers the documentation).\n\n"
            + "=" * 78 + "\n" + (src / "copyright.rst.txt").read_text(encoding="utf-8")
            + "\n" + "=" * 78 + "\n" + (src / "license.rst.txt").read_text(encoding="utf-8")
        )
        (assets / "LICENSE-PSF.txt").write_text(licence, encoding="utf-8")

    splits = split_documents(docs, args.split_bytes, args.max_heldout_file_bytes)
    for name in ("eval", "calib"):
        (assets / f"{name}.txt").write_text("\n".join(docs[p] for p in splits[name]), encoding="utf-8")
    for name in ("train", "valid"):
        with open(work / f"{name}.jsonl", "w", encoding="utf-8") as f:
            for p in splits[name]:
                f.write(json.dumps({"path": p, "text": docs[p]}, ensure_ascii=False) + "\n")

    lines = [
        "Course LM corpus: built by scripts/build_corpus.py (see docs/COURSE_LM.md).",
        f"Source: Debian package {PACKAGE} {version}, sha256 {deb_sha},",
        f"        reStructuredText sources under /{SOURCES_DIR}/.",
        "Copyright (c) 2001-2023 Python Software Foundation; All Rights Reserved.",
        "Licence: PSF License Version 2 (full text in LICENSE-PSF.txt, copied from the same package).",
        "Changes: reStructuredText markup removed or rewritten to plain text; files split by path hash.",
        "",
    ]
    for name in ("eval", "calib", "valid", "train"):
        chars = sum(len(docs[p]) for p in splits[name])
        lines.append(f"[{name}] {len(splits[name])} files, {chars} characters")
        if name in ("eval", "calib", "valid"):
            lines.extend(f"  {p}" for p in splits[name])
    (assets / "MANIFEST.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    for name in ("eval", "calib", "valid", "train"):
        print(f"{name:6s} {len(splits[name]):4d} files {sum(len(docs[p]) for p in splits[name]):9d} chars")
    print(f"wrote {assets} and {work}")


if __name__ == "__main__":
    main()
