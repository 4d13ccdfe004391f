"""Read, run and write the test vectors of protocol_spec.md.

The spec holds its vectors in fenced blocks tagged `vector`; each block is one
vector, a list of `key: value` lines (the format is described in the spec,
"Test vectors"). `test_spec_vectors.py` runs them against the code;
`gen_spec_vectors.py` writes them by running the code, so the hex in the spec
always comes from the real encoder.
"""

from __future__ import annotations

import contextlib
import enum
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import msgpack

from trioftp.protocol import legacy_codec as legacy
from trioftp.protocol import messages
from trioftp.protocol.codec import decode_message, encode_message
from trioftp.protocol.connection import NEED_DATA, PEER_CLOSED, Connection, ConnectionState, Settings
from trioftp.protocol.errors import ErrorCode, LocalProtocolError, RemoteProtocolError
from trioftp.protocol.frames import HEADER_SIZE, PREFACE, FrameDecoder, FrameType
from trioftp.protocol.names import BadName, check_path
from trioftp.protocol.sniff import Dialect, sniff
from trioftp.protocol.state import STREAM_TRANSITIONS, Role

SPEC = Path(__file__).resolve().parents[2] / "protocol_spec.md"
DEFAULT_FRAME_LIMIT = Settings().max_frame_size

# Everything a vector's expressions may name.
NAMESPACE: dict[str, Any] = {cls.__name__: cls for cls in messages.MESSAGE_TYPES}
NAMESPACE.update(
    Entry=messages.Entry,
    Kind=messages.Kind,
    ErrorCode=ErrorCode,
    Settings=Settings,
    Header=legacy.Header,
    Command=legacy.Command,
    Dialect=Dialect,
    NEED_DATA=NEED_DATA,
    PEER_CLOSED=PEER_CLOSED,
    bytes=bytes,
)
NAMESPACE["__builtins__"] = {}

_BLOCK = re.compile(r"^```vector[ \t]*\n(.*?)^```[ \t]*$", re.DOTALL | re.MULTILINE)
_ERROR = re.compile(r"^([A-Z_]+) (connection|stream (\d+))$")


@attrs.frozen
class Vector:
    name: str
    kind: str
    lines: tuple[tuple[str, str], ...]  # every `key: value` line, in order
    line_number: int  # of the opening fence in the spec

    def get(self, key: str, default: str | None = None) -> str | None:
        values = [value for k, value in self.lines if k == key]
        if len(values) > 1:
            raise ValueError(f"vector {self.name}: {key} given {len(values)} times")
        return values[0] if values else default

    def require(self, key: str) -> str:
        value = self.get(key)
        if value is None:
            raise ValueError(f"vector {self.name}: no {key}")
        return value


# ------------------------------------------------------------------ parsing


def parse(text: str) -> list[Vector]:
    """Every vector block in `text`, in order."""
    vectors = []
    for match in _BLOCK.finditer(text):
        line_number = text.count("\n", 0, match.start()) + 1
        lines = []
        for raw in match.group(1).splitlines():
            if not raw.strip() or raw.lstrip().startswith("#"):
                continue
            key, sep, value = raw.partition(":")
            if not sep:
                raise ValueError(f"spec line {line_number}: not a `key: value` line: {raw!r}")
            lines.append((key.strip(), value.strip()))
        if not lines or lines[0][0] != "name" or len(lines) < 2 or lines[1][0] != "kind":
            raise ValueError(f"spec line {line_number}: a vector starts with name: and kind:")
        vectors.append(Vector(lines[0][1], lines[1][1], tuple(lines[2:]), line_number))
    return vectors


def load() -> list[Vector]:
    return parse(SPEC.read_text(encoding="utf-8"))


def unhex(value: str) -> bytes:
    return bytes.fromhex(value)  # whitespace between bytes is allowed


def evaluate(expression: str) -> Any:
    return eval(expression, NAMESPACE)


