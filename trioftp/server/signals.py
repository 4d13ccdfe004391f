"""Serve until a signal says stop: the graceful stop of `trioftp serve`, for any program.

    server = Server(ServerConfig(root=Path("files")))
    status = trio.run(run_server, server)  # 0 once drained, 130 after a second Ctrl-C

or, beside other tasks, `server = await nursery.start(run_server, server)`.

The first SIGINT or SIGTERM calls `server.shutdown()` (stop accepting, let transfers
in flight finish for `drain_timeout`); a second one cancels what is left at once.
Python delivers signals to the main thread only, so this runs in the main thread's
`trio.run` (elsewhere `trio.open_signal_receiver` raises RuntimeError): a program
that runs Trio on another thread calls `server.shutdown()` itself.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import AsyncIterator

import trio

from trioftp.server import Server

# The logger these lines had when the command line logged them: operators' filters keep matching.
log = logging.getLogger("trioftp")


async def run_server(
    server: Server, *, task_status: trio.TaskStatus[Server] = trio.TASK_STATUS_IGNORED
) -> int:
    """Serve until SIGINT or SIGTERM, then drain and stop; a second signal stops at once.

    Args:
        server: the server to run; its `serve()` is called here.
        task_status: for `nursery.start`, which then returns the server, listening.

    Returns:
        0 once drained; if a second signal cut the drain short, 128 + its number, the
        status a shell reports for a process that signal ended (130 for Ctrl-C).

    Raises:
        OSError: the address cannot be bound (from `Server.serve`).
        RuntimeError: not in the main thread, where signals arrive.
    """
    stopped_by: list[int] = []
    # Open for the whole run: were it closed after the first signal, a second Ctrl-C
    # would raise KeyboardInterrupt in whatever task runs, out of nested nurseries.
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_stop_on_signals, server, signals, nursery.cancel_scope, stopped_by)
            await server.serve(task_status=task_status)
            nursery.cancel_scope.cancel()  # drained: stop waiting for signals
    return 128 + stopped_by[0] if stopped_by else 0


async def _stop_on_signals(
    server: Server, signals: AsyncIterator[int], scope: trio.CancelScope, stopped_by: list[int]
) -> None:
    """The first signal starts the drain; the second cancels it (the server's tasks end cleanly)."""
    draining = False
    async for signum in signals:
        name = signal.Signals(signum).name
        if not draining:
            log.info("received %s: stopping", name)
            server.shutdown()
            draining = True
            continue
        log.warning("received %s again: stopping now, transfers in flight are cut", name)
        stopped_by.append(signum)
        scope.cancel()
        return
