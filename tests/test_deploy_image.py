"""The container image's command works, tested without a Docker engine.

The build stage's RUN lines run here as the Dockerfile runs them (the wheel built with pip, then
installed into a fresh virtualenv), with the paths its ENV names moved to a temporary folder. The
runtime stage's exact command line (``tini -- kongtask worker``) then runs from that virtualenv,
in a project folder laid out as the image's, as PID 1 of a PID namespace of its own, as in a
container; ``docker stop``'s SIGTERM must reach the worker and let its running job finish.
"""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from tests.cli_support import clean_env, write_task
from tests.dockerfile import Stage, stages
from tests.support import wait_until

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"

#: The ENV values of the build stage that are paths in the image, and so move to a temporary folder.
_MOVED = ("VIRTUAL_ENV", "WHEELS")


def _build_and_runtime() -> tuple[Stage, Stage]:
    found = stages(DOCKERFILE)
    return found["build"], found["runtime"]


def test_the_image_runs_kongtask_worker_under_tini_as_a_non_root_user() -> None:
    build, runtime = _build_and_runtime()
    assert list(stages(DOCKERFILE))[-1] == "runtime", "the last stage is the image"
    for stage in (build, runtime):
        assert stage.base.startswith("python:") and stage.base.endswith("-slim"), stage.base
    assert runtime.exec_form("ENTRYPOINT") + runtime.exec_form("CMD") == ["tini", "--", "kongtask", "worker"]
    user = runtime.last("USER")
    assert user is not None and user.split(":")[0] not in ("0", "root"), user
    assert user.split(":")[0].isdigit(), "a numeric user, so that Kubernetes' runAsNonRoot can check it"
    # A virtualenv only works where it was made: the runtime takes it whole, at the same path.
    venv = build.env()["VIRTUAL_ENV"]
    assert f"--from=build {venv} {venv}" in runtime.all("COPY")
    assert runtime.env()["VIRTUAL_ENV"] == venv
    assert runtime.env()["PATH"].startswith(f"{venv}/bin:")
    assert runtime.last("WORKDIR") == "/app"


def _ignored(path: str, patterns: list[str]) -> bool:
    """Whether ``.dockerignore`` keeps ``path`` (relative to the context) out of the build context."""
    ignored = False
    for pattern in patterns:
        keep = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if pattern.startswith("**/"):
            hit = any(fnmatch.fnmatch(part, pattern[3:]) for part in parts)
        else:
            hit = any(fnmatch.fnmatch(prefix, pattern) for prefix in prefixes)
        if hit:
            ignored = not keep
    return ignored


def test_the_build_context_holds_every_file_the_wheel_needs_and_no_other() -> None:
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    build, _ = _build_and_runtime()
    copied = [word for text in build.all("COPY") for word in text.split()[:-1]]
    for source in copied:
        assert not _ignored(source.rstrip("/"), patterns), f"{source} is copied but .dockerignore leaves it out"
    package_files = [p.relative_to(ROOT).as_posix() for p in (ROOT / "kongtask").rglob("*")
                     if p.is_file() and "__pycache__" not in p.parts]
    assert package_files and not [p for p in package_files if _ignored(p, patterns)]
    for outside in ("tests/conftest.py", ".venv/bin/python", ".git/HEAD", "tasks/send_email.py", ".env"):
        assert _ignored(outside, patterns), f"{outside} would be sent to the builder"
    assert _ignored("kongtask/__pycache__/cli.cpython-311.pyc", patterns)


@dataclass
class ImageVenv:
    venv: Path
    env: dict[str, str]  # the runtime stage's ENV, its paths moved here
    argv: list[str]  # ENTRYPOINT + CMD, exactly


