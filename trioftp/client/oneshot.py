"""One file, one call: `await trioftp.get(host, name)`."""

from __future__ import annotations

from typing import Any

from trioftp.client.connection import open_connection
from trioftp.config import DEFAULT_PORT


async def get(host: str, name: str, *, port: int = DEFAULT_PORT, **connect: Any) -> bytes:
    """Download one file into memory, verified, over a connection of its own.

    Args:
        host: the server's name or address.
        name: the remote file, a '/'-separated path under the server's root.
        port: the server's port.
        **connect: passed to open_connection(): user, password, tls, timeout.

    Returns:
        The file's bytes, checked against the server's digest.

    Raises:
        NotFound: no such file.
        ChecksumMismatch, ConnectionClosed, ...: see trioftp.errors.

    Example:
        data = await trioftp.get("127.0.0.1", "reports/2026.csv")
    """
    async with open_connection(host, port, **connect) as conn:
        return await conn.get(name)


async def put(host: str, name: str, data: bytes, *, port: int = DEFAULT_PORT, **connect: Any) -> None:
    """Upload bytes as one file, verified and stored atomically, over a connection of its own.

    Args:
        host: the server's name or address.
        name: the remote file; missing folders are created.
        data: its bytes.
        port: the server's port.
        **connect: passed to open_connection(): user, password, tls, timeout.

    Raises:
        RemoteChecksumMismatch: the server received other bytes; it kept nothing.
        PermissionDenied, ConnectionClosed, ...: see trioftp.errors.

    Example:
        await trioftp.put("127.0.0.1", "notes.txt", b"hello")
    """
    async with open_connection(host, port, **connect) as conn:
        await conn.put(name, data)
