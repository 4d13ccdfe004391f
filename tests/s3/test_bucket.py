"""The bucket layer against Ceph: each call, and errors in their reasons."""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.ceph import Ceph
from trioftp.storage.s3 import bucket as bucket_module
from trioftp.storage.s3.bucket import Bucket, BucketError, Reason

pytestmark = pytest.mark.s3


@pytest.fixture
def bucket(rgw: Ceph, bucket_name: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Bucket]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", rgw.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", rgw.secret_key)
    opened = Bucket(bucket_name, endpoint=rgw.endpoint, max_attempts=1, connect_timeout=1)
    yield opened
    opened.close()


def test_put_head_get_ranges(bucket: Bucket) -> None:
    etag = bucket.put("a/b.txt", b"hello world", metadata={"trioftp-x": "1"})
    head = bucket.head("a/b.txt")
    assert (head.etag, head.size, head.metadata["trioftp-x"]) == (etag, 11, "1")
    assert bucket.read("a/b.txt", 6, 11, etag=etag) == b"world"
    assert bucket.read("a/b.txt", 6, etag=etag) == b"world"


def test_read_into_fills_the_buffers_from_the_socket_and_keeps_the_connection(
    bucket: Bucket, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = os.urandom(300_000)
    etag = bucket.put("r", data)
    fast: list[bool] = []
    filler = bucket_module._filler

    def watched(body: object) -> object:
        fill = filler(body)
        fast.append(getattr(fill, "__name__", "") == "readinto")  # http.client's, not the copying fallback
        return fill

    monkeypatch.setattr(bucket_module, "_filler", watched)
    opened: list[object] = []
    for _ in range(3):
        buffers = [bytearray(100_000), bytearray(100_000), bytearray(50_000)]
        bucket.read_into("r", 50_000, 300_000, [memoryview(b) for b in buffers], etag=etag)
        assert b"".join(buffers) == data[50_000:]
        opened.append(_connections_made(bucket))
    assert fast == [True, True, True]
    assert opened[0] == opened[-1]  # each range on the same connection, given back to the pool
    with pytest.raises(BucketError) as changed:
        bucket.read_into("r", 0, 10, [memoryview(bytearray(10))], etag='"other"')
    assert changed.value.reason is Reason.CHANGED


def _connections_made(bucket: Bucket) -> int:
    session = bucket.client._endpoint.http_session
    pools = session._manager.pools
    keys = list(pools.keys())  # the container itself cannot be iterated
    return sum(pools[key].num_connections for key in keys)


def test_if_match_and_if_none_match(bucket: Bucket) -> None:
    old = bucket.put("k", b"old")
    with pytest.raises(BucketError) as exists:
        bucket.put("k", b"new", create_only=True)
    assert exists.value.reason is Reason.EXISTS
    bucket.put("k", b"new!")
    with pytest.raises(BucketError) as changed:
        bucket.read("k", etag=old)
    assert changed.value.reason is Reason.CHANGED


def test_missing_key(bucket: Bucket) -> None:
    for call in (lambda: bucket.head("nope"), lambda: bucket.read("nope")):
        with pytest.raises(BucketError) as missing:
            call()
        assert missing.value.reason is Reason.NOT_FOUND
    bucket.delete("nope")  # no error, as S3 does


def test_multipart_with_copied_parts(bucket: Bucket) -> None:
    first, second = os.urandom(5 * 2**20), os.urandom(1000)
    staged = bucket.put("staged/1", first)
    upload = bucket.create_multipart("whole", metadata={"trioftp-m": "y"})
    parts = [
        (1, bucket.upload_part_copy("whole", upload, 1, "staged/1", source_etag=staged)),
        (2, bucket.upload_part("whole", upload, 2, second)),
    ]
    bucket.complete_multipart("whole", upload, parts)
    assert bucket.read("whole") == first + second
    assert bucket.head("whole").metadata["trioftp-m"] == "y"
    aborted = bucket.create_multipart("gone")
    bucket.abort_multipart("gone", aborted)
    with pytest.raises(BucketError):
        bucket.head("gone")


def test_copy_keeps_or_replaces_metadata(bucket: Bucket) -> None:
    etag = bucket.put("src", b"data", metadata={"trioftp-a": "1"})
    bucket.copy("src", "kept", source_etag=etag)
    bucket.copy("src", "replaced", metadata={"trioftp-b": "2"})
    assert bucket.head("kept").metadata == {"trioftp-a": "1"}
    assert bucket.head("replaced").metadata == {"trioftp-b": "2"}
    # CopySourceIfMatch (and If-None-Match on a copy) are ignored by Ceph 16: nothing relies on them.


def test_list_by_level_with_pages(bucket: Bucket) -> None:
    keys = [f"f/{i:04d}" for i in range(1005)] + ["f/sub/x", "f/sub2/y", "top"]
    bucket.delete_many([])  # nothing: no call
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda key: bucket.put(key, b""), keys))
    level = bucket.list_level("f/")
    assert len(level.objects) == 1005
    assert level.prefixes == ["f/sub/", "f/sub2/"]
    assert sorted(k for k, _ in bucket.list_all("")) == sorted(keys)
    bucket.delete_many(keys)
    assert list(bucket.list_all("")) == []


def test_engine_down_is_unavailable(rgw: Ceph, bucket: Bucket) -> None:
    bucket.put("k", b"x")
    rgw.stop_rgw()
    with pytest.raises(BucketError) as down:
        bucket.head("k")
    assert down.value.reason is Reason.UNAVAILABLE
    rgw.start_rgw()
    assert bucket.read("k") == b"x"
