"""Property tests of the frame layer, the codec and the name rules."""

from __future__ import annotations

import types
import typing
from typing import Any

import attrs
import msgpack
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from trioftp.protocol.codec import decode_message, encode_message
from trioftp.protocol.connection import NEED_DATA, Connection, ConnectionState
from trioftp.protocol.errors import ErrorCode, FrameTooLarge, ProtocolError, RemoteProtocolError
from trioftp.protocol.frames import (
    HEADER,
    HEADER_SIZE,
    MAX_MAX_FRAME_SIZE,
    MAX_STREAM_ID,
    MIN_MAX_FRAME_SIZE,
    PREFACE,
    Frame,
    FrameDecoder,
    FrameType,
)
from trioftp.protocol.messages import (
    MAX_RIGHT_CHARS,
    MAX_RIGHTS,
    MAX_USER_CHARS,
    MESSAGE_TYPES,
    Auth,
    Authorized,
    Cancel,
    Data,
    Delete,
    Done,
    End,
    Entry,
    Error,
    FileInfo,
    Get,
    Goodbye,
    Hello,
    Kind,
    List,
    Listing,
    Mkdir,
    Put,
    Ready,
    Rename,
    Stat,
    Status,
    StatusInfo,
    Window,
)
from trioftp.protocol.names import MAX_PATH_BYTES, MAX_SEGMENT_BYTES, BadName, check_path, check_segment
from trioftp.protocol.state import Role

BIG = MAX_MAX_FRAME_SIZE  # a decoder limit no generated message reaches
# Timings vary with the load of the machine running the suite; the properties do not.
RELAXED: dict[str, Any] = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow]}

# ---------------------------------------------------------------- strategies

# Characters a name may hold: anything but control characters, "/", "\\" and
# surrogates (hypothesis' text() never produces surrogates).
_name_char = st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="/\\")
segments = st.text(_name_char, min_size=1, max_size=40).filter(
    lambda s: s not in (".", "..") and len(s.encode()) <= MAX_SEGMENT_BYTES
)
long_segments = st.builds(
    lambda c, n: c * n, st.sampled_from(["x", "é", "日", "😀"]), st.integers(1, 255)
).filter(lambda s: len(s.encode()) <= MAX_SEGMENT_BYTES)
paths = (
    st.lists(st.one_of(segments, long_segments), min_size=1, max_size=6)
    .map("/".join)
    .filter(lambda p: len(p.encode()) <= MAX_PATH_BYTES)
)
folders = st.one_of(st.just(""), paths)
u63 = st.integers(0, 2**63 - 1)
u31 = st.integers(1, 2**31 - 1)
stream_ids = st.integers(1, MAX_STREAM_ID)
digests = st.binary(min_size=1, max_size=64)
texts = st.text(max_size=64) | st.text(max_size=1024)
kinds = st.sampled_from(Kind)
target_kinds = st.sampled_from([Kind.FILE, Kind.DIR])  # what FILE_INFO may say: never "link"
entries = st.builds(Entry, name=segments, kind=kinds, size=u63, mtime_ns=u63)
# User names: no C0 control character and no DEL; C1 controls are allowed, as in names.
_user_char = st.characters(blacklist_categories=("Cs",)).filter(lambda c: c >= " " and c != "\x7f")
users = st.text(_user_char, min_size=1, max_size=20) | st.text(
    _user_char, min_size=MAX_USER_CHARS - 5, max_size=MAX_USER_CHARS
)
rights = st.lists(
    st.sampled_from(["read", "write", "delete", "list", "rename", "mkdir"])
    | st.text(min_size=1, max_size=MAX_RIGHT_CHARS),
    max_size=MAX_RIGHTS,
)

