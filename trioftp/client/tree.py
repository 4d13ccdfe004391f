"""Whole folders over one connection: upload_tree, download_tree and sync.

Many files are in flight at once (each on its own stream); a file is sent only
when it differs, decided by size and then digest, so a run that was cut off
resumes where it stopped: finished files are skipped, and partial ones resume
(uploads through the server's partials, downloads through `.trioftp-part`).
"""

from __future__ import annotations

import enum
import errno
import os
import stat
from collections.abc import Awaitable, Callable, Collection, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import attrs
import trio

from trioftp.client.targets import PARTIAL_SUFFIX
from trioftp.concurrency import run_all
from trioftp.digests import hash_file
from trioftp.errors import ConnectionClosed, NotFound, TrioftpError, remote_error
from trioftp.protocol.errors import ErrorCode
from trioftp.protocol.messages import Kind
from trioftp.protocol.names import BadName, check_path

if TYPE_CHECKING:
    from trioftp.client.connection import ClientConnection

DEFAULT_CONCURRENCY = 16
# Left alone on the local side, never copied either way: a remote file of that
# name would land on the very path where a download of its sibling keeps its
# partial.
PARTIAL_REASON = f"a {PARTIAL_SUFFIX} name is the client's partial download, not copied"
# Worded alike for a local and a server's symlink: the direction says which side it is on.
FOLDER_LINK_REASON = "a symlink to a folder; not followed"
NOWHERE_REASON = "a symlink that leads nowhere"


class Direction(enum.Enum):
    """Which way a sync copies.

    Example:
        await conn.sync("photos", "backup/photos", direction=trioftp.Direction.DOWN)
    """

    UP = "up"  # local -> server
    DOWN = "down"  # server -> local


@attrs.frozen
class FileState:
    """One file of a tree: its path relative to the tree's top, size and (when known) digest."""

    path: str
    size: int
    mtime_ns: int


@attrs.frozen
class Skipped:
    """An entry of the source tree that a run does not copy, and why (one line for a person).

    Example:
        for entry in plan.skipped:
            print(f"skipped {entry.path}: {entry.reason}")
    """

    path: str
    reason: str


@attrs.frozen
class Plan:
    """What a sync will do: relative paths to copy and to delete, and how many are already equal.

    `mkdir` are the folders to create, parents first, and `rmdir` (with
    delete) the folders to delete, each before its parent; "" stands for the
    top folder itself. `skipped` lists the source's entries that cannot be
    copied (a FIFO, a dangling symlink, a name the protocol refuses, a path
    where the target has an entry of the other kind and delete is off, ...)
    and, going DOWN, the local entries a download leaves alone where it would
    write (a FIFO, a symlink) or, with delete, would delete; a run copies the
    rest and then raises TreeTransferError, so the skips are not missed.

    `replace` (with delete) are the source's paths where the target has an
    entry of the other kind, a file where a folder goes or a folder where a
    file goes: that entry (a folder with all under it) is in `delete` and
    `rmdir`, and goes just before these paths are copied (see carry_out).

    Example:
        plan = await conn.sync("site", "www", dry_run=True)
        print(f"{len(plan.copy)} files ({plan.bytes_to_copy} bytes) to copy, {plan.unchanged} equal")
    """

    copy: tuple[str, ...]
    delete: tuple[str, ...]
    unchanged: int
    bytes_to_copy: int
    skipped: tuple[Skipped, ...] = ()
    mkdir: tuple[str, ...] = ()
    rmdir: tuple[str, ...] = ()
    replace: tuple[str, ...] = ()


@attrs.define
class TreeProgress:
    """Passed to a tree progress callback after every change.

    Example:
        def show(p: trioftp.TreeProgress) -> None:
            print(f"{p.files_done}/{p.files_total} files, {p.bytes_done}/{p.bytes_total} bytes")

        await conn.upload_tree("photos", "backup/photos", progress=show)
    """

    files_total: int
    bytes_total: int
    files_done: int = 0
    bytes_done: int = 0
    current: set[str] = attrs.field(factory=set)


TreeCallback = Callable[[TreeProgress], None]


TreeFailure = TrioftpError | OSError  # OSError: the local side (a file vanished, a full disk, ...)


