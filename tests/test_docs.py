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


def test_every_module_the_code_map_names_exists() -> None:
    contributing = (ROOT / "CONTRIBUTING.md").read_text()
    code_map = contributing.split("## Where things are", 1)[1].split("```", 2)[1]
    package_part = code_map.split("kongtask/\n", 1)[1].split("\nsql/", 1)[0]
    named = set(re.findall(r"\b(_?[a-z_]+\.py)\b", package_part))
    assert named, "the code map names no module"
    missing = sorted(name for name in named if not (ROOT / "kongtask" / name).exists())
    assert not missing, f"CONTRIBUTING.md names modules that do not exist: {missing}"
    modules = {p.name for p in (ROOT / "kongtask").glob("*.py")} - {"__main__.py"}
    unnamed = sorted(modules - named)
    assert not unnamed, f"modules missing from the code map in CONTRIBUTING.md: {unnamed}"