def _run_build_stage(build: Stage, scratch: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "VIRTUAL_ENV", "PYTHON"))}
    env |= build.env()
    moved = {name: str(scratch / name.lower()) for name in _MOVED}
    env |= moved
    # `python` is the interpreter running these tests, as the base image's is its own.
    bin_dir = scratch / "bin"
    bin_dir.mkdir()
    (bin_dir / "python").symlink_to(sys.executable)
    env["PATH"] = f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}"
    workdir = scratch / "src"
    workdir.mkdir()
    for text in build.all("COPY"):
        *sources, destination = text.split()
        target = workdir / destination
        for source in sources:
            origin = ROOT / source
            if origin.is_dir():
                shutil.copytree(origin, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                target.mkdir(parents=True, exist_ok=True)
                shutil.copy2(origin, target / origin.name)
    for command in build.all("RUN"):
        for name in _MOVED:
            assert build.env()[name] not in command, f"a RUN line names {build.env()[name]}: use ${name}"
        done = subprocess.run(["/bin/sh", "-c", command], cwd=workdir, env=env, capture_output=True, text=True,
                              timeout=600)
        assert done.returncode == 0, f"RUN {command}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return moved


@pytest.fixture(scope="module")
def image_venv(tmp_path_factory: pytest.TempPathFactory) -> ImageVenv:
    build, runtime = _build_and_runtime()
    moved = _run_build_stage(build, tmp_path_factory.mktemp("image-build"))
    venv = Path(moved["VIRTUAL_ENV"])
    env = dict(runtime.env())
    image_venv_path = env["VIRTUAL_ENV"]
    env["VIRTUAL_ENV"] = str(venv)
    # The runtime's PATH with the virtualenv moved, and tini where this machine has it.
    env["PATH"] = env["PATH"].replace(image_venv_path, str(venv)).replace("$PATH", os.environ.get("PATH", ""))
    return ImageVenv(venv, env, runtime.exec_form("ENTRYPOINT") + runtime.exec_form("CMD"))


def test_the_build_installs_the_wheel_not_the_checkout(image_venv: ImageVenv) -> None:
    shown = subprocess.run([str(image_venv.venv / "bin" / "python"), "-c", "import kongtask; print(kongtask.__file__)"],
                           capture_output=True, text=True, cwd="/", timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.strip().startswith(str(image_venv.venv)), shown.stdout
    assert (image_venv.venv / "bin" / "kongtask").exists()
    # The dashboard extra is in, so the image serves `kongtask dashboard` too.
    extra = subprocess.run([str(image_venv.venv / "bin" / "python"), "-c", "import uvicorn, jinja2"],
                           capture_output=True, text=True, cwd="/", timeout=60)
    assert extra.returncode == 0, extra.stderr


#: A task that says it started, then waits (up to a minute) for the test to let it finish.
_WAITING_TASK = """
import os, pathlib, time

def task(payload, helpers):
    folder = pathlib.Path(os.environ["KT_TEST_DIR"])
    (folder / "started").write_text(str(helpers.job.id))
    deadline = time.monotonic() + 60
    while not (folder / "finish").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    (folder / "finished").write_text(str(helpers.job.id))
"""


def _pid_namespace_problem() -> str | None:
    if shutil.which("unshare") is None:
        return "unshare (util-linux) is not installed"
    tried = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", "true"], capture_output=True, text=True,
                           timeout=30)
    if tried.returncode != 0:
        return f"cannot make a PID namespace here (unshare --pid needs root): {tried.stderr.strip()}"
    return None


def _namespace_pid_1(unshare: subprocess.Popen[bytes]) -> int:
    """The host's pid of the process that is PID 1 inside ``unshare --fork``'s namespace."""
    children = Path(f"/proc/{unshare.pid}/task/{unshare.pid}/children")
    found = wait_until(lambda: children.read_text().split(), timeout=10, what="unshare to start PID 1")
    return int(found[0])


@pytest.fixture
def pid_namespace() -> None:
    reason = _pid_namespace_problem()
    if reason:
        pytest.skip(reason)


@pytest.fixture
def tini() -> Iterator[str]:
    found = shutil.which("tini")
    if found is None:
        pytest.skip("tini is not installed (apt-get install tini); the image runs kongtask under it")
    yield found


def test_the_image_command_runs_a_job_and_its_sigterm_lets_the_job_finish(
    image_venv: ImageVenv, migrated_url: str, tmp_path: Path, tini: str, pid_namespace: None
) -> None:
    app = tmp_path / "app"  # the image's WORKDIR, with the tasks a mounted folder or FROM image brings
    write_task(app / "tasks", "wait_for_the_test", body=_WAITING_TASK)
    env = clean_env() | image_venv.env | {"DATABASE_URL": migrated_url, "KT_TEST_DIR": str(tmp_path)}
    log_path = tmp_path / "container.log"
    with log_path.open("wb") as log:
        container = subprocess.Popen(
            ["unshare", "--pid", "--fork", "--mount-proc", "--", *image_venv.argv],
            cwd=app, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
        )
    try:
        pid_1 = _namespace_pid_1(container)
        # Between unshare's fork and its exec, PID 1 is still called unshare.
        wait_until(lambda: Path(f"/proc/{pid_1}/comm").read_text().strip() == "tini", timeout=10,
                   what="tini to be PID 1")
        with psycopg.connect(migrated_url, autocommit=True) as conn:
            conn.execute("select graphile_worker.add_job('wait_for_the_test')")
        wait_until(lambda: (tmp_path / "started").exists(), timeout=60,
                   what=f"the job to start; output:\n{log_path.read_text(errors='replace')}")
        os.kill(pid_1, signal.SIGTERM)  # what `docker stop` and a pod's end send to PID 1
        wait_until(lambda: "SIGTERM received: finishing 1 running job(s)" in log_path.read_text(errors="replace"),
                   timeout=30, what=f"the worker to hear SIGTERM; output:\n{log_path.read_text(errors='replace')}")
        assert not (tmp_path / "finished").exists(), "the job is still running: it finishes only now"
        (tmp_path / "finish").write_text("")
        code = container.wait(60)
    finally:
        if container.poll() is None:
            container.kill()
            container.wait(10)
    output = log_path.read_text(errors="replace")
    assert code == 0, output
    assert (tmp_path / "finished").exists(), output
    with psycopg.connect(migrated_url, autocommit=True) as conn:
        assert conn.execute("select count(*) from graphile_worker.jobs").fetchone() == (0,), output
    # The image's ENV reached the worker too: its lines are JSON.
    lines = [json.loads(line) for line in output.splitlines() if line.strip()]
    assert any("Completed task" in str(line.get("message")) for line in lines), output
