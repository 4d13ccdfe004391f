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
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

import attrs
import trio

from trioftp.concurrency import run_all
from trioftp.digests import hash_file
from trioftp.errors import ConnectionClosed, NotFound, TrioftpError
from trioftp.protocol.messages import Kind

if TYPE_CHECKING:
    from trioftp.client.connection import ClientConnection

DEFAULT_CONCURRENCY = 16
PARTIAL_SUFFIX = ".trioftp-part"


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
class Plan:
    """What a sync will do: relative paths to copy and to delete, and how many are already equal.

    Example:
        plan = await conn.sync("site", "www", dry_run=True)
        print(f"{len(plan.copy)} files ({plan.bytes_to_copy} bytes) to copy, {plan.unchanged} equal")
    """

    copy: tuple[str, ...]
    delete: tuple[str, ...]
    unchanged: int
    bytes_to_copy: int


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


class TreeTransferError(TrioftpError):
    """Some files of a tree could not be copied; `failures` maps each path to its error.

    The other files were copied; a second run retries only the failed ones.

    Example:
        try:
            await conn.upload_tree("photos", "backup/photos")
        except trioftp.TreeTransferError as exc:
            for path, error in exc.failures.items():
                print(path, error)
    """

    def __init__(self, failures: dict[str, TrioftpError]) -> None:
        shown = "; ".join(f"{path}: {error}" for path, error in sorted(failures.items())[:5])
        more = f" (+{len(failures) - 5} more)" if len(failures) > 5 else ""
        super().__init__(f"{len(failures)} files failed: {shown}{more}")
        self.failures = failures


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


def _examine(entry: os.DirEntry[str]) -> os.stat_result | None:
    """A regular file's stat (a symlink's target, as rsync -L), or None for a folder.

    Raises _Skip for anything else. Only the entry's type and stat are used:
    opening a FIFO would block until a writer came, and a device may do worse.
    """
    try:
        if entry.is_dir(follow_symlinks=False):
            return None
        st = entry.stat(follow_symlinks=True)
    except OSError as exc:
        raise _Skip(exc.strerror or str(exc)) from None
    if not stat.S_ISREG(st.st_mode):
        raise _Skip(f"not a regular file or folder ({_kind(st.st_mode)})")
    return st


def scan_local(top: Path) -> TreeScan:
    """Every file and folder under `top`, and what was left out and why; nothing is opened.

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
                return TreeScan(files={})  # a download's target folder may not exist yet
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
            if entry.name.endswith(PARTIAL_SUFFIX):
                continue
            try:
                st = _examine(entry)
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

    A symlink to a regular file counts as that file; FIFOs, sockets, devices and
    other symlinks are left out (`scan_local` says which and why).

    Example:
        sizes = {path: state.size for path, state in walk_local(Path("photos")).items()}
    """
    return scan_local(top).files


async def walk_remote(conn: ClientConnection, top: str) -> dict[str, FileState]:
    """Every file under a remote folder, listing each level's folders concurrently.

    A missing top folder is an empty tree.

    Example:
        files = await walk_remote(conn, "backup/photos")
        print(sum(state.size for state in files.values()), "bytes")
    """
    files: dict[str, FileState] = {}
    level = [""]
    while level:
        next_level: list[str] = []

        def lister(relative: str, next_level: list[str]) -> Callable[[], Awaitable[None]]:
            async def run() -> None:
                try:
                    entries = await conn.list(_join(top, relative))
                except NotFound:
                    return
                for entry in entries:
                    child = _join(relative, entry.name)
                    if entry.kind is Kind.DIR:
                        next_level.append(child)
                    else:
                        files[child] = FileState(path=child, size=entry.size, mtime_ns=entry.mtime_ns)

            return run

        await run_all([lister(relative, next_level) for relative in level], limit=DEFAULT_CONCURRENCY)
        level = next_level
    return files


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


async def plan_sync(
    conn: ClientConnection, local: Path, remote: str, *, direction: Direction, delete: bool = False
) -> Plan:
    """Compare both sides: by size first, and by digest where the sizes agree.

    Example:
        plan = await plan_sync(conn, Path("site"), "www", direction=Direction.UP, delete=True)
    """
    await _check_source(conn, local, remote, direction)
    local_files = await trio.to_thread.run_sync(walk_local, local)
    remote_files = await walk_remote(conn, remote)
    source, target = (local_files, remote_files) if direction is Direction.UP else (remote_files, local_files)
    copy: list[str] = []
    same_size = [path for path, state in source.items() if path in target and target[path].size == state.size]
    copy.extend(path for path in source if path not in target or target[path].size != source[path].size)
    algorithm = conn.digest_algorithm
    differing: list[str] = []

    def comparer(path: str) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            remote_digest = (await conn.stat(_join(remote, path))).digest
            local_digest = await _local_digest(local / path, algorithm)
            if remote_digest != local_digest:
                differing.append(path)

        return run

    await run_all([comparer(path) for path in same_size], limit=DEFAULT_CONCURRENCY)
    copy.extend(differing)
    copy.sort()
    removals = sorted(path for path in target if path not in source) if delete else []
    return Plan(
        copy=tuple(copy),
        delete=tuple(removals),
        unchanged=len(same_size) - len(differing),
        bytes_to_copy=sum(source[path].size for path in copy),
    )


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
    """Copy and delete what the plan says, `concurrency` files at a time on one connection.

    Raises:
        TreeTransferError: some files failed; nothing was deleted.
        ConnectionClosed: the connection broke.

    Example:
        plan = await plan_sync(conn, Path("site"), "www", direction=Direction.UP)
        await carry_out(conn, plan, Path("site"), "www", direction=Direction.UP)
    """
    sizes = {path: 0 for path in plan.copy}
    state = TreeProgress(files_total=len(plan.copy), bytes_total=plan.bytes_to_copy)
    failures: dict[str, TrioftpError] = {}

    def report() -> None:
        if progress is not None:
            progress(state)

    def copier(path: str) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            try:
                await copy_one(path)
            except TrioftpError as exc:
                if isinstance(exc, ConnectionClosed):
                    raise
                failures[path] = exc  # go on with the others, as rsync does
            finally:
                state.current.discard(path)

        return run

    async def copy_one(path: str) -> None:
        state.current.add(path)
        report()

        def on_bytes(done: int, _total: int) -> None:
            state.bytes_done += done - sizes[path]
            sizes[path] = done
            report()

        if direction is Direction.UP:
            await conn.upload(local / path, _join(remote, path), progress=on_bytes)
        else:
            destination = local / path
            await trio.to_thread.run_sync(lambda: destination.parent.mkdir(parents=True, exist_ok=True))
            await conn.download(_join(remote, path), destination, progress=on_bytes)
        state.files_done += 1
        report()

    await run_all([copier(path) for path in plan.copy], limit=concurrency)
    if failures:
        raise TreeTransferError(failures)
    for path in plan.delete:
        if direction is Direction.UP:
            await conn.delete(_join(remote, path))
        else:
            await trio.to_thread.run_sync((local / path).unlink)


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
