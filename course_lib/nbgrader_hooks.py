"""nbgrader hooks that keep autograding honest: tampering is undone, a dead kernel costs only its cells.

Registered in ``nbgrader_config.py`` (``configure(c)``); the tests' scratch course uses the same call.

``GuardedExecute`` replaces nbgrader's ``Execute`` preprocessor of ``nbgrader autograde``:

- **before the first cell** it installs a guard in the kernel: a snapshot of ``builtins``, ``sys``'s
  hooks and streams, IPython's shell and kernel classes and instances (``showtraceback``,
  ``_showtraceback``, ``run_cell``, ``do_execute``, ...), the input/AST transformers, custom
  exception handlers and event callbacks; with ``memory_limit_mb`` it also lowers the kernel's
  ``RLIMIT_AS`` (soft and hard, so learner code cannot raise it again);
- **before every graded test cell** it restores all of that, loads ``course_lib.grading`` afresh
  from its file (and rebinds the notebook's name ``grading``) and reloads any ``course_lib`` module
  whose functions were replaced. The guard's code is sent as a *user expression*, which IPython
  evaluates without input or AST transformers; it answers with a per-cell random token. No
  token (learner code broke ``exec``, ``compile``, the kernel's message handling...) means the test
  is **not run** and the cell gets an error output: it scores 0 (fail closed). What the guard had to
  undo is written to the cell's metadata ``course_guard.restored`` and to the log (flagged);
- **after every graded test cell** its stderr output (learner prints and warnings, C code writing to
  file descriptor 2) becomes stdout: nbgrader would score any stderr output 0;
- **after every cell** nbgrader's own rule still applies: a reply with status "error" and no error
  output (a silenced traceback) gets an error output, so it scores 0;
- **when the kernel dies** (``os._exit``, a segfault, the out-of-memory killer) the cell gets an
  error output, the kernel is restarted and the code cells before it are replayed quietly; the rest
  of the notebook is graded as usual. After ``max_kernel_deaths`` deaths every remaining code
  cell gets an error output. nbgrader alone would fail the whole notebook (no scores at all).

Threat model: learner code in the notebook that uses ordinary Python to replace the grading
helpers or the references, rebind names, patch builtins, sys hooks, IPython's traceback display,
transformers, exception handlers or event callbacks. Out of scope: a learner who rewrites CPython's
import machinery or torch itself (e.g. ``torch.Tensor.any``), hunts the guard's random-named
snapshot in the kernel's memory, or leaves a background thread that re-patches things while a
test runs. Run the autograder without network and with a memory limit (INSTRUCTORS.md,
"Grading safely").

``NoOutputWidgetMimic``: neither autograde nor ``nbgrader validate`` (nor the lab's Validate button)
imitates a front end's ``ipywidgets.Output``. nbclient's imitation sends comm messages to the kernel
on the shell channel while the cell runs, and on a loaded machine the cell's reply then never reached
nbclient: an idle kernel, a client waiting for the 600 s timeout, and with the Validate button the
whole Jupyter server blocked meanwhile. Grading needs no widget output. nbgrader's Validator takes no
preprocessors from the config, so ``configure`` gives nbgrader's own ``Execute`` the same method.

``HideHiddenTests`` (for ``nbgrader generate_feedback``) removes the hidden tests' source from the
feedback and shortens tracebacks of graded cells to their last line (the assertion message), which
would otherwise show the failing hidden line.
"""

from __future__ import annotations

import ast
import copy
import inspect
import secrets
import textwrap
from pathlib import Path

from nbformat.notebooknode import NotebookNode
from traitlets import Integer

try:  # nbgrader is a dependency of the course, but course_lib must import without it
    from nbclient.exceptions import CellTimeoutError, DeadKernelError
    from nbclient.util import ensure_async, run_sync
    from nbgrader.preprocessors import ClearHiddenTests, DeduplicateIds, Execute, NbGraderPreprocessor
except ImportError:  # pragma: no cover
    Execute = ClearHiddenTests = DeduplicateIds = NbGraderPreprocessor = object  # type: ignore[assignment,misc]

COURSE_DIR = str(Path(__file__).resolve().parent)
GUARD_ERROR = "GradingIntegrityError"


