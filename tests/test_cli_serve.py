"""`trioftp serve` as users meet it: one line when it cannot start, settings errors that
name the setting and the file, and a second Ctrl-C that stops at once without a traceback."""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import trio
import trustme

from tests.conftest import NETWORK_TIMEOUT
from tests.test_cli import one_line, read_rest, start_serve
from tests.v2_helpers import MiB, connect, write_random
from trioftp import cli
from trioftp.cli import main
from trioftp.config import ServerConfig, build_config, load_toml
from trioftp.errors import TrioftpError


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port on 127.0.0.1 that something else listens on."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        yield taken.getsockname()[1]


@pytest.fixture(scope="module")
def pem_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A certificate, its key, and the key of another certificate."""
    folder = tmp_path_factory.mktemp("pem")
    ca = trustme.CA()
    cert, other = ca.issue_cert("127.0.0.1"), ca.issue_cert("127.0.0.1")
    files = {"cert": folder / "cert.pem", "key": folder / "key.pem", "other_key": folder / "other.pem"}
    cert.cert_chain_pems[0].write_to_path(str(files["cert"]))
    cert.private_key_pem.write_to_path(str(files["key"]))
    other.private_key_pem.write_to_path(str(files["other_key"]))
    return files


# Each case: (flags after `serve --root ROOT`, the one line expected), with {tmp}, {busy},
# {cert}, {key} and {other_key} filled in.
START_FAILURES: list[tuple[list[str], str]] = [
    (["--port", "{busy}"], "cannot listen on 127.0.0.1:{busy}: address already in use"),
    (["--host", "192.0.2.1"], "cannot listen on 192.0.2.1:0: not an address of this machine"),
    (
        ["--metrics", "127.0.0.1:{busy}"],
        "cannot listen on 127.0.0.1:{busy} (--metrics): address already in use",
    ),
    (["--root", "{tmp}/file"], "--root {tmp}/file: not a folder"),
    (["--root", "{tmp}/file/below"], "--root {tmp}/file/below: a part of its path is a file, not a folder"),
    (["--config", "{tmp}/none.toml"], "--config {tmp}/none.toml: no such file or directory"),
    (["--users-file", "{tmp}/none.toml"], "--users-file {tmp}/none.toml: no such file or directory"),
    (["--users-file", "{tmp}/file"], "--users-file {tmp}/file: Expected '=' after a key"),
    (["--tls-cert", "{key}", "--tls-key", "{key}"], "--tls-cert {key}: not a certificate in PEM form ("),
    (["--tls-cert", "{cert}", "--tls-key", "{cert}"], "--tls-key {cert}: not a private key in PEM form ("),
    (["--tls-cert", "{tmp}/none.pem", "--tls-key", "{key}"], "--tls-cert {tmp}/none.pem: no such file"),
    (
        ["--tls-cert", "{cert}", "--tls-key", "{other_key}"],
        "--tls-cert {cert}, --tls-key {other_key}: the key is not the certificate's",
    ),
]


@pytest.mark.parametrize(
    ("flags", "expected"),
    START_FAILURES,
    ids=[
        "port-in-use", "not-our-address", "metrics-port-in-use", "root-is-a-file", "root-under-a-file",
        "no-config-file", "no-users-file", "users-file-not-toml", "cert-is-a-key", "key-is-a-cert",
        "no-cert-file", "key-of-another-cert",
    ],
)  # fmt: skip
async def test_serve_that_cannot_start_exits_1_with_one_line(
    tmp_path: Path, busy_port: int, pem_files: dict[str, Path], flags: list[str], expected: str
) -> None:
    (tmp_path / "file").write_text("a file, not a folder\n")
    fill = {"tmp": str(tmp_path), "busy": str(busy_port), **{k: str(v) for k, v in pem_files.items()}}
    argv = ["--root", str(tmp_path / "root"), "--port", "0", *[f.format(**fill) for f in flags]]
    with trio.fail_after(NETWORK_TIMEOUT):
        code, err = await serve_process(*argv)
    *logged, last = err.strip().splitlines()
    assert code == 1
    assert last.startswith("trioftp: " + expected.format(**fill)), err
    # Beyond loopback without users, the warning that anyone may change everything comes first.
    assert all(" INFO trioftp." in line or " NO USERS FILE: " in line for line in logged), err
    assert not any("serving" in line for line in logged), err  # not even with only --metrics failing


async def serve_process(*argv: str) -> tuple[int, str]:
    """`python -m trioftp serve ARGV...` to its end (a real process: serve needs the main thread)."""
    result = await trio.run_process(
        [sys.executable, "-m", "trioftp", "serve", *argv],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    return result.returncode, result.stderr.decode()


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux's /proc")
async def test_serve_with_a_root_that_cannot_be_created_exits_1() -> None:
    with trio.fail_after(NETWORK_TIMEOUT):
        code, err = await serve_process("--root", "/proc/nope", "--port", "0")
    assert code == 1
    assert one_line(err) == "trioftp: --root /proc/nope: cannot create it: no such file or directory"


def test_ctrl_c_wrapped_in_exception_groups_exits_130_quietly(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def interrupted(args: object) -> int:  # as trio.run raises it out of nested nurseries
        raise BaseExceptionGroup("outer", [BaseExceptionGroup("inner", [KeyboardInterrupt()])])

    monkeypatch.setattr(cli.serve, "_serve", interrupted)  # where build_parser finds it
    assert main(["serve"]) == 130
    assert capsys.readouterr().err == ""


async def test_a_second_signal_stops_the_drain_at_once_without_a_traceback(tmp_path: Path) -> None:
    root = tmp_path / "root"
    write_random(root / "big.bin", 64 * MiB)
    with trio.fail_after(NETWORK_TIMEOUT):
        process, port, log = await start_serve(root, "--drain-timeout", "60")
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(read_rest, process, log)
                async with connect(port) as conn:
                    signalled: list[float] = []

                    def interrupt_twice(done: int, total: int) -> None:
                        if signalled:
                            return
                        signalled.append(time.monotonic())
                        process.send_signal(signal.SIGINT)
                        # Blocks this client, so the server's GET is still in flight at the second.
                        time.sleep(0.3)
                        process.send_signal(signal.SIGINT)

                    with pytest.raises(TrioftpError):
                        await conn.download("big.bin", tmp_path / "big.bin", progress=interrupt_twice)
                    with trio.fail_after(5):  # not the 60 s drain_timeout
                        code = await process.wait()
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
    text = "".join(log)
    assert code == 130, text  # 128 + SIGINT, as a shell reports a process Ctrl-C ended
    assert "Traceback" not in text and "KeyboardInterrupt" not in text
    assert "received SIGINT: stopping" in text and "received SIGINT again" in text
    assert text.strip().splitlines()[-1] == "trioftp: stopped before transfers finished"


# ------------------------------------------------------------------ settings


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        ('root = "x"\n[server]\nport = 0\n', "outside the [server] table: root (move under [server])"),
        ("[server\nport = 0\n", "Expected ']' at the end of a table declaration"),
        ('[server]\nport = "abc"\n', "port: 'abc' is not a whole number"),
        ("[server]\nport = 1.5\n", "port: 1.5 is not a whole number"),
        ("[server]\nport = true\n", "port: True is not a whole number"),
        ('[server]\nlegacy = "yes"\n', "legacy: 'yes' is not true or false"),
        ('[server]\ndrain_timeout = "10s"\n', "drain_timeout: '10s' is not a number"),
        ("[server]\nroot = 3\n", "root: 3 is not a path"),
        ("[server]\nportt = 1\n", "unknown setting portt (did you mean port?)"),
        ('[server]\nlog_format = "xml"\n', "log_format: 'xml' is not one of text, json"),
        ('[server]\nroot = ""\n', "root: '' is empty"),
    ],
    ids=[
        "outside-server", "syntax", "port-text", "port-float", "port-bool", "bool-text", "float-text",
        "path-number", "unknown", "log-format", "root-empty",
    ],
)  # fmt: skip
def test_bad_config_files_are_refused_naming_the_file_and_setting(
    tmp_path: Path, toml: str, expected: str
) -> None:
    config = write(tmp_path / "bad.toml", toml)
    with pytest.raises(ValueError) as refused:
        build_config(load_toml(config), {})
    assert str(refused.value).startswith(f"{config}: ") and expected in str(refused.value)
    assert "Attribute(" not in str(refused.value)


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (
            ["--log-level", "verbose"],
            "trioftp: log_level: 'verbose' is not one of DEBUG, INFO, WARNING, ERROR",
        ),
        (["--log-format", "xml"], "trioftp: log_format: 'xml' is not one of text, json"),
        (["--port", "70000"], "trioftp: port must be in 0..65535, got 70000"),
        (["--config", "{tmp}/mixed.toml"], "trioftp: {tmp}/mixed.toml: outside the [server] table: root"),
    ],
    ids=["log-level", "log-format", "port", "config-file"],
)
async def test_bad_settings_exit_2_with_one_line(tmp_path: Path, flags: list[str], expected: str) -> None:
    write(tmp_path / "mixed.toml", 'root = "elsewhere"\n[server]\nport = 0\n')
    with trio.fail_after(NETWORK_TIMEOUT):  # were the setting taken, the server would run until here
        code, err = await serve_process("--root", str(tmp_path), "--port", "0",
                                        *[f.format(tmp=tmp_path) for f in flags])  # fmt: skip
    assert code == 2
    assert one_line(err).startswith(expected.format(tmp=tmp_path))


def test_log_level_takes_any_case() -> None:
    assert build_config({}, {"log_level": "debug"}).log_level == "debug"
    assert build_config({"log_level": "Warning"}, {}).log_level == "Warning"


@pytest.mark.parametrize(
    ("text", "found"),
    [("port = 9000\nmax_streams = 3\n", "(found: max_streams, port)"), ("", "(the file is empty)")],
)
def test_a_file_without_a_server_table_is_an_error(tmp_path: Path, text: str, found: str) -> None:
    # As the README says: settings go under [server], and a file without it is not half-read.
    path = write(tmp_path / "flat.toml", text)
    with pytest.raises(ValueError, match=r"flat\.toml: no \[server\] table") as caught:
        load_toml(path)
    assert found in str(caught.value)


def test_tilde_is_home_in_path_settings_from_files_and_flags(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    paths = {"root": "~/files", "users_file": "~/users.toml", "tls_cert": "~/c.pem", "tls_key": "~/k.pem"}
    from_file = build_config(load_toml(write(tmp_path / "t.toml", "[server]\n" + "".join(
        f'{name} = "{value}"\n' for name, value in paths.items()
    ))), {})  # fmt: skip
    from_flags = build_config(
        {}, {"root": Path("~/files"), **{k: v for k, v in paths.items() if k != "root"}}
    )
    for config in (from_file, from_flags):
        assert config.root == tmp_path / "files"
        assert (config.users_file, config.tls_cert, config.tls_key) == (
            f"{tmp_path}/users.toml",
            f"{tmp_path}/c.pem",
            f"{tmp_path}/k.pem",
        )
    assert build_config({}, {"metrics": "~x:1"}).metrics == "~x:1"  # not a path: as written


# -------------------------------------------------------------- clear text


@pytest.mark.parametrize(
    ("settings", "warned"),
    [
        ({"host": "0.0.0.0"}, True),
        ({"host": "files.example.org"}, True),
        ({"host": ""}, True),
        ({"host": "127.0.0.1"}, False),
        ({"host": "::1"}, False),
        ({"host": "localhost"}, False),
        ({"host": "0.0.0.0", "users_file": ""}, False),
        ({"host": "0.0.0.0", "tls_cert": "c.pem", "tls_key": "k.pem"}, False),
    ],
)
def test_logins_without_tls_beyond_loopback_are_warned_of(
    caplog: pytest.LogCaptureFixture, settings: dict[str, str], warned: bool
) -> None:
    config = ServerConfig(**{"users_file": "users.toml", **settings})
    warn: Callable[[ServerConfig], None] = cli._warn_if_passwords_in_clear
    with caplog.at_level(logging.WARNING, logger="trioftp"):
        warn(config)
    assert any("passwords cross the network in clear text" in r.message for r in caplog.records) == warned
