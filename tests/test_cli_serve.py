"""`trioftp serve`'s settings as users get them wrong: errors that name the setting and the file."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import trio

from tests.conftest import NETWORK_TIMEOUT
from tests.test_cli import one_line
from trioftp.config import build_config, load_toml


async def serve_process(*argv: str) -> tuple[int, str]:
    """`python -m trioftp serve ARGV...` to its end (a real process: serve needs the main thread)."""
    result = await trio.run_process(
        [sys.executable, "-m", "trioftp", "serve", *argv],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    return result.returncode, result.stderr.decode()


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
        ("[server]\nportt = 1\n", "unknown settings portt (did you mean port?)"),
        ('[server]\nlog_format = "xml"\n', "log_format: 'xml' is not one of text, json"),
    ],
    ids=[
        "outside-server", "syntax", "port-text", "port-float", "port-bool", "bool-text", "float-text",
        "path-number", "unknown", "log-format",
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


def test_a_file_without_a_server_table_is_read_as_settings(tmp_path: Path) -> None:
    # Documented in load_toml: a file of settings alone, with no tables at all.
    config = build_config(load_toml(write(tmp_path / "flat.toml", "port = 9000\nmax_streams = 3\n")), {})
    assert (config.port, config.max_streams) == (9000, 3)


def test_tilde_is_home_in_path_settings_from_files_and_flags(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    paths = {"root": "~/files", "users_file": "~/users.toml", "tls_cert": "~/c.pem", "tls_key": "~/k.pem"}
    from_file = build_config(load_toml(write(tmp_path / "t.toml", "".join(
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
