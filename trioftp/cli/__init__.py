"""The `trioftp` command: argv -> settings -> one library call.

Usage::

    trioftp serve [--root DIR] [--host HOST] [--port PORT] [--config FILE] ...
    trioftp get HOST[:PORT] NAME [-o PATH]      trioftp put HOST[:PORT] PATH [NAME]
    trioftp get --legacy HOST NAME [-o PATH]    trioftp put --legacy HOST PATH [NAME]  (old servers)
    trioftp ls HOST [FOLDER]    trioftp stat HOST NAME    trioftp rm HOST NAME
    trioftp mv HOST OLD NEW     trioftp mkdir HOST FOLDER     trioftp status HOST
"""

from __future__ import annotations

import argparse
import errno
import getpass
import io
import ipaddress
import logging
import math
import os
import re
import shlex
import signal
import ssl
import sys
import tempfile
import time
import tomllib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import IO, Any

import attrs
import trio

from trioftp._version import __version__
from trioftp.cli.progress import Bars
from trioftp.cli.progress import human as _human
from trioftp.client import legacy_servers as legacy_client
from trioftp.client import open_connection, targets, tree
from trioftp.client.connection import DEFAULT_TIMEOUT
from trioftp.client.targets import PARTIAL_SUFFIX
from trioftp.config import (
    DEFAULT_PORT,
    FIELD_HELP,
    ServerConfig,
    build_config,
    load_toml,
    setting_from_text,
)
from trioftp.disk.syscalls import return_freed_buffers
from trioftp.errors import PermissionDenied, RemoteError, TrioftpError
from trioftp.logs import setup_logging
from trioftp.protocol import ErrorCode
from trioftp.protocol.messages import Entry, Kind
from trioftp.protocol.names import BadName
from trioftp.server import Server
from trioftp.server.auth import hash_password
from trioftp.transport.concurrency import run_all

log = logging.getLogger("trioftp")


class CommandFailed(Exception):
    """A client command cannot go on; its message is the one line the user sees (exit status 1)."""


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


# ------------------------------------------------------------------- serve


def _add_serve(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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
    parser.set_defaults(run=_serve)


def _serve(args: argparse.Namespace) -> int:
    """Exit status: 2 for a bad setting (raised to main), 1 if the server cannot start, see run_server."""
    flags = {f.name: getattr(args, f.name) for f in attrs.fields(ServerConfig)}
    for name, value in flags.items():
        if isinstance(value, str):
            flags[name] = setting_from_text(name, value, "--" + name.replace("_", "-"))
    file_settings: dict[str, Any] = {}
    if args.config:
        try:
            file_settings = load_toml(args.config.expanduser())
        except OSError as exc:
            return _fail(f"--config {args.config}: {_reason(exc)}")
    config = build_config(file_settings, flags)
    setup_logging(config.log_level, config.log_format)
    try:
        server = Server(config)
    except (OSError, ValueError) as exc:
        return _fail(_setup_problem(exc, config))
    _warn_if_passwords_in_clear(config)
    _warn_if_open_to_all(config)
    # The process is the server's own, so it may tune the allocator for itself.
    return_freed_buffers()
    try:
        code = trio.run(run_server, server)
    except BaseException as exc:
        problem = _listen_problem(sole_exception(exc), server)
        if problem is None:
            raise
        return _fail(problem)
    if code:
        print("trioftp: stopped before transfers finished", file=sys.stderr)
    return code


async def run_server(server: Server) -> int:
    """Serve until SIGINT or SIGTERM, then drain and stop; a second signal stops at once.

    Returns:
        0 once drained; if a second signal cut the drain short, 128 + its number, the
        status a shell reports for a process that signal ended (130 for Ctrl-C).
    """
    stopped_by: list[int] = []
    # Open for the whole run: were it closed after the first signal, a second Ctrl-C
    # would raise KeyboardInterrupt in whatever task runs, out of nested nurseries.
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_stop_on_signals, server, signals, nursery.cancel_scope, stopped_by)
            await server.serve()
            nursery.cancel_scope.cancel()  # drained: stop waiting for signals
    return 128 + stopped_by[0] if stopped_by else 0


