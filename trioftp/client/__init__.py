"""The trioftp client: a connection object for many transfers, one-liners for one."""

from trioftp.client.connection import ClientConnection, Progress, open_connection
from trioftp.client.oneshot import get, put

__all__ = ["ClientConnection", "Progress", "get", "open_connection", "put"]
