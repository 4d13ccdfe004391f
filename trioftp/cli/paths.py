"""The command line's path and address rules, as cp, mv and rsync users expect them.

HOST[:PORT] and sync's HOST[:PORT]:FOLDER parsing, remote names written the shell's way
("./a//b/"), and where get writes (into a folder, "-" for standard output). No I/O
beyond looking at local paths.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
from pathlib import Path

from trioftp.cli.diagnose import CommandFailed
from trioftp.cli.options import parse_port
from trioftp.client import tree
from trioftp.config import DEFAULT_PORT


def split_address(address: str, port: int | None) -> tuple[str, int]:
    """HOST, HOST:PORT or [IPv6]:PORT; an explicit --port wins.

    Raises:
        ValueError: the PORT part is not a port number.
    """
    if _has_folder_part(address):
        raise ValueError(
            f"{address!r}: HOST:PORT:FOLDER is sync's (and ls's) form; here give HOST[:PORT], then the name"
        )
    host, text = address, ""
    if address.startswith("["):
        host, _, rest = address[1:].partition("]")
        text = rest.removeprefix(":")
    elif address.count(":") == 1:
        host, _, text = address.partition(":")
    chosen = parse_port(text, address) if text else None
    if chosen is not None and port is not None and chosen != port:
        raise ValueError(f"{address} and --port {port} name two ports: give one")
    return host, port if port is not None else (chosen if chosen is not None else DEFAULT_PORT)


def _has_folder_part(address: str) -> bool:
    """Whether `address` is sync's HOST:PORT:FOLDER (or [IPv6]:PORT:FOLDER), not a bare IPv6 address."""
    if address.startswith("["):
        return address.partition("]")[2].count(":") >= 2
    if address.count(":") < 2:
        return False
    try:
        ipaddress.IPv6Address(address)
    except ValueError:
        return True
    return False


def folder_name(text: str) -> str:
    """A remote folder argument as a wire name: "/", "." and "" are the served root.

    Slashes at either end (or doubled) and "." segments are shell habits ("reports/",
    "./www"); the protocol refuses them in names, so they are dropped here, for folders only.
    """
    return "/".join(part for part in text.split("/") if part not in ("", "."))


def _split_sync(args: argparse.Namespace) -> None:
    """Which side is remote: the local side is an existing folder (or the target of a download).

    Raises:
        ValueError: both sides name a server (rsync refuses that too).
    """
    if os.path.isdir(args.source) or ":" not in args.source:  # os.path's: False for a name too long
        args.direction, local, remote = tree.Direction.UP, args.source, args.target
    else:
        args.direction, local, remote = tree.Direction.DOWN, args.target, args.source
        if _looks_remote(local):
            raise ValueError(
                f"{args.source!r} and {args.target!r} are both remote: one side must be a local folder "
                f"(for a local folder whose name has a colon, write ./{args.target})"
            )
    args.host, port, folder = parse_remote(remote)
    args.port = args.port if args.port is not None else port
    args.local = Path(local)
    args.remote = folder_name(folder)


def _looks_remote(text: str) -> bool:
    """Whether sync would take `text` as HOST[:PORT]:FOLDER: it is no local path, and parses as one."""
    if os.path.lexists(text) or text.startswith(("/", "./", "../", "~")):
        return False
    try:
        parse_remote(text)
    except ValueError:
        return ":" in text  # HOST:DIGITS, refused above as ambiguous, is remote-looking too
    return True


def parse_remote(spec: str) -> tuple[str, int | None, str]:
    """sync's HOST:FOLDER or HOST:PORT:FOLDER ([IPv6] in brackets) as (host, port or None, folder).

    HOST:DIGITS is refused: it would be the folder DIGITS on the default port, while it is
    more likely HOST:PORT with the folder forgotten, and sync may delete on the wrong server.

    Raises:
        ValueError: not of that form, or ambiguous; the message says what to write.
    """
    if spec.startswith("["):
        host, bracket, rest = spec[1:].partition("]")
        well_formed = bool(bracket) and rest.startswith(":")
        rest = rest[1:]
    else:
        host, colon, rest = spec.partition(":")
        well_formed = bool(colon)
    if not well_formed or not host:
        raise ValueError(f"the remote side must be HOST[:PORT]:FOLDER, got {spec!r}")
    first, colon, folder = rest.partition(":")
    if colon:
        return host, parse_port(first, spec), folder
    if rest.isascii() and rest.isdigit():
        written = spec[: -len(rest) - 1]
        raise ValueError(
            f"{spec!r}: is {rest} a port or a folder? Write {written}:{rest}:FOLDER "
            f"({written}:{rest}: for the whole served root), or {written}:{DEFAULT_PORT}:{rest} "
            f"for a folder named {rest}"
        )
    return host, None, rest


def _remote_file(name: str | None, path: Path) -> str:
    """put's remote name: `name`, inside it if it ends in "/" (or is "/" or "."), else the file's own."""
    if name is None:
        return path.name
    if name.endswith("/") or not folder_name(name):
        folder = folder_name(name)
        return f"{folder}/{path.name}" if folder else path.name
    return name


def _remote_name(text: str) -> str:
    """A remote file or folder argument as a wire name ("./a//b/" is "a/b"); not the root."""
    name = folder_name(text)
    if not name:
        raise CommandFailed(f"{text!r} is the served root: name a file or folder in it")
    return name


def _output(args: argparse.Namespace) -> str | None:
    """get's LOCAL or -o (as typed: a trailing slash says "a folder"), not both."""
    if args.local is not None and args.output is not None:
        raise ValueError(f"LOCAL {args.local!r} and -o {args.output!r} name two outputs: give one")
    given: str | None = args.local if args.local is not None else args.output
    return given


def _local_file(given: str | None, name: str) -> Path:
    """Where get writes `name`: `given` (inside it if a folder, as cp does; `-` is standard
    output), else the name's last part."""
    last = name.rsplit("/", 1)[-1]
    if given is None:
        return Path(last)
    if given == "-":
        # Python leaves sys.stdout None when fd 1 was closed at start; fd 1 may
        # since have become one of the client's own (trio's epoll, a socket).
        if sys.stdout is None or not _is_open(1):
            raise CommandFailed("standard output is closed")
        return Path("/dev/stdout")  # written in place, as it arrives (see client.targets)
    folder = Path(given)
    if folder.is_dir():
        return folder / last
    if given.endswith("/"):  # as cp: a folder was meant, and there is none
        raise CommandFailed(f"{given}: no such folder")
    return folder


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def _join_remote(folder: str, name: str) -> str:
    return f"{folder}/{name}" if folder else name
