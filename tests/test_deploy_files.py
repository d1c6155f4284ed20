"""The deployment files are valid, and say what the operator's guide says they say.

Checked without Docker or a cluster, with tools from the ``deploy-check`` extra: the Dockerfiles with
hadolint, the Compose file against the Compose specification's JSON schema (the copy that
check-jsonschema ships), the Kubernetes manifests rendered by ``kubectl kustomize`` and checked
against the Kubernetes API's schemas (kubernetes-validate, strict), the systemd unit with
``systemd-analyze verify``. Then what no schema knows: grace periods above the shutdown timeout,
probes on the metrics port, scalable workers, and the KEDA query run on a real database.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from configparser import ConfigParser
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

import kongtask
from kongtask import settings
from kongtask.cli import cli

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
KUSTOMIZE_BASE = DEPLOY / "kubernetes" / "base"
KUSTOMIZE_EXAMPLE = DEPLOY / "kubernetes" / "example"
SYSTEMD_UNIT = DEPLOY / "systemd" / "kongtask-worker@.service"

#: The Kubernetes version whose API schemas the manifests must satisfy.
KUBERNETES_VERSION = "1.37.0"


def _tool(name: str) -> str:
    """A command from the deploy-check extra, in this interpreter's virtualenv first, else on PATH."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed: pip install -e '.[deploy-check]'")
    return found


def _run(*argv: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=300)


# --- the images -----------------------------------------------------------------------------------


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "deploy/example-app/Dockerfile"])
def test_the_dockerfile_passes_hadolint(dockerfile: str) -> None:
    done = _run(_tool("hadolint"), "--no-color", "--failure-threshold", "info", dockerfile)
    assert done.returncode == 0 and not done.stdout.strip(), done.stdout + done.stderr


# --- Compose --------------------------------------------------------------------------------------


def _compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


def test_the_compose_file_validates_against_the_compose_specification() -> None:
    done = _run(_tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(COMPOSE))
    assert done.returncode == 0, done.stdout + done.stderr


def _seconds(duration: str) -> float:
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, f"not a duration: {duration}"
    return sum(float(n) * units[u] for n, u in parts)


def _kongtask_argv_parses(argv: list[str]) -> None:
    """``kongtask ARGV`` is a command line kongtask's CLI accepts (parsed, not run)."""
    command = cli.commands.get(argv[0])  # type: ignore[attr-defined]
    assert command is not None, f"kongtask has no command {argv[0]!r}"
    command.make_context(argv[0], list(argv[1:]))