class TreeTransferError(TrioftpError):
    """Some entries of a tree were not copied: `failures` maps a path to its error, `skipped` (see Plan).

    The other files were copied; a second run retries only the failed ones.
    `done` is what the run did (a Plan: copied, deleted, ...), None when
    nothing ran. With failures nothing was deleted (but what stood in the way
    of a replacement, see carry_out); skipped entries alone do not stop
    deletions, but what the source has and skipped is never deleted. The
    message shows paths through `shown`.

    Example:
        try:
            await conn.upload_tree("photos", "backup/photos")
        except trioftp.TreeTransferError as exc:
            for path, error in exc.failures.items():
                print(path, error)
            for entry in exc.skipped:
                print(entry.path, entry.reason)
    """

    def __init__(
        self,
        failures: dict[str, TreeFailure],
        skipped: tuple[Skipped, ...] = (),
        done: Plan | None = None,
        *,
        folders: Collection[str] = (),
    ) -> None:
        """`folders`: the paths of `failures` that are folders (the message then says entries, not files)."""
        parts = []
        if failures or not skipped:
            listed = "; ".join(
                f"{shown(path)}: {_printable(str(error))}" for path, error in sorted(failures.items())[:5]
            )
            more = f" (+{len(failures) - 5} more)" if len(failures) > 5 else ""
            one, many = (
                ("entry", "entries") if any(path in folders for path in failures) else ("file", "files")
            )
            parts.append(f"{len(failures)} {one if len(failures) == 1 else many} failed: {listed}{more}")
        if skipped:
            # One line each: a person must be able to find every one of them.
            lines = "".join(f"\n  {shown(entry.path)}: {_printable(entry.reason)}" for entry in skipped)
            parts.append(f"{len(skipped)} skipped, not copied:{lines}")
        super().__init__("; ".join(parts))
        self.failures = failures
        self.skipped = skipped
        self.done = done


def shown(path: str) -> str:
    """A relative path as a report line shows it: "." for the top, anything unprintable escaped.

    A name is the sender's to choose: raw, an ESC sequence in it would drive
    the terminal and a newline would forge a line of its own. Escaped as repr
    does (\\x1b, \\n, \\udce9 for a byte that is not UTF-8), which is how the
    reasons already quote names; a backslash is left as it is, to keep the
    names the protocol refuses for one readable.

    Example:
        for entry in plan.skipped:
            print(f"skipped {trioftp.client.tree.shown(entry.path)}")
    """
    return _printable(path) if path else "."


def _printable(text: str) -> str:
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)


def _join(top: str, relative: str) -> str:
    if not top:
        return relative
    return f"{top}/{relative}" if relative else top


@attrs.frozen
class TreeScan:
    """What a walk of one side found: files, folders (the top left out) and entries left out, with why.

    Example:
        scan = scan_local(Path("photos"))
        for path, reason in scan.skipped.items():
            print(f"{path}: {reason}")
    """

    files: dict[str, FileState]
    folders: frozenset[str] = frozenset()
    skipped: dict[str, str] = attrs.field(factory=dict)
    exists: bool = True  # whether the top folder itself is there
    links: frozenset[str] = frozenset()  # remote symbolic links to folders: in `skipped`, never walked


class _Skip(Exception):
    """Why a local entry is left out of a walk."""


