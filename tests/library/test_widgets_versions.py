"""Every widget of course_lib/widgets/ under ipywidgets 7.7 (Colab's) and 8 (this venv).

Each builder runs in a subprocess; the driver (this file, run as a script) finds the box's controls, gives each a
different value (its observer updates the box, as in a notebook) and reports whether the readout, the plot or the
box's ``last`` result changed. The ipywidgets-7 run puts ipywidgets 7.7.5 (and its widgetsnbextension 3.x,
jupyterlab_widgets 1.x, ipython_genutils, installed once with ``pip install --target --no-deps`` into .pytest_cache/)
first on PYTHONPATH.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
IPYWIDGETS_7 = ("ipywidgets==7.7.5", "widgetsnbextension>=3.6,<4", "jupyterlab_widgets>=1,<2", "ipython_genutils==0.2.0")
CACHE_7 = ROOT / ".pytest_cache" / "ipywidgets-7.7.5"


def _builders() -> dict:
    """name -> zero-argument function that builds the widget box with small inputs."""
    import torch

    from course_lib.widgets import (affine, awq, bitnet, capstone, distill, formats, gptq, granularity, hqq,
                                    kernels, llm_int8, nf4, prune, qat, welcome)

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(256, 256, generator=gen)
    x[:, 3] *= 20  # an outlier channel

    def recipe():
        from course_lib.models import load_causal_lm

        return capstone.recipe_explorer(*load_causal_lm(), max_tokens=64)

    return {
        "welcome.rounding_explorer": welcome.rounding_explorer,
        "formats.format_explorer": formats.format_explorer,
        "affine.affine_explorer": affine.affine_explorer,
        "granularity.granularity_explorer": granularity.granularity_explorer,
        "qat.observer_explorer": lambda: qat.observer_explorer(n=4000),
        "nf4.codebook_explorer": nf4.codebook_explorer,
        "llm_int8.threshold_explorer": llm_int8.threshold_explorer,
        "gptq.gptq_explorer": gptq.gptq_explorer,
        "awq.awq_explorer": lambda: awq.awq_explorer(torch.randn(16, 256, generator=gen), x, group_size=None),
        "hqq.hqq_explorer": hqq.hqq_explorer,
        "bitnet.ternary_explorer": bitnet.ternary_explorer,
        "distill.temperature_explorer": lambda: distill.temperature_explorer(
            6 * torch.randn(5, 10, generator=gen), images=torch.rand(5, 64), labels=torch.arange(5)),
        "prune.pruning_explorer": prune.pruning_explorer,
        "kernels.bytes_explorer": kernels.bytes_explorer,
        "capstone.recipe_explorer": recipe,
    }


def _walk(widget):
    yield widget
    for child in getattr(widget, "children", ()):
        yield from _walk(child)


def _state(box, returned) -> str:
    import ipywidgets as widgets

    texts = [w.value for w in _walk(box) if isinstance(w, (widgets.HTML, widgets.Label))]
    outputs = [repr(w.outputs) for w in _walk(box) if isinstance(w, widgets.Output)]
    return repr((texts, outputs, returned))


def _new_value(control):
    """A valid value different from the control's current one, using API common to ipywidgets 7 and 8."""
    import ipywidgets as widgets

    if isinstance(control, widgets.Checkbox):
        return "value", not control.value
    if isinstance(control, (widgets.Dropdown, widgets.ToggleButtons, widgets.RadioButtons)):
        return "index", (control.index + 1) % len(control.options) if control.options else None
    if isinstance(control, widgets.FloatRangeSlider):
        lo, hi = control.value
        return "value", (lo + (hi - lo) / 4, hi - (hi - lo) / 4)
    if isinstance(control, widgets.FloatLogSlider):  # one step up (down at the top)
        up = control.value * control.base ** control.step
        return "value", up if up <= control.base ** control.max else control.value / control.base ** control.step
    if isinstance(control, (widgets.IntSlider, widgets.FloatSlider)):  # one step up (down at the top)
        step = control.step
        return "value", control.value + step if control.value + step <= control.max else control.value - step
    if isinstance(control, widgets.FloatText):
        return "value", control.value * 3 + 0.5
    raise TypeError(f"no rule to change a {type(control).__name__}")


