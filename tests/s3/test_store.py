"""The S3 store against Ceph: every operation, atomicity, resume on another server, errors."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import blake3
import pytest

from tests.ceph import Ceph
from tests.s3.test_both_stores import get, problem, put, race_two_uploads_of_one_name
from trioftp.storage.interface import Kind, Problem, StorageError
from trioftp.storage.s3 import Bucket, S3Store
from trioftp.storage.s3.store import READ_AHEAD_CHUNK, READ_AHEAD_DEPTH

pytestmark = pytest.mark.s3

PART = 5 * 2**20  # the smallest part S3 allows: multipart paths with small files
MakeStore = Callable[..., S3Store]


@pytest.fixture
def make_store(rgw: Ceph, bucket_name: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[MakeStore]:
    """`make_store()`: a store on the test's bucket, as a separate server would open it."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", rgw.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", rgw.secret_key)
    opened: list[S3Store] = []

    def make(**settings: object) -> S3Store:
        settings.setdefault("part_size", PART)
        bucket = Bucket(
            bucket_name, endpoint=rgw.endpoint, max_attempts=2, connect_timeout=1, read_timeout=10
        )
        store = S3Store(bucket, "served", **settings)  # type: ignore[arg-type]
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


@pytest.fixture
def store(make_store: MakeStore) -> S3Store:
    return make_store()


# ------------------------------------------------------------------ files


@pytest.mark.parametrize("size", [0, 1000, PART, 2 * PART + 123])
def test_upload_then_read_and_stat(store: S3Store, size: int) -> None:
    data = os.urandom(size)
    upload = store.begin_upload("a/b.bin", size, algorithm="blake3")
    for start in range(0, size, 300_000):  # blocks that do not line up with parts
        upload.write([data[start : start + 100_000], memoryview(data)[start + 100_000 : start + 300_000]])
    facts = upload.commit(size, blake3.blake3(data).digest(), mtime_ns=1_700_000_000_123_456_789)
    assert (facts.size, facts.digest) == (size, blake3.blake3(data).digest())
    assert get(store, "a/b.bin") == data
    stat = store.stat("a/b.bin", "blake3")
    assert (stat.kind, stat.size, stat.mtime_ns) == (Kind.FILE, size, 1_700_000_000_123_456_789)
    assert stat.digest == blake3.blake3(data).digest()
    assert store.stat("a").kind is Kind.FOLDER
    assert [e.name for e in store.list("")] == ["a"]  # the reserved prefix is never listed


def test_reads_at_offsets_and_digest_of_foreign_object(store: S3Store) -> None:
    data = os.urandom(3 * 2**20)
    store._bucket.put("served/foreign", data)  # written by another tool: no digest in metadata
    handle = store.open_read("foreign")
    try:
        assert handle.cached_digest("sha256") is None
        assert handle.read(2**20, 10) == data[2**20 : 2**20 + 10]
        assert handle.read(0, 5) == data[:5]
        assert handle.read(len(data) - 3, 100) == data[-3:]
        import hashlib

        assert handle.digest("sha256") == hashlib.sha256(data).digest()
        assert handle.unchanged()
    finally:
        handle.close()
    assert store.stat("foreign", "sha256").digest == hashlib.sha256(data).digest()


def test_digest_found_by_another_server(make_store: MakeStore) -> None:
    first, second = make_store(), make_store()
    first._bucket.put("served/f", b"bytes")
    handle = first.open_read("f")
    digest = handle.digest("blake3")
    handle.close()
    assert second.stat("f", "blake3").digest == digest


def test_wrong_digest_or_size_keeps_the_old_file(store: S3Store) -> None:
    for size in (10, 2 * PART + 1):
        put(store, "f", b"old")
        upload = store.begin_upload("f", size, algorithm="blake3")
        upload.write([b"x" * size])
        assert problem(lambda u=upload, n=size: u.commit(n, b"\0" * 32)) is Problem.CHECKSUM_MISMATCH
        upload = store.begin_upload("f", size, algorithm="blake3")
        upload.write([b"x" * (size - 1)])
        assert problem(lambda u=upload, n=size: u.commit(n, None)) is Problem.BAD_REQUEST
        assert get(store, "f") == b"old"
    store.settle()
    assert list(store._bucket.list_all("served/.trioftp/uploads/")) == []