_SPECIAL_KINDS = (
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def _kind(mode: int) -> str:
    return next((name for test, name in _SPECIAL_KINDS if test(mode)), "of an unknown kind")


def _examine(entry: os.DirEntry[str], *, target: bool = False) -> os.stat_result | None:
    """A regular file's stat (a symlink's target, as rsync -L), or None for a folder.

    Raises _Skip for anything else. Only the entry's type and stat are used:
    opening a FIFO would block until a writer came, and a device may do worse.
    With `target` (the folder a download writes into) every symlink is
    skipped, unfollowed: a download would write through it, outside the tree
    or onto another of its files; and a skipped kind is named as what is here.
    """
    try:
        # The whole path check, not only check_segment: that one lets a name
        # that is not UTF-8 through, which the server never lists, so a sync
        # DOWN with delete took it for a file the source lacks.
        check_path(entry.name)
    except BadName as exc:
        raise _Skip(f"bad name: {exc}") from None
    link = entry.is_symlink()
    if link and target:
        raise _Skip("a symlink")
    try:
        if entry.is_dir(follow_symlinks=False):
            return None
        st = entry.stat(follow_symlinks=True)
    except FileNotFoundError:
        raise _Skip(NOWHERE_REASON if link else "vanished during the walk") from None
    except OSError as exc:
        raise _Skip(exc.strerror or str(exc)) from None
    if stat.S_ISDIR(st.st_mode):  # following it could loop, or copy a folder twice
        raise _Skip(FOLDER_LINK_REASON)
    if not stat.S_ISREG(st.st_mode):
        kind = _kind(st.st_mode)
        if target:
            raise _Skip(kind)
        raise _Skip(f"a symlink to {kind}" if link else f"not a regular file or folder ({kind})")
    if entry.name.endswith(PARTIAL_SUFFIX):
        raise _Skip(PARTIAL_REASON)
    return st


def scan_local(top: Path, *, target: bool = False) -> TreeScan:
    """Every file and folder under `top`, and what was left out and why; nothing is opened.

    `target`: `top` is the folder a download writes into, where a symlink
    (to anything) is left out, not followed (see _examine).

    Example:
        scan = scan_local(Path("photos"))
        print(len(scan.files), "files,", len(scan.folders), "folders,", len(scan.skipped), "skipped")
    """
    files: dict[str, FileState] = {}
    folders: set[str] = set()
    skipped: dict[str, str] = {}
    pending = [""]
    while pending:
        folder = pending.pop()
        try:
            with os.scandir(top / folder) as listing:
                entries = list(listing)
        except FileNotFoundError:
            if not folder:
                return TreeScan(files={}, exists=False)  # a download's target folder may not exist yet
            folders.discard(folder)
            skipped[folder] = "vanished during the walk"
            continue
        except OSError as exc:
            if not folder:
                raise  # an unreadable top read as empty would copy nothing, or delete everything
            folders.discard(folder)
            skipped[folder] = f"cannot list: {exc.strerror or exc}"
            continue
        for entry in entries:
            relative = _join(folder, entry.name)
            try:
                st = _examine(entry, target=target)
            except _Skip as why:
                skipped[relative] = str(why)
                continue
            if st is None:
                folders.add(relative)
                pending.append(relative)
            else:
                files[relative] = FileState(path=relative, size=st.st_size, mtime_ns=st.st_mtime_ns)
    return TreeScan(files=files, folders=frozenset(folders), skipped=skipped)


def walk_local(top: Path) -> dict[str, FileState]:
    """Every regular file under `top`, by '/'-joined relative path (partials left out; none if no `top`).

    A symlink to a regular file counts as that file; FIFOs, sockets, devices,
    other symlinks and names the protocol refuses are left out (`scan_local`
    says which and why).

    Example:
        sizes = {path: state.size for path, state in walk_local(Path("photos")).items()}
    """
    return scan_local(top).files


async def scan_remote(conn: ClientConnection, top: str) -> TreeScan:
    """Every file and folder under a remote folder, listing each level's folders concurrently.

    A missing top folder is an empty tree, with `exists` False.

    Example:
        scan = await scan_remote(conn, "backup/photos")
        print(len(scan.files), "files in", len(scan.folders), "folders")
    """
    files: dict[str, FileState] = {}
    folders: set[str] = set()
    skipped: dict[str, str] = {}
    links: set[str] = set()
    missing: list[str] = []
    level = [""]
    while level:
        next_level: list[str] = []

        async def follow_link(child: str) -> None:
            # A link to a file is copied as that file (as local links are). A
            # link to a folder is never walked: deleting through it would empty
            # a folder elsewhere in the root, and a link loop would never end.
            try:
                info = await conn.stat(_join(top, child))
            except NotFound:
                skipped[child] = NOWHERE_REASON
                return
            if info.kind is Kind.DIR:
                links.add(child)
                skipped[child] = FOLDER_LINK_REASON
            else:
                files[child] = FileState(path=child, size=info.size, mtime_ns=info.mtime_ns)

        def lister(relative: str, next_level: list[str]) -> Callable[[], Awaitable[None]]:
            async def run() -> None:
                try:
                    entries = await conn.list(_join(top, relative))
                except NotFound:  # the top is missing, or a folder went away while we walked
                    missing.append(relative)
                    return
                for entry in entries:
                    child = _join(relative, entry.name)
                    if entry.kind is Kind.DIR:
                        folders.add(child)
                        next_level.append(child)
                    elif entry.kind is Kind.LINK:
                        await follow_link(child)
                    else:
                        files[child] = FileState(path=child, size=entry.size, mtime_ns=entry.mtime_ns)

            return run

        await run_all([lister(relative, next_level) for relative in level], limit=DEFAULT_CONCURRENCY)
        level = next_level
    return TreeScan(
        files=files,
        folders=frozenset(folders - set(missing)),
        skipped=skipped,
        exists="" not in missing,
        links=frozenset(links),
    )


async def walk_remote(conn: ClientConnection, top: str) -> dict[str, FileState]:
    """Every file under a remote folder, listing each level's folders concurrently.

    A missing top folder is an empty tree.

    Example:
        files = await walk_remote(conn, "backup/photos")
        print(sum(state.size for state in files.values()), "bytes")
    """
    return (await scan_remote(conn, top)).files


async def _local_digest(path: Path, algorithm: str) -> bytes:
    def run() -> bytes:
        # O_NONBLOCK: if a FIFO took the file's place since the walk, fail instead of waiting forever.
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise OSError(errno.EINVAL, "not a regular file", str(path))
            return hash_file(fd, st.st_size, algorithm)
        finally:
            os.close(fd)

    return await trio.to_thread.run_sync(run)


async def _check_source(conn: ClientConnection, local: Path, remote: str, direction: Direction) -> None:
    """Refuse a source folder that is missing or a file.

    Walked as is, a missing source reads as an empty tree: the run would copy
    nothing and report success, and with delete it would empty the target.
    """
    if direction is Direction.UP:
        if not await trio.to_thread.run_sync(local.is_dir):
            if await trio.to_thread.run_sync(local.exists):
                raise NotADirectoryError(errno.ENOTDIR, "not a folder, nothing copied", str(local))
            raise FileNotFoundError(errno.ENOENT, "no such folder, nothing copied", str(local))
    elif remote:
        await conn.stat(remote)  # NotFound; a file is refused by its LIST (WRONG_KIND)


def _ancestors(path: str) -> Iterator[str]:
    """The folders that hold `path`, nearest first, down to "" (the top)."""
    while path:
        path = path.rpartition("/")[0]
        yield path


def _within(path: str, roots: set[str] | dict[str, str]) -> bool:
    """Whether `path` is one of `roots` or inside one."""
    return path in roots or any(folder in roots for folder in _ancestors(path))


def _children_first(folders: Iterable[str]) -> tuple[str, ...]:
    return tuple(sorted(folders, reverse=True))  # a path sorts after its parent, which is its prefix


def _not_copied(
    source: TreeScan, target: TreeScan, remote: str, direction: Direction, *, delete: bool = False
) -> dict[str, str]:
    """The source's entries that cannot be copied, with why: its own skips and names the target refuses.

    Going DOWN, also the local entries a download leaves alone (see _left_alone).
    Under a skipped folder nothing is listed again: the folder's line says it.
    """
    skipped = dict(source.skipped)
    if direction is Direction.DOWN:
        skipped.update((path, PARTIAL_REASON) for path in source.files if path.endswith(PARTIAL_SUFFIX))
        skipped.update(_left_alone(source, target, skipped, delete=delete))
        return skipped
    links = set(target.links)
    for path in [*sorted(source.folders), *source.files]:  # folders first, parents first
        if _within(path, skipped):
            continue
        if _within(path, links):  # an upload there would land in the folder the link leads to
            skipped[path] = "a symlink to a folder on the server here; not written through"
            continue
        try:  # each name was checked by the walk; only the whole path may still be too long
            check_path(_join(remote, path))
        except BadName as exc:
            skipped[path] = f"bad name: {exc}"
    return skipped


def _left_alone(
    source: TreeScan, target: TreeScan, skipped: dict[str, str], *, delete: bool
) -> dict[str, str]:
    """The local entries that the walk of the target skipped and that a download would touch, with why.

    A download onto a FIFO waits for a reader forever, and onto or under a
    symlink writes through it (outside the tree, or two files into one); so
    the source's entries at or under such a path are not copied, and the path
    is reported. With delete, one the source lacks is kept (as everything the
    walk skipped) and reported too, since a mirror would have deleted it; the
    client's own partial downloads are kept without a word.
    """
    wanted = {*source.files, *source.folders}
    wanted |= {folder for path in wanted for folder in _ancestors(path)}
    left: dict[str, str] = {}
    for path, why in target.skipped.items():
        if _within(path, skipped):  # the source's own skip says it
            continue
        if path in wanted:
            left[path] = f"{why} here; not replaced"
        elif delete and why != PARTIAL_REASON:
            left[path] = f"{why}; kept, not deleted"
    return left


def _in_the_way(
    files: Iterable[str], folders: Iterable[str], target: TreeScan, direction: Direction, *, delete: bool
) -> tuple[dict[str, str], tuple[str, ...]]:
    """The source's paths where the target has an entry of the other kind: skipped, or to replace.

    Copied as they are, such a path fails on every run (a file cannot go
    where a folder is, nor a folder where a file is). Only with delete is the
    target's entry removed; a folder holding something a sync never deletes
    (a symlink, a FIFO, a partial download, ...) is not, since it could not
    be emptied, and nothing under it is touched.
    """
    where = "on the server" if direction is Direction.UP else "here"
    clashes = {path: "a folder" for path in files if path in target.folders}
    clashes.update((path, "a file") for path in folders if path in target.files)
    skipped: dict[str, str] = {}
    replace: list[str] = []
    for path, what in sorted(clashes.items()):
        if not delete:
            skipped[path] = f"{what} is in the way {where}; --delete replaces it"
        elif any(kept.startswith(f"{path}/") for kept in target.skipped):
            skipped[path] = f"{what} is in the way {where}, holding an entry sync never deletes; not replaced"
        else:
            replace.append(path)
    return skipped, tuple(replace)


def _removals(
    source_files: dict[str, FileState], source_folders: set[str], target: TreeScan, skipped: dict[str, str]
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The target's files and folders that the source does not have, for delete.

    What the source has and skipped is kept (a folder with all under it), and
    so is a folder that still holds something kept, such as an entry the walk
    of the target left alone (a FIFO, a partial download).
    """
    files = [path for path in target.files if path not in source_files and not _within(path, skipped)]
    gone = set(files)
    kept = [path for path in target.files if path not in gone] + list(target.skipped)
    holding = {folder for path in kept for folder in _ancestors(path)}
    folders = [
        folder
        for folder in target.folders
        if folder not in source_folders and folder not in holding and not _within(folder, skipped)
    ]
    return tuple(sorted(files)), _children_first(folders)


async def plan_sync(
    conn: ClientConnection, local: Path, remote: str, *, direction: Direction, delete: bool = False
) -> Plan:
    """Compare both sides: by size first, and by digest where the sizes agree.

    The source's entries that cannot be copied go to `skipped`; with delete,
    the target's copies of them (and all under a skipped folder) are kept.
    Folders, empty ones too, are created and (with delete) deleted as files are.

    Example:
        plan = await plan_sync(conn, Path("site"), "www", direction=Direction.UP, delete=True)
    """
    await _check_source(conn, local, remote, direction)
    as_target = direction is Direction.DOWN
    local_scan = await trio.to_thread.run_sync(lambda: scan_local(local, target=as_target))
    remote_scan = await scan_remote(conn, remote)
    source, target = (local_scan, remote_scan) if direction is Direction.UP else (remote_scan, local_scan)
    skipped = _not_copied(source, target, remote, direction, delete=delete)

    def copied(paths: Iterable[str]) -> set[str]:
        return {path for path in paths if not _within(path, skipped)}

    clashes, replace = _in_the_way(
        copied(source.files), copied(source.folders), target, direction, delete=delete
    )
    skipped.update(clashes)
    files = {path: source.files[path] for path in copied(source.files)}
    folders = copied(source.folders)
    mkdir = ([] if target.exists else [""]) + sorted(folders - target.folders)

    def sizes_agree(path: str) -> bool:
        return path in target.files and target.files[path].size == files[path].size

    copy = [path for path in files if not sizes_agree(path)]
    same_size = [path for path in files if sizes_agree(path)]
    algorithm = conn.digest_algorithm
    equal: list[str] = []

    def comparer(path: str) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            remote_digest = (await conn.stat(_join(remote, path))).digest
            try:
                local_digest = await _local_digest(local / path, algorithm)
            except OSError as exc:
                if direction is Direction.UP:
                    skipped[path] = f"cannot read: {exc.strerror or exc}"
                else:
                    copy.append(path)  # an unreadable copy here is replaced
                return
            if remote_digest == local_digest:
                equal.append(path)
            else:
                copy.append(path)

        return run

    await run_all([comparer(path) for path in same_size], limit=DEFAULT_CONCURRENCY)
    copy.sort()
    removed_files, removed_folders = _removals(files, folders, target, skipped) if delete else ((), ())
    return Plan(
        copy=tuple(copy),
        delete=removed_files,
        unchanged=len(equal),
        bytes_to_copy=sum(files[path].size for path in copy),
        skipped=tuple(Skipped(path, reason) for path, reason in sorted(skipped.items())),
        mkdir=tuple(mkdir),
        rmdir=removed_folders,
        replace=replace,
    )


@attrs.frozen
class _Side:
    """The side a run changes, by path relative to its top: make a folder, delete a file or empty folder."""

    mkdir: Callable[[str], Awaitable[None]]
    delete_file: Callable[[str], Awaitable[None]]
    delete_folder: Callable[[str], Awaitable[None]]


def _remote_side(conn: ClientConnection, remote: str) -> _Side:
    async def mkdir(path: str) -> None:
        await conn.mkdir(_join(remote, path))

    async def delete(path: str) -> None:
        await conn.delete(_join(remote, path))

    return _Side(mkdir=mkdir, delete_file=delete, delete_folder=delete)


def _local_side(local: Path) -> _Side:
    async def mkdir(path: str) -> None:
        await trio.to_thread.run_sync(lambda: (local / path).mkdir(parents=True, exist_ok=True))

    async def delete_file(path: str) -> None:
        await trio.to_thread.run_sync(os.unlink, local / path)

    async def delete_folder(path: str) -> None:
        await trio.to_thread.run_sync(os.rmdir, local / path)

    return _Side(mkdir=mkdir, delete_file=delete_file, delete_folder=delete_folder)


async def _each(
    action: Callable[[str], Awaitable[None]],
    paths: Iterable[str],
    failures: dict[str, TreeFailure],
    concurrency: int,
) -> set[str]:
    """Run action(path) for every path, `concurrency` at a time; return the paths it worked for.

    A failure is recorded and the others go on, as rsync does; only a broken
    connection ends them all.
    """
    done: set[str] = set()

    def job(path: str) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            try:
                await action(path)
            except (TrioftpError, OSError) as exc:
                if isinstance(exc, ConnectionClosed):
                    raise
                failures[path] = exc
            else:
                done.add(path)

        return run

    await run_all([job(path) for path in paths], limit=concurrency)
    return done


async def _make_folders(
    side: _Side, folders: tuple[str, ...], failures: dict[str, TreeFailure], concurrency: int
) -> tuple[str, ...]:
    """Create the folders (parents first in `folders`); return those made.

    Only the innermost are asked for: making one makes its missing parents.
    """
    parents = {parent for folder in folders if folder for parent in _ancestors(folder)}
    made = await _each(side.mkdir, [f for f in folders if f not in parents], failures, concurrency)
    made |= {parent for folder in made for parent in _ancestors(folder)}
    return tuple(folder for folder in folders if folder in made)


async def _delete_all(
    side: _Side,
    files: tuple[str, ...],
    folders: tuple[str, ...],
    failures: dict[str, TreeFailure],
    concurrency: int,
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Delete the files, then the folders, deepest first; return what was deleted.

    A folder that holds something whose deletion failed is not tried: it
    could not be empty, and the failure below says why.
    """
    deleted = await _each(side.delete_file, files, failures, concurrency)
    removed: set[str] = set()
    by_depth: dict[int, list[str]] = {}
    for folder in folders:
        by_depth.setdefault(folder.count("/") + 1 if folder else 0, []).append(folder)
    for depth in sorted(by_depth, reverse=True):  # one level at a time: a folder's children go first
        blocked = {parent for path in failures for parent in _ancestors(path)}
        level = [folder for folder in by_depth[depth] if folder not in blocked]
        removed |= await _each(side.delete_folder, level, failures, concurrency)
    return tuple(p for p in files if p in deleted), tuple(p for p in folders if p in removed)


def _make_room(local: Path, path: str) -> None:
    """Make the folders a download of `path` goes into; raise OSError unless it replaces only a file.

    The plan went by a walk made a moment before. A symlink, FIFO or device
    put at the path or in its way since then would be written through or into
    (a download follows a link and writes a FIFO in place), so the file fails
    instead. The top folder is the user's own choice and may be a link.
    """
    local.mkdir(parents=True, exist_ok=True)
    for relative in reversed([*_ancestors(path)][:-1]):  # top-down, the top itself left out
        folder = local / relative
        try:
            os.mkdir(folder)
        except FileExistsError:
            if not stat.S_ISDIR(os.lstat(folder).st_mode):  # lstat: a link to a folder is refused too
                raise OSError(errno.ENOTDIR, "not a folder here; not written into", str(folder)) from None
    destination = local / path
    try:
        mode = os.lstat(destination).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISREG(mode):
        what = "a symlink" if stat.S_ISLNK(mode) else "a folder" if stat.S_ISDIR(mode) else _kind(mode)
        raise OSError(errno.EEXIST, f"{what} here; not replaced", str(destination))


async def carry_out(
    conn: ClientConnection,
    plan: Plan,
    local: Path,
    remote: str,
    *,
    direction: Direction,
    concurrency: int = DEFAULT_CONCURRENCY,
    progress: TreeCallback | None = None,
) -> None:
    """Create folders, copy and delete what the plan says, `concurrency` at a time on one connection.

    Files are deleted before folders, and a folder's children before it. The
    order keeps the target's entries until nothing could need them: first the
    folders and copies that need nothing removed; then, only if all of those
    worked, what is in the way of `plan.replace` (as a tree: files, then
    folders deepest first; a link is never walked, since a folder holding one
    is not replaced) and right after, the copies that go in its place; last,
    and again only if nothing failed, the other deletions. A replacement that
    could not run is a failure of its path.

    Raises:
        TreeTransferError: some entries failed (nothing else was deleted), or
            the plan skipped some (the rest was done); `done` says what was.
        ConnectionClosed: the connection broke.

    Example:
        plan = await plan_sync(conn, Path("site"), "www", direction=Direction.UP)
        await carry_out(conn, plan, Path("site"), "www", direction=Direction.UP)
    """
    side = _remote_side(conn, remote) if direction is Direction.UP else _local_side(local)
    sizes = {path: 0 for path in plan.copy}
    state = TreeProgress(files_total=len(plan.copy), bytes_total=plan.bytes_to_copy)
    failures: dict[str, TreeFailure] = {}

    def report() -> None:
        if progress is not None:
            progress(state)

    async def copy_one(path: str) -> None:
        state.current.add(path)
        report()

        def on_bytes(done: int, _total: int) -> None:
            state.bytes_done += done - sizes[path]
            sizes[path] = done
            report()

        try:
            if direction is Direction.UP:
                await conn.upload(local / path, _join(remote, path), progress=on_bytes)
            else:
                await trio.to_thread.run_sync(_make_room, local, path)
                await conn.download(_join(remote, path), local / path, progress=on_bytes)
        finally:
            state.current.discard(path)
        state.files_done += 1
        report()

    in_the_way = set(plan.replace)

    def first(paths: tuple[str, ...]) -> tuple[str, ...]:  # what needs nothing of the target's removed
        return tuple(path for path in paths if not _within(path, in_the_way))

    made = await _make_folders(side, first(plan.mkdir), failures, concurrency)
    copied = await _each(copy_one, first(plan.copy), failures, concurrency)
    deleted, removed, ready = await _clear_the_way(side, plan, failures, concurrency)
    now_free = tuple(path for path in plan.mkdir if _within(path, ready))
    made += await _make_folders(side, now_free, failures, concurrency)
    copied |= await _each(
        copy_one, [path for path in plan.copy if _within(path, ready)], failures, concurrency
    )
    if not failures:  # deleting after a failure could remove the only good copy of what failed
        more = await _delete_all(side, first(plan.delete), first(plan.rmdir), failures, concurrency)
        deleted, removed = (*deleted, *more[0]), (*removed, *more[1])
    if failures or plan.skipped:  # last, so that a script notices; all else is done
        done = attrs.evolve(
            plan,
            mkdir=tuple(path for path in plan.mkdir if path in made),
            copy=tuple(path for path in plan.copy if path in copied),
            delete=tuple(path for path in plan.delete if path in deleted),
            rmdir=tuple(path for path in plan.rmdir if path in removed),
            replace=tuple(path for path in plan.replace if path in copied or path in made),
            bytes_to_copy=state.bytes_done,
        )
        raise TreeTransferError(failures, plan.skipped, done, folders={*plan.mkdir, *plan.rmdir})


async def _clear_the_way(
    side: _Side, plan: Plan, failures: dict[str, TreeFailure], concurrency: int
) -> tuple[tuple[str, ...], tuple[str, ...], set[str]]:
    """Remove what is in the way of `plan.replace`; return the files and folders deleted, and the paths freed.

    Nothing is removed after a failure (see carry_out); each path left
    blocked is then a failure of its own, saying why it was not copied.
    """
    in_the_way = set(plan.replace)
    deleted: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    if not in_the_way:
        return deleted, removed, set()
    if not failures:
        deleted, removed = await _delete_all(
            side,
            tuple(path for path in plan.delete if _within(path, in_the_way)),
            tuple(path for path in plan.rmdir if _within(path, in_the_way)),
            failures,
            concurrency,
        )
        why = "could not be removed"
    else:
        why = "is removed only in a run where all else worked"
    ready = {path for path in plan.replace if path in deleted or path in removed}
    for path in plan.replace:
        if path not in ready and path not in failures:
            what = "folder" if path in plan.rmdir else "file"
            failures[path] = TrioftpError(f"not copied: the {what} in the way {why}")
    return deleted, removed, ready


async def sync(
    conn: ClientConnection,
    local: str | os.PathLike[str],
    remote: str,
    *,
    direction: Direction = Direction.UP,
    delete: bool = False,
    dry_run: bool = False,
    concurrency: int = DEFAULT_CONCURRENCY,
    progress: TreeCallback | None = None,
) -> Plan:
    """Make `remote` match `local` (UP) or `local` match `remote` (DOWN); return the plan.

    `ClientConnection.sync` is the same as a method; its docstring has the details.

    Example:
        plan = await sync(conn, "photos", "backup/photos", delete=True)
        print(len(plan.copy), "files sent,", plan.unchanged, "already there")
    """
    local_path = Path(local)
    plan = await plan_sync(conn, local_path, remote, direction=direction, delete=delete)
    if not dry_run:
        await carry_out(
            conn, plan, local_path, remote, direction=direction, concurrency=concurrency, progress=progress
        )
    return plan


async def upload_tree(
    conn: ClientConnection,
    local: str | os.PathLike[str],
    remote: str = "",
    *,
    concurrency: int = DEFAULT_CONCURRENCY,
    progress: TreeCallback | None = None,
) -> Plan:
    """Upload every file under `local` into `remote`, skipping files already identical there.

    `ClientConnection.upload_tree` is the same as a method; its docstring has the details.

    Example:
        plan = await upload_tree(conn, "photos", "backup/photos")
    """
    return await sync(conn, local, remote, direction=Direction.UP, concurrency=concurrency, progress=progress)


async def download_tree(
    conn: ClientConnection,
    remote: str,
    local: str | os.PathLike[str],
    *,
    concurrency: int = DEFAULT_CONCURRENCY,
    progress: TreeCallback | None = None,
) -> Plan:
    """Download every file under `remote` into `local`, skipping files already identical here.

    `ClientConnection.download_tree` is the same as a method; its docstring has the details.

    Example:
        plan = await download_tree(conn, "backup/photos", "photos-restored")
    """
    return await sync(
        conn, local, remote, direction=Direction.DOWN, concurrency=concurrency, progress=progress
    )


async def remove_tree(conn: ClientConnection, remote: str, *, concurrency: int = DEFAULT_CONCURRENCY) -> Plan:
    """Delete a remote folder and everything under it: its files, then its folders, deepest first.

    A file is deleted as it is (as `rm -r` does), and so is a symbolic link,
    to a file or a folder: the link goes, never what it leads to. The root
    cannot be removed.

    Returns:
        What was deleted: `delete` (files) and `rmdir` (folders, "" being `remote` itself).

    Raises:
        ValueError: `remote` is the root ("" or "/").
        NotFound: no such file or folder.
        TreeTransferError: some could not be deleted (nor the folders that hold them); the rest was.
        ConnectionClosed: the connection broke.

    Example:
        plan = await remove_tree(conn, "backup/old-photos")
        print(len(plan.delete), "files and", len(plan.rmdir), "folders deleted")
    """
    if not remote.strip("/"):
        raise ValueError("refusing to remove the root folder ('' or '/'): name a folder inside it")
    if await _kind_of(conn, remote.strip("/")) is not Kind.DIR:
        await conn.delete(remote)
        return Plan(copy=(), delete=("",), unchanged=0, bytes_to_copy=0)
    scan = await scan_remote(conn, remote)
    plan = Plan(
        copy=(),
        delete=tuple(sorted(set(scan.files) | scan.links)),  # a link is deleted, not walked
        unchanged=0,
        bytes_to_copy=0,
        rmdir=_children_first(scan.folders | {""}),
    )
    failures: dict[str, TreeFailure] = {}
    deleted, removed = await _delete_all(
        _remote_side(conn, remote), plan.delete, plan.rmdir, failures, concurrency
    )
    if failures:
        done = attrs.evolve(plan, delete=deleted, rmdir=removed)
        raise TreeTransferError(failures, done=done, folders=plan.rmdir)
    return plan


async def _kind_of(conn: ClientConnection, name: str) -> Kind:
    """What `name` itself is, a link being a link (STAT would say what it leads to).

    Raises:
        NotFound: no such name.
    """
    folder, _, last = name.rpartition("/")
    for entry in await conn.list(folder):
        if entry.name == last:
            return entry.kind
    raise remote_error(ErrorCode.NOT_FOUND, f"no such file or folder: {name!r}")  # as the server says it
