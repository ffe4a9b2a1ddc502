"""Docs cite only files in the repository (issue 25, item 2).

Every text file of the repository (what ``git ls-files`` lists, plus new files that are not git-ignored) is
scanned for repository paths: a token that starts with one of the repository's top-level folders
(``course_lib/``, ``tests/``, ``.github/``, ...; computed from the file list), optionally after ``./``, and
a file named without a folder: an upper-case Markdown name such as ``INSTRUCTORS.md`` (the repository's
documents are named that way) or a file name after ``./``, such as ``./course.sh``.
Notebooks are read with nbformat: the sources of their markdown and code cells, not their outputs. Each path
must name a file or folder of the repository; the failure lists ``file:line: path`` for each one that does not.

What is not a citation of this repository, and is skipped:

- anything inside an ``http(s)://`` URL (another repository's ``docs/...`` or ``tests/...``), and a token
  glued to a path in front of it (``my_work/notebooks/...``, ``$HOME/...``, ``../tests``, ``{ROOT}/tests``):
  only a token that starts a path is read;
- paths git ignores by design, made at run time (``my_work/``, ``exchange/``, ``submitted/``,
  ``test-artifacts/``, ``.venv/``, ...): ``git check-ignore`` decides, from .gitignore;
- placeholders become wildcards, and the path then has to match something: ``<assignment>``, ``{name}``,
  ``NN_topic``, ``notebooks/.../<name>.ipynb``, and globs (``solutions/*/*.ipynb``);
- trailing punctuation (``.``, ``,``, ``-``), a line or test suffix (``:12``, ``::test_x``), quotes and
  backticks end a token.

A file named without a folder counts as found at the repository's root or beside the file that names it
(``jupyterhub/README.md`` may say ``README.md``).
"""

from __future__ import annotations

import fnmatch
import posixpath
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import nbformat

from course_checkout import tracked_files

ROOT = Path(__file__).resolve().parents[2]

#: Files read as text, by name ending; files without an extension (.ci/run, binder/postBuild, Dockerfile) are
#: read when they hold no NUL byte. Everything else (databases, images, model weights) is skipped.
TEXT_EXTENSIONS = {".py", ".md", ".cu", ".cuh", ".cpp", ".h", ".sh", ".toml", ".yml", ".yaml", ".cfg", ".txt",
                   ".ipynb", ".json", ".ini"}
MAX_BYTES = 2_000_000
#: Data, not documentation: the course LM's corpus (the Python documentation, PSF-licensed, cites its own
#: files) and its tokenizer. The corpus' MANIFEST.txt is read.
DATA_FILES = {"course_lib/assets/course_lm_corpus/calib.txt", "course_lib/assets/course_lm_corpus/eval.txt",
              "course_lib/assets/course_lm_corpus/LICENSE-PSF.txt", "course_lib/assets/course_lm/tokenizer.json"}

URL = re.compile(r"\b(?:https?|file)://[^\s<>\"'`)\]]*")
#: What a path token is made of (placeholders included: <x>, {x}, *, ...; and a regex's escaped dot, \.).
PATH_CHARS = r"(?:[\w.\-/*<>{}]|\\\.)"
#: A file named without a folder: an upper-case Markdown name (README.md, INSTRUCTORS.md, CONTRIBUTING.md) or
#: a file name after ./ (./course.sh); found at the repository's root or beside the file that names it.
LOCAL_FILE = re.compile(r"(?<![\w./\\~$-])(?:\./(?P<dotted>[\w-]+\.\w+)|(?P<doc>[A-Z][A-Z0-9_]*[A-Z0-9]\.md))\b")
PLACEHOLDERS = [
    (re.compile(r"<[^<>/\s]*>"), "*"),      # <assignment>, <folder>, <name>
    (re.compile(r"\{[^{}/\s]*\}"), "*"),    # {name}, {folder}
    (re.compile(r"\.\.\.+|…"), "*"),        # notebooks/.../<name>.ipynb, benchmarks/results/...
    (re.compile(r"\bNN(?=_)"), "[0-9][0-9]"),  # NN_topic
    (re.compile(r"(?<=_)topic\b"), "*"),
]
#: Command-line metavariables written as a Markdown name (``--out FILE.md``).
METAVARIABLES = {"FILE.md", "PATH.md", "NAME.md", "OUT.md", "OUTPUT.md"}
#: Tokens that look like repository paths and are something else, with what they are.
NOT_PATHS = {
    "jupyterhub/jupyterhub": "the Zero to JupyterHub Helm chart (helm upgrade --install course jupyterhub/jupyterhub)",
}


