"""Fuzz targets for the byte-level parsers: frames + codec + state machine, and the legacy parser.

Each target takes arbitrary bytes and may only fail with the protocol's own
error types; anything else (or an unbounded buffer) is a crash for the fuzzer.
Run them with `fuzz/run.sh` (atheris, coverage-guided, time-bounded).
"""

from __future__ import annotations

import contextlib

from trioftp.protocol import NEED_DATA, PEER_CLOSED, Connection, ProtocolError, Role, Settings
from trioftp.protocol.frames import HEADER_SIZE
from trioftp.protocol.legacy_codec import LegacyError, complete_if_settled, parse_get_reply, parse_header

_CLIENT_HELLO = Connection(Role.CLIENT).initiate()


def server_machine(data: bytes) -> None:
    """A server fed the client's preface and HELLO, then the fuzzer's bytes in two pieces."""
    machine = Connection(Role.SERVER, Settings(max_frame_size=64 * 1024))
    split = data[0] if data else 0
    body = data[1:]
    pieces = [_CLIENT_HELLO, body[:split], body[split:], b""]
    answered = False
    try:
        for piece in pieces:
            machine.receive_data(piece)
            while True:
                event = machine.next_event()
                if event is NEED_DATA or event is PEER_CLOSED:
                    break
                if not answered:
                    machine.send(machine.settings.hello(digests=("blake3",)))
                    answered = True
            limit = HEADER_SIZE + max(machine.settings.max_frame_size, 16 * 1024)
            assert machine._decoder.buffered <= limit + len(piece), "decoder buffered past the frame limit"
    except ProtocolError:
        pass


def raw_machine(data: bytes) -> None:
    """A server fed the fuzzer's bytes from the very first byte (preface included)."""
    machine = Connection(Role.SERVER)
    try:
        machine.receive_data(data)
        machine.receive_data(b"")
        while machine.next_event() not in (NEED_DATA, PEER_CLOSED):
            pass
    except ProtocolError:
        pass


def legacy_parser(data: bytes) -> None:
    for settled in (False, True):
        try:
            parsed = parse_header(data, settled=settled)
        except LegacyError:
            continue
        if parsed is not None:
            header, used = parsed
            assert 0 < used <= len(data)
            assert header.name
        complete_if_settled(data)
    for settled in (False, True):
        with contextlib.suppress(LegacyError):
            parse_get_reply(data, settled=settled)


TARGETS = {"server_machine": server_machine, "raw_machine": raw_machine, "legacy_parser": legacy_parser}
