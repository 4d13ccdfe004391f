"""Where an idle trioftp connection's server memory goes (tracemalloc), for W6.

    python bench/idle_memory.py [--connections 2000] [--top 15]

Runs a trioftp Server in this process with tracemalloc on, has a client process
(bench/worker.py, the W6 idle job) open N v2 connections that finish the HELLO
exchange and stay idle, then prints the Python allocations that grew, grouped by
the innermost trioftp (or trio) frame that made them, per connection.
tracemalloc sees the Python heap only: the RSS figure printed beside it also
holds what malloc and the kernel add.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import tracemalloc
from collections import Counter
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import proc_status, raise_nofile

HERE = os.path.dirname(os.path.abspath(__file__))


def _short(frame: tracemalloc.Frame) -> str:
    name = frame.filename
    if "/trioftp/" in name:
        name = "trioftp/" + name.rsplit("/trioftp/", 1)[1]
    for marker in ("site-packages/", "lib/python3.11/"):
        if marker in name:
            name = name.split(marker, 1)[1]
    return f"{name}:{frame.lineno}"


def _source(site: str) -> str:
    """The text of a trioftp/ source line named 'trioftp/x.py:N'."""
    import linecache

    import trioftp

    path, _, line = site.partition(":")
    if not path.startswith("trioftp/") or not line.isdigit():
        return ""
    full = os.path.join(os.path.dirname(os.path.dirname(trioftp.__file__)), path)
    return "| " + linecache.getline(full, int(line)).strip()[:70]


def where(trace: tracemalloc.Traceback) -> str:
    """The innermost trioftp/ frame, then the innermost frame: 'trioftp line <- allocating line'."""
    frames = list(trace)[::-1]  # a Traceback runs oldest to newest: newest first here
    ours = next((f for f in frames if "/trioftp/" in f.filename), None)
    inner = _short(frames[0])
    if ours is None:
        return inner
    return _short(ours) if ours is frames[0] else f"{_short(ours)}  <-  {inner}"


async def main(args: argparse.Namespace) -> None:
    import trio

    from trioftp.config import ServerConfig
    from trioftp.server import Server

    root = Path(tempfile.mkdtemp(prefix="trioftp-idle-"))
    n = args.connections
    config = ServerConfig(
        root=root, port=0, log_level="WARNING", max_connections=n + 100, max_connections_per_ip=n + 100
    )
    server = Server(config)
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve)

        async def hold(count: int) -> subprocess.Popen[str]:
            job = {
                "system": "trioftp",
                "workload": "idle",
                "host": "127.0.0.1",
                "port": server.port,
                "count": count,
            }
            path = root.parent / f"{root.name}-job.json"
            path.write_text(json.dumps(job))
            proc = subprocess.Popen(  # noqa: ASYNC220 (started once, before the measurement)
                [sys.executable, os.path.join(HERE, "worker.py"), str(path)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            assert proc.stdin and proc.stdout
            await trio.to_thread.run_sync(proc.stdout.readline)  # READY
            proc.stdin.write("GO\n")
            proc.stdin.flush()
            line = await trio.to_thread.run_sync(proc.stdout.readline, abandon_on_cancel=True)  # HELD
            # let the server finish every handshake
            await trio.sleep(1.0)
            print(f"client: {line.strip()}")
            return proc

        warm = await hold(50)
        warm.stdin.close()  # type: ignore[union-attr]
        await trio.to_thread.run_sync(warm.wait)
        await trio.sleep(0.5)
        tracemalloc.start(12)
        rss0 = proc_status(os.getpid())["VmRSS"]
        before = tracemalloc.take_snapshot()
        proc = await hold(n)
        after = tracemalloc.take_snapshot()
        rss1 = proc_status(os.getpid())["VmRSS"]
        stats = after.compare_to(before, "traceback")
        by_site: Counter[str] = Counter()
        by_line: Counter[str] = Counter()
        for stat in stats:
            if stat.size_diff > 0:
                site = where(stat.traceback)
                by_site[site] += stat.size_diff
                by_line[site.split("  <-  ")[0]] += stat.size_diff
        heap = sum(by_site.values())
        print(
            f"\n{n} idle connections: RSS +{(rss1 - rss0) / n:.2f} KiB/conn; "
            f"Python heap (tracemalloc) +{heap / 1024 / n:.2f} KiB/conn"
        )
        print("\nPython allocations per connection, by the innermost trioftp/ line (all that it led to):")
        for site, size in by_line.most_common(args.top):
            print(f"  {size / n:8.0f} B  {site}  {_source(site)}")
        print("\n... and by the line that allocated:")
        for site, size in by_site.most_common(args.top):
            print(f"  {size / n:8.0f} B  {site}")
        proc.stdin.close()  # type: ignore[union-attr]
        await trio.to_thread.run_sync(proc.wait)
        server.shutdown()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--connections", type=int, default=2000)
    parser.add_argument("--top", type=int, default=15)
    raise_nofile()
    import trio

    trio.run(main, parser.parse_args())