MESSAGE_STRATEGIES: dict[type[Any], st.SearchStrategy[Any]] = {
    Hello: st.builds(
        Hello,
        max_frame_size=u63,
        max_streams=u63,
        initial_window=u31,
        digests=st.lists(st.text(min_size=1, max_size=32), min_size=1, max_size=16),
        features=st.lists(st.text(min_size=1, max_size=64), max_size=32),
        agent=texts,
    ),
    Goodbye: st.builds(Goodbye, message=texts),
    Error: st.builds(
        Error, code=st.sampled_from(ErrorCode), message=texts, stream_id=st.integers(0, MAX_STREAM_ID)
    ),
    Cancel: st.builds(Cancel, message=texts, stream_id=stream_ids),
    Window: st.builds(Window, increment=u31, stream_id=stream_ids),
    Data: st.builds(Data, payload=st.binary(max_size=2048), stream_id=stream_ids),
    End: st.builds(End, size=u63, digest=digests, stream_id=stream_ids),
    Get: st.builds(Get, name=paths, offset=u63, length=st.none() | u63, stream_id=stream_ids),
    Put: st.builds(
        Put,
        name=paths,
        size=u63,
        digest=st.none() | digests,
        resume=st.booleans(),
        mtime_ns=st.none() | u63,
        stream_id=stream_ids,
    ),
    Ready: st.builds(Ready, offset=u63, stream_id=stream_ids),
    List: st.builds(List, folder=folders, stream_id=stream_ids),
    Listing: st.builds(
        Listing, entries=st.lists(entries, max_size=8), last=st.booleans(), stream_id=stream_ids
    ),
    Stat: st.builds(Stat, name=paths, stream_id=stream_ids),
    FileInfo: st.builds(
        FileInfo,
        name=paths,
        kind=target_kinds,
        size=u63,
        mtime_ns=u63,
        digest=st.none() | digests,
        stream_id=stream_ids,
    ),
    Delete: st.builds(Delete, name=paths, stream_id=stream_ids),
    Rename: st.builds(Rename, old=paths, new=paths, replace=st.booleans(), stream_id=stream_ids),
    Mkdir: st.builds(Mkdir, name=paths, stream_id=stream_ids),
    Done: st.builds(Done, stream_id=stream_ids),
    Auth: st.builds(Auth, user=users, password=texts),
    Authorized: st.builds(Authorized, user=users, rights=rights, admin=st.booleans()),
    Status: st.builds(Status, stream_id=stream_ids),
    StatusInfo: st.builds(
        StatusInfo,
        agent=texts,
        uptime_ms=u63,
        connections=u63,
        transfers=u63,
        bytes_received=u63,
        bytes_sent=u63,
        stream_id=stream_ids,
    ),
}
messages = st.one_of(*MESSAGE_STRATEGIES.values())
control_messages = st.one_of(*(s for cls, s in MESSAGE_STRATEGIES.items() if cls is not Data))


def test_there_is_a_strategy_for_every_message_type() -> None:
    assert set(MESSAGE_STRATEGIES) == set(MESSAGE_TYPES)


def decode_all(data: bytes, *, limit: int = BIG, pieces: list[bytes] | None = None) -> list[Any]:
    decoder = FrameDecoder(limit)
    out = []
    for piece in pieces if pieces is not None else [data]:
        decoder.feed(piece)
        while (frame := decoder.next_frame()) is not None:
            out.append(decode_message(frame))
    assert decoder.buffered == 0
    return out


# ---------------------------------------------------------------- round trip


@given(messages)
@settings(**RELAXED)
def test_encode_then_decode_gives_the_message(message: Any) -> None:
    data = encode_message(message)
    length, frame_type, flags, stream_id = HEADER.unpack_from(data)
    assert (length, frame_type, flags, stream_id) == (
        len(data) - HEADER_SIZE,
        message.FRAME_TYPE,
        0,
        message.stream_id,
    )
    assert decode_all(data) == [message]


@given(control_messages)
@settings(**RELAXED)
def test_payload_is_a_map_of_every_field_but_the_stream_id(message: Any) -> None:
    fields = msgpack.unpackb(encode_message(message)[HEADER_SIZE:], raw=False)
    assert list(fields) == [a.name for a in attrs.fields(type(message)) if a.name != "stream_id"]


@given(st.lists(messages, min_size=1, max_size=4))
@settings(**RELAXED, max_examples=60)
def test_split_at_every_byte_gives_the_same_messages(batch: list[Any]) -> None:
    data = b"".join(encode_message(m) for m in batch)
    assume(len(data) <= 3000)
    for cut in range(len(data) + 1):
        assert decode_all(data, pieces=[data[:cut], data[cut:]]) == batch
    assert decode_all(data, pieces=[data[i : i + 1] for i in range(len(data))]) == batch


