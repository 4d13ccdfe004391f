"""Where the server keeps files: the Store interface and the local folder store.

`interface` says what a store does; `local` is the folder on this machine.
"""

from trioftp.storage.interface import (
    FileFacts,
    Kind,
    Listed,
    Problem,
    ReadHandle,
    StorageError,
    Store,
    Upload,
)
from trioftp.storage.local import LocalStore, Storage

__all__ = [
    "FileFacts", "Kind", "Listed", "LocalStore", "Problem", "ReadHandle", "Storage", "StorageError",
    "Store", "Upload",
]  # fmt: skip
