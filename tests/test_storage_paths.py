"""Names are opened beneath the root's descriptor: they agree with the realpath rule, and no
swap of folders and links between a check and a use leads outside (issue 11.1)."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import trioftp.disk.beneath as beneath_module
from trioftp.disk.beneath import LeadsOutside, open_beneath
from trioftp.storage.interface import Problem, StorageError
from trioftp.storage.local import Storage


def _reference(root: Path, name: str, *, follow: bool = True) -> Path | None:
    """The rule with two realpath() calls: the path `name` reaches, or None if that is outside."""
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


@pytest.fixture(params=["openat2", "walk"])
def way(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each test runs with the kernel's openat2, and with the walk used where it is missing."""
    if request.param == "walk":

        def missing(*_args: object) -> int:
            raise NotImplementedError("openat2 is not available")

        monkeypatch.setattr(beneath_module, "openat2", missing)
    return str(request.param)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "a" / "b").mkdir(parents=True)
    (outside / "deep").mkdir(parents=True)
    (root / "a" / "b" / "f.txt").write_bytes(b"x")
    (root / "file").write_bytes(b"x")
    (outside / "secret").write_bytes(b"x")
    (root / "in-dir").symlink_to(root / "a")
    (root / "rel-in").symlink_to("a/b")
    (root / "a" / "up").symlink_to("..")
    (root / "a" / "up-out").symlink_to("../..")
    (root / "a" / "out-dir").symlink_to(outside)
    (root / "a" / "b" / "out-file").symlink_to(outside / "secret")
    (root / "a" / "loop").symlink_to(root / "a" / "loop")
    (root / "a" / "dangling-out").symlink_to(outside / "missing")
    (root / "a" / "dangling-in").symlink_to(root / "missing")
    (root / "rootlink").symlink_to(root)
    return root.resolve()


@pytest.fixture
def tree(root: Path) -> Iterator[Storage]:
    storage = Storage(root)
    yield storage
    storage.close()


NAMES = [
    "file", "missing", "a", "a/b", "a/b/f.txt", "a/b/missing", "missing/x/y", "file/x", "file/x/y",
    "in-dir", "in-dir/b/f.txt", "in-dir/out-dir", "in-dir/out-dir/secret", "a/out-dir", "a/out-dir/deep",
    "a/out-dir/deep/x", "a/b/out-file", "a/loop", "a/loop/x", "a/dangling-out", "a/dangling-in",
    "rootlink", "rootlink/a/b/f.txt", "rootlink/a/out-dir/secret", "rel-in", "rel-in/f.txt",
    "a/up", "a/up/file", "a/up/a/up/a/b/f.txt", "a/up-out", "a/up-out/outside/secret",
]  # fmt: skip


@pytest.mark.parametrize("follow", [True, False])
@pytest.mark.parametrize("name", NAMES)
def test_open_beneath_agrees_with_realpath(root: Path, way: str, name: str, follow: bool) -> None:
    expected = _reference(root, name, follow=follow)
    base = os.open(root, os.O_PATH | os.O_DIRECTORY)
    try:
        if expected is None:
            with pytest.raises(LeadsOutside):
                open_beneath(base, name, os.O_PATH, follow=follow, base_path=str(root))
        elif not os.path.lexists(expected) or (follow and not os.path.exists(expected)):
            with pytest.raises(OSError):
                open_beneath(base, name, os.O_PATH, follow=follow, base_path=str(root))
        else:
            fd = open_beneath(base, name, os.O_PATH, follow=follow, base_path=str(root))
            st = os.fstat(fd)
            os.close(fd)
            want = os.stat(expected) if follow else os.lstat(expected)
            assert (st.st_dev, st.st_ino) == (want.st_dev, want.st_ino)
    finally:
        os.close(base)


def test_absolute_links_back_inside_need_the_base_path(root: Path, way: str) -> None:
    base = os.open(root, os.O_PATH | os.O_DIRECTORY)
    try:
        with pytest.raises(LeadsOutside):  # without the base's path, an absolute link cannot be placed
            open_beneath(base, "in-dir/b/f.txt", os.O_PATH)
    finally:
        os.close(base)


