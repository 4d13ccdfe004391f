"""`trioftp serve`'s flags: one per ServerConfig field (the command itself is in serve.py).

Apart from it so that building the parser, which every command does, loads no server code.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import attrs

from trioftp.config import FIELD_HELP, ServerConfig


def add_serve(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """The `serve` subcommand and its flags; returns its parser."""
    parser = sub.add_parser(
        "serve",
        help="serve a folder",
        description="Serve a folder to trioftp (v2) and legacy text-protocol clients.",
    )
    parser.add_argument("--config", type=Path, help="TOML file of settings (a [server] table); flags win")
    defaults = ServerConfig()
    for field in attrs.fields(ServerConfig):
        flag = "--" + field.name.replace("_", "-")
        default = getattr(defaults, field.name)
        help_text = FIELD_HELP.get(field.name, "")
        if field.type in (bool, "bool"):
            parser.add_argument(flag, dest=field.name, action=argparse.BooleanOptionalAction, default=None,
                                help=f"{help_text} (default: {default})")  # fmt: skip
        else:
            # Converted in _serve, not by argparse: a bad value is then one line naming the flag,
            # not the whole (long) usage.
            parser.add_argument(flag, dest=field.name, default=None, metavar=field.name.upper(),
                                help=f"{help_text} (default: {default})")  # fmt: skip
    return parser
