"""What folder transfers deal in: plans, scans, progress, skipped entries and the error that lists them."""

from __future__ import annotations

import enum
from collections.abc import Callable, Collection

import attrs

from trioftp.client.targets import PARTIAL_SUFFIX
from trioftp.errors import TrioftpError

DEFAULT_CONCURRENCY = 16
# Left alone on the local side, never copied either way: a remote file of that
# name would land on the very path where a download of its sibling keeps its
# partial.
PARTIAL_REASON = f"a {PARTIAL_SUFFIX} name is the client's partial download, not copied"
# Worded alike for a local and a server's symlink: the direction says which side it is on.
FOLDER_LINK_REASON = "a symlink to a folder; not followed"
NOWHERE_REASON = "a symlink that leads nowhere"
# Listed by the server as "other": the name is taken, so it is kept and never copied over.
UNSERVED_REASON = "not served by the server (a FIFO or device, a link out or to nothing, or unreadable)"
# A folder the server lists but may not open: skipped as an unreadable file is; its name stays taken.
UNLISTABLE_REASON = "a folder the server may not read (permission denied); not copied"


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
    # Of bytes_done, each file's first report: a resume's offset, which moved at no speed now.
    bytes_resumed: int = 0
    # (done, total) of each file in flight, by path.
    file_bytes: dict[str, tuple[int, int]] = attrs.field(factory=dict)


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
            # One line each, as the skips below: a person must be able to find every one of them.
            each = [f"{shown(path)}: {_printable(str(error))}" for path, error in sorted(failures.items())]
            one, many = (
                ("entry", "entries") if any(path in folders for path in failures) else ("file", "files")
            )
            if len(each) == 1:
                parts.append(f"1 {one} failed: {each[0]}")
            else:
                parts.append(f"{len(each)} {many} failed:" + "".join(f"\n  {line}" for line in each))
        if skipped:
            # One line each: a person must be able to find every one of them.
            lines = "".join(f"\n  {shown(entry.path)}: {_printable(entry.reason)}" for entry in skipped)
            parts.append(f"{len(skipped)} skipped, not copied:{lines}")
        super().__init__("\n".join(parts))
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
    # Left out by the include/exclude rules (see rules.py): never copied, and on the target never deleted.
    excluded: frozenset[str] = frozenset()