def parse_error(value: str) -> tuple[ErrorCode, int | None]:
    """`CODE connection` -> (code, None); `CODE stream N` -> (code, N)."""
    match = _ERROR.match(value)
    if match is None:
        raise ValueError(f"not an error outcome: {value!r}")
    stream = int(match.group(3)) if match.group(3) is not None else None
    return ErrorCode[match.group(1)], stream


def check_error(exc: RemoteProtocolError, expected: str) -> None:
    code, stream = parse_error(expected)
    assert exc.error_code is code, f"error code {exc.error_code.name}, expected {code.name}: {exc}"
    if stream is None:
        assert exc.ends_connection, f"{exc!r} should end the connection"
    else:
        assert not exc.ends_connection, f"{exc!r} should end only stream {stream}"
        assert exc.stream_id == stream, f"{exc!r} is on stream {exc.stream_id}, expected {stream}"


def describe_error(exc: RemoteProtocolError) -> str:
    scope = "connection" if exc.ends_connection else f"stream {exc.stream_id}"
    return f"{exc.error_code.name} {scope}"


# ---------------------------------------------------------------- rendering


def render(value: Any) -> str:
    """A Python expression for `value` that `evaluate` turns back into it."""
    if isinstance(value, ErrorCode) and value.name.startswith("UNKNOWN_"):
        return f"ErrorCode({int(value)})"  # a code read by its range (spec 12.1): no name to give
    if isinstance(value, enum.Enum):
        return f"{type(value).__name__}.{value.name}"
    if attrs.has(type(value)):
        args = ", ".join(f"{a.name}={render(getattr(value, a.name))}" for a in attrs.fields(type(value)))
        return f"{type(value).__name__}({args})"
    if isinstance(value, bytes):
        if all(0x20 <= b < 0x7F or b in b"\t\n\r" for b in value):
            return repr(value)
        return f"bytes.fromhex('{value.hex()}')"
    if isinstance(value, tuple):
        inner = ", ".join(render(v) for v in value)
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    if value is None or isinstance(value, bool | int | str):
        return repr(value)
    raise TypeError(f"cannot render {value!r}")


