"""Fixtures of the S3 tests: one Ceph cluster per session, a fresh bucket per test.

Without the ceph binaries the S3 tests are skipped with the reason, unless
TRIOFTP_REQUIRE_CEPH=1 (CI sets it): then they fail. Deselect them with
`-m "not s3"`.
"""

from __future__ import annotations

import itertools
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.ceph import Ceph, CephUnavailable

_buckets = itertools.count()


@pytest.fixture(scope="session")
def ceph() -> Iterator[Ceph]:
    """The session's cluster; its radosgw may be stopped and started by a test (`ceph.stop_rgw()`)."""
    with tempfile.TemporaryDirectory(prefix="trioftp-ceph-") as folder:
        cluster = Ceph(Path(folder))
        try:
            cluster.start()
        except CephUnavailable as exc:
            if os.environ.get("TRIOFTP_REQUIRE_CEPH") == "1":
                pytest.fail(f"TRIOFTP_REQUIRE_CEPH=1 and Ceph did not start: {exc}")
            pytest.skip(f"no Ceph for the S3 tests: {exc}")
        try:
            yield cluster
        finally:
            cluster.stop()


@pytest.fixture
def rgw(ceph: Ceph) -> Iterator[Ceph]:
    """The cluster, with radosgw running again after the test whatever the test did to it."""
    yield ceph
    if not ceph.answers():
        ceph.start_rgw()


@pytest.fixture
def bucket_name(rgw: Ceph) -> str:
    """A new, empty bucket for this test."""
    import boto3

    name = f"trioftp-{os.getpid()}-{next(_buckets)}"
    client = boto3.client(
        "s3", endpoint_url=rgw.endpoint, aws_access_key_id=rgw.access_key,
        aws_secret_access_key=rgw.secret_key, region_name="us-east-1",
    )  # fmt: skip
    try:
        client.create_bucket(Bucket=name)
    finally:
        client.close()
    return name
