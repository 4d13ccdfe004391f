"""Server metrics in Prometheus text format, served over HTTP by a small Trio task.

The numbers live in a private prometheus_client registry (one per Server, so
two servers in one process, as in tests, never mix); `serve_metrics` answers
`GET /metrics` with them and anything else with 404.
"""

from __future__ import annotations

import enum
import logging
from functools import partial

import trio
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

log = logging.getLogger("trioftp.metrics")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
MAX_REQUEST_BYTES = 8192


class Metrics:
    """Everything the server counts."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.connections_open = Gauge("trioftp_connections_open", "Connections being served", registry=r)
        self.connections_total = Counter(
            "trioftp_connections", "Connections accepted, by dialect", ["dialect"], registry=r
        )
        self.connections_refused = Counter(
            "trioftp_connections_refused", "Connections refused, by reason", ["reason"], registry=r
        )
        self.transfers = Counter(
            "trioftp_transfers",
            "Finished transfers, by operation and outcome",
            ["operation", "outcome"],
            registry=r,
        )
        self.transfers_in_flight = Gauge("trioftp_transfers_in_flight", "Transfers running now", registry=r)
        self.bytes_in = Counter("trioftp_bytes_received", "File bytes received (uploads)", registry=r)
        self.bytes_out = Counter("trioftp_bytes_sent", "File bytes sent (downloads)", registry=r)
        self.duration = Histogram(
            "trioftp_transfer_duration_seconds",
            "Transfer duration",
            ["operation"],
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 60, 300, 3600),
            registry=r,
        )
        self.protocol_errors = Counter(
            "trioftp_protocol_errors", "Errors sent to peers, by code", ["code"], registry=r
        )
        self.legacy_sessions = Counter("trioftp_legacy_sessions", "Legacy text-protocol sessions", registry=r)
        # The same numbers as plain ints, for STATUS (prometheus_client keeps its values private).
        self.running = 0
        self.received = 0
        self.sent = 0

    def transfer_started(self) -> None:
        self.running += 1
        self.transfers_in_flight.inc()

    def transfer_moved(self, *, received: int = 0, sent: int = 0) -> None:
        """File bytes, counted as they go so a long transfer shows before it ends."""
        if received > 0:
            self.received += received
            self.bytes_in.inc(received)
        if sent > 0:
            self.sent += sent
            self.bytes_out.inc(sent)

    def transfer_finished(self, operation: str, outcome: str, seconds: float) -> None:
        self.running -= 1
        self.transfers_in_flight.dec()
        self.transfers.labels(operation, outcome).inc()
        self.duration.labels(operation).observe(seconds)

    def error_sent(self, code: enum.Enum) -> None:
        """An ERROR frame sent to a peer, on a stream or on the connection."""
        self.protocol_errors.labels(code.name).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


async def serve_metrics(
    metrics: Metrics, host: str, port: int, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
) -> None:
    """Serve `GET /metrics` on host:port until cancelled; `task_status.started(port)`."""
    listeners = await trio.open_tcp_listeners(port, host=host)
    bound = listeners[0].socket.getsockname()[1]
    log.info("metrics on http://%s:%d/metrics", host, bound)
    task_status.started(bound)
    await trio.serve_listeners(partial(_answer, metrics=metrics), listeners)


async def _answer(stream: trio.SocketStream, metrics: Metrics) -> None:
    try:
        with trio.move_on_after(5.0):
            request = b""
            while b"\r\n\r\n" not in request and len(request) < MAX_REQUEST_BYTES:
                chunk = await stream.receive_some(4096)
                if not chunk:
                    break
                request += chunk
            line = request.split(b"\r\n", 1)[0].split()
            if len(line) >= 2 and line[0] == b"GET" and line[1].split(b"?")[0] == b"/metrics":
                body, status = metrics.render(), b"200 OK"
            else:
                body, status = b"not found: try /metrics\n", b"404 Not Found"
            head = (
                b"HTTP/1.0 " + status + b"\r\nContent-Type: " + CONTENT_TYPE.encode()
                + b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n"
            )  # fmt: skip
            await stream.send_all(head + body)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    finally:
        await stream.aclose()