@given(st.lists(messages, min_size=1, max_size=4), st.data())
@settings(**RELAXED, max_examples=60)
def test_connection_split_anywhere_gives_the_same_events(batch: list[Any], data: st.DataObject) -> None:
    """The same through a server Connection: preface, HELLO, then frames cut at random places."""
    client, server = Connection(Role.CLIENT), Connection(Role.SERVER)
    opening = client.initiate()
    wire = opening + b"".join(encode_message(m) for m in batch)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=6)))
    pieces = [wire[a:b] for a, b in zip([0, *cuts], [*cuts, len(wire)], strict=True) if a < b]  # b"" is EOF
    events = []
    try:
        for piece in pieces:
            server.receive_data(piece)
            while (event := server.next_event()) is not NEED_DATA:
                events.append(event)
                if isinstance(event, Hello):
                    server.send(server.settings.hello(digests=("blake3",)))
    except RemoteProtocolError:
        pass  # random messages are often not allowed here; what came before must match
    whole = Connection(Role.SERVER)
    whole.receive_data(wire)
    expected = []
    try:
        while (event := whole.next_event()) is not NEED_DATA:
            expected.append(event)
            if isinstance(event, Hello):
                whole.send(whole.settings.hello(digests=("blake3",)))
    except RemoteProtocolError:
        pass
    assert events == expected


# ------------------------------------------------------------------- strict


def _accepts(kind: Any, value: Any) -> bool:
    """Whether the wire type `kind` takes `value` as it is (no coercion)."""
    if kind in (int, str, bool, bytes):
        return type(value) is kind
    if kind is Kind:
        return type(value) is str
    if kind is ErrorCode:
        return type(value) is int
    origin = typing.get_origin(kind)
    if origin is tuple:
        return type(value) is list
    if origin in (typing.Union, types.UnionType):
        return any(
            _accepts(k, value) if k is not type(None) else value is None for k in typing.get_args(kind)
        )
    raise AssertionError(kind)


_wire_values = st.one_of(
    st.integers(-(2**63), 2**64 - 1),
    st.booleans(),
    st.none(),
    st.floats(allow_nan=False),
    st.text(max_size=10),
    st.binary(max_size=10),
    st.lists(st.integers(0, 3), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(0, 3), max_size=2),
)


@given(control_messages, st.data())
@settings(**RELAXED)
def test_a_value_of_another_type_is_refused(message: Any, data: st.DataObject) -> None:
    cls = type(message)
    attrs.resolve_types(cls)
    wire_fields = [a for a in attrs.fields(cls) if a.name != "stream_id"]
    assume(wire_fields)
    field = data.draw(st.sampled_from(wire_fields))
    value = data.draw(_wire_values.filter(lambda v: not _accepts(field.type, v)))
    fields = msgpack.unpackb(encode_message(message)[HEADER_SIZE:], raw=False)
    fields[field.name] = value
    frame = Frame(
        type=cls.FRAME_TYPE, stream_id=message.stream_id, payload=msgpack.packb(fields, use_bin_type=True)
    )
    try:
        decode_message(frame)
    except RemoteProtocolError as exc:
        assert exc.error_code is ErrorCode.PROTOCOL_ERROR
        assert exc.ends_connection
    else:
        raise AssertionError(f"{cls.__name__}.{field.name} took {value!r}")


@given(control_messages, st.data())
@settings(**RELAXED)
def test_a_missing_or_extra_field_is_refused(message: Any, data: st.DataObject) -> None:
    """Every map is closed but HELLO's, whose unknown keys are ignored (spec 5.2, v2.1)."""
    fields = msgpack.unpackb(encode_message(message)[HEADER_SIZE:], raw=False)
    extra = not (fields and data.draw(st.booleans()))
    if extra:
        key = data.draw(
            st.text(min_size=1, max_size=12).filter(lambda k: k not in fields and k != "stream_id")
        )
        fields[key] = data.draw(_wire_values)
    else:
        del fields[data.draw(st.sampled_from(sorted(fields)))]
    payload = msgpack.packb(fields, use_bin_type=True)
    frame = Frame(type=message.FRAME_TYPE, stream_id=message.stream_id, payload=payload)
    if extra and isinstance(message, Hello):
        assert decode_message(frame) == message
        return
    try:
        decode_message(frame)
    except RemoteProtocolError as exc:
        assert exc.error_code is ErrorCode.PROTOCOL_ERROR and exc.ends_connection
    else:
        raise AssertionError("decoded")


