"""The worker's options are declared once: the library, its checks and the CLI's settings agree."""

from __future__ import annotations

import asyncio
import dataclasses
import typing

import pytest

import kongtask
from kongtask import settings
from kongtask._job import JobOptions
from kongtask._options import ResolvedOptions, RunOptions, WorkerOptions


def test_what_callers_pass_and_what_the_workers_read_are_the_same_fields_and_types() -> None:
    passed = typing.get_type_hints(RunOptions)
    resolved = typing.get_type_hints(ResolvedOptions)
    assert passed == resolved
    assert set(typing.get_type_hints(WorkerOptions)) < set(passed)


def test_options_are_built_by_name_only_so_two_timeouts_cannot_swap() -> None:
    with pytest.raises(TypeError):
        ResolvedOptions(None, None, None, None, "graphile_worker")  # type: ignore[misc]
    assert ResolvedOptions(shutdown_timeout=3.0).poll_interval == ResolvedOptions().poll_interval


def test_every_library_argument_the_cli_passes_is_a_declared_option() -> None:
    worker = {o.passes_as for o in settings.options(settings.WORKER) if o.passes_as}
    assert worker and worker <= set(typing.get_type_hints(RunOptions))
    add_job = {o.passes_as for o in settings.options(settings.ADD_JOB) if o.passes_as} - {"schema"}
    assert add_job and add_job <= set(typing.get_type_hints(JobOptions))


def test_the_defaults_the_cli_shows_are_the_librarys() -> None:
    by_argument = {o.passes_as: o.default for o in settings.options(settings.WORKER) if o.passes_as}
    defaults = {f.name: f.default for f in dataclasses.fields(ResolvedOptions)}
    for argument, default in by_argument.items():
        if argument != "log_success":  # the CLI turns "not given" into an explicit flag
            assert default == defaults[argument], argument


def test_a_bad_option_value_is_one_readable_error_before_any_connection() -> None:
    with pytest.raises(kongtask.ConfigurationError, match="concurrency must be at least 1"):
        asyncio.run(kongtask.run_once(task_list={"t": lambda payload, helpers: None}, concurrency=0,
                                      connection_string="postgresql://nobody@127.0.0.1:1/none"))