def test_absolute_links_by_the_configured_root_path_still_work(tmp_path: Path, way: str) -> None:
    """A root configured through a link (/srv -> /data/srv) and absolute links inside written
    with that path: realpath put them inside, so they worked before 11.1 and must still; so
    must a home's links written with its path under that root, and `..` still cannot leave."""
    real = tmp_path.resolve() / "data" / "files"
    (real / "docs").mkdir(parents=True)
    (real / "docs" / "a.txt").write_bytes(b"A")
    (real / "shared" / "alice").mkdir(parents=True)
    (real / "shared" / "alice" / "x.txt").write_bytes(b"X")
    (real / "homes").mkdir()
    (real / "homes" / "alice").symlink_to("../shared/alice")
    (tmp_path / "srv").symlink_to(real.parent)
    configured = tmp_path / "srv" / "files"
    (real / "via-config").symlink_to(configured / "docs" / "a.txt")
    (real / "folder-via-config").symlink_to(configured / "docs")
    (real / "climbs").symlink_to(f"{configured}/docs/../../files/docs/a.txt")
    (real / "shared" / "alice" / "via-home").symlink_to(configured / "homes" / "alice" / "x.txt")
    (real / "shared" / "alice" / "to-docs").symlink_to(configured / "docs" / "a.txt")
    storage = Storage(configured)
    try:
        for name in ("via-config", "folder-via-config/a.txt"):
            handle = storage.open_read(name)
            assert handle.read(0, 1) == b"A", name
            handle.close()
        kinds = {e.name: e.kind.name for e in storage.list("")}
        assert kinds["via-config"] == kinds["folder-via-config"] == "LINK"
        with pytest.raises(StorageError) as caught:
            storage.open_read("climbs")  # `..` above the root, even spelt with the root's path
        assert caught.value.problem is Problem.DENIED
        home = storage.scoped("homes/alice")
        handle = home.open_read("via-home")
        assert handle.read(0, 1) == b"X"
        handle.close()
        with pytest.raises(StorageError) as caught:
            home.open_read("to-docs")  # inside the root, but outside the home
        assert caught.value.problem is Problem.DENIED
    finally:
        storage.close()


def test_a_root_swapped_for_a_symlink_out_is_not_followed(tree: Storage, root: Path, way: str) -> None:
    """The root is held open: renamed, and its name given to a link out, it is still what is served."""
    assert tree.stat("a/b/f.txt").size == 1
    moved = root.parent / "moved"
    root.rename(moved)
    root.symlink_to(root.parent / "outside")
    for name in ("secret", "deep/x"):
        with pytest.raises(StorageError) as caught:
            tree.stat(name)
        assert caught.value.problem is Problem.NOT_FOUND
    assert tree.stat("a/b/f.txt").size == 1  # from the folder it was started on


def test_a_scoped_view_checks_its_own_root(tree: Storage, way: str) -> None:
    view = tree.scoped("a")
    assert view.stat("b/f.txt").size == 1
    for name in ("out-dir/secret", "up/file", "b/out-file", "up"):
        with pytest.raises(StorageError) as caught:
            view.stat(name)
        assert caught.value.problem is Problem.DENIED, name
    assert tree.stat("a/b/f.txt").size == 1


def test_links_into_the_state_folder_are_refused(tree: Storage, root: Path, way: str) -> None:
    upload = tree.begin_upload("big.bin", 10, algorithm="blake3")
    upload.write([b"12345"])
    partial = upload.partial
    (root / "state").symlink_to(".trioftp")
    (root / "parts").symlink_to(".trioftp/partial")
    (root / "one").symlink_to(f".trioftp/partial/{partial}")
    for name in ("state/partial", f"parts/{partial}", "one", f"rootlink/.trioftp/partial/{partial}"):
        with pytest.raises(StorageError) as caught:
            tree.open_read(name)
        assert caught.value.problem is Problem.DENIED, name
    for folder in ("state", "parts", "rootlink/.trioftp"):
        with pytest.raises(StorageError):
            tree.list(folder)
    with pytest.raises(StorageError):
        tree.begin_upload("parts/x.part", 1, algorithm="blake3")
    with pytest.raises(StorageError):
        tree.mkdir("state/new")
    with pytest.raises(StorageError):
        tree.rename("file", f"parts/{partial}", replace=True)
    assert [e.name for e in tree.list("") if e.name == "state"] == ["state"]
    assert {e.kind.name for e in tree.list("") if e.name in ("state", "parts", "one")} == {"OTHER"}
    upload.abort(keep=False)


