"""The v2 messages: frozen attrs classes, validated, with no serialization code.

Each class names its frame type in `FRAME_TYPE`. `stream_id` travels in the
frame header, never in the payload. A message with a bad name, a negative size
or an out-of-range number cannot be constructed.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from typing import Any, ClassVar

import attrs
from attrs import field, frozen

from trioftp.protocol.errors import ErrorCode
from trioftp.protocol.frames import MAX_STREAM_ID, FrameType
from trioftp.protocol.names import check_path, check_segment

U63 = 2**63 - 1
U31 = 2**31 - 1
MAX_DIGEST_BYTES = 64
MAX_TEXT_CHARS = 1024
MAX_USER_CHARS = 255
MAX_RIGHTS = 16
MAX_RIGHT_CHARS = 32
MAX_DIGEST_NAMES = 16
MAX_DIGEST_NAME_CHARS = 32
MAX_FEATURES = 32
MAX_FEATURE_CHARS = 64

# HELLO features a server lists (protocol_spec.md, "Authentication").
FEATURE_V2_1 = "v2.1"  # this side follows v2.1's rules (spec "Changes"): pipelining, unknown frames...
FEATURE_AUTH = "auth"  # the server has users and accepts AUTH
FEATURE_ANONYMOUS = "anonymous"  # the server also serves clients that send no AUTH
FEATURE_ENTRY_KINDS = "entry-kinds"  # the client reads Entry kinds "link" and "other" (spec 11.3)


def _u63(_inst: Any, attribute: attrs.Attribute[Any], value: int) -> None:
    if not 0 <= value <= U63:
        raise ValueError(f"{attribute.name} must be in 0..2**63-1, got {value}")


def _optional_u63(inst: Any, attribute: attrs.Attribute[Any], value: int | None) -> None:
    if value is not None:
        _u63(inst, attribute, value)


def _window_increment(_inst: Any, attribute: attrs.Attribute[Any], value: int) -> None:
    if not 1 <= value <= U31:
        raise ValueError(f"{attribute.name} must be in 1..2**31-1, got {value}")


def _path(_inst: Any, _attribute: attrs.Attribute[Any], value: str) -> None:
    check_path(value)


def _folder(_inst: Any, _attribute: attrs.Attribute[Any], value: str) -> None:
    check_path(value, allow_root=True)


def _segment(_inst: Any, _attribute: attrs.Attribute[Any], value: str) -> None:
    check_segment(value)


def _digest(_inst: Any, attribute: attrs.Attribute[Any], value: bytes | None) -> None:
    if value is not None and not 1 <= len(value) <= MAX_DIGEST_BYTES:
        raise ValueError(f"{attribute.name} must be 1..{MAX_DIGEST_BYTES} bytes")


def _text(_inst: Any, attribute: attrs.Attribute[Any], value: str) -> None:
    if len(value) > MAX_TEXT_CHARS:
        raise ValueError(f"{attribute.name} is over {MAX_TEXT_CHARS} characters")


def _user_name(_inst: Any, attribute: attrs.Attribute[Any], value: str) -> None:
    if not 1 <= len(value) <= MAX_USER_CHARS or any(ch < " " or ch == "\x7f" for ch in value):
        raise ValueError(
            f"{attribute.name} must be 1..{MAX_USER_CHARS} characters without control characters"
        )


def _strings(value: Iterable[str]) -> tuple[str, ...]:
    return tuple(value)


def _entries(value: Iterable[Entry]) -> tuple[Entry, ...]:
    return tuple(value)


def _stream_id(_inst: Any, _attribute: attrs.Attribute[Any], value: int) -> None:
    if not 0 <= value <= MAX_STREAM_ID:
        raise ValueError(f"stream_id must be in 0..2**31-1, got {value}")


def _request_stream(_inst: Any, _attribute: attrs.Attribute[Any], value: int) -> None:
    if not 1 <= value <= MAX_STREAM_ID:
        raise ValueError(f"a stream message needs a stream_id in 1..2**31-1, got {value}")


def _connection_stream(_inst: Any, _attribute: attrs.Attribute[Any], value: int) -> None:
    if value != 0:
        raise ValueError(f"a connection message belongs on stream 0, not {value}")


def _stream_field() -> Any:
    return field(validator=_request_stream, kw_only=True)


class Kind(enum.Enum):
    FILE = "file"
    DIR = "dir"
    LINK = "link"  # in a LISTING only: a symbolic link (STAT says what it leads to)
    OTHER = "other"  # in a LISTING only: there, but not served (a FIFO, a link out or to nothing, ...)


def _not_link(_inst: Any, _attribute: attrs.Attribute[Any], value: Kind) -> None:
    if value in (Kind.LINK, Kind.OTHER):
        raise ValueError("FILE_INFO describes what a name leads to: its kind is file or dir")


@frozen
class Hello:
    """Each side's limits and features; the first frame each side sends, on stream 0.

    The client lists the digest algorithms it accepts, most preferred first; the
    server answers with exactly one, the one this connection uses.
    """

    FRAME_TYPE: ClassVar[FrameType] = FrameType.HELLO
    max_frame_size: int = field(validator=_u63)
    max_streams: int = field(validator=_u63)
    initial_window: int = field(validator=_window_increment)
    digests: tuple[str, ...] = field(converter=_strings)
    features: tuple[str, ...] = field(default=(), converter=_strings)
    agent: str = field(default="", validator=_text)
    stream_id: int = field(default=0, kw_only=True, validator=_connection_stream)

    @digests.validator
    def _check_digests(self, _attribute: attrs.Attribute[Any], value: tuple[str, ...]) -> None:
        if not 1 <= len(value) <= MAX_DIGEST_NAMES:
            raise ValueError(f"digests must name 1 to {MAX_DIGEST_NAMES} algorithms")
        _check_names("digests", value, MAX_DIGEST_NAME_CHARS)

    @features.validator
    def _check_features(self, _attribute: attrs.Attribute[Any], value: tuple[str, ...]) -> None:
        if len(value) > MAX_FEATURES:
            raise ValueError(f"features may name at most {MAX_FEATURES}")
        _check_names("features", value, MAX_FEATURE_CHARS)


def _check_names(what: str, names: tuple[str, ...], longest: int) -> None:
    for name in names:
        if not 1 <= len(name) <= longest:
            raise ValueError(f"each of {what} must be 1..{longest} characters")


@frozen
class Goodbye:
    """The sender opens (client) or accepts (server) no new streams; streams in flight finish."""

    FRAME_TYPE: ClassVar[FrameType] = FrameType.GOODBYE
    message: str = field(default="", validator=_text)
    stream_id: int = field(default=0, kw_only=True, validator=_connection_stream)


@frozen
class Auth:
    """The client's credentials, on stream 0, once, before its first request."""

    FRAME_TYPE: ClassVar[FrameType] = FrameType.AUTH
    user: str = field(validator=_user_name)
    password: str = field(validator=_text, repr=False)
    stream_id: int = field(default=0, kw_only=True, validator=_connection_stream)