async def _stop_on_signals(
    server: Server, signals: AsyncIterator[int], scope: trio.CancelScope, stopped_by: list[int]
) -> None:
    """The first signal starts the drain; the second cancels it (the server's tasks end cleanly)."""
    draining = False
    async for signum in signals:
        name = signal.Signals(signum).name
        if not draining:
            log.info("received %s: stopping", name)
            server.shutdown()
            draining = True
            continue
        log.warning("received %s again: stopping now, transfers in flight are cut", name)
        stopped_by.append(signum)
        scope.cancel()
        return


def sole_exception(exc: BaseException) -> BaseException:
    """The one exception inside `exc` if it is a group of one (trio's nurseries nest them), else `exc`."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def _fail(message: str) -> int:
    print(f"trioftp: {message}", file=sys.stderr)
    return 1


def _reason(exc: OSError) -> str:
    """An OSError's reason in words, lower case to follow a colon."""
    text = "not an address of this machine" if exc.errno == errno.EADDRNOTAVAIL else None
    text = text or exc.strerror or str(exc)
    return text[:1].lower() + text[1:]


def _setup_problem(exc: OSError | ValueError, config: ServerConfig) -> str:
    """One line for a file or folder setting the server could not use."""
    if isinstance(exc, OSError) and exc.filename is None and (config.tls_cert or config.tls_key):
        return _tls_problem(exc, config)  # ssl's errors (SSLError is an OSError) name no file
    if isinstance(exc, OSError):
        return _path_problem(exc, config)
    if isinstance(exc, tomllib.TOMLDecodeError | UnicodeDecodeError):  # the users file is the only TOML here
        return f"--users-file {config.users_file}: {exc}"
    return str(exc)


def _path_problem(exc: OSError, config: ServerConfig) -> str:
    if exc.filename is None:
        return _reason(exc)
    failed = os.path.abspath(exc.filename)
    for flag, value in (("--users-file", config.users_file), ("--tls-cert", config.tls_cert),
                        ("--tls-key", config.tls_key)):  # fmt: skip
        if value and failed == os.path.abspath(value):
            return f"{flag} {value}: {_reason(exc)}"
    root = os.path.abspath(config.root)
    if failed == root or failed.startswith(root + os.sep) or root.startswith(failed + os.sep):
        if isinstance(exc, FileExistsError):  # from mkdir: there, but not as a folder
            reason = "not a folder"
        elif isinstance(exc, NotADirectoryError):
            reason = "a part of its path is a file, not a folder"
        else:
            reason = f"cannot create it: {_reason(exc)}" if failed == root else _reason(exc)
        return f"--root {config.root}: {reason}" + ("" if failed == root else f" ({exc.filename})")
    return f"{exc.filename}: {_reason(exc)}"


def _tls_problem(exc: OSError, config: ServerConfig) -> str:
    why = re.sub(r" \(_ssl\.c:\d+\)$", "", str(exc.args[-1]) if exc.args else str(exc))
    for flag, path, marker, what in (
        ("--tls-cert", config.tls_cert, b"CERTIFICATE-----", "a certificate"),
        ("--tls-key", config.tls_key, b"PRIVATE KEY-----", "a private key"),
    ):
        try:
            text = Path(path).read_bytes()
        except OSError as unreadable:
            return f"{flag} {path}: {_reason(unreadable)}"
        if marker not in text:
            return f"{flag} {path}: not {what} in PEM form ({why})"
    if getattr(exc, "reason", None) == "KEY_VALUES_MISMATCH":
        why = "the key is not the certificate's"
    return f"--tls-cert {config.tls_cert}, --tls-key {config.tls_key}: {why}"