@dataclass(frozen=True)
class Citation:
    file: str  # repository-relative
    where: str  # "12" for a line, "cell 3, line 4" in a notebook
    path: str  # as cited, cleaned

    def __str__(self) -> str:
        return f"{self.file}:{self.where}: {self.path}"


def repository_paths(files: list[str]) -> set[str]:
    """Every file and every folder (without a trailing slash) of ``files``."""
    paths = set(files)
    for f in files:
        parts = f.split("/")
        paths.update("/".join(parts[:i]) for i in range(1, len(parts)))
    return paths


def top_level_dirs(files: list[str]) -> set[str]:
    return {f.split("/", 1)[0] for f in files if "/" in f}


def path_pattern(top_dirs: set[str]) -> re.Pattern:
    """A token that starts one of ``top_dirs``' paths: nothing path-like glued in front of it."""
    names = "|".join(re.escape(d) for d in sorted(top_dirs, key=len, reverse=True))
    return re.compile(rf"(?<![\w./\\~$-])(?:\./)?(?P<path>(?:{names})/{PATH_CHARS}*)")


def clean(token: str) -> str:
    """The path a token names: placeholders made wildcards, trailing punctuation and slash dropped."""
    token = token.replace("\\.", ".")
    for pattern, wildcard in PLACEHOLDERS:
        token = pattern.sub(wildcard, token)
    token = token.rstrip(".-<>{}")
    return token.rstrip("/")


def exists(path: str, paths: set[str]) -> bool:
    """``path`` is a file or folder of ``paths``, or a wildcard path that matches one, or a script's attribute
    (``scripts/profile_notebooks.profile``: the function ``profile`` of scripts/profile_notebooks.py)."""
    if any(c in path for c in "*?["):
        return any(fnmatch.fnmatchcase(p, path) for p in paths)
    if path in paths:
        return True
    stem, dot, attribute = path.rpartition(".")
    return bool(dot) and attribute.isidentifier() and f".{attribute}" not in TEXT_EXTENSIONS and f"{stem}.py" in paths


def scan_text(text: str, pattern: re.Pattern) -> list[tuple[int, str, bool]]:
    """(line number, cleaned path, local) for each path-like token of ``text``, URLs blanked out first;
    ``local`` marks a file named without a folder (LOCAL_FILE)."""
    found = []
    for number, line in enumerate(text.split("\n"), 1):
        line = URL.sub(lambda m: " " * len(m.group()), line)
        for m in pattern.finditer(line):
            found.append((number, clean(m.group("path")), False))
        for m in LOCAL_FILE.finditer(line):
            name = m.group("dotted") or m.group("doc")
            if name not in METAVARIABLES:
                found.append((number, name, True))
    return found


def file_texts(root: Path, name: str) -> list[tuple[str, str]]:
    """(where-prefix, text) of one file: the file itself, or each cell of a notebook."""
    path = root / name
    if name in DATA_FILES:
        return []
    if path.suffix == ".ipynb":
        nb = nbformat.read(path, as_version=4)
        return [(f"cell {i}, line ", cell.source) for i, cell in enumerate(nb.cells)
                if cell.cell_type in ("markdown", "code")]
    if path.suffix not in TEXT_EXTENSIONS and path.suffix:
        return []
    if path.stat().st_size > MAX_BYTES:
        return []
    data = path.read_bytes()
    if b"\0" in data:
        return []
    return [("", data.decode("utf-8", errors="replace"))]