def test_more_than_announced_is_refused(store: S3Store) -> None:
    upload = store.begin_upload("f", 3, algorithm="sha256")
    assert problem(lambda: upload.write([b"four"])) is Problem.BAD_REQUEST
    upload.abort(keep=False)


def test_readers_see_old_or_new_never_a_mix(store: S3Store) -> None:
    old = os.urandom(2 * PART + 5)
    put(store, "f", old)
    handle = store.open_read("f")
    first = handle.read(0, 1000)
    put(store, "f", os.urandom(len(old)))
    assert first == old[:1000]
    # Read ahead before the change, or refused: the version opened, never the new one.
    try:
        assert handle.read(PART, 1000) == old[PART : PART + 1000]
    except StorageError as exc:
        assert exc.problem is Problem.CHANGED
    # Far past what was read ahead: the version opened is gone, and the read says so.
    store._bucket.put("served/big", os.urandom((READ_AHEAD_DEPTH + 2) * READ_AHEAD_CHUNK))
    big = store.open_read("big")
    big.read(0, 10)
    store._bucket.put("served/big", b"replaced")
    assert problem(lambda: big.read((READ_AHEAD_DEPTH + 1) * READ_AHEAD_CHUNK, 10)) is Problem.CHANGED
    big.close()
    handle.close()


def test_concurrent_uploads_of_one_name_end_with_one_whole_file(make_store: MakeStore) -> None:
    race_two_uploads_of_one_name([make_store(), make_store()], 2 * PART + 7)


# ------------------------------------------------------------------ resume


def test_upload_cut_on_one_server_resumes_on_another(make_store: MakeStore) -> None:
    a, b = make_store(), make_store()
    data = os.urandom(3 * PART + 1000)
    upload = a.begin_upload("r.bin", len(data), algorithm="blake3", resume=True)
    upload.write([data[: 2 * PART + 500]])
    upload.abort(keep=True)
    a.settle()  # set aside in the background: the ledger is closed once this returns
    resumed = b.begin_upload("r.bin", len(data), algorithm="blake3", resume=True)
    assert resumed.offset == 2 * PART  # whole parts only
    resumed.write([data[resumed.offset :]])
    resumed.commit(len(data), blake3.blake3(data).digest())
    assert get(a, "r.bin") == data
    b.settle()  # the staging is deleted behind the commit's answer
    assert list(a._bucket.list_all("served/.trioftp/uploads/")) == []


def test_upload_of_a_server_that_died_resumes_elsewhere(make_store: MakeStore) -> None:
    a, b = make_store(), make_store(idle_after=0)
    data = os.urandom(2 * PART + 10)
    upload = a.begin_upload("dead.bin", len(data), algorithm="blake3", resume=True)
    upload.write([data[: PART + 10]])
    upload._wait_parts()  # the part is in and ledgered; then the server "dies": no abort, no completion
    upload._ledger.flush()
    upload._pool.shutdown()  # type: ignore[union-attr]
    resumed = b.begin_upload("dead.bin", len(data), algorithm="blake3", resume=True)
    assert resumed.offset == PART
    resumed.write([data[PART:]])
    resumed.commit(len(data), blake3.blake3(data).digest())
    assert get(b, "dead.bin") == data


def test_a_live_upload_is_not_taken_over(make_store: MakeStore) -> None:
    a, b = make_store(), make_store()
    data = os.urandom(2 * PART + 10)
    upload = a.begin_upload("live", len(data), algorithm="blake3", resume=True)
    upload.write([data[: PART + 10]])
    upload._wait_parts()
    other = b.begin_upload("live", len(data), algorithm="blake3", resume=True)
    assert other.offset == 0
    other.abort(keep=False)
    upload.write([data[PART + 10 :]])
    upload.commit(len(data), blake3.blake3(data).digest())
    assert get(a, "live") == data


