"""Determinism of the solution notebooks: the text outputs of two runs, compared after sanitizing.

CI already executes every solution notebook twice: nbval runs ``solutions/<a>/<nb>.ipynb`` cell by cell,
and the round trip autogrades the release notebook with the solutions typed in (same cells, same code,
hidden tests restored by nbgrader). The root ``conftest.py`` keeps nbval's outputs and schedules both
runs of a notebook on one worker, nbval's last; ``tests/course/test_grading_roundtrip.py`` then compares them
here. No notebook is executed a third time.

What is compared, per code cell: stdout, the ``text/plain`` of results and displays, and the names of
errors (printed lines and displays as two lists: their order against each other is a race). Not
compared: stderr outside graded cells (warnings, build messages), progress bars, images and widget
state. Sanitized: timings and rates (a number with a unit of time, or per second), speed-ups
(``3.1x``), shares of a bandwidth floor, memory addresses, temporary and repository paths; runs of
spaces are one space. A timing printed without its unit is compared, and fails: print the unit. Numbers of anything else must be equal
digit for digit: every notebook seeds its generators.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping, Sequence

# Units a measured duration or rate is printed with. A number followed by one of these is a timing.
_TIME = r"(?:ns|us|µs|μs|ms|s|sec|secs|seconds?|min|minutes?)"
_RATE = r"(?:[KMGT]?B/s|[KMGT]?i?B/s|tok(?:en)?s?/s|it/s|s/it|rows/s|samples/s|[GT]?FLOP/s|[KMGT]?\s?weights/s)"
_NUMBER = r"[-+]?(?:\d+(?:[.,]\d+)*|\.\d+)(?:e[-+]?\d+)?"
SANITIZERS: list[tuple[re.Pattern, str]] = [
    (re.compile(rf"(?<![\w.]){_NUMBER}\s?{_TIME}(?![A-Za-z])"), "<time>"),
    (re.compile(rf"(?<![\w.]){_NUMBER}\s?{_RATE}"), "<rate>"),
    # a speed-up comes from timings: "3.1x faster"
    (re.compile(rf"(?<![\w.]){_NUMBER}\s?[x×](?=\s|$|[),;])"), "<ratio>"),
    # a share of a bandwidth floor is a timing too: "(42% of copy bandwidth)"
    (re.compile(rf"{_NUMBER}\s?% of (?=(?:the |measured |copy |peak |memory )*(?:copy|bandwidth|floor|peak))"),
     "<n>% of "),
    (re.compile(r"0x[0-9a-fA-F]{6,}"), "<address>"),
    (re.compile(r"(?:/tmp|/var/folders|/private/var)/\S+"), "<path>"),
]
# tqdm's progress bars (text or widget): "name: 40%|####  | 2/5 [00:01<00:02, 1.5it/s]"
PROGRESS_BAR = re.compile(r"\|\s*\d+/\d+\s*\[")


def sanitize(text: str, repo_root: str | None = None) -> str:
    """``text`` with timings, rates, ratios of timings, addresses and paths replaced by placeholders."""
    if repo_root:
        text = text.replace(repo_root, "<repo>")
    for pattern, placeholder in SANITIZERS:
        text = pattern.sub(placeholder, text)
    # a padded column is as wide as the timing printed in it: runs of spaces are one space
    return "\n".join(" ".join(line.split()) for line in text.splitlines() if not PROGRESS_BAR.search(line))


def cell_text(outputs: Iterable[Mapping], graded: bool, repo_root: str | None = None) -> list[str]:
    """The comparable lines of one code cell's outputs: its printed lines, then its displays and errors.

    Printed text and displays are separate lists because their order against each other is a race
    between two channels of the kernel. A graded test cell's stderr counts (the autograder turns it
    into stdout, so its order against stdout differs too: a graded cell's lines are sorted)."""
    printed: list[str] = []
    shown: list[str] = []
    for out in outputs:
        kind = out.get("output_type")
        if kind == "stream" and (out.get("name") == "stdout" or graded):
            text = out.get("text", "")
            printed += sanitize("".join(text) if isinstance(text, list) else text, repo_root).splitlines()
        elif kind in ("execute_result", "display_data"):
            plain = out.get("data", {}).get("text/plain")
            if plain is not None:
                shown += sanitize("".join(plain) if isinstance(plain, list) else plain, repo_root).splitlines()
        elif kind == "error":
            shown.append(f"<error {out.get('ename')}>")
    printed, shown = [ln for ln in printed if ln.strip()], [ln for ln in shown if ln.strip()]
    return sorted(printed + shown) if graded else printed + shown


def differences(first: Sequence[tuple[str, list[str]]], second: Sequence[tuple[str, list[str]]],
                labels: tuple[str, str] = ("first run", "second run")) -> list[str]:
    """Human-readable differences between two runs, each a list of (cell source, lines) per code cell."""
    if len(first) != len(second):
        return [f"the runs have {len(first)} and {len(second)} code cells"]
    problems = []
    for index, ((source, a), (_, b)) in enumerate(zip(first, second)):
        if a != b:
            head = source.strip().splitlines()[0][:70] if source.strip() else "(empty)"
            diff = "\n".join(difflib.unified_diff(a, b, labels[0], labels[1], lineterm="", n=1))
            problems.append(f"code cell {index} ({head}):\n{diff}")
    return problems
