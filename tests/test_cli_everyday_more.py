"""Issue 16, "Everyday use", items 8 to 10: errors, arguments and what was missing, against the real CLI."""

from __future__ import annotations

import argparse

import pytest

from trioftp.cli import build_parser, main


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