def _kernel_guard(mode, token, course_dir, memory_limit_mb):  # pragma: no cover (runs in the kernel)
    """Runs inside the kernel: its source is sent there, this module is never imported there."""
    import ast
    import builtins
    import importlib
    import importlib.util
    import os
    import sys
    import threading

    key = "_course_guard_" + token.split("-")[0]
    from IPython.core.interactiveshell import InteractiveShell

    ip = InteractiveShell._instance  # get_ipython is not a builtin while user expressions run

    def snapshot(module):  # a course_lib module's public names, with copies of its mutable values
        values = {k: v for k, v in vars(module).items() if k[:1] != "_"}
        contents = {}
        for k, v in values.items():
            if type(v) in (dict, list, set):
                contents[k] = type(v)(v)
            elif type(v).__name__ in ("Tensor", "Parameter") and v.numel() <= 10**6:
                contents[k] = v.detach().clone()
        return module, values, contents
    objects = [ip, getattr(ip, "kernel", None)]
    objects = [o for o in objects if o is not None]
    classes = [c for o in objects for c in type(o).__mro__ if c is not object]
    sys_names = ("excepthook", "displayhook", "stdout", "stderr", "breakpointhook", "unraisablehook")
    if mode == "install":
        if memory_limit_mb:
            import resource
            limit = int(memory_limit_mb) * 1024 * 1024
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        sys.__dict__[key] = {
            "builtins": dict(vars(builtins)),
            "sys": {n: getattr(sys, n) for n in sys_names if hasattr(sys, n)},
            "classes": [(c, dict(vars(c))) for c in classes],
            "instances": [(o, {n: v for n, v in vars(o).items() if callable(v)}) for o in objects],
            "lists": {n: list(getattr(ip, n)) for n in
                      ("input_transformers_cleanup", "input_transformers_post", "ast_transformers")},
            "transformer_manager": ip.input_transformer_manager,
            "custom": (ip.custom_exceptions, ip.CustomTB, ip.InteractiveTB, ip.SyntaxTB),
            "events": {n: list(cbs) for n, cbs in ip.events.callbacks.items()},
            "defined": {},
            "modules": {},
        }
        # course_lib's modules as they are before any cell runs: their constants are restored from this
        names = sorted({f.rsplit(".", 1)[0] for f in os.listdir(course_dir) if f.endswith((".py", ".pyc"))}
                       - {"__init__", "course_grading", "nbgrader_hooks", "grading"})  # .pyc: shipped without source
        for name in ["course_lib." + n for n in names] + ["course_lib.kernels.build", "course_lib.kernels.ops"]:
            try:
                module = importlib.import_module(name)
            except Exception:  # a module that cannot import here is checked by its functions only
                continue
            sys.__dict__[key]["modules"][name] = snapshot(module)
        return "installed:" + token
    state = sys.__dict__.get(key)
    if state is None:
        return "no guard state"
    restored = []

    for name, value in state["builtins"].items():
        if name not in ("_", "__", "___") and builtins.__dict__.get(name, restored) is not value:
            builtins.__dict__[name] = value
            restored.append("builtins." + name)
    for name, value in state["sys"].items():
        if getattr(sys, name) is not value:
            restored.append("sys." + name)
            setattr(sys, name, value)
    if sys.gettrace() is not None or sys.getprofile() is not None:
        sys.settrace(None)
        sys.setprofile(None)
        restored.append("sys.settrace/setprofile")
    threading.settrace(None)
    threading.setprofile(None)
    def method(value):  # what a class defines as behaviour (not data that IPython updates as it runs)
        return callable(value) or isinstance(value, (classmethod, staticmethod, property))

    for cls, snap in state["classes"]:
        for name in list(vars(cls)):
            if name not in snap and not name.startswith("__") and method(vars(cls)[name]):
                delattr(cls, name)
                restored.append(f"{cls.__name__}.{name}")
        for name, value in snap.items():
            if not name.startswith("__") and method(value) and vars(cls).get(name, restored) is not value:
                setattr(cls, name, value)
                restored.append(f"{cls.__name__}.{name}")
    for obj, snap in state["instances"]:
        for name, value in list(vars(obj).items()):
            if name in snap:
                if value is not snap[name]:
                    vars(obj)[name] = snap[name]
                    restored.append(f"{type(obj).__name__}().{name}")
            elif callable(value) and hasattr(type(obj), name):
                del vars(obj)[name]
                restored.append(f"{type(obj).__name__}().{name}")
    if ip.input_transformer_manager is not state["transformer_manager"]:
        ip.input_transformer_manager = state["transformer_manager"]
        restored.append("input_transformer_manager")
    for name, snap in state["lists"].items():
        current = getattr(ip, name)
        if list(current) != snap:
            current[:] = snap
            restored.append(name)
    custom = (ip.custom_exceptions, ip.CustomTB, ip.InteractiveTB, ip.SyntaxTB)
    if any(a is not b for a, b in zip(custom, state["custom"])):
        ip.custom_exceptions, ip.CustomTB, ip.InteractiveTB, ip.SyntaxTB = state["custom"]
        restored.append("custom exception handlers")
    for name, cbs in ip.events.callbacks.items():  # those that run before the test cell
        if name in ("pre_execute", "pre_run_cell") and cbs != state["events"].get(name, []):
            cbs[:] = state["events"].get(name, [])
            restored.append("events." + name)

    def genuine(module, path):
        file = getattr(module, "__file__", None)
        return isinstance(file, str) and os.path.realpath(file) == os.path.realpath(path)

    def fresh(name, path, package=False):
        search = [os.path.dirname(path)] if package else None
        spec = importlib.util.spec_from_file_location(name, path, submodule_search_locations=search)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        return module

    package = sys.modules.get("course_lib")
    if package is None or not genuine(package, os.path.join(course_dir, "__init__.py")):
        if package is not None:
            restored.append("course_lib")
        sys.modules.pop("course_lib", None)
        package = fresh("course_lib", os.path.join(course_dir, "__init__.py"), package=True)
    grading_path = os.path.join(course_dir, "grading.py")
    old = sys.modules.get("course_lib.grading")
    grading = fresh("course_lib.grading", grading_path)
    if old is not None:
        for attr, value in vars(grading).items():
            if callable(value) and getattr(value, "__module__", None) == "course_lib.grading":
                before = getattr(old, attr, None)
                code = getattr(getattr(before, "__wrapped__", before), "__code__", None)
                if getattr(before, "__module__", None) != "course_lib.grading" or (
                        code is not None and os.path.realpath(code.co_filename) != os.path.realpath(grading_path)):
                    restored.append("course_lib.grading." + attr)
    if "grading" in ip.user_ns and ip.user_ns["grading"] is not package.__dict__.get("grading"):
        restored.append("name grading")
    package.grading = grading
    ip.user_ns["grading"] = grading

    for name, (module, values, contents) in state["modules"].items():  # constants (and functions) as installed
        if sys.modules.get(name) is not module:
            continue  # replaced in sys.modules: the file checks below import the genuine module again
        current = vars(module)
        for attr, value in values.items():
            if current.get(attr, restored) is not value:
                current[attr] = value
                restored.append(f"{name}.{attr}")
            elif attr in contents:
                saved, same = contents[attr], None
                if type(saved) in (dict, list, set):
                    same = type(value) is type(saved) and value == saved
                else:
                    same = value.shape == saved.shape and value.dtype == saved.dtype and bool((value == saved).all())
                if not same:
                    if type(saved) in (dict, list, set):
                        value.clear()
                        value.update(saved) if type(saved) is not list else value.extend(saved)
                    else:
                        value.data.copy_(saved)
                    restored.append(f"{name}.{attr} (edited in place)")
    for name, module in list(sys.modules.items()):
        if not name.startswith("course_lib.") or name == "course_lib.grading" or module is None:
            continue
        path = getattr(module, "__file__", None) or ""
        if not os.path.realpath(path).startswith(os.path.realpath(course_dir) + os.sep):
            sys.modules.pop(name)
            module = importlib.import_module(name)
            restored.append(name)
            if name in state["modules"]:
                state["modules"][name] = snapshot(module)
            continue
        if path not in state["defined"]:
            try:
                with open(path, encoding="utf-8") as f:
                    tree = ast.parse(f.read())
                state["defined"][path] = [n.name for n in tree.body
                                          if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
            except (OSError, SyntaxError, ValueError):  # no source (a .pyc): the install snapshot covers it
                state["defined"][path] = []
        tampered = []
        for attr in state["defined"][path]:
            value = module.__dict__.get(attr)
            inner = getattr(value, "__wrapped__", value)
            code = getattr(inner, "__code__", None)
            if getattr(value, "__module__", None) != name or (
                    code is not None and os.path.realpath(code.co_filename) != os.path.realpath(path)):
                tampered.append(attr)
        if tampered:
            try:
                importlib.reload(module)
            except Exception:  # a fake module: import the real one afresh
                sys.modules.pop(name, None)
                module = importlib.import_module(name)
            restored += [f"{name}.{a}" for a in tampered]
        if name in state["modules"] and (tampered or state["modules"][name][0] is not module):
            state["modules"][name] = snapshot(module)  # the genuine module, loaded again
        parent, _, short = name.rpartition(".")
        if parent in sys.modules and getattr(sys.modules[parent], short, module) is not module:
            setattr(sys.modules[parent], short, module)
            restored.append(f"{parent}.{short}")
    return "restored:" + token + ":" + ",".join(restored)


def _guard_expression(mode: str, token: str, memory_limit_mb: int | None) -> str:
    source = textwrap.dedent(inspect.getsource(_kernel_guard))
    args = {"mode": mode, "token": token, "course_dir": COURSE_DIR, "memory_limit_mb": memory_limit_mb}
    return (f"(lambda ns: (__import__('builtins').exec(__import__('builtins').compile({source!r}, '<course-guard>', "
            f"'exec'), ns), ns['_kernel_guard'](**{args!r}))[1])({{'__name__': '__course_guard__'}})")


def _error_output(ename: str, evalue: str) -> NotebookNode:
    return NotebookNode(output_type="error", ename=ename, evalue=evalue, traceback=[f"{ename}: {evalue}"])


def _imports_of(source: str) -> str:
    """The top-level import statements of a cell ("" when it does not parse)."""
    try:
        tree = ast.parse("\n".join("" if ln.lstrip().startswith(("%", "!")) else ln for ln in source.split("\n")))
    except SyntaxError:
        return ""
    return "\n".join(ast.unparse(n) for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom)))