def _listen_problem(exc: BaseException, server: Server) -> str | None:
    """One line for a server that could not start listening; None for any other failure."""
    config = server.config
    if not isinstance(exc, OSError):
        return None
    if not server.ports:
        address = _host_port(config.host, config.port)
    elif config.metrics and not server.metrics_port:
        address = f"{config.metrics} (--metrics)"
    else:
        return None  # it was serving: not a start-up problem, so the traceback is worth seeing
    if exc.filename is not None:  # the start-up sweep of the root's partial uploads
        return _path_problem(exc, config)
    return f"cannot listen on {address}: {_reason(exc)}"


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _warn_if_passwords_in_clear(config: ServerConfig) -> None:
    """Logins without TLS send passwords as they are: worth a warning when others can listen."""
    if config.users_file and not config.tls_cert and not _is_loopback(config.host):
        log.warning(
            "users log in without TLS on %s: their passwords cross the network in clear text "
            "(serve with --tls-cert and --tls-key)", config.host
        )  # fmt: skip


def _warn_if_open_to_all(config: ServerConfig) -> None:
    """No users file beyond loopback: anyone who reaches the port may change everything served."""
    if config.users_file or _is_loopback(config.host):
        return
    where = _host_port(config.host or "every address", config.port)
    if config.read_only:
        log.warning("no users file and --read-only: anyone who can reach %s may download every file", where)
        return
    log.warning(
        "NO USERS FILE: anyone who can reach %s may download, upload, overwrite and delete every file "
        "under %s. Add users (trioftp passwd, then --users-file; see the README's \"Users and TLS\") "
        "or serve with --read-only", where, config.root,
    )  # fmt: skip


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name, or "" (every address): may be reachable from elsewhere
        return False


# ------------------------------------------------------------------ client


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


def _rules(args: argparse.Namespace) -> tree.Rules | None:
    """The command's --exclude and --include rules; they need a folder (-r, sync)."""
    if not args.rules:
        return None
    if not getattr(args, "recursive", True):
        raise ValueError(f"--{args.rules[0][0]} applies to folders: give -r")
    return tree.Rules.from_options(args.rules)