def missing_citations(root: Path = ROOT) -> list[Citation]:
    """Each citation of a path that is not in the repository at ``root``, in file order."""
    files = tracked_files(root)
    paths = repository_paths(files)
    pattern = path_pattern(top_level_dirs(files))
    candidates: list[Citation] = []
    for name in files:
        if Path(name).name == ".gitignore":  # its lines are patterns, not citations
            continue
        here = str(Path(name).parent)
        for prefix, text in file_texts(root, name):
            for line, path, local in scan_text(text, pattern):
                if path in NOT_PATHS or exists(path, paths) or (local and exists(f"{here}/{path}", paths)):
                    continue
                candidates.append(Citation(name, f"{prefix}{line}", path))
    run_time = ignored({c.path for c in candidates}, root)
    return [c for c in candidates if c.path not in run_time]


def ignored(paths: set[str], root: Path = ROOT) -> set[str]:
    """The ones of ``paths`` that .gitignore ignores (run-time outputs such as my_work/ or exchange/). Each is
    asked as a file and as a folder (``__pycache__/`` matches only folders, and a missing path is neither);
    a wildcard path is asked with its wildcards as they are: a folder pattern like /submitted/ still matches.
    One call per question: git stops at the first path it refuses (one beyond a symbolic link, such as
    .venv/bin/python/), and there are only a few paths to ask, those not found."""
    def is_ignored(path: str) -> bool:
        return subprocess.run(["git", "check-ignore", "-q", "--no-index", "--", path], cwd=root,
                              capture_output=True).returncode == 0

    return {p for p in paths if is_ignored(p) or is_ignored(f"{p}/")}


# ------------------------------------------------------------------------------------------------ tests


def test_every_cited_repository_path_exists():
    missing = missing_citations()
    assert not missing, ("these files cite repository paths that do not exist (fix the citation; if a token "
                         "is not a path of this repository, add it to NOT_PATHS in tests/course/test_repo_paths.py):\n"
                         + "\n".join(map(str, missing)))


#: A token that names one of the team's private notes (the name in two pieces: this file is scanned too), with
#: the path in front of it: ``docs/`` + the name is the repository's own page, any other spelling is the notes.
PRIVATE_NOTES = re.compile(r"(?<![\w./-])(?P<token>[\w./-]*?(?<![\w-])(?:COURSE|REFERENCES)" + r"\.md)\b", re.I)


def private_note_citations(text: str, here: str, files: set[str]) -> list[tuple[int, str]]:
    """(line, token) for each mention in ``text`` (a file in folder ``here``) of a private note's name that is
    not a repository file: as written from the root (``docs/<name>``) or relative to ``here`` (a Markdown link
    from ``docs/`` to its neighbour). A bare name elsewhere, an absolute path or another folder is a hit."""
    hits = []
    for number, line in enumerate(text.split("\n"), 1):
        for m in PRIVATE_NOTES.finditer(URL.sub(lambda u: " " * len(u.group()), line)):
            token = m.group("token")
            relative = posixpath.normpath(posixpath.join(here, token.removeprefix("./")))
            if token.startswith("/") or not (token.removeprefix("./") in files or relative in files):
                hits.append((number, token))
    return hits


def test_no_file_cites_the_private_notes():
    """The team's notes live outside the repository; the product cites the paper or library instead, or the
    repository's own page of references (docs/ + the name), which is a file of the repository."""
    names = tracked_files()
    files = set(names)
    hits = []
    for name in names:
        here = posixpath.dirname(name) or "."
        for prefix, text in file_texts(ROOT, name):
            hits += [f"{name}:{prefix}{number}: {token}" for number, token in private_note_citations(text, here, files)]
    assert not hits, "private notes cited:\n" + "\n".join(hits)


