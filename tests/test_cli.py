"""The `trioftp` command against a real server: client verbs in a worker thread, `serve` in a subprocess."""

from __future__ import annotations

import io
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import attrs
import pytest
import trio

from tests.conftest import NETWORK_TIMEOUT
from tests.v2_helpers import MiB, connect, file_digest, names, write_random
from trioftp import __version__
from trioftp.cli import main, parse_remote, split_address
from trioftp.config import DEFAULT_PORT, ServerConfig
from trioftp.server import Server


async def run_cli(*argv: str) -> int:
    """`trioftp ARGV...` in a worker thread (it runs its own trio.run)."""
    return await trio.to_thread.run_sync(main, list(argv))


def one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    return lines[0]


async def test_put_get_ls_stat_mv_rm_mkdir(
    server: Server, server_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    address = f"127.0.0.1:{server.port}"
    source = tmp_path / "report.bin"
    digest = write_random(source, 3 * MiB)
    with trio.fail_after(NETWORK_TIMEOUT):
        assert await run_cli("put", address, str(source), "reports/2026.bin") == 0
        assert file_digest(server_root / "reports" / "2026.bin") == digest
        assert await run_cli("put", address, str(source)) == 0  # remote name defaults to the file's
        assert (server_root / "report.bin").exists()

        assert await run_cli("get", address, "reports/2026.bin", "-o", str(tmp_path / "copy.bin")) == 0
        assert file_digest(tmp_path / "copy.bin") == digest

        assert await run_cli("mkdir", address, "archive/2027") == 0
        assert (server_root / "archive" / "2027").is_dir()
        capsys.readouterr()
        assert await run_cli("ls", "127.0.0.1", "--port", str(server.port)) == 0
        listing = capsys.readouterr().out.splitlines()
        assert [line.split()[-1] for line in listing] == ["archive/", "report.bin", "reports/"]
        assert listing[1].split()[0] == str(3 * MiB)
        assert await run_cli("ls", address, "reports") == 0
        assert capsys.readouterr().out.split()[-1] == "2026.bin"

        assert await run_cli("stat", address, "reports/2026.bin") == 0
        stat = capsys.readouterr().out
        assert "kind:   file" in stat and f"size:   {3 * MiB}" in stat
        assert f"blake3: {digest.hex()}" in stat
        assert await run_cli("stat", address, "archive") == 0
        assert "kind:   dir" in capsys.readouterr().out

        assert await run_cli("mv", address, "reports/2026.bin", "archive/2026.bin") == 0
        assert (server_root / "archive" / "2026.bin").exists() and not (
            server_root / "reports" / "2026.bin"
        ).exists()
        assert await run_cli("mv", address, "report.bin", "archive/2026.bin") == 1  # exists, no --replace
        assert "ALREADY_EXISTS" in one_line(capsys.readouterr().err)
        assert await run_cli("mv", address, "report.bin", "archive/2026.bin", "--replace") == 0
        assert await run_cli("rm", address, "archive/2026.bin") == 0
        assert await run_cli("rm", address, "reports") == 0
        assert names(server_root) == {".trioftp", "archive"}
    assert capsys.readouterr().err == ""


async def test_get_writes_to_the_names_last_part_by_default(
    server: Server, server_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (server_root / "deep" / "er").mkdir(parents=True)
    (server_root / "deep" / "er" / "file.txt").write_bytes(b"content")
    monkeypatch.chdir(tmp_path)
    with trio.fail_after(NETWORK_TIMEOUT):
        assert await run_cli("get", f"127.0.0.1:{server.port}", "deep/er/file.txt") == 0
    assert (tmp_path / "file.txt").read_bytes() == b"content"


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (
            ["get", "{address}", "missing.txt", "-o", "{tmp}/missing.txt"],
            "trioftp: get: NOT_FOUND: 'missing.txt'",
        ),
        (["rm", "{address}", "missing.txt"], "trioftp: rm: NOT_FOUND"),
        (["ls", "{address}", "missing"], "trioftp: ls: NOT_FOUND"),
        (["stat", "{address}", ".trioftp"], "trioftp: stat: PERMISSION_DENIED"),
        (
            ["put", "{address}", "{tmp}/no-such-file"],
            "trioftp: put: {tmp}/no-such-file: no such file or directory",
        ),
        (["put", "{address}", "{tmp}"], "trioftp: put: '{tmp}' is a folder: put -r uploads a folder"),
        (["ls", "127.0.0.1:{closed_port}"], "trioftp: ls: cannot connect to 127.0.0.1:{closed_port}"),
        (["get", "{address}", "../escape", "-o", "{tmp}/escape"], "trioftp: get: bad name: "),
    ],
    ids=[
        "get-missing",
        "rm-missing",
        "ls-missing",
        "stat-reserved",
        "put-no-local-file",
        "put-a-folder",
        "no-server",
        "bad-name",
    ],
)
async def test_errors_exit_1_with_one_line(
    server: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], expected: str
) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    fill = {"address": f"127.0.0.1:{server.port}", "tmp": str(tmp_path), "closed_port": str(closed_port)}
    before = names(tmp_path)
    with trio.fail_after(NETWORK_TIMEOUT):
        code = await run_cli(*[arg.format(**fill) for arg in argv])
    captured = capsys.readouterr()
    assert code == 1
    assert one_line(captured.err).startswith(expected.format(**fill))
    assert captured.out == ""
    assert names(tmp_path) == before  # no partial download left behind


