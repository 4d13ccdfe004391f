"""The trioftp client: a connection object for many transfers, one-liners for one.

connection: open_connection and ClientConnection, whose methods come from one
module per job: streams (a stream per operation, one reader), download, upload,
operations (list, stat, ...), folders (whole folders, through tree/).
oneshot: get and put on a connection of their own. targets: where downloads
land. tree/: put -r, get -r, sync and rm -r, on tree.TreeConnection.
legacy_servers: the Trio client for servers that speak only the old protocol.
"""

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