def test_compose_runs_migrate_once_then_scalable_workers_that_stop_gracefully() -> None:
    services = _compose()["services"]
    postgres, migrate, worker, dashboard = (services[n] for n in ("postgres", "migrate", "worker", "dashboard"))
    assert postgres["healthcheck"]["test"][:2] == ["CMD", "pg_isready"]
    volume = postgres["volumes"][0].split(":")[0]
    assert volume in _compose()["volumes"], "PostgreSQL keeps its data in a named volume"
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert migrate["restart"] == "no"
    for service in (worker, dashboard):
        assert service["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        assert "healthcheck" in service
    # --scale starts many: nothing fixed per container.
    assert "ports" not in worker and "container_name" not in worker
    shutdown = float(worker["environment"]["KONGTASK_SHUTDOWN_TIMEOUT"])
    assert _seconds(worker["stop_grace_period"]) > shutdown
    assert f":{worker['environment']['KONGTASK_METRICS_PORT']}/healthz" in " ".join(worker["healthcheck"]["test"])
    assert worker["environment"]["KONGTASK_METRICS_HOST"] == "0.0.0.0", "Prometheus scrapes from another container"
    assert any(v.endswith(":/app/tasks:ro") for v in worker["volumes"]), "the tasks folder, mounted read-only"
    for name, service in services.items():
        if service.get("build") is not None:
            assert service["build"]["context"] == "..", name
            _kongtask_argv_parses(service.get("command", ["worker"]))
    assert "127.0.0.1:" in dashboard["ports"][0], "the dashboard is published on the host's loopback only"


# --- Kubernetes -----------------------------------------------------------------------------------


def _kustomize(folder: Path) -> list[dict[str, Any]]:
    done = _run(_tool("kubectl"), "kustomize", str(folder))
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


@pytest.fixture(scope="module")
def rendered() -> Iterator[dict[str, list[dict[str, Any]]]]:
    yield {"base": _kustomize(KUSTOMIZE_BASE), "example": _kustomize(KUSTOMIZE_EXAMPLE)}


def _one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


@pytest.mark.parametrize("variant", ["base", "example"])
def test_the_kubernetes_manifests_validate_against_the_kubernetes_api(
    rendered: dict[str, list[dict[str, Any]]], variant: str
) -> None:
    kubernetes_validate = pytest.importorskip(
        "kubernetes_validate", reason="kubernetes-validate is not installed: pip install -e '.[deploy-check]'"
    )
    docs = rendered[variant]
    core = [d for d in docs if d["kind"] != "ScaledObject"]
    assert {d["kind"] for d in core} == {"Secret", "ConfigMap", "Job", "Deployment", "PodDisruptionBudget"}
    for doc in core:
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            raise AssertionError(f"{doc['kind']}/{doc['metadata']['name']}: {exc.message}") from None
    # KEDA's ScaledObject is a custom resource, with no schema in the Kubernetes API: checked below.
    assert [d["kind"] for d in docs if d not in core] == ([] if variant == "base" else ["ScaledObject"])


def test_the_worker_deployment_probes_the_metrics_port_and_outlives_the_shutdown_timeout(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    docs = rendered["base"]
    config = _one(docs, "ConfigMap", "kongtask-worker")["data"]
    deployment = _one(docs, "Deployment", "kongtask-worker")
    pod = deployment["spec"]["template"]
    [container] = pod["spec"]["containers"]
    assert container["args"] == ["worker"]
    _kongtask_argv_parses(container["args"])
    assert pod["spec"]["terminationGracePeriodSeconds"] > float(config["KONGTASK_SHUTDOWN_TIMEOUT"])
    [port] = container["ports"]
    assert port["containerPort"] == int(config["KONGTASK_METRICS_PORT"])
    assert config["KONGTASK_METRICS_HOST"] == "0.0.0.0", "the kubelet probes the pod's address, not its loopback"
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": port["name"]}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": port["name"]}
    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(port["containerPort"])
    assert annotations["prometheus.io/path"] == "/metrics"
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    # DATABASE_URL comes from the Secret, in the workers and in the migration Job.
    secret = _one(docs, "Secret")
    job = _one(docs, "Job")
    [migrate] = job["spec"]["template"]["spec"]["containers"]
    assert migrate["args"] == ["migrate"]
    _kongtask_argv_parses(migrate["args"])
    for c in (container, migrate):
        [ref] = [e["valueFrom"]["secretKeyRef"] for e in c["env"] if e["name"] == "DATABASE_URL"]
        assert ref["name"] == secret["metadata"]["name"] and ref["key"] in secret["stringData"]
    pdb = _one(docs, "PodDisruptionBudget")
    labels = pod["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()


def _scaled_object(rendered: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    return _one(rendered["example"], "ScaledObject")


def test_keda_scales_the_worker_deployment_and_owns_its_replica_count(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    scaled = _scaled_object(rendered)
    deployment = _one(rendered["example"], "Deployment")
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    assert scaled["spec"]["scaleTargetRef"] == {"name": deployment["metadata"]["name"]}
    assert scaled["metadata"]["namespace"] == deployment["metadata"]["namespace"]
    assert 1 <= scaled["spec"]["minReplicaCount"] < scaled["spec"]["maxReplicaCount"]
    assert "replicas" not in deployment["spec"], "a replica count in the Deployment would fight KEDA's"
    [trigger] = scaled["spec"]["triggers"]
    assert trigger["type"] == "postgresql"
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    assert trigger["metadata"]["connectionFromEnv"] in {e["name"] for e in container["env"]}
    assert int(trigger["metadata"]["targetQueryValue"]) > 0


@pytest.mark.parametrize("generation", ["v0.1.0", "0.18"])
def test_the_keda_query_counts_the_due_jobs_on_either_schema(
    rendered: dict[str, list[dict[str, Any]]], migrated_url: str, generation: str
) -> None:
    query = _scaled_object(rendered)["spec"]["triggers"][0]["metadata"]["query"]
    table = "graphile_worker.jobs"
    if generation == "0.18":
        asyncio.run(kongtask.migrate(connection_string=migrated_url, to="latest"))
        table = "graphile_worker._private_jobs"  # behind the jobs view
    with psycopg.connect(migrated_url, autocommit=True) as conn:
        for _ in range(3):
            conn.execute("select graphile_worker.add_job('due')")
        conn.execute("select graphile_worker.add_job('later', run_at := now() + interval '1 hour')")
        conn.execute("select graphile_worker.add_job('dead', max_attempts := 1)")
        conn.execute(f"update {table} set attempts = 1 where max_attempts = 1")
        assert conn.execute(query).fetchone() == (3,)


# --- systemd --------------------------------------------------------------------------------------


def _unit() -> ConfigParser:
    parser = ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(SYSTEMD_UNIT.read_text())
    return parser


def test_the_systemd_unit_restarts_on_failure_and_stops_gracefully() -> None:
    service = _unit()["Service"]
    assert service["Restart"] == "on-failure"
    assert service["KillSignal"] == "SIGTERM"
    assert service["KillMode"] == "mixed", "SIGTERM to the worker only; it stops its tasks' processes itself"
    environment = dict(line.split("=", 1) for line in _unit_values("Environment"))
    assert float(service["TimeoutStopSec"]) > float(environment["KONGTASK_SHUTDOWN_TIMEOUT"])
    assert service["ExecStart"].split()[1:] == ["worker"]
    _kongtask_argv_parses(service["ExecStart"].split()[1:])


def _unit_values(key: str) -> list[str]:
    return [line.split("=", 1)[1] for line in SYSTEMD_UNIT.read_text().splitlines() if line.startswith(f"{key}=")]


def test_the_systemd_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (apt-get install systemd)")
    # Its paths moved here, where the command exists: verify checks that ExecStart is executable.
    app = tmp_path / "srv" / "app"
    (app / ".venv" / "bin").mkdir(parents=True)
    (app / ".venv" / "bin" / "kongtask").symlink_to(Path(sys.executable).parent / "kongtask")
    env_file = tmp_path / "worker.env"
    env_file.write_text("DATABASE_URL=postgres://app@db/app\n")
    text = SYSTEMD_UNIT.read_text().replace("/srv/app", str(app)).replace("/etc/kongtask/worker.env", str(env_file))
    unit = tmp_path / SYSTEMD_UNIT.name
    unit.write_text(text)
    done = _run(analyze, "verify", str(tmp_path / "kongtask-worker@1.service"), cwd=tmp_path)
    assert done.returncode == 0 and not done.stderr.strip() and not done.stdout.strip(), done.stdout + done.stderr


# --- all of them ----------------------------------------------------------------------------------


def test_every_kongtask_variable_in_the_deploy_files_is_an_option() -> None:
    known = {var for opt in settings.options() for var in opt.env_vars}
    files = [p for p in DEPLOY.rglob("*") if p.is_file()] + [ROOT / "Dockerfile"]
    used = {(p.relative_to(ROOT).as_posix(), v) for p in files for v in re.findall(r"KONGTASK_[A-Z_]+", p.read_text())}
    unknown = sorted((path, v) for path, v in used if v not in known)
    assert not unknown, f"variables kongtask does not read: {unknown}"