def test_the_state_folder_itself_cannot_be_moved_or_deleted_through_a_link(
    tree: Storage, root: Path, way: str
) -> None:
    """RENAME and DELETE act on the entry, not through it: `a/up/.trioftp` (a/up -> ..) is the
    state folder under another name, and must be refused as `.trioftp` is (it was moved away)."""
    (root / "empty").mkdir()
    for name in ("a/up/.trioftp", "rootlink/.trioftp"):
        for attempt in (
            lambda n: tree.rename(n, "stolen", replace=False),
            lambda n: tree.rename("empty", n, replace=True),
            lambda n: tree.rename("file", n, replace=True),
            tree.delete,
        ):
            with pytest.raises(StorageError) as caught:
                attempt(name)
            assert caught.value.problem is Problem.DENIED, name
    assert sorted(os.listdir(root / ".trioftp")) == ["partial"]
    assert not os.path.lexists(root / "stolen") and (root / "empty").is_dir() and (root / "file").is_file()


def test_a_refused_upload_keeps_no_descriptor_nor_key(tree: Storage, root: Path) -> None:
    """Upload() refusing the algorithm after the folder and the partial were opened."""
    before = len(os.listdir("/proc/self/fd"))
    with pytest.raises(ValueError):
        tree.begin_upload("a/new.bin", 1, algorithm="md5")
    assert len(os.listdir("/proc/self/fd")) == before
    assert os.listdir(root / ".trioftp" / "partial") == []
    upload = tree.begin_upload("a/new.bin", 1, algorithm="blake3")
    assert upload.partial.endswith(".part")  # the key was given back: resumable again
    upload.abort(keep=False)


def test_delete_of_a_folder_of_plain_entries_says_only_not_empty(tree: Storage, root: Path) -> None:
    """The entries were examined after their folder's descriptor was closed (EBADF), so every
    one counted as "not served" and DELETE blamed FIFOs and links that are not there."""
    (root / "x" / "y").mkdir(parents=True)
    (root / "x" / "z").write_bytes(b"z")
    with pytest.raises(StorageError) as caught:
        tree.delete("x")
    assert caught.value.problem is Problem.NOT_EMPTY
    assert str(caught.value) == "folder 'x' is not empty"
    os.mkfifo(root / "x" / "fifo")
    with pytest.raises(StorageError, match="holds 1 entry the server does not serve"):
        tree.delete("x")