def test_only_the_repository_page_of_references_passes_the_private_notes_check():
    course, refs = "COURSE" + ".md", "REFERENCES" + ".md"  # in pieces, so that this file's own scan does not see them
    files = {f"docs/{refs}", "README.md"}
    text = (f"See docs/{refs} and [the page](docs/{refs}).\n"
            f"{refs}, {course}, shared/{refs}, /work/shared/{course}, ../{refs}, docs/{course}.\n"
            f"docs/COURSE_LM.md and https://example.org/{refs} are not the notes.")
    assert private_note_citations(text, ".", files) == [
        (2, refs), (2, course), (2, f"shared/{refs}"), (2, f"/work/shared/{course}"), (2, f"../{refs}"),
        (2, f"docs/{course}")]
    # from docs/ itself, a bare link to its neighbour is the repository's page; ../docs/ is too
    assert private_note_citations(f"[x]({refs}), ../docs/{refs}; {course}", "docs", files) == [(1, course)]


def test_the_scanner_finds_a_missing_path_and_passes_an_existing_one():
    # the two missing local files spelled in pieces, so that this file's own scan does not see them
    missing_doc, missing_script = "NOT" + "_HERE.md", "." + "/run.sh"
    files = ["pkg/a.py", "pkg/sub/b.md", "pkg/GUIDE.md", "README.md"]
    paths = repository_paths(files)
    pattern = path_pattern(top_level_dirs(files))
    text = ("See pkg/a.py, `pkg/sub/` and pkg/gone.py.\n"
            "Also [the guide](pkg/GUIDE.md) and pkg/*/b.md, pkg/<folder>/b.md, pkg/{x}.py and pkg/nope/*.md;\n"
            "not https://example.org/pkg/zzz.py nor vendor/pkg/zzz.py nor ../pkg/zzz.py; README.md, "
            + missing_doc + ", " + missing_script + ".")
    found = scan_text(text, pattern)
    assert [(n, p) for n, p, _ in found] == [
        (1, "pkg/a.py"), (1, "pkg/sub"), (1, "pkg/gone.py"),
        (2, "pkg/GUIDE.md"), (2, "pkg/*/b.md"), (2, "pkg/*/b.md"), (2, "pkg/*.py"), (2, "pkg/nope/*.md"),
        (3, "README.md"), (3, missing_doc), (3, "run.sh")]
    absent = [(n, p) for n, p, _ in found if not exists(p, paths)]
    assert absent == [(1, "pkg/gone.py"), (2, "pkg/nope/*.md"), (3, missing_doc), (3, "run.sh")]
    assert str(Citation("x.md", "3", "pkg/gone.py")) == "x.md:3: pkg/gone.py"


def test_run_time_outputs_that_git_ignores_are_not_citations():
    assert ignored({"my_work/notebooks", "exchange/course", "submitted/alice", "test-artifacts/x.png",
                    ".venv/bin/python", "course_lib/__pycache__", "course_lib/nf4.py"}) == {
        "my_work/notebooks", "exchange/course", "submitted/alice", "test-artifacts/x.png", ".venv/bin/python",
        "course_lib/__pycache__"}


def test_a_stale_citation_in_a_scratch_repository_is_reported_with_file_and_line(tmp_path):
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / ".gitignore").write_text("/my_work/\n__pycache__/\n")
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "core.py").write_text('"""Cites lib/core.py and lib/old.py (stale)."""\n')
    (tmp_path / "guide.md").write_text("Run lib/core.py; your copy is my_work/lib/core.py,\n"
                                       "or lib/<name>.py (bytecode in lib/__pycache__/); see lib/reference.py.\n")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("Intro"),
                                         nbformat.v4.new_code_cell("# from lib/core.py\nopen('lib/data.csv')")])
    (tmp_path / "lib" / "lesson.ipynb").write_text(nbformat.writes(nb))
    assert list(map(str, missing_citations(tmp_path))) == [
        "guide.md:2: lib/reference.py",
        "lib/core.py:1: lib/old.py",
        "lib/lesson.ipynb:cell 1, line 2: lib/data.csv",
    ]
