"""The local folder store (see `store`): a folder on this machine's disk."""

from trioftp.storage.local.digest_cache import DigestCache
from trioftp.storage.local.layout import STATE_DIR
from trioftp.storage.local.reading import LocalReadHandle
from trioftp.storage.local.store import LocalStore
from trioftp.storage.local.uploads import Upload

Storage = LocalStore  # the name before the S3 store came

__all__ = ["STATE_DIR", "DigestCache", "LocalReadHandle", "LocalStore", "Storage", "Upload"]
