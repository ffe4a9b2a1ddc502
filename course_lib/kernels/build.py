"""Building and loading the compiled forms of ``course_lib.kernels``.

The C++ (CPU) and CUDA extensions are compiled on first use with ``torch.utils.cpp_extension.load`` (about a
minute; a message says so) into a cache folder (``COURSE_KERNELS_CACHE``, default
``~/.cache/course_lib/kernels``) and load in milliseconds later. Loading one registers its implementations of
the ``course_lib::`` custom ops (``ops.py`` defines them). When a build is impossible (no compiler, a CPU-only
torch, no GPU), ``backend_status`` says why.

CUDA architectures: the extension is compiled for ``TORCH_CUDA_ARCH_LIST`` when it is set (e.g. ``"7.5+PTX"``),
else for the GPUs present. Every kernel builds for sm_75 (Turing: Colab's T4) through sm_90 (Hopper); what
needs a newer GPU is guarded in the sources and chosen at run time (``cuda_arch``):

===========================  ==========================================  ======================================
GPU (compute capability)     examples                                    what runs
===========================  ==========================================  ======================================
sm_75                        T4 (Colab), RTX 20xx                        every kernel; v7 and v10 (tensor cores)
                                                                         run what the default runs without them
sm_80, sm_86, sm_89          A100, A10/RTX 30xx, L4/RTX 40xx             every kernel, v7 and v10 on tensor cores
sm_90                        H100, H200                                  all of the above, and v8/v9 overlap
                                                                         the previous kernel's tail
                                                                         (programmatic dependent launch)
===========================  ==========================================  ======================================

``check_cuda_sources`` compiles the kernel files with nvcc alone, for any list of architectures, on a machine
without a GPU (the kernel files include no torch header; ``bindings.cpp`` holds the torch side).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from ..validation import check_tensor

BACKENDS = ("auto", "torch", "cpp", "cuda")
CSRC = Path(__file__).resolve().parent / "csrc"
CUDA_KERNEL_SOURCES = ("arch.cu", "quantize.cu", "gemv_4bit.cu", "gemv_nf4_v8.cu", "gemv_nf4_v10.cu", "gemv_ternary.cu")
_SOURCES = {"cpp": ("lowbit_cpu.cpp",), "cuda": ("bindings.cpp", *CUDA_KERNEL_SOURCES)}
_HEADERS = ("nf4_code.h", "launch.h", "common.cuh", "gemv_nf4_v8.cuh", "gemv_nf4_v10.cuh")
# The architectures a learner's GPU may have, oldest first: Turing (T4), Ampere (A100, A10/RTX 30xx),
# Ada (L4, RTX 40xx), Hopper (H100, H200).
SUPPORTED_CUDA_ARCHS = ("75", "80", "86", "89", "90")
_CUDA_OPT_FLAGS = ("-O3", "-lineinfo")
_modules: dict[str, str] = {}
_failures: dict[str, str] = {}
_announced: set[str] = set()


def cache_dir() -> Path:
    """Where compiled extensions are kept (``COURSE_KERNELS_CACHE`` or ``~/.cache/course_lib/kernels``)."""
    return Path(os.environ.get("COURSE_KERNELS_CACHE", Path.home() / ".cache" / "course_lib" / "kernels"))


def _why_not(kind: str) -> str | None:
    """Why the ``kind`` extension cannot be built here (None when it can be tried)."""
    from torch.utils import cpp_extension

    try:
        cpp_extension.verify_ninja_availability()
    except RuntimeError:
        return "ninja is not installed (pip install ninja)"
    if kind == "cuda":
        if torch.version.cuda is None:
            return "this torch build has no CUDA support"
        if not torch.cuda.is_available():
            return "no CUDA GPU is visible"
        if cpp_extension.CUDA_HOME is None:
            return "the CUDA toolkit (nvcc) was not found; set CUDA_HOME"
    return None


def _prefer_own_ninja() -> None:
    """Put this Python's bin/ first on PATH, so every build uses the same ninja (pip's, installed with the
    course): another ninja version on PATH writes a different build file and forces a full rebuild."""
    import sys

    bindir = os.path.dirname(sys.executable)
    path = os.environ.get("PATH", "")
    if not path.startswith(bindir + os.pathsep) and os.path.exists(os.path.join(bindir, "ninja")):
        os.environ["PATH"] = bindir + os.pathsep + path


def _torch_nvcc_flags() -> list[str]:
    """The flags torch's extension builds give nvcc: half/bf16 operator macros, relaxed constexpr, C++20."""
    from torch.utils import cpp_extension

    return [*cpp_extension.COMMON_NVCC_FLAGS, "-std=c++20"]