def render_fields(value: Any) -> str:
    """A language-neutral view of a decoded MessagePack value (strings in JSON, bin as h'..')."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{render_fields(k)}: {render_fields(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(render_fields(v) for v in value) + "]"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, bytes):
        return f"h'{value.hex()}'"
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    raise TypeError(f"cannot render {value!r}")


def payload_fields(payload: bytes) -> str:
    return render_fields(msgpack.unpackb(payload, raw=False))


def spaced_frames(data: bytes, *, at_frame: bool = True) -> str:
    """Hex of a run of frames (after an optional preface), split as preface / header fields / payload.

    With at_frame=False the bytes may start anywhere (a piece of a stream, a
    mangled preface): unless they read as a preface and well-formed frame
    headers, they are shown as one run of hex.
    """
    parts = []
    rest = data
    if rest.startswith(PREFACE[:-1]):
        parts.append(rest[: len(PREFACE)].hex())
        rest = rest[len(PREFACE) :]
    while len(rest) >= HEADER_SIZE:
        length, frame_type, flags = int.from_bytes(rest[:4], "big"), rest[4], rest[5]
        if not at_frame and (frame_type not in FrameType._value2member_map_ or flags):
            return data.hex()
        parts += [rest[:4].hex(), rest[4:5].hex(), rest[5:6].hex(), rest[6:10].hex()]
        if length and rest[HEADER_SIZE : HEADER_SIZE + length]:
            parts.append(rest[HEADER_SIZE : HEADER_SIZE + length].hex())
        rest = rest[HEADER_SIZE + length :]
    if rest:
        if not at_frame:
            return data.hex()
        parts.append(rest.hex())
    return " ".join(parts)


# ------------------------------------------------------------------ running


def run(vector: Vector) -> None:
    """Check one vector against the code; raises AssertionError on a mismatch."""
    runner = RUNNERS.get(vector.kind)
    if runner is None:
        raise ValueError(f"vector {vector.name}: unknown kind {vector.kind!r}")
    runner(vector)


def run_frame(vector: Vector) -> None:
    data = unhex(vector.require("hex"))
    limit = int(vector.get("limit", str(DEFAULT_FRAME_LIMIT)))  # type: ignore[arg-type]
    message_text, error_text = vector.get("message"), vector.get("error")
    assert (message_text is None) != (error_text is None), "a frame vector has message: or error:"
    decoder = FrameDecoder(limit)
    decoder.feed(data)
    if error_text is not None:
        try:
            frame = decoder.next_frame()
            assert frame is not None, "the bytes are not a whole frame"
            message = decode_message(frame)
        except RemoteProtocolError as exc:
            check_error(exc, error_text)
        else:
            raise AssertionError(f"decoded {message!r}, expected {error_text}")
        return
    assert message_text is not None
    expected = evaluate(message_text)
    assert encode_message(expected) == data, "encoding the message does not give the hex"
    frame = decoder.next_frame()
    assert frame is not None and decoder.buffered == 0, "the hex is not exactly one frame"
    assert decode_message(frame) == expected
    fields = vector.get("fields")
    if fields is not None:
        assert payload_fields(frame.payload) == fields


def run_transcript(vector: Vector) -> None:
    role = Role.SERVER if vector.kind == "server" else Role.CLIENT
    settings_text = vector.get("settings")
    machine = Connection(role, evaluate(settings_text) if settings_text is not None else None)
    lines = [(k, v) for k, v in vector.lines if k != "settings"]
    failed = False  # a connection error was reported: the machine reads nothing more
    pending: bytes | None = None  # bytes a `send:` produced, to compare with the next `hex:`

    def settle() -> None:
        if not failed and machine.state is not ConnectionState.ERROR:
            event = machine.next_event()
            assert event is NEED_DATA or event is PEER_CLOSED, f"unlisted event {event!r}"

    for index, (key, value) in enumerate(lines):
        if key == "recv":
            settle()
            machine.receive_data(b"" if value == "eof" else unhex(value))
        elif key == "event":
            event = machine.next_event()
            assert event == evaluate(value), f"step {index}: got {event!r}"
        elif key == "error":
            try:
                event = machine.next_event()
            except RemoteProtocolError as exc:
                check_error(exc, value)
                failed = failed or exc.ends_connection
            else:
                raise AssertionError(f"step {index}: got {event!r}, expected {value}")
        elif key == "send":
            settle()
            pending = machine.send(evaluate(value))
        elif key == "hex":
            assert pending is not None, f"step {index}: hex: without send:"
            assert pending == unhex(value), f"step {index}: sent {pending.hex()}"
            pending = None
        elif key == "refuse":
            try:
                machine.send(evaluate(value))
            except LocalProtocolError:
                pass
            else:
                raise AssertionError(f"step {index}: the machine sent {value}")
        else:
            raise ValueError(f"vector {vector.name}: unknown step {key!r}")
    assert pending is None, "send: without hex:"
    settle()


def run_legacy_header(vector: Vector) -> None:
    data = unhex(vector.require("hex"))
    text = vector.get("text")
    if text is not None:
        assert json.loads(text).encode("utf-8") == data, "text: and hex: differ"
    settled = {"true": True, "false": False}[vector.require("settled")]
    _expect_call(vector, lambda: legacy.parse_header(data, settled=settled))


def run_legacy_reply(vector: Vector) -> None:
    data = unhex(vector.require("hex"))
    settled = {"true": True, "false": False}[vector.require("settled")]
    _expect_call(vector, lambda: legacy.parse_get_reply(data, settled=settled))


def _expect_call(vector: Vector, call: Callable[[], Any]) -> None:
    result, error = vector.get("result"), vector.get("error")
    assert (result is None) != (error is None), "a legacy vector has result: or error:"
    if error is not None:
        assert error == "LegacyError"
        try:
            value = call()
        except legacy.LegacyError:
            return
        raise AssertionError(f"got {value!r}, expected LegacyError")
    assert result is not None
    assert call() == evaluate(result)


def run_name(vector: Vector) -> None:
    name = json.loads(vector.require("path"))
    allow_root = {"true": True, "false": False}[vector.get("root", "false")]  # type: ignore[index]
    expected = vector.require("result")
    try:
        check_path(name, allow_root=allow_root)
    except BadName:
        outcome = "invalid"
    else:
        outcome = "valid"
    assert outcome == expected, f"{name!r} is {outcome}"


def run_sniff(vector: Vector) -> None:
    assert sniff(unhex(vector.require("hex"))) == evaluate(vector.require("result"))


RUNNERS: dict[str, Callable[[Vector], None]] = {
    "frame": run_frame,
    "server": run_transcript,
    "client": run_transcript,
    "legacy-header": run_legacy_header,
    "legacy-reply": run_legacy_reply,
    "name": run_name,
    "sniff": run_sniff,
}


# ---------------------------------------------------------------- recording


class Recorder:
    """Builds vector blocks by running the code (used by gen_spec_vectors.py)."""

    def __init__(self) -> None:
        self.blocks: list[str] = []

    def _emit(self, name: str, kind: str, lines: list[tuple[str, str]]) -> None:
        body = "\n".join(
            [f"name: {name}", f"kind: {kind}"] + [k if k.startswith("#") else f"{k}: {v}" for k, v in lines]
        )
        self.blocks.append(f"```vector\n{body}\n```")

    def take(self) -> str:
        text, self.blocks = "\n\n".join(self.blocks), []
        return text

    def frame(self, name: str, message: Any) -> None:
        data = encode_message(message)
        lines = [("message", render(message))]
        if not isinstance(message, messages.Data):
            lines.append(("fields", payload_fields(data[HEADER_SIZE:])))
        lines.append(("hex", spaced_frames(data)))
        self._emit(name, "frame", lines)

    def bad_frame(self, name: str, data: bytes, *, limit: int | None = None, note: str = "") -> None:
        decoder = FrameDecoder(limit if limit is not None else DEFAULT_FRAME_LIMIT)
        decoder.feed(data)
        try:
            frame = decoder.next_frame()
            assert frame is not None
            decode_message(frame)
        except RemoteProtocolError as exc:
            outcome = describe_error(exc)
        else:
            raise AssertionError(f"{name}: the bytes decode")
        lines = [("# " + note, "")] if note else []
        if limit is not None:
            lines.append(("limit", str(limit)))
        lines += [("hex", spaced_frames(data)), ("error", outcome)]
        self._emit(name, "frame", lines)

    def transcript(self, name: str, role: Role, steps: list[Any], settings: str | None = None) -> None:
        """steps: ("recv", bytes | None for EOF), ("send", message), ("refuse", message)."""
        machine = Connection(role, evaluate(settings) if settings else None)
        lines: list[tuple[str, str]] = [("settings", settings)] if settings else []
        failed = False

        def read_events() -> None:
            nonlocal failed
            while not failed:
                try:
                    event = machine.next_event()
                except RemoteProtocolError as exc:
                    lines.append(("error", describe_error(exc)))
                    failed = exc.ends_connection
                    continue
                if event is NEED_DATA:
                    break
                lines.append(("event", render(event) if event is not PEER_CLOSED else "PEER_CLOSED"))
                if event is PEER_CLOSED:
                    break

        for step, value in steps:
            if step == "recv":
                machine.receive_data(value if value is not None else b"")
                shown = spaced_frames(value, at_frame=False) if value is not None else "eof"
                lines.append(("recv", shown))
                read_events()
            elif step == "send":
                lines += [("send", render(value)), ("hex", spaced_frames(machine.send(value)))]
                read_events()  # what waited for this send (the server's HELLO: spec 7)
            elif step == "refuse":
                try:
                    machine.send(value)
                except LocalProtocolError:
                    lines.append(("refuse", render(value)))
                else:
                    raise AssertionError(f"{name}: the machine sent {value!r}")
            else:
                raise ValueError(step)
        self._emit(name, role.value, lines)

    def legacy_header(self, name: str, data: bytes, *, settled: bool) -> None:
        self._legacy(name, "legacy-header", data, settled, lambda: legacy.parse_header(data, settled=settled))

    def legacy_reply(self, name: str, data: bytes, *, settled: bool) -> None:
        self._legacy(
            name, "legacy-reply", data, settled, lambda: legacy.parse_get_reply(data, settled=settled)
        )

    def _legacy(self, name: str, kind: str, data: bytes, settled: bool, call: Callable[[], Any]) -> None:
        lines = []
        with contextlib.suppress(UnicodeDecodeError):  # `text:` only for bytes that are UTF-8
            lines.append(("text", json.dumps(data.decode("utf-8"), ensure_ascii=False)))
        lines += [("hex", data.hex()), ("settled", "true" if settled else "false")]
        try:
            lines.append(("result", render(call())))
        except legacy.LegacyError:
            lines.append(("error", "LegacyError"))
        self._emit(name, kind, lines)

    def name_rule(self, name: str, path: str, *, root: bool = False) -> None:
        try:
            check_path(path, allow_root=root)
        except BadName:
            outcome = "invalid"
        else:
            outcome = "valid"
        lines = [("path", json.dumps(path)), ("root", "true" if root else "false"), ("result", outcome)]
        self._emit(name, "name", lines)

    def sniff(self, name: str, data: bytes) -> None:
        result = sniff(data)
        self._emit(name, "sniff", [("hex", data.hex()), ("result", render(result))])


def transition_rows() -> list[tuple[str, str, str, str, str]]:
    """STREAM_TRANSITIONS without the CANCEL/ERROR moves (the spec states those as one rule)."""
    rows = []
    for (operation, state, sender, message), new_state in STREAM_TRANSITIONS.items():
        if message in (messages.Cancel, messages.Error):
            continue
        rows.append((operation.name, state.name, sender.name, message.FRAME_TYPE.name, new_state.name))
    return rows


def transition_table() -> str:
    lines = [
        "| Operation | State | Sender | Message | New state |",
        "|---|---|---|---|---|",
    ]
    for row in transition_rows():
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def parse_table_rows(body: str) -> list[list[str]]:
    """The cells of each row of a markdown table, header and rule lines left out."""
    rows = []
    for line in body.splitlines():
        line = line.strip()
        if not line.startswith("|") or set(line) <= set("|-: "):
            continue
        rows.append([cell.strip().strip("`") for cell in line.strip("|").split("|")])
    return rows[1:]


def replace_section(text: str, group: str, body: str) -> str:
    """Put `body` between the `<!-- generated:GROUP -->` and `<!-- /generated:GROUP -->` markers."""
    start, end = f"<!-- generated:{group} -->", f"<!-- /generated:{group} -->"
    before, found, rest = text.partition(start)
    if not found:
        raise ValueError(f"no {start} marker in the spec")
    _old, found, after = rest.partition(end)
    if not found:
        raise ValueError(f"no {end} marker in the spec")
    return f"{before}{start}\n{body}\n{end}{after}"


def section(text: str, group: str) -> str:
    """The text between a group's markers."""
    start, end = f"<!-- generated:{group} -->", f"<!-- /generated:{group} -->"
    _before, found, rest = text.partition(start)
    body, found_end, _after = rest.partition(end)
    if not found or not found_end:
        raise ValueError(f"no {start} ... {end} in the spec")
    return body
