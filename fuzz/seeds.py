"""Write seed inputs for each fuzz target: real frames and headers, so mutation starts from valid input."""

from __future__ import annotations

import sys
from pathlib import Path

from trioftp.protocol.codec import encode_message
from trioftp.protocol.errors import ErrorCode
from trioftp.protocol.frames import PREFACE
from trioftp.protocol.messages import (
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
    Kind,
    List,
    Listing,
    Mkdir,
    Put,
    Ready,
    Rename,
    Stat,
    Window,
)  # fmt: skip


def frames() -> list[bytes]:
    digest = bytes(range(32))
    messages = [
        Get(name="a/b.txt", offset=3, length=10, stream_id=1),
        Put(name="up.bin", size=5, digest=digest, resume=True, mtime_ns=7, stream_id=3),
        Data(payload=b"hello", stream_id=3),
        End(size=5, digest=digest, stream_id=3),
        List(folder="a", stream_id=5),
        Stat(name="a", stream_id=7),
        Delete(name="x", stream_id=9),
        Rename(old="x", new="y", replace=True, stream_id=11),
        Mkdir(name="d/e", stream_id=13),
        Cancel(message="stop", stream_id=1),
        Window(increment=4096, stream_id=1),
        Goodbye(message="bye"),
        Error(code=ErrorCode.PROTOCOL_ERROR, message="x"),
        Ready(offset=0, stream_id=3),
        FileInfo(name="a", kind=Kind.FILE, size=1, mtime_ns=2, digest=digest, stream_id=1),
        Listing(entries=[Entry(name="a", kind=Kind.DIR, size=0, mtime_ns=1)], last=True, stream_id=5),
        Done(stream_id=9),
    ]
    return [encode_message(m) for m in messages]


def write(root: Path) -> None:
    encoded = frames()
    corpus = {
        "server_machine": [b"\x00" + f for f in encoded] + [b"\x05" + b"".join(encoded)],
        "raw_machine": [PREFACE + f for f in encoded],
        "legacy_parser": [
            b"put|a.txt|12",
            b"get|a/b.txt|0second_active",
            b"YES|123",
            b"NO|0",
            b"put|x|5hello",
        ],
    }
    for target, inputs in corpus.items():
        folder = root / target
        folder.mkdir(parents=True, exist_ok=True)
        for index, data in enumerate(inputs):
            (folder / f"seed-{index:03d}").write_bytes(data)


if __name__ == "__main__":
    write(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "corpus")
