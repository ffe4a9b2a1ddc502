"""Helpers that the notebooks' test cells call.

Design rules (each defeats a known nbgrader trap, see INSTRUCTORS.md, "Grading safely"):
- every check is an ``assert``-style failure: a helper raises ``AssertionError`` with a message
  that says what differs (shape, dtype, device, which elements and by how much) and returns None,
  so a test cell never ends on a value that nbgrader could read as a score;
- a passing check writes nothing to stderr: learner code runs with warnings silenced and
  ``sys.stderr`` captured (nbgrader scores a test cell that writes to stderr 0);
- the same check runs on every device present (CPU always, CUDA when available);
- an unfinished exercise (``NotImplementedError``) fails with a message that says so.

Typical test cell::

    from course_lib import grading, affine as ref
    grading.check_function(quantize, ref.quantize,
                           cases=[(grading.randn(4, 8, seed=0), 8), (torch.zeros(3), 4)])
"""

from __future__ import annotations

import contextlib
import copy
import functools
import inspect
import io
import math
import os
import sys
import types
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NoReturn

import torch

from .env import available_devices

__all__ = [
    "devices",
    "quiet",
    "randn",
    "assert_close",
    "assert_equal",
    "check_function",
    "check_raises",
    "call_learner",
    "no_delegation",
    "reference_modules",
    "unchanged",
]


def devices() -> list[str]:
    """The devices every check runs on: ``["cpu"]`` or ``["cpu", "cuda"]``."""
    return available_devices()


@contextlib.contextmanager
def quiet():
    """Silence Python warnings and capture ``sys.stderr`` for the duration of the block."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with contextlib.redirect_stderr(io.StringIO()):
            yield


def randn(*shape: int, seed: int = 0, dtype: torch.dtype = torch.float32, scale: float = 1.0) -> torch.Tensor:
    """Reproducible normal samples on the CPU (checks move them to each device)."""
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=gen, dtype=torch.float64) * scale).to(dtype)


# Every failure is raised here. The message is printed first (stdout, above the traceback, where a learner
# looks first; stderr would zero the cell in nbgrader), then raised. No frame of grading shows: they carry
# __tracebackhide__, and IPython always shows the frame that raises, so that one is a one-line stand-in
# (`File <course check>:1`) rather than grading's source. ``cause`` is the learner's own error, with its frames.
_RAISE = compile("raise failure", "<course check>", "exec")


def _fail(message: str, cause: BaseException | None = None) -> NoReturn:
    __tracebackhide__ = True
    # one write (print's default would write the newline separately): under load, a kernel's output thread can
    # send the two writes as two stream messages, and the learner's cell would then show the message split
    print(f"\u2717 {message}\n", end="", flush=True)
    failure = AssertionError(message)
    failure.__cause__, failure.__suppress_context__ = cause, True  # as `raise ... from cause`
    exec(_RAISE, {"failure": failure})
    raise AssertionError("unreachable")  # for type checkers: exec always raises


# ----------------------------------------------------------------------------------------------
# one line for a passing test cell

_PASSED: dict = {"checks": 0, "functions": {}, "devices": {}}  # since the current cell started


def _passed(function: str | None = None, device: str | None = None) -> None:
    _PASSED["checks"] += 1
    if function:
        _PASSED["functions"][function] = None
    if device:
        _PASSED["devices"][device] = None


def _report_passed(result) -> None:
    """IPython's post_run_cell: after a cell whose checks all passed, one line that says what was checked."""
    checks, functions, on = _PASSED["checks"], list(_PASSED["functions"]), list(_PASSED["devices"])
    _PASSED.update(checks=0, functions={}, devices={})
    if checks and getattr(result, "success", False):
        what = ", ".join(functions) + (f" on {' and '.join(on)}" if on else "")
        line = f"\u2713 {checks} check{'s' if checks != 1 else ''} passed" + (f" ({what})" if what else "")
        print(line + "\n", end="")  # one write, as in _fail