@frozen
class Authorized:
    """The server accepts AUTH: who the client is now, and what it may do."""

    FRAME_TYPE: ClassVar[FrameType] = FrameType.AUTHORIZED
    user: str = field(validator=_user_name)
    rights: tuple[str, ...] = field(converter=_strings)
    admin: bool = False
    stream_id: int = field(default=0, kw_only=True, validator=_connection_stream)

    @rights.validator
    def _check_rights(self, _attribute: attrs.Attribute[Any], value: tuple[str, ...]) -> None:
        if len(value) > MAX_RIGHTS or any(not 1 <= len(right) <= MAX_RIGHT_CHARS for right in value):
            raise ValueError(f"rights must be at most {MAX_RIGHTS} names of 1..{MAX_RIGHT_CHARS} characters")


@frozen
class Error:
    """A failure: on stream 0 it ends the connection, on a stream it ends that stream."""

    FRAME_TYPE: ClassVar[FrameType] = FrameType.ERROR
    code: ErrorCode
    message: str = field(default="", validator=_text)
    stream_id: int = field(default=0, kw_only=True, validator=_stream_id)


@frozen
class Cancel:
    """Either side abandons a stream; frames for it that are already in flight are ignored."""

    FRAME_TYPE: ClassVar[FrameType] = FrameType.CANCEL
    message: str = field(default="", validator=_text)
    stream_id: int = _stream_field()


@frozen
class Window:
    """The receiver of DATA grants the sender `increment` more payload bytes on a stream."""

    FRAME_TYPE: ClassVar[FrameType] = FrameType.WINDOW
    increment: int = field(validator=_window_increment)
    stream_id: int = _stream_field()


@frozen
class Data:
    """Raw file bytes. Never passes through the converter: the payload is the frame body."""

    FRAME_TYPE: ClassVar[FrameType] = FrameType.DATA
    payload: bytes
    stream_id: int = _stream_field()


@frozen
class End:
    """The data sender's last frame: the whole file's size and digest."""

    FRAME_TYPE: ClassVar[FrameType] = FrameType.END
    size: int = field(validator=_u63)
    digest: bytes = field(validator=_digest)
    stream_id: int = _stream_field()


@frozen
class Get:
    """Download `name` from `offset`; `length` None means to the end of the file."""

    FRAME_TYPE: ClassVar[FrameType] = FrameType.GET
    name: str = field(validator=_path)
    offset: int = field(default=0, validator=_u63)
    length: int | None = field(default=None, validator=_optional_u63)
    stream_id: int = _stream_field()