def test_split_address() -> None:
    assert split_address("example.org", None) == ("example.org", DEFAULT_PORT)
    assert split_address("example.org:9000", None) == ("example.org", 9000)
    assert split_address("example.org", 7000) == ("example.org", 7000)
    assert split_address("example.org:9000", 9000) == ("example.org", 9000)
    with pytest.raises(ValueError, match="name two ports"):
        split_address("example.org:9000", 7000)
    assert split_address("[::1]:9000", None) == ("::1", 9000)
    assert split_address("::1", None) == ("::1", DEFAULT_PORT)
    for bad in ("example.org:abc", "example.org:0", "example.org:70000", "[::1]:x"):
        with pytest.raises(ValueError, match="is not a number from 1 to 65535"):
            split_address(bad, None)


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.strip() == f"trioftp {__version__}"


def test_serve_help_lists_every_setting(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["serve", "--help"])
    assert exited.value.code == 0
    text = capsys.readouterr().out
    for field in attrs.fields(ServerConfig):
        flag = "--" + field.name.replace("_", "-")
        assert re.search(rf"{flag}\b", text), f"{flag} missing from serve --help"
    assert "--config" in text and "--no-legacy" in text


def test_bad_serve_settings_exit_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["serve", "--root", str(tmp_path), "--max-streams", "0"]) == 2
    assert "max_streams" in one_line(capsys.readouterr().err)


def test_python_dash_m_trioftp_help() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "trioftp", "--help"], capture_output=True, text=True, timeout=NETWORK_TIMEOUT
    )
    assert result.returncode == 0
    for command in ("serve", "get", "put", "ls", "stat", "rm", "mv", "mkdir"):
        assert command in result.stdout


# -------------------------------------------------------------- serve process


async def start_serve(root: Path | None, *extra: str) -> tuple[trio.Process, int, list[str]]:
    """`python -m trioftp serve` on a free port; returns the process, its port and its log so far."""
    where = ["--root", str(root)] if root is not None else []
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "trioftp", "serve", *where, "--port", "0", *extra],
        stderr=subprocess.PIPE,
    )
    assert process.stderr is not None
    log = b""
    while b"serving" not in log:
        chunk = await process.stderr.receive_some(4096)
        assert chunk, f"serve exited early: {log.decode(errors='replace')}"
        log += chunk
    port = int(re.search(rb"serving .* on 127\.0\.0\.1:(\d+)", log).group(1))  # type: ignore[union-attr]
    return process, port, [log.decode()]


