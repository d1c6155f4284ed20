"""Loading tasks: names with dots, an empty task list, a file given as the folder, messages."""

from __future__ import annotations

import asyncio
import textwrap
from pathlib import Path

import pytest

import kongtask
from kongtask.errors import ConfigurationError, TaskLoadError
from kongtask.tasks import load_task_directory, load_task_module

UNREACHABLE = "postgresql://nobody@127.0.0.1:1/nothing"


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def test_a_dotted_task_file_imports_its_siblings_relatively_and_keeps_its_name(tmp_path: Path) -> None:
    folder = tmp_path / "tasks"
    _write(folder / "_helper.py", "GREETING = 'hello'\n")
    _write(folder / "report.v2.py", """
        from . import _helper
        from ._helper import GREETING

        def task(payload, helpers):
            return (_helper.GREETING, GREETING, payload)
    """)
    _write(folder / "report_v2.py", "def task(payload, helpers):\n    return 'underscore'\n")
    _write(folder / "report%2Ev2.py", "def task(payload, helpers):\n    return 'percent'\n")
    tasks = load_task_directory(folder)
    assert sorted(tasks) == ["report%2Ev2", "report.v2", "report_v2"]
    assert tasks["report.v2"]({"n": 1}, None) == ("hello", "hello", {"n": 1})
    assert tasks["report_v2"]({}, None) == "underscore"
    assert tasks["report%2Ev2"]({}, None) == "percent"


def test_a_dotted_task_module_file_imports_its_siblings(tmp_path: Path) -> None:
    _write(tmp_path / "_shared.py", "VALUE = 3\n")
    module = _write(tmp_path / "jobs.v1.py", "from ._shared import VALUE\n\ndef triple(payload, helpers):\n    return VALUE\n")
    assert load_task_module(str(module))["triple"]({}, None) == 3


def test_a_file_given_as_the_tasks_folder_is_named_a_file(tmp_path: Path) -> None:
    file = _write(tmp_path / "send_email.py", "def task(payload, helpers):\n    pass\n")
    with pytest.raises(TaskLoadError, match="is a file, not a folder") as raised:
        load_task_directory(file)
    assert "does not exist" not in str(raised.value)


def test_a_task_that_is_not_a_function_is_named_with_the_right_article(tmp_path: Path) -> None:
    _write(tmp_path / "tasks" / "count.py", "task = 5\n")
    with pytest.raises(TaskLoadError, match="`task` is an int, not a function"):
        load_task_directory(tmp_path / "tasks")
    with pytest.raises(ConfigurationError, match="'count' is an int, not a function"):
        asyncio.run(kongtask.run_once(task_list={"count": 5}, connection_string=UNREACHABLE))  # type: ignore[dict-item]
    with pytest.raises(ConfigurationError, match="'name' is a str, not a function"):
        asyncio.run(kongtask.run_once(task_list={"name": "x"}, connection_string=UNREACHABLE))  # type: ignore[dict-item]


@pytest.mark.parametrize("runner", [kongtask.run, kongtask.run_once])
def test_no_runnable_tasks_is_refused_before_connecting(tmp_path: Path, runner: object) -> None:
    empty = tmp_path / "tasks"
    _write(empty / "_helper.py", "X = 1\n")
    # A continuous run waits for an unreachable server: the deadline turns that into a failure.
    with pytest.raises(ConfigurationError, match="no runnable tasks"):
        asyncio.run(asyncio.wait_for(runner(task_list={}, connection_string=UNREACHABLE), 20))  # type: ignore[operator]
    with pytest.raises(ConfigurationError, match="no runnable tasks"):
        asyncio.run(asyncio.wait_for(runner(task_directory=empty, connection_string=UNREACHABLE), 20))  # type: ignore[operator]
