"""Issue 16, "Everyday use", items 8 to 10: errors, arguments and what was missing, against the real CLI."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import trio

from tests.conftest import NETWORK_TIMEOUT
from tests.test_cli import start_serve
from trioftp.cli import build_parser, main
from trioftp.config import build_config, load_toml, setting_from_text


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