def _add_client_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    def command(
        name: str, help_text: str, run: Callable[[argparse.Namespace], Awaitable[None]], **options: Any
    ) -> argparse.ArgumentParser:
        parser = sub.add_parser(name, help=help_text, description=help_text, **options)
        parser.add_argument("host", metavar="HOST[:PORT]", help=f"the server (default port {DEFAULT_PORT})")
        _add_connection_options(parser)
        parser.set_defaults(run=lambda args: _run_client(run, args))
        return parser

    legacy_help = "talk to an old server in the legacy text protocol (no checksum, no confirmation)"
    p = command("get", "download a file (or a folder with -r)", _get)
    p.add_argument("name", help="the remote file (with -r: folder), as a path under the served root")
    p.add_argument(
        "local", nargs="?", help="where to write it (default: the name's last part; into a folder; -: stdout)"
    )
    p.add_argument("-o", "--output", help="same as LOCAL")
    p.add_argument("-r", "--recursive", action="store_true", help="download the folder NAME and all under it")
    p.add_argument(
        "--force", action="store_true", help="with -o - on a terminal: show a file that looks binary"
    )
    _add_rule_options(p)
    p.add_argument("--legacy", action="store_true", help=legacy_help)
    p.add_argument(
        "--fsync", action="store_true", help="make the download durable before exiting (-r: once at the end)"
    )
    p = command("put", "upload a file (or a folder with -r)", _put)
    p.add_argument("path", type=Path, help="the local file (with -r: folder); -: standard input (give NAME)")
    p.add_argument("name", nargs="?", help="remote name (default: the file's name); into it if a folder")
    p.add_argument("-r", "--recursive", action="store_true", help="upload the folder PATH and all under it")
    _add_rule_options(p)
    p.add_argument("--legacy", action="store_true", help=legacy_help)
    # -h is ls's "human sizes", so --help alone asks for help here.
    p = command("ls", "list a remote folder", _ls, add_help=False)
    p.add_argument("--help", action="help", help="show this help message and exit")
    p.add_argument("folder", nargs="?", default="", help="default: the served root (also / or .); or a file; "
                   "HOST:PORT:FOLDER (as sync writes it) works too")  # fmt: skip
    p.add_argument("-l", "--long", action="store_true", help="show each entry's kind first (d, -, l, ?)")
    p.add_argument("-h", "--human", action="store_true", help="sizes in KiB, MiB, GiB")
    p.add_argument("-R", "--recursive", action="store_true", help="list the folders under it too")
    p = command("stat", "show a remote file's size, mtime and digest", _stat)
    p.add_argument("name", help="the remote file or folder")
    p = command("rm", "delete a remote file or empty folder", _rm)
    p.add_argument("name", help="the remote file or folder (with -r: and all under it)")
    p.add_argument("-r", "--recursive", action="store_true", help="delete the folder NAME and all under it")
    p = command("mv", "rename a remote file or folder", _mv)
    p.add_argument("old", help="the remote file or folder to rename")
    p.add_argument("new", help="its new name; into it if an existing folder (or ends in /)")
    p.add_argument("--replace", action="store_true", help="replace an existing NEW")
    p = command("mkdir", "create a remote folder (and its parents)", _mkdir)
    p.add_argument("folder", help="the remote folder to create")

    p = sub.add_parser(
        "sync",
        help="make a remote folder match a local one, or the other way",
        description="trioftp sync LOCAL_DIR HOST[:PORT]:REMOTE_DIR  (upload), or "
        "trioftp sync HOST[:PORT]:REMOTE_DIR LOCAL_DIR  (download). Only files that differ "
        "(by size, then digest) are sent; a cut run resumes. HOST:PORT: is the served root; "
        "HOST:DIGITS alone is refused (a port, or a folder named DIGITS?).",
    )
    p.add_argument("source", help="a local folder, or HOST[:PORT]:FOLDER")
    p.add_argument("target", help="HOST[:PORT]:FOLDER, or a local folder (the other kind than SOURCE)")
    p.add_argument("--delete", action="store_true", help="delete what the source does not have")
    p.add_argument("-n", "--dry-run", action="store_true", help="only list what would change")
    _add_rule_options(p)
    _add_connection_options(p)
    p.set_defaults(run=lambda args: _run_client(_sync, args))

    p = sub.add_parser("passwd", help="print a password hash for a users file",
                       description="Reads a password (asked twice on a terminal, else one line of stdin) "
                       "and prints the scrypt hash to paste into a users file.")  # fmt: skip
    p.set_defaults(run=_passwd)
    command("status", "show the server's version, uptime, connections, transfers and bytes moved", _status)


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


def _reader_left(exc: BaseException) -> bool:
    """Whatever read our standard output (`get -o - | head`) stopped reading."""
    return isinstance(exc, OSError) and exc.errno == errno.EPIPE and exc.filename == "/dev/stdout"


def _client_problem(exc: BaseException) -> str | None:
    """The one line for a failed client command; None for anything unexpected (a bug)."""
    if isinstance(exc, TrioftpError | CommandFailed):
        return _shortened(str(exc))
    if isinstance(exc, BadName):  # refused before anything is sent
        return _shortened(f"bad name: {exc}")
    if isinstance(exc, OSError):
        if exc.filename is None:
            return _reason(exc)
        kept = ""
        if exc.errno in (errno.ENOSPC, errno.EDQUOT) and str(exc.filename).endswith(PARTIAL_SUFFIX):
            kept = "; what arrived is kept there, and the same get resumes from it"
        return _shortened(f"{exc.filename}: {_reason(exc)}{kept}")
    return None


def _shortened(line: str, limit: int = 400) -> str:
    """A line of at most about `limit` characters: a 100 KB name in it is cut in the middle, said so."""
    if len(line) <= limit:
        return line
    left_out = len(line) - limit * 3 // 4
    return f"{line[: limit // 2]}...({left_out} characters left out)...{line[-limit // 4 :]}"


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


