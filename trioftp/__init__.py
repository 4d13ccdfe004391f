"""trioftp: fast, verified file transfer for Python, on Trio.

One file, one call::

    data = await trioftp.get("127.0.0.1", "reports/2026.csv")

Without async (trioftp.blocking)::

    data = trioftp.blocking.get("127.0.0.1", "reports/2026.csv")

Many transfers over one connection::

    async with trioftp.open_connection("127.0.0.1") as conn:
        await conn.upload("big.iso", "isos/big.iso")
        for entry in await conn.list("isos"):
            print(entry.name, entry.size)
"""

from typing import TYPE_CHECKING

from trioftp import _moved
from trioftp._lazy import lazy_exports
from trioftp._version import __version__

if TYPE_CHECKING:  # what the names below are, for type checkers; at run time, on first use
    from trioftp import blocking, legacy
    from trioftp.client import (
        ClientConnection,
        Direction,
        Plan,
        Progress,
        Rules,
        TreeProgress,
        TreeTransferError,
        get,
        open_connection,
        put,
    )
    from trioftp.config import DEFAULT_PORT, ServerConfig
    from trioftp.errors import (
        AlreadyExists,
        AuthenticationFailed,
        BadName,
        Busy,
        ChecksumMismatch,
        ConnectionClosed,
        LocalFileChanged,
        NotFound,
        PermissionDenied,
        ProtocolViolation,
        RemoteChecksumMismatch,
        RemoteError,
        TransferTimeout,
        TrioftpError,
    )
    from trioftp.server import Server, serve

__all__ = [
    "DEFAULT_PORT",
    "AlreadyExists",
    "AuthenticationFailed",
    "BadName",
    "Busy",
    "ChecksumMismatch",
    "ClientConnection",
    "ConnectionClosed",
    "Direction",
    "LocalFileChanged",
    "NotFound",
    "PermissionDenied",
    "Plan",
    "Progress",
    "ProtocolViolation",
    "RemoteChecksumMismatch",
    "RemoteError",
    "Rules",
    "Server",
    "ServerConfig",
    "TransferTimeout",
    "TreeProgress",
    "TreeTransferError",
    "TrioftpError",
    "__version__",
    "blocking",
    "get",
    "legacy",
    "open_connection",
    "put",
    "serve",
]

_CLIENT = ("ClientConnection", "Direction", "Plan", "Progress", "Rules", "TreeProgress",
           "TreeTransferError", "get", "open_connection", "put")  # fmt: skip
_ERRORS = ("AlreadyExists", "AuthenticationFailed", "BadName", "Busy", "ChecksumMismatch",
           "ConnectionClosed", "LocalFileChanged", "NotFound", "PermissionDenied", "ProtocolViolation",
           "RemoteChecksumMismatch", "RemoteError", "TransferTimeout", "TrioftpError")  # fmt: skip
__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        **dict.fromkeys(_CLIENT, "trioftp.client"),
        **dict.fromkeys(_ERRORS, "trioftp.errors"),
        "DEFAULT_PORT": "trioftp.config",
        "ServerConfig": "trioftp.config",
        "Server": "trioftp.server",
        "serve": "trioftp.server",
        "blocking": "trioftp.blocking",
        "legacy": "trioftp.legacy",
    },
)

_moved.install()
