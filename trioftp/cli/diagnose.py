"""What the user reads when a command fails: one line per exception, no traceback.

A traceback is left for what no rule here names (a bug). Only `_fail` prints; the
commands decide the exit status.
"""

from __future__ import annotations

import errno
import os
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from trioftp.client.targets import PARTIAL_SUFFIX
from trioftp.config import ServerConfig
from trioftp.errors import TrioftpError
from trioftp.protocol.names import BadName

if TYPE_CHECKING:  # a client command's failures load no server code
    from trioftp.server import Server


class CommandFailed(Exception):
    """A client command cannot go on; its message is the one line the user sees (exit status 1)."""


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
    import tomllib  # here: only a failed start needs it

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


def _reader_left(exc: BaseException) -> bool:
    """Whatever read our standard output (`get -o - | head`) stopped reading."""
    return isinstance(exc, OSError) and exc.errno == errno.EPIPE and exc.filename == "/dev/stdout"


def _interrupted(exc: BaseException) -> bool:
    """Ctrl-C alone; from inside trio.run it may come wrapped in (nested) exception groups."""
    if isinstance(exc, BaseExceptionGroup):
        return exc.split(KeyboardInterrupt)[1] is None
    return isinstance(exc, KeyboardInterrupt)
