"""The course's topics, in course order: one entry per assignment (``solutions/<assignment>/<notebook>``).

Each :class:`Topic` names what the assignment is made of: its notebook, its title (the README's table),
the ``course_lib`` modules that hold its references, its plots and widget modules, and the test files
of those modules. Tests and tools read the course's shape from here instead of keeping their own lists:

- ``tests/course/test_topics.py``: the registry matches the repository (every ``solutions/`` folder has one
  entry, in order; every module, plots module, widget module and test file named here exists; every
  topic module of ``course_lib`` belongs to a topic; each notebook imports its modules; the README's
  table lists these notebooks, in this order, with these titles);
- ``tests/course/test_notebook_structure.py`` (docstrings of every topic module's public functions) and
  ``tests/course/test_bad_input.py`` (a bad-input row for every public function) iterate :func:`modules`.

Folder and notebook names are kept as they are, even where they differ from the module names (renaming
would break the links and gradebooks of running classes): the registry says which goes with which.

Adding a topic: one entry here plus its files (CONTRIBUTING.md). This module is plumbing, not a
reference (``course_lib.grading._INFRASTRUCTURE``), and imports nothing heavy: no torch.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Topic", "TOPICS", "by_assignment", "modules"]


@dataclass(frozen=True)
class Topic:
    """One assignment of the course.

    Attributes:
        assignment: the folder under ``solutions/`` and ``notebooks/`` (and nbgrader's assignment
            name), e.g. ``"05_nf4"``.
        notebook: the notebook's file name in that folder, e.g. ``"nf4.ipynb"``.
        title: the title in the README's table of notebooks, e.g. ``"NF4"``.
        modules: the ``course_lib`` modules that hold the assignment's references, dotted names relative
            to ``course_lib`` (``("observers", "qat")``); a module shared by later notebooks belongs to
            the notebook that introduces it.
        plots: the plots modules, relative to ``course_lib`` (``("plots.nf4",)``); empty if none.
        widget: the widget module, relative to ``course_lib`` (``"widgets.nf4"``), or None.
        tests: the test files of those modules, relative to the repository root.
    """

    assignment: str
    notebook: str
    title: str
    modules: tuple[str, ...]
    plots: tuple[str, ...] = ()
    widget: str | None = None
    tests: tuple[str, ...] = ()

    @property
    def path(self) -> str:
        """The solution notebook, relative to the repository root (``solutions/05_nf4/nf4.ipynb``)."""
        return f"solutions/{self.assignment}/{self.notebook}"

    @property
    def number(self) -> str:
        """The two-digit number of the assignment (``"05"``)."""
        return self.assignment[:2]


TOPICS: tuple[Topic, ...] = (
    Topic("00_welcome", "welcome.ipynb", "welcome", ("basics",),
          widget="widgets.welcome", tests=("tests/library/test_basics.py",)),
    Topic("01_precision_formats", "precision_formats.ipynb", "precision formats", ("formats",),
          plots=("plots.formats",), widget="widgets.formats", tests=("tests/library/test_formats.py",)),
    Topic("02_affine_quantization", "affine_quantization.ipynb", "affine quantization", ("affine",),
          plots=("plots.affine",), widget="widgets.affine", tests=("tests/library/test_affine.py",)),
    # gguf_formats: llama.cpp's block formats (block-wise scales as files store them), the notebook's last section
    Topic("03_granularity", "granularity.ipynb", "granularity", ("granularity", "gguf_formats"),
          plots=("plots.granularity",), widget="widgets.granularity",
          tests=("tests/library/test_granularity.py", "tests/library/test_gguf_formats.py")),
    Topic("04_ptq_qat", "ptq_qat.ipynb", "PTQ vs QAT", ("observers", "qat"),
          plots=("plots.qat",), widget="widgets.qat", tests=("tests/library/test_observers.py", "tests/library/test_qat.py")),
    Topic("05_nf4", "nf4.ipynb", "NF4", ("nf4",),
          plots=("plots.nf4",), widget="widgets.nf4", tests=("tests/library/test_nf4.py",)),
    # smoothquant: SmoothQuant's W8A8 (smoothing factors folded into the norms), the notebook's fifth section
    Topic("06_llm_int8", "llm_int8.ipynb", "LLM.int8()", ("llm_int8", "smoothquant"),
          plots=("plots.llm_int8",), widget="widgets.llm_int8",
          tests=("tests/library/test_llm_int8.py", "tests/library/test_smoothquant.py")),
    # lm_quant (whole-model plumbing: calibration windows, block-by-block runs, the RTN baseline) is
    # introduced here and reused by 08, 09, 11, 12 and 14
    Topic("07_gptq", "gptq.ipynb", "GPTQ", ("gptq", "lm_quant"),
          plots=("plots.gptq",), widget="widgets.gptq", tests=("tests/library/test_gptq.py", "tests/library/test_lm_quant.py")),
    Topic("08_awq", "awq.ipynb", "AWQ", ("awq",),
          plots=("plots.awq",), widget="widgets.awq", tests=("tests/library/test_awq.py",)),
    Topic("09_hqq", "hqq.ipynb", "HQQ", ("hqq",),
          plots=("plots.hqq",), widget="widgets.hqq", tests=("tests/library/test_hqq.py",)),
    Topic("10_bitnet", "bitnet.ipynb", "BitNet b1.58", ("bitnet",),
          plots=("plots.bitnet",), widget="widgets.bitnet", tests=("tests/library/test_bitnet.py",)),
    Topic("11_distillation", "distillation.ipynb", "distillation", ("distill",),
          plots=("plots.distill",), widget="widgets.distill", tests=("tests/library/test_distill.py",)),
    Topic("12_pruning", "pruning.ipynb", "pruning", ("prune",),
          plots=("plots.prune",), widget="widgets.prune", tests=("tests/library/test_prune.py",)),
    # kernels is a package: ops.py (the references) and build.py (compiling), re-exported by __init__.py;
    # kv_cache: the KV cache written by hand and quantized (int8 per token, KIVI), the notebook's seventh section
    Topic("13_lowbit_kernels", "lowbit_kernels.ipynb", "low-bit kernels", ("kernels", "kv_cache"),
          plots=("plots.kernels",), widget="widgets.kernels",
          tests=("tests/library/test_kernels.py", "tests/library/test_kernels_build.py", "tests/course/test_kernels_notebook.py",
                 "tests/library/test_kv_cache.py")),
    Topic("14_capstone", "capstone.ipynb", "capstone", ("capstone",),
          plots=("plots.capstone",), widget="widgets.capstone", tests=("tests/library/test_capstone.py",)),
)


def by_assignment(name: str) -> Topic:
    """The topic of an assignment.

    Args:
        name: the assignment's folder name (``"05_nf4"``).

    Returns:
        Its :class:`Topic`.

    Raises:
        KeyError: no topic has that assignment (the message lists those there are).
    """
    for topic in TOPICS:
        if topic.assignment == name:
            return topic
    raise KeyError(f"no topic for assignment {name!r}; the assignments are {[t.assignment for t in TOPICS]}")


def modules() -> tuple[str, ...]:
    """Every topic module, in course order (a topic's modules in the order its entry lists them).

    Returns:
        Dotted names relative to ``course_lib`` (``("basics", "formats", ..., "capstone")``).
    """
    return tuple(m for topic in TOPICS for m in topic.modules)
