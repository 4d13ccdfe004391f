"""One file, one call: `await trioftp.get(host, name)`."""

from __future__ import annotations

from trioftp.client.connection import open_connection
from trioftp.config import DEFAULT_PORT


async def get(host: str, name: str, *, port: int = DEFAULT_PORT) -> bytes:
    """Download one file into memory, verified.

    Example:
        data = await trioftp.get("127.0.0.1", "reports/2026.csv")
    """
    async with open_connection(host, port) as conn:
        return await conn.get(name)


async def put(host: str, name: str, data: bytes, *, port: int = DEFAULT_PORT) -> None:
    """Upload bytes as one file, verified and stored atomically.

    Example:
        await trioftp.put("127.0.0.1", "notes.txt", b"hello")
    """
    async with open_connection(host, port) as conn:
        await conn.put(name, data)
