"""The DATA receive fast path in the channel: payload read from the socket straight into a BlockSink."""

from __future__ import annotations

import gc

import trio
import trio.testing

from trioftp.protocol import Connection, Role, Settings
from trioftp.protocol.messages import Cancel, Data, End, Put, Ready
from trioftp.transport.channel import Channel
from trioftp.transport.inbox import StreamInbox
from trioftp.transport.sink import BlockPool, BlockSink, next_piece


def test_two_blocks_alternate() -> None:
    woken: list[int] = []
    sink = BlockSink(8, lambda: woken.append(1))
    space = sink.space()
    space[:5] = b"abcde"
    sink.filled(5)
    assert sink.take() is None and not woken
    space = sink.space()
    assert len(space) == 3
    space[:3] = b"fgh"
    sink.filled(3)
    assert woken == [1]
    first = sink.take()
    assert first is not None and bytes(first) == b"abcdefgh"
    sink.space()[:2] = b"ij"
    sink.filled(2)
    sink.release(first)
    rest = sink.take_rest()
    assert rest is not None and bytes(rest) == b"ij"
    assert rest.obj is not first.obj  # the second block
    sink.release(rest)
    assert sink.space().obj in (first.obj, rest.obj)  # reused, not a third
    assert sink.received == 10


def test_a_closed_sink_takes_nothing() -> None:
    sink = BlockSink(4, lambda: None)
    sink.space()[:4] = b"abcd"
    sink.close()
    sink.filled(4)
    assert sink.take_rest() is None and sink.received == 0


def _one_transfer(sink: BlockSink, payload: bytes) -> bytes:
    """Fill, take, release each block as reader and task would; return what the task saw."""
    seen = b""
    for i in range(0, len(payload), sink.block_size):
        chunk = payload[i : i + sink.block_size]
        sink.space()[: len(chunk)] = chunk
        sink.filled(len(chunk))
        block = sink.take_rest()
        assert block is not None
        seen += bytes(block)
        sink.release(block)
    sink.close()
    return seen


def test_a_pool_hands_written_blocks_to_the_next_transfer() -> None:
    pool = BlockPool(8, max_blocks=8)
    first = BlockSink(8, lambda: None, pool=pool)
    assert _one_transfer(first, b"abcdefghij") == b"abcdefghij"
    assert pool.held == 8  # the spare, written and released
    reused = pool._blocks[0]
    second = BlockSink(8, lambda: None, pool=pool)
    assert second.space().obj is reused and pool.held == 0
    assert _one_transfer(second, b"klmnopqrstu") == b"klmnopqrstu"  # old bytes never show through


def test_a_pool_keeps_and_serves_only_its_block_size() -> None:
    # A small file's block is cut to the file's size: kept, it would fill the
    # pool and never serve a full-size transfer.
    pool = BlockPool(8, max_blocks=8)
    small = BlockSink(5, lambda: None, pool=pool)
    assert _one_transfer(small, b"abcde") == b"abcde"
    assert pool.held == 0
    pool.give(bytearray(8))
    assert pool.take(5) is None and pool.take(8) is not None


def test_close_keeps_the_block_being_filled_out_of_the_pool() -> None:
    # The reader may hold a view of it across its wait for the socket: reusing
    # it could let a late read land in another transfer's block.
    pool = BlockPool(8, max_blocks=8)
    sink = BlockSink(8, lambda: None, pool=pool)
    sink.space()[:3] = b"abc"
    sink.filled(3)
    sink.close()
    assert pool.held == 0


def test_a_block_cut_short_by_too_much_payload_is_never_filled_again() -> None:
    # Over the limit, the task takes the block being filled while the reader
    # may still hold a view of its rest: it must not come back, even if released.
    pool = BlockPool(8, max_blocks=8)
    sink = BlockSink(8, lambda: None, limit=2, pool=pool)
    sink.space()[:3] = b"abc"
    sink.filled(3)
    assert sink.over_limit
    cut = sink.take_rest()
    assert cut is not None and bytes(cut) == b"abc"
    sink.release(cut)
    assert not sink._spares
    sink.close()
    sink.release(cut)
    assert pool.held == 0


def test_a_block_released_after_close_goes_to_the_pool_and_the_pool_is_bounded() -> None:
    pool = BlockPool(8, max_blocks=2)
    sinks = [BlockSink(8, lambda: None, pool=pool) for _ in range(3)]
    taken = []
    for sink in sinks:
        sink.space()[:8] = b"x" * 8
        sink.filled(8)
        block = sink.take()
        assert block is not None
        taken.append(block)
        sink.close()  # the task still has the block
    assert pool.held == 0
    for sink, block in zip(sinks, taken, strict=True):
        sink.release(block)
    assert pool.held == 16  # two of the three: the bound


def test_without_a_pool_blocks_are_dropped() -> None:
    sink = BlockSink(8, lambda: None)
    assert _one_transfer(sink, b"abcdefghij") == b"abcdefghij"
    assert not sink._spares and sink._block is None


