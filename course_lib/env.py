"""What runs where: devices, library versions and an environment report for notebook 00."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import platform
import shutil

import torch

#: Distributions whose versions the environment report lists (as pip names them).
REPORTED_PACKAGES = ("torch", "transformers", "bitsandbytes", "numpy", "matplotlib", "ipywidgets", "nbgrader",
                     "scikit-learn")


def cpu_name() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux), for benchmark tables that record their machine."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def available_devices() -> list[str]:
    """Devices the course runs on here: always ``"cpu"``, plus ``"cuda"`` when a GPU is usable."""
    return ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]


def default_device() -> torch.device:
    """The device notebooks compute on: CUDA when present, else CPU (``COURSE_DEVICE`` overrides)."""
    forced = os.environ.get("COURSE_DEVICE")
    if forced:
        return torch.device(forced)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def package_version(distribution: str) -> str | None:
    """Version of an installed distribution (as ``pip show`` gives it), or None when it is not installed.

    Read from the installed metadata, not by importing the package: importing transformers, bitsandbytes,
    nbgrader and scikit-learn only to print their versions took notebook 00 about 7 s.
    """
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def environment_report() -> dict:
    """Everything a learner (or a helper on the forum) needs to know about this machine.

    Returns:
        dict with python, platform, cpu_count, packages ({name: version or None}),
        cuda (bool), gpu (name or None), torch_cuda (CUDA version torch was built with or None),
        compiler (path of a C++ compiler or None), on_colab (bool).
    """
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "packages": {name: package_version(name) for name in REPORTED_PACKAGES},
        "cuda": torch.cuda.is_available(),
        "gpu": gpu,
        "torch_cuda": torch.version.cuda,
        "compiler": shutil.which("c++") or shutil.which("g++") or shutil.which("clang++"),
        "on_colab": on_colab(),
    }


def on_colab() -> bool:
    """True inside a Google Colab runtime."""
    if "COLAB_RELEASE_TAG" in os.environ:
        return True
    try:
        return importlib.util.find_spec("google.colab") is not None
    except ModuleNotFoundError:  # no "google" package at all
        return False


def setup_summary(source: str, build_kernels: bool = False) -> str:
    """The one line a notebook's Colab set-up cell prints: what was installed and what the GPU gets.

    Args:
        source: where the course was installed from (``<repository>@<branch>``).
        build_kernels: build the CUDA kernels for the GPU now (notebooks that use them), instead of on
            first use; the build's progress message is kept out of the line.

    Returns:
        e.g. ``"course_lib 0.1.0 from https://github.com/o/r@main on torch 2.9.0+cu126; GPU Tesla T4
        (sm_75): CUDA kernels built"``.
    """
    import contextlib
    import io

    installed = package_version("course_lib") or "(not installed)"
    line = f"course_lib {installed} from {source} on torch {torch.__version__}"
    if not torch.cuda.is_available():
        return line + "; no GPU, everything runs on the CPU (Runtime > Change runtime type adds one)"
    major, minor = torch.cuda.get_device_capability(0)
    line += f"; GPU {torch.cuda.get_device_name(0)} (sm_{major}{minor})"
    if not build_kernels:
        return line
    from course_lib import kernels

    try:
        with contextlib.redirect_stdout(io.StringIO()):
            kernels.load_extension("cuda")
    except RuntimeError as exc:
        return line + f": {exc}"
    return line + ": CUDA kernels built"


def course_repository() -> str | None:
    """The course's public repository (pyproject.toml's ``[project.urls] Repository``, read from the installed
    package's metadata), or None when the installed course_lib does not carry it."""
    try:
        urls = importlib.metadata.metadata("course_lib").get_all("Project-URL") or []
    except importlib.metadata.PackageNotFoundError:
        return None
    return next((url.strip() for label, _, url in (u.partition(",") for u in urls) if label.strip() == "Repository"), None)