def _stderr_to_stdout(cell: NotebookNode) -> None:
    """nbgrader scores a test cell with any stderr output 0. Learner prints and warnings, and writes to
    file descriptor 2 from C code (which ipykernel forwards as stderr), are no failure: they become stdout.
    A failed test still has its error output."""
    for output in cell.get("outputs", []):
        if output.get("output_type") == "stream" and output.get("name") == "stderr":
            output["name"] = "stdout"


def _is_graded_code(cell: NotebookNode) -> bool:
    meta = cell.get("metadata", {}).get("nbgrader", {})
    return cell.cell_type == "code" and bool(meta.get("grade")) and not meta.get("solution")


class NoOutputWidgetMimic:
    """Mixin for an nbclient executor: no imitation of the front end of ``ipywidgets.Output`` (the module
    docstring says why). Widget state is still recorded; an Output widget just keeps no outputs."""

    def on_comm_open_jupyter_widget(self, msg):
        return None


class GuardedExecute(NoOutputWidgetMimic, Execute):
    """nbgrader's Execute with the integrity guard and dead-kernel recovery (see the module docstring)."""

    memory_limit_mb = Integer(None, allow_none=True,
                              help="RLIMIT_AS of the kernel in MiB (None: no limit)").tag(config=True)
    max_kernel_deaths = Integer(3, help="kernel deaths (or kernels stuck after a timeout) per notebook before "
                                "the rest is marked failed").tag(config=True)
    graded_cell_timeout = Integer(None, allow_none=True, help="timeout of graded test cells in seconds, where they "
                                  "call the learner's code (None: Execute.timeout)").tag(config=True)

    def _get_timeout(self, cell=None):
        if cell is not None and self.graded_cell_timeout and _is_graded_code(cell):
            return self.graded_cell_timeout
        return super()._get_timeout(cell)

    def reset_execution_trackers(self):
        super().reset_execution_trackers()
        self._guard_prefix = secrets.token_hex(8)
        self._guard_installed_kc = None
        self._ran: list[tuple[int, NotebookNode]] = []
        self._deaths = 0

    async def _guard(self, mode: str, cell: NotebookNode) -> str | None:
        """Run the guard in the kernel; returns its report, or None when it did not answer correctly."""
        token = f"{self._guard_prefix}-{secrets.token_hex(8)}"
        msg_id = await ensure_async(self.kc.execute("", silent=True, store_history=False,
                                                    user_expressions={"guard": _guard_expression(
                                                        mode, token, self.memory_limit_mb)}))
        reply = await self.async_wait_for_reply(msg_id, cell)
        result = ((reply or {}).get("content", {}).get("user_expressions") or {}).get("guard", {})
        text = result.get("data", {}).get("text/plain", "") if result.get("status") == "ok" else ""
        try:
            text = ast.literal_eval(text) if text else ""  # a str's repr; never eval what a kernel sent
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            text = ""
        prefix = {"install": "installed:", "restore": "restored:"}[mode] + token
        if not isinstance(text, str) or not text.startswith(prefix):
            self.log.warning("course guard (%s) did not answer: %r", mode, result.get("evalue") or text)
            return None
        return text[len(prefix) + 1:]

    async def _install(self, cell: NotebookNode) -> None:
        if self._guard_installed_kc is not self.kc:
            if await self._guard("install", cell) is None:
                self.log.warning("course guard could not be installed; graded cells will fail closed")
            self._guard_installed_kc = self.kc

    async def _restart_and_replay(self, killer: NotebookNode, cell_index: int) -> bool:
        """Restart the dead kernel and replay the code cells that ran before; False when that fails."""
        self._deaths += 1
        if self._deaths > self.max_kernel_deaths:
            return False
        self.log.warning("the kernel died in cell %d: restarting it and replaying %d cells", cell_index, len(self._ran))
        cells = list(self.nb.cells)  # nbclient writes each executed cell back into nb.cells[index]
        try:
            await ensure_async(self.km.restart_kernel(now=True))
            await ensure_async(self.kc.wait_for_ready(timeout=self.startup_timeout))
            self._guard_installed_kc = None
            await self._install(NotebookNode(cell_type="code", source="", metadata={}, outputs=[]))
            for index, ran in self._ran:
                await super().async_execute_cell(copy.deepcopy(ran), index, store_history=False)
            imports = _imports_of(killer.source)
            if imports:  # later cells may use what the dead cell imported (a test cell's `from course_lib import x`)
                await super().async_execute_cell(NotebookNode(cell_type="code", source=imports, metadata={}, outputs=[]),
                                                 cell_index, store_history=False)
        except Exception as exc:  # a second death while replaying, or a kernel that will not start
            self.log.warning("replay after a kernel death failed: %r", exc)
            return False
        finally:
            self.nb.cells[:] = cells
        return True

    async def async_execute_cell(self, cell, cell_index, execution_count=None, store_history=True):
        if cell.cell_type != "code" or not cell.source.strip():
            return await super().async_execute_cell(cell, cell_index, execution_count, store_history)
        if self._deaths > self.max_kernel_deaths:
            cell.outputs = [_error_output("DeadKernelError", "not run: the kernel died too often in this notebook")]
            return cell
        try:
            await self._install(cell)
            if _is_graded_code(cell):
                report = await self._guard("restore", cell)
                if report is None:
                    cell.outputs = [_error_output(GUARD_ERROR, "the grading environment could not be restored "
                                                  "before this test (the submission broke the kernel's Python): "
                                                  "the test was not run")]
                    cell.metadata["course_guard"] = {"restored": None}
                    return cell
                if report:
                    self.log.warning("tampering undone before %s: %s", cell.metadata.nbgrader.get("grade_id"), report)
                    cell.metadata["course_guard"] = {"restored": report.split(",")}
            cell = await super().async_execute_cell(cell, cell_index, execution_count, store_history)
            if _is_graded_code(cell):
                _stderr_to_stdout(cell)
        except (DeadKernelError, CellTimeoutError) as exc:
            what = ("the kernel died while running this cell (os._exit, a crash or out of memory)"
                    if isinstance(exc, DeadKernelError) else "the kernel did not answer after this cell timed out")
            cell.outputs = list(cell.get("outputs", [])) + [
                _error_output(type(exc).__name__, what + "; it was restarted for the remaining cells")]
            if not await self._restart_and_replay(cell, cell_index):
                self._deaths = self.max_kernel_deaths + 1
            return cell
        self._ran.append((cell_index, copy.deepcopy(cell)))
        return cell

    execute_cell = run_sync(async_execute_cell)  # nbclient binds execute_cell to its own coroutine


