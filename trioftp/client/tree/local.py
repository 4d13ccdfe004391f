"""The walk of a local folder: what is copied, and what is left alone (never opened, never followed)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from trioftp.client.targets import PARTIAL_SUFFIX
from trioftp.client.tree.model import (
    FOLDER_LINK_REASON,
    NOWHERE_REASON,
    PARTIAL_REASON,
    FileState,
    TreeScan,
    _join,
)
from trioftp.protocol.names import BadName, check_path


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