def test_sweep_removes_expired_uploads(make_store: MakeStore) -> None:
    store = make_store(partial_ttl=0)
    upload = store.begin_upload("s", 2 * PART + 1, algorithm="blake3", resume=True)
    upload.write([b"y" * (PART + 1)])
    upload.abort(keep=True)
    store.settle()
    assert list(store._bucket.list_all("served/.trioftp/uploads/"))
    assert store.clean_partials(at_start=True) == 1
    assert list(store._bucket.list_all("served/.trioftp/uploads/")) == []


# ------------------------------------------------------------------ names and folders


def test_folders_markers_and_deletes(store: S3Store) -> None:
    store.mkdir("x/y")
    assert [(e.name, e.kind) for e in store.list("")] == [("x", Kind.FOLDER)]
    assert [(e.name, e.kind) for e in store.list("x")] == [("y", Kind.FOLDER)]
    assert store.list("x/y") == []
    store.mkdir("x/y")  # as mkdir -p
    put(store, "x/f", b"1")
    assert problem(lambda: store.mkdir("x/f/z")) is Problem.WRONG_KIND
    assert problem(lambda: store.list("x/f")) is Problem.WRONG_KIND
    assert problem(lambda: store.list("nope")) is Problem.NOT_FOUND
    assert problem(lambda: store.begin_upload("x/f/g", 1, algorithm="blake3")) is Problem.WRONG_KIND
    assert problem(lambda: store.begin_upload("x/y", 1, algorithm="blake3")) is Problem.WRONG_KIND
    assert problem(lambda: store.open_read("x")) is Problem.WRONG_KIND
    assert problem(lambda: store.delete("x")) is Problem.NOT_EMPTY
    store.delete("x/y")
    store.delete("x/f")
    assert problem(lambda: store.delete("x/f")) is Problem.NOT_FOUND
    store.delete("x")
    assert store.list("") == []


def test_names_refused(store: S3Store) -> None:
    for name in ("../a", "/a", "a//b", ".trioftp/x", ".trioftp"):
        assert problem(lambda n=name: store.stat(n)) in (Problem.BAD_NAME, Problem.DENIED)
    assert problem(lambda: store.begin_upload(".trioftp/uploads/x", 1, algorithm="blake3")) is Problem.DENIED


def test_rename_files(store: S3Store) -> None:
    put(store, "a", b"A")
    put(store, "b", b"B")
    assert problem(lambda: store.rename("a", "b", replace=False)) is Problem.EXISTS
    store.rename("a", "b", replace=True)
    assert get(store, "b") == b"A"
    assert problem(lambda: store.stat("a")) is Problem.NOT_FOUND
    store.rename("b", "d/e", replace=False)
    assert store.stat("d/e", "blake3").digest == blake3.blake3(b"A").digest()  # metadata went along
    store.mkdir("folder")
    assert problem(lambda: store.rename("d/e", "folder", replace=True)) is Problem.WRONG_KIND
    assert problem(lambda: store.rename("missing", "z", replace=False)) is Problem.NOT_FOUND


def test_rename_folders(store: S3Store) -> None:
    store.mkdir("empty")
    store.rename("empty", "moved", replace=False)
    assert [e.name for e in store.list("")] == ["moved"]
    put(store, "full/f", b"1")
    with pytest.raises(StorageError) as refused:
        store.rename("full", "elsewhere", replace=False)
    assert refused.value.problem is Problem.BAD_REQUEST and "not empty" in str(refused.value)


def test_list_of_many(store: S3Store) -> None:
    names = [f"n{i:05d}" for i in range(1100)]
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda n: store._bucket.put(f"served/many/{n}", b"z"), names))
    listed = store.list("many")
    assert [e.name for e in listed] == names
    assert all(e.size == 1 and e.kind is Kind.FILE for e in listed)


def test_scoped_view_stays_in_its_home(store: S3Store) -> None:
    home = store.scoped("users/ann")
    put(home, "f", b"ann's")
    assert get(store, "users/ann/f") == b"ann's"
    assert [e.name for e in home.list("")] == ["f"]
    assert problem(lambda: home.stat("../x")) is Problem.BAD_NAME
    assert "users/ann" in home.describe()


