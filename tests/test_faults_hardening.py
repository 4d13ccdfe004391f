"""Faults against the real server that test_v2_faults/test_v2_limits do not cover.

A peer that stops reading, hundreds of connections from one address, a full
disk, a server killed mid-upload, a peer that closes while its upload is being
written. Each time: the client gets a clear answer (or a closed connection),
nothing half-written shows, and everyone else is served.
"""

from __future__ import annotations

import pytest
import trio

from trioftp.channel import Channel, ChannelClosed
from trioftp.protocol import Connection, Data, Put, Ready, Role, Settings
from trioftp.protocol.connection import NEED_DATA, PEER_CLOSED

# ------------------------------------------------ a peer gone during our work


def _server_machine_after_eof() -> Connection:
    """A server machine with an upload open whose peer sent some DATA, then closed."""
    client = Connection(Role.CLIENT)
    server = Connection(Role.SERVER, Settings(initial_window=32 * 1024))
    server.receive_data(client.initiate())
    assert server.next_event().__class__.__name__ == "Hello"
    client.receive_data(server.send(server.settings.hello(digests=("blake3",))))
    client.next_event()
    server.receive_data(client.send(Put(name="f.bin", size=100_000, stream_id=1)))
    assert isinstance(server.next_event(), Put)
    client.receive_data(server.send(Ready(offset=0, stream_id=1)))
    client.next_event()
    server.receive_data(client.send(Data(payload=b"x" * 20_000, stream_id=1)))
    assert isinstance(server.next_event(), Data)
    server.receive_data(b"")
    assert server.next_event() is PEER_CLOSED
    assert server.next_event() in (NEED_DATA, PEER_CLOSED)
    return server


async def test_sending_after_the_peer_closed_is_channel_closed() -> None:
    # The server's writer thread finishes a block just as the reader sees EOF: granting
    # more credit must end the stream quietly, not fail it with LocalProtocolError
    # (which the session logged as "stream failed" and answered INTERNAL).
    left, right = trio.testing.memory_stream_pair()
    channel = Channel(left, _server_machine_after_eof())
    with pytest.raises(ChannelClosed):
        await channel.acknowledge(1, 20_000)
    with pytest.raises(ChannelClosed):
        await channel.send_if_open(Ready(offset=0, stream_id=1))
    await right.aclose()
