"""Turning a folder of task files, or a module, into ``{task name: callable}``.

Each ``*.py`` file directly in the folder is one task named after the file; it defines
``task(payload, helpers)`` as ``def`` or ``async def``. Files whose names start with ``_`` or ``.``
are helper modules, not tasks.

Task files are imported as members of a private package, never from ``sys.path``, so a task named
``json.py`` cannot shadow the standard library. A task file imports a sibling helper module either
relatively (``from . import _mail``) or by its plain name (``import _mail``): plain names are looked
up in the tasks folder only after every other place has said no.
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import inspect
import os
import sys
import traceback
import types
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from .errors import TaskLoadError

#: A task: ``def task(payload, helpers)`` or ``async def task(payload, helpers)``.
Task = Callable[[Any, Any], Any | Awaitable[Any]]

#: Task folders become subpackages of kongtask: a process that a task spawns can then import them
#: (and their task files) by name, since importing kongtask installs the finder that knows them.
_PACKAGE_PREFIX = "kongtask._task_folder_"


class _FolderFallbackFinder(importlib.abc.MetaPathFinder):
    """Finds top-level modules in a tasks folder, asked only after every other finder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if path is not None or "." in fullname:
            return None
        return importlib.machinery.PathFinder.find_spec(fullname, [str(self.folder)])


def _install_fallback_finder(folder: Path) -> None:
    for finder in sys.meta_path:
        if isinstance(finder, _FolderFallbackFinder) and finder.folder == folder:
            return
    sys.meta_path.append(_FolderFallbackFinder(folder))


#: The tasks folders this process loaded, for the processes it spawns (os.pathsep-separated).
TASK_FOLDERS_ENV = "_KONGTASK_TASK_FOLDERS"


def _package_name(folder: Path) -> str:
    return _PACKAGE_PREFIX + hashlib.sha1(str(folder).encode()).hexdigest()[:12]


def _new_package(name: str, folder: Path) -> types.ModuleType:
    package = types.ModuleType(name)
    package.__path__ = [str(folder)]
    package.__package__ = name
    return package


def _folder_package(folder: Path) -> str:
    """A private package whose ``__path__`` is ``folder``, so task files import relatively."""
    name = _package_name(folder)
    if name not in sys.modules:
        sys.modules[name] = _new_package(name, folder)
        # A task's multiprocessing pool with the spawn or forkserver start method unpickles the
        # task's functions by module name in a fresh interpreter, which must find this package.
        known = [f for f in os.environ.get(TASK_FOLDERS_ENV, "").split(os.pathsep) if f]
        if str(folder) not in known:
            os.environ[TASK_FOLDERS_ENV] = os.pathsep.join([*known, str(folder)])
    return name


class _TaskPackageLoader(importlib.abc.Loader):
    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        return _new_package(spec.name, self.folder)

    def exec_module(self, module: types.ModuleType) -> None:
        pass


class _SpawnedTaskFinder(importlib.abc.MetaPathFinder):
    """In a process spawned by a task (multiprocessing's spawn or forkserver): finds the private
    packages of the tasks folders its parent loaded, and their task files."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if not fullname.startswith(_PACKAGE_PREFIX):
            return None
        package, _, member = fullname.partition(".")[2].partition(".")
        package = "kongtask." + package
        for entry in os.environ.get(TASK_FOLDERS_ENV, "").split(os.pathsep):
            folder = Path(entry)
            if not entry or _package_name(folder) != package:
                continue
            if not member:
                return importlib.util.spec_from_loader(fullname, _TaskPackageLoader(folder), is_package=True)
            stem = member.replace("%2E", ".").replace("%25", "%")
            return importlib.util.spec_from_file_location(fullname, folder / f"{stem}.py")
        return None


if os.environ.get(TASK_FOLDERS_ENV) and not any(isinstance(f, _SpawnedTaskFinder) for f in sys.meta_path):
    sys.meta_path.append(_SpawnedTaskFinder())


def _describe_import_error(path: Path, exc: BaseException) -> str:
    if isinstance(exc, SyntaxError) and exc.filename:
        where = f"{exc.filename}:{exc.lineno}" if exc.lineno else exc.filename
        return f"{where}: syntax error: {exc.msg}"
    # Name the deepest frame inside the tasks folder: that is the line the user has to fix.
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if Path(f.filename).parent == path.parent]
    where = f"{frames[-1].filename}:{frames[-1].lineno}" if frames else str(path)
    return f"{where}: {type(exc).__name__}: {exc}"


def _module_name(stem: str) -> str:
    """A module name for a task file without dots, which would make ``report`` of ``report.v2.py``
    look like a package; percent-encoding keeps distinct files distinct."""
    return stem.replace("%", "%25").replace(".", "%2E")


def _import_file(package: str, path: Path) -> types.ModuleType:
    fullname = f"{package}.{_module_name(path.stem)}"
    spec = importlib.util.spec_from_file_location(fullname, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[fullname] = module
    try:
        spec.loader.exec_module(module)
    except BaseException as exc:  # noqa: BLE001 - a task file may raise anything at import, SystemExit included
        del sys.modules[fullname]
        raise TaskLoadError(f"cannot load task file {_describe_import_error(path, exc)}") from None
    return module


def _check_task(where: str, name: str, candidate: object) -> Task:
    if candidate is None:
        raise TaskLoadError(
            f"{where} defines no `task`; add `def task(payload, helpers):` (or `async def`) to it"
        )
    if not callable(candidate):
        raise TaskLoadError(f"{where}: `{name}` is {a_type_name(candidate)}, not a function")
    return candidate


def a_type_name(value: object) -> str:
    """``value``'s type with its article, for messages: "an int", "a str"."""
    name = type(value).__name__
    return f"{'an' if name[0].lower() in 'aeiou' else 'a'} {name}"


