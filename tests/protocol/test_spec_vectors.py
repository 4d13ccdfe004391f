"""protocol_spec.md and the code must say the same thing.

Every test vector in the spec is run against the code in both directions
(encode gives the hex, decoding the hex gives the message or the stated
error), and the spec's tables of frame types, error codes and stream
transitions are compared with the enums and the state table.
"""

from __future__ import annotations

import re

import attrs
import gen_spec_vectors
import pytest
import spec_vectors
from spec_vectors import SPEC, Vector

from trioftp.protocol.errors import ErrorCode
from trioftp.protocol.frames import FrameType
from trioftp.protocol.messages import Cancel, Error
from trioftp.protocol.state import STREAM_TRANSITIONS, Operation, Role, StreamState

SPEC_TEXT = SPEC.read_text(encoding="utf-8")
VECTORS = spec_vectors.parse(SPEC_TEXT)


@pytest.mark.parametrize("vector", VECTORS, ids=[v.name for v in VECTORS])
def test_vector(vector: Vector) -> None:
    spec_vectors.run(vector)


def test_vectors_are_many_and_uniquely_named() -> None:
    names = [v.name for v in VECTORS]
    assert len(names) == len(set(names))
    kinds = {v.kind for v in VECTORS}
    assert kinds == set(spec_vectors.RUNNERS)
    assert len(VECTORS) > 150


def test_every_frame_type_has_a_message_vector() -> None:
    covered = set()
    for vector in VECTORS:
        if vector.kind == "frame" and vector.get("message") is not None:
            covered.add(type(spec_vectors.evaluate(vector.require("message"))).FRAME_TYPE)
    assert covered == set(FrameType)


def test_every_error_code_appears_in_a_vector() -> None:
    text = "\n".join(f"{k}: {v}" for vector in VECTORS for k, v in vector.lines)
    for code in ErrorCode:
        assert re.search(rf"\b{code.name}\b", text), code.name


def test_spec_holds_exactly_what_the_generator_writes() -> None:
    """The vectors in the spec are the real code's output, not hand edits."""
    text = spec_vectors.replace_section(SPEC_TEXT, "stream-transitions", spec_vectors.transition_table())
    recorder = spec_vectors.Recorder()
    for group, build in gen_spec_vectors.GROUPS.items():
        build(recorder)
        text = spec_vectors.replace_section(text, f"vectors-{group}", recorder.take())
    assert text == SPEC_TEXT, "run tests/protocol/gen_spec_vectors.py and review the diff"


# ------------------------------------------------------- the checker checks


def _tamper(vector: Vector, key: str, change) -> Vector:  # type: ignore[no-untyped-def]
    lines = list(vector.lines)
    for index, (k, value) in enumerate(lines):
        if k == key:
            lines[index] = (k, change(value))
            return attrs.evolve(vector, lines=tuple(lines))
    raise AssertionError(f"{vector.name} has no {key}")


def _flip_last_hex_digit(value: str) -> str:
    return value[:-1] + ("0" if value[-1] != "0" else "1")


def _by_name(name: str) -> Vector:
    return next(v for v in VECTORS if v.name == name)


@pytest.mark.parametrize(
    ("name", "key", "change"),
    [
        ("get", "hex", _flip_last_hex_digit),
        ("get", "message", lambda m: m.replace("stream_id=1", "stream_id=2")),
        ("file-info", "fields", lambda f: f.replace('"file"', '"dir"')),
        ("bad-name-dotdot", "error", lambda e: e.replace("stream 1", "stream 2")),
        ("bad-name-dotdot", "error", lambda _e: "PROTOCOL_ERROR connection"),
        ("nonzero-flags", "error", lambda _e: "FRAME_TOO_LARGE connection"),
        ("unknown-frame-types-ignored", "recv", _flip_last_hex_digit),
        ("oversize-during-handshake", "limit", lambda _v: "16385"),
        ("handshake-server-view", "hex", _flip_last_hex_digit),
        ("handshake-server-view", "event", lambda e: e.replace("max_streams=128", "max_streams=127")),
        ("preface-wrong-version", "error", lambda _e: "PROTOCOL_ERROR connection"),
        ("client-exceeds-credit", "refuse", lambda m: m.replace("b'!'", "b''")),
        ("stream-limit", "error", lambda _e: "LIMIT_REACHED stream 3"),
        ("name-valid-simple", "result", lambda _r: "invalid"),
        ("sniff-v2", "result", lambda _r: "Dialect.LEGACY"),
        ("legacy-put", "result", lambda r: r.replace("16)", "15)")),
        ("legacy-put-unsettled", "settled", lambda _s: "true"),
        ("legacy-reply-no", "result", lambda r: r.replace("4)", "3)")),
        ("auth", "hex", _flip_last_hex_digit),
        ("auth-user-empty", "error", lambda _e: "BAD_NAME stream 0"),
        ("second-auth", "error", lambda _e: "AUTH_FAILED connection"),
        ("auth-server-view", "refuse", lambda _m: "Authorized(user='a', rights=(), admin=False)"),
        ("status-needs-admin", "refuse", lambda _m: "StatusInfo('', 0, 0, 0, 0, 0, stream_id=1)"),
    ],
)
def test_a_tampered_vector_fails(name: str, key: str, change) -> None:  # type: ignore[no-untyped-def]
    tampered = _tamper(_by_name(name), key, change)
    with pytest.raises((AssertionError, ValueError)):
        spec_vectors.run(tampered)


