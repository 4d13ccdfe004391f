"""Storage.path_of resolves names by lstat per segment: it must agree with the realpath rule."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from trioftp.storage import Storage, StorageError


def _reference(storage: Storage, name: str, *, follow: bool = True) -> Path | None:
    """The rule path_of implemented with two realpath() calls (None: refused)."""
    root = storage.root
    parent, _, last = name.rpartition("/")
    real_parent = Path(os.path.realpath(root / parent))
    if real_parent != root and root not in real_parent.parents:
        return None
    path = real_parent / last
    if follow:
        real = Path(os.path.realpath(path))
        if real != root and root not in real.parents:
            return None
    return path


@pytest.fixture
def tree(tmp_path: Path) -> Storage:
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "a" / "b").mkdir(parents=True)
    (outside / "deep").mkdir(parents=True)
    (root / "a" / "b" / "f.txt").write_bytes(b"x")
    (root / "file").write_bytes(b"x")
    (outside / "secret").write_bytes(b"x")
    (root / "in-dir").symlink_to(root / "a")
    (root / "a" / "out-dir").symlink_to(outside)
    (root / "a" / "b" / "out-file").symlink_to(outside / "secret")
    (root / "a" / "loop").symlink_to(root / "a" / "loop")
    (root / "a" / "dangling-out").symlink_to(outside / "missing")
    (root / "a" / "dangling-in").symlink_to(root / "missing")
    (root / "rootlink").symlink_to(root)
    return Storage(root)


NAMES = [
    "file", "missing", "a", "a/b", "a/b/f.txt", "a/b/missing", "missing/x/y", "file/x", "file/x/y",
    "in-dir", "in-dir/b/f.txt", "in-dir/out-dir", "in-dir/out-dir/secret", "a/out-dir", "a/out-dir/deep",
    "a/out-dir/deep/x", "a/b/out-file", "a/loop", "a/loop/x", "a/dangling-out", "a/dangling-in",
    "rootlink", "rootlink/a/b/f.txt", "rootlink/a/out-dir/secret",
]  # fmt: skip


@pytest.mark.parametrize("follow", [True, False])
@pytest.mark.parametrize("name", NAMES)
def test_path_of_agrees_with_realpath(tree: Storage, name: str, follow: bool) -> None:
    expected = _reference(tree, name, follow=follow)
    if expected is None:
        with pytest.raises(StorageError):
            tree.path_of(name, follow=follow)
    else:
        assert tree.path_of(name, follow=follow) == expected


def test_a_root_swapped_for_a_symlink_out_is_refused(tree: Storage, tmp_path: Path) -> None:
    assert tree.path_of("a/b/f.txt") == tree.root / "a" / "b" / "f.txt"
    moved = tmp_path / "moved"
    tree.root.rename(moved)
    (tmp_path / "root").symlink_to(tmp_path / "outside")
    with pytest.raises(StorageError):
        tree.path_of("secret")
    with pytest.raises(StorageError):
        tree.path_of("deep/x")


def test_a_scoped_view_checks_its_own_root(tree: Storage) -> None:
    view = tree.scoped("a")
    assert view.path_of("b/f.txt") == tree.root / "a" / "b" / "f.txt"
    with pytest.raises(StorageError):
        view.path_of("out-dir/secret")
    assert tree.path_of("a/b/f.txt") == tree.root / "a" / "b" / "f.txt"


def test_concurrent_uploads_into_a_new_folder_all_start(tmp_path: Path) -> None:
    """Uploads racing to create the same folder must not take it for a file (seen in CI)."""
    storage = Storage(tmp_path / "root")
    threads, rounds = 8, 60
    barrier = threading.Barrier(threads)
    failures: list[BaseException] = []

    def upload(worker: int) -> None:
        for round_ in range(rounds):
            barrier.wait()
            try:
                upload = storage.begin_upload(f"r{round_}/deep/{worker}.txt", 1, algorithm="blake3")
                upload.write([b"x"])
                upload.commit(1, None)
            except BaseException as exc:  # collected, asserted below
                failures.append(exc)

    workers = [threading.Thread(target=upload, args=(i,)) for i in range(threads)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    assert failures == []
    assert all(
        (tmp_path / "root" / f"r{r}" / "deep" / f"{w}.txt").read_bytes() == b"x"
        for r in range(rounds)
        for w in range(threads)
    )
