"""The docs say what is true: the set-up commands CI runs, and the files the code map names."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _shell_blocks(text: str) -> list[str]:
    return [block.strip() for block in re.findall(r"```sh\n(.*?)```", text, flags=re.S)]


def test_the_readme_test_command_is_the_one_ci_runs() -> None:
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    verbatim = ci.split("# --- README test command, verbatim ---\n", 1)[1].split("\n# --- end ---", 1)[0].strip()
    assert verbatim in _shell_blocks(readme)
    assert verbatim in _shell_blocks((ROOT / "CONTRIBUTING.md").read_text())


def test_the_readme_worker_command_sets_up_and_runs_the_example_tasks() -> None:
    readme = (ROOT / "README.md").read_text()
    [command] = [b for b in _shell_blocks(readme) if b.endswith("kongtask worker --watch") and "pip install" in b]
    assert command.startswith("python3 -m venv .venv && .venv/bin/pip install") and "[embedded]" in command
    assert any(p.suffix == ".py" for p in (ROOT / "tasks").iterdir())


def _code_map_modules(code_map: str) -> set[str]:
    # The lines under ``kongtask/``: two spaces for the package's own entries, four for a subpackage's.
    package_lines = code_map.split("kongtask/\n", 1)[1].splitlines()
    named: set[str] = set()
    folder = ""
    for line in package_lines:
        if not line.startswith("  "):
            break
        entry = line.split()[0]
        if line.startswith("    "):
            if entry.endswith(".py"):
                named.add(folder + entry)
        elif entry.endswith("/"):
            folder = entry
        else:
            folder = ""
            if entry.endswith(".py"):
                named.add(entry)
    return named


def test_every_module_the_code_map_names_exists() -> None:
    contributing = (ROOT / "CONTRIBUTING.md").read_text()
    code_map = contributing.split("## Where things are", 1)[1].split("```", 2)[1]
    named = _code_map_modules(code_map)
    assert named, "the code map names no module"
    package = ROOT / "kongtask"
    missing = sorted(name for name in named if not (package / name).exists())
    assert not missing, f"CONTRIBUTING.md names modules that do not exist: {missing}"
    modules = {
        p.relative_to(package).as_posix()
        for p in package.rglob("*.py")
        if p.name != "__main__.py" and not (p.name == "__init__.py" and p.parent != package)
    }
    unnamed = sorted(modules - named)
    assert not unnamed, f"modules missing from the code map in CONTRIBUTING.md: {unnamed}"


def test_every_path_the_architecture_map_names_exists() -> None:
    text = (ROOT / "docs" / "architecture.md").read_text()
    named = set(re.findall(r"`(kongtask/[\w/.]*)`", text))
    assert named, "docs/architecture.md names no file"
    missing = sorted(path for path in named if not (ROOT / path).exists())
    assert not missing, f"docs/architecture.md names files that do not exist: {missing}"


def test_every_path_the_operations_guide_names_exists() -> None:
    text = (ROOT / "docs" / "operations.md").read_text()
    named = set(re.findall(r"`((?:deploy|tests|docs|kongtask)/[\w/.@-]*|Dockerfile|\.dockerignore)`", text))
    assert {"Dockerfile", "deploy/compose.yaml", "tests/test_failover.py"} <= named
    missing = sorted(path for path in named if not (ROOT / path).exists())
    assert not missing, f"docs/operations.md names files that do not exist: {missing}"
    assert "docs/operations.md" in (ROOT / "README.md").read_text()