async def _is_folder(conn: Any, name: str) -> bool:
    """Whether the remote `name` is a folder (a folder's STAT is cheap: it has no digest)."""
    try:
        info = await conn.stat(name)
    except RemoteError:
        return False
    return bool(info.kind is Kind.DIR)


async def _get(args: argparse.Namespace) -> None:
    given = _output(args)
    if args.recursive:
        if given == "-":
            raise CommandFailed("get -r writes a folder; '-' (standard output) takes one file")
        folder = folder_name(args.name)
        local = Path(given) if given else Path(folder.rsplit("/", 1)[-1] or ".")
        async with _connect(args) as conn:
            await conn.download_tree(
                folder, local, progress=args.bars.tree(), rules=args.rules, fsync=args.fsync
            )
        return
    use_r = f"{args.name!r} is a folder: get -r downloads a folder"
    if args.name.endswith("/") or not folder_name(args.name):
        raise CommandFailed(use_r)
    name = folder_name(args.name)  # "./a//b" as a shell user writes it
    output = _local_file(given, name)
    # The bytes are the output: a progress bar on the same terminal would mix into them.
    progress = None if given == "-" else args.bars.file(name)
    to_a_terminal = given == "-" and not args.force and sys.stdout.isatty()
    if args.legacy:

        async def fetch_legacy(target: Path) -> None:
            await legacy_client.download(
                args.host, name, target, port=args.port, progress=progress, timeout=args.timeout
            )

        await (_to_terminal(fetch_legacy, name) if to_a_terminal else fetch_legacy(output))
        return
    async with _connect(args) as conn:

        async def fetch(target: Path) -> None:
            await conn.download(name, target, progress=progress, fsync=args.fsync)

        try:
            await (_to_terminal(fetch, name) if to_a_terminal else fetch(output))
        except RemoteError as exc:
            if exc.code is ErrorCode.WRONG_KIND and await _is_folder(conn, name):
                raise CommandFailed(use_r) from None
            raise


TEXT_SAMPLE = 8192  # bytes looked at before a download is let onto a terminal


async def _to_terminal(fetch: Callable[[Path], Awaitable[None]], name: str) -> None:
    """`get -o -` onto a terminal: refused if the file's first bytes are not text.

    Binary bytes on a terminal show as garbage, and some sequences change its state
    (a charset switch, the title, keys). Only the first bytes can be looked at before
    anything is shown, so the download goes through a pipe that this task reads and
    passes on once it has judged them.
    """
    read_end, write_end = os.pipe()
    refused = False

    def refuse() -> None:
        nonlocal refused
        refused = True

    async def fetch_into_pipe() -> None:
        try:
            await fetch(Path(f"/dev/fd/{write_end}"))
        except OSError as exc:
            if not (refused and exc.errno == errno.EPIPE):  # we stopped reading on purpose
                raise
        finally:
            os.close(write_end)  # the reader's end of file

    try:
        await _judge_and_pass_on(fetch_into_pipe, read_end, name, refuse)
    except BaseExceptionGroup as group:
        alone = sole_exception(group)
        if alone is group:
            raise
        raise alone from None  # as the plain download raises it (get's WRONG_KIND hint needs that)


async def _judge_and_pass_on(
    fetch: Callable[[], Awaitable[None]], read_end: int, name: str, refuse: Callable[[], None]
) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(fetch)
        async with trio.lowlevel.FdStream(read_end) as source:
            sample = b""
            while len(sample) < TEXT_SAMPLE and (chunk := await source.receive_some(TEXT_SAMPLE)):
                sample += chunk
            if _looks_binary(sample):
                refuse()
                raise CommandFailed(
                    f"{tree.shown(name)} looks binary and standard output is a terminal: "
                    "give -o FILE, or --force to show it there anyway"
                )
            writer = await targets.InPlaceWriter.open(Path("/dev/stdout"))
            try:
                while sample:
                    await writer.write(sample)
                    sample = await source.receive_some(1024 * 1024)
            finally:
                await writer.aclose()