@frozen
class Put:
    """Upload `size` bytes to `name`.

    `digest`, when the client knows it up front, lets the server answer "an
    identical file is already here" at once. `resume` asks the server to keep
    going from a partial upload of the same name, size and digest.
    """

    FRAME_TYPE: ClassVar[FrameType] = FrameType.PUT
    name: str = field(validator=_path)
    size: int = field(validator=_u63)
    digest: bytes | None = field(default=None, validator=_digest)
    resume: bool = False
    mtime_ns: int | None = field(default=None, validator=_optional_u63)
    stream_id: int = _stream_field()


@frozen
class Ready:
    """The server accepts a PUT; the client sends the bytes from `offset` on."""

    FRAME_TYPE: ClassVar[FrameType] = FrameType.READY
    offset: int = field(validator=_u63)
    stream_id: int = _stream_field()


@frozen
class List:
    """List one folder ("" is the served root)."""

    FRAME_TYPE: ClassVar[FrameType] = FrameType.LIST
    folder: str = field(default="", validator=_folder)
    stream_id: int = _stream_field()


@frozen
class Entry:
    """One item of a LISTING: a name inside the listed folder."""

    name: str = field(validator=_segment)
    kind: Kind
    size: int = field(validator=_u63)
    mtime_ns: int = field(validator=_u63)


@frozen
class Listing:
    """Part of a folder listing; `last` marks the final part."""

    FRAME_TYPE: ClassVar[FrameType] = FrameType.LISTING
    entries: tuple[Entry, ...] = field(converter=_entries)
    last: bool = True
    stream_id: int = _stream_field()


@frozen
class Stat:
    FRAME_TYPE: ClassVar[FrameType] = FrameType.STAT
    name: str = field(validator=_path)
    stream_id: int = _stream_field()


@frozen
class FileInfo:
    """A file or folder's facts. `digest` is the whole file's, in the agreed algorithm."""

    FRAME_TYPE: ClassVar[FrameType] = FrameType.FILE_INFO
    name: str = field(validator=_path)
    kind: Kind = field(validator=_not_link)
    size: int = field(validator=_u63)
    mtime_ns: int = field(validator=_u63)
    digest: bytes | None = field(default=None, validator=_digest)
    stream_id: int = _stream_field()


@frozen
class Delete:
    FRAME_TYPE: ClassVar[FrameType] = FrameType.DELETE
    name: str = field(validator=_path)
    stream_id: int = _stream_field()


@frozen
class Rename:
    """Rename `old` to `new`; an existing `new` is replaced only if `replace`."""

    FRAME_TYPE: ClassVar[FrameType] = FrameType.RENAME
    old: str = field(validator=_path)
    new: str = field(validator=_path)
    replace: bool = False
    stream_id: int = _stream_field()


@frozen
class Mkdir:
    """Create a folder and any missing parents; an existing folder is success."""

    FRAME_TYPE: ClassVar[FrameType] = FrameType.MKDIR
    name: str = field(validator=_path)
    stream_id: int = _stream_field()


@frozen
class Status:
    """Ask for the server's version, uptime and load (admins only when the server has users)."""

    FRAME_TYPE: ClassVar[FrameType] = FrameType.STATUS
    stream_id: int = _stream_field()


@frozen
class StatusInfo:
    """The answer to STATUS."""

    FRAME_TYPE: ClassVar[FrameType] = FrameType.STATUS_INFO
    agent: str = field(validator=_text)
    uptime_ms: int = field(validator=_u63)
    connections: int = field(validator=_u63)
    transfers: int = field(validator=_u63)
    bytes_received: int = field(validator=_u63)
    bytes_sent: int = field(validator=_u63)
    stream_id: int = _stream_field()


@frozen
class Done:
    """Success of DELETE, RENAME or MKDIR."""

    FRAME_TYPE: ClassVar[FrameType] = FrameType.DONE
    stream_id: int = _stream_field()


Message = (
    Hello
    | Goodbye
    | Error
    | Cancel
    | Window
    | Data
    | End
    | Get
    | Put
    | Ready
    | List
    | Listing
    | Stat
    | FileInfo
    | Delete
    | Rename
    | Mkdir
    | Done
    | Auth
    | Authorized
    | Status
    | StatusInfo
)

MESSAGE_TYPES: tuple[type[Any], ...] = (
    Hello, Goodbye, Error, Cancel, Window, Data, End, Get, Put, Ready,
    List, Listing, Stat, FileInfo, Delete, Rename, Mkdir, Done,
    Auth, Authorized, Status, StatusInfo,
)  # fmt: skip
BY_FRAME_TYPE: dict[FrameType, type[Any]] = {cls.FRAME_TYPE: cls for cls in MESSAGE_TYPES}
REQUEST_TYPES: tuple[type[Any], ...] = (Get, Put, List, Stat, Delete, Rename, Mkdir, Status)
