"""The channel's send path: frames from many streams in one scheduler pass, written early and in order."""

from __future__ import annotations

import trio

from tests.conftest import NETWORK_TIMEOUT
from tests.test_sink import _pair
from trioftp.protocol import NEED_DATA
from trioftp.protocol.messages import Window
from trioftp.transport.channel import EAGER_WRITE_FRAMES


async def test_every_sender_returns_when_an_early_write_took_the_whole_pass() -> None:
    server, client, peer = await _pair()
    # The holder's frame, then exactly enough to write early with nothing left
    # for the holder: the senders whose frames went early must still be told.
    senders = 1 + EAGER_WRITE_FRAMES
    returned: list[int] = []

    async def send(i: int) -> None:
        await server.send(Window(increment=i + 1, stream_id=1))
        returned.append(i)

    with trio.fail_after(NETWORK_TIMEOUT):
        async with trio.open_nursery() as nursery:
            for i in range(senders):
                nursery.start_soon(send, i)
        increments = []
        while len(increments) < senders:
            client.receive_data(await peer.receive_some())
            while (event := client.next_event()) is not NEED_DATA:
                assert isinstance(event, Window)
                increments.append(event.increment)
        await server.aclose()
        await peer.aclose()
    assert sorted(returned) == list(range(senders))
    assert sorted(increments) == [i + 1 for i in range(senders)]


async def test_many_senders_in_one_pass_arrive_in_the_order_told() -> None:
    server, client, peer = await _pair()
    told: list[bytes] = []  # what the machine produced, in the order it was appended
    append = server._append

    def recording(data: bytes | bytearray) -> None:
        told.append(bytes(data))
        append(data)

    server._append = recording  # type: ignore[method-assign]
    senders = 5 * EAGER_WRITE_FRAMES + 3
    with trio.fail_after(NETWORK_TIMEOUT):
        async with trio.open_nursery() as nursery:
            for i in range(senders):
                nursery.start_soon(server.send, Window(increment=i + 1, stream_id=1))
        expected = b"".join(told)
        wire = b""
        while len(wire) < len(expected):
            wire += await peer.receive_some()
        await server.aclose()
        await peer.aclose()
    assert len(told) == senders
    assert wire == expected  # byte for byte: early writes kept the order
    client.receive_data(wire)
    increments = []
    while (event := client.next_event()) is not NEED_DATA:
        assert isinstance(event, Window)
        increments.append(event.increment)
    assert sorted(increments) == [i + 1 for i in range(senders)]