class DeduplicateIdsFully(DeduplicateIds):
    """nbgrader's DeduplicateIds (the last cell of a grade_id keeps it) that removes the other copies'
    metadata entirely: nbgrader 0.9.6 leaves ``nbgrader: {}``, on which OverwriteCells.add_missing_task_cells
    raises KeyError 'grade_id' and the whole submission fails (a learner who copies a cell gets no grade)."""

    def preprocess(self, nb, resources):
        nb, resources = super().preprocess(nb, resources)
        for cell in nb.cells:
            if "nbgrader" in cell.metadata and not cell.metadata["nbgrader"]:
                del cell.metadata["nbgrader"]
        return nb, resources


class HideHiddenTests(ClearHiddenTests):
    """For generate_feedback: drop hidden tests from graded cells and reduce their tracebacks to the message."""

    enforce_metadata = False

    def preprocess_cell(self, cell, resources, cell_index):
        if cell.cell_type == "code" and self.begin_test_delimeter in cell.source:
            self._remove_hidden_test_region(cell)
            for output in cell.get("outputs", []):
                if output.get("output_type") == "error":
                    output["traceback"] = [f"{output.get('ename', 'Error')}: {output.get('evalue', '')}"]
        return cell, resources


RUN_ON_TAG = "raises-exception"


