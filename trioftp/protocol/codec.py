"""Control payloads <-> messages, through one private, strict cattrs converter.

Control payloads are MessagePack maps keyed by field name (attrs order). DATA
payloads never come here: they are the frame body as is. Anything the converter
refuses (unknown or missing keys, wrong types, failed validators) becomes a
RemoteProtocolError; a bad name becomes a stream error BAD_NAME, because the
request is well-formed and only its name is refused.
"""

from __future__ import annotations

import enum
import functools
from typing import Any, get_args, get_origin

import attrs
import cattrs
import msgpack
from cattrs.preconf.msgpack import make_converter

from trioftp.protocol.errors import ErrorCode, RemoteProtocolError
from trioftp.protocol.frames import Frame, FrameType, encode_frame
from trioftp.protocol.messages import BY_FRAME_TYPE, MESSAGE_TYPES, Data, Hello, Message
from trioftp.protocol.names import BadName


def _strict(kind: type[Any]) -> Any:
    # cattrs' defaults coerce ("12" -> 12, 1.9 -> 1, 0 -> False); the wire must
    # carry the declared type exactly, so these hooks only check.
    def structure(value: Any, _type: Any) -> Any:
        if type(value) is not kind:
            raise TypeError(f"expected {kind.__name__}, got {type(value).__name__}")
        return value

    return structure


def _check_int(value: Any) -> int:
    if type(value) is not int:
        raise TypeError(f"expected int, got {type(value).__name__}")
    return value


def _strict_tuple(converter: cattrs.Converter) -> Any:
    def structure(value: Any, kind: Any) -> tuple[Any, ...]:
        if type(value) is not list:
            raise TypeError(f"expected array, got {type(value).__name__}")
        (item, _ellipsis) = get_args(kind)
        return tuple(converter.structure(element, item) for element in value)

    return structure


def _is_tuple(kind: object) -> bool:
    return get_origin(kind) is tuple


def _make_converter() -> cattrs.Converter:
    converter = make_converter(forbid_extra_keys=True)
    for kind in (int, str, bool, bytes):
        converter.register_structure_hook(kind, _strict(kind))
    # IntEnum is an int subclass, so without this the int hook above would take it.
    converter.register_structure_hook(ErrorCode, lambda value, _: ErrorCode(_check_int(value)))
    # cattrs builds a tuple from any iterable, so "blake3" would become six digests
    # and a map its keys: a tuple field must come as a MessagePack array.
    converter.register_structure_hook_func(_is_tuple, _strict_tuple(converter))
    for cls in MESSAGE_TYPES:
        if cls is Data:
            continue
        converter.register_unstructure_hook(cls, _unstructure_without_stream(converter, cls))
    return converter


def _unstructure_without_stream(converter: cattrs.Converter, cls: type[Any]) -> Any:
    from cattrs.gen import make_dict_unstructure_fn, override

    return make_dict_unstructure_fn(cls, converter, stream_id=override(omit=True))


_converter = _make_converter()
_WIRE_FIELDS: dict[type[Any], frozenset[str]] = {
    cls: frozenset(a.name for a in attrs.fields(cls) if a.name != "stream_id") for cls in MESSAGE_TYPES
}
_packer = msgpack.Packer(use_bin_type=True)


def encode_message(message: Message) -> bytes:
    """Return the whole frame (header and payload) for `message`."""
    if isinstance(message, Data):
        return encode_frame(FrameType.DATA, message.stream_id, message.payload)
    if isinstance(message, Hello):
        return _encode_hello(message)
    payload = _packer.pack(_converter.unstructure(message))
    return encode_frame(message.FRAME_TYPE, message.stream_id, payload)


# Every connection sends and receives a HELLO, and a server's (or a client's) is the same
# bytes each time: cattrs' strict structuring of one cost ~25 us per connection.
# HELLO is frozen, so one object can stand for every connection that sent the same bytes.
HELLO_CACHE = 64


@functools.lru_cache(maxsize=HELLO_CACHE)
def _encode_hello(message: Hello) -> bytes:
    payload = _packer.pack(_converter.unstructure(message))
    return encode_frame(message.FRAME_TYPE, message.stream_id, payload)


@functools.lru_cache(maxsize=HELLO_CACHE)
def _decode_hello(payload: bytes, stream_id: int) -> Message:
    return _decode(Frame(FrameType.HELLO, stream_id, payload), Hello)


def decode_message(frame: Frame) -> Message:
    """Return the message a frame carries.

    Raises:
        RemoteProtocolError: the payload is not a valid message of the frame's
            type; `stream_id` and `error_code` say what the answer should be.
    """
    if frame.type is FrameType.DATA:
        return Data(payload=frame.payload, stream_id=_data_stream(frame))
    cls = BY_FRAME_TYPE[frame.type]
    if cls is Hello:
        return _decode_hello(bytes(frame.payload), frame.stream_id)
    return _decode(frame, cls)


