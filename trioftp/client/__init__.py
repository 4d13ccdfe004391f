"""The trioftp client: a connection object for many transfers, one-liners for one.

connection: open_connection and ClientConnection, whose methods come from one
module per job: streams (a stream per operation, one reader), download, upload,
operations (list, stat, ...), folders (whole folders, through tree/).
oneshot: get and put on a connection of their own. targets: where downloads
land. tree/: put -r, get -r, sync and rm -r, on tree.TreeConnection.
legacy_servers: the Trio client for servers that speak only the old protocol.
"""

from typing import TYPE_CHECKING

from trioftp._lazy import lazy_exports

if TYPE_CHECKING:  # at run time, on first use: `import trioftp.client.targets` loads no more
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

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        **dict.fromkeys(("ClientConnection", "Progress", "open_connection"), "trioftp.client.connection"),
        **dict.fromkeys(("get", "put"), "trioftp.client.oneshot"),
        **dict.fromkeys(
            ("Direction", "Plan", "Rules", "TreeProgress", "TreeTransferError"), "trioftp.client.tree"
        ),
        "tree": "trioftp.client.tree",
    },
)
