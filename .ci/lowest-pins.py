"""Prints a pip constraints file that pins each direct dependency to the floor pyproject.toml gives it.

The runtime dependencies and the user-facing extras (not `test`, `lint` or `deploy-check`: those tools may stay current)
are read from pyproject.toml itself, so the minimum-versions pass in .ci/run always checks the
floors the package declares. A direct dependency without a `>=` floor is an error: an unbounded
dependency has no lowest version to test.

Usage: python .ci/lowest-pins.py [pyproject.toml] > constraints.txt
"""

from __future__ import annotations

import sys
from pathlib import Path

from packaging.requirements import Requirement  # hatchling's dependency, in every test venv

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

#: Extras that only the project's own tests use; their tools are not held to floors.
TEST_EXTRAS = {"test", "lint", "deploy-check"}


def direct_requirements(project: dict) -> list[Requirement]:
    texts = list(project.get("dependencies", []))
    for extra, requirements in project.get("optional-dependencies", {}).items():
        if extra not in TEST_EXTRAS:
            texts += requirements
    return [Requirement(text) for text in texts]


def pin(requirement: Requirement) -> str:
    floors = [spec.version for spec in requirement.specifier if spec.operator == ">="]
    if len(floors) != 1:
        raise SystemExit(f"lowest-pins: {requirement} needs exactly one '>=' floor to be tested at its lowest")
    # Constraints files take no extras ("psycopg[binary]"): pin the distribution, keep the marker.
    line = f"{requirement.name}=={floors[0]}"
    return f"{line} ; {requirement.marker}" if requirement.marker else line


def main() -> None:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent / "pyproject.toml"
    project = tomllib.loads(path.read_text(encoding="utf-8"))["project"]
    seen: dict[str, str] = {}
    for requirement in direct_requirements(project):
        line = pin(requirement)
        if seen.setdefault(requirement.name.lower(), line) != line:
            raise SystemExit(f"lowest-pins: {requirement.name} has two floors: {seen[requirement.name.lower()]} and {line}")
    print("\n".join(seen.values()))


if __name__ == "__main__":
    main()
