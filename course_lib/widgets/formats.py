"""Notebook 01 widget: pick a format, type or slide a value, see its bits and its rounding error."""

from __future__ import annotations

import html
import math

import torch

from .. import formats as F
from ..plots.formats import FIELD_COLOURS

#: the formats the explorer offers (name shown -> format)
EXPLORER_FORMATS = {f.name: f for f in (F.FP32, F.BF16, F.FP16, F.FP8_E5M2, F.FP8_E4M3, F.FP4_E2M1)}


def describe(value: float, fmt) -> dict:
    """Everything the explorer shows about one number stored in ``fmt``.

    Returns:
        dict with ``value`` (the input), ``stored`` (the nearest value of fmt), ``sign``, ``exponent``,
        ``mantissa`` (the fields as ints), ``bits`` (text "s eee mmm"), ``code`` (the pattern as an int),
        ``kind`` ("zero", "subnormal", "normal", "inf", "nan"), ``note`` (overflow / underflow remark),
        ``abs_error``, ``rel_error`` (None where undefined) and ``ulp`` (None for NaN/Inf input).
    """
    fmt = F.get_format(fmt)
    value = float(value)
    if math.isnan(value) and fmt.specials == "none":
        raise ValueError(f"value NaN cannot be stored in {fmt.name}: it has no NaN code")
    x = torch.tensor([value], dtype=torch.float64)
    stored = F.round_to_format(x, fmt).item()
    s, e, m = (int(t) for t in F.decompose(x, fmt))
    code = int(F.encode(x, fmt))
    if math.isnan(stored):
        kind = "nan"
    elif math.isinf(stored):
        kind = "inf"
    elif stored == 0.0:
        kind = "zero"
    elif e == 0:
        kind = "subnormal"
    else:
        kind = "normal"
    note = ""
    if math.isfinite(value) and abs(value) > fmt.max_value:
        note = {"inf": f"overflow: above the largest value {fmt.max_value:g}, rounds to Inf",
                "saturate": f"overflow: saturated to the largest value {fmt.max_value:g}",
                "nan": f"overflow: above the largest value {fmt.max_value:g}, becomes NaN"}[fmt.overflow]
    elif math.isinf(value) and kind != "inf":
        note = f"{fmt.name} has no Inf: " + ("saturated to the largest value" if kind != "nan" else "becomes NaN")
    elif value != 0.0 and stored == 0.0:
        note = f"underflow: below half the smallest subnormal {fmt.min_subnormal:g}, rounds to zero"
    elif kind == "subnormal":
        note = "subnormal: exponent field 0, no implicit leading 1, fixed spacing 2^(emin - M)"
    finite_pair = math.isfinite(value) and math.isfinite(stored)
    abs_error = abs(stored - value) if finite_pair else None
    rel_error = abs_error / abs(value) if finite_pair and value != 0.0 else None
    step = F.ulp(x, fmt).item() if math.isfinite(value) else None
    return {
        "format": fmt.name, "value": value, "stored": stored, "sign": s, "exponent": e, "mantissa": m,
        "bits": f"{s} {e:0{fmt.exponent_bits}b} {m:0{fmt.mantissa_bits}b}", "code": code, "kind": kind,
        "note": note, "abs_error": abs_error, "rel_error": rel_error, "ulp": step,
    }


def _formula(d: dict, fmt: F.FloatFormat) -> str:
    M, b = fmt.mantissa_bits, fmt.bias
    sign = "-" if d["sign"] else "+"
    if d["kind"] in ("nan", "inf"):
        return f"exponent all ones: {'NaN' if d['kind'] == 'nan' else sign + 'Inf'}"
    if d["exponent"] == 0:
        return (f"{sign} 2<sup>1-{b}</sup> &times; {d['mantissa']}/2<sup>{M}</sup> "
                f"= {sign}{d['mantissa'] / 2**M:g} &times; 2<sup>{1 - b}</sup>")
    return (f"{sign} 2<sup>{d['exponent']}-{b}</sup> &times; (1 + {d['mantissa']}/2<sup>{M}</sup>) "
            f"= {sign}2<sup>{d['exponent'] - b}</sup> &times; {1 + d['mantissa'] / 2**M:g}")


