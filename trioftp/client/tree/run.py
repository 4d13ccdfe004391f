"""Carrying out a plan: folders, copies, then deletions, each file on its own stream."""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path

import attrs
import trio

from trioftp.client.targets import partial_of
from trioftp.client.tree.local import _kind
from trioftp.client.tree.model import (
    DEFAULT_CONCURRENCY,
    Direction,
    Plan,
    TreeCallback,
    TreeFailure,
    TreeProgress,
    TreeTransferError,
    _join,
)
from trioftp.client.tree.peer import TreeConnection
from trioftp.client.tree.plan import _ancestors, _children_first, _within, plan_sync
from trioftp.client.tree.remote import _kind_of, scan_remote
from trioftp.client.tree.rules import Rules
from trioftp.errors import ConnectionClosed, TrioftpError
from trioftp.protocol.messages import Kind
from trioftp.transport.concurrency import run_all


@attrs.frozen
class _Side:
    """The side a run changes, by path relative to its top: make a folder, delete a file or empty folder."""

    mkdir: Callable[[str], Awaitable[None]]
    delete_file: Callable[[str], Awaitable[None]]
    delete_folder: Callable[[str], Awaitable[None]]


def _remote_side(conn: TreeConnection, remote: str) -> _Side:
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
    conn: TreeConnection,
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
    and again only if nothing failed, the other deletions. What replaces an
    entry of the other kind (a file, or a folder with all in it) is built
    beside it first (`.trioftp-replace-<hex>`) and renamed in once the entry
    is gone, so a copy that fails leaves that entry whole. A replacement that
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

    async def copy_one(path: str, into: str | None = None) -> None:
        """Copy the source's `path` to the target's `into` (by default, `path`)."""
        into = into or path
        state.current.add(path)
        report()

        first = [True]

        def on_bytes(done: int, total: int) -> None:
            # A first report holds a resume's offset (and the first block): not moved at any speed now.
            if first[0]:
                state.bytes_resumed += done
            first[0] = False
            state.bytes_done += done - sizes[path]
            sizes[path] = done
            state.file_bytes[path] = (done, total)
            report()

        try:
            if direction is Direction.UP:
                await conn.upload(local / path, _join(remote, into), progress=on_bytes)
            else:
                # Inline: a few mkdir and lstat calls, as the download's own open and
                # rename are; a thread hop per file cost more than the calls (W3D).
                _make_room(local, into)
                await conn.download(_join(remote, path), local / into, progress=on_bytes)
        finally:
            state.current.discard(path)
            state.file_bytes.pop(path, None)
        state.files_done += 1
        report()

    in_the_way = set(plan.replace)

    def first(paths: tuple[str, ...]) -> tuple[str, ...]:  # what needs nothing of the target's removed
        return tuple(path for path in paths if not _within(path, in_the_way))

    # A fresh name per run and path: a fixed one could be a real entry, or the
    # leftover of a crash that this run's deletions also name.
    staging = {path: _staging_name(path) for path in plan.replace}

    def staged_as(path: str) -> str:
        top = next(p for p in plan.replace if path == p or path.startswith(p + "/"))
        return staging[top] + path[len(top) :]

    made = await _make_folders(side, first(plan.mkdir), failures, concurrency)
    copied = await _each(copy_one, first(plan.copy), failures, concurrency)
    # What takes the place of the target's entry of the other kind is built
    # beside it first (a file, or a folder with all in it): if any of that
    # fails, the entry in the way is still whole. Only then does it go, and
    # the new one is renamed in.
    staged_dirs = tuple(path for path in plan.mkdir if _within(path, in_the_way))  # parents first
    staged_files = tuple(path for path in plan.copy if _within(path, in_the_way))
    staged_made: list[str] = []
    for path in staged_dirs:
        try:
            await side.mkdir(staged_as(path))
        except (TrioftpError, OSError) as exc:
            failures[path] = exc
        else:
            staged_made.append(path)
    staged = await _each(lambda path: copy_one(path, staged_as(path)), staged_files, failures, concurrency)
    deleted, removed, ready = await _clear_the_way(side, plan, failures, concurrency)

    async def swap_in(path: str) -> None:
        if direction is Direction.UP:
            await conn.rename(_join(remote, staged_as(path)), _join(remote, path))
        else:
            await trio.to_thread.run_sync(os.rename, local / staged_as(path), local / path)

    swapped = await _each(swap_in, [path for path in plan.replace if path in ready], failures, concurrency)
    made += tuple(path for path in staged_dirs if _within(path, swapped))
    copied |= {path for path in staged_files if _within(path, swapped)}
    # Where the entry in the way is gone but the rename failed (no right to
    # rename, say), what was built beside is the only copy: it stays, named.
    kept = {path for path in plan.replace if path in ready and path not in swapped}
    for path in kept:
        failures[path] = TrioftpError(f"copied, but not renamed into place: it is at {staged_as(path)!r}")
    for path in staged_files:  # not swapped in: what was built beside goes, the entry in the way stays
        if _within(path, swapped | kept):
            continue
        if path in staged:
            await _remove_staged(side.delete_file, staged_as(path), failures)
        elif direction is Direction.DOWN:  # a cut download's partial: no later run resumes this name
            with contextlib.suppress(OSError):
                os.unlink(partial_of(local / staged_as(path)))
    for path in reversed(staged_made):
        if not _within(path, swapped | kept):
            await _remove_staged(side.delete_folder, staged_as(path), failures)
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


