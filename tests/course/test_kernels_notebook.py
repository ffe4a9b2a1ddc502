"""Notebook 13's plots and widget (course_lib.plots.kernels, course_lib.widgets.kernels)."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.figure  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from course_lib.kernels import gemv_bytes  # noqa: E402
from course_lib.plots import kernels as plots  # noqa: E402
from course_lib.widgets import kernels as widgets  # noqa: E402

BW, PEAK = 2.99e12, 989e12


def test_format_bytes_closed_form():
    n = k = 4096
    assert plots.format_bytes("fp16", n, k) == n * k * 2 + (n + k) * 2
    assert plots.format_bytes("NF4 (fp32 absmax per 64)", n, k) == n * k // 2 + n * k // 64 * 4 + (n + k) * 2
    assert plots.format_bytes("int8 (fp32 scale per row)", n, k, batch=3) == n * k + n * 4 + 3 * (n + k) * 2
    assert plots.format_bytes("ternary (2-bit packed)", n, k) == n * k // 4 + (n + k) * 2
    assert plots.format_bytes((4, 128, 16), n, k) == gemv_bytes(n, k, 1, 4, 128, 16)


def test_time_floor_memory_then_compute_bound():
    small = plots.time_floor("fp16", 8192, 8192, 1, BW, PEAK)
    assert small["bound"] == "memory" and small["floor_s"] == pytest.approx(small["bytes"] / BW)
    assert small["intensity"] == pytest.approx(2 * 8192 * 8192 / small["bytes"])
    big = plots.time_floor("ternary (2-bit packed)", 8192, 8192, 4096, BW, PEAK)
    assert big["bound"] == "compute" and big["floor_s"] == pytest.approx(2 * 4096 * 8192 * 8192 / PEAK)
    with pytest.raises(ValueError, match="bandwidth"):
        plots.time_floor("fp16", 8, 8, 1, 0.0, PEAK)


def test_plot_roofline_points_and_figure():
    batches = (1, 4, 64)
    fig = plots.plot_roofline(8192, 8192, BW, PEAK, batches=batches)
    assert isinstance(fig, matplotlib.figure.Figure)
    assert set(fig.points) == set(plots.FORMATS)
    fp16, nf4 = fig.points["fp16"], fig.points["NF4 (fp32 absmax per 64)"]
    assert [len(fp16), len(nf4)] == [3, 3]
    speedup = fp16[0]["floor_s"] / nf4[0]["floor_s"]
    assert 3.4 < speedup < 4.0  # 4.5 bits per weight with the fp32 absmax
    # more batch: more intensity, never less time
    for pts in fig.points.values():
        assert all(a["intensity"] < b["intensity"] and a["floor_s"] <= b["floor_s"] for a, b in zip(pts, pts[1:]))
    plt.close("all")


def test_plot_kernel_times():
    fig = plots.plot_kernel_times({"a": 2e-3, "b": 5e-4}, floor_s=1e-4, title="t")
    assert isinstance(fig, matplotlib.figure.Figure)
    assert fig.axes[0].get_xlabel().startswith("time (ms")
    fig = plots.plot_kernel_times({"a": 20e-6})
    assert fig.axes[0].get_xlabel().startswith("time (us")
    with pytest.raises(ValueError):
        plots.plot_kernel_times({})
    plt.close("all")


def test_floor_vs_fp16():
    s = widgets.floor_vs_fp16(4096, 4096, 1, 16, BW, PEAK, scale_bits=0)
    assert s["bytes"] == s["fp16_bytes"] and s["speedup_bound"] == pytest.approx(1.0)
    s = widgets.floor_vs_fp16(4096, 4096, 1, 4, BW, PEAK, group_size=64, scale_bits=32)
    assert s["bytes"] == gemv_bytes(4096, 4096, 1, 4, 64, 32)
    assert s["speedup_bound"] == pytest.approx(s["fp16_bytes"] / s["bytes"])


def test_widget_updates_without_a_browser():
    box = widgets.bytes_explorer(8192, 8192, bandwidth=BW, peak_flops=PEAK)
    first = box.last
    assert 3.4 < first["speedup_bound"] < 4.0 and first["bound"] == "memory"
    assert "bytes moved" in box.readout.value
    box.scales.value = False  # no scales: exactly 4 bits per weight
    no_scales = box.last
    assert no_scales["bytes"] < first["bytes"] and no_scales["speedup_bound"] > first["speedup_bound"]
    box.bits.value = 2.0
    two_bits = box.last
    assert two_bits["bytes"] < no_scales["bytes"]
    box.batch.value = 64
    assert box.last["floor_s"] > two_bits["floor_s"] and box.last["bound"] == "compute"
    text = box.readout.value
    box.bits.value = 16.0
    again = box.update()
    assert math.isclose(again["speedup_bound"], 1.0) and box.readout.value != text
    plt.close("all")


def test_cuda_core_floor_and_ceilings_plot():
    n = k = 8192
    rate = 132 * 128 * 1.98e9
    assert plots.cuda_core_floor(n, k, 1, rate) == pytest.approx(n * k * 1.5 / rate)
    assert plots.cuda_core_floor(n, k, 16, rate, 2.0, 1.0) == pytest.approx(n * k * 18 / rate)
    with pytest.raises(ValueError, match="issue_rate"):
        plots.cuda_core_floor(n, k, 1, 0.0)
    fig = plots.plot_gemv_ceilings(n, k, BW, PEAK, rate, {"ideal": (1.0, 0.5)},
                                   measured={"a kernel": {1: 20e-6, 16: 150e-6}}, batches=(1, 4, 16, 64))
    c = fig.ceilings
    assert set(c) == {1, 4, 16, 64}
    # memory-bound at batch 1, CUDA-core-bound before the tensor cores' ridge
    assert c[1]["memory_s"] > c[1]["ideal"] and c[64]["ideal"] > c[64]["memory_s"] > c[64]["tensor_core_s"]
    assert all(c[a]["ideal"] < c[b]["ideal"] for a, b in ((1, 4), (4, 16), (16, 64)))
    plt.close("all")


def test_kv_magnitudes_find_an_outlier_channel():
    import torch

    gen = torch.Generator().manual_seed(0)
    keys, values = torch.randn(2, 64, 16, generator=gen), torch.randn(2, 64, 16, generator=gen)
    keys[1, :, 3] = 20.0  # one channel of the second head, large at every token
    ratios = plots.magnitude_ratios(keys)
    assert ratios["channel"] > 5 and ratios["token"] < 2
    assert plots.magnitude_ratios(keys * -2.0) == pytest.approx(ratios)  # magnitudes only, scale-free
    fig = plots.plot_kv_magnitudes(keys, values, title="t")
    assert isinstance(fig, matplotlib.figure.Figure) and len(fig.axes) == 4
    assert fig.ratios["keys"] == ratios and fig.ratios["values"]["channel"] < 2
    with pytest.raises(ValueError, match="x"):
        plots.magnitude_ratios(torch.zeros(64, 16))
    plt.close("all")