def _looks_binary(sample: bytes) -> bool:
    """A NUL byte, or bytes that are not UTF-8 (a character cut at the end of the sample aside)."""
    if b"\0" in sample:
        return True
    for cut in range(4):  # a UTF-8 character is at most 4 bytes: up to 3 may be missing
        try:
            sample[: len(sample) - cut].decode("utf-8")
        except UnicodeDecodeError:
            continue
        return False
    return True


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


async def _put(args: argparse.Namespace) -> None:
    if not args.recursive and args.path.is_dir():
        raise CommandFailed(f"{str(args.path)!r} is a folder: put -r uploads a folder")
    if args.recursive:
        async with _connect(args) as conn:
            remote = folder_name(args.name or args.path.name)
            await tree.upload_tree(conn, args.path, remote, progress=args.bars.tree(), rules=args.rules)
        return
    name = _remote_file(args.name, args.path)
    if args.legacy:
        await legacy_client.upload(
            args.host, args.path, name, port=args.port, progress=args.bars.file(name), timeout=args.timeout
        )
        return
    async with _connect(args) as conn:
        try:
            await conn.upload(args.path, name, progress=args.bars.file(name))
        except RemoteError as exc:
            # NAME without a slash may still be an existing folder: then the file goes
            # inside it, as with cp. The server says so before any byte is sent; STAT only
            # then, since a STAT of an existing file would have the server hash all of it.
            if name != args.name or exc.code is not ErrorCode.WRONG_KIND or not await _is_folder(conn, name):
                raise
            name = f"{name}/{args.path.name}"
            await conn.upload(args.path, name, progress=args.bars.file(name))


def _remote_file(name: str | None, path: Path) -> str:
    """put's remote name: `name`, inside it if it ends in "/" (or is "/" or "."), else the file's own."""
    if name is None:
        return path.name
    if name.endswith("/") or not folder_name(name):
        folder = folder_name(name)
        return f"{folder}/{path.name}" if folder else path.name
    return name


async def _ls(args: argparse.Namespace) -> None:
    folder = folder_name(args.folder)
    async with _connect(args) as conn:
        try:
            entries = await conn.list(folder)
        except RemoteError as exc:
            if exc.code is not ErrorCode.WRONG_KIND:
                raise
            # A file: its own line, as ls does (its parent's listing has it, link or not).
            last = folder.rpartition("/")[2]
            entries = [e for e in await conn.list(folder.rpartition("/")[0]) if e.name == last]
            if not entries:
                raise
            _print_entries(args, entries, set())
            return
        if not args.recursive:
            _print_entries(args, entries, await _unlistable(conn, folder, entries))
            return
        pending = [(folder, entries)]
        first = True
        while pending:
            here, entries = pending.pop(0)
            listed: dict[str, list[Entry]] = {}
            refused: set[str] = set()
            for entry in entries:  # ls -R lists the folders in each level in order
                if entry.kind is Kind.DIR:
                    try:
                        listed[entry.name] = await conn.list(_join_remote(here, entry.name))
                    except PermissionDenied:
                        refused.add(entry.name)
            if not first:
                print()
            print(f"{_quoted(here) if here else '.'}:")
            _print_entries(args, entries, refused)
            first = False
            pending[:0] = [(_join_remote(here, name), listed[name]) for name in sorted(listed)]


def _join_remote(folder: str, name: str) -> str:
    return f"{folder}/{name}" if folder else name


async def _unlistable(conn: Any, folder: str, entries: list[Entry]) -> set[str]:
    """The folders among `entries` that the server lists but will not open (ls marks them "?").

    The server lists an unreadable folder as a folder; only a LIST of it says otherwise.
    """
    refused: set[str] = set()

    def probe(name: str) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            try:
                await conn.list(_join_remote(folder, name))
            except PermissionDenied:
                refused.add(name)
            except RemoteError:  # gone since, or not a folder any more: listed as it was
                pass

        return run

    folders = [entry.name for entry in entries if entry.kind is Kind.DIR]
    await run_all([probe(name) for name in folders], limit=16)
    return refused