#: Where a task's own timeout is kept: set from a task file's module-level ``timeout``, or by
#: ``@app.task(timeout=...)``.
TIMEOUT_ATTRIBUTE = "__kongtask_timeout__"


def set_task_timeout(where: str, task: Task, timeout: object) -> None:
    if timeout is None:
        return
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
        raise TaskLoadError(f"{where}: `timeout` must be a positive number of seconds, got {timeout!r}")
    setattr(task, TIMEOUT_ATTRIBUTE, float(timeout))


def task_timeout(task: Task, default: float | None) -> float | None:
    """The task's own timeout in seconds, else ``default``."""
    own: float | None = getattr(task, TIMEOUT_ATTRIBUTE, None)
    return own if own is not None else default


def task_files(folder: Path) -> list[Path]:
    """The files of ``folder`` that are tasks, sorted by name."""
    return sorted(
        p for p in folder.glob("*.py") if p.is_file() and not p.name.startswith(("_", "."))
    )


def check_task_directory(folder: Path) -> None:
    """Raises :class:`TaskLoadError` unless ``folder`` is a folder."""
    if folder.is_file():
        raise TaskLoadError(f"tasks folder {folder} is a file, not a folder; pass the folder that holds the task files")
    if not folder.is_dir():
        raise TaskLoadError(f"tasks folder {folder} does not exist; create it or pass --tasks DIR")


def load_task_directory(folder: str | Path) -> dict[str, Task]:
    """Loads every task file in ``folder``; raises :class:`TaskLoadError` naming file and line."""
    folder = Path(folder).resolve()
    check_task_directory(folder)
    package = _folder_package(folder)
    _install_fallback_finder(folder)
    tasks: dict[str, Task] = {}
    for path in task_files(folder):
        module = _import_file(package, path)
        task = _check_task(str(path), "task", getattr(module, "task", None))
        set_task_timeout(str(path), task, getattr(module, "timeout", None))
        tasks[path.stem] = task
    return tasks


def load_task_module(module: str | types.ModuleType) -> dict[str, Task]:
    """Loads several tasks from one module (a dotted name, a ``.py`` path, or the module itself).

    The module either groups its tasks in a mapping named ``tasks`` (``tasks = {"name": fn}``), or
    every public function defined in it (or listed in ``__all__``) is a task named after itself.
    """
    if isinstance(module, str):
        if module.endswith(".py"):
            path = Path(module).resolve()
            if not path.is_file():
                raise TaskLoadError(f"task module {path} does not exist")
            module = _import_file(_folder_package(path.parent), path)
        else:
            try:
                module = importlib.import_module(module)
            except ImportError as exc:
                raise TaskLoadError(f"cannot import task module {module!r}: {exc}") from None
    where = getattr(module, "__file__", None) or module.__name__
    grouped = getattr(module, "tasks", None)
    if grouped is not None:
        if not isinstance(grouped, Mapping):
            raise TaskLoadError(f"{where}: `tasks` must map task names to functions")
        return {str(name): _check_task(where, str(name), fn) for name, fn in grouped.items()}
    names = getattr(module, "__all__", None)
    if names is None:
        names = [
            name
            for name, value in vars(module).items()
            if not name.startswith("_") and inspect.isfunction(value) and value.__module__ == module.__name__
        ]
    tasks = {name: _check_task(where, name, getattr(module, name, None)) for name in names}
    if not tasks:
        raise TaskLoadError(f"{where} defines no tasks; add functions or a `tasks` mapping")
    return tasks


def is_async_task(task: Task) -> bool:
    """Whether calling ``task`` returns something to await (``async def``, or a callable object's)."""
    if inspect.iscoroutinefunction(task):
        return True
    call = getattr(task, "__call__", None)  # noqa: B004 - reads the method to inspect it, not to test callability
    return inspect.iscoroutinefunction(call)
