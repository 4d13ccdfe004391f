"""The store contract, run against both stores: the local folder and the S3 bucket (Ceph).

Every operation, names, atomicity, resume, limits, errors, uploads of one name
at once and listings of many, with the same meanings on both. Where the S3
store differs by design (a folder with contents cannot be renamed) the test
says so. Only the "s3" cases need Ceph.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import blake3
import pytest

from trioftp.storage.interface import Kind, Problem, StorageError, Store
from trioftp.storage.local import LocalStore

PART = 5 * 2**20
MakeStore = Callable[..., Store]


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def make_store(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[MakeStore]:
    """`make_store(**settings)`: one more store on the same files (another server, for S3)."""
    opened: list[Store] = []

    def make(**settings: object) -> Store:
        if request.param == "local":
            store: Store = LocalStore(tmp_path / "root", **settings)  # type: ignore[arg-type]
        else:
            from trioftp.storage.s3 import Bucket, S3Store

            rgw = request.getfixturevalue("rgw")
            bucket_name = request.getfixturevalue("bucket_name")
            monkeypatch.setenv("AWS_ACCESS_KEY_ID", rgw.access_key)
            monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", rgw.secret_key)
            bucket = Bucket(bucket_name, endpoint=rgw.endpoint, max_attempts=2, connect_timeout=1)
            store = S3Store(bucket, "root", part_size=PART, **settings)  # type: ignore[arg-type]
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


@pytest.fixture
def store(make_store: MakeStore) -> Store:
    return make_store()


def settle(store: Store) -> None:
    """Wait for the S3 store's background clean-up of aborted uploads (the local one has none)."""
    getattr(store, "settle", lambda: None)()


def put(store: Store, name: str, data: bytes, **settings: object) -> None:
    upload = store.begin_upload(name, len(data), algorithm="blake3", **settings)  # type: ignore[arg-type]
    upload.write([data])
    upload.commit(len(data), blake3.blake3(data).digest())


def get(store: Store, name: str) -> bytes:
    handle = store.open_read(name)
    try:
        return handle.read(0, handle.facts.size)
    finally:
        handle.close()


def problem(call: Callable[[], object]) -> Problem:
    with pytest.raises(StorageError) as refused:
        call()
    return refused.value.problem


def test_every_operation(store: Store) -> None:
    data = os.urandom(2 * PART + 77)
    put(store, "docs/a.bin", data)
    put(store, "docs/b.txt", b"bee")
    assert get(store, "docs/a.bin") == data
    handle = store.open_read("docs/a.bin")
    try:
        assert handle.read(PART - 3, 6) == data[PART - 3 : PART + 3]
        assert handle.digest("blake3") == blake3.blake3(data).digest()
        assert handle.unchanged()
    finally:
        handle.close()
    facts = store.stat("docs/a.bin", "blake3")
    assert (facts.kind, facts.size, facts.digest) == (Kind.FILE, len(data), blake3.blake3(data).digest())
    assert store.stat("docs").kind is Kind.FOLDER
    assert [(e.name, e.kind, e.size) for e in store.list("docs")] == [
        ("a.bin", Kind.FILE, len(data)),
        ("b.txt", Kind.FILE, 3),
    ]
    assert [(e.name, e.kind) for e in store.list("")] == [("docs", Kind.FOLDER)]  # no state folder
    same = store.identical("docs/b.txt", 3, blake3.blake3(b"bee").digest(), "blake3", 1_600_000_000 * 10**9)
    assert same is not None and store.stat("docs/b.txt").mtime_ns == 1_600_000_000 * 10**9
    assert store.identical("docs/b.txt", 3, blake3.blake3(b"bed").digest(), "blake3", None) is None

    store.mkdir("new/deeper")
    store.mkdir("new/deeper")  # as mkdir -p
    assert problem(lambda: store.mkdir("docs/b.txt")) is Problem.EXISTS
    assert problem(lambda: store.mkdir("docs/b.txt/x")) is Problem.WRONG_KIND
    assert problem(lambda: store.delete("new")) is Problem.NOT_EMPTY
    store.delete("new/deeper")
    store.rename("new", "renamed", replace=False)  # an empty folder
    store.rename("docs/b.txt", "renamed/b.txt", replace=False)
    assert get(store, "renamed/b.txt") == b"bee"
    put(store, "docs/c", b"c")
    assert problem(lambda: store.rename("docs/c", "docs/a.bin", replace=False)) is Problem.EXISTS
    store.rename("docs/c", "docs/a.bin", replace=True)
    assert get(store, "docs/a.bin") == b"c"
    assert problem(lambda: store.rename("docs/a.bin", "renamed", replace=True)) is Problem.WRONG_KIND
    store.delete("docs/a.bin")
    assert problem(lambda: store.stat("docs/a.bin")) is Problem.NOT_FOUND
    assert problem(lambda: store.open_read("renamed")) is Problem.WRONG_KIND
    assert problem(lambda: store.list("renamed/b.txt")) is Problem.WRONG_KIND
    assert problem(lambda: store.delete("nothing")) is Problem.NOT_FOUND


