"""The store a server's configuration names: the local folder (`root`) unless told otherwise."""

from __future__ import annotations

from trioftp.config import ServerConfig
from trioftp.storage.interface import Store
from trioftp.storage.local import LocalStore


def open_store(config: ServerConfig) -> Store:
    return LocalStore(config.root, partial_ttl=config.partial_ttl, max_file_size=config.max_file_size)