async def test_next_piece_keeps_wire_order() -> None:
    inbox = StreamInbox(1)
    sink = BlockSink(4, inbox.notify)
    inbox.deliver(Data(payload=b"early", stream_id=1))  # came before the sink was added
    sink.space()[:4] = b"abcd"
    sink.filled(4)
    sink.space()[:2] = b"ef"
    sink.filled(2)
    end = End(size=11, digest=b"\0" * 32, stream_id=1)
    inbox.deliver(end)
    pieces = [await next_piece(inbox, sink) for _ in range(4)]
    assert pieces[0] == Data(payload=b"early", stream_id=1)
    assert [bytes(p) for p in pieces[1:3]] == [b"abcd", b"ef"]  # type: ignore[arg-type]
    assert pieces[3] == end


async def _pair(window: int = 1 << 20) -> tuple[Channel, Connection, trio.SocketStream]:
    """A server Channel on a real socket, the client's machine, and the client's stream."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    client_stream = await trio.testing.open_stream_to_socket_listener(listeners[0])
    server_stream = await listeners[0].accept()
    await listeners[0].aclose()
    server = Channel(server_stream, Connection(Role.SERVER, Settings(initial_window=window)))
    client = Connection(Role.CLIENT)
    await client_stream.send_all(client.initiate())
    await server.receive_events()
    await server.send(server.machine.settings.hello(digests=("blake3",)))
    client.receive_data(await client_stream.receive_some())
    client.next_event()
    await client_stream.send_all(client.send(Put(name="f", size=10**6, stream_id=1)))
    await server.receive_events()
    client.receive_data(server.machine.send(Ready(offset=0, stream_id=1)))
    client.next_event()
    return server, client, client_stream


async def test_payload_lands_in_the_sink_across_frames_and_reads() -> None:
    server, client, peer = await _pair()
    inbox = StreamInbox(1)
    sink = BlockSink(1000, inbox.notify)
    server.add_sink(1, sink)
    sizes = [1, 999, 1500, 7, 4000, 13]
    payload = bytes(i % 251 for i in range(sum(sizes)))
    wire = bytearray()
    at = 0
    for size in sizes:
        wire += client.send_data(1, payload[at : at + size])
        at += size
    wire += client.send(End(size=len(payload), digest=b"\0" * 32, stream_id=1))
    got = bytearray()
    async with trio.open_nursery() as nursery:

        async def send_slowly() -> None:
            for i in range(0, len(wire), 777):  # cuts headers and payloads anywhere
                await peer.send_all(wire[i : i + 777])
                await trio.sleep(0.001)

        nursery.start_soon(send_slowly)
        events = []
        while not events:
            events = await server.receive_events()
    assert events == [End(size=len(payload), digest=b"\0" * 32, stream_id=1)]
    inbox.deliver(events[0])
    while True:
        piece = await next_piece(inbox, sink)
        if isinstance(piece, memoryview):
            got += piece
            sink.release(piece)
        else:
            break
    assert bytes(got) == payload
    assert server.bytes_received > len(payload)


async def test_a_sink_removed_mid_payload_drops_the_rest() -> None:
    server, client, peer = await _pair()
    sink = BlockSink(64, lambda: None)
    server.add_sink(1, sink)
    frame = client.send_data(1, b"x" * 5000)
    await peer.send_all(frame[:100])
    with trio.move_on_after(0.05):
        await server.receive_events()
    server.remove_sink(1)
    await peer.send_all(frame[100:] + client.send(Cancel(stream_id=1)))
    assert await server.receive_events() == [Cancel(stream_id=1)]


async def test_an_idle_reader_keeps_no_exception_alive() -> None:
    server, _client, _peer = await _pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.receive_events)
        await trio.testing.wait_all_tasks_blocked()
        gc.collect()
        assert not [o for o in gc.get_objects() if isinstance(o, BlockingIOError)]
        nursery.cancel_scope.cancel()


async def test_more_than_the_limit_wakes_the_task_at_once() -> None:
    inbox = StreamInbox(1)
    sink = BlockSink(1024, inbox.notify, limit=3)
    sink.space()[:3] = b"abc"
    sink.filled(3)
    with trio.testing.assert_no_checkpoints():
        assert sink.take() is None and not sink.over_limit
    sink.space()[:1] = b"d"
    sink.filled(1)
    assert sink.over_limit
    with trio.fail_after(1):
        piece = await next_piece(inbox, sink)  # the partial block, not a wait for a full one
    assert isinstance(piece, memoryview) and bytes(piece) == b"abcd"


async def test_an_end_that_came_just_before_the_connection_ended_is_still_returned() -> None:
    inbox = StreamInbox(1)
    sink = BlockSink(8, inbox.notify)
    got: list[object] = []

    async def take() -> None:
        got.append(await next_piece(inbox, sink))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(take)
        await trio.testing.wait_all_tasks_blocked()
        # The reader's last read held the END and then the peer's close: both before the task runs.
        inbox.deliver(End(size=0, digest=b"x" * 32, stream_id=1))
        inbox.fail(ConnectionError("closed"))
    assert isinstance(got[0], End)