@given(control_messages)
@settings(**RELAXED)
def test_the_wrong_stream_kind_is_refused(message: Any) -> None:
    """Connection messages only on stream 0, stream messages never on it."""
    payload = encode_message(message)[HEADER_SIZE:]
    if isinstance(message, Hello | Goodbye | Auth | Authorized):
        wrong = 1
    elif isinstance(message, Error):
        return  # ERROR belongs on both
    else:
        wrong = 0
    try:
        decode_message(Frame(type=message.FRAME_TYPE, stream_id=wrong, payload=payload))
    except RemoteProtocolError as exc:
        assert exc.ends_connection
    else:
        raise AssertionError("decoded")


# ------------------------------------------------------------ frame decoder


@given(st.integers(MIN_MAX_FRAME_SIZE, MAX_MAX_FRAME_SIZE), st.data())
@settings(**RELAXED)
def test_oversize_length_is_refused_from_the_header_alone(limit: int, data: st.DataObject) -> None:
    length = data.draw(st.integers(limit + 1, 2**32 - 1))
    frame_type = data.draw(st.sampled_from(FrameType))
    decoder = FrameDecoder(limit)
    header = HEADER.pack(length, frame_type, 0, data.draw(st.integers(0, MAX_STREAM_ID)))
    decoder.feed(header[:-1])
    assert decoder.next_frame() is None
    decoder.feed(header[-1:])
    try:
        decoder.next_frame()
    except FrameTooLarge as exc:
        assert exc.error_code is ErrorCode.FRAME_TOO_LARGE and exc.ends_connection
    else:
        raise AssertionError("not refused")
    assert decoder.buffered == HEADER_SIZE


@given(st.integers(1, 2**32 - 1))
@settings(**RELAXED)
def test_connection_refuses_an_oversize_frame_after_ten_bytes(length: int) -> None:
    server = Connection(Role.SERVER)
    server.receive_data(PREFACE + HEADER.pack(length, FrameType.HELLO, 0, 0))
    if length <= MIN_MAX_FRAME_SIZE:
        assert server.next_event() is NEED_DATA
        return
    try:
        server.next_event()
    except FrameTooLarge:
        assert server.state is ConnectionState.ERROR
    else:
        raise AssertionError("not refused")


@given(
    st.integers(0, 4096),
    st.lists(st.integers(0, 4096), min_size=1, max_size=6),
    st.lists(st.integers(1, 5000), min_size=1, max_size=20),
)
@settings(**RELAXED)
def test_decoder_holds_less_than_one_frame_after_draining(
    limit_extra: int, lengths: list[int], chunks: list[int]
) -> None:
    """Complete frames are taken out at once; what stays is the start of one frame."""
    limit = 16 + limit_extra
    frames = [HEADER.pack(min(n, limit), FrameType.DATA, 0, 1) + b"x" * min(n, limit) for n in lengths]
    wire = b"".join(frames)
    decoder = FrameDecoder(limit)
    position = got = index = 0
    while position < len(wire):
        step = chunks[index % len(chunks)]
        index += 1
        decoder.feed(wire[position : position + step])
        position += step
        while (frame := decoder.next_frame()) is not None:
            assert len(frame.payload) == min(lengths[got], limit)
            got += 1
        assert decoder.buffered < max(HEADER_SIZE, limit)
    assert got == len(frames)
    assert decoder.buffered == 0


# ------------------------------------------------------------------ garbage


def _open_pair() -> tuple[Connection, Connection]:
    client, server = Connection(Role.CLIENT), Connection(Role.SERVER)
    server.receive_data(client.initiate())
    assert isinstance(server.next_event(), Hello)
    client.receive_data(server.send(server.settings.hello(digests=("blake3",))))
    assert isinstance(client.next_event(), Hello)
    return client, server


def _drain_expecting_only_remote_errors(machine: Connection) -> None:
    for _ in range(1000):
        try:
            if machine.next_event() is NEED_DATA:
                return
        except RemoteProtocolError as exc:
            if exc.ends_connection:
                # Sticky: the machine reads nothing more.
                try:
                    machine.next_event()
                except RemoteProtocolError:
                    return
                raise AssertionError("a connection error was not sticky") from None
        # anything else propagates and fails the test


