"""Helpers that the notebooks' test cells call.

Design rules (each defeats a known nbgrader trap, see REFERENCES.md):
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
import functools
import inspect
import io
import math
import sys
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

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
    "forbid_reference",
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
            return f"{name} is {actual!r}, expected {expected!r} (difference {abs(actual - expected):.6g})"
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
    msg = _compare(actual, expected, name, atol, rtol, check_dtype, check_device)
    if msg:
        raise AssertionError(msg)


def assert_equal(actual: Any, expected: Any, *, name: str = "result", check_dtype: bool = True) -> None:
    """Assert exact equality (bit-exact for tensors, NaN equal to NaN)."""
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


def call_learner(fn: Callable, *args, **kwargs) -> Any:
    """Call learner code quietly; turn "not written yet" and crashes into clear assertion failures."""
    name = _fn_name(fn)
    try:
        with quiet():
            return fn(*args, **kwargs)
    except NotImplementedError:
        raise AssertionError(f"{name} is not implemented yet: write its body in the answer cell, run that cell, "
                             f"then rerun this test") from None
    except AssertionError:
        raise
    except Exception as exc:  # any crash of learner code is a failed check, with the call that crashed
        raise AssertionError(f"{name}{_describe(args, kwargs)} raised {type(exc).__name__}: {exc}") from exc


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
    return getattr(fn, "__code__", None)


@contextlib.contextmanager
def forbid_reference(reference_fn: Callable, learner_name: str | None = None):
    """Fail when the reference's code runs inside the block (the learner delegating to course_lib).

    ``check_function`` does this around every learner call; a test that calls the learner through
    ``call_learner`` (e.g. on modules it compares afterwards) wraps that call itself::

        with grading.forbid_reference(awq.fold_scales, "fold_scales"):
            grading.call_learner(fold_scales, prev, linears, scales)

    A profile hook records each call of the reference's code object; the verdict comes after the
    block, so a learner who catches an exception cannot hide the call. Removing the hook from learner
    code is reported too. A reference that is not a course_lib function is not watched.

    Args:
        reference_fn: the course_lib function the learner must not call.
        learner_name: the learner's function in the message (default: the reference's name).
    """
    learner_name = learner_name or _fn_name(reference_fn)
    code = _code_of(reference_fn)
    # Only a course_lib function is "the reference": a test cell may wrap learner and reference in the
    # same local helper (e.g. forward_backward(fn) in notebook 04), whose shared code is no delegation.
    module = inspect.getmodule(code) if code is not None else None
    if code is None or not (module and module.__name__.startswith("course_lib")):
        yield
        return
    calls = []

    def watch(frame, event, arg):
        if event == "call" and frame.f_code is code:
            calls.append(frame.f_code.co_name)

    previous = sys.getprofile()
    sys.setprofile(watch)
    try:
        yield
    finally:
        intact = sys.getprofile() is watch
        sys.setprofile(previous)
    where = f"{getattr(reference_fn, '__module__', 'course_lib')}.{code.co_name}"
    if calls:
        raise AssertionError(f"{learner_name} calls the course_lib reference {where}: the exercise is to write "
                             f"it yourself (you may compare with the reference in a free cell, not call it)")
    if not intact:
        raise AssertionError(f"{learner_name} removed the grader's call watch (sys.setprofile): "
                             f"the check cannot run; do not change profilers in an exercise")


def _normalize_case(case: Any) -> tuple[tuple, dict]:
    if isinstance(case, Mapping):
        return tuple(case.get("args", ())), dict(case.get("kwargs", {}))
    if isinstance(case, tuple):
        return case, {}
    return (case,), {}


def check_function(learner_fn: Callable, reference_fn: Callable, cases: Iterable[Any], *, atol: float = 0.0,
                   rtol: float = 0.0, on_devices: Sequence[str] | None = None, check_dtype: bool = True,
                   name: str | None = None, allow_reference_call: bool = False) -> None:
    """Compare a learner's function with the reference on every case and every device.

    Args:
        learner_fn: the function the learner wrote.
        reference_fn: the course_lib reference with the same signature.
        cases: each case is a tuple of positional args, a single non-tuple argument, or a dict
            ``{"args": (...), "kwargs": {...}}``. Tensors are built on the CPU; the check copies
            them to each device (so in-place edits by one function cannot affect the other).
        atol, rtol: tolerances (0 means exact).
        on_devices: devices to run on; default every device present (``devices()``).
        check_dtype: whether result dtypes must match the reference's.
        name: the function's name in messages (default its ``__name__``).
        allow_reference_call: unless True, the check fails when the learner's function runs the
            reference's code (``reference_fn.__code__``, through ``functools.wraps``/``partial``),
            e.g. ``def f(x): from course_lib.basics import f as r; return r(x)``.
    """
    name = name or _fn_name(learner_fn)
    cases = list(cases)
    if not cases:
        raise ValueError("cases must not be empty")
    for device in on_devices or devices():
        for case in cases:
            args, kwargs = _normalize_case(case)
            with quiet():
                expected = reference_fn(*_move(args, device), **_move(kwargs, device))
            watch = contextlib.nullcontext() if allow_reference_call else forbid_reference(reference_fn, name)
            with watch:
                actual = call_learner(learner_fn, *_move(args, device), **_move(kwargs, device))
            msg = _compare(actual, expected, "result", atol, rtol, check_dtype, True)
            if msg:
                raise AssertionError(f"{name}{_describe(args, kwargs)} on {device}: {msg}")


def check_raises(fn: Callable, args: tuple = (), kwargs: Mapping | None = None, *,
                 expected: type[BaseException] | tuple[type[BaseException], ...] = (ValueError, TypeError),
                 mentions: str | None = None) -> None:
    """Assert that ``fn(*args, **kwargs)`` rejects bad input with ``expected``.

    Args:
        mentions: a word the error message must contain (e.g. the argument's name).
    """
    kwargs = dict(kwargs or {})
    name = _fn_name(fn)
    try:
        with quiet():
            fn(*args, **kwargs)
    except NotImplementedError:
        raise AssertionError(f"{name} is not implemented yet: write its body in the answer cell") from None
    except expected as exc:
        if mentions and mentions not in str(exc):
            raise AssertionError(f"{name}{_describe(args, kwargs)} raised {type(exc).__name__}({exc}); "
                                 f"the message should mention {mentions!r}") from None
        return
    except Exception as exc:
        names = expected.__name__ if isinstance(expected, type) else " or ".join(e.__name__ for e in expected)
        raise AssertionError(f"{name}{_describe(args, kwargs)} raised {type(exc).__name__}({exc}), expected {names}") from None
    names = expected.__name__ if isinstance(expected, type) else " or ".join(e.__name__ for e in expected)
    raise AssertionError(f"{name}{_describe(args, kwargs)} returned normally; it should raise {names}")
