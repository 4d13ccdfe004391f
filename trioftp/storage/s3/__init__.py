"""The S3 store: files kept in an S3-compatible bucket (Ceph RGW, MinIO, AWS S3, ...).

Importing this package imports boto3; the local store never does.
"""

from trioftp.storage.s3.bucket import Bucket, BucketError, Reason
from trioftp.storage.s3.store import S3Store, parse_store_url

__all__ = ["Bucket", "BucketError", "Reason", "S3Store", "parse_store_url"]