def _decode(frame: Frame, cls: type[Any]) -> Message:
    flat = _FLAT.get(cls)
    try:
        if flat is None:
            fields = msgpack.unpackb(
                frame.payload, raw=False, strict_map_key=True, object_pairs_hook=_string_keyed_map
            )
        else:
            # A flat map (no map inside): no Python call per map, and _string_keyed_map's
            # checks made after: keys are str (strict_map_key lets bin through too), each
            # once (the map's own count against the keys it left).
            fields = msgpack.unpackb(frame.payload, raw=False, strict_map_key=True)
            if type(fields) is dict and (
                len(fields) != _map_count(frame.payload) or any(type(key) is not str for key in fields)
            ):
                raise ValueError("map keys must be distinct strings")
    except Exception as exc:  # msgpack raises several unrelated types
        raise RemoteProtocolError(
            f"{frame.type.name} payload is not valid MessagePack: {exc}", stream_id=frame.stream_id
        ) from None
    if not isinstance(fields, dict):
        raise RemoteProtocolError(f"{frame.type.name} payload must be a map", stream_id=frame.stream_id)
    if cls is Hello:
        # HELLO is where a later version adds fields: a receiver ignores keys it
        # does not know (spec 5.2). Every other map is closed.
        fields = {
            key: value for key, value in fields.items() if key in _WIRE_FIELDS[cls] or key == "stream_id"
        }
    missing = _WIRE_FIELDS[cls] - fields.keys()
    if missing:
        # Defaults are for building messages in code; on the wire every field is
        # sent, so a missing one means a peer that speaks another dialect.
        raise RemoteProtocolError(
            f"{frame.type.name} payload lacks {', '.join(sorted(missing))}", stream_id=frame.stream_id
        )
    if "stream_id" in fields:
        raise RemoteProtocolError(
            "stream_id belongs in the frame header, not the payload", stream_id=frame.stream_id
        )
    fields["stream_id"] = frame.stream_id
    try:
        return _converter.structure(fields, cls)  # type: ignore[no-any-return]
    except Exception as exc:
        raise _translate(exc, frame) from None


# What each field of a flat message may be on the wire, checked as strictly as the cattrs
# hooks above do (exact types, no coercion); the class's own validators run in __init__.
# The hot messages (GET, FILE_INFO, END, ...) are structured by one such loop, registered
# as the converter's hook for their class: cattrs' generated code with a hook call per
# field cost ~2-3 us more per message (bench/RESULTS.md, issue 13).
_Check = tuple[str, tuple[type[Any], ...], Any]


def _field_check(name: str, kind: Any) -> _Check:
    if kind in (int, str, bytes, bool):
        return name, (kind,), None
    if kind == int | None:
        return name, (int, type(None)), None
    if kind == bytes | None:
        return name, (bytes, type(None)), None
    if kind is ErrorCode:
        return name, (int,), ErrorCode
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        return name, (), kind  # any type: the enum's own lookup refuses what is not a member
    raise TypeError(f"{name}: {kind!r} is not a flat field type")


def _flat_checks(cls: type[Any]) -> tuple[_Check, ...] | None:
    try:
        return tuple(_field_check(f.name, f.type) for f in attrs.fields(attrs.resolve_types(cls)))
    except TypeError:
        return None  # tuples, nested messages: cattrs


_FLAT: dict[type[Any], tuple[_Check, ...]] = {
    cls: checks for cls in MESSAGE_TYPES if cls not in (Data, Hello) and (checks := _flat_checks(cls))
}


def _flat_hook(checks: tuple[_Check, ...]) -> Any:
    def structure(fields: dict[str, Any], cls: type[Any]) -> Message:
        return _structure_flat(cls, checks, fields)

    return structure


for _cls, _checks in _FLAT.items():
    _converter.register_structure_hook(_cls, _flat_hook(_checks))


def _structure_flat(cls: type[Any], checks: tuple[_Check, ...], fields: dict[str, Any]) -> Message:
    for name, allowed, convert in checks:
        value = fields[name]
        if allowed and type(value) not in allowed:
            expected = " or ".join("nil" if t is type(None) else t.__name__ for t in allowed)
            raise TypeError(f"{name}: expected {expected}, got {type(value).__name__}")
        if convert is not None:
            fields[name] = convert(value)
    return cls(**fields)  # type: ignore[no-any-return]


def _map_count(payload: bytes) -> int:
    """The number of pairs a MessagePack map's header announces (-1: not a map header)."""
    first = payload[0] if payload else 0
    if 0x80 <= first <= 0x8F:
        return first & 0x0F
    if first == 0xDE:
        return int.from_bytes(payload[1:3], "big")
    if first == 0xDF:
        return int.from_bytes(payload[1:5], "big")
    return -1


def _string_keyed_map(pairs: list[tuple[Any, Any]]) -> dict[str, Any]:
    # Field names are MessagePack str, each once; a bin key would also break
    # cattrs' own error messages, which expect str.
    fields = dict(pairs)
    if len(fields) != len(pairs) or any(type(key) is not str for key in fields):
        raise ValueError("map keys must be distinct strings")
    return fields


def _data_stream(frame: Frame) -> int:
    if frame.stream_id == 0:
        raise RemoteProtocolError("DATA on stream 0")
    return frame.stream_id


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for sub in exc.exceptions for leaf in _leaves(sub)]
    return [exc]


def _translate(exc: Exception, frame: Frame) -> RemoteProtocolError:
    leaves = _leaves(exc)
    reason = "; ".join(f"{type(leaf).__name__}: {leaf}" for leaf in leaves)
    if any(isinstance(leaf, BadName) for leaf in leaves) and frame.stream_id != 0:
        return RemoteProtocolError(
            f"bad name in {frame.type.name}: {reason}",
            error_code=ErrorCode.BAD_NAME,
            stream_id=frame.stream_id,
        )
    return RemoteProtocolError(f"invalid {frame.type.name} payload: {reason}", stream_id=frame.stream_id)
