"""Notebook 13 plots: the memory-bound argument (bytes, roofline, time floors) and measured kernel times."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt

from ..kernels import gemv_bytes

#: Weight formats of a GEMV: name -> (bits per weight, weights per scale or "row" or None, bits per scale).
#: int8 has one float32 scale per output row (``group_size = k``); NF4 one float32 absmax per 64 weights
#: (bitsandbytes' layout); ternary is 2-bit packed with one per-tensor scale (negligible).
FORMATS: dict[str, tuple[float, int | str | None, int]] = {
    "fp16": (16, None, 0),
    "int8 (fp32 scale per row)": (8, "row", 32),
    "NF4 (fp32 absmax per 64)": (4, 64, 32),
    "ternary (2-bit packed)": (2, None, 0),
}


def format_bytes(fmt: str | tuple, n: int, k: int, batch: int = 1, act_bytes: int = 2) -> int:
    """``course_lib.kernels.gemv_bytes`` for a format of ``FORMATS`` (a name or a (bits, group, scale_bits) tuple)."""
    bits, group, scale_bits = FORMATS[fmt] if isinstance(fmt, str) else fmt
    group = k if group == "row" else group
    return gemv_bytes(n, k, batch, weight_bits=bits, group_size=group, scale_bits=scale_bits, act_bytes=act_bytes)


def time_floor(fmt: str | tuple, n: int, k: int, batch: int, bandwidth: float, peak_flops: float) -> dict:
    """The roofline's lower bound on a GEMV's time: ``max(bytes / bandwidth, flops / peak_flops)``.

    Args:
        bandwidth: memory bandwidth in bytes/s; peak_flops: FLOP/s of the math units.

    Returns:
        dict: bytes, flops (``2 * batch * n * k``), intensity (flops per byte), memory_s, compute_s,
        floor_s and bound ("memory" or "compute").
    """
    if not bandwidth > 0 or not peak_flops > 0:
        raise ValueError(f"bandwidth and peak_flops must be positive, got {bandwidth!r} and {peak_flops!r}")
    nbytes = format_bytes(fmt, n, k, batch)
    flops = 2 * batch * n * k
    memory_s, compute_s = nbytes / bandwidth, flops / peak_flops
    return {"bytes": nbytes, "flops": flops, "intensity": flops / nbytes, "memory_s": memory_s,
            "compute_s": compute_s, "floor_s": max(memory_s, compute_s),
            "bound": "memory" if memory_s >= compute_s else "compute"}


def plot_roofline(n: int, k: int, bandwidth: float, peak_flops: float, batches: Sequence[int] = (1, 2, 4, 8, 16, 32, 64),
                  formats: Sequence[str] = tuple(FORMATS), title: str = "", figsize=(12, 4.2)):
    """Left: the roofline (attainable FLOP/s vs arithmetic intensity) with each format's GEMV at every batch.
    Right: each format's time floor vs batch size.

    Returns:
        The Figure; ``fig.points[fmt]`` holds ``time_floor``'s dict for every batch (in ``batches`` order).
    """
    fig, (ax_roof, ax_time) = plt.subplots(1, 2, figsize=figsize)
    points = {fmt: [time_floor(fmt, n, k, b, bandwidth, peak_flops) for b in batches] for fmt in formats}
    ridge = peak_flops / bandwidth
    lo = min(p["intensity"] for pts in points.values() for p in pts) / 2
    hi = max(max(p["intensity"] for pts in points.values() for p in pts) * 2, ridge * 4)
    xs = [lo * (hi / lo) ** (i / 200) for i in range(201)]
    ax_roof.plot(xs, [min(peak_flops, x * bandwidth) / 1e12 for x in xs], color="black", lw=1.5)
    ax_roof.axvline(ridge, color="grey", ls=":", lw=1)
    ax_roof.text(ridge, peak_flops / 1e12 * 0.6, f" ridge {ridge:.0f} FLOP/B", color="grey", fontsize=8)
    for fmt, pts in points.items():
        line, = ax_roof.plot([p["intensity"] for p in pts], [p["flops"] / p["floor_s"] / 1e12 for p in pts],
                             marker="o", ms=4, label=fmt)
        for b, p in zip(batches, pts):
            if b in (batches[0], batches[-1]):
                ax_roof.annotate(f"B={b}", (p["intensity"], p["flops"] / p["floor_s"] / 1e12), fontsize=7,
                                 color=line.get_color(), xytext=(3, -10), textcoords="offset points")
        ax_time.plot(batches, [p["floor_s"] * 1e6 for p in pts], marker="o", ms=4, label=fmt, color=line.get_color())
    ax_roof.set(xscale="log", yscale="log", xlabel="arithmetic intensity (FLOP per byte moved)",
                ylabel="attainable TFLOP/s", title="roofline: min(peak, intensity x bandwidth)")
    ax_roof.legend(fontsize=8, loc="lower right")
    ax_time.plot(batches, [2 * b * n * k / peak_flops * 1e6 for b in batches], color="black", ls="--", lw=1,
                 label="compute floor")
    ax_time.set(xscale="log", yscale="log", xlabel="batch (activation rows)", ylabel="time floor (us)",
                title=f"GEMV {n}x{k}: max(bytes / bandwidth, FLOPs / peak)")
    ax_time.set_xticks(list(batches), [str(b) for b in batches])
    ax_time.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.points = points
    return fig


def plot_kernel_times(times_s: Mapping[str, float], floor_s: float | None = None, title: str = "",
                      ax=None, figsize=(8, 3.2)):
    """Horizontal bars of measured times (seconds in, microseconds or milliseconds drawn), with the floor.

    Returns:
        The Figure.
    """
    if not times_s:
        raise ValueError("times_s must not be empty")
    if ax is None:
        fig, ax = plt.subplots(figsize=figsize)
    else:
        fig = ax.figure
    values = list(times_s.values()) + ([floor_s] if floor_s else [])
    unit, factor = ("ms", 1e3) if max(values) >= 1e-3 else ("us", 1e6)
    names = list(times_s)
    ax.barh(range(len(names)), [times_s[name] * factor for name in names], color="tab:blue")
    for i, name in enumerate(names):
        ax.text(times_s[name] * factor, i, f" {times_s[name] * factor:.3g}", va="center", fontsize=8)
    ax.set_yticks(range(len(names)), names)
    ax.invert_yaxis()
    if floor_s:
        ax.axvline(floor_s * factor, color="tab:red", ls="--", lw=1, label=f"bandwidth floor {floor_s * factor:.3g} {unit}")
        ax.legend(fontsize=8, loc="lower right")
    ax.set_xscale("log")
    ax.set_xlabel(f"time ({unit}, log scale)")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def cuda_core_floor(n: int, k: int, batch: int, issue_rate: float, decode_per_weight: float = 1.0,
                    per_weight_per_row: float = 0.5) -> float:
    """The instruction floor of a GEMV kernel that decodes and multiplies on CUDA cores (no tensor cores).

    Every weight is decoded once (``decode_per_weight`` instructions), then takes part in one multiply-add per
    activation row (``per_weight_per_row`` instructions: 0.5 when one ``HFMA2`` handles two weights). The GPU
    issues at most ``issue_rate`` thread-instructions per second (SMs x 128 lanes x clock on an H100).

    Returns:
        seconds: ``n * k * (decode_per_weight + batch * per_weight_per_row) / issue_rate``.
    """
    if not issue_rate > 0:
        raise ValueError(f"issue_rate must be positive, got {issue_rate!r}")
    if decode_per_weight < 0 or per_weight_per_row < 0:
        raise ValueError("decode_per_weight and per_weight_per_row must be >= 0")
    return n * k * (decode_per_weight + batch * per_weight_per_row) / issue_rate


def plot_gemv_ceilings(n: int, k: int, bandwidth: float, peak_flops: float, issue_rate: float,
                       counts: Mapping[str, tuple[float, float]], measured: Mapping[str, Mapping[int, float]] | None = None,
                       batches: Sequence[int] = (1, 2, 4, 8, 16, 32, 64), fmt: str = "NF4 (fp32 absmax per 64)",
                       title: str = "", figsize=(7.5, 4.2)):
    """Time against batch for one layer: the bandwidth floor of ``fmt``, the tensor-core floor (FLOPs / peak),
    one CUDA-core instruction floor per entry of ``counts`` (label -> (decode_per_weight, per_weight_per_row)),
    and measured times as markers (label -> {batch: seconds}).

    Returns:
        The Figure; ``fig.ceilings[batch]`` holds memory_s, tensor_core_s and one entry per label of ``counts``.
    """
    fig, ax = plt.subplots(figsize=figsize)
    ceilings = {}
    for b in batches:
        floor = time_floor(fmt, n, k, b, bandwidth, peak_flops)
        ceilings[b] = {"memory_s": floor["memory_s"], "tensor_core_s": floor["compute_s"],
                       **{label: cuda_core_floor(n, k, b, issue_rate, *c) for label, c in counts.items()}}
    ax.plot(batches, [ceilings[b]["memory_s"] * 1e6 for b in batches], color="tab:red", lw=2,
            label=f"bandwidth floor ({fmt.split(' ')[0]} bytes)")
    ax.plot(batches, [ceilings[b]["tensor_core_s"] * 1e6 for b in batches], color="black", ls="--", lw=1,
            label="tensor-core floor (FLOPs / peak)")
    for style, label in zip(("-.", ":", (0, (5, 1))), counts):
        ax.plot(batches, [ceilings[b][label] * 1e6 for b in batches], color="tab:purple", ls=style, lw=1.5,
                label=f"CUDA-core floor, {label}")
    for marker, (label, times) in zip("osD^v<>", (measured or {}).items()):
        xs = [b for b in batches if b in times]
        ax.plot(xs, [times[b] * 1e6 for b in xs], marker=marker, ls="", ms=7, label=f"measured: {label}")
    ax.set(xscale="log", yscale="log", xlabel="batch (activation rows)", ylabel="time (us)",
           title=title or f"GEMV {n}x{k}: which ceiling binds")
    ax.set_xticks(list(batches), [str(b) for b in batches])
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.ceilings = ceilings
    return fig


def _abs_by_token(x):
    """|x| of a [heads, tokens, head_dim] tensor as [tokens, channels] (channels = heads x head_dim), on the CPU."""
    return x.detach().float().abs().transpose(0, 1).reshape(x.shape[1], -1).cpu()


def magnitude_ratios(x) -> dict:
    """How uneven a cache tensor's magnitudes are along each axis.

    Args:
        x: ``[heads, tokens, head_dim]`` keys or values of one block for one sequence (channels = heads x head_dim).

    Returns:
        dict: ``channel`` = largest over channels of ``max |x|`` over tokens, divided by its median over channels
        (a few outlier channels make it large); ``token`` = the same with tokens and channels swapped.
    """
    if getattr(x, "dim", lambda: 0)() != 3 or x.numel() == 0:
        raise ValueError(f"x must be a non-empty [heads, tokens, head_dim] tensor, got {getattr(x, 'shape', type(x))}")
    flat = _abs_by_token(x)
    per_channel, per_token = flat.amax(dim=0), flat.amax(dim=1)
    return {"channel": float(per_channel.max() / per_channel.median().clamp_min(1e-30)),
            "token": float(per_token.max() / per_token.median().clamp_min(1e-30))}


def plot_kv_magnitudes(keys, values, title: str = "", figsize=(12, 5.5)):
    """Where the large magnitudes of a KV cache sit: per channel (left) and per token (right), keys above, values below.

    Args:
        keys, values: ``[heads, tokens, head_dim]`` of one block for one sequence.
        title: the figure's title.

    Returns:
        The Figure; ``fig.ratios = {"keys": magnitude_ratios(keys), "values": magnitude_ratios(values)}``.
    """
    fig, axes = plt.subplots(2, 2, figsize=figsize)
    ratios = {}
    for row, (name, x) in enumerate((("keys", keys), ("values", values))):
        ratios[name] = magnitude_ratios(x)
        heads, tokens, head_dim = x.shape
        flat = _abs_by_token(x)
        ax_c, ax_t = axes[row]
        ax_c.bar(range(flat.shape[1]), flat.amax(dim=0).numpy(), width=1.0, color="C0" if row == 0 else "C1")
        for h in range(1, heads):
            ax_c.axvline(h * head_dim - 0.5, color="0.6", lw=0.8, ls=":")
        ax_c.set_title(f"{name}: max |x| of each channel over {tokens} tokens "
                       f"(max/median {ratios[name]['channel']:.1f})", fontsize=9)
        ax_c.set_xlabel(f"channel ({heads} heads x {head_dim})")
        ax_t.plot(flat.amax(dim=1).numpy(), color="C0" if row == 0 else "C1", lw=1)
        ax_t.set_title(f"{name}: max |x| of each token over {flat.shape[1]} channels "
                       f"(max/median {ratios[name]['token']:.1f})", fontsize=9)
        ax_t.set_xlabel("token")
        ax_t.set_ylim(bottom=0)
    fig.ratios = ratios
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
