"""`trioftp` put -r, get -r, sync, passwd, --user and --tls/--ca, against real servers."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
import trio
import trustme

from tests.conftest import NETWORK_TIMEOUT, MakeServer
from tests.test_cli import run_cli
from tests.test_tree import (
    fifo_must_stay_closed,
    fifo_must_stay_unwritten,
    make_odd_tree,
    make_tree,
    read_tree,
)
from trioftp import __version__
from trioftp.cli import main
from trioftp.server import Server
from trioftp.server.auth import hash_password, verify_password

PASSWORD = "correct horse"


def address(server: Server) -> str:
    return f"127.0.0.1:{server.port}"


def output_lines(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return capsys.readouterr().out.splitlines()


# ---------------------------------------------------------- put -r, get -r


async def test_put_r_uploads_a_folder_then_only_what_changed(
    server: Server, server_root: Path, tmp_path: Path
) -> None:
    local = tmp_path / "photos"
    files = make_tree(local)
    with trio.fail_after(NETWORK_TIMEOUT):
        assert await run_cli("put", "-r", address(server), str(local), "backup/photos") == 0
        assert read_tree(server_root / "backup" / "photos") == files
        (local / "top0.txt").write_bytes(b"changed")
        (server_root / "backup" / "photos" / "d1").rename(server_root / "elsewhere")  # a gap to fill
        assert await run_cli("put", "-r", address(server), str(local), "backup/photos") == 0
    assert read_tree(server_root / "backup" / "photos") == read_tree(local)


async def test_put_r_without_a_remote_name_uses_the_folders_name(
    server: Server, server_root: Path, tmp_path: Path
) -> None:
    files = make_tree(tmp_path / "photos", count=4)
    with trio.fail_after(NETWORK_TIMEOUT):
        assert await run_cli("put", "-r", address(server), str(tmp_path / "photos")) == 0
    assert read_tree(server_root / "photos") == files


async def test_get_r_downloads_a_folder(server: Server, server_root: Path, tmp_path: Path) -> None:
    files = make_tree(server_root / "remote" / "photos")
    with trio.fail_after(NETWORK_TIMEOUT):
        assert await run_cli("get", "-r", address(server), "remote/photos", str(tmp_path / "copy")) == 0
    assert read_tree(tmp_path / "copy") == files


async def test_get_r_without_a_local_name_uses_the_folders_last_part(
    server: Server, server_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = make_tree(server_root / "remote" / "photos", count=4)
    monkeypatch.chdir(tmp_path)
    with trio.fail_after(NETWORK_TIMEOUT):
        assert await run_cli("get", "-r", "127.0.0.1", "--port", str(server.port), "remote/photos") == 0
    assert read_tree(tmp_path / "photos") == files


async def test_get_r_of_a_file_exits_1_with_one_line(
    server: Server, server_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (server_root / "plain.txt").write_bytes(b"x")
    with trio.fail_after(NETWORK_TIMEOUT):
        assert await run_cli("get", "-r", address(server), "plain.txt", str(tmp_path / "out")) == 1
    assert capsys.readouterr().err == "trioftp: get: WRONG_KIND: 'plain.txt' is not a folder\n"


async def test_put_r_skips_what_it_cannot_copy_says_so_and_exits_1(
    server: Server, server_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    local = tmp_path / "odd"
    skipped = make_odd_tree(local)
    os.mkfifo(local / "fifo")
    skipped["fifo"] = "not a regular file or folder (a FIFO)"
    with fifo_must_stay_closed(local / "fifo"), trio.fail_after(NETWORK_TIMEOUT):
        assert await run_cli("put", "-r", address(server), str(local), "odd2") == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "trioftp: put: 6 skipped, not copied:"
    assert err[1:] == [f"  {path}: {reason}" for path, reason in sorted(skipped.items())]
    assert read_tree(server_root / "odd2") == {"ok.txt": b"ok", "sub/a.txt": b"a", "link.txt": b"a"}


# -------------------------------------------------------------------- sync


async def test_sync_up_dry_run_then_delete(
    server: Server, server_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    local = tmp_path / "site"
    files = make_tree(local, count=6)
    target = f"{address(server)}:www"
    with trio.fail_after(NETWORK_TIMEOUT):
        assert await run_cli("sync", str(local), target) == 0
        assert read_tree(server_root / "www") == files
        folders = 1 + len({name.rpartition("/")[0] for name in files if "/" in name} | {"d0", "d1", "d2"})
        assert output_lines(capsys)[-1] == (  # folders: www itself, d0..d2, and the sub folders in them
            f"{len(files)} to copy ({_size(files)}), 0 to delete, 0 unchanged; "
            f"folders: {folders} to create, 0 to delete"
        )

        (local / "new.txt").write_bytes(b"new")
        gone = next(name for name in sorted(files) if "/" in name)
        (local / gone).unlink()
        before = read_tree(server_root / "www")
        assert await run_cli("sync", "--dry-run", "--delete", str(local), target) == 0
        lines = output_lines(capsys)
        assert "would copy: new.txt" in lines and f"would delete: {gone}" in lines
        assert lines[-1].startswith("1 to copy") and f"1 to delete, {len(files) - 1} unchanged" in lines[-1]
        assert read_tree(server_root / "www") == before  # the dry run changed nothing

        assert await run_cli("sync", str(local), target) == 0  # without --delete nothing goes away
        assert (server_root / "www" / gone).exists()
        capsys.readouterr()
        assert await run_cli("sync", "--delete", str(local), target) == 0
        assert f"deleted: {gone}" in output_lines(capsys)
    assert read_tree(server_root / "www") == read_tree(local)


async def test_sync_down_into_a_new_folder_and_with_delete(
    server: Server, server_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = make_tree(server_root / "www", count=6)
    local = tmp_path / "mirror"  # does not exist yet
    source = f"{address(server)}:www"
    with trio.fail_after(NETWORK_TIMEOUT):
        assert await run_cli("sync", source, str(local)) == 0
        assert read_tree(local) == files
        (local / "stray.txt").write_bytes(b"stray")
        capsys.readouterr()
        assert await run_cli("sync", "-n", "--delete", source, str(local)) == 0
        assert "would delete: stray.txt" in output_lines(capsys)
        assert (local / "stray.txt").exists()
        assert await run_cli("sync", "--delete", source, str(local)) == 0
    assert read_tree(local) == files


async def test_sync_with_host_and_folder_only_takes_port_from_the_flag(
    server: Server, server_root: Path, tmp_path: Path
) -> None:
    files = make_tree(tmp_path / "site", count=3)
    with trio.fail_after(NETWORK_TIMEOUT):
        assert await run_cli("sync", str(tmp_path / "site"), "127.0.0.1:www", "--port", str(server.port)) == 0
    assert read_tree(server_root / "www") == files


async def test_sync_lists_what_it_did_and_what_it_skipped_and_exits_1(
    server: Server, server_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    local = tmp_path / "site"
    skipped = make_odd_tree(local)
    target = f"{address(server)}:www"
    with trio.fail_after(NETWORK_TIMEOUT):
        assert await run_cli("sync", "-n", str(local), target) == 1  # as the real run will
        out, err = capsys.readouterr()
        assert "would copy: ok.txt" in out.splitlines()
        assert err.startswith("trioftp: sync: 5 skipped, not copied:\n")
        assert not (server_root / "www").exists()
        assert await run_cli("sync", str(local), target) == 1
        out, err = capsys.readouterr()
    assert out.splitlines()[:5] == [
        "created: ./",
        "created: sub/",
        "copied: link.txt",
        "copied: ok.txt",
        "copied: sub/a.txt",
    ]
    assert err.splitlines()[1:] == [f"  {path}: {reason}" for path, reason in sorted(skipped.items())]
    assert read_tree(server_root / "www") == {"ok.txt": b"ok", "sub/a.txt": b"a", "link.txt": b"a"}


async def test_put_r_and_get_r_of_an_empty_folder_create_it(
    server: Server, server_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "photos" / "empty").mkdir(parents=True)
    with trio.fail_after(NETWORK_TIMEOUT):
        assert (
            await run_cli("put", "-r", address(server), str(tmp_path / "photos" / "empty"), "emptyremote")
            == 0
        )
        assert await run_cli("ls", address(server), "emptyremote") == 0
        assert await run_cli("get", "-r", address(server), "emptyremote", str(tmp_path / "back")) == 0
    assert capsys.readouterr().err == ""
    assert (server_root / "emptyremote").is_dir() and (tmp_path / "back").is_dir()


async def test_sync_lists_folders_to_create_and_to_delete(
    server: Server, server_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    local = tmp_path / "site"
    (local / "new" / "empty").mkdir(parents=True)
    (local / "f.txt").write_bytes(b"f")
    (server_root / "www" / "old" / "sub").mkdir(parents=True)
    (server_root / "www" / "old" / "sub" / "x.txt").write_bytes(b"x")
    target = f"{address(server)}:www"
    with trio.fail_after(NETWORK_TIMEOUT):
        assert await run_cli("sync", "-n", "--delete", str(local), target) == 0
        assert output_lines(capsys) == [
            "would create: new/",
            "would create: new/empty/",
            "would copy: f.txt",
            "would delete: old/sub/x.txt",
            "would delete: old/sub/",
            "would delete: old/",
            "1 to copy (1B), 1 to delete, 0 unchanged; folders: 2 to create, 2 to delete",
        ]
        assert (server_root / "www" / "old" / "sub" / "x.txt").exists()
        assert await run_cli("sync", "--delete", str(local), target) == 0
        assert "deleted: old/" in output_lines(capsys)
        assert await run_cli("sync", "-n", str(local), f"{address(server)}:elsewhere") == 0
        assert output_lines(capsys)[0] == "would create: ./"  # the top folder itself
    assert sorted(p.name for p in (server_root / "www").iterdir()) == ["f.txt", "new"]
    assert (server_root / "www" / "new" / "empty").is_dir()


def test_sync_without_a_remote_side_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sync", str(tmp_path), "no-host-here"]) == 2
    assert "HOST[:PORT]:FOLDER" in capsys.readouterr().err


def _size(files: dict[str, bytes]) -> str:
    from trioftp.cli import _human

    return _human(sum(len(data) for data in files.values()))


# ------------------------------------------------------------------ passwd


def test_passwd_prints_a_hash_that_verifies(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(f"{PASSWORD}\n"))
    assert main(["passwd"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("scrypt$")
    assert verify_password(PASSWORD, line)
    assert not verify_password(PASSWORD + "!", line)


def test_passwd_refuses_an_empty_password(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("\n"))
    assert main(["passwd"]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and "empty password" in captured.err


# -------------------------------------------------------------- --user


@pytest.fixture(scope="module")
def alice_hash() -> str:
    return hash_password(PASSWORD)


@pytest.fixture
async def users_server(make_server: MakeServer, tmp_path: Path, alice_hash: str) -> Server:
    users = tmp_path / "users.toml"
    users.write_text(f'[users.alice]\npassword = "{alice_hash}"\nhome = "alice"\nrights = ["all"]\n')
    server: Server = await make_server(users_file=str(users))
    server.auth_failures.base_delay = 0.01
    return server


async def test_user_with_password_from_the_environment(
    users_server: Server,
    server_root: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    files = make_tree(tmp_path / "docs", count=3)
    (tmp_path / "one.txt").write_bytes(b"one")
    monkeypatch.setenv("TRIOFTP_PASSWORD", PASSWORD)
    where = address(users_server)
    with trio.fail_after(NETWORK_TIMEOUT):
        assert await run_cli("put", where, "--user", "alice", str(tmp_path / "one.txt")) == 0
        assert await run_cli("put", "-r", where, "--user", "alice", str(tmp_path / "docs")) == 0
        assert await run_cli("sync", "--user", "alice", str(tmp_path / "docs"), f"{where}:mirror") == 0
        assert (
            await run_cli("get", where, "--user", "alice", "one.txt", "-o", str(tmp_path / "back.txt")) == 0
        )
        capsys.readouterr()
        assert await run_cli("ls", where, "--user", "alice") == 0
        listed = {line.split()[-1] for line in output_lines(capsys)}
    assert (server_root / "alice" / "one.txt").read_bytes() == b"one"  # in alice's home
    assert read_tree(server_root / "alice" / "docs") == files
    assert read_tree(server_root / "alice" / "mirror") == files
    assert (tmp_path / "back.txt").read_bytes() == b"one"
    assert listed == {"docs/", "mirror/", "one.txt"}


async def test_wrong_or_missing_credentials_exit_1(
    users_server: Server, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    where = address(users_server)
    monkeypatch.setenv("TRIOFTP_PASSWORD", "wrong")
    with trio.fail_after(NETWORK_TIMEOUT):
        assert await run_cli("ls", where, "--user", "alice") == 1
        assert capsys.readouterr().err.startswith("trioftp: ls: ")
        assert await run_cli("ls", where) == 1  # no anonymous access on this server
        assert capsys.readouterr().err.startswith("trioftp: ls: ")


# ------------------------------------------------------------ --tls --ca


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
async def tls_server(make_server: MakeServer, ca: trustme.CA, tmp_path: Path) -> Server:
    cert = ca.issue_cert("127.0.0.1")
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "server.pem"))
    server: Server = await make_server(
        tls_cert=str(tmp_path / "server.pem"), tls_key=str(tmp_path / "server.pem"), handshake_timeout=2.0
    )
    return server


async def test_tls_with_a_private_ca(
    tls_server: Server,
    server_root: Path,
    ca: trustme.CA,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    files = make_tree(tmp_path / "docs", count=3)
    (tmp_path / "one.txt").write_bytes(b"over tls")
    where, trust = address(tls_server), str(tmp_path / "ca.pem")
    with trio.fail_after(NETWORK_TIMEOUT):
        assert await run_cli("put", "--tls", "--ca", trust, where, str(tmp_path / "one.txt")) == 0
        assert await run_cli("get", "--ca", trust, where, "one.txt", "-o", str(tmp_path / "back.txt")) == 0
        assert await run_cli("sync", "--ca", trust, str(tmp_path / "docs"), f"{where}:docs") == 0
        assert await run_cli("get", "-r", "--ca", trust, where, "docs", str(tmp_path / "docs-back")) == 0
        capsys.readouterr()
        assert await run_cli("ls", "--tls", where) == 1  # the system does not trust our test CA
        assert capsys.readouterr().err.startswith("trioftp: ls: ")
    assert (server_root / "one.txt").read_bytes() == b"over tls"
    assert (tmp_path / "back.txt").read_bytes() == b"over tls"
    assert read_tree(tmp_path / "docs-back") == files


# ----------------------------------------------------------- python -m


def test_python_dash_m_trioftp_version() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "trioftp", "--version"],
        capture_output=True,
        text=True,
        timeout=NETWORK_TIMEOUT,
    )
    assert result.returncode == 0
    assert result.stdout.strip() == f"trioftp {__version__}"


async def test_sync_delete_from_a_missing_folder_deletes_nothing(
    server: Server, server_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = make_tree(server_root / "www", count=4)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "precious.txt").write_bytes(b"keep me")
    with trio.fail_after(NETWORK_TIMEOUT):
        assert await run_cli("sync", "--delete", str(tmp_path / "typo"), f"{address(server)}:www") == 1
        assert capsys.readouterr().err.startswith("trioftp: sync: ")
        assert await run_cli("sync", "--delete", f"{address(server)}:wwww", str(tmp_path / "mine")) == 1
        assert capsys.readouterr().err.startswith("trioftp: sync: NOT_FOUND")
    assert read_tree(server_root / "www") == files
    assert read_tree(tmp_path / "mine") == {"precious.txt": b"keep me"}


async def test_folder_names_may_end_with_a_slash(
    server: Server, server_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = make_tree(tmp_path / "photos", count=4)
    monkeypatch.chdir(tmp_path)
    with trio.fail_after(NETWORK_TIMEOUT):
        assert await run_cli("put", "-r", address(server), "photos/", "backup/photos/") == 0
        assert read_tree(server_root / "backup" / "photos") == files
        assert await run_cli("get", "-r", address(server), "backup/photos/", "back/") == 0
        assert await run_cli("get", "-r", address(server), "/backup/") == 0  # into ./backup
    assert read_tree(tmp_path / "back") == files
    assert read_tree(tmp_path / "backup" / "photos") == files


async def test_put_r_and_get_r_of_a_missing_folder_exit_1(
    server: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "a-file").write_bytes(b"x")
    with trio.fail_after(NETWORK_TIMEOUT):
        assert await run_cli("put", "-r", address(server), str(tmp_path / "typo"), "backup") == 1
        assert (
            capsys.readouterr().err == f"trioftp: put: {tmp_path / 'typo'}: no such folder, nothing copied\n"
        )
        assert await run_cli("put", "-r", address(server), str(tmp_path / "a-file"), "backup") == 1
        assert (
            capsys.readouterr().err == f"trioftp: put: {tmp_path / 'a-file'}: not a folder, nothing copied\n"
        )
        assert await run_cli("get", "-r", address(server), "typo", str(tmp_path / "out")) == 1
        assert capsys.readouterr().err.startswith("trioftp: get: NOT_FOUND")
        assert await run_cli("sync", str(tmp_path / "typo"), f"{address(server)}:www") == 1
        assert (
            capsys.readouterr().err == f"trioftp: sync: {tmp_path / 'typo'}: no such folder, nothing copied\n"
        )
    assert not (tmp_path / "out").exists()
    assert list(server.storage.root.iterdir()) in ([], [server.storage.root / ".trioftp"])


# -------------------------------------------------------------------- rm -r


async def test_rm_r_removes_a_remote_folder_and_refuses_the_root(
    server: Server, server_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_tree(server_root / "backup" / "old", count=6)
    (server_root / "backup" / "old" / "empty").mkdir()
    (server_root / "keep.txt").write_bytes(b"keep")
    with trio.fail_after(NETWORK_TIMEOUT):
        assert await run_cli("rm", address(server), "backup/old") == 1  # without -r: only empty folders
        assert capsys.readouterr().err.startswith("trioftp: rm: ")
        assert await run_cli("rm", "-r", address(server), "backup/old/") == 0
        assert not (server_root / "backup" / "old").exists()
        for root in ("/", ""):
            assert await run_cli("rm", "-r", address(server), root) == 2
            assert capsys.readouterr().err == (
                "trioftp: refusing to remove the root folder ('' or '/'): name a folder inside it\n"
            )
        assert await run_cli("rm", "-r", address(server), "backup/old") == 1
        assert capsys.readouterr().err.startswith("trioftp: rm: NOT_FOUND")
    assert sorted(os.listdir(server_root)) == [".trioftp", "backup", "keep.txt"]


# ------------------------------------------ a download and what the local side holds


async def test_sync_down_and_get_r_leave_a_local_fifo_alone_and_exit_1(
    server: Server, server_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (server_root / "src").mkdir()
    (server_root / "src" / "a.txt").write_bytes(b"a")
    (server_root / "src" / "b.txt").write_bytes(b"b")
    dst = tmp_path / "dst"
    dst.mkdir()
    os.mkfifo(dst / "a.txt")
    source = f"{address(server)}:src"
    with fifo_must_stay_unwritten(dst / "a.txt"), trio.fail_after(NETWORK_TIMEOUT):
        assert await run_cli("sync", "-n", source, str(dst)) == 1  # as the real run will
        out, err = capsys.readouterr()
        assert out.splitlines()[0] == "would copy: b.txt"
        assert err == "trioftp: sync: 1 skipped, not copied:\n  a.txt: a FIFO here; not replaced\n"
        assert await run_cli("sync", source, str(dst)) == 1
        out, err = capsys.readouterr()
        assert out.splitlines()[0] == "copied: b.txt"
        assert err == "trioftp: sync: 1 skipped, not copied:\n  a.txt: a FIFO here; not replaced\n"
        (dst / "b.txt").unlink()
        assert await run_cli("get", "-r", address(server), "src", str(dst)) == 1
        assert (
            capsys.readouterr().err
            == "trioftp: get: 1 skipped, not copied:\n  a.txt: a FIFO here; not replaced\n"
        )
    assert (dst / "a.txt").is_fifo() and (dst / "b.txt").read_bytes() == b"b"


# ------------------------------------------------------------ how reports read


async def test_rm_r_names_the_top_folder_in_a_failure(
    server: Server, server_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (server_root / "sd" / "gone").mkdir(parents=True)
    (server_root / "sd" / "gone" / ".trioftp-0123456789abcdef.part").write_bytes(b"hidden from listings")
    with trio.fail_after(NETWORK_TIMEOUT):
        assert await run_cli("rm", "-r", address(server), "sd/gone") == 1
    assert capsys.readouterr().err.startswith(
        "trioftp: rm: 1 entry failed: .: BAD_REQUEST: folder 'sd/gone' holds 1 entry the server does"
    )


async def test_sync_escapes_control_characters_in_the_names_it_reports(
    server: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    local = tmp_path / "s"
    local.mkdir()
    (local / "red\x1b[31m").write_bytes(b"refused")
    (local / "ding\x07\x01").write_bytes(b"refused")
    (local / os.fsdecode(b"caf\xe9")).write_bytes(b"refused")
    with trio.fail_after(NETWORK_TIMEOUT):
        assert await run_cli("sync", str(local), f"{address(server)}:www") == 1
    err = capsys.readouterr().err
    assert "\x1b" not in err and "\x07" not in err and "\x01" not in err
    assert err.splitlines()[1:] == [
        "  caf\\udce9: bad name: name is not valid UTF-8 (lone surrogate)",
        "  ding\\x07\\x01: bad name: control character or backslash in 'ding\\x07\\x01'",
        "  red\\x1b[31m: bad name: control character or backslash in 'red\\x1b[31m'",
    ]


# ---------------------------------------------------------- a path that changed kind


async def test_sync_replaces_a_path_that_changed_kind_only_with_delete(
    server: Server, server_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    local, down = tmp_path / "s", tmp_path / "d2"
    local.mkdir()
    down.mkdir()
    (local / "x").write_bytes(b"data\n")
    (down / "x").write_bytes(b"an old local file\n")
    target = source = f"{address(server)}:tc"
    in_the_way = "trioftp: sync: 1 skipped, not copied:\n  x: a {} is in the way {}; --delete replaces it\n"
    with trio.fail_after(NETWORK_TIMEOUT):
        assert await run_cli("sync", str(local), target, "--delete") == 0
        (local / "x").unlink()
        (local / "x").mkdir()
        (local / "x" / "y").write_bytes(b"in\n")
        capsys.readouterr()
        # A file on the server where the folder goes: left alone without --delete, every run.
        for _ in range(2):
            assert await run_cli("sync", str(local), target) == 1
            out, err = capsys.readouterr()
            assert err == in_the_way.format("file", "on the server")
            assert out.splitlines()[-1] == "0 to copy (0B), 0 to delete, 0 unchanged; 1 skipped"
        assert await run_cli("sync", "-n", str(local), target, "--delete") == 0
        assert output_lines(capsys) == [
            "would create: x/",
            "would copy: x/y",
            "would delete: x",
            "1 to copy (3B), 1 to delete, 0 unchanged; folders: 1 to create, 0 to delete",
        ]
        assert await run_cli("sync", str(local), target, "--delete") == 0
        assert read_tree(server_root / "tc") == {"x/y": b"in\n"}
        # A local file where the server's folder goes.
        capsys.readouterr()
        assert await run_cli("sync", source, str(down)) == 1
        assert capsys.readouterr().err == in_the_way.format("file", "here")
        assert await run_cli("sync", source, str(down), "--delete") == 0
        assert read_tree(down) == {"x/y": b"in\n"}
        # And back: a folder on the server where the file goes.
        (local / "x" / "y").unlink()
        (local / "x").rmdir()
        (local / "x").write_bytes(b"a file again\n")
        capsys.readouterr()
        assert await run_cli("sync", str(local), target) == 1
        assert capsys.readouterr().err == in_the_way.format("folder", "on the server")
        assert await run_cli("sync", str(local), target, "--delete") == 0
        assert output_lines(capsys) == [
            "copied: x",
            "deleted: x/y",
            "deleted: x/",
            "1 to copy (13B), 1 to delete, 0 unchanged; folders: 0 to create, 1 to delete",
        ]
    assert read_tree(server_root / "tc") == {"x": b"a file again\n"}
