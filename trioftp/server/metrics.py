"""Server metrics in Prometheus text format, served over HTTP by a small Trio task.

Each Server counts in its own Metrics (so two servers in one process, as in
tests, never mix); `serve_metrics` answers `GET /metrics` with them and
anything else with 404.
"""

from __future__ import annotations

import bisect
import enum
import logging
from collections import Counter
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import trio

log = logging.getLogger("trioftp.metrics")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
MAX_REQUEST_BYTES = 8192
DURATION_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 60, 300, 3600)


class Metrics:
    """Everything the server counts, as plain numbers.

    Counting happens on every request, so it is a dict or int update; the
    Prometheus families are built from these numbers only when scraped (and
    prometheus_client is imported only then: a server without `--metrics`
    never pays for it).
    """

    def __init__(self) -> None:
        self.open_connections: Callable[[], int] = lambda: 0
        self.connections: Counter[str] = Counter()  # by dialect
        self.refused: Counter[str] = Counter()  # by reason
        self.finished: Counter[tuple[str, str]] = Counter()  # by (operation, outcome)
        self.durations: dict[str, list[float]] = {}  # operation -> [count per bucket..., +Inf, sum]
        self.errors: Counter[str] = Counter()  # by code name
        self.legacy_sessions = 0
        # Also what STATUS reports.
        self.running = 0
        self.received = 0
        self.sent = 0

    def connection_accepted(self, dialect: str) -> None:
        self.connections[dialect] += 1

    def connection_refused(self, reason: str) -> None:
        self.refused[reason] += 1

    def legacy_session(self) -> None:
        self.legacy_sessions += 1

    def transfer_started(self) -> None:
        self.running += 1

    def transfer_moved(self, *, received: int = 0, sent: int = 0) -> None:
        """File bytes, counted as they go so a long transfer shows before it ends."""
        if received > 0:
            self.received += received
        if sent > 0:
            self.sent += sent

    def transfer_finished(self, operation: str, outcome: str, seconds: float) -> None:
        self.running -= 1
        self.finished[operation, outcome] += 1
        counts = self.durations.get(operation)
        if counts is None:
            counts = self.durations[operation] = [0.0] * (len(DURATION_BUCKETS) + 2)
        counts[bisect.bisect_left(DURATION_BUCKETS, seconds)] += 1  # "le": a bucket includes its bound
        counts[-1] += seconds

    def error_sent(self, code: enum.Enum) -> None:
        """An ERROR frame sent to a peer, on a stream or on the connection."""
        self.errors[code.name] += 1

    def render(self) -> bytes:
        from prometheus_client import CollectorRegistry, generate_latest

        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Collector(self))
        return generate_latest(registry)


class _Collector:
    """The Prometheus families for one scrape of a Metrics."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
        from prometheus_client.utils import floatToGoString

        m = self.metrics
        yield GaugeMetricFamily("trioftp_connections_open", "Connections being served", m.open_connections())
        yield _by_label(
            CounterMetricFamily,
            "trioftp_connections",
            "Connections accepted, by dialect",
            ["dialect"],
            {(k,): v for k, v in m.connections.items()},
            ("v2", "legacy"),
        )
        yield _by_label(
            CounterMetricFamily,
            "trioftp_connections_refused",
            "Connections refused, by reason",
            ["reason"],
            {(k,): v for k, v in m.refused.items()},
        )
        yield _by_label(
            CounterMetricFamily,
            "trioftp_transfers",
            "Finished transfers, by operation and outcome",
            ["operation", "outcome"],
            {key: value for key, value in m.finished.items()},
        )
        yield GaugeMetricFamily("trioftp_transfers_in_flight", "Transfers running now", m.running)
        yield CounterMetricFamily("trioftp_bytes_received", "File bytes received (uploads)", m.received)
        yield CounterMetricFamily("trioftp_bytes_sent", "File bytes sent (downloads)", m.sent)
        duration = HistogramMetricFamily(
            "trioftp_transfer_duration_seconds", "Transfer duration", labels=["operation"]
        )
        for operation, counts in sorted(m.durations.items()):
            cumulative, buckets = 0.0, []
            for bound, count in zip(
                (*map(floatToGoString, DURATION_BUCKETS), "+Inf"), counts[:-1], strict=True
            ):
                cumulative += count
                buckets.append((bound, cumulative))
            duration.add_metric([operation], buckets, counts[-1])
        yield duration
        yield _by_label(
            CounterMetricFamily,
            "trioftp_protocol_errors",
            "Errors sent to peers, by code",
            ["code"],
            {(k,): v for k, v in m.errors.items()},
        )
        yield CounterMetricFamily(
            "trioftp_legacy_sessions", "Legacy text-protocol sessions", m.legacy_sessions
        )


def _by_label(
    family: Any, name: str, documentation: str, labels: list[str],
    values: dict[tuple[str, ...], int], always: tuple[str, ...] = (),
) -> Any:  # fmt: skip
    metric = family(name, documentation, labels=labels)
    for label in always:
        values.setdefault((label,), 0)
    for key, value in sorted(values.items()):
        metric.add_metric(list(key), value)
    return metric


async def serve_metrics(
    metrics: Metrics, host: str, port: int, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
) -> None:
    """Serve `GET /metrics` on host:port until cancelled; `task_status.started(port)`."""
    import prometheus_client  # noqa: F401 - now, not on the loop at the first scrape (~50 ms)

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