def load_extension(kind: str, verbose: bool = False) -> str:
    """Build (first time) or load (later) the ``"cpp"`` or ``"cuda"`` extension, which registers its op kernels.

    Returns:
        The path of the loaded library.

    Raises:
        RuntimeError: naming the reason when the extension cannot be built or loaded here.
    """
    if kind not in ("cpp", "cuda"):
        raise ValueError(f"kind must be 'cpp' or 'cuda', got {kind!r}")
    if kind in _modules:
        return _modules[kind]
    if kind in _failures:
        raise RuntimeError(_failures[kind])
    reason = _why_not(kind)
    if reason is None:
        from torch.utils import cpp_extension

        _prefer_own_ninja()
        sources = [CSRC / name for name in _SOURCES[kind]]
        # extra nvcc flags for kernel work, e.g. "-Xptxas=-v" for the compiler's register report
        extra = os.environ.get("COURSE_KERNELS_EXTRA_CUDA_FLAGS", "").split() if kind == "cuda" else []
        # the architecture list is part of the key: a "7.5+PTX" build must not be reused for "9.0"
        archs = os.environ.get("TORCH_CUDA_ARCH_LIST", "") if kind == "cuda" else ""
        digest = hashlib.sha1(b"".join(p.read_bytes() for p in (*sources, *(CSRC / h for h in _HEADERS)))
                              + " ".join([*extra, archs]).encode()).hexdigest()[:12]
        tag = f"torch{torch.__version__}".replace("+", "_")
        name = f"course_lowbit_{kind}_{digest}"
        build = cache_dir() / tag / name
        build.mkdir(parents=True, exist_ok=True)
        # said by the process that compiles; one that waits for another's build (torch's lock file) says
        # nothing, so that a notebook's output does not depend on which process got there first
        building_elsewhere = (build / "lock").exists()
        if not building_elsewhere and not list(build.glob(f"{name}*.so")) and not list(build.glob(f"{name}*.pyd")):
            print(f"course_lib.kernels: compiling the {kind.upper()} extension (first use only, about a minute)...",
                  flush=True)
        flags = dict(extra_cflags=["-O3", "-fopenmp-simd"], extra_include_paths=[str(CSRC)])
        if kind == "cuda":
            flags["extra_cuda_cflags"] = [*_CUDA_OPT_FLAGS, *extra]
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                path = cpp_extension.load(name=name, sources=[str(s) for s in sources], build_directory=str(build),
                                          verbose=verbose, is_python_module=False, **flags)
        except Exception as exc:  # a compiler error, a missing header: report it, don't crash callers
            reason = f"building it failed ({type(exc).__name__}: {str(exc).strip().splitlines()[-1][:300]})"
        else:
            _modules[kind] = str(path) if path else str(build)
            return _modules[kind]
    _failures[kind] = f"the {kind.upper()} extension is unavailable: {reason}"
    raise RuntimeError(_failures[kind])


def backend_status() -> dict[str, str]:
    """``{"cpp": "ready" | reason, "cuda": "ready" | reason}`` (tries to build each once)."""
    status = {}
    for kind in ("cpp", "cuda"):
        try:
            load_extension(kind)
            status[kind] = "ready"
        except RuntimeError as exc:
            status[kind] = str(exc)
    return status