# ------------------------------------------------------------------ the engine away


def test_engine_stopped_and_started_again(rgw: Ceph, make_store: MakeStore) -> None:
    store = make_store()
    data = os.urandom(3 * PART)
    put(store, "kept", b"k")
    upload = store.begin_upload("big", len(data), algorithm="blake3", resume=True)
    upload.write([data[:PART]])
    upload._wait_parts()
    rgw.stop_rgw()
    try:
        assert problem(lambda: store.stat("kept")) is Problem.UNAVAILABLE
        assert problem(lambda: store.list("")) is Problem.UNAVAILABLE
        assert (
            problem(lambda: upload.write([data[PART : 3 * PART]]) or upload._wait_parts())
            is Problem.UNAVAILABLE
        )
        upload.abort(keep=True)
    finally:
        rgw.start_rgw()
    store.settle()
    assert get(store, "kept") == b"k"
    resumed = store.begin_upload("big", len(data), algorithm="blake3", resume=True)
    resumed.write([data[resumed.offset :]])
    resumed.commit(len(data), blake3.blake3(data).digest())
    assert get(store, "big") == data


# ------------------------------------------------------------------ memory bound


def test_a_commit_never_waits_for_room_its_own_spare_buffers_hold(make_store: MakeStore) -> None:
    """Two uploads, each with a part sent and its buffer kept for the next, fill the store's
    memory; each then gets its last bytes. A commit must not wait for room its own spare
    holds: it did, for PATIENCE (60 s), and two uploads committing at once could each hold
    the room the other waited for (a failure seen in CI)."""
    store = make_store(memory=2 * PART)
    memory = store._shared.memory
    blobs = {name: os.urandom(PART + 1000) for name in ("a.bin", "b.bin")}
    uploads = {}
    for name, blob in blobs.items():
        upload = store.begin_upload(name, len(blob), algorithm="blake3")
        upload.write([blob[:PART]])  # a whole part: sent, its buffer then kept as a spare
        uploads[name] = upload
    deadline = time.monotonic() + 30
    while not all(u._buffers._spares for u in uploads.values()):  # type: ignore[attr-defined]
        assert time.monotonic() < deadline, "the first parts were not sent"
        time.sleep(0.01)
    assert memory.held == 2 * PART
    for name, upload in uploads.items():
        upload.write([blobs[name][PART:]])  # the last bytes go into the spare
    # One at a time: the first commit finds the store full of the two spares (its own and
    # the other upload's, which that one is filling), so only its own can make room.
    with ThreadPoolExecutor(1) as pool:
        for name, upload in uploads.items():
            digest = blake3.blake3(blobs[name]).digest()
            pool.submit(upload.commit, len(blobs[name]), digest).result(timeout=20)  # not PATIENCE
    assert {name: get(store, name) for name in blobs} == blobs
    assert memory.held == store._shared.ranges.counted


def test_parts_in_flight_and_read_ahead_stay_within_the_store_memory(make_store: MakeStore) -> None:
    """Four uploads of 4 parts and four downloads at once, in a store allowed two parts' worth:
    every transfer finishes, and the bytes held in flight never pass the limit (without the
    bound, 4 uploads x 4 parts in flight and 4 downloads x 4 ranges read ahead)."""
    store = make_store(memory=2 * PART)
    memory = store._shared.memory
    blobs = {f"up{i}.bin": os.urandom(4 * PART + 1000) for i in range(4)}
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda item: put(store, *item), blobs.items()))
    assert memory.held == 0
    assert 0 < memory.peak <= 2 * PART
    memory.peak = 0
    with ThreadPoolExecutor(4) as pool:
        got = dict(zip(blobs, pool.map(lambda name: get(store, name), blobs), strict=True))
    assert got == blobs
    assert 0 < memory.peak <= 2 * PART
    # What is still held are buffers kept for the next downloads, given back to anyone who waits.
    assert memory.held == store._shared.ranges.counted
    put(store, "after.bin", os.urandom(4 * PART))
    assert memory.held == store._shared.ranges.counted
    store._shared.ranges.release()
    assert memory.held == 0