class TagRunOn(NbGraderPreprocessor):
    """For generate_assignment: tag every answer and test code cell ``raises-exception`` in the release.

    JupyterLab's Run All (like nbclient) stops at the first cell that raises unless the cell carries this tag:
    an unsolved exercise (its stub raises NotImplementedError, its test fails) would otherwise leave every
    later cell of the notebook unrun. Grading does not change: the autograder executes every cell anyway and
    scores a test cell by its error output, tag or not; the tag is not part of nbgrader's cell checksums.
    """

    def preprocess_cell(self, cell, resources, cell_index):
        meta = cell.metadata.get("nbgrader", {})
        if cell.cell_type == "code" and (meta.get("grade") or meta.get("solution")):
            tags = list(cell.metadata.get("tags", []))
            if RUN_ON_TAG not in tags:
                cell.metadata["tags"] = tags + [RUN_ON_TAG]
        return cell, resources


def configure_release(c) -> None:
    """The release side of the hooks (``generate_assignment``): ``TagRunOn`` after nbgrader's own steps."""
    from nbgrader.converters.generate_assignment import GenerateAssignment

    c.GenerateAssignment.preprocessors = [*GenerateAssignment.class_traits()["preprocessors"].default(), TagRunOn]


def configure(c, memory_limit_mb: int | None = None) -> None:
    """Register the hooks in an nbgrader config ``c`` (nbgrader_config.py and the tests call this)."""
    from nbconvert.preprocessors import ClearMetadataPreprocessor
    from nbgrader.converters.autograde import Autograde
    from nbgrader.converters.generate_feedback import GenerateFeedback

    c.Autograde.sanitize_preprocessors = [DeduplicateIdsFully if p is DeduplicateIds else p
                                          for p in Autograde.class_traits()["sanitize_preprocessors"].default()]
    c.Autograde.autograde_preprocessors = [GuardedExecute if p is Execute else p
                                           for p in Autograde.class_traits()["autograde_preprocessors"].default()]
    assert ClearMetadataPreprocessor in c.Autograde.autograde_preprocessors
    # The Validator's preprocessor list is not configurable: its Execute (nbgrader's) gets the method.
    Execute.on_comm_open_jupyter_widget = NoOutputWidgetMimic.on_comm_open_jupyter_widget
    configure_release(c)
    feedback = list(GenerateFeedback.class_traits()["preprocessors"].default())
    c.GenerateFeedback.preprocessors = feedback[:1] + [HideHiddenTests] + feedback[1:]
    if memory_limit_mb:
        c.GuardedExecute.memory_limit_mb = int(memory_limit_mb)