@given(st.binary(max_size=300))
@settings(**RELAXED)
def test_garbage_from_the_first_byte_raises_only_remote_protocol_errors(garbage: bytes) -> None:
    server = Connection(Role.SERVER)
    server.receive_data(garbage)
    _drain_expecting_only_remote_errors(server)


_frame_types = st.one_of(st.sampled_from(FrameType), st.integers(0, 255))
_payloads = st.one_of(
    st.binary(max_size=40),
    st.builds(
        lambda v: msgpack.packb(v, use_bin_type=True),
        st.recursive(
            _wire_values,
            lambda inner: (
                st.lists(inner, max_size=3)
                | st.dictionaries(
                    st.text(max_size=8) | st.binary(max_size=3) | st.integers(0, 3), inner, max_size=6
                )
            ),
            max_leaves=10,
        ),
    ),
    control_messages.map(lambda m: encode_message(m)[HEADER_SIZE:]),
)
_raw_frames = st.builds(
    lambda t, flags, sid, payload: HEADER.pack(len(payload), t, flags, sid) + payload,
    _frame_types,
    st.sampled_from([0, 0, 0, 1, 0x80]),
    st.sampled_from([0, 1, 2, 3, 5, 2**31 - 1, 2**31]),
    _payloads,
)


@given(st.booleans(), st.lists(st.one_of(_raw_frames, messages.map(encode_message)), min_size=1, max_size=6))
@settings(**RELAXED, max_examples=300)
def test_garbage_frames_raise_only_remote_protocol_errors(after_requests: bool, frames: list[bytes]) -> None:
    client, server = _open_pair()
    if after_requests:
        server.receive_data(client.send(Put(name="a", size=10, stream_id=1)))
        server.receive_data(client.send(Get(name="b", stream_id=2)))
        assert isinstance(server.next_event(), Put) and isinstance(server.next_event(), Get)
    server.receive_data(b"".join(frames))
    _drain_expecting_only_remote_errors(server)


@given(st.lists(st.one_of(_raw_frames, messages.map(encode_message)), min_size=1, max_size=6))
@settings(**RELAXED, max_examples=200)
def test_garbage_to_a_client_raises_only_remote_protocol_errors(frames: list[bytes]) -> None:
    client, server = _open_pair()
    server.receive_data(client.send(Get(name="b", stream_id=1)))
    server.next_event()
    client.receive_data(b"".join(frames))
    _drain_expecting_only_remote_errors(client)


def test_protocol_errors_are_the_only_exception_family() -> None:
    assert issubclass(FrameTooLarge, RemoteProtocolError)
    assert issubclass(RemoteProtocolError, ProtocolError)


# -------------------------------------------------------------------- names


_interesting_chars = st.sampled_from(
    ["a", "b", ".", "/", "\\", "\x00", "\x1f", "\x7f", "\n", " ", "é", "日", "😀", "|", ":", "\ud800", "~"]
)
_any_names = st.one_of(
    st.lists(_interesting_chars, max_size=12).map("".join),
    st.lists(st.one_of(segments, long_segments, st.sampled_from(["", ".", ".."])), max_size=6).map("/".join),
    st.builds(lambda a, b: a + "/" + b, long_segments, paths),
    st.text(max_size=30),
)


def _rules_allow(name: str, *, allow_root: bool = False) -> bool:
    """The rules of protocol_spec.md section 13, written out independently."""
    if name == "":
        return allow_root
    if any(0xD800 <= ord(c) <= 0xDFFF for c in name):
        return False
    if len(name.encode("utf-8")) > 1024 or name.startswith("/"):
        return False
    for segment in name.split("/"):
        if segment in ("", ".", ".."):
            return False
        if any(ord(c) < 0x20 or ord(c) == 0x7F or c == "\\" for c in segment):
            return False
        if len(segment.encode("utf-8")) > 255:
            return False
    return True


def _accepted(name: str, *, allow_root: bool = False) -> bool:
    try:
        check_path(name, allow_root=allow_root)
    except BadName:
        return False
    return True


@given(_any_names, st.booleans())
@settings(**RELAXED, max_examples=500)
def test_check_path_accepts_exactly_what_the_rules_say(name: str, allow_root: bool) -> None:
    assert _accepted(name, allow_root=allow_root) == _rules_allow(name, allow_root=allow_root)


