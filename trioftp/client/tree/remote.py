"""The walk of a remote folder: links are listed as links and never walked."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from trioftp.client.tree.model import (
    DEFAULT_CONCURRENCY,
    FOLDER_LINK_REASON,
    NOWHERE_REASON,
    UNLISTABLE_REASON,
    UNSERVED_REASON,
    FileState,
    TreeScan,
    _join,
)
from trioftp.client.tree.peer import TreeConnection
from trioftp.errors import NotFound, PermissionDenied, remote_error
from trioftp.protocol.errors import ErrorCode
from trioftp.protocol.messages import Kind
from trioftp.transport.concurrency import run_all


async def scan_remote(conn: TreeConnection, top: str) -> TreeScan:
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
    unlistable: list[str] = []
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
                except PermissionDenied:
                    if not relative:
                        raise  # an unreadable top read as empty would copy nothing, or delete everything
                    # As the local walk does: the rest is copied, and the name counts as taken.
                    unlistable.append(relative)
                    skipped[relative] = UNLISTABLE_REASON
                    return
                for entry in entries:
                    child = _join(relative, entry.name)
                    if entry.kind is Kind.DIR:
                        folders.add(child)
                        next_level.append(child)
                    elif entry.kind is Kind.LINK:
                        await follow_link(child)
                    elif entry.kind is Kind.OTHER:  # not absent: kept, never copied over
                        skipped[child] = UNSERVED_REASON
                    else:
                        files[child] = FileState(path=child, size=entry.size, mtime_ns=entry.mtime_ns)

            return run

        await run_all([lister(relative, next_level) for relative in level], limit=DEFAULT_CONCURRENCY)
        level = next_level
    return TreeScan(
        files=files,
        folders=frozenset(folders - set(missing) - set(unlistable)),
        skipped=skipped,
        exists="" not in missing,
        links=frozenset(links),
    )


async def walk_remote(conn: TreeConnection, top: str) -> dict[str, FileState]:
    """Every file under a remote folder, listing each level's folders concurrently.

    A missing top folder is an empty tree.

    Example:
        files = await walk_remote(conn, "backup/photos")
        print(sum(state.size for state in files.values()), "bytes")
    """
    return (await scan_remote(conn, top)).files


async def _kind_of(conn: TreeConnection, name: str) -> Kind:
    """What `name` itself is, a link being a link (STAT would say what it leads to).

    Raises:
        NotFound: no such name.
    """
    folder, _, last = name.rpartition("/")
    for entry in await conn.list(folder):
        if entry.name == last:
            return entry.kind
    raise remote_error(ErrorCode.NOT_FOUND, f"no such file or folder: {name!r}")  # as the server says it
