"""The wheel carries the migrations and py.typed, and an installed kongtask migrates with them."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import psycopg

REPO = Path(__file__).resolve().parent.parent


def test_wheel_ships_the_migrations_and_migrates_a_database(tmp_path: Path, db_url: str) -> None:
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(REPO)],
        capture_output=True, text=True, timeout=300,
    )
    assert built.returncode == 0, built.stderr
    [wheel] = tmp_path.glob("kongtask-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "kongtask/_schema/migrations/000001.sql" in names and "kongtask/_schema/v0_1.sql" in names and "kongtask/py.typed" in names
    # The dashboard's pages and script are package data too.
    assert "kongtask/dashboard/templates/overview.html" in names and "kongtask/dashboard/static/dashboard.js" in names
    target = tmp_path / "installed"
    installed = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
        capture_output=True, text=True, timeout=300,
    )
    assert installed.returncode == 0, installed.stderr
    # Run from an empty folder with the installed copy first on the path, not this checkout.
    script = (
        "import asyncio, sys, kongtask, kongtask._schema.migrate as m; "
        f"assert kongtask.__file__.startswith({str(target)!r}), kongtask.__file__; "
        "print(m._migrations_folder()); "
        "print(asyncio.run(kongtask.migrate(connection_string=sys.argv[1])))"
    )
    ran = subprocess.run(
        [sys.executable, "-c", script, db_url], cwd=tmp_path, capture_output=True, text=True, timeout=120,
        env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"},
    )
    assert ran.returncode == 0, ran.stderr
    folder, applied = ran.stdout.splitlines()
    assert folder.startswith(str(target)) and applied == "[1]"
    with psycopg.connect(db_url) as conn:
        assert conn.execute("select id from graphile_worker.migrations").fetchall() == [(1,)]