def test_an_unlisted_event_fails() -> None:
    vector = _by_name("get-client-view")
    lines = [line for line in vector.lines if not line[1].startswith("End(")]
    with pytest.raises(AssertionError, match="unlisted event"):
        spec_vectors.run(attrs.evolve(vector, lines=tuple(lines)))


def test_parse_reads_blocks_comments_and_keys() -> None:
    text = (
        "text\n```vector\nname: a\nkind: frame\n# note: ignored\n\nhex: 00 01\nerror: X: y\n```\n"
        "```python\nx\n```\n"
    )
    (vector,) = spec_vectors.parse(text)
    assert vector.name == "a" and vector.kind == "frame"
    assert vector.lines == (("hex", "00 01"), ("error", "X: y"))
    with pytest.raises(ValueError, match="name: and kind:"):
        spec_vectors.parse("```vector\nkind: frame\nname: a\n```\n")


# ------------------------------------------------------------------- tables


def _table_after(heading: str) -> list[list[str]]:
    start = SPEC_TEXT.index(heading)
    body = SPEC_TEXT[start:]
    table = re.search(r"((?:^\|.*\n)+)", body, re.MULTILINE)
    assert table is not None
    return spec_vectors.parse_table_rows(table.group(1))


def test_frame_type_table_matches_the_enum() -> None:
    rows = _table_after("### 4.1 Frame types")
    assert {int(row[0], 16): row[1] for row in rows} == {t.value: t.name for t in FrameType}


def test_error_code_table_matches_the_enum() -> None:
    rows = _table_after("### 12.1 Error codes")
    assert {int(row[0]): row[1] for row in rows} == {c.value: c.name for c in ErrorCode}
    for row in rows:
        code = ErrorCode(int(row[0]))
        assert row[2] == ("connection" if code.ends_connection else "stream"), row


def test_stream_transition_table_matches_the_code() -> None:
    rows = spec_vectors.parse_table_rows(spec_vectors.section(SPEC_TEXT, "stream-transitions"))
    listed = {
        (Operation[op], StreamState[state], Role[sender], FrameType[message]): StreamState[new]
        for op, state, sender, message, new in rows
    }
    in_code = {
        (op, state, sender, message.FRAME_TYPE): new
        for (op, state, sender, message), new in STREAM_TRANSITIONS.items()
        if message not in (Cancel, Error)
    }
    assert listed == in_code


def test_cancel_and_error_rule_stated_in_the_spec_matches_the_code() -> None:
    """ "In every open state CANCEL from either side and ERROR from the server close the stream"."""
    expected = {}
    for op in Operation:
        for state in (StreamState.REQUESTED, StreamState.TRANSFERRING, StreamState.COMMITTING):
            expected[(op, state, Role.CLIENT, Cancel)] = StreamState.CLOSED
            expected[(op, state, Role.SERVER, Cancel)] = StreamState.CLOSED
            expected[(op, state, Role.SERVER, Error)] = StreamState.CLOSED
    actual = {key: new for key, new in STREAM_TRANSITIONS.items() if key[3] in (Cancel, Error)}
    assert actual == expected
    assert "CANCEL from either side closes the stream" in SPEC_TEXT
    assert "ERROR (with a stream code) from the server closes the stream" in SPEC_TEXT


def test_constants_stated_in_the_spec() -> None:
    from trioftp.protocol import frames, legacy, messages, names
    from trioftp.protocol.connection import Settings

    assert "89 54 46 54 50 0D 0A 02" in SPEC_TEXT and bytes.fromhex("89544654500D0A02") == frames.PREFACE
    assert frames.HEADER.format == "!IBBI" and '`"!IBBI"`' in SPEC_TEXT
    assert frames.HANDSHAKE_MAX_PAYLOAD == frames.MIN_MAX_FRAME_SIZE == 16384
    assert frames.MAX_MAX_FRAME_SIZE == 16777216
    assert "16384 .. 16777216" in SPEC_TEXT
    assert messages.MAX_DIGEST_BYTES == 64 and messages.MAX_TEXT_CHARS == 1024
    assert names.MAX_SEGMENT_BYTES == 255 and names.MAX_PATH_BYTES == 1024
    assert legacy.MAX_HEADER_BYTES == 1024
    settings = Settings()
    assert (settings.max_frame_size, settings.max_streams, settings.initial_window) == (1048576, 128, 8388608)
    assert settings.digests == ("blake3", "sha256")
    assert "| `max_frame_size` | 1048576 (1 MiB) |" in SPEC_TEXT
    assert "| `initial_window` | 8388608 (8 MiB) |" in SPEC_TEXT
    assert (messages.MAX_USER_CHARS, messages.MAX_RIGHTS, messages.MAX_RIGHT_CHARS) == (255, 16, 32)
    assert "user names 1 .. 255 characters; at most 16 rights in AUTHORIZED, each 1 .. 32" in SPEC_TEXT
    assert (messages.FEATURE_AUTH, messages.FEATURE_ANONYMOUS) == ("auth", "anonymous")
    assert '* `"auth"`: the server has users and accepts AUTH;' in SPEC_TEXT