def test_a_state_folder_that_is_a_link_out_makes_nothing_outside(tmp_path: Path) -> None:
    """`.trioftp` swapped for a link out before a start: the partial folder was made through it
    by path (mkdir -p), outside the root, before the open beneath refused it."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (root / ".trioftp").symlink_to(outside)
    with pytest.raises(OSError):
        Storage(root)
    assert os.listdir(outside) == []


def test_an_upload_lands_in_the_folder_held_since_put(tree: Storage, root: Path, way: str) -> None:
    """The remote attack of issue 11.1, at the storage: the folder is moved away and its name
    given to a link out between PUT and commit."""
    (root / "d").mkdir()
    upload = tree.begin_upload("d/pwned", 5, algorithm="blake3")
    upload.write([b"hello"])
    tree.rename("d", "d2", replace=False)
    (root / "d").symlink_to(root.parent / "outside")
    upload.commit(5, None)
    assert (root / "d2" / "pwned").read_bytes() == b"hello"
    assert sorted(os.listdir(root.parent / "outside")) == ["deep", "secret"]


def test_a_folder_made_at_commit_is_never_a_link(tree: Storage, root: Path, way: str) -> None:
    upload = tree.begin_upload("new/pwned", 5, algorithm="blake3")
    upload.write([b"hello"])
    (root / "new").symlink_to(root.parent / "outside")  # e.g. a client's RENAME of a link out to `new`
    with pytest.raises(StorageError) as caught:
        upload.commit(5, None)
    assert caught.value.problem is Problem.WRONG_KIND
    upload.abort(keep=False)
    assert sorted(os.listdir(root.parent / "outside")) == ["deep", "secret"]


def test_rename_conflicts_of_kind_are_wrong_kind_both_ways(tree: Storage, root: Path) -> None:
    (root / "folder").mkdir()
    for old, new in (("folder", "file"), ("file", "folder")):
        with pytest.raises(StorageError) as caught:
            tree.rename(old, new, replace=True)
        assert caught.value.problem is Problem.WRONG_KIND, (old, new)
    assert (root / "file").is_file() and (root / "folder").is_dir()


def test_delete_and_rename_act_on_the_link_not_its_target(tree: Storage, root: Path, way: str) -> None:
    tree.rename("a/out-dir", "gone", replace=False)
    assert (root / "gone").is_symlink()
    tree.delete("gone")
    assert not os.path.lexists(root / "gone")
    assert (root.parent / "outside" / "secret").exists()
    with pytest.raises(StorageError) as caught:
        tree.delete("a/b/out-file/x")
    assert caught.value.problem in (Problem.DENIED, Problem.NOT_FOUND)


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
    storage.close()
    assert failures == []
    assert all(
        (tmp_path / "root" / f"r{r}" / "deep" / f"{w}.txt").read_bytes() == b"x"
        for r in range(rounds)
        for w in range(threads)
    )


def test_a_local_user_swapping_a_folder_and_a_link_never_leads_outside(
    tree: Storage, root: Path, way: str
) -> None:
    """A thread renames a folder and a link out in and out of the name `sw` as fast as it can,
    while reads, listings, uploads, folders, renames and deletes go through `sw`: none of them
    reaches outside."""
    outside = root.parent / "outside"
    (outside / "f.txt").write_bytes(b"SECRET")
    (root / "real").mkdir()
    (root / "real" / "f.txt").write_bytes(b"inside")
    (root / "lnk").symlink_to(outside)
    stop = threading.Event()
    swaps = 0

    def swapper() -> None:
        nonlocal swaps
        while not stop.is_set():
            for held in ("real", "lnk"):
                try:
                    os.rename(root / held, root / "sw")
                except OSError:  # the server made a folder `sw` meanwhile (a commit, a mkdir)
                    if not (root / "sw").is_symlink():
                        shutil.rmtree(root / "sw", ignore_errors=True)
                    continue
                os.rename(root / "sw", root / held)
                swaps += 1

    thread = threading.Thread(target=swapper)
    thread.start()
    leaks: list[str] = []
    deadline = time.monotonic() + 2.0
    i = 0
    try:
        while time.monotonic() < deadline:
            i += 1
            with contextlib.suppress(StorageError):
                handle = tree.open_read("sw/f.txt")
                if os.pread(handle.fileno(), 16, 0) == b"SECRET":
                    leaks.append("read")
                handle.close()
            with contextlib.suppress(StorageError):
                if {"secret", "deep"} & {e.name for e in tree.list("sw")}:
                    leaks.append("list")
            with contextlib.suppress(StorageError):
                if tree.stat("sw/secret"):
                    leaks.append("stat")
            with contextlib.suppress(StorageError):
                upload = tree.begin_upload(f"sw/up{i}.txt", 1, algorithm="blake3")
                upload.write([b"u"])
                try:
                    upload.commit(1, None)
                finally:
                    upload.abort(keep=False)
            with contextlib.suppress(StorageError):
                tree.mkdir(f"sw/m{i}")
            with contextlib.suppress(StorageError):
                tree.rename(f"sw/up{i}.txt", f"sw/moved{i}.txt", replace=True)
            with contextlib.suppress(StorageError):
                tree.delete(f"sw/moved{i}.txt")
    finally:
        stop.set()
        thread.join()
    assert swaps > 10 and i > 10
    assert leaks == []
    assert sorted(os.listdir(outside)) == ["deep", "f.txt", "secret"]
    assert (outside / "f.txt").read_bytes() == b"SECRET"
    assert (root / "real" / "f.txt").read_bytes() == b"inside"


def test_openat2_is_used_where_the_kernel_has_it(root: Path) -> None:
    base = os.open(root, os.O_PATH | os.O_DIRECTORY)
    try:
        fd = beneath_module.openat2(base, "a/b/f.txt", os.O_RDONLY, 0, beneath_module.RESOLVE_BENEATH)
    except NotImplementedError:
        pytest.skip("no openat2 on this kernel: the walk is what runs")
    os.close(fd)
    with pytest.raises(OSError) as caught:
        beneath_module.openat2(base, "a/out-dir/secret", os.O_RDONLY, 0, beneath_module.RESOLVE_BENEATH)
    os.close(base)
    assert caught.value.errno == errno.EXDEV
