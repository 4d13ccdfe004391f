"""The options every client command shares (--port, --user, --tls, --timeout, rules).

Apart from the commands' code, so that building the parser (which `trioftp serve`
does too) loads neither the client nor trio's networking.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from trioftp.config import DEFAULT_PORT, DEFAULT_TIMEOUT


def parse_port(text: str, where: str = "") -> int:
    """A port number from 1 to 65535, else ValueError naming `where` (the argument it came from)."""
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= 65535:
        raise ValueError(f"{where}{': ' if where else ''}the port {text!r} is not a number from 1 to 65535")
    return int(text)


def _port_flag(text: str) -> int:
    try:
        return parse_port(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _add_connection_options(parser: argparse.ArgumentParser) -> None:
    """--port, --user, --tls and --ca, for every command that talks to a server."""
    parser.add_argument("--port", type=_port_flag, default=None, help=f"server port (default {DEFAULT_PORT})")
    parser.add_argument("--user", help="log in as USER (password from $TRIOFTP_PASSWORD, else asked)")
    parser.add_argument("--tls", action="store_true", help="connect over TLS")
    parser.add_argument("--ca", type=Path, help="trust this CA file for TLS (implies --tls)")
    parser.add_argument(
        "--timeout", metavar="SECONDS",
        help=f"seconds the server has to let us in (default {DEFAULT_TIMEOUT:g}); with --legacy, to make "
        "any progress",
    )  # fmt: skip


def _add_rule_options(parser: argparse.ArgumentParser) -> None:
    """--exclude and --include, kept in the order given (rsync's rules: the first match decides)."""
    for kind, what in (("exclude", "leave out"), ("include", "keep, though a later --exclude matches")):
        parser.add_argument(
            f"--{kind}", dest="rules", action="append", type=_tagged(kind), metavar="PATTERN", default=[],
            help=f"{what} what PATTERN matches (rsync's rules; repeatable)",
        )  # fmt: skip


def _tagged(kind: str) -> Callable[[str], tuple[str, str]]:
    return lambda pattern: (kind, pattern)
