"""The rules for names on the wire: UTF-8, relative, POSIX, no tricks.

A name is checked where a message is built, so a message with a bad name cannot
exist; the storage layer checks again against the real folder (symlinks).
"""

from __future__ import annotations

import re

MAX_SEGMENT_BYTES = 255
MAX_PATH_BYTES = 1024


class BadName(ValueError):
    """A name that the protocol refuses (protocol_spec.md, "Names")."""


# Control characters hide in logs and terminals; backslash is a separator on
# Windows clients, so a name with one would mean different files on each side.
_FORBIDDEN_CHAR = re.compile(r"[\x00-\x1f\x7f\\]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def check_path(name: str, *, allow_root: bool = False) -> str:
    """Return `name` if it is a valid relative POSIX path, else raise BadName.

    Args:
        name: the path as sent on the wire.
        allow_root: whether "" (the served root itself) is accepted; it is for
            folder operations such as LIST.

    Raises:
        BadName: with the reason, for absolute paths, empty, "." or ".."
            segments, control characters, backslashes, and over-long names.
    """
    if not isinstance(name, str):
        raise BadName(f"name must be a string, not {type(name).__name__}")
    if name == "":
        if allow_root:
            return name
        raise BadName("name is empty")
    if len(name) > MAX_PATH_BYTES // 4:  # shorter names cannot be over the limit in UTF-8
        encoded_len = len(name.encode("utf-8", "surrogatepass"))
        if encoded_len > MAX_PATH_BYTES:
            raise BadName(f"name is {encoded_len} bytes, over the limit of {MAX_PATH_BYTES}")
    if _SURROGATE.search(name):
        raise BadName("name is not valid UTF-8 (lone surrogate)")
    if name.startswith("/"):
        raise BadName(f"absolute path refused: {name!r}")
    for segment in name.split("/"):
        check_segment(segment, whole=name)
    return name


def check_segment(segment: str, *, whole: str | None = None) -> str:
    """Return `segment` if it is a valid single path segment, else raise BadName."""
    if segment == "":
        raise BadName(f"empty path segment{_where(whole)}")
    if segment in (".", ".."):
        raise BadName(f"{segment!r} segment refused{_where(whole)}")
    if "/" in segment:
        raise BadName(f"'/' inside a single name {segment!r}")
    if _FORBIDDEN_CHAR.search(segment):
        raise BadName(f"control character or backslash{_where(whole) or ' in ' + repr(segment)}")
    # Only a segment of more than 63 characters can be over 255 UTF-8 bytes.
    long = len(segment) > MAX_SEGMENT_BYTES // 4
    if long and len(segment.encode("utf-8", "surrogatepass")) > MAX_SEGMENT_BYTES:
        raise BadName(f"path segment over {MAX_SEGMENT_BYTES} bytes{_where(whole)}")
    return segment


def _where(whole: str | None) -> str:
    return f" in {whole!r}" if whole is not None else ""