def _staging_name(path: str) -> str:
    """A new name beside `path` to build its replacement under; a crash leaves it for sync --delete."""
    return _join(path.rpartition("/")[0], f".trioftp-replace-{secrets.token_hex(8)}")


async def _remove_staged(
    remove: Callable[[str], Awaitable[None]], staged: str, failures: dict[str, TreeFailure]
) -> None:
    try:
        await remove(staged)
    except (TrioftpError, OSError) as exc:  # say so: it would be left beside, unexplained
        failures.setdefault(staged, exc)


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
    conn: TreeConnection,
    local: str | os.PathLike[str],
    remote: str,
    *,
    direction: Direction = Direction.UP,
    delete: bool = False,
    dry_run: bool = False,
    concurrency: int = DEFAULT_CONCURRENCY,
    progress: TreeCallback | None = None,
    rules: Rules | None = None,
) -> Plan:
    """Make `remote` match `local` (UP) or `local` match `remote` (DOWN); return the plan.

    `ClientConnection.sync` is the same as a method; its docstring has the details.

    Example:
        plan = await sync(conn, "photos", "backup/photos", delete=True)
        print(len(plan.copy), "files sent,", plan.unchanged, "already there")
    """
    local_path = Path(local)
    plan = await plan_sync(conn, local_path, remote, direction=direction, delete=delete, rules=rules)
    if not dry_run:
        await carry_out(
            conn, plan, local_path, remote, direction=direction, concurrency=concurrency, progress=progress
        )
    return plan


async def upload_tree(
    conn: TreeConnection,
    local: str | os.PathLike[str],
    remote: str = "",
    *,
    concurrency: int = DEFAULT_CONCURRENCY,
    progress: TreeCallback | None = None,
    rules: Rules | None = None,
) -> Plan:
    """Upload every file under `local` into `remote`, skipping files already identical there.

    `ClientConnection.upload_tree` is the same as a method; its docstring has the details.

    Example:
        plan = await upload_tree(conn, "photos", "backup/photos")
    """
    return await sync(
        conn, local, remote, direction=Direction.UP, concurrency=concurrency, progress=progress, rules=rules
    )


async def download_tree(
    conn: TreeConnection,
    remote: str,
    local: str | os.PathLike[str],
    *,
    concurrency: int = DEFAULT_CONCURRENCY,
    progress: TreeCallback | None = None,
    rules: Rules | None = None,
) -> Plan:
    """Download every file under `remote` into `local`, skipping files already identical here.

    `ClientConnection.download_tree` is the same as a method; its docstring has the details.

    Example:
        plan = await download_tree(conn, "backup/photos", "photos-restored")
    """
    return await sync(
        conn, local, remote, direction=Direction.DOWN, concurrency=concurrency, progress=progress, rules=rules
    )


async def remove_tree(conn: TreeConnection, remote: str, *, concurrency: int = DEFAULT_CONCURRENCY) -> Plan:
    """Delete a remote folder and everything under it: its files, then its folders, deepest first.

    `ClientConnection.remove_tree` is the same as a method; its docstring has the details.

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