def _register_report() -> None:
    """Under IPython, print the line after every cell (once: a reloaded grading replaces the old callback)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return
    shell = get_ipython()
    if shell is None:
        return
    for callback in list(shell.events.callbacks.get("post_run_cell", [])):
        if getattr(callback, "__qualname__", "") == "_report_passed" and callback.__module__ == __name__:
            shell.events.unregister("post_run_cell", callback)
    shell.events.register("post_run_cell", _report_passed)


# ----------------------------------------------------------------------------------------------
# comparisons


def _fmt_index(flat_index: int, shape: Sequence[int]) -> str:
    if len(shape) == 0:
        return "()"
    idx = []
    for dim in reversed(shape):
        idx.append(flat_index % dim)
        flat_index //= dim
    return "[" + ", ".join(str(i) for i in reversed(idx)) + "]"


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def _compare_tensors(actual: torch.Tensor, expected: torch.Tensor, name: str, atol: float, rtol: float,
                     check_dtype: bool, check_device: bool) -> str | None:
    if not isinstance(actual, torch.Tensor):
        return f"{name} should be a torch.Tensor, got {type(actual).__name__}"
    if tuple(actual.shape) != tuple(expected.shape):
        return f"{name} has shape {tuple(actual.shape)}, expected {tuple(expected.shape)}"
    if check_dtype and actual.dtype != expected.dtype:
        return f"{name} has dtype {_dtype_name(actual.dtype)}, expected {_dtype_name(expected.dtype)}"
    if check_device and actual.device.type != expected.device.type:
        return f"{name} is on {actual.device}, expected {expected.device} (keep results on the input's device)"
    if actual.numel() == 0:
        return None
    a = actual.detach().to("cpu")
    e = expected.detach().to("cpu")
    if a.is_complex() or e.is_complex() or a.is_floating_point() or e.is_floating_point():
        a64, e64 = a.to(torch.float64), e.to(torch.float64)
    else:  # integers and bools compare exactly, without float rounding of large values
        a64, e64 = a.to(torch.int64), e.to(torch.int64)
    nan_a, nan_e = torch.isnan(a64) if a64.is_floating_point() else None, None
    if a64.is_floating_point():
        nan_e = torch.isnan(e64)
        if not torch.equal(nan_a, nan_e):
            where = int(torch.nonzero((nan_a != nan_e).flatten())[0])
            return (f"{name} has NaN where the reference has none (or the reverse), first at "
                    f"{_fmt_index(where, a.shape)}: got {a.flatten()[where].item()}, expected {e.flatten()[where].item()}")
        a64 = torch.where(nan_a, torch.zeros_like(a64), a64)
        e64 = torch.where(nan_e, torch.zeros_like(e64), e64)
        inf_mismatch = (torch.isinf(a64) | torch.isinf(e64)) & (a64 != e64)
        if bool(inf_mismatch.any()):
            where = int(torch.nonzero(inf_mismatch.flatten())[0])
            return (f"{name} differs in an infinite value at {_fmt_index(where, a.shape)}: "
                    f"got {a.flatten()[where].item()}, expected {e.flatten()[where].item()}")
        finite = torch.isfinite(a64) & torch.isfinite(e64)
        a64 = torch.where(finite, a64, torch.zeros_like(a64))
        e64 = torch.where(finite, e64, torch.zeros_like(e64))
        diff = (a64 - e64).abs()
        bad = diff > atol + rtol * e64.abs()
    else:
        diff = (a64 - e64).abs()
        bad = diff > atol + rtol * e64.abs()
    if not bool(bad.any()):
        return None
    flat = diff.flatten()
    worst = int(torch.argmax(flat))
    n_bad = int(bad.sum())
    return (f"{name}: {n_bad} of {a.numel()} elements differ beyond atol={atol:g}, rtol={rtol:g}; "
            f"largest difference {flat[worst].item():.6g} at {_fmt_index(worst, a.shape)} "
            f"(got {a.flatten()[worst].item()!r}, expected {e.flatten()[worst].item()!r})")


def _compare(actual: Any, expected: Any, name: str, atol: float, rtol: float, check_dtype: bool,
             check_device: bool) -> str | None:
    """Return a message describing the first difference, or None when they match."""
    if isinstance(expected, torch.Tensor):
        return _compare_tensors(actual, expected, name, atol, rtol, check_dtype, check_device)
    if isinstance(expected, bool) or expected is None or isinstance(expected, str):
        if actual != expected or type(actual) is not type(expected):
            return f"{name} is {actual!r}, expected {expected!r}"
        return None
    if isinstance(expected, (int, float)):
        if isinstance(actual, torch.Tensor) and actual.numel() == 1:
            actual = actual.item()
        if isinstance(actual, bool) or not isinstance(actual, (int, float)):
            return f"{name} should be a number, got {type(actual).__name__}"
        if math.isnan(expected) or math.isnan(actual):
            return None if (math.isnan(expected) and math.isnan(actual)) else f"{name} is {actual!r}, expected {expected!r}"
        if math.isinf(expected) or math.isinf(actual):
            return None if actual == expected else f"{name} is {actual!r}, expected {expected!r}"
        if abs(actual - expected) > atol + rtol * abs(expected):
            return (f"{name} is {actual!r}, expected {expected!r} (difference {abs(actual - expected):.6g}, "
                    f"allowed {atol + rtol * abs(expected):.3g}: atol={atol:g}, rtol={rtol:g})")
        return None
    if isinstance(expected, Mapping):
        if not isinstance(actual, Mapping):
            return f"{name} should be a dict, got {type(actual).__name__}"
        if set(actual) != set(expected):
            missing, extra = set(expected) - set(actual), set(actual) - set(expected)
            return f"{name} has keys {sorted(map(str, actual))}, expected {sorted(map(str, expected))}" + (
                f" (missing {sorted(map(str, missing))})" if missing else "") + (
                f" (unexpected {sorted(map(str, extra))})" if extra else "")
        for key in expected:
            msg = _compare(actual[key], expected[key], f"{name}[{key!r}]", atol, rtol, check_dtype, check_device)
            if msg:
                return msg
        return None
    if isinstance(expected, (tuple, list)):
        if not isinstance(actual, (tuple, list)):
            return f"{name} should be a {type(expected).__name__} of {len(expected)} items, got {type(actual).__name__}"
        if len(actual) != len(expected):
            return f"{name} has {len(actual)} items, expected {len(expected)}"
        for i, (a, e) in enumerate(zip(actual, expected)):
            msg = _compare(a, e, f"{name}[{i}]", atol, rtol, check_dtype, check_device)
            if msg:
                return msg
        return None
    if actual != expected:
        return f"{name} is {actual!r}, expected {expected!r}"
    return None


def assert_close(actual: Any, expected: Any, *, atol: float = 1e-6, rtol: float = 1e-5, name: str = "result",
                 check_dtype: bool = True, check_device: bool = True) -> None:
    """Assert that ``actual`` matches ``expected`` (tensors, numbers, tuples, lists, dicts).

    Raises:
        AssertionError: naming the first difference: type, shape, dtype, device, NaN/Inf
            placement, or the number of elements beyond tolerance with the largest error and its index.
    """
    __tracebackhide__ = True  # noqa: F841 (IPython and pytest hide this frame: the learner sees the message)
    msg = _compare(actual, expected, name, atol, rtol, check_dtype, check_device)
    if msg:
        _fail(msg)
    _passed()


def assert_equal(actual: Any, expected: Any, *, name: str = "result", check_dtype: bool = True) -> None:
    """Assert exact equality (bit-exact for tensors, NaN equal to NaN)."""
    __tracebackhide__ = True  # noqa: F841 (IPython and pytest hide this frame: the learner sees the message)
    assert_close(actual, expected, atol=0.0, rtol=0.0, name=name, check_dtype=check_dtype)


# ----------------------------------------------------------------------------------------------
# running learner code


def _fn_name(fn: Callable) -> str:
    return getattr(fn, "__name__", type(fn).__name__)


def _move(obj: Any, device: str) -> Any:
    """Copy every tensor inside ``obj`` to ``device`` (always a copy: in-place edits don't leak)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to(device, copy=True)
    if isinstance(obj, tuple):
        return tuple(_move(o, device) for o in obj)
    if isinstance(obj, list):
        return [_move(o, device) for o in obj]
    if isinstance(obj, dict):
        return {k: _move(v, device) for k, v in obj.items()}
    return obj


def _describe(args: tuple, kwargs: dict) -> str:
    def one(v):
        if isinstance(v, torch.Tensor):
            return f"tensor(shape={tuple(v.shape)}, dtype={_dtype_name(v.dtype)})" if v.numel() > 4 else repr(v.tolist())
        text = repr(v)
        return text if len(text) <= 40 else text[:37] + "..."
    parts = [one(a) for a in args] + [f"{k}={one(v)}" for k, v in kwargs.items()]
    return "(" + ", ".join(parts) + ")"


# ----------------------------------------------------------------------------------------------
# the delegation watch: learner code must not call code that computes an exercise's answer

_COURSE_DIR = os.path.dirname(os.path.realpath(__file__))
# course_lib modules a learner may call: plumbing, data, models and measurements, none of which
# computes an exercise's answer. Every other course_lib module (the topic modules and the kernels'
# public functions) holds references.
_INFRASTRUCTURE = frozenset({
    "__init__.py", "grading.py", "course_grading.py", "nbgrader_hooks.py", "env.py", "data.py", "models.py",
    "evaluate.py", "training.py", "validation.py", "topics.py", os.path.join("kernels", "__init__.py"),
    os.path.join("kernels", "build.py"),
})
_INFRASTRUCTURE_DIRS = ("plots", "widgets")
# third-party code that quantizes or prunes: whole packages, or parts of torch (relative to torch's folder)
_THIRD_PARTY_PACKAGES = ("bitsandbytes", "hqq", "torchao", "optimum", "auto_gptq", "gptqmodel", "awq", "gguf")
_TORCH_PARTS = ("ao", "quantization", os.path.join("nn", "quantized"), os.path.join("nn", "qat"),
                os.path.join("nn", "intrinsic"), os.path.join("nn", "utils", "prune.py"))
# torch's own quantizers, C functions seen by name (torch.quantize_per_tensor, torch.fake_quantize_*, ...)
_TORCH_QUANTIZERS = frozenset(n for n in dir(torch) if ("quantize" in n or "qparams" in n or "fake_quant" in n)
                              and n != "dequantize")
# custom-op namespaces whose ops compute answers (torch.ops.course_lib.gemv_nf4, torch.ops.bitsandbytes.*)
_OP_NAMESPACES = frozenset({"course_lib", "bitsandbytes", "quantized", "quantized_decomposed", "torchao"})


def reference_modules(package_dir: str | os.PathLike | None = None) -> list[str]:
    """The files of course_lib that hold references (code that computes an exercise's answer).

    Every module outside the plumbing: the topic modules (``affine.py`` ... ``capstone.py``) and the
    kernels' public functions. ``no_delegation`` watches calls into them, and a graded course can ship
    them without source (``course_grading.strip_reference_sources``).

    Args:
        package_dir: a course_lib folder (default: this one).

    Returns:
        Their paths relative to ``package_dir``, sorted.
    """
    root = os.path.realpath(package_dir) if package_dir is not None else _COURSE_DIR
    found = []
    for folder, _, files in os.walk(root):
        for file in files:
            relative = os.path.relpath(os.path.join(folder, file), root)
            if file.endswith(".py") and _is_reference_file(relative):
                found.append(relative)
    return sorted(found)


def _is_reference_file(relative: str) -> bool:
    """Whether a course_lib file (path relative to the package; ``.pyc`` for a course shipped without
    sources) holds references rather than plumbing."""
    relative = relative[:-1] if relative.endswith(".pyc") else relative
    return not (relative in _INFRASTRUCTURE or relative.startswith(_INFRASTRUCTURE_DIRS + ("assets",)))


@functools.lru_cache(maxsize=1)
def _third_party_zones() -> tuple[str, ...]:
    """The third-party folders and files that hold code that computes answers."""
    import importlib.util

    third = [os.path.join(os.path.dirname(os.path.realpath(torch.__file__)), part) for part in _TORCH_PARTS]
    for package in _THIRD_PARTY_PACKAGES:
        try:  # find_spec locates a package without importing it
            spec = importlib.util.find_spec(package)
        except (ImportError, ValueError):
            spec = None
        for folder in (spec.submodule_search_locations or []) if spec else []:
            third.append(os.path.realpath(folder))
    return tuple(third)


_ZONE_CACHE: dict[str, str | None] = {}


def _zone_of(filename: str) -> str | None:
    """What a file holds: "course_lib" or "third-party" (answer-computing code), "ops" (torch.ops' call
    path, whose op decides), or None."""
    zone = _ZONE_CACHE.get(filename, "?")
    if zone != "?":
        return zone
    from torch import _ops

    path = os.path.realpath(filename) if os.path.isabs(filename) else filename
    zone = None
    if path.startswith(_COURSE_DIR + os.sep):
        if _is_reference_file(path[len(_COURSE_DIR) + 1:]):
            zone = "course_lib"
    elif any(path == t or path.startswith(t + os.sep) for t in _third_party_zones()):
        zone = "third-party"
    elif path == os.path.realpath(_ops.__file__):
        zone = "ops"
    _ZONE_CACHE[filename] = zone
    return zone


def _methods(cls: type) -> list:
    return [v for c in cls.__mro__ if c is not object for v in vars(c).values()]


def _code_name(frame) -> str:
    module = frame.f_globals.get("__name__", "?")
    return f"{module}.{getattr(frame.f_code, 'co_qualname', frame.f_code.co_name)}"


def _allowed_codes(handed_over: Iterable[Callable]) -> set:
    """The code objects of what an exercise hands over: functions, every method of a class, every function
    and class defined in a module."""
    allowed = set()
    for helper in handed_over:
        targets = [helper]
        if isinstance(helper, types.ModuleType):
            helpers = [v for v in vars(helper).values() if getattr(v, "__module__", None) == helper.__name__]
            targets = [t for v in helpers for t in ([v] if not isinstance(v, type) else _methods(v))]
        elif isinstance(helper, type):
            targets = _methods(helper)
        for target in targets:
            code = _code_of(target)
            if code is not None:
                allowed.add(code)
    return allowed


class no_delegation:  # noqa: N801 (a context manager, named like contextlib's)
    """Fail when learner code inside the block calls code that computes an exercise's answer.

    Watched: every course_lib function outside the plumbing modules (``grading``, ``data``, ``models``,
    ``evaluate``, ``training``, ``validation``, ``env``, plots and widgets); bitsandbytes, hqq and other
    quantization packages; torch's quantization and pruning code (``torch.ao``,
    ``torch.nn.utils.prune``) and its quantizer functions (``torch.quantize_per_tensor``,
    ``torch.fake_quantize_per_channel_affine``, ...); the custom ops ``torch.ops.course_lib.*`` and
    ``torch.ops.bitsandbytes.*``. The learner's own functions and torch's ordinary tensor ops are not.

    ``call_learner`` (and so ``check_function`` and ``check_raises``) runs every learner call inside
    this watch. A function the notebook hands over on purpose (e.g. the codebook an earlier exercise
    built) is declared in the test, ``handed_over=(nf4.nf4_codebook,)``; whatever it calls inside is
    allowed. A profile hook (``sys.setprofile``) records each watched call; the verdict comes after the
    block, so a learner who catches an exception cannot hide the call. Removing the hook is reported too.

    Args:
        learner_name: the learner's function in the message.
        handed_over: course_lib functions, classes or whole modules the learner may call in this exercise.
    """

    def __init__(self, learner_name: str, handed_over: Iterable[Callable] = ()):
        self.learner_name, self.handed_over = learner_name, tuple(handed_over)
        self.calls: list[str] = []
        self._allowed = _allowed_codes(self.handed_over)

    def __enter__(self) -> "no_delegation":
        calls, allowed, zone_of = self.calls, self._allowed, _zone_of
        region = [None]  # the frame of a handed-over (or already reported) call, until it returns

        def watch(frame, event, arg):  # runs on every call: the common path is two lookups
            if region[0] is not None:
                if event == "return" and frame is region[0]:
                    region[0] = None
                return
            if event == "call":
                code = frame.f_code
                zone = zone_of(code.co_filename)
                if zone is None or code.co_name == "<module>":
                    return
                if zone == "ops":  # torch.ops.<namespace>.<op>(...): the op decides
                    if code.co_name != "__call__":
                        return
                    op = frame.f_locals.get("self")
                    qualified = str(getattr(op, "_qualified_op_name", None) or getattr(op, "_name", ""))
                    namespace, _, op_name = qualified.partition("::")
                    if not (namespace in _OP_NAMESPACES or "quantize" in op_name):
                        return
                    calls.append(f"torch.ops.{namespace}.{op_name}")
                elif code not in allowed:
                    calls.append(_code_name(frame))
                region[0] = frame
            elif event == "c_call" and getattr(arg, "__name__", None) in _TORCH_QUANTIZERS:
                calls.append(f"torch.{arg.__name__}")

        self._watch, self._previous = watch, sys.getprofile()
        sys.setprofile(watch)
        return self

    def __exit__(self, *exc_info) -> bool:
        __tracebackhide__ = True  # noqa: F841 (IPython and pytest hide this frame)
        intact = sys.getprofile() is self._watch
        try:
            sys.setprofile(self._previous)
        except TypeError:  # a C profiler (cProfile) that cannot be set back this way
            sys.setprofile(None)
        # the verdict replaces whatever the learner's code raised (e.g. the reference's ValueError)
        if self.calls:
            names = ", ".join(dict.fromkeys(self.calls))
            given = sorted(f"{getattr(h, '__module__', '?')}.{getattr(h, '__qualname__', h)}" for h in self.handed_over)
            _fail(f"{self.learner_name} calls {names}, which computes what this exercise asks you to write: write it "
                  f"yourself with torch's tensor operations (compare with it in a free cell, don't call it)"
                  + (f". This exercise hands over: {', '.join(given)}" if given else ""))
        if not intact:
            _fail(f"{self.learner_name} removed the grader's call watch (sys.setprofile): "
                  f"the check cannot run; do not change profilers in an exercise")
        return False


_COURSE_MODULES: list = [0, []]  # (len(sys.modules) when listed, course_lib's loaded modules)


def _watched_modules() -> list:
    import builtins

    if _COURSE_MODULES[0] != len(sys.modules):  # rescan only after an import
        _COURSE_MODULES[:] = [len(sys.modules), [m for n, m in list(sys.modules.items())
                                                 if m is not None and n.split(".")[0] == "course_lib"]]
    return [builtins, *_COURSE_MODULES[1]]


_MUTABLE_TYPES = frozenset({dict, list, set, bytearray, torch.Tensor, torch.nn.Parameter})


def _copy_content(value: Any) -> Any:
    """A copy of a mutable module-level value (to notice edits in place)."""
    if isinstance(value, torch.Tensor):
        return value.detach().clone() if value.numel() <= 1_000_000 else None
    return type(value)(value)


def _same_content(value: Any, saved: Any) -> bool:
    if isinstance(saved, torch.Tensor):
        return value.shape == saved.shape and value.dtype == saved.dtype and torch.equal(value.detach(), saved)
    return type(value) is type(saved) and value == saved


class unchanged:  # noqa: N801 (a context manager, named like contextlib's)
    """Fail (and undo it) when code inside the block changes course_lib, builtins or the notebook's names.

    A learner's function runs in the middle of a test cell: replacing a reference, a grading helper or a
    module constant (``capstone.BUDGET_MB = inf``), editing a module-level dict or tensor in place, or
    rebinding a notebook name the test reads (``grading``, ``HANDED_OVER``) would change what the rest of
    the cell does. The block's changes to the public names of every loaded course_lib module, to
    ``builtins`` and to the names of ``__main__`` (the notebook) are undone and reported.
    """

    def __init__(self, learner_name: str):
        self.learner_name = learner_name

    def __enter__(self) -> "unchanged":
        self._snapshot = []
        for module in _watched_modules():
            public = module.__name__ != "builtins"
            names = {k: v for k, v in vars(module).items() if k[0] != "_" or not public and k != "_"}
            contents = {k: _copy_content(v) for k, v in names.items() if type(v) in _MUTABLE_TYPES}
            self._snapshot.append((module, names, contents))
        main = sys.modules.get("__main__")  # the notebook's names (grading, the references, the test's data):
        if main is not None:                 # rebinding one is reported, editing a value in place is not
            self._snapshot.append((main, {k: v for k, v in vars(main).items() if k[0] != "_"}, {}))
        return self

    def __exit__(self, *exc_info) -> bool:
        __tracebackhide__ = True  # noqa: F841 (IPython and pytest hide this frame)
        changed = []
        for module, names, contents in self._snapshot:
            current = vars(module)
            for key, value in names.items():
                if current.get(key, _MISSING) is not value:
                    changed.append(f"{module.__name__}.{key}")
                    current[key] = value
                elif contents.get(key) is not None and not _same_content(value, contents[key]):
                    changed.append(f"{module.__name__}.{key} (edited in place)")
                    saved = contents[key]
                    if isinstance(value, torch.Tensor):
                        with torch.no_grad():
                            value.copy_(saved)
                    elif isinstance(value, (dict, set)):
                        value.clear()
                        value.update(saved)
                    else:
                        value[:] = saved
        self._snapshot = []
        if changed:
            _fail(f"{self.learner_name} changed {', '.join(changed)} while the test ran (undone): an "
                  f"exercise computes its answer, it does not modify the course's code or constants")
        return False


_MISSING = object()


def call_learner(fn: Callable, *args, handed_over: Iterable[Callable] = (), **kwargs) -> Any:
    """Call learner code quietly, watched for delegation (``no_delegation``).

    "Not written yet" and crashes become clear assertion failures.

    Args:
        fn: the learner's function (or a test's wrapper around it).
        args, kwargs: its arguments.
        handed_over: the course_lib functions this exercise lets the learner call.
    """
    __tracebackhide__ = True  # noqa: F841 (IPython and pytest hide this frame: the learner sees the message)
    name = _fn_name(fn)
    try:
        with unchanged(name), no_delegation(name, handed_over), quiet():
            return fn(*args, **kwargs)
    except NotImplementedError:
        _fail(f"{name} is not implemented yet: write its body in the answer cell, run that cell, "
              f"then rerun this test")
    except AssertionError:
        raise
    except MemoryError:  # fail after the handler: the learner's frames, and the memory they hold, are freed
        out_of_memory = f"{name}{_describe(args, kwargs)} ran out of memory (MemoryError)"
    except Exception as exc:  # any crash of learner code is a failed check, with the call that crashed
        _fail(f"{name}{_describe(args, kwargs)} raised {type(exc).__name__}: {exc}", exc)
    _fail(out_of_memory)


def _code_of(fn: Callable) -> Any:
    """The code object that runs when ``fn`` is called (through functools.wraps, partial and methods), or None."""
    for _ in range(32):
        if isinstance(fn, functools.partial):
            fn = fn.func
            continue
        unwrapped = inspect.unwrap(fn)
        if unwrapped is not fn:
            fn = unwrapped
            continue
        break
    fn = getattr(fn, "__func__", fn)
    if isinstance(fn, property):
        fn = fn.fget
    return getattr(fn, "__code__", None)


def _normalize_case(case: Any) -> tuple[tuple, dict]:
    if isinstance(case, Mapping):
        return tuple(case.get("args", ())), dict(case.get("kwargs", {}))
    if isinstance(case, tuple):
        return case, {}
    return (case,), {}


def check_function(learner_fn: Callable, reference_fn: Callable, cases: Iterable[Any], *, atol: float = 0.0,
                   rtol: float = 0.0, on_devices: Sequence[str] | None = None, check_dtype: bool = True,
                   name: str | None = None, handed_over: Iterable[Callable] = ()) -> None:
    """Compare a learner's function with the reference on every case and every device.

    Args:
        learner_fn: the function the learner wrote.
        reference_fn: the course_lib reference with the same signature.
        cases: each case is a tuple of positional args, a single non-tuple argument, or a dict
            ``{"args": (...), "kwargs": {...}, "label": "x_hat equals x"}`` (the label names the case
            in a failure). Tensors are built on the CPU; the check copies
            them to each device (so in-place edits by one function cannot affect the other).
        atol, rtol: tolerances (0 means exact).
        on_devices: devices to run on; default every device present (``devices()``).
        check_dtype: whether result dtypes must match the reference's.
        name: the function's name in messages (default its ``__name__``).
        handed_over: the course_lib functions this exercise lets the learner call; a call of any
            other answer-computing code (the reference itself, a sibling, bitsandbytes, torch's
            quantizers: ``no_delegation``) fails the check.
    """
    __tracebackhide__ = True  # noqa: F841 (IPython and pytest hide this frame: the learner sees the message)
    name = name or _fn_name(learner_fn)
    cases = list(cases)
    if not cases:
        raise ValueError("cases must not be empty")
    for device in on_devices or devices():
        for index, case in enumerate(cases):
            args, kwargs = _normalize_case(case)
            with quiet():
                expected = reference_fn(*_move(args, device), **_move(kwargs, device))
            actual = call_learner(learner_fn, *_move(args, device), handed_over=handed_over, **_move(kwargs, device))
            msg = _compare(actual, expected, "result", atol, rtol, check_dtype, True)
            if msg:
                label = case.get("label") if isinstance(case, Mapping) else None
                where = f"case {index + 1} of {len(cases)}" + (f", {label}" if label else "")
                _fail(f"{name}{_describe(args, kwargs)} on {device} ({where}): {msg}")
            _passed(name, device)


def check_raises(fn: Callable, args: tuple = (), kwargs: Mapping | None = None, *,
                 expected: type[BaseException] | tuple[type[BaseException], ...] = (ValueError, TypeError),
                 mentions: str | None = None, handed_over: Iterable[Callable] = ()) -> None:
    """Assert that ``fn(*args, **kwargs)`` rejects bad input with ``expected``.

    Args:
        mentions: a word the error message must contain (e.g. the argument's name).
        handed_over: the course_lib functions the learner may call (``no_delegation``).
    """
    __tracebackhide__ = True  # noqa: F841 (IPython and pytest hide this frame: the learner sees the message)
    kwargs = dict(kwargs or {})
    name = _fn_name(fn)
    names = expected.__name__ if isinstance(expected, type) else " or ".join(e.__name__ for e in expected)
    try:
        with unchanged(name), no_delegation(name, handed_over), quiet():
            fn(*args, **kwargs)
    except NotImplementedError:
        _fail(f"{name} is not implemented yet: write its body in the answer cell")
    except expected as exc:
        if mentions and mentions not in str(exc):
            _fail(f"{name}{_describe(args, kwargs)} raised {type(exc).__name__}({exc}); "
                  f"the message should mention {mentions!r}")
        _passed(name)
        return
    except Exception as exc:  # only the message leaves the handler: nothing keeps the learner's frames alive
        outcome = f"raised {type(exc).__name__}({exc}), expected {names}"
    else:
        outcome = f"returned normally; it should raise {names}"
    _fail(f"{name}{_describe(args, kwargs)} {outcome}")


_register_report()
