"""Comparing both sides: what to copy, create, delete, replace and leave alone, with why."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Awaitable, Callable, Iterable, Iterator
from pathlib import Path

import trio

from trioftp.client.targets import PARTIAL_SUFFIX
from trioftp.client.tree.local import scan_local
from trioftp.client.tree.model import (
    DEFAULT_CONCURRENCY,
    PARTIAL_REASON,
    Direction,
    FileState,
    Plan,
    Skipped,
    TreeScan,
    _join,
)
from trioftp.client.tree.peer import TreeConnection
from trioftp.client.tree.remote import scan_remote
from trioftp.client.tree.rules import Rules, filter_scan
from trioftp.disk.digests import hash_file
from trioftp.protocol.names import BadName, check_path
from trioftp.transport.concurrency import run_all


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


async def _check_source(conn: TreeConnection, local: Path, remote: str, direction: Direction) -> None:
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
        if path in target.skipped:  # what the server keeps there is not ours to replace
            skipped[path] = f"the server keeps something here: {target.skipped[path]}; not replaced"
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
        elif any(kept.startswith(f"{path}/") for kept in (*target.skipped, *target.excluded)):
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
    kept = [path for path in target.files if path not in gone] + list(target.skipped) + list(target.excluded)
    holding = {folder for path in kept for folder in _ancestors(path)}
    folders = [
        folder
        for folder in target.folders
        if folder not in source_folders and folder not in holding and not _within(folder, skipped)
    ]
    return tuple(sorted(files)), _children_first(folders)


async def plan_sync(
    conn: TreeConnection,
    local: Path,
    remote: str,
    *,
    direction: Direction,
    delete: bool = False,
    rules: Rules | None = None,
) -> Plan:
    """Compare both sides: by size first, and by digest where the sizes agree.

    The source's entries that cannot be copied go to `skipped`; with delete,
    the target's copies of them (and all under a skipped folder) are kept.
    Folders, empty ones too, are created and (with delete) deleted as files are.
    What `rules` leave out is left out on both sides: neither copied nor deleted.

    Example:
        plan = await plan_sync(conn, Path("site"), "www", direction=Direction.UP, delete=True)
    """
    await _check_source(conn, local, remote, direction)
    as_target = direction is Direction.DOWN
    local_scan = await trio.to_thread.run_sync(
        lambda: filter_scan(scan_local(local, target=as_target), rules)
    )
    remote_scan = filter_scan(await scan_remote(conn, remote), rules)
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