def bits_html(value: float, fmt) -> str:
    """HTML: the coloured bits of ``value`` in ``fmt``, the formula, the stored value and the error."""
    fmt = F.get_format(fmt)
    d = describe(value, fmt)
    s, e, m = d["bits"].split(" ")

    def span(text, field):
        return f'<span style="color:white;background:{FIELD_COLOURS[field]};padding:2px 4px;">{text}</span>'

    width = (fmt.total_bits + 3) // 4
    lines = [
        f'<div style="font-family:monospace;font-size:20px;letter-spacing:2px;">'
        f'{span(s, "sign")}{span(e, "exponent")}{span(m, "mantissa")}</div>',
        f"<div>{fmt.name}: code 0x{d['code']:0{width}X} &nbsp; sign {d['sign']} | exponent {d['exponent']} "
        f"| mantissa {d['mantissa']} &nbsp; ({d['kind']})</div>",
        f"<div>{_formula(d, fmt)}</div>",
        f"<div>typed <b>{d['value']!r}</b> &rarr; stored <b>{d['stored']!r}</b></div>",
    ]
    if d["abs_error"] is not None:
        rel = f", relative {d['rel_error']:.3g}" if d["rel_error"] is not None else ""
        lines.append(f"<div>rounding error {d['abs_error']:.4g}{rel}; spacing here (ulp) {d['ulp']:.4g}, "
                     f"so the error is at most {d['ulp'] / 2:.4g}</div>")
    if d["note"]:
        lines.append(f'<div style="color:#b35900;">{html.escape(d["note"])}</div>')
    return "\n".join(lines)


def format_explorer(value: float = 0.1, fmt: str = "fp8_e4m3"):
    """Dropdown (format) + text box (value) + log slider (|value|) -> the bits, the stored value, the error.

    Returns the widget box (display it). ``box.update()`` redraws; ``box.format_dropdown``,
    ``box.value_text``, ``box.slider`` and ``box.html`` are its parts (tests set them directly).
    """
    import ipywidgets as widgets

    fmt = F.get_format(fmt)
    dropdown = widgets.Dropdown(options=list(EXPLORER_FORMATS), value=fmt.name, description="format")
    text = widgets.FloatText(value=value, description="value")
    slider = widgets.FloatLogSlider(value=1.0, base=2, min=-10, max=10, step=1 / 64, description="|value|",
                                    readout_format=".4g")
    out = widgets.HTML()
    state = {"busy": False}

    def set_slider_range():
        f = EXPLORER_FORMATS[dropdown.value]
        lo, hi = math.log2(f.min_subnormal) - 1, math.log2(f.max_value) + 1
        # order matters: never let min exceed max on the way
        if lo > slider.max:
            slider.max, slider.min = hi, lo
        else:
            slider.min, slider.max = lo, hi

    def sync_slider_to_text():
        v = abs(text.value)
        if v > 0 and math.isfinite(v):
            slider.value = min(max(v, 2.0**slider.min), 2.0**slider.max)

    def update(change=None):
        out.value = bits_html(text.value, EXPLORER_FORMATS[dropdown.value])

    def on_format(change):
        state["busy"] = True
        try:
            set_slider_range()
            sync_slider_to_text()
        finally:
            state["busy"] = False
        update()

    def on_text(change):
        if not state["busy"]:
            state["busy"] = True
            try:
                sync_slider_to_text()
            finally:
                state["busy"] = False
        update()

    def on_slider(change):
        if state["busy"]:
            return
        state["busy"] = True
        try:
            text.value = math.copysign(slider.value, text.value if text.value != 0 else 1.0)
        finally:
            state["busy"] = False
        update()

    set_slider_range()
    sync_slider_to_text()
    dropdown.observe(on_format, names="value")
    text.observe(on_text, names="value")
    slider.observe(on_slider, names="value")
    update()
    box = widgets.VBox([widgets.HBox([dropdown, text]), slider, out])
    box.update = update
    box.format_dropdown = dropdown
    box.value_text = text
    box.slider = slider
    box.html = out
    return box