async def read_rest(process: trio.Process, log: list[str]) -> None:
    assert process.stderr is not None
    while chunk := await process.stderr.receive_some(4096):
        log.append(chunk.decode(errors="replace"))


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_serve_drains_and_exits_0_on_signal(tmp_path: Path, signum: signal.Signals) -> None:
    root = tmp_path / "root"
    digest = write_random(root / "big.bin", 64 * MiB)
    with trio.fail_after(NETWORK_TIMEOUT):
        process, port, log = await start_serve(root, "--drain-timeout", "20")
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(read_rest, process, log)
                async with connect(port) as conn:
                    signalled: list[int] = []

                    def signal_midway(done: int, total: int) -> None:
                        if not signalled:
                            signalled.append(done)
                            process.send_signal(signum)

                    await conn.download("big.bin", tmp_path / "big.bin", progress=signal_midway)
                    assert signalled[0] < 64 * MiB  # the transfer was in flight when the signal came
                    # Drained: the process ends without waiting for the 20 s drain_timeout.
                    with trio.fail_after(10):
                        code = await process.wait()
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
    assert code == 0, "".join(log)
    assert file_digest(tmp_path / "big.bin") == digest
    text = "".join(log)
    assert f"received {signum.name}: stopping" in text
    assert "GET 'big.bin' " in text and "server stopped" in text


async def test_serve_takes_a_config_file_and_exits_0_on_sigterm_when_idle(tmp_path: Path) -> None:
    config = tmp_path / "trioftp.toml"
    config.write_text(f'[server]\nroot = "{tmp_path / "from-toml"}"\nport = 1\nmax_streams = 3\n')
    (tmp_path / "from-toml").mkdir()
    (tmp_path / "from-toml" / "listed.txt").write_bytes(b"x")
    with trio.fail_after(NETWORK_TIMEOUT):
        process, port, log = await start_serve(None, "--config", str(config))  # --port 0 wins over port = 1
        async with connect(port) as conn:
            assert [e.name for e in await conn.list()] == ["listed.txt"]
            assert conn.server_hello.max_streams == 3
            process.send_signal(signal.SIGTERM)
            with trio.fail_after(10):
                assert await process.wait() == 0
            await read_rest(process, log)
    assert "received SIGTERM: stopping" in "".join(log) and "server stopped" in "".join(log)


def test_unknown_settings_in_a_config_file_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("[server]\nmax_stream = 3\n")
    assert main(["serve", "--config", str(config)]) == 2
    assert "unknown setting max_stream" in one_line(capsys.readouterr().err)


# ----------------------------------------------------- arguments as users write them


def test_a_port_that_is_not_a_number_exits_2_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["get", "127.0.0.1:abc", "x"]) == 2
    assert one_line(capsys.readouterr().err) == (
        "trioftp: 127.0.0.1:abc: the port 'abc' is not a number from 1 to 65535"
    )
    with pytest.raises(SystemExit) as exited:
        main(["ls", "127.0.0.1", "--port", "70000"])
    assert exited.value.code == 2
    assert "the port '70000' is not a number from 1 to 65535" in capsys.readouterr().err


async def test_user_without_a_password_or_a_terminal_exits_1_with_one_line(
    server: Server, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("TRIOFTP_PASSWORD", raising=False)
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))  # as with `< /dev/null`: not a terminal
    with trio.fail_after(NETWORK_TIMEOUT):
        assert await run_cli("ls", f"127.0.0.1:{server.port}", "--user", "alice") == 1
    assert one_line(capsys.readouterr().err) == (
        "trioftp: ls: no password: set TRIOFTP_PASSWORD or run from a terminal"
    )


