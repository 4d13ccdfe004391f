"""Write the test vectors into protocol_spec.md by running the real code.

    /work/venv/bin/python tests/protocol/gen_spec_vectors.py          # rewrite the spec in place
    /work/venv/bin/python tests/protocol/gen_spec_vectors.py --check  # exit 1 if it would change

Each group of vectors goes between `<!-- generated:vectors-GROUP -->` and
`<!-- /generated:vectors-GROUP -->` in the spec, and the stream state table
between the `generated:stream-transitions` markers. Nothing here states an expected
outcome: the bytes come from `encode_message` (or, for malformed input, from
MessagePack and the frame header packer), and the outcomes from running the
decoder and the connection machine. Review the diff before committing it:
a changed vector is a changed protocol.
"""

from __future__ import annotations

import hashlib
import struct
import sys
from typing import Any

import blake3
import msgpack
from spec_vectors import SPEC, Recorder, replace_section, transition_table

from trioftp.protocol.codec import encode_message
from trioftp.protocol.connection import Connection, Settings
from trioftp.protocol.errors import ErrorCode
from trioftp.protocol.frames import PREFACE, FrameType
from trioftp.protocol.messages import (
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
from trioftp.protocol.state import Role

HELLO_WORLD = b"hello world\n"
HELLO_BLAKE3 = blake3.blake3(HELLO_WORLD).digest()
HELLO_SHA256 = hashlib.sha256(HELLO_WORLD).digest()
MTIME = 1_700_000_000_123_456_789

CLIENT_HELLO = Connection(Role.CLIENT).settings.hello()
SERVER_HELLO = Settings().hello(digests=("blake3",))
CLIENT_OPENING = PREFACE + encode_message(CLIENT_HELLO)
SERVER_OPENING = PREFACE + encode_message(SERVER_HELLO)
SERVER_HANDSHAKE: list[tuple[str, Any]] = [("recv", CLIENT_OPENING), ("send", SERVER_HELLO)]
CLIENT_HANDSHAKE: list[tuple[str, Any]] = [("send", CLIENT_HELLO), ("recv", SERVER_OPENING)]

# A client that supports AUTH, and servers with users (section 7.1).
AUTH_CLIENT_HELLO = Settings(features=("auth",)).hello()
AUTH_SERVER_HELLO = Settings(features=("auth",)).hello(digests=("blake3",))
AUTH_ANONYMOUS_SERVER_HELLO = Settings(features=("auth", "anonymous")).hello(digests=("blake3",))
AUTH_CLIENT_OPENING = PREFACE + encode_message(AUTH_CLIENT_HELLO)
AUTH_SERVER_HANDSHAKE: list[tuple[str, Any]] = [("recv", AUTH_CLIENT_OPENING), ("send", AUTH_SERVER_HELLO)]
AUTH_CLIENT_HANDSHAKE: list[tuple[str, Any]] = [
    ("send", AUTH_CLIENT_HELLO),
    ("recv", PREFACE + encode_message(AUTH_SERVER_HELLO)),
]
ALICE = Auth(user="alice", password="correct horse battery staple")
ALICE_RIGHTS = ("read", "write", "list", "mkdir")
ALICE_AUTHORIZED = Authorized(user="alice", rights=ALICE_RIGHTS, admin=False)
WRONG_PASSWORD = Error(code=ErrorCode.AUTH_FAILED, message="wrong user name or password")


def frame(frame_type: int, stream_id: int, payload: bytes, flags: int = 0) -> bytes:
    return struct.pack("!IBBI", len(payload), frame_type, flags, stream_id) + payload


def packed(frame_type: int, stream_id: int, fields: Any) -> bytes:
    return frame(frame_type, stream_id, msgpack.packb(fields, use_bin_type=True))


def enc(*messages: Any) -> bytes:
    return b"".join(encode_message(m) for m in messages)


def hello_info(stream_id: int, digest: bytes | None = HELLO_BLAKE3) -> FileInfo:
    return FileInfo(
        name="hello.txt", kind=Kind.FILE, size=12, mtime_ns=MTIME, digest=digest, stream_id=stream_id
    )


def messages_group(r: Recorder) -> None:
    r.frame("hello-client", CLIENT_HELLO)
    r.frame("hello-server", SERVER_HELLO)
    r.frame(
        "hello-server-sha256",
        Hello(
            max_frame_size=16384, max_streams=1, initial_window=65536, digests=("sha256",), agent="other/0.1"
        ),
    )
    r.frame("goodbye", Goodbye())
    r.frame("goodbye-message", Goodbye(message="server shutting down"))
    r.frame("error-connection", Error(code=ErrorCode.TIMEOUT, message="idle for 300 s"))
    r.frame(
        "error-stream", Error(code=ErrorCode.NOT_FOUND, message="'missing.txt' does not exist", stream_id=3)
    )
    for code in ErrorCode:
        if code in (ErrorCode.TIMEOUT, ErrorCode.NOT_FOUND):
            continue  # shown above
        stream_id = 0 if code.ends_connection else 1
        r.frame(f"error-{code.name.lower().replace('_', '-')}", Error(code=code, stream_id=stream_id))
    r.frame("cancel", Cancel(stream_id=1))
    r.frame("cancel-message", Cancel(message="stopped by the user", stream_id=7))
    r.frame("window", Window(increment=4 * 1024 * 1024, stream_id=1))
    r.frame("window-max", Window(increment=2**31 - 1, stream_id=2**31 - 1))
    r.frame("data", Data(payload=HELLO_WORLD, stream_id=1))
    r.frame("data-empty", Data(payload=b"", stream_id=1))
    r.frame("end-blake3", End(size=12, digest=HELLO_BLAKE3, stream_id=1))
    r.frame("end-sha256", End(size=12, digest=HELLO_SHA256, stream_id=1))
    r.frame("get", Get(name="hello.txt", stream_id=1))
    r.frame("get-range", Get(name="videos/big.mkv", offset=1048576, length=65536, stream_id=5))
    r.frame("get-utf8", Get(name="café/naïve résumé.txt", stream_id=9))
    r.frame("put", Put(name="hello.txt", size=12, stream_id=1))
    r.frame(
        "put-full",
        Put(name="backup/db.dump", size=2**40, digest=HELLO_BLAKE3, resume=True, mtime_ns=MTIME, stream_id=3),
    )
    r.frame("ready", Ready(offset=0, stream_id=1))
    r.frame("ready-resume", Ready(offset=6, stream_id=3))
    r.frame("list-root", List(stream_id=1))
    r.frame("list-folder", List(folder="photos/2024", stream_id=3))
    r.frame(
        "listing-part",
        Listing(
            entries=(
                Entry(name="2024", kind=Kind.DIR, size=0, mtime_ns=MTIME),
                Entry(name="hello.txt", kind=Kind.FILE, size=12, mtime_ns=MTIME),
            ),
            last=False,
            stream_id=1,
        ),
    )
    r.frame(
        "listing-link",
        Listing(
            entries=(Entry(name="latest", kind=Kind.LINK, size=12, mtime_ns=MTIME),), last=True, stream_id=1
        ),
    )
    r.frame(
        "listing-other",
        Listing(
            entries=(Entry(name="pipe", kind=Kind.OTHER, size=0, mtime_ns=MTIME),), last=True, stream_id=1
        ),
    )
    r.frame("listing-last-empty", Listing(entries=(), last=True, stream_id=1))
    r.frame("stat", Stat(name="hello.txt", stream_id=11))
    r.frame("file-info", hello_info(11))
    r.frame("file-info-dir", FileInfo(name="photos", kind=Kind.DIR, size=0, mtime_ns=MTIME, stream_id=13))
    r.frame("delete", Delete(name="old/report.pdf", stream_id=15))
    r.frame("rename", Rename(old="draft.txt", new="final.txt", stream_id=17))
    r.frame("rename-replace", Rename(old="draft.txt", new="final.txt", replace=True, stream_id=19))
    r.frame("mkdir", Mkdir(name="photos/2024/summer", stream_id=21))
    r.frame("done", Done(stream_id=15))
    r.frame("auth", ALICE)
    r.frame("auth-utf8-empty-password", Auth(user="José Müller", password=""))
    r.frame("authorized", ALICE_AUTHORIZED)
    r.frame(
        "authorized-admin",
        Authorized(user="root", rights=("read", "write", "delete", "list", "rename", "mkdir"), admin=True),
    )
    r.frame("authorized-no-rights", Authorized(user="guest", rights=(), admin=False))
    r.frame("status", Status(stream_id=23))
    r.frame(
        "status-info",
        StatusInfo(
            agent="trioftp 0.3.0",
            uptime_ms=86_400_000,
            connections=3,
            transfers=1,
            bytes_received=10 * 2**30,
            bytes_sent=2**40 + 12,
            stream_id=23,
        ),
    )


def malformed_group(r: Recorder) -> None:
    get = {"name": "hello.txt", "offset": 0, "length": None}
    r.bad_frame(
        "oversize-during-handshake",
        struct.pack("!IBBI", 16385, FrameType.HELLO, 0, 0),
        limit=16384,
        note="header alone: refused before any payload byte arrives",
    )
    r.bad_frame(
        "oversize-data",
        struct.pack("!IBBI", 1048577, FrameType.DATA, 0, 1),
        limit=1048576,
        note="one byte over the receiver's advertised max_frame_size",
    )
    r.bad_frame("nonzero-flags", frame(FrameType.DONE, 1, b"\x80", flags=0x01))
    r.bad_frame("reserved-stream-bit", frame(FrameType.DONE, 0x80000001, b"\x80"))
    r.bad_frame("bad-msgpack", frame(FrameType.GET, 1, b"\xc1"))
    r.bad_frame("truncated-msgpack", frame(FrameType.GET, 1, msgpack.packb(get)[:-1]))
    r.bad_frame("empty-control-payload", frame(FrameType.DONE, 1, b""))
    r.bad_frame("payload-not-a-map", packed(FrameType.DONE, 1, []))
    r.bad_frame("trailing-bytes", frame(FrameType.DONE, 1, b"\x80\x00"))
    r.bad_frame("missing-field", packed(FrameType.GET, 1, {"name": "hello.txt", "offset": 0}))
    r.bad_frame("extra-field", packed(FrameType.GET, 1, {**get, "mode": "fast"}))
    r.bad_frame("stream-id-in-payload", packed(FrameType.CANCEL, 1, {"message": "", "stream_id": 1}))
    r.bad_frame("bin-key", frame(FrameType.DONE, 1, msgpack.packb({b"x": 1}, use_bin_type=True)))
    r.bad_frame("duplicate-key", frame(FrameType.READY, 1, b"\x82\xa6offset\x00\xa6offset\x01"))
    r.bad_frame("wrong-type-str-for-int", packed(FrameType.GET, 1, {**get, "offset": "0"}))
    r.bad_frame("bool-for-int", packed(FrameType.GET, 1, {**get, "offset": False}))
    r.bad_frame("int-for-bool", packed(FrameType.RENAME, 1, {"old": "a", "new": "b", "replace": 0}))
    r.bad_frame("float-for-int", packed(FrameType.WINDOW, 1, {"increment": 1.0}))
    r.bad_frame("str-for-bin", packed(FrameType.END, 1, {"size": 12, "digest": HELLO_BLAKE3.hex()}))
    r.bad_frame("bin-for-str", packed(FrameType.STAT, 1, {"name": b"hello.txt"}))
    r.bad_frame("invalid-utf8", frame(FrameType.STAT, 1, b"\x81\xa4name\xa2\xc3\x28"))
    r.bad_frame("str-for-array", packed(FrameType.HELLO, 0, {**_hello_fields(), "digests": "blake3"}))
    r.bad_frame("too-many-digests", packed(FrameType.HELLO, 0, {**_hello_fields(), "digests": ["x"] * 17}))
    r.bad_frame("no-digests", packed(FrameType.HELLO, 0, {**_hello_fields(), "digests": []}))
    r.bad_frame("digest-name-empty", packed(FrameType.HELLO, 0, {**_hello_fields(), "digests": [""]}))
    r.bad_frame("digest-name-33", packed(FrameType.HELLO, 0, {**_hello_fields(), "digests": ["x" * 33]}))
    r.bad_frame("too-many-features", packed(FrameType.HELLO, 0, {**_hello_fields(), "features": ["f"] * 33}))
    r.bad_frame("feature-65", packed(FrameType.HELLO, 0, {**_hello_fields(), "features": ["f" * 65]}))
    r.bad_frame("digest-empty", packed(FrameType.END, 1, {"size": 12, "digest": b""}))
    r.bad_frame("digest-65-bytes", packed(FrameType.END, 1, {"size": 12, "digest": b"\x00" * 65}))
    r.bad_frame("negative-size", packed(FrameType.PUT, 1, _put_fields(size=-1)))
    r.bad_frame("size-2-63", packed(FrameType.PUT, 1, _put_fields(size=2**63)))
    r.bad_frame("window-zero", packed(FrameType.WINDOW, 1, {"increment": 0}))
    r.bad_frame("window-2-31", packed(FrameType.WINDOW, 1, {"increment": 2**31}))
    r.bad_frame("initial-window-zero", packed(FrameType.HELLO, 0, {**_hello_fields(), "initial_window": 0}))
    r.frame("unknown-stream-error-code", Error(code=ErrorCode(99), message="", stream_id=1))
    r.frame("unknown-connection-error-code", Error(code=ErrorCode(31), message="", stream_id=0))
    r.frame("grease-error-code", Error(code=ErrorCode(0x2A2A), message="", stream_id=1))
    r.bad_frame("error-code-zero", packed(FrameType.ERROR, 1, {"code": 0, "message": ""}))
    r.bad_frame("error-code-2-32", packed(FrameType.ERROR, 1, {"code": 2**32, "message": ""}))
    r.bad_frame("bool-error-code", packed(FrameType.ERROR, 1, {"code": True, "message": ""}))
    r.bad_frame("unknown-kind", packed(FrameType.FILE_INFO, 1, {**_info_fields(), "kind": "folder"}))
    r.bad_frame(
        "file-info-kind-link",
        packed(FrameType.FILE_INFO, 1, {**_info_fields(), "kind": "link"}),
        note="a link is a LISTING entry's kind only: FILE_INFO says what the name leads to",
    )
    r.bad_frame("file-info-kind-other", packed(FrameType.FILE_INFO, 1, {**_info_fields(), "kind": "other"}))
    r.bad_frame("text-over-1024-chars", packed(FrameType.GOODBYE, 0, {"message": "x" * 1025}))
    r.bad_frame("data-on-stream-0", frame(FrameType.DATA, 0, HELLO_WORLD))
    r.bad_frame("cancel-on-stream-0", packed(FrameType.CANCEL, 0, {"message": ""}))
    r.bad_frame("hello-on-stream-1", packed(FrameType.HELLO, 1, _hello_fields()))
    r.bad_frame("goodbye-on-stream-1", packed(FrameType.GOODBYE, 1, {"message": ""}))
    r.bad_frame("request-on-stream-0", packed(FrameType.GET, 0, get))
    auth = {"user": "alice", "password": "secret"}
    authorized = {"user": "alice", "rights": ["read"], "admin": False}
    r.bad_frame("auth-on-stream-1", packed(FrameType.AUTH, 1, auth))
    r.bad_frame("authorized-on-stream-1", packed(FrameType.AUTHORIZED, 1, authorized))
    r.bad_frame("status-on-stream-0", packed(FrameType.STATUS, 0, {}))
    r.bad_frame("status-info-on-stream-0", packed(FrameType.STATUS_INFO, 0, _status_info_fields()))
    r.bad_frame(
        "auth-user-empty",
        packed(FrameType.AUTH, 0, {**auth, "user": ""}),
        note="a bad user name is not a bad path name: connection error",
    )
    r.bad_frame("auth-user-newline", packed(FrameType.AUTH, 0, {**auth, "user": "alice\nroot"}))
    r.bad_frame("auth-user-del", packed(FrameType.AUTH, 0, {**auth, "user": "alice\x7f"}))
    r.bad_frame("auth-user-256-chars", packed(FrameType.AUTH, 0, {**auth, "user": "u" * 256}))
    r.bad_frame("auth-password-1025-chars", packed(FrameType.AUTH, 0, {**auth, "password": "p" * 1025}))
    r.bad_frame("auth-password-bin", packed(FrameType.AUTH, 0, {**auth, "password": b"secret"}))
    r.bad_frame("authorized-17-rights", packed(FrameType.AUTHORIZED, 0, {**authorized, "rights": ["r"] * 17}))
    r.bad_frame("authorized-empty-right", packed(FrameType.AUTHORIZED, 0, {**authorized, "rights": [""]}))
    r.bad_frame(
        "authorized-right-33-chars", packed(FrameType.AUTHORIZED, 0, {**authorized, "rights": ["r" * 33]})
    )
    r.bad_frame("authorized-int-for-bool", packed(FrameType.AUTHORIZED, 0, {**authorized, "admin": 1}))
    r.bad_frame("status-with-a-field", packed(FrameType.STATUS, 1, {"verbose": True}))
    r.bad_frame(
        "status-info-negative-count", packed(FrameType.STATUS_INFO, 1, _status_info_fields(transfers=-1))
    )
    r.bad_frame("bad-name-dotdot", packed(FrameType.GET, 1, {**get, "name": "../etc/passwd"}))
    r.bad_frame("bad-name-absolute", packed(FrameType.GET, 3, {**get, "name": "/etc/passwd"}))
    r.bad_frame("bad-name-backslash", packed(FrameType.PUT, 5, _put_fields(name="dir\\file.txt")))
    r.bad_frame("bad-name-nul", packed(FrameType.STAT, 7, {"name": "a\x00b"}))
    r.bad_frame("bad-name-empty-segment", packed(FrameType.DELETE, 9, {"name": "a//b"}))
    r.bad_frame("bad-name-empty", packed(FrameType.MKDIR, 11, {"name": ""}))
    r.bad_frame(
        "bad-name-rename-target", packed(FrameType.RENAME, 13, {"old": "a", "new": "b/..", "replace": False})
    )
    r.bad_frame("bad-name-list-parent", packed(FrameType.LIST, 15, {"folder": ".."}))
    r.bad_frame("bad-name-long-segment", packed(FrameType.STAT, 17, {"name": "x" * 256}))
    r.bad_frame(
        "bad-name-before-bad-range",
        packed(FrameType.GET, 19, {**get, "name": "../x", "offset": -1}),
        note="names are checked before number ranges: still a stream error",
    )
    r.bad_frame(
        "bad-name-with-wrong-type",
        packed(FrameType.GET, 21, {**get, "name": "../x", "offset": "0"}),
        note="a field of the wrong type makes the payload undecodable: connection error",
    )


def _hello_fields() -> dict[str, Any]:
    return {
        "max_frame_size": 1048576, "max_streams": 128, "initial_window": 8388608,
        "digests": ["blake3", "sha256"], "features": [], "agent": "",
    }  # fmt: skip


def _put_fields(**changes: Any) -> dict[str, Any]:
    return {"name": "a", "size": 1, "digest": None, "resume": False, "mtime_ns": None, **changes}


def _status_info_fields(**changes: Any) -> dict[str, Any]:
    return {
        "agent": "trioftp", "uptime_ms": 1, "connections": 1, "transfers": 0,
        "bytes_received": 0, "bytes_sent": 0, **changes,
    }  # fmt: skip


def _info_fields() -> dict[str, Any]:
    return {"name": "a", "kind": "file", "size": 1, "mtime_ns": 1, "digest": None}


def handshake_group(r: Recorder) -> None:
    r.transcript("handshake-server-view", Role.SERVER, SERVER_HANDSHAKE)
    r.transcript("handshake-client-view", Role.CLIENT, CLIENT_HANDSHAKE)
    r.transcript(
        "handshake-split-preface",
        Role.SERVER,
        [("recv", CLIENT_OPENING[:5]), ("recv", CLIENT_OPENING[5:12]), ("recv", CLIENT_OPENING[12:])],
    )
    r.transcript(
        "preface-line-endings-mangled",
        Role.SERVER,
        [
            ("recv", b"\x89TFTP\n\x02" + encode_message(CLIENT_HELLO)),
            ("send", Error(code=ErrorCode.PROTOCOL_ERROR, message="not a trioftp v2 preface")),
        ],
    )
    r.transcript(
        "preface-wrong-version",
        Role.SERVER,
        [
            ("recv", b"\x89TFTP\r\n\x03" + encode_message(CLIENT_HELLO)),
            ("send", Error(code=ErrorCode.UNSUPPORTED_VERSION, message="this server speaks version 2")),
        ],
    )
    r.transcript(
        "connection-limit-before-hello",
        Role.SERVER,
        [("send", Error(code=ErrorCode.CONNECTION_LIMIT, message="too many connections"))],
    )
    r.transcript(
        "hello-oversize-during-handshake",
        Role.SERVER,
        [("recv", PREFACE + struct.pack("!IBBI", 16385, FrameType.HELLO, 0, 0))],
    )
    r.transcript(
        "hello-frame-size-too-small",
        Role.SERVER,
        [("recv", PREFACE + packed(FrameType.HELLO, 0, {**_hello_fields(), "max_frame_size": 1024}))],
    )
    r.transcript(
        "hello-frame-size-too-large",
        Role.SERVER,
        [("recv", PREFACE + packed(FrameType.HELLO, 0, {**_hello_fields(), "max_frame_size": 2**24 + 1}))],
    )
    r.transcript(
        "request-pipelined-behind-the-client-hello",
        Role.SERVER,
        [
            ("recv", CLIENT_OPENING + enc(Get(name="hello.txt", stream_id=1))),
            ("send", SERVER_HELLO),
        ],
    )
    r.transcript(
        "client-pipelines-one-request",
        Role.CLIENT,
        [
            ("send", CLIENT_HELLO),
            ("send", Get(name="hello.txt", stream_id=1)),
            ("refuse", Get(name="other.txt", stream_id=2)),
            ("refuse", Window(increment=1024, stream_id=1)),
            ("recv", SERVER_OPENING),
            ("send", Get(name="other.txt", stream_id=2)),
        ],
    )
    r.transcript(
        "request-before-the-client-hello",
        Role.SERVER,
        [("recv", PREFACE + enc(Get(name="hello.txt", stream_id=1)))],
    )
    r.transcript(
        "hello-unknown-key-ignored",
        Role.SERVER,
        [("recv", PREFACE + packed(FrameType.HELLO, 0, {**_hello_fields(), "compression": ["zstd"]}))],
    )
    r.transcript(
        "unknown-frame-types-ignored",
        Role.SERVER,
        [
            *SERVER_HANDSHAKE,
            (
                "recv",
                frame(0x0A, 0, b"\x80")
                + frame(0x00, 1, b"")
                + frame(0x7F, 0x80000001, b"\x01\x02", flags=0xFF),
            ),
            ("recv", frame(0x1F, 3, b"grease") + enc(Stat(name="hello.txt", stream_id=1))),
        ],
    )
    r.transcript(
        "window-with-a-get",
        Role.SERVER,
        [
            *SERVER_HANDSHAKE,
            ("recv", enc(Get(name="hello.txt", stream_id=1), Window(increment=65536, stream_id=1))),
        ],
    )
    r.transcript(
        "server-speaks-first",
        Role.CLIENT,
        [("recv", SERVER_OPENING)],
    )
    r.transcript(
        "server-picks-unoffered-digest",
        Role.CLIENT,
        [
            ("send", CLIENT_HELLO),
            ("recv", PREFACE + packed(FrameType.HELLO, 0, {**_hello_fields(), "digests": ["md5"]})),
        ],
    )
    r.transcript(
        "server-picks-two-digests",
        Role.CLIENT,
        [("send", CLIENT_HELLO), ("recv", PREFACE + packed(FrameType.HELLO, 0, _hello_fields()))],
    )
    r.transcript(
        "second-hello",
        Role.SERVER,
        [*SERVER_HANDSHAKE, ("recv", encode_message(CLIENT_HELLO))],
    )


def auth_group(r: Recorder) -> None:
    r.transcript(
        "auth-client-view",
        Role.CLIENT,
        [
            *AUTH_CLIENT_HANDSHAKE,
            ("send", ALICE),
            ("send", Stat(name="hello.txt", stream_id=1)),
            ("recv", enc(ALICE_AUTHORIZED, hello_info(1))),
        ],
    )
    r.transcript(
        "auth-server-view",
        Role.SERVER,
        [
            *AUTH_SERVER_HANDSHAKE,
            ("recv", enc(ALICE, Stat(name="hello.txt", stream_id=1))),
            ("refuse", hello_info(1)),
            ("send", ALICE_AUTHORIZED),
            ("send", hello_info(1)),
        ],
    )
    r.transcript(
        "auth-then-permission-denied",
        Role.SERVER,
        [
            *AUTH_SERVER_HANDSHAKE,
            ("recv", enc(ALICE, Delete(name="hello.txt", stream_id=1), Stat(name="hello.txt", stream_id=2))),
            ("send", ALICE_AUTHORIZED),
            ("send", Error(code=ErrorCode.PERMISSION_DENIED, message="no 'delete' right", stream_id=1)),
            ("send", hello_info(2)),
        ],
    )
    r.transcript(
        "auth-wrong-password",
        Role.SERVER,
        [
            *AUTH_SERVER_HANDSHAKE,
            ("recv", enc(Auth(user="alice", password="guess"), Get(name="hello.txt", stream_id=1))),
            ("send", WRONG_PASSWORD),
            ("refuse", Error(code=ErrorCode.NOT_FOUND, stream_id=1)),
        ],
    )
    r.transcript(
        "auth-failed-client-view",
        Role.CLIENT,
        [
            *AUTH_CLIENT_HANDSHAKE,
            ("send", Auth(user="mallory", password="guess")),
            ("send", Get(name="hello.txt", stream_id=1)),
            ("recv", enc(WRONG_PASSWORD)),
            ("refuse", Get(name="hello.txt", stream_id=2)),
        ],
    )
    r.transcript(
        "auth-to-a-server-without-users",
        Role.SERVER,
        [
            *SERVER_HANDSHAKE,
            ("recv", enc(ALICE)),
            ("refuse", ALICE_AUTHORIZED),
            ("send", Error(code=ErrorCode.AUTH_FAILED, message="no users on this server")),
        ],
    )
    r.transcript(
        "auth-required",
        Role.SERVER,
        [
            *AUTH_SERVER_HANDSHAKE,
            ("recv", enc(Get(name="hello.txt", stream_id=1))),
            ("send", Error(code=ErrorCode.AUTH_FAILED, message="log in first")),
        ],
    )
    r.transcript(
        "anonymous-client",
        Role.CLIENT,
        [
            ("send", CLIENT_HELLO),
            ("recv", PREFACE + encode_message(AUTH_ANONYMOUS_SERVER_HELLO)),
            ("send", Stat(name="hello.txt", stream_id=1)),
            ("send", Delete(name="hello.txt", stream_id=2)),
            (
                "recv",
                enc(
                    hello_info(1),
                    Error(code=ErrorCode.PERMISSION_DENIED, message="no 'delete' right", stream_id=2),
                ),
            ),
            ("refuse", ALICE),
        ],
    )
    r.transcript(
        "auth-pipelined-behind-the-client-hello",
        Role.SERVER,
        [("recv", AUTH_CLIENT_OPENING + enc(ALICE)), ("send", AUTH_SERVER_HELLO)],
    )
    r.transcript(
        "failed-auth-with-a-request-pipelined-behind-the-client-hello",
        Role.SERVER,
        [
            ("recv", AUTH_CLIENT_OPENING + enc(ALICE) + enc(Get(name="hello.txt", stream_id=1))),
            ("send", AUTH_SERVER_HELLO),
            ("refuse", hello_info(1)),
            ("send", Error(code=ErrorCode.AUTH_FAILED, message="wrong user or password")),
        ],
    )
    r.transcript(
        "auth-before-the-client-hello",
        Role.SERVER,
        [("recv", PREFACE + enc(ALICE))],
    )
    r.transcript(
        "auth-sent-behind-the-client-hello",
        Role.CLIENT,
        [("send", AUTH_CLIENT_HELLO), ("send", ALICE)],
    )
    r.transcript(
        "auth-from-the-server",
        Role.CLIENT,
        [*AUTH_CLIENT_HANDSHAKE, ("recv", enc(ALICE))],
    )
    r.transcript(
        "auth-on-stream-1-server-view",
        Role.SERVER,
        [*AUTH_SERVER_HANDSHAKE, ("recv", packed(FrameType.AUTH, 1, {"user": "alice", "password": "x"}))],
    )
    r.transcript(
        "second-auth",
        Role.SERVER,
        [
            *AUTH_SERVER_HANDSHAKE,
            ("recv", enc(ALICE)),
            ("send", ALICE_AUTHORIZED),
            ("recv", enc(Auth(user="root", password="toor"))),
        ],
    )
    r.transcript(
        "second-auth-client-view",
        Role.CLIENT,
        [*AUTH_CLIENT_HANDSHAKE, ("send", ALICE), ("refuse", Auth(user="root", password="toor"))],
    )
    r.transcript(
        "auth-after-a-request",
        Role.SERVER,
        [*AUTH_SERVER_HANDSHAKE, ("recv", enc(Stat(name="hello.txt", stream_id=1), ALICE))],
    )
    r.transcript(
        "auth-after-a-request-client-view",
        Role.CLIENT,
        [*AUTH_CLIENT_HANDSHAKE, ("send", Stat(name="hello.txt", stream_id=1)), ("refuse", ALICE)],
    )
    r.transcript(
        "authorized-without-auth",
        Role.CLIENT,
        [*AUTH_CLIENT_HANDSHAKE, ("recv", enc(ALICE_AUTHORIZED))],
    )
    r.transcript(
        "second-authorized",
        Role.CLIENT,
        [*AUTH_CLIENT_HANDSHAKE, ("send", ALICE), ("recv", enc(ALICE_AUTHORIZED, ALICE_AUTHORIZED))],
    )
    r.transcript(
        "authorized-from-a-server-without-auth",
        Role.CLIENT,
        [*CLIENT_HANDSHAKE, ("send", ALICE), ("recv", enc(ALICE_AUTHORIZED))],
    )
    r.transcript(
        "authorized-from-the-client",
        Role.SERVER,
        [*AUTH_SERVER_HANDSHAKE, ("recv", enc(ALICE_AUTHORIZED))],
    )
    r.transcript(
        "answer-before-authorized",
        Role.CLIENT,
        [
            *AUTH_CLIENT_HANDSHAKE,
            ("send", ALICE),
            ("send", Stat(name="hello.txt", stream_id=1)),
            ("recv", enc(hello_info(1), ALICE_AUTHORIZED)),
        ],
    )
    r.transcript(
        "auth-bad-user-name",
        Role.SERVER,
        [*AUTH_SERVER_HANDSHAKE, ("recv", packed(FrameType.AUTH, 0, {"user": "a\x00b", "password": "x"}))],
    )


def operations_group(r: Recorder) -> None:
    r.transcript(
        "get-client-view",
        Role.CLIENT,
        [
            *CLIENT_HANDSHAKE,
            ("send", Get(name="hello.txt", stream_id=1)),
            (
                "recv",
                enc(
                    hello_info(1),
                    Data(payload=HELLO_WORLD, stream_id=1),
                    End(size=12, digest=HELLO_BLAKE3, stream_id=1),
                ),
            ),
        ],
    )
    r.transcript(
        "get-resume-client-view",
        Role.CLIENT,
        [
            *CLIENT_HANDSHAKE,
            ("send", Get(name="hello.txt", offset=6, stream_id=1)),
            ("recv", enc(hello_info(1, None), Data(payload=b"world\n", stream_id=1))),
            ("recv", enc(End(size=12, digest=HELLO_BLAKE3, stream_id=1))),
        ],
    )
    r.transcript(
        "put-server-view",
        Role.SERVER,
        [
            *SERVER_HANDSHAKE,
            ("recv", enc(Put(name="hello.txt", size=12, mtime_ns=MTIME, stream_id=1))),
            ("send", Ready(offset=0, stream_id=1)),
            (
                "recv",
                enc(Data(payload=HELLO_WORLD, stream_id=1), End(size=12, digest=HELLO_BLAKE3, stream_id=1)),
            ),
            ("send", hello_info(1)),
        ],
    )
    r.transcript(
        "put-identical-server-view",
        Role.SERVER,
        [
            *SERVER_HANDSHAKE,
            ("recv", enc(Put(name="hello.txt", size=12, digest=HELLO_BLAKE3, stream_id=1))),
            ("send", hello_info(1)),
        ],
    )
    r.transcript(
        "put-resume-server-view",
        Role.SERVER,
        [
            *SERVER_HANDSHAKE,
            ("recv", enc(Put(name="hello.txt", size=12, digest=HELLO_BLAKE3, resume=True, stream_id=1))),
            ("send", Ready(offset=6, stream_id=1)),
            (
                "recv",
                enc(Data(payload=b"world\n", stream_id=1), End(size=12, digest=HELLO_BLAKE3, stream_id=1)),
            ),
            ("send", hello_info(1)),
        ],
    )
    r.transcript(
        "put-checksum-mismatch-server-view",
        Role.SERVER,
        [
            *SERVER_HANDSHAKE,
            ("recv", enc(Put(name="hello.txt", size=12, stream_id=1))),
            ("send", Ready(offset=0, stream_id=1)),
            (
                "recv",
                enc(
                    Data(payload=b"hello w0rld\n", stream_id=1),
                    End(size=12, digest=HELLO_BLAKE3, stream_id=1),
                ),
            ),
            ("send", Error(code=ErrorCode.CHECKSUM_MISMATCH, message="digest does not match", stream_id=1)),
        ],
    )
    entries = (
        Entry(name="2024", kind=Kind.DIR, size=0, mtime_ns=MTIME),
        Entry(name="hello.txt", kind=Kind.FILE, size=12, mtime_ns=MTIME),
    )
    r.transcript(
        "list-client-view",
        Role.CLIENT,
        [
            *CLIENT_HANDSHAKE,
            ("send", List(stream_id=1)),
            ("recv", enc(Listing(entries=entries[:1], last=False, stream_id=1))),
            ("recv", enc(Listing(entries=entries[1:], last=True, stream_id=1))),
            ("recv", enc(Listing(entries=(), last=True, stream_id=1))),
        ],
    )
    r.transcript(
        "stat-delete-rename-mkdir-client-view",
        Role.CLIENT,
        [
            *CLIENT_HANDSHAKE,
            ("send", Stat(name="hello.txt", stream_id=1)),
            ("send", Delete(name="old.txt", stream_id=2)),
            ("send", Rename(old="draft.txt", new="final.txt", stream_id=3)),
            ("send", Mkdir(name="photos/2024", stream_id=4)),
            ("send", Rename(old="a.txt", new="b.txt", stream_id=5)),
            ("recv", enc(Done(stream_id=2), hello_info(1), Done(stream_id=4), Done(stream_id=3))),
            (
                "recv",
                enc(Error(code=ErrorCode.ALREADY_EXISTS, message="'b.txt' already exists", stream_id=5)),
            ),
        ],
    )
    r.transcript(
        "cancel-get-client-view",
        Role.CLIENT,
        [
            *CLIENT_HANDSHAKE,
            ("send", Get(name="hello.txt", stream_id=1)),
            ("recv", enc(hello_info(1, None), Data(payload=b"hello ", stream_id=1))),
            ("send", Cancel(stream_id=1)),
            (
                "recv",
                enc(Data(payload=b"world\n", stream_id=1), End(size=12, digest=HELLO_BLAKE3, stream_id=1)),
            ),
            ("refuse", Window(increment=6, stream_id=1)),
            ("send", Stat(name="hello.txt", stream_id=2)),
            ("recv", enc(hello_info(2))),
        ],
    )
    r.transcript(
        "status-client-view",
        Role.CLIENT,
        [
            *CLIENT_HANDSHAKE,
            ("send", Status(stream_id=1)),
            (
                "recv",
                enc(
                    StatusInfo(
                        agent="trioftp 0.3.0",
                        uptime_ms=3_600_000,
                        connections=2,
                        transfers=0,
                        bytes_received=12,
                        bytes_sent=1_048_576,
                        stream_id=1,
                    )
                ),
            ),
        ],
    )
    r.transcript(
        "status-needs-admin",
        Role.SERVER,
        [
            *AUTH_SERVER_HANDSHAKE,
            ("recv", enc(ALICE, Status(stream_id=1))),
            ("send", ALICE_AUTHORIZED),
            ("refuse", Done(stream_id=1)),
            ("send", Error(code=ErrorCode.PERMISSION_DENIED, message="STATUS is for admins", stream_id=1)),
        ],
    )
    r.transcript(
        "goodbye-client-view",
        Role.CLIENT,
        [
            *CLIENT_HANDSHAKE,
            ("send", Stat(name="hello.txt", stream_id=1)),
            ("send", Goodbye()),
            ("refuse", Stat(name="hello.txt", stream_id=2)),
            ("recv", enc(hello_info(1))),
            ("recv", None),
        ],
    )


def connection_errors_group(r: Recorder) -> None:
    r.transcript(
        "bad-name-is-a-stream-error",
        Role.SERVER,
        [
            *SERVER_HANDSHAKE,
            ("recv", packed(FrameType.GET, 1, {"name": "../secret", "offset": 0, "length": None})),
            ("send", Error(code=ErrorCode.BAD_NAME, message="'..' segment refused", stream_id=1)),
            ("recv", enc(Stat(name="notes.txt", stream_id=2))),
        ],
    )
    r.transcript(
        "bad-name-in-reused-stream-id",
        Role.SERVER,
        [
            *SERVER_HANDSHAKE,
            ("recv", enc(Stat(name="notes.txt", stream_id=2))),
            ("recv", packed(FrameType.STAT, 1, {"name": "../secret"})),
        ],
    )
    r.transcript(
        "bad-name-in-answer",
        Role.CLIENT,
        [
            *CLIENT_HANDSHAKE,
            ("send", List(stream_id=1)),
            (
                "recv",
                packed(
                    FrameType.LISTING,
                    1,
                    {"entries": [{"name": "a/b", "kind": "file", "size": 1, "mtime_ns": 1}], "last": True},
                ),
            ),
        ],
    )
    r.transcript(
        "stream-limit",
        Role.SERVER,
        [
            ("recv", CLIENT_OPENING),
            ("send", Settings(max_streams=1).hello(digests=("blake3",))),
            ("recv", enc(Get(name="a", stream_id=1), Get(name="b", stream_id=2))),
            ("send", Error(code=ErrorCode.LIMIT_REACHED, message="1 stream at a time", stream_id=2)),
            ("send", Error(code=ErrorCode.NOT_FOUND, message="", stream_id=1)),
            ("recv", enc(Get(name="c", stream_id=3))),
        ],
    )
    r.transcript(
        "reused-stream-id",
        Role.SERVER,
        [
            *SERVER_HANDSHAKE,
            ("recv", enc(Stat(name="a", stream_id=5))),
            ("send", Error(code=ErrorCode.NOT_FOUND, message="", stream_id=5)),
            ("recv", enc(Stat(name="a", stream_id=5))),
        ],
    )
    r.transcript(
        "lower-stream-id",
        Role.SERVER,
        [*SERVER_HANDSHAKE, ("recv", enc(Stat(name="a", stream_id=5), Stat(name="b", stream_id=4)))],
    )
    r.transcript(
        "never-opened-stream",
        Role.SERVER,
        [*SERVER_HANDSHAKE, ("recv", enc(Window(increment=1, stream_id=1)))],
    )
    r.transcript(
        "closed-stream-frames-ignored",
        Role.SERVER,
        [
            *SERVER_HANDSHAKE,
            ("recv", enc(Put(name="a", size=100, stream_id=1))),
            ("send", Ready(offset=0, stream_id=1)),
            (
                "recv",
                enc(
                    Data(payload=b"abc", stream_id=1), Cancel(stream_id=1), Data(payload=b"def", stream_id=1)
                ),
            ),
            ("refuse", Window(increment=3, stream_id=1)),
            ("recv", enc(End(size=100, digest=HELLO_BLAKE3, stream_id=1), Stat(name="a", stream_id=2))),
        ],
    )
    r.transcript(
        "message-not-allowed-in-state",
        Role.CLIENT,
        [
            *CLIENT_HANDSHAKE,
            ("send", Get(name="a", stream_id=1)),
            ("recv", enc(Ready(offset=0, stream_id=1))),
        ],
    )
    r.transcript(
        "data-before-file-info",
        Role.CLIENT,
        [
            *CLIENT_HANDSHAKE,
            ("send", Get(name="a", stream_id=1)),
            ("recv", enc(Data(payload=b"x", stream_id=1))),
        ],
    )
    r.transcript(
        "server-opens-a-stream",
        Role.CLIENT,
        [*CLIENT_HANDSHAKE, ("recv", enc(Get(name="a", stream_id=2)))],
    )
    r.transcript(
        "client-sends-error-on-stream",
        Role.SERVER,
        [
            *SERVER_HANDSHAKE,
            ("recv", enc(Get(name="a", stream_id=1))),
            ("recv", enc(Error(code=ErrorCode.INTERNAL, stream_id=1))),
        ],
    )
    r.transcript(
        "connection-code-on-a-stream",
        Role.CLIENT,
        [
            *CLIENT_HANDSHAKE,
            ("send", Get(name="a", stream_id=1)),
            ("recv", packed(FrameType.ERROR, 1, {"code": ErrorCode.TIMEOUT, "message": ""})),
        ],
    )
    r.transcript(
        "stream-code-on-stream-0",
        Role.CLIENT,
        [
            *CLIENT_HANDSHAKE,
            ("recv", packed(FrameType.ERROR, 0, {"code": ErrorCode.NOT_FOUND, "message": ""})),
        ],
    )
    r.transcript(
        "connection-error-received",
        Role.CLIENT,
        [
            *CLIENT_HANDSHAKE,
            ("recv", enc(Error(code=ErrorCode.SHUTTING_DOWN, message="bye"))),
            ("refuse", Get(name="a", stream_id=1)),
        ],
    )
    r.transcript(
        "request-after-client-goodbye",
        Role.SERVER,
        [*SERVER_HANDSHAKE, ("recv", enc(Goodbye(), Get(name="a", stream_id=1)))],
    )
    r.transcript(
        "flow-control-window-exceeded",
        Role.SERVER,
        [
            ("recv", CLIENT_OPENING),
            ("send", Settings(initial_window=16).hello(digests=("blake3",))),
            ("recv", enc(Put(name="a", size=40, stream_id=1))),
            ("send", Ready(offset=0, stream_id=1)),
            ("recv", enc(Data(payload=b"0123456789abcdef", stream_id=1))),
            ("send", Window(increment=10, stream_id=1)),
            ("recv", enc(Data(payload=b"0123456789", stream_id=1), Data(payload=b"!", stream_id=1))),
            ("send", Error(code=ErrorCode.FLOW_CONTROL_ERROR, message="window exceeded")),
        ],
    )
    r.transcript(
        "flow-control-credit-overflow",
        Role.CLIENT,
        [
            *CLIENT_HANDSHAKE,
            ("send", Put(name="a", size=40, stream_id=1)),
            ("recv", enc(Ready(offset=0, stream_id=1), Window(increment=2**31 - 1, stream_id=1))),
        ],
    )
    r.transcript(
        "client-exceeds-credit",
        Role.CLIENT,
        [
            ("send", CLIENT_HELLO),
            ("recv", PREFACE + enc(Settings(initial_window=16).hello(digests=("blake3",)))),
            ("send", Put(name="a", size=40, stream_id=1)),
            ("recv", enc(Ready(offset=0, stream_id=1))),
            ("send", Data(payload=b"0123456789abcdef", stream_id=1)),
            ("refuse", Data(payload=b"!", stream_id=1)),
        ],
    )
    r.transcript(
        "eof-inside-a-frame",
        Role.SERVER,
        [*SERVER_HANDSHAKE, ("recv", enc(Stat(name="a", stream_id=1))[:7]), ("recv", None)],
    )
    r.transcript(
        "eof-between-frames",
        Role.SERVER,
        [*SERVER_HANDSHAKE, ("recv", None)],
    )


def names_group(r: Recorder) -> None:
    long_path = "/".join(["p" * 255, "q" * 255, "r" * 255, "s" * 200, "t" * 55])
    assert len(long_path.encode()) == 1024
    for name, path in [
        ("simple", "hello.txt"),
        ("nested", "a/b/c.txt"),
        ("utf8", "café/日本語.txt"),
        ("dots-inside", "..hidden/a..b/.profile"),
        ("spaces-and-symbols", "my files/100% done (final) #2.txt"),
        ("segment-255-bytes", "é" * 127 + "x"),
        ("path-1024-bytes", long_path),
    ]:
        r.name_rule(f"name-valid-{name}", path)
    r.name_rule("name-valid-root-in-list", "", root=True)
    for name, path in [
        ("empty", ""),
        ("absolute", "/etc/passwd"),
        ("trailing-slash", "photos/"),
        ("empty-segment", "a//b"),
        ("dot", "."),
        ("dot-segment", "a/./b"),
        ("dotdot", ".."),
        ("dotdot-inside", "a/../../b"),
        ("backslash", "a\\b"),
        ("nul", "a\x00b"),
        ("newline", "a\nb"),
        ("escape", "\x1b[31mred"),
        ("del", "a\x7f"),
        ("lone-surrogate", "a\ud800"),
        ("segment-256-bytes", "é" * 128),
        ("path-1025-bytes", long_path + "u"),
    ]:
        r.name_rule(f"name-invalid-{name}", path)
    r.name_rule("name-invalid-slash-root", "/", root=True)


def sniff_group(r: Recorder) -> None:
    r.sniff("sniff-nothing-yet", b"")
    r.sniff("sniff-v2", PREFACE[:1])
    r.sniff("sniff-legacy-put", b"put|a|1")
    r.sniff("sniff-legacy-get", b"g")
    r.sniff("sniff-legacy-upper", b"G")
    r.sniff("sniff-unknown-digit", b"0")
    r.sniff("sniff-unknown-tls", bytes.fromhex("160301"))
    r.sniff("sniff-unknown-nul", b"\x00")


def legacy_group(r: Recorder) -> None:
    h = r.legacy_header
    h("legacy-put", b"put|hello.txt|12", settled=True)
    h("legacy-put-unsettled", b"put|hello.txt|12", settled=False)
    h("legacy-put-data-follows", b"put|hello.txt|12hello world\n", settled=False)
    h("legacy-put-digit-data-ambiguous", b"put|n.txt|3123", settled=True)
    h("legacy-put-utf8-name", "put|café/résumé.pdf|0".encode(), settled=True)
    h("legacy-put-leading-zeros", b"put|a|007", settled=True)
    h("legacy-put-19-digits", b"put|a|1234567890123456789", settled=True)
    h("legacy-put-20-digits", b"put|a|12345678901234567890", settled=True)
    h("legacy-put-no-size", b"put|a|", settled=True)
    h("legacy-put-size-not-digits", b"put|a|x", settled=True)
    h("legacy-put-negative", b"put|a|-1", settled=True)
    h("legacy-get", b"get|hello.txt|0", settled=True)
    h("legacy-get-unsettled", b"get|hello.txt|0", settled=False)
    h("legacy-get-second-active-follows", b"get|hello.txt|0second_active", settled=False)
    h("legacy-get-any-third-field", b"get|hello.txt|whatever", settled=True)
    h("legacy-get-empty-third-field", b"get|hello.txt|", settled=True)
    h("legacy-get-four-fields", b"get|a|0|1", settled=True)
    h("legacy-partial-command", b"pu", settled=False)
    h("legacy-partial-command-settled", b"pu", settled=True)
    h("legacy-one-field-unsettled", b"get|hello.txt", settled=False)
    h("legacy-one-field-settled", b"get|hello.txt", settled=True)
    h("legacy-unknown-command", b"del|a|0", settled=True)
    h("legacy-uppercase-command", b"PUT|a|1", settled=True)
    h("legacy-http", b"GET / HTTP/1.1\r\n", settled=False)
    h("legacy-bad-name", b"put|../x|1", settled=True)
    h("legacy-absolute-name", b"get|/etc/passwd|0", settled=True)
    h("legacy-not-utf8", b"put|\xff\xfe|1", settled=True)
    name = "/".join(["n" * 250] * 4)  # 1003 bytes
    h("legacy-header-1024-bytes", f"get|{name}|{'0' * 16}".encode(), settled=True)
    h("legacy-header-1025-bytes", f"get|{name}|{'0' * 17}".encode(), settled=True)
    h("legacy-put-header-1024-bytes-data-follows", f"put|{name}|{'0' * 16}".encode() + b"data", settled=False)
    h("legacy-no-bar-in-1025-bytes", b"put|" + b"a" * 1021, settled=False)
    g = r.legacy_reply
    g("legacy-reply-yes", b"YES|12", settled=True)
    g("legacy-reply-yes-data-follows", b"YES|12hello world\n", settled=False)
    g("legacy-reply-yes-unsettled", b"YES|12", settled=False)
    g("legacy-reply-no", b"NO|0", settled=True)
    g("legacy-reply-partial", b"YE", settled=False)
    g("legacy-reply-yes-without-size", b"YES|", settled=True)
    g("legacy-reply-garbage", b"OK", settled=True)


GROUPS = {
    "messages": messages_group,
    "malformed": malformed_group,
    "handshake": handshake_group,
    "auth": auth_group,
    "operations": operations_group,
    "connection-errors": connection_errors_group,
    "names": names_group,
    "sniff": sniff_group,
    "legacy": legacy_group,
}


def main() -> int:
    text = SPEC.read_text(encoding="utf-8")
    new = replace_section(text, "stream-transitions", transition_table())
    recorder = Recorder()
    for group, build in GROUPS.items():
        build(recorder)
        new = replace_section(new, f"vectors-{group}", recorder.take())
    if "--check" in sys.argv:
        return 0 if new == text else 1
    SPEC.write_text(new, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
