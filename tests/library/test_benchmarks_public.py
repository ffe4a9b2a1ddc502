"""The benchmarks use course_lib's public API only: a benchmark that reaches into a private name
(``K._nf4_code()``, ``course_lib.kernels._modules``) breaks silently when the library is refactored, and
what it times is then no longer what a user calls.

Read from the source (ast), no benchmark is run or imported: every name a file of benchmarks/ takes from course_lib
(``from course_lib.x import y``; ``K.y.z`` where ``K`` is an imported course_lib module; ``getattr(K, "y")``)
must not start with an underscore, and where the module lists its API in ``__all__``, must be listed there,
be a submodule or be an UPPER_CASE constant.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCHMARKS = sorted((ROOT / "benchmarks").rglob("*.py"))


def _course_lib_uses(source: str) -> list[tuple[int, str, tuple[str, ...]]]:
    """``(line, module, names)`` for each name ``source`` takes from a course_lib module, in line order:
    the module's dotted name and the chain of attribute names taken from it (``K.build.cache_dir`` with
    ``K`` bound to course_lib.kernels: ``("course_lib.kernels", ("build", "cache_dir"))``)."""
    tree = ast.parse(source)
    aliases: dict[str, str] = {}  # local name -> the course_lib module bound to it
    uses = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == "course_lib":
                    # `import course_lib.x` binds course_lib; `import course_lib.x as K` binds course_lib.x
                    aliases[a.asname or "course_lib"] = a.name if a.asname else "course_lib"
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "course_lib":
            for a in node.names:
                uses.append((node.lineno, node.module, (a.name,)))
                if not _is_private(a.name) and _is_submodule(node.module, a.name):
                    aliases[a.asname or a.name] = f"{node.module}.{a.name}"  # a submodule
    inner = {id(node.value) for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and id(node) not in inner:  # the whole chain, once
            chain, value = [], node
            while isinstance(value, ast.Attribute):
                chain.append(value.attr)
                value = value.value
            if isinstance(value, ast.Name) and value.id in aliases:
                uses.append((node.lineno, aliases[value.id], tuple(reversed(chain))))
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("getattr", "hasattr")
              and len(node.args) >= 2 and isinstance(node.args[0], ast.Name) and node.args[0].id in aliases
              and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str)):
            uses.append((node.lineno, aliases[node.args[0].id], (node.args[1].value,)))
    return sorted(uses)


def _is_submodule(module: str, name: str) -> bool:
    try:  # find_spec imports the packages above, not the module itself
        return importlib.util.find_spec(f"{module}.{name}") is not None
    except ModuleNotFoundError:  # module is not a package
        return False


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def private_uses(source: str) -> list[str]:
    """``"line N: course_lib.x._y"`` for each private course_lib name ``source`` uses (nothing imported)."""
    return [f"line {line}: {module}.{'.'.join(names)}" for line, module, names in _course_lib_uses(source)
            if any(_is_private(n) for n in module.split(".") + list(names))]


def unlisted_uses(source: str) -> list[str]:
    """``"line N: course_lib.x.y"`` for each name taken from a course_lib module whose ``__all__`` lacks it
    (imports the modules named)."""
    found = []
    for line, module, names in _course_lib_uses(source):
        current = module
        for name in names:
            if _is_submodule(current, name):  # go on along the chain
                current = f"{current}.{name}"
                continue
            listed = getattr(importlib.import_module(current), "__all__", None)
            # an UPPER_CASE constant is public by its name (evaluate's __all__ lists only functions)
            if listed is not None and name not in listed and not name.isupper():
                found.append(f"line {line}: {current}.{name}")
            break  # past the module: what follows is an attribute of a function, class or value
    return found


@pytest.mark.parametrize("path", BENCHMARKS, ids=lambda p: str(p.relative_to(ROOT / "benchmarks")))
def test_benchmarks_use_no_private_course_lib_name(path):
    found = private_uses(path.read_text(encoding="utf-8"))
    assert not found, (f"{path.relative_to(ROOT)} uses private course_lib names {found}: make what the benchmark "
                       "needs public and documented (in the module's __all__) and call that")


@pytest.mark.parametrize("path", BENCHMARKS, ids=lambda p: str(p.relative_to(ROOT / "benchmarks")))
def test_benchmarks_use_names_the_modules_list_as_api(path):
    found = unlisted_uses(path.read_text(encoding="utf-8"))
    assert not found, f"{path.relative_to(ROOT)} uses names its course_lib module does not list in __all__: {found}"


def test_the_check_finds_private_names():
    source = ("import torch\nimport course_lib\nfrom course_lib import kernels as K\nfrom course_lib.nf4 import _code\n"
              "import course_lib.kernels.ops as ops\n"
              "K._nf4_code()\nK.build._modules\ncourse_lib.kernels._quantize_rows_int8_torch(x)\n"
              "getattr(K, '_cache')\nops._impl\nK.gemv_nf4(x)\ntorch._dynamo.config\n")
    found = private_uses(source)
    assert found == ["line 4: course_lib.nf4._code", "line 6: course_lib.kernels._nf4_code",
                     "line 7: course_lib.kernels.build._modules",
                     "line 8: course_lib.kernels._quantize_rows_int8_torch", "line 9: course_lib.kernels._cache",
                     "line 10: course_lib.kernels.ops._impl"], found
    assert unlisted_uses("from course_lib import kernels as K\nK.gemv_nf4(x)\nK.CSRC\nK.not_a_public_name\n") == [
        "line 4: course_lib.kernels.not_a_public_name"]
