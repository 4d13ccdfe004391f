"""Exceptions that users of the client API see, all under TrioftpError.

Each one that comes from the server carries the wire `code`; a script can catch
`NotFound` without knowing the protocol.
"""

from __future__ import annotations

import errno
import os

from trioftp.protocol.errors import ErrorCode


class TrioftpError(Exception):
    """Base class of every error the trioftp client raises.

    Example:
        try:
            data = await trioftp.get("127.0.0.1", "notes.txt")
        except trioftp.NotFound:
            data = b""
        except trioftp.TrioftpError as exc:
            sys.exit(f"transfer failed: {exc}")
    """


class ConnectionClosed(TrioftpError):
    """The connection ended (we closed it, or the peer or network broke it)."""


class AuthenticationFailed(ConnectionClosed):
    """The server refused our user and password, or needs some and we gave none."""


class ProtocolViolation(TrioftpError):
    """The peer broke the protocol (or is not a trioftp server)."""


class TransferTimeout(TrioftpError):
    """An operation took longer than its deadline."""


class ChecksumMismatch(TrioftpError):
    """The bytes received do not match the digest the sender stated; nothing was kept."""


class LocalFileChanged(TrioftpError):
    """A local file changed while it was being uploaded; the server stored nothing."""


class RemoteError(TrioftpError):
    """The server refused or failed an operation; `code` says why.

    Example:
        try:
            await conn.upload("big.iso", "isos/big.iso")
        except trioftp.RemoteError as exc:
            print(exc.code.name)  # e.g. "TOO_LARGE", "NO_SPACE"
    """

    code: ErrorCode = ErrorCode.INTERNAL

    def __init__(self, message: str, code: ErrorCode | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class NotFound(RemoteError):
    """No such remote file or folder."""

    code = ErrorCode.NOT_FOUND


class AlreadyExists(RemoteError):
    """The target name is taken (rename without replace, mkdir over a file)."""

    code = ErrorCode.ALREADY_EXISTS


class PermissionDenied(RemoteError):
    """The user lacks the right for this operation, or the server's file system refused it."""

    code = ErrorCode.PERMISSION_DENIED


class BadName(RemoteError):
    """The name is not allowed: `..`, absolute, control characters, the reserved `.trioftp`, ..."""

    code = ErrorCode.BAD_NAME


class RemoteChecksumMismatch(RemoteError, ChecksumMismatch):
    """The server received bytes that do not match the digest we sent."""

    code = ErrorCode.CHECKSUM_MISMATCH


class Busy(RemoteError):
    """The remote file changed while the server read it; try again."""

    code = ErrorCode.BUSY


_BY_CODE: dict[ErrorCode, type[RemoteError]] = {
    cls.code: cls
    for cls in (NotFound, AlreadyExists, PermissionDenied, BadName, RemoteChecksumMismatch, Busy)
}


def remote_error(code: ErrorCode, message: str) -> RemoteError:
    """The exception for an ERROR frame from the server."""
    cls = _BY_CODE.get(code, RemoteError)
    return cls(f"{code.name}: {message}" if message else code.name, code)


def connect_reason(exc: OSError | OverflowError) -> str:
    """Why a connection failed, in words, without the address again (the caller names it once)."""
    if isinstance(exc, OSError) and exc.errno is not None and exc.errno in errno.errorcode:
        return os.strerror(exc.errno)[:1].lower() + os.strerror(exc.errno)[1:]
    return str(exc)
