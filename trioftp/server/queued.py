"""A connection's GETs that wait for a runner, kept as their frames in one buffer.

A peer may ask for max_streams files at once and read none of them; the GETs
that wait behind the connection's read handles are kept as the bytes they came
as, not as message objects: a burst of 25,000 queued requests then allocates a
few large buffers instead of ~75,000 small objects, each of which can keep a
1 MiB arena of CPython's small-object allocator mapped after the burst (see
bench/RESULTS.md, "attack 2"). A GET is decoded again when it starts.

No I/O here, and no trio.
"""

from __future__ import annotations

from collections.abc import Iterator

from trioftp.protocol.codec import decode_message, encode_message
from trioftp.protocol.frames import HEADER, HEADER_SIZE, Frame, FrameType
from trioftp.protocol.messages import Get


class QueuedGets:
    """GET requests in arrival order: push at the back (or the front), pop the oldest,
    drop one by stream id (a CANCEL)."""

    __slots__ = ("_frames", "_ids")

    def __init__(self) -> None:
        self._frames = bytearray()
        self._ids: set[int] = set()

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, stream_id: int) -> bool:
        return stream_id in self._ids

    def push(self, request: Get, *, front: bool = False) -> None:
        frame = encode_message(request)
        if front:
            self._frames[0:0] = frame
        else:
            self._frames += frame
        self._ids.add(request.stream_id)

    def pop(self) -> Get | None:
        """The oldest GET, or None if there is none."""
        if not self._ids:
            return None
        request, end = self._decode(0)
        del self._frames[:end]
        self._ids.discard(request.stream_id)
        return request

    def remove(self, stream_id: int) -> Get | None:
        """Take out the GET of `stream_id` (None if it is not queued)."""
        if stream_id not in self._ids:
            return None
        for start, frame_stream, end in self._spans():
            if frame_stream == stream_id:
                request, _ = self._decode(start)
                del self._frames[start:end]
                self._ids.discard(stream_id)
                return request
        raise AssertionError(f"stream {stream_id} is queued but has no frame")  # pragma: no cover

    def take_all(self) -> list[Get]:
        """Every queued GET, oldest first; the queue is empty after."""
        requests = [self._decode(start)[0] for start, _, _ in self._spans()]
        self._frames.clear()
        self._ids.clear()
        return requests

    def _spans(self) -> Iterator[tuple[int, int, int]]:
        position = 0
        while position < len(self._frames):
            length, _, _, stream_id = HEADER.unpack_from(self._frames, position)
            end = position + HEADER_SIZE + length
            yield position, stream_id, end
            position = end

    def _decode(self, start: int) -> tuple[Get, int]:
        length, _, _, stream_id = HEADER.unpack_from(self._frames, start)
        end = start + HEADER_SIZE + length
        payload = bytes(self._frames[start + HEADER_SIZE : end])
        request = decode_message(Frame(FrameType.GET, stream_id, payload))
        assert isinstance(request, Get)
        return request, end