def _print_entries(args: argparse.Namespace, entries: list[Entry], refused: set[str]) -> None:
    """One line per entry: size, time and name; with -l its kind first, with -h sizes in units."""
    for entry in entries:
        kind = Kind.OTHER if entry.name in refused else entry.kind
        # As ls -F marks them; "?" for what the server lists but does not serve.
        suffix = {Kind.DIR: "/", Kind.LINK: "@", Kind.OTHER: "?"}.get(kind, "")
        stamp = time.strftime("%Y-%m-%d %H:%M", time.localtime(entry.mtime_ns / 1e9))
        size = _human(entry.size) if args.human else str(entry.size)
        letter = {Kind.DIR: "d", Kind.LINK: "l", Kind.OTHER: "?"}.get(kind, "-")
        lead = f"{letter} " if args.long else ""
        print(f"{lead}{size:>14} {stamp} {_quoted(entry.name)}{suffix}")


def _quoted(name: str) -> str:
    """A name as ls shows it: quoted where it would read as something else.

    Spaces at either end vanish on a terminal, and a last "/", "@" or "?" would read
    as ls's marker; a name the server sent may also hold control characters, shown
    escaped so that none drives the terminal.
    """
    if not name.isprintable():
        return "'" + tree.shown(name).replace("'", "\\'") + "'"
    return shlex.quote(name)


async def _stat(args: argparse.Namespace) -> None:
    async with _connect(args) as conn:
        info = await conn.stat(_remote_name(args.name))
        print(f"name:   {info.name}")
        print(f"kind:   {info.kind.value}")
        print(f"size:   {info.size}")
        print(f"mtime:  {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(info.mtime_ns / 1e9))}")
        if info.digest is not None:
            print(f"{conn.digest_algorithm}: {info.digest.hex()}")


