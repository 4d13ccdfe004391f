"""What every client command shares: connection flags, password, timeout, and the run.

`_run_client` turns the parsed arguments into one `trio.run` of the command and its
failure into one line and exit status 1.
"""

from __future__ import annotations

import argparse
import getpass
import io
import math
import os
import signal
import ssl
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import IO, Any

import trio

from trioftp.cli.diagnose import (
    CommandFailed,
    _client_problem,
    _host_port,
    _reader_left,
    _reason,
    sole_exception,
)
from trioftp.cli.paths import (
    _has_folder_part,
    _is_open,
    _split_sync,
    folder_name,
    parse_remote,
    split_address,
)
from trioftp.cli.progress import Bars
from trioftp.client import open_connection, tree
from trioftp.config import DEFAULT_TIMEOUT


def _rules(args: argparse.Namespace) -> tree.Rules | None:
    """The command's --exclude and --include rules; they need a folder (-r, sync)."""
    if not args.rules:
        return None
    if not getattr(args, "recursive", True):
        raise ValueError(f"--{args.rules[0][0]} applies to folders: give -r")
    return tree.Rules.from_options(args.rules)


def _run_client(run: Callable[[argparse.Namespace], Awaitable[None]], args: argparse.Namespace) -> int:
    """Exit status: 1 for a failed command; ValueError (a malformed argument) goes to main: 2."""
    if args.command == "sync":
        _split_sync(args)
    elif args.command == "ls" and _has_folder_part(args.host):
        if args.folder:
            raise ValueError(f"{args.host!r} names a folder, and so does {args.folder!r}: give one")
        host, port, args.folder = parse_remote(args.host)
        args.host = host if port is None else _host_port(host, port)
    args.host, args.port = split_address(args.host, args.port)
    args.timeout = _timeout(args.timeout)
    args.rules = _rules(args) if "rules" in args else None
    args.bars = Bars()
    args.stdin_copy = None
    try:
        args.password = _password(args)
        try:
            if args.command == "put" and str(args.path) == "-":
                args.stdin_copy = _spool_stdin(args)
            trio.run(run, args)
        finally:  # the bars end their lines first: what follows (an error, Ctrl-C) gets its own
            args.bars.close()
            if args.stdin_copy is not None:
                args.stdin_copy.close()
    except BaseException as exc:
        if _reader_left(sole_exception(exc)):
            return 128 + signal.SIGPIPE  # quietly, as `cat | head` ends
        problem = _client_problem(sole_exception(exc))
        if problem is None:
            raise
        print(f"trioftp: {args.command}: {problem}", file=sys.stderr)
        return 1
    return 0


def _spool_stdin(args: argparse.Namespace) -> IO[bytes]:
    """`put HOST - NAME`: standard input, copied whole into a temporary file that the upload sends.

    A PUT states the file's size before its first byte (and the digest of all of it at
    the end), so a stream of unknown length cannot be sent as it comes. On disk rather
    than in memory: it may be larger than memory. The file is deleted when closed.
    """
    if args.recursive:
        raise ValueError("put -r uploads a folder; '-' (standard input) is one file")
    if args.name is None or args.name.endswith("/") or not folder_name(args.name):
        raise ValueError("put HOST - NAME: standard input has no name of its own: give the remote NAME")
    if sys.stdin is None or not _is_open(0):
        raise CommandFailed("standard input is closed")
    copy = tempfile.NamedTemporaryFile(prefix="trioftp-stdin-")  # noqa: SIM115 (closed by the caller)
    try:
        while block := _read_stdin(1024 * 1024):
            try:
                copy.write(block)
            except OSError as exc:  # a full temporary folder, say: name the file that did not fit
                raise OSError(exc.errno, exc.strerror, copy.name) from None
        try:
            copy.flush()
        except OSError as exc:
            raise OSError(exc.errno, exc.strerror, copy.name) from None
    except BaseException:
        copy.close()
        raise
    args.path = Path(copy.name)
    return copy


def _read_stdin(size: int) -> bytes:
    stream: io.BufferedReader = sys.stdin.buffer  # type: ignore[assignment]
    try:
        return stream.read1(size)
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, "standard input") from None


def _timeout(text: str | None) -> float:
    """--timeout as seconds; checked here, not by argparse, so a bad one is one line, not the usage."""
    if text is None:
        return DEFAULT_TIMEOUT
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not 0 < seconds < math.inf:
        raise ValueError(f"--timeout: {text!r} is not a positive number of seconds")
    return seconds


def _password(args: argparse.Namespace) -> str | None:
    """--user's password: $TRIOFTP_PASSWORD, else asked on the terminal; None without --user."""
    if not args.user:
        return None
    password = os.environ.get("TRIOFTP_PASSWORD")
    if password:  # set but empty is a mistake more often than a password: it would count as a failure
        return password
    # Without a terminal getpass warns, then reads stdin: a script's input, or EOF.
    if not sys.stdin.isatty():
        raise CommandFailed("no password: set TRIOFTP_PASSWORD or run from a terminal")
    try:
        return getpass.getpass(f"password for {args.user}@{args.host}: ")
    except EOFError:
        raise CommandFailed("no password given") from None


def _connect(args: argparse.Namespace) -> Any:
    """open_connection() with the command's --user (and its password), --tls and --ca."""
    tls: bool | ssl.SSLContext = bool(args.tls)
    if args.ca:
        try:
            tls = ssl.create_default_context(cafile=str(args.ca))
        except ssl.SSLError:  # read, but OpenSSL found no certificate in it
            raise CommandFailed(f"--ca {args.ca}: no CA certificate in PEM form in it") from None
        except OSError as exc:
            raise CommandFailed(f"--ca {args.ca}: {_reason(exc)}") from None
    return open_connection(
        args.host, args.port, user=args.user, password=args.password, tls=tls, timeout=args.timeout
    )