def test_names_and_the_reserved_folder(store: Store) -> None:
    for name in ("../x", "/x", "a//b", "a/./b", "nul\0l"):
        assert problem(lambda n=name: store.stat(n)) is Problem.BAD_NAME
    for name in (".trioftp", ".trioftp/partial", ".trioftp/uploads"):
        assert problem(lambda n=name: store.list(n)) is Problem.DENIED
        assert problem(lambda n=name: store.begin_upload(f"{n}/f", 1, algorithm="blake3")) is Problem.DENIED


def test_home_views(store: Store) -> None:
    home = store.scoped("users/ann")
    put(home, "f", b"ann")
    assert get(store, "users/ann/f") == b"ann"
    assert [e.name for e in home.list("")] == ["f"]
    assert problem(lambda: home.stat("../bob")) is Problem.BAD_NAME


def test_limits(make_store: MakeStore) -> None:
    store = make_store(max_file_size=100)
    assert problem(lambda: store.begin_upload("big", 101, algorithm="blake3")) is Problem.TOO_LARGE
    upload = store.begin_upload("ok", 3, algorithm="blake3")
    assert problem(lambda: upload.write([b"four"])) is Problem.BAD_REQUEST
    upload.abort(keep=False)
    with pytest.raises(ValueError):
        store.begin_upload("x", 1, algorithm="md4")


def test_a_failed_upload_leaves_the_old_file(store: Store) -> None:
    put(store, "f", b"old")
    for size in (5, 2 * PART + 1):
        upload = store.begin_upload("f", size, algorithm="blake3")
        upload.write([b"n" * size])
        assert problem(lambda u=upload, n=size: u.commit(n, b"\0" * 32)) is Problem.CHECKSUM_MISMATCH
        upload.abort(keep=False)  # as the server does after a failed commit
        assert get(store, "f") == b"old"
        upload = store.begin_upload("f", size, algorithm="blake3")
        upload.write([b"n" * 3])
        upload.abort(keep=False)
        assert get(store, "f") == b"old"


def test_a_reader_gets_the_old_bytes_or_changed_never_a_mix(store: Store) -> None:
    old, new = os.urandom(2 * PART), os.urandom(2 * PART)
    put(store, "f", old)
    handle = store.open_read("f")
    try:
        start = handle.read(0, 100)
        put(store, "f", new)
        try:
            rest = handle.read(100, len(old) - 100)
        except StorageError as exc:
            assert exc.problem is Problem.CHANGED
        else:
            assert start + rest == old
    finally:
        handle.close()
    assert get(store, "f") == new


def test_resume_after_an_interrupted_upload(make_store: MakeStore) -> None:
    first, then = make_store(), make_store()
    data = os.urandom(3 * PART + 5)
    upload = first.begin_upload("r", len(data), algorithm="blake3", resume=True)
    upload.write([data[: 2 * PART + 100]])
    upload.abort(keep=True)
    settle(first)
    assert problem(lambda: first.stat("r")) is Problem.NOT_FOUND  # nothing half-visible
    resumed = then.begin_upload("r", len(data), algorithm="blake3", resume=True)
    assert 0 < resumed.offset <= 2 * PART + 100 and resumed.written == resumed.offset
    resumed.write([data[resumed.offset :]])
    resumed.commit(len(data), blake3.blake3(data).digest())
    assert get(then, "r") == data


def test_expired_uploads_are_swept(make_store: MakeStore) -> None:
    store = make_store(partial_ttl=0)
    upload = store.begin_upload("s", 2 * PART + 1, algorithm="blake3", resume=True)
    upload.write([b"s" * (PART + 1)])
    upload.abort(keep=True)
    settle(store)
    assert store.clean_partials() >= 1
    resumed = store.begin_upload("s", 2 * PART + 1, algorithm="blake3", resume=True)
    assert resumed.offset == 0
    resumed.abort(keep=False)


def test_uploads_of_one_name_at_once_end_with_one_whole_file(store: Store) -> None:
    # For S3, test_store.py does it through two stores, tests/s3/test_servers.py two servers.
    race_two_uploads_of_one_name([store, store], 2 * PART + 3)


def race_two_uploads_of_one_name(stores: Sequence[Store], size: int) -> None:
    """Two uploads of one name, started together, each through its own store: one whole file wins."""
    datas = [os.urandom(size), os.urandom(size)]
    barrier = threading.Barrier(2)

    def one(i: int) -> None:
        upload = stores[i].begin_upload("same", len(datas[i]), algorithm="blake3", resume=True)
        barrier.wait()
        for start in range(0, len(datas[i]), 2**20):
            upload.write([datas[i][start : start + 2**20]])
        upload.commit(len(datas[i]), blake3.blake3(datas[i]).digest())

    with ThreadPoolExecutor(2) as pool:
        list(pool.map(one, range(2)))
    assert get(stores[0], "same") in datas


def test_list_of_many(store: Store) -> None:
    names = [f"f{i:04d}" for i in range(1001)]
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda n: put(store, f"many/{n}", n.encode()), names))
    listed = store.list("many")
    assert [e.name for e in listed] == names
    assert all(e.kind is Kind.FILE and e.size == 5 for e in listed)