def _pick(backend: str, device: torch.device, supported: bool = True) -> str:
    """Resolve ``backend`` for tensors on ``device``; ``supported``: the kernel handles this shape."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    kind = "cuda" if device.type == "cuda" else "cpp"
    if backend == "torch":
        return "torch"
    if backend in ("cpp", "cuda"):
        if backend != kind:
            raise ValueError(f"backend={backend!r} needs tensors on {'a CUDA device' if backend == 'cuda' else 'the CPU'}, "
                             f"got tensors on {device}")
        if not supported:
            raise ValueError(f"backend={backend!r} does not handle this shape (see the function's docstring); "
                             "use backend='torch' or 'auto'")
        load_extension(kind)
        return kind
    if device.type not in ("cpu", "cuda") or not supported:
        return "torch"
    try:
        load_extension(kind)
        return kind
    except RuntimeError as exc:
        if kind not in _announced:
            _announced.add(kind)
            print(f"course_lib.kernels: {exc}; using the PyTorch reference instead.", flush=True)
        return "torch"


def cuda_arch() -> dict[str, object]:
    """What the CUDA kernels do on the current GPU (builds the extension on first use).

    Returns:
        ``{"device": "sm_90", "code": "sm_75", "tensor_cores": bool, "pdl": bool}``: the device's compute
        capability, the architecture of the kernel code that runs there (lower than the device's for a
        ``TORCH_CUDA_ARCH_LIST="7.5+PTX"`` build, which the driver JIT-compiles), whether the tensor-core
        kernels v7 and v10 run (sm_80+ on both) and whether v8/v9 use programmatic dependent launch (sm_90+ on
        both).

    Raises:
        RuntimeError: when the CUDA extension is unavailable (the reason is in the message).
    """
    load_extension("cuda")
    device, code = (int(v) for v in torch.ops.course_lib.cuda_arch())
    return {"device": f"sm_{device}", "code": f"sm_{code}", "tensor_cores": min(device, code) >= 80,
            "pdl": min(device, code) >= 90}


def nvcc_path() -> str | None:
    """The nvcc that builds would use (``$CUDA_HOME/bin/nvcc``, else the one on PATH), or None."""
    from torch.utils import cpp_extension

    home = cpp_extension.CUDA_HOME
    if home and (Path(home) / "bin" / "nvcc").is_file():
        return str(Path(home) / "bin" / "nvcc")
    return shutil.which("nvcc")


def check_cuda_sources(archs=SUPPORTED_CUDA_ARCHS, jobs: int | None = None) -> dict[str, str]:
    """Compile every CUDA kernel file for each architecture in ``archs`` with nvcc, no GPU needed.

    Device code only (one ``-fatbin`` per file with a ``-gencode`` per architecture, the flags of a real build
    but no optimization): it catches what a learner's build would hit, such as an instruction newer than the GPU
    (``ptxas: Feature ... requires .target sm_80``).

    Args:
        archs: compute capabilities as strings without the dot, e.g. ``("75", "90")``.
        jobs: nvcc processes at once (default: the CPU count).

    Returns:
        ``{file name: ""}`` when all compiled, else ``{file name: the compiler's error output}`` for those that failed.

    Raises:
        RuntimeError: when no nvcc is found.
    """
    nvcc = nvcc_path()
    if nvcc is None:
        raise RuntimeError("nvcc was not found (set CUDA_HOME or put nvcc on PATH)")
    gencode = [f"-gencode=arch=compute_{a},code=sm_{a}" for a in archs]

    def compile_one(name: str) -> tuple[str, str]:
        with tempfile.TemporaryDirectory() as tmp:
            # device code without optimization: what each architecture accepts does not depend on it, and
            # the check runs about four times faster (a GPU build optimizes: load_extension)
            cmd = [nvcc, *_torch_nvcc_flags(), "-Xcicc", "-O0", "-Xptxas", "-O0", *gencode, "-fatbin",
                   "-I", str(CSRC), str(CSRC / name), "-o", str(Path(tmp) / "out.fatbin")]
            proc = subprocess.run(cmd, capture_output=True, text=True)
        return name, "" if proc.returncode == 0 else (proc.stdout + proc.stderr).strip()

    with ThreadPoolExecutor(max_workers=jobs or os.cpu_count() or 1) as pool:
        return dict(pool.map(compile_one, CUDA_KERNEL_SOURCES))


def build_c_kernel(name: str, source: str, verbose: bool = False) -> ctypes.CDLL:
    """Compile C++ source with plain ``extern "C"`` functions (no torch headers) and load it with ctypes.

    The build goes through ``torch.utils.cpp_extension.load(..., is_python_module=False)`` (ninja, the
    torch toolchain's flags, a cache keyed by the source), but without torch's headers it compiles in a
    second or two instead of the ~40 s of a full extension: quick enough to edit and rebuild in a notebook.

    Args:
        name: a Python identifier naming the library.
        source: the C++ code; functions to call from Python must be declared ``extern "C"``.
        verbose: print the compiler's commands and output.

    Returns:
        The loaded library; set ``argtypes`` on its functions before calling them.

    Raises:
        RuntimeError: with the compiler's error messages when the source does not compile.
    """
    from torch.utils import cpp_extension

    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"name must be a Python identifier, got {name!r}")
    if not isinstance(source, str) or not source.strip():
        raise ValueError("source must be a non-empty string of C++ code")
    reason = _why_not("cpp")
    if reason is not None:
        raise RuntimeError(f"cannot build C++ code here: {reason}")
    _prefer_own_ninja()
    digest = hashlib.sha1(source.encode()).hexdigest()[:12]
    full = f"{name}_{digest}"
    build = cache_dir() / f"torch{torch.__version__}".replace("+", "_") / "c" / full
    build.mkdir(parents=True, exist_ok=True)
    src = build / f"{full}.cpp"
    if not src.exists() or src.read_text() != source:
        src.write_text(source)
    libs = list(build.glob(f"{full}*.so"))
    if not libs:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                cpp_extension.load(name=full, sources=[str(src)], build_directory=str(build), verbose=verbose,
                                   is_python_module=False, extra_cflags=["-O3", "-fopenmp-simd"])
        except RuntimeError as exc:
            raise RuntimeError(f"your C++ code did not compile:\n{exc}") from None
        libs = list(build.glob(f"{full}*.so"))
    return ctypes.CDLL(str(libs[0]))


def call_rows_int8_c(lib: ctypes.CDLL, x: torch.Tensor, function: str = "quantize_rows_int8") -> tuple[torch.Tensor, torch.Tensor]:
    """Run a learner's C function ``void f(const float* x, int8_t* q, float* absmax, int64_t M, int64_t K)``.

    Args:
        lib: from ``build_c_kernel``.
        x: float32 CPU tensor ``[M, K]`` (made contiguous here).
        function: the function's name in ``lib``.

    Returns:
        (q int8 ``[M, K]``, absmax float32 ``[M]``), the outputs the function wrote.
    """
    check_tensor(x, "x", dtypes=(torch.float32,), ndim=2)
    if x.device.type != "cpu":
        raise ValueError(f"x must be on the CPU for a C function, got {x.device}")
    fn = getattr(lib, function, None)
    if fn is None:
        raise AttributeError(f'the library has no function {function!r}: declare it extern "C" with that name')
    fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64]
    fn.restype = None
    x = x.contiguous()
    q = torch.zeros(x.shape, dtype=torch.int8)
    absmax = torch.zeros(x.shape[0], dtype=torch.float32)
    fn(x.data_ptr(), q.data_ptr(), absmax.data_ptr(), x.shape[0], x.shape[1])
    return q, absmax
