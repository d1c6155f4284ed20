"""The embedded server's security: a unix socket in a private folder, never TCP, no loosened folders."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import psycopg
import pytest

from kongtask._embedded.server import EmbeddedServer, private_temporary_home
from kongtask.errors import ConfigurationError


def test_embedded_server_listens_only_on_a_private_unix_socket() -> None:
    parent = private_temporary_home("kongtask-handed-over-")
    # What a user hands over: as root, the server's own user must be able to pass through.
    parent.chmod(0o711 if os.geteuid() == 0 else 0o700)
    modes_before = {p: p.stat().st_mode for p in [parent, *parent.parents]}
    home = parent / "pg"
    server = EmbeddedServer(home)
    try:
        url = server.start()
        with psycopg.connect(url) as conn:
            assert conn.execute("show listen_addresses").fetchone() == ("",)
            [(socket_dirs,)] = conn.execute("show unix_socket_directories").fetchall()
        assert Path(socket_dirs) == server.socket_dir
        for folder in (home, server.socket_dir):
            mode = stat.S_IMODE(folder.stat().st_mode)
            assert mode == 0o700, f"{folder} is {oct(mode)}"
        # Nothing above the folder handed over had its mode changed.
        assert {p: p.stat().st_mode for p in modes_before} == modes_before
    finally:
        server.stop()
        shutil.rmtree(parent, ignore_errors=True)
    assert not server.is_running()


def test_private_temporary_home_is_owner_only() -> None:
    home = private_temporary_home()
    try:
        assert stat.S_IMODE(home.stat().st_mode) == 0o700
        assert home.stat().st_uid == os.geteuid()
    finally:
        shutil.rmtree(home)


def test_a_folder_the_server_user_cannot_reach_is_refused_not_loosened() -> None:
    if os.geteuid() != 0:
        pytest.skip("only root hands the server to another user; as a user the folder is our own")
    parent = private_temporary_home("kongtask-closed-")
    try:
        before = parent.stat().st_mode
        with pytest.raises(ConfigurationError, match="cannot reach"):
            EmbeddedServer(parent / "pg").start()
        assert parent.stat().st_mode == before
    finally:
        shutil.rmtree(parent, ignore_errors=True)


def test_the_server_runs_from_a_private_copy_when_the_wheel_is_out_of_its_users_reach(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if os.geteuid() != 0:
        pytest.skip("only root hands the server to another user, and so needs a copy it can reach")
    from kongtask._embedded import server as _embedded

    reachable = _embedded._reachable_by_others
    # As when the virtualenv sits in a folder only root may enter (a 0700 temporary folder, /root).
    monkeypatch.setattr(_embedded, "_reachable_by_others", lambda p: reachable(p) and "pginstall" not in str(p))
    parent = private_temporary_home("kongtask-copy-")
    parent.chmod(0o711)
    server = EmbeddedServer(parent / "pg")
    try:
        url = server.start()
        with psycopg.connect(url) as conn:
            assert conn.execute("select 1").fetchone() == (1,)
        assert str(server._bin).startswith(str(parent))
        # Root's copy is root's, beside the server's folder: never in one the server's user owns.
        assert not server._bin.is_relative_to(server.home)
        for folder in [server._bin, *server._bin.parents]:
            if folder == parent:
                break
            assert folder.lstat().st_uid == 0, folder
    finally:
        server.stop()
        shutil.rmtree(parent, ignore_errors=True)