@given(paths)
@settings(**RELAXED)
def test_generated_paths_are_valid(name: str) -> None:
    assert check_path(name) == name


@given(st.lists(segments, max_size=3), st.lists(segments, max_size=3), st.sampled_from(["..", "."]))
@settings(**RELAXED)
def test_a_dot_segment_anywhere_is_refused(before: list[str], after: list[str], dots: str) -> None:
    assert not _accepted("/".join([*before, dots, *after]))


@given(paths)
@settings(**RELAXED)
def test_a_leading_slash_is_refused(name: str) -> None:
    assert not _accepted("/" + name)
    assert not _accepted("/" + name, allow_root=True)


@given(paths, st.sampled_from(["\x00", "\\", "\x01", "\x1b", "\x7f", "\r", "\n", "\t"]), st.data())
@settings(**RELAXED)
def test_a_control_character_or_backslash_anywhere_is_refused(
    name: str, bad: str, data: st.DataObject
) -> None:
    at = data.draw(st.integers(0, len(name)))
    assert not _accepted(name[:at] + bad + name[at:])


@given(paths)
@settings(**RELAXED)
def test_empty_segments_are_refused(name: str) -> None:
    assert not _accepted(name + "/")
    assert not _accepted(name.replace("/", "//", 1) if "/" in name else name + "//x")


def test_length_limits_are_in_utf8_bytes() -> None:
    assert _accepted("é" * 127 + "x")  # 255 bytes
    assert not _accepted("é" * 128)  # 256 bytes, only 128 characters
    exactly_1024 = "/".join(["p" * 255, "q" * 255, "r" * 255, "s" * 200, "t" * 55])
    assert len(exactly_1024.encode()) == 1024
    assert _accepted(exactly_1024)
    assert not _accepted(exactly_1024 + "u")
    assert not _accepted("é" * 100 + "/" + "é" * 100 + "/" + "é" * 100 + "/" + "é" * 100 + "/" + "é" * 113)


def test_root_only_where_allowed() -> None:
    assert not _accepted("")
    assert _accepted("", allow_root=True)
    assert not _accepted("/", allow_root=True)


@given(segments)
@settings(**RELAXED)
def test_check_segment_refuses_a_slash(segment: str) -> None:
    assert check_segment(segment) == segment
    try:
        check_segment(segment + "/" + segment)
    except BadName:
        pass
    else:
        raise AssertionError("a '/' inside a segment was accepted")


# --------------------------------------------------------------- user names


_any_users = st.one_of(
    st.text(max_size=12),
    st.lists(
        st.sampled_from(["a", "é", " ", "\x00", "\x1f", "\x7f", "\x85", "\n", "/", ":"]), max_size=6
    ).map("".join),
    st.builds(lambda c, n: c * n, st.sampled_from(["u", "日"]), st.integers(250, 260)),
)


def _user_rules_allow(user: str) -> bool:
    """Section 5.3's `user` type, written out independently."""
    return 1 <= len(user) <= 255 and not any(ord(c) < 0x20 or ord(c) == 0x7F for c in user)


@given(_any_users)
@settings(**RELAXED)
def test_user_names_accepted_exactly_when_the_rules_say(user: str) -> None:
    try:
        Auth(user=user, password="")
    except ValueError:
        accepted = False
    else:
        accepted = True
    assert accepted == _user_rules_allow(user)
    if not accepted:
        payload = msgpack.packb({"user": user, "password": ""}, use_bin_type=True)
        try:
            decode_message(Frame(type=FrameType.AUTH, stream_id=0, payload=payload))
        except RemoteProtocolError as exc:
            # A user name is not a path: a bad one is a connection error, never BAD_NAME.
            assert exc.error_code is ErrorCode.PROTOCOL_ERROR and exc.ends_connection
        else:
            raise AssertionError(f"AUTH with user {user!r} decoded")


@given(texts)
@settings(**RELAXED)
def test_the_password_stays_out_of_repr(password: str) -> None:
    auth = Auth(user="alice", password=password)
    assert repr(auth) == "Auth(user='alice', stream_id=0)"
    assert decode_all(encode_message(auth)) == [auth]  # ... but not out of the wire, nor equality
    assert auth != Auth(user="alice", password=password + "x")