async def test_end_of_input_at_the_password_prompt_exits_1(
    server: Server, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    def ctrl_d(prompt: str) -> str:
        raise EOFError

    monkeypatch.delenv("TRIOFTP_PASSWORD", raising=False)
    monkeypatch.setattr(sys, "stdin", Terminal(""))
    monkeypatch.setattr("getpass.getpass", ctrl_d)
    with trio.fail_after(NETWORK_TIMEOUT):
        assert await run_cli("ls", f"127.0.0.1:{server.port}", "--user", "alice") == 1
    assert one_line(capsys.readouterr().err) == "trioftp: ls: no password given"


def test_parse_remote() -> None:
    assert parse_remote("h:www") == ("h", None, "www")
    assert parse_remote("h:9000:www") == ("h", 9000, "www")
    assert parse_remote("h:9000:") == ("h", 9000, "")  # the served root
    assert parse_remote("h:9000:a:b") == ("h", 9000, "a:b")
    assert parse_remote("[::1]:9000:www") == ("::1", 9000, "www")
    assert parse_remote("[::1]:www") == ("::1", None, "www")
    for bad, message in [
        ("h", "HOST[:PORT]:FOLDER"),
        (":www", "HOST[:PORT]:FOLDER"),
        ("[::1]", "HOST[:PORT]:FOLDER"),
        ("h:abc:www", "the port 'abc' is not a number"),
        ("h:2026", "is 2026 a port or a folder?"),
    ]:
        with pytest.raises(ValueError, match=re.escape(message)):
            parse_remote(bad)


async def test_sync_to_host_and_digits_alone_is_refused_before_connecting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Once read as the folder "18801" on the default port: a dry run, or a --delete, elsewhere.
    with trio.fail_after(NETWORK_TIMEOUT):
        assert await run_cli("sync", str(tmp_path), "127.0.0.1:18801", "-n") == 2
    error = one_line(capsys.readouterr().err)
    assert "127.0.0.1:18801:FOLDER" in error and "127.0.0.1:18801: for the whole served root" in error
    assert f"127.0.0.1:{DEFAULT_PORT}:18801 for a folder named 18801" in error


def test_sync_help_explains_the_connection_options(capsys: pytest.CaptureFixture[str]) -> None:
    def help_of(command: str) -> str:
        with pytest.raises(SystemExit):
            main([command, "--help"])
        return " ".join(capsys.readouterr().out.split())

    for option in (
        f"--port PORT server port (default {DEFAULT_PORT})",
        "--user USER log in as USER (password from $TRIOFTP_PASSWORD, else asked)",
        "--tls connect over TLS",
        "--ca CA trust this CA file for TLS (implies --tls)",
    ):
        assert option in help_of("sync") and option in help_of("get"), option


async def test_get_of_a_folder_says_to_use_get_r(
    server: Server, server_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (server_root / "reports").mkdir()
    (server_root / "reports" / "a.txt").write_bytes(b"a")
    address = f"127.0.0.1:{server.port}"
    with trio.fail_after(NETWORK_TIMEOUT):
        for name in ("reports/", "reports", "/"):
            assert await run_cli("get", address, name, "-o", str(tmp_path / "out")) == 1
            assert one_line(capsys.readouterr().err) == (
                f"trioftp: get: {name!r} is a folder: get -r downloads a folder"
            )
    assert not (tmp_path / "out").exists()


async def test_get_into_an_existing_local_folder_writes_inside_it(
    server: Server, server_root: Path, tmp_path: Path
) -> None:
    (server_root / "deep").mkdir()
    (server_root / "deep" / "empty.bin").write_bytes(b"")
    (server_root / "deep" / "full.bin").write_bytes(b"full")
    (tmp_path / "dl").mkdir()
    address = f"127.0.0.1:{server.port}"
    with trio.fail_after(NETWORK_TIMEOUT):
        assert await run_cli("get", address, "deep/empty.bin", str(tmp_path / "dl")) == 0
        assert await run_cli("get", address, "deep/full.bin", "-o", str(tmp_path / "dl")) == 0
    assert (tmp_path / "dl" / "empty.bin").read_bytes() == b""
    assert (tmp_path / "dl" / "full.bin").read_bytes() == b"full"


async def test_get_to_dash_writes_standard_output(
    server: Server,
    server_root: Path,
    tmp_path: Path,
    capfdbinary: pytest.CaptureFixture[bytes],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    body = os.urandom(300_000)
    (server_root / "f.bin").write_bytes(body)
    monkeypatch.chdir(tmp_path)
    with trio.fail_after(NETWORK_TIMEOUT):
        assert await run_cli("get", f"127.0.0.1:{server.port}", "f.bin", "-o", "-") == 0
        assert await run_cli("get", f"127.0.0.1:{server.port}", "f.bin", "-") == 0
    assert capfdbinary.readouterr().out == body + body
    assert os.listdir(tmp_path) == ["root"]  # the server's; no file named "-"


@pytest.mark.parametrize("redirect", [">", ">>"])
async def test_get_to_dash_shares_the_shells_stdout(
    server: Server, server_root: Path, tmp_path: Path, redirect: str
) -> None:
    """Into a file the shell redirected stdout to: the shell's own writes before and after stay."""
    body = os.urandom(200_000)
    (server_root / "f.bin").write_bytes(body)
    out = tmp_path / "out.bin"
    out.write_bytes(b"already here\n")
    get = f"{sys.executable} -m trioftp get 127.0.0.1:{server.port} f.bin -o -"
    script = f"{{ echo before; {get}; echo after; }} {redirect} {out}"
    with trio.fail_after(NETWORK_TIMEOUT):
        done = await trio.run_process(["sh", "-c", script], check=False)
    assert done.returncode == 0
    kept = b"already here\n" if redirect == ">>" else b""
    assert out.read_bytes() == kept + b"before\n" + body + b"after\n"


async def test_ls_takes_the_root_and_folders_as_written_in_a_shell(
    server: Server, server_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (server_root / "reports").mkdir()
    (server_root / "reports" / "a.txt").write_bytes(b"a")
    (server_root / "top.txt").write_bytes(b"t")
    address = f"127.0.0.1:{server.port}"

    async def listed(*folder: str) -> list[str]:
        assert await run_cli("ls", address, *folder) == 0, capsys.readouterr().err
        return [line.split()[-1] for line in capsys.readouterr().out.splitlines()]

    with trio.fail_after(NETWORK_TIMEOUT):
        assert await listed() == ["reports/", "top.txt"]
        for root in ("/", ".", "", "./"):
            assert await listed(root) == ["reports/", "top.txt"], root
        for folder in ("reports/", "/reports", "./reports", "reports"):
            assert await listed(folder) == ["a.txt"], folder
        assert await run_cli("ls", address, "../reports") == 1  # ".." is still the server's to refuse
        assert "bad name" in one_line(capsys.readouterr().err)
        (server_root / "latest").symlink_to("reports")
        assert await listed() == ["latest@", "reports/", "top.txt"]  # links marked as ls -F does


async def test_get_r_and_put_r_take_folders_with_slashes(
    server: Server, server_root: Path, tmp_path: Path
) -> None:
    (server_root / "reports").mkdir()
    (server_root / "reports" / "a.txt").write_bytes(b"a")
    address = f"127.0.0.1:{server.port}"
    with trio.fail_after(NETWORK_TIMEOUT):
        assert await run_cli("get", "-r", address, "/reports/", str(tmp_path / "copy")) == 0
        assert (tmp_path / "copy" / "a.txt").read_bytes() == b"a"
        assert await run_cli("put", "-r", address, str(tmp_path / "copy"), "./backup/") == 0
    assert (server_root / "backup" / "a.txt").read_bytes() == b"a"


async def test_put_to_a_folder_puts_the_file_inside_it(
    server: Server, server_root: Path, tmp_path: Path
) -> None:
    (server_root / "www").mkdir()
    (server_root / "www" / "sub").mkdir()
    source = tmp_path / "report.pdf"
    source.write_bytes(b"pdf")
    address = f"127.0.0.1:{server.port}"
    with trio.fail_after(NETWORK_TIMEOUT):
        assert await run_cli("put", address, str(source), "www/") == 0
        assert (server_root / "www" / "report.pdf").read_bytes() == b"pdf"
        assert await run_cli("put", address, str(source), "www/sub") == 0  # a folder, found by STAT
        assert (server_root / "www" / "sub" / "report.pdf").read_bytes() == b"pdf"
        assert await run_cli("put", address, str(source), "/") == 0
        assert (server_root / "report.pdf").read_bytes() == b"pdf"
        assert await run_cli("put", address, str(source), "new.pdf") == 0  # not there: a file name
        assert (server_root / "new.pdf").read_bytes() == b"pdf"
        assert await run_cli("put", address, str(source), "www/new/") == 0  # a folder to be
        assert (server_root / "www" / "new" / "report.pdf").read_bytes() == b"pdf"


async def test_put_under_a_file_still_fails_with_one_line(
    server: Server, server_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (server_root / "plain.txt").write_bytes(b"x")
    source = tmp_path / "report.pdf"
    source.write_bytes(b"pdf")
    with trio.fail_after(NETWORK_TIMEOUT):
        assert await run_cli("put", f"127.0.0.1:{server.port}", str(source), "plain.txt/inner") == 1
    assert one_line(capsys.readouterr().err).startswith("trioftp: put: WRONG_KIND: ")
    assert (server_root / "plain.txt").read_bytes() == b"x"


# ------------------------------------------------- from a second user review


async def test_get_into_a_folder_that_is_not_there_fails_like_cp(
    server: Server, server_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (server_root / "f.txt").write_bytes(b"f")
    address = f"127.0.0.1:{server.port}"
    with trio.fail_after(NETWORK_TIMEOUT):
        assert await run_cli("get", address, "f.txt", f"{tmp_path}/newfolder/") == 1
        assert "newfolder/: no such folder" in one_line(capsys.readouterr().err)
        assert await run_cli("get", address, "f.txt", str(tmp_path / "a"), "-o", str(tmp_path / "b")) == 2
        assert "name two outputs" in capsys.readouterr().err
        assert await run_cli("get", "-r", address, "", "-o", "-") == 1
        assert "'-' (standard output) takes one file" in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path)) == ["root"]


async def test_names_as_written_in_a_shell_for_every_command(
    server: Server, server_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for folder in ("m1", "m2", "q1", "box"):
        (server_root / folder).mkdir()
    (server_root / "q1" / "f.txt").write_bytes(b"q")
    (server_root / "m2" / "x.txt").write_bytes(b"x")
    (server_root / "note.txt").write_bytes(b"n")
    address = f"127.0.0.1:{server.port}"
    with trio.fail_after(NETWORK_TIMEOUT):
        assert await run_cli("rm", address, "m1/") == 0
        assert await run_cli("rm", "-r", address, "./m2") == 0
        assert await run_cli("stat", address, "./q1/") == 0
        assert "kind:   dir" in capsys.readouterr().out
        assert await run_cli("get", address, "./q1//f.txt", "-") == 0
        assert await run_cli("mv", address, "note.txt", "box/") == 0  # into the folder, as mv does
        assert await run_cli("ls", address, "box/note.txt") == 0  # a file: its own line, as ls does
        assert capsys.readouterr().out.split()[-1] == "note.txt"
        assert await run_cli("rm", "-r", address, ".") == 2
        assert "refusing to remove the root" in capsys.readouterr().err
        assert await run_cli("stat", address, "/") == 1
        assert "is the served root" in capsys.readouterr().err
    assert sorted(os.listdir(server_root)) == [".trioftp", "box", "q1"]
    assert os.listdir(server_root / "box") == ["note.txt"]


async def test_a_closed_stdout_is_an_error_not_a_hang(server: Server, server_root: Path) -> None:
    (server_root / "f.bin").write_bytes(b"x" * 100_000)
    get = f"{sys.executable} -m trioftp get 127.0.0.1:{server.port} f.bin -o -"
    with trio.fail_after(NETWORK_TIMEOUT):  # fd 1 used to become the client's own epoll or socket
        done = await trio.run_process(["sh", "-c", f"{get} >&-"], check=False, capture_stderr=True)
    assert done.returncode == 1
    assert done.stderr.decode().strip() == "trioftp: get: standard output is closed"


async def test_a_reader_that_stops_ends_get_quietly(server: Server, server_root: Path) -> None:
    (server_root / "f.bin").write_bytes(os.urandom(8 * 1024 * 1024))
    get = f"{sys.executable} -m trioftp get 127.0.0.1:{server.port} f.bin -o -"
    script = f"{get} | head -c 10 > /dev/null; echo ${{PIPESTATUS[0]}}"
    with trio.fail_after(NETWORK_TIMEOUT):
        done = await trio.run_process(
            ["bash", "-c", script], check=False, capture_stdout=True, capture_stderr=True
        )
    assert done.stdout.decode().strip() == "141"  # 128 + SIGPIPE, as cat | head
    assert done.stderr == b""


async def test_an_empty_password_variable_is_no_password(
    server: Server, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TRIOFTP_PASSWORD", "")
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    assert await run_cli("ls", f"127.0.0.1:{server.port}", "--user", "alice") == 1
    assert "no password" in capsys.readouterr().err
