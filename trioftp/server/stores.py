"""The store a server's configuration names: the local folder (`root`) unless told otherwise."""

from __future__ import annotations

from trioftp.config import ServerConfig
from trioftp.storage.interface import Store
from trioftp.storage.local import LocalStore


def open_store(config: ServerConfig) -> Store:
    if config.store:
        from trioftp.storage.s3 import Bucket, S3Store, parse_store_url  # imports boto3: only when asked

        bucket, prefix = parse_store_url(config.store)
        return S3Store(
            Bucket(bucket, endpoint=config.s3_endpoint or None, region=config.s3_region or None),
            prefix, partial_ttl=config.partial_ttl, max_file_size=config.max_file_size,
            memory=config.s3_memory,
        )  # fmt: skip
    return LocalStore(config.root, partial_ttl=config.partial_ttl, max_file_size=config.max_file_size)