async def _status(args: argparse.Namespace) -> None:
    async with _connect(args) as conn:
        info = await conn.status()
    days, rest = divmod(info.uptime_ms // 1000, 86400)
    print(f"server:       {info.agent}")
    print(f"uptime:       {f'{days}d ' if days else ''}{time.strftime('%H:%M:%S', time.gmtime(rest))}")
    print(f"connections:  {info.connections}")
    print(f"transfers:    {info.transfers} in flight")
    print(f"received:     {_human(info.bytes_received)} ({info.bytes_received} bytes)")
    print(f"sent:         {_human(info.bytes_sent)} ({info.bytes_sent} bytes)")


async def _rm(args: argparse.Namespace) -> None:
    async with _connect(args) as conn:
        if args.recursive:
            await tree.remove_tree(conn, folder_name(args.name))
        else:
            await conn.delete(_remote_name(args.name))


async def _mv(args: argparse.Namespace) -> None:
    old = _remote_name(args.old)
    new = folder_name(args.new)
    last = old.rpartition("/")[2]
    if args.new.endswith("/") or not new:  # into that folder, as mv does
        new = f"{new}/{last}" if new else last
    async with _connect(args) as conn:
        try:
            await conn.rename(old, new, replace=args.replace)
        except RemoteError as exc:
            # NEW without a slash may be an existing folder: then OLD goes inside it, as
            # with mv (and put). Asked only after a refusal, so a plain rename is one request.
            in_the_way = exc.code in (ErrorCode.ALREADY_EXISTS, ErrorCode.WRONG_KIND)
            if new != folder_name(args.new) or not in_the_way or not await _is_folder(conn, new):
                raise
            await conn.rename(old, f"{new}/{last}", replace=args.replace)


def _remote_name(text: str) -> str:
    """A remote file or folder argument as a wire name ("./a//b/" is "a/b"); not the root."""
    name = folder_name(text)
    if not name:
        raise CommandFailed(f"{text!r} is the served root: name a file or folder in it")
    return name


async def _mkdir(args: argparse.Namespace) -> None:
    async with _connect(args) as conn:
        await conn.mkdir(folder_name(args.folder))


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


async def _sync(args: argparse.Namespace) -> None:
    error: tree.TreeTransferError | None = None
    async with _connect(args) as conn:
        try:
            plan = await tree.sync(
                conn, args.local, args.remote, direction=args.direction, delete=args.delete,
                dry_run=args.dry_run, progress=args.bars.tree(), rules=args.rules,
            )  # fmt: skip
        except tree.TreeTransferError as exc:  # still list what was done
            if exc.done is None:
                raise
            plan, error = exc.done, exc
    if args.dry_run and plan.skipped:  # exit as the real run would
        error = tree.TreeTransferError({}, plan.skipped)
    verb = "would copy" if args.dry_run else "copied"
    deleted = "would delete" if args.dry_run else "deleted"
    shown = tree.shown  # names are the sender's: escaped, so none can drive the terminal
    for path in plan.mkdir:  # folders end with "/"; "./" is the top folder itself
        print(f"{'would create' if args.dry_run else 'created'}: {shown(path)}/")
    for path in plan.copy:
        print(f"{verb}: {shown(path)}")
    for path in plan.delete:
        print(f"{deleted}: {shown(path)}")
    for path in plan.rmdir:
        print(f"{deleted}: {shown(path)}/")
    folders = f"; folders: {len(plan.mkdir)} to create, {len(plan.rmdir)} to delete"
    # The counts say when something was left out, so a failing run never reads "nothing to do".
    left_out = f"; {len(plan.skipped)} skipped" if plan.skipped else ""
    failed = f"; {len(error.failures)} failed" if error is not None and error.failures else ""
    counts = f"{len(plan.copy)} to copy ({_human(plan.bytes_to_copy)}), {len(plan.delete)} to delete"
    print(
        f"{counts}, {plan.unchanged} unchanged{folders if plan.mkdir or plan.rmdir else ''}{left_out}{failed}"
    )
    if error is not None:
        raise error


def _passwd(args: argparse.Namespace) -> int:
    if sys.stdin.isatty():
        try:
            password = getpass.getpass("password: ")
            again = getpass.getpass("again: ")
        except EOFError:  # Ctrl-D at a prompt: the user gave up, as a shell's read does
            print("\ntrioftp: passwd: no password given", file=sys.stderr)
            return 1
        if again != password:
            print("trioftp: passwd: the passwords differ", file=sys.stderr)
            return 1
    else:
        password = sys.stdin.readline().rstrip("\n")
    if not password:
        print("trioftp: passwd: empty password", file=sys.stderr)
        return 1
    print(hash_password(password))
    return 0


# -------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trioftp", description="Fast, verified file transfer.")
    parser.add_argument("--version", action="version", version=f"trioftp {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_serve(sub)
    _add_client_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `trioftp` command; returns the exit code."""
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    commands = _commands(parser)
    if argv and argv[0] in commands:
        # Options may come between the positionals (`ls HOST --port N FOLDER`), as get and
        # put already took them; argparse does that only parser by parser, not through subparsers.
        args = commands[argv[0]].parse_intermixed_args(argv[1:], argparse.Namespace(command=argv[0]))
    else:
        args = parser.parse_args(argv)
    try:
        result: int = args.run(args)
    except ValueError as exc:  # a malformed argument or setting
        print(f"trioftp: {exc}", file=sys.stderr)
        return 2
    except BaseException as exc:
        if _interrupted(exc):
            return 130
        raise
    return result


def _commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _interrupted(exc: BaseException) -> bool:
    """Ctrl-C alone; from inside trio.run it may come wrapped in (nested) exception groups."""
    if isinstance(exc, BaseExceptionGroup):
        return exc.split(KeyboardInterrupt)[1] is None
    return isinstance(exc, KeyboardInterrupt)


if __name__ == "__main__":
    sys.exit(main())
