"""The widgets hold no data or math of their own: they draw their synthetic data from course_lib.data and
compute with the topic modules (each widget's behaviour is tested with its topic; all of them under both
ipywidgets versions in tests/library/test_widgets_versions.py)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

from course_lib import bitnet
from course_lib.widgets import bitnet as bitnet_widget

WIDGETS = Path(__file__).resolve().parents[2] / "course_lib" / "widgets"
#: torch's random draws: a widget that calls one makes data of its own, not course_lib.data's.
RANDOM_CALLS = {"rand", "randn", "randint", "randperm", "normal", "Generator", "manual_seed"}


def _random_calls(source: str) -> list[str]:
    calls = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in RANDOM_CALLS:
            calls.append(f"line {node.lineno}: {ast.unparse(node.func)}")
    return calls


@pytest.mark.parametrize("path", sorted(WIDGETS.glob("*.py")), ids=lambda p: p.name)
def test_widgets_draw_no_random_data(path):
    calls = _random_calls(path.read_text(encoding="utf-8"))
    assert not calls, f"{path.name} draws random data ({calls}); add a generator to course_lib/data.py and call it"


def test_the_check_finds_a_random_draw():
    assert _random_calls("import torch\ng = torch.Generator().manual_seed(0)\nx = torch.randn(3, generator=g)\n")
    assert not _random_calls("from course_lib.data import weight_sample\nx = weight_sample('gaussian', 3)\n")


def test_ternary_stats_is_bitnets_absmean_quantizer_at_multiplier_1():
    w = bitnet_widget.sample("laplace")
    codes, gamma = bitnet.absmean_ternary(w)
    stats = bitnet_widget.ternary_stats(w, 1.0)
    assert stats["gamma"] == float(gamma)
    assert stats["zeros"] == float((codes == 0).float().mean())
    w_hat = gamma * codes.float()
    assert stats["rel_mse"] == pytest.approx(float((w - w_hat).pow(2).mean() / w.pow(2).mean()), rel=1e-6)
    wider = bitnet_widget.ternary_stats(w, 2.0)
    assert wider["gamma"] == pytest.approx(2 * float(gamma)) and wider["zeros"] > stats["zeros"]


def test_ternary_stats_on_an_all_zero_tensor_does_not_divide_by_zero():
    stats = bitnet_widget.ternary_stats(torch.zeros(8), 1.0)
    assert stats["gamma"] == pytest.approx(bitnet.SCALE_EPS) and stats["zeros"] == 1.0
