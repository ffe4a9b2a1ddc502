"""Notebook 13: low-bit kernels, each in three forms side by side.

=====================  ===========================  ==========================  ==========================
operation              PyTorch reference (any dev)  C++ extension (CPU)         CUDA extension (GPU)
=====================  ===========================  ==========================  ==========================
row-wise int8 quant    ``quantize_rows_int8``       csrc/lowbit_cpu.cpp          csrc/*.cu (launch.h)
NF4 / int4 dequant     ``dequantize_nf4`` / int4    same names                   same names
W4A16 GEMV (B <= 16)   ``gemv_nf4`` / ``gemv_int4``  same names                   NF4 v1 ... v9, int4 v4 and v6
ternary GEMV           ``gemv_ternary``             additions only               additions only
=====================  ===========================  ==========================  ==========================

Every public function takes ``backend``: ``"torch"`` (the reference, built from the topic modules
``course_lib.nf4``, ``course_lib.granularity`` and ``course_lib.bitnet``), ``"cpp"``, ``"cuda"``, or
``"auto"`` (the default: the extension for the tensors' device when it builds and the shape is one the
kernel handles, else the reference). The compiled forms are torch custom ops, ``torch.ops.course_lib.*``
(``ops.py``), so the public functions also run inside CUDA graphs and ``torch.compile(fullgraph=True)``.
``build.py`` compiles the extensions on first use (about a minute; a message says so) and says which GPU
architectures run which kernel (sm_75, Colab's T4, to sm_90); when a build is impossible (no compiler, a
CPU-only torch, no GPU), ``"auto"`` prints one message naming the reason and uses the reference; asking for
``"cpp"`` or ``"cuda"`` explicitly raises.

Files: ``build.py`` (building, loading, architectures), ``ops.py`` (the public functions and the ops' schemas),
``nf4_linear.py`` (``NF4Linear``, a linear layer with NF4 weights whose forward pass runs these functions, and
``replace_linears_nf4``, which swaps a model's linear layers for it: 4-bit inference end to end),
``csrc/`` (``lowbit_cpu.cpp``; the CUDA kernels, one file per family, with ``launch.h`` their host interface and
``bindings.cpp`` the torch side). The benchmark-only experiments (v8's sweep configurations, the bulk-copy
kernel, the read-floor probe) are a separate extension in ``benchmarks/csrc/``.

Layouts (identical in all three forms):

- int8 rows: ``q[M, K]`` int8 and ``absmax[M]`` float32, ``q = round(x * (127 / absmax))`` (0 for an
  all-zero row), ``x ~ q * absmax / 127`` (LLM.int8()'s vector-wise quantization).
- NF4: bitsandbytes' layout, as ``course_lib.nf4.quantize_nf4`` makes it: the flattened weight,
  two codes per byte (high nibble first), one float32 absmax per ``blocksize`` consecutive weights.
- int4: ``packed[N, K/2]`` (high nibble first), ``scale[N, K/G]`` float32, ``zero[N, K/G]`` uint8,
  ``w = (q - zero) * scale`` (``course_lib.granularity``'s RTN quantizer, packed by ``pack_int4``).
- ternary: ``course_lib.bitnet.pack_ternary``'s layout, ``[N, K/4]`` uint8, per-tensor scale.
"""

from .build import (BACKENDS, CSRC, SUPPORTED_CUDA_ARCHS, backend_status, build_c_kernel, cache_dir, call_rows_int8_c,
                    check_cuda_sources, cuda_arch, load_extension)
from .ops import (dequantize_int4, dequantize_nf4, dequantize_rows_int8, gemv_bytes, gemv_int4, gemv_nf4,
                  gemv_ternary, nf4_byte_table, pack_int4, quantize_rows_int8)
from .nf4_linear import GEMV_MAX_ROWS, NF4Linear, replace_linears_nf4
from . import build, nf4_linear, ops  # noqa: E402  (the modules themselves, e.g. for build._modules in tests)

__all__ = ["BACKENDS", "CSRC", "SUPPORTED_CUDA_ARCHS", "backend_status", "build_c_kernel", "cache_dir",
           "call_rows_int8_c", "check_cuda_sources", "cuda_arch", "load_extension", *ops.__all__, *nf4_linear.__all__]
