"""Open a name beneath a folder descriptor, never by path string.

A name that is checked and then used by path can be changed in between: a
folder swapped for a symlink that leads out, by a client's RENAME or by a
local user, sends the use somewhere the check never saw. Here the check is
the use: every name is opened relative to an open descriptor of the served
folder, and the kernel refuses any step out of it. Linux's openat2 with
RESOLVE_BENEATH does that in one call. Where openat2 is missing, and for an
absolute symlink (which RESOLVE_BENEATH refuses even when it points inside),
a walk opens one component at a time with O_NOFOLLOW and follows each link
by its text, from the folder that holds it, keeping the descriptors of the
folders it came through so that `..` can never climb above the base.

    fd = open_beneath(root_fd, "docs/report.pdf", os.O_RDONLY, base_path="/srv/files")
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections import deque
from collections.abc import Sequence

from trioftp.disk.syscalls import RESOLVE_BENEATH, RESOLVE_NO_MAGICLINKS, openat2

MAX_LINKS = 40  # as the kernel's own limit on links followed in one lookup (ELOOP past it)
_OPENAT2_RETRIES = 8  # EAGAIN: a rename raced with the lookup, and the kernel asks us to try again
_FOLDER = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class LeadsOutside(Exception):
    """The name, or a symlink on its way, leads outside the base folder."""


def open_beneath(
    base_fd: int,
    name: str,
    flags: int,
    *,
    mode: int = 0o644,
    follow: bool = True,
    base_path: str | Sequence[str] | None = None,
) -> int:
    """Open `name` (relative, `/`-separated; "" is the base itself) without leaving `base_fd`.

    Args:
        flags: as os.open; O_CLOEXEC is added.
        follow: follow a symlink in the last component (else it is opened itself, with
            O_PATH, or refused with ELOOP).
        base_path: the base folder's absolute path (or its paths: the real one and the one it
            was configured by, through a link), for absolute symlinks that lead back inside
            it; without it such links are refused. Only the text is compared: the rest of
            the link is then walked beneath `base_fd`, never by path.

    Raises:
        LeadsOutside: a `..` or a symlink on the way leads out of the base.
        OSError: as os.open (ENOENT, ENOTDIR, ELOOP for too many links, ...).
    """
    flags |= os.O_CLOEXEC | (0 if follow else os.O_NOFOLLOW)
    for _ in range(_OPENAT2_RETRIES):
        try:
            return openat2(base_fd, name or ".", flags, mode, RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)
        except NotImplementedError:
            break
        except OSError as exc:
            if exc.errno == errno.EXDEV:
                break  # a way out, or an absolute link that may lead back in: the walk tells which
            if exc.errno != errno.EAGAIN:
                raise
    return _walk(base_fd, name, flags, mode, base_path)


def beneath_path(text: str, base_path: str | Sequence[str] | None) -> str | None:
    """What follows the base in the absolute `text` ("" for the base itself); None if it is
    not under any of the base's paths."""
    paths = [base_path] if isinstance(base_path, str) else list(base_path or ())
    for path in paths:
        top = path.rstrip("/")
        if text == top or text.startswith(top + "/"):
            return text[len(top) :].lstrip("/")
    return None


def _walk(base_fd: int, name: str, flags: int, mode: int, base_path: str | Sequence[str] | None) -> int:
    parts = deque(part for part in name.split("/") if part not in ("", "."))
    folders = [os.dup(base_fd)]  # from the base down to the folder we are in; `..` pops
    links = 0
    try:
        while parts:
            part = parts.popleft()
            if part == "..":
                if len(folders) == 1:
                    raise LeadsOutside(name)
                os.close(folders.pop())
                continue
            here = folders[-1]
            text = _step(here, part, last=not parts, flags=flags, mode=mode, folders=folders)
            if isinstance(text, int):
                return text
            if text is None:
                continue
            links += 1
            if links > MAX_LINKS:
                raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), name)
            if text.startswith("/"):
                rest = beneath_path(text, base_path)
                if rest is None:
                    raise LeadsOutside(name)
                text = rest
                for fd in folders[1:]:
                    os.close(fd)
                del folders[1:]
            parts.extendleft(part for part in reversed(text.split("/")) if part not in ("", "."))
        return os.open(".", flags, mode, dir_fd=folders[-1])
    finally:
        for fd in folders:
            os.close(fd)


def _step(here: int, part: str, *, last: bool, flags: int, mode: int, folders: list[int]) -> int | str | None:
    """One component: the opened fd if it was the last, None if a folder was entered
    (pushed on `folders`), or the text of a symlink to follow."""
    try:
        if not last:
            folders.append(os.open(part, _FOLDER, dir_fd=here))
            return None
        fd = os.open(part, flags | os.O_NOFOLLOW, mode, dir_fd=here)
    except OSError as exc:
        if exc.errno not in (errno.ELOOP, errno.ENOTDIR) or (last and flags & os.O_NOFOLLOW):
            raise
        text = _link_text(here, part)
        if text is None:
            raise
        return text
    if flags & os.O_NOFOLLOW or not (flags & os.O_PATH and stat.S_ISLNK(os.fstat(fd).st_mode)):
        return fd
    os.close(fd)  # O_PATH without O_NOFOLLOW opened the link itself: follow it
    text = _link_text(here, part)
    if text is None:  # swapped for a plain entry meanwhile; it counts as a link, so this ends
        return part
    return text


def _link_text(folder: int, part: str) -> str | None:
    """The text of the symlink `part` in `folder`; None if it is not a symlink."""
    try:
        return os.readlink(part, dir_fd=folder)
    except OSError as exc:
        if exc.errno in (errno.EINVAL, errno.ENOENT):
            return None
        raise


def path_of_fd(fd: int) -> str | None:
    """The absolute path the kernel has for an open folder (for messages and absolute links only)."""
    with contextlib.suppress(OSError):
        return os.readlink(f"/proc/self/fd/{fd}")
    return None
