"""Issue 16, "Everyday use", items 8 to 10: errors, arguments and what was missing, against the real CLI."""

from __future__ import annotations

import argparse
import errno
import os
import subprocess
import sys
import tempfile
from functools import partial
from pathlib import Path

import pytest
import trio

import trioftp
from tests.conftest import NETWORK_TIMEOUT
from tests.test_cli import start_serve
from tests.test_cli_everyday import address, run_in_pty
from trioftp.cli import build_parser, main
from trioftp.config import build_config, load_toml, setting_from_text
from trioftp.server import Server


async def run_cli(*argv: str) -> int:
    return await trio.to_thread.run_sync(main, list(argv))


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    for action in build_parser()._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("trioftp has no subcommands")


SUBCOMMANDS = sorted(_subcommands())


# -------------------------------------------------------------------- 9: --help


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_help_of_every_subcommand_runs_and_explains_each_positional(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main([command, "--help"])
    assert exited.value.code == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    out = " ".join(captured.out.split())  # argparse wraps lines to the terminal's width
    for action in _subcommands()[command]._actions:
        if action.option_strings:
            continue
        assert action.help and action.help != argparse.SUPPRESS, f"{command} {action.dest}: no help"
        assert " ".join(str(action.help).split()) in out, (command, action.dest)


# ------------------------------------------------------------ 10: sizes with units


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("1048576", 1048576),
        ("64K", 64 * 1024),
        ("64KiB", 64 * 1024),
        ("64kb", 64_000),
        ("1.5G", 3 * 2**29),
        ("2TiB", 2 * 2**40),
        ("10MB", 10_000_000),
        ("512b", 512),
    ],
)
def test_sizes_take_units_in_flags_and_in_the_config_file(tmp_path: Path, text: str, size: int) -> None:
    flags = {"max_file_size": setting_from_text("max_file_size", text, "--max-file-size")}
    assert build_config({}, flags).max_file_size == size
    config = tmp_path / "sizes.toml"
    config.write_text(f'[server]\nupload_memory = "{text}"\n')
    assert build_config(load_toml(config), {}).upload_memory == size


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--max-file-size", "1X"], "trioftp: --max-file-size: '1X' is not a size"),
        (["--upload-memory", "lots"], "trioftp: --upload-memory: 'lots' is not a size"),
        (["--idle-timeout", "5m"], "trioftp: --idle-timeout: '5m' is not a number"),
        (["--max-connections", "many"], "trioftp: --max-connections: 'many' is not a whole number"),
    ],
)
def test_a_bad_setting_flag_is_one_line_naming_it_not_the_usage(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], expected: str
) -> None:
    assert main(["serve", "--root", str(tmp_path), "--port", "0", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith(expected) and len(err.strip().splitlines()) == 1, err
    assert "usage:" not in err


async def test_serve_with_a_size_in_units_refuses_a_larger_put(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "root"
    with trio.fail_after(NETWORK_TIMEOUT):
        process, port, _log = await start_serve(root, "--max-file-size", "1K")
        try:
            (tmp_path / "small.bin").write_bytes(b"s" * 1024)
            (tmp_path / "big.bin").write_bytes(b"b" * 1025)
            assert await run_cli("put", f"127.0.0.1:{port}", str(tmp_path / "small.bin")) == 0
            assert await run_cli("put", f"127.0.0.1:{port}", str(tmp_path / "big.bin")) == 1
            assert "TOO_LARGE" in capsys.readouterr().err
        finally:
            process.terminate()
            await process.wait()
    assert (root / "small.bin").stat().st_size == 1024 and not (root / "big.bin").exists()


# -------------------------------------------------------------------- 10: --timeout


@pytest.fixture
async def silent_port(nursery: trio.Nursery) -> int:
    """A port that accepts connections and never says a word (a hung server)."""
    held: list[trio.SocketStream] = []

    async def hold(stream: trio.SocketStream) -> None:
        held.append(stream)
        await trio.sleep_forever()

    listeners = await nursery.start(partial(trio.serve_tcp, hold, 0, host="127.0.0.1"))
    port: int = listeners[0].socket.getsockname()[1]
    return port


async def test_timeout_bounds_a_server_that_never_answers_hello(
    silent_port: int, capsys: pytest.CaptureFixture[str]
) -> None:
    with trio.fail_after(NETWORK_TIMEOUT):
        started = trio.current_time()
        assert await run_cli("ls", f"127.0.0.1:{silent_port}", "--timeout", "0.5") == 1
        took = trio.current_time() - started
    assert 0.5 <= took < 5, took
    assert capsys.readouterr().err == f"trioftp: ls: no answer from 127.0.0.1:{silent_port} within 0.5 s\n"


async def test_the_api_takes_a_timeout_too(silent_port: int) -> None:
    with trio.fail_after(NETWORK_TIMEOUT):
        started = trio.current_time()
        with pytest.raises(trioftp.TransferTimeout, match=r"within 0\.3 s"):
            await trioftp.get("127.0.0.1", "x", port=silent_port, timeout=0.3)
        assert trio.current_time() - started < 5


@pytest.mark.parametrize("value", ["0", "-1", "soon", "nan", "inf"])
def test_a_bad_timeout_is_one_line(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ls", "127.0.0.1:9", "--timeout", value]) == 2
    assert capsys.readouterr().err == f"trioftp: --timeout: {value!r} is not a positive number of seconds\n"


# ----------------------------------------------------------- 10: put from standard input


def run_cli_process(*argv: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    """`python -m trioftp ARGV` with `stdin` as its standard input (a pipe)."""
    return subprocess.run(
        [sys.executable, "-m", "trioftp", *argv], input=stdin, capture_output=True, timeout=NETWORK_TIMEOUT
    )


async def test_put_dash_uploads_standard_input_under_the_name_given(
    server: Server, server_root: Path
) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)  # more than one read of the pipe
    with trio.fail_after(NETWORK_TIMEOUT):
        result = await trio.to_thread.run_sync(
            lambda: run_cli_process("put", f"127.0.0.1:{server.port}", "-", "in/piped.bin", stdin=data)
        )
    assert result.returncode == 0, result.stderr
    assert result.stderr == b""
    assert (server_root / "in" / "piped.bin").read_bytes() == data
    assert not [p for p in os.listdir(tempfile.gettempdir()) if p.startswith("trioftp-stdin-")]


@pytest.mark.parametrize("name", [[], ["folder/"]], ids=["no-name", "a-folder"])
def test_put_dash_needs_a_file_name(name: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["put", "127.0.0.1:9", "-", *name]) == 2
    assert capsys.readouterr().err == (
        "trioftp: put HOST - NAME: standard input has no name of its own: give the remote NAME\n"
    )


# ------------------------------------------------------- 10: binary onto a terminal


@pytest.mark.parametrize("size", [100, 8 * 1024 * 1024], ids=["small", "8MiB"])
async def test_get_to_a_terminal_refuses_a_binary_file(server: Server, server_root: Path, size: int) -> None:
    (server_root / "photo.jpg").write_bytes(b"\xff\xd8\xff\xe0\0\x10JFIF" + os.urandom(size))
    with trio.fail_after(NETWORK_TIMEOUT):
        code, shown = await trio.to_thread.run_sync(
            lambda: run_in_pty(["get", address(server), "photo.jpg", "-o", "-"])
        )
    assert code == 1, shown
    assert shown == (
        "trioftp: get: photo.jpg looks binary and standard output is a terminal: "
        "give -o FILE, or --force to show it there anyway\r\n"
    )


async def test_get_to_a_terminal_shows_text_and_with_force_binary(server: Server, server_root: Path) -> None:
    (server_root / "notes.txt").write_bytes("héllo wörld\n".encode() * 2000)  # longer than the sample
    (server_root / "blob.bin").write_bytes(b"\0\1\2binary")
    with trio.fail_after(NETWORK_TIMEOUT):
        code, shown = await trio.to_thread.run_sync(
            lambda: run_in_pty(["get", address(server), "notes.txt", "-o", "-"])
        )
        assert code == 0, shown
        assert shown == "héllo wörld\r\n" * 2000
        code, shown = await trio.to_thread.run_sync(
            lambda: run_in_pty(["get", address(server), "blob.bin", "-", "--force"])
        )
    assert code == 0, shown
    assert "binary" in shown and "trioftp" not in shown


async def test_get_to_a_pipe_is_never_judged(server: Server, server_root: Path, tmp_path: Path) -> None:
    data = b"\0" + os.urandom(1000)
    (server_root / "blob.bin").write_bytes(data)
    with trio.fail_after(NETWORK_TIMEOUT):
        result = await trio.to_thread.run_sync(
            lambda: run_cli_process("get", address(server), "blob.bin", "-o", "-")
        )
    assert result.returncode == 0 and result.stdout == data


# ------------------------------------------------------- 8: errors that say what failed


async def test_local_file_errors_lead_with_the_path(
    server: Server, server_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (server_root / "f.txt").write_bytes(b"f")
    with trio.fail_after(NETWORK_TIMEOUT):
        assert await run_cli("put", address(server), str(tmp_path / "missing.txt")) == 1
        assert capsys.readouterr().err == f"trioftp: put: {tmp_path}/missing.txt: no such file or directory\n"
        assert await run_cli("get", address(server), "f.txt", str(tmp_path / "no" / "f.txt")) == 1
        assert capsys.readouterr().err == f"trioftp: get: {tmp_path}/no/f.txt: no such file or directory\n"


async def test_a_full_disk_names_the_partial_kept_and_the_same_get_resumes(
    server: Server,
    server_root: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = os.urandom(5 * 1024 * 1024)
    (server_root / "big.bin").write_bytes(data)
    real_pwrite = os.pwrite
    written: list[int] = []

    def full_after_two_blocks(fd: int, block: bytes, offset: int) -> int:
        # Only the download's own partial file fills up; the server (in this process) is untouched.
        if os.readlink(f"/proc/self/fd/{fd}").endswith(".trioftp-part"):
            if offset >= 2 * 1024 * 1024:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            written.append(len(block))
        return real_pwrite(fd, block, offset)

    target = tmp_path / "big.bin"
    partial = tmp_path / "big.bin.trioftp-part"
    monkeypatch.setattr(os, "pwrite", full_after_two_blocks)
    with trio.fail_after(NETWORK_TIMEOUT):
        assert await run_cli("get", address(server), "big.bin", str(target)) == 1
        assert capsys.readouterr().err == (
            f"trioftp: get: {partial}: no space left on device; "
            "what arrived is kept there, and the same get resumes from it\n"
        )
        assert partial.stat().st_size == 2 * 1024 * 1024 and not target.exists()
        monkeypatch.setattr(os, "pwrite", real_pwrite)
        assert await run_cli("get", address(server), "big.bin", str(target)) == 0
    assert target.read_bytes() == data and not partial.exists()


LONG = "n" * 100_000


@pytest.mark.parametrize(
    "argv",
    [
        ["get", "{address}", LONG],  # the local file of that name cannot be made
        ["get", "{address}", "f.txt", "{tmp}/" + LONG],
        ["put", "{address}", "{tmp}/" + LONG],
        ["rm", "-r", "{address}", LONG],  # the server's NOT_FOUND carries the name
        ["stat", "{address}", "a/" + LONG],
        ["sync", "{tmp}/" + LONG, "{address}:x"],  # was a traceback (os.stat: name too long)
        ["sync", "{address}:" + LONG, "{tmp}/q"],
    ],
    ids=["get-name", "get-local", "put-local", "rm-r", "stat", "sync-up", "sync-down"],
)
async def test_a_100_kb_name_is_cut_in_the_middle_saying_so(
    server: Server, server_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    (server_root / "f.txt").write_bytes(b"f")
    with trio.fail_after(NETWORK_TIMEOUT):
        code = await run_cli(*[arg.format(address=address(server), tmp=tmp_path) for arg in argv])
    err = capsys.readouterr().err
    assert code == 1, err
    assert len(err.splitlines()) == 1 and len(err) < 500, err[:1000]
    assert err.startswith(f"trioftp: {argv[0]}: ") and "Traceback" not in err
    assert "bad name" in err or "characters left out" in err