def drive(name: str) -> dict:
    """Build one widget, change each control (its observer updates the box); report what changed."""
    import matplotlib

    matplotlib.use("Agg")
    import ipywidgets as widgets

    box = _builders()[name]()
    controls = [w for w in _walk(box) if isinstance(w, widgets.ValueWidget)
                and not isinstance(w, (widgets.HTML, widgets.Label, widgets.Output))]
    report = {"ipywidgets": widgets.__version__, "module": widgets.__file__, "controls": {}}
    before = _state(box, box.update())
    for i, control in enumerate(controls):
        trait, value = _new_value(control)
        label = f"{i}:{type(control).__name__}:{control.description}"
        if value is None or control.disabled:  # e.g. the group-size menu while granularity is not per-group
            continue
        setattr(control, trait, value)  # the control's observer redraws, as in a notebook (no second update():
        # a control without an observer then shows as unchanged, and each builder runs once per change)
        after = _state(box, box.last if hasattr(box, "last") else box.update())
        report["controls"][label] = after != before
        before = after
    return report


def _drive_all() -> dict:
    """name -> drive(name), or {"error": traceback} for a builder that raised."""
    import traceback

    reports = {}
    for name in _builders():
        try:
            reports[name] = drive(name)
        except Exception:
            reports[name] = {"error": traceback.format_exc()}
    return reports


def _run(pythonpath: str | None) -> dict:
    """Drive every builder in one fresh interpreter (pythonpath first on PYTHONPATH)."""
    env = dict(os.environ, MPLBACKEND="Agg", HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (pythonpath, str(ROOT), env.get("PYTHONPATH")) if p)
    proc = subprocess.run([sys.executable, __file__], capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, f"the widget driver failed:\n{proc.stderr[-4000:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _ipywidgets_7() -> str:
    """A folder holding ipywidgets 7.7.5, installed once (cached between runs)."""
    if not all((CACHE_7 / name).is_dir() for name in ("ipywidgets-7.7.5.dist-info", "ipython_genutils")):
        proc = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(CACHE_7),
                               *IPYWIDGETS_7], capture_output=True, text=True)
        if proc.returncode != 0:
            pytest.skip(f"cannot install ipywidgets 7.7.5 (offline?): {proc.stderr[-500:]}")
    return str(CACHE_7)


@pytest.fixture(scope="session")
def reports():
    """major version -> the driver's reports, each computed once, on first use."""
    cache = {}

    def get(major: str) -> dict:
        if major not in cache:
            cache[major] = _run(_ipywidgets_7() if major == "7" else None)
        return cache[major]

    return get


#: Controls that may leave the output unchanged after one step from the builder's defaults, and why.
INSENSITIVE = {
    # HQQ at the default beta = 10 on this weight: shrink_lp lets none of the starting errors through (the readout
    # says 0%), so the solver is a least-squares fit of the zero point whatever p is, and one step of beta keeps it so.
    "hqq.hqq_explorer": {"p", "log10 beta"},
}

NAMES = ["welcome.rounding_explorer", "formats.format_explorer", "affine.affine_explorer",
         "granularity.granularity_explorer", "qat.observer_explorer", "nf4.codebook_explorer",
         "llm_int8.threshold_explorer", "gptq.gptq_explorer", "awq.awq_explorer", "hqq.hqq_explorer",
         "bitnet.ternary_explorer", "distill.temperature_explorer", "prune.pruning_explorer",
         "kernels.bytes_explorer", "capstone.recipe_explorer"]


def test_every_builder_is_listed():
    import ast

    built = {f"{p.stem}.{n.name}" for p in (ROOT / "course_lib" / "widgets").glob("*.py") if p.stem != "__init__"
             for n in ast.parse(p.read_text()).body
             if isinstance(n, ast.FunctionDef) and "import ipywidgets" in ast.get_source_segment(p.read_text(), n)}
    assert built == set(NAMES)


@pytest.mark.parametrize("major", ["7", "8"])
@pytest.mark.parametrize("name", NAMES)
def test_widget_updates(name, major, reports):
    report = reports(major)[name]
    assert "error" not in report, f"{name} under ipywidgets {major}:\n{report.get('error')}"
    assert report["ipywidgets"].startswith(major + "."), report
    assert report["controls"], f"{name}: no controls found"
    unchanged = [label for label, changed in report["controls"].items()
                 if not changed and label.split(":", 2)[2] not in INSENSITIVE.get(name, ())]
    assert not unchanged, f"{name} under ipywidgets {report['ipywidgets']}: changing {unchanged} changed no output"


if __name__ == "__main__":
    print(json.dumps(_drive_all()))
