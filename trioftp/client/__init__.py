"""The trioftp client: a connection object for many transfers, one-liners for one."""

from trioftp.client.connection import ClientConnection, Progress, open_connection
from trioftp.client.oneshot import get, put
from trioftp.client.tree import Direction, Plan, Rules, TreeProgress, TreeTransferError

__all__ = [
    "ClientConnection",
    "Direction",
    "Plan",
    "Progress",
    "Rules",
    "TreeProgress",
    "TreeTransferError",
    "get",
    "open_connection",
    "put",
]
