"""The trioftp client: a connection object for many transfers, one-liners for one."""

from trioftp.client.connection import ClientConnection, Progress, open_connection
from trioftp.client.oneshot import get, put
from trioftp.client.tree import Direction, Plan, TreeProgress, TreeTransferError

__all__ = [
    "ClientConnection",
    "Direction",
    "Plan",
    "Progress",
    "TreeProgress",
    "TreeTransferError",
    "get",
    "open_connection",
    "put",
]
