"""CPU time per operation, client and server, for trioftp and the raw baseline.

    python bench/cpu_cost.py [--source DIR] [--rounds 9]

bench/run.py says how fast; this says where the CPU goes, which on a 2-core
machine shared by client and server is what bounds W3 and W4. Each case runs
`--rounds` times after one uncounted round; CPU is the process's user + system
time (all its threads, including those that exited) summed over the counted
rounds and divided by the operations; ops/s is the median round.

Cases:
  small-get    4 KiB GETs over one connection, 64 in flight (W3's shape)
  conn-get     a connection per 4 KiB GET, 20 at once (connection set-up and close)
  conn-1mib    a connection per 1 MiB download to a file, 50 at once (W4's shape)

The raw baseline (bench/raw_server.py and a plain-socket client in threads)
runs conn-get and conn-1mib; it has no connection reuse, so no small-get.
raw-verify (the raw server with --digests) runs conn-1mib doing a verifying
client's work, as bench/run.py's raw-verify system: BLAKE3 of the bytes checked
against the digest the server sent, written beside and renamed in.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from common import COPY_BUFFER, KiB, MiB, free_port, wait_listening, write_all  # noqa: E402

SMALL_FILES = 2000
BIG_FILES = 50
TICK = os.sysconf("SC_CLK_TCK")


def _cpu_of(pid: int) -> float:
    """User + system seconds of a process, its exited threads included."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Measure:
    """Rounds of one case: ops/s per round, CPU summed over the counted rounds."""

    def __init__(self, server_pid: int, ops: int) -> None:
        self.server_pid, self.ops = server_pid, ops
        self.rates: list[float] = []
        self.client_cpu = self.server_cpu = 0.0

    def round(self, run: Callable[[], None], *, counted: bool) -> None:
        c0, s0, t0 = _own_cpu(), _cpu_of(self.server_pid), time.perf_counter()
        run()
        t1, c1, s1 = time.perf_counter(), _own_cpu(), _cpu_of(self.server_pid)
        if counted:
            self.rates.append(self.ops / (t1 - t0))
            self.client_cpu += c1 - c0
            self.server_cpu += s1 - s0

    def row(self, system: str, case: str) -> str:
        done = self.ops * len(self.rates)
        return (
            f"{system:<10} {case:<10} {statistics.median(self.rates):>10,.0f} "
            f"{self.client_cpu / done * 1e6:>14,.0f} {self.server_cpu / done * 1e6:>14,.0f}"
        )


# ------------------------------------------------------------- the two clients


def _trioftp_cases(port: int, small: list[str], big: list[str], dest: str) -> dict[str, Callable[[], None]]:
    import trio

    import trioftp
    import trioftp.client.connection  # trioftp's names load on first use: load them before timing

    def run(main: Callable[[], Awaitable[None]]) -> Callable[[], None]:
        return lambda: trio.run(main)

    async def small_get() -> None:
        async with trioftp.open_connection("127.0.0.1", port) as conn:
            names = iter(small)

            async def getter() -> None:
                for name in names:
                    await conn.get(name)

            async with trio.open_nursery() as nursery:
                for _ in range(64):
                    nursery.start_soon(getter)

    async def conn_get() -> None:
        names = iter(small[:400])

        async def worker() -> None:
            for name in names:
                async with trioftp.open_connection("127.0.0.1", port) as conn:
                    await conn.get(name)

        async with trio.open_nursery() as nursery:
            for _ in range(20):
                nursery.start_soon(worker)

    async def conn_1mib() -> None:
        async def one(name: str) -> None:
            async with trioftp.open_connection("127.0.0.1", port) as conn:
                await conn.download(name, os.path.join(dest, name))

        async with trio.open_nursery() as nursery:
            for name in big:
                nursery.start_soon(one, name)
        _empty(dest)

    return {"small-get": run(small_get), "conn-get": run(conn_get), "conn-1mib": run(conn_1mib)}


def _raw_get(port: int, name: str, buf: bytearray, fd: int | None, hasher: Any = None) -> bytes:
    """Fetch `name` (into `fd` if given, hashing with `hasher` if given); return the digest sent, if any."""
    view = memoryview(buf)
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(f"G {name}\n".encode())
        head = sock.recv(8 if hasher is None else 40, socket.MSG_WAITALL)
        size = int.from_bytes(head[:8], "big")
        got = 0
        while got < size:
            n = sock.recv_into(buf)
            if not n:
                raise ConnectionError("raw server closed early")
            if hasher is not None:
                hasher.update(view[:n])
            if fd is not None:
                write_all(fd, view[:n])
            got += n
    return head[8:]


def _raw_cases(port: int, small: list[str], big: list[str], dest: str) -> dict[str, Callable[[], None]]:
    def threads(count: int, work: Callable[[int], None]) -> None:
        started = [threading.Thread(target=work, args=(i,)) for i in range(count)]
        for t in started:
            t.start()
        for t in started:
            t.join()

    def conn_get() -> None:
        names = iter(small[:400])
        lock = threading.Lock()

        def worker(_: int) -> None:
            buf = bytearray(64 * KiB)
            while True:
                with lock:
                    name = next(names, None)
                if name is None:
                    return
                _raw_get(port, name, buf, None)

        threads(20, worker)

    def conn_1mib() -> None:
        def one(i: int) -> None:
            fd = os.open(os.path.join(dest, big[i]), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                _raw_get(port, big[i], bytearray(COPY_BUFFER), fd)
            finally:
                os.close(fd)

        threads(len(big), one)
        _empty(dest)

    return {"conn-get": conn_get, "conn-1mib": conn_1mib}


def _raw_verify_cases(
    port: int, small: list[str], big: list[str], dest: str
) -> dict[str, Callable[[], None]]:
    import blake3

    def conn_1mib() -> None:
        def one(i: int) -> None:
            path = os.path.join(dest, big[i])
            partial = path + ".trioftp-part"
            fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                hasher = blake3.blake3()
                sent = _raw_get(port, big[i], bytearray(COPY_BUFFER), fd, hasher)
                if hasher.digest() != sent:
                    raise ValueError(f"{big[i]}: digest mismatch")
            finally:
                os.close(fd)
            os.replace(partial, path)

        started = [threading.Thread(target=one, args=(i,)) for i in range(len(big))]
        for t in started:
            t.start()
        for t in started:
            t.join()
        _empty(dest)

    return {"conn-1mib": conn_1mib}


def _empty(folder: str) -> None:
    for name in os.listdir(folder):
        os.unlink(os.path.join(folder, name))


# ------------------------------------------------------------------------ main


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--source", help="measure the trioftp package in DIR instead of the installed one")
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    if args.source:
        sys.path.insert(0, os.path.abspath(args.source))
    work = tempfile.mkdtemp(prefix="trioftp-cpu-")
    servers: list[subprocess.Popen[Any]] = []
    try:
        root, dest = os.path.join(work, "root"), os.path.join(work, "dest")
        os.makedirs(root)
        os.makedirs(dest)
        small = [f"s{i:04d}.bin" for i in range(SMALL_FILES)]
        big = [f"b{i:03d}.bin" for i in range(BIG_FILES)]
        for names, size in ((small, 4 * KiB), (big, MiB)):
            for name in names:
                with open(os.path.join(root, name), "wb") as f:
                    f.write(os.urandom(size))
        env = dict(os.environ)
        if args.source:
            env["PYTHONPATH"] = os.path.abspath(args.source)
        ports = {"trioftp": free_port(), "raw": free_port(), "raw-verify": free_port()}
        commands = {
            "trioftp": [sys.executable, "-m", "trioftp", "serve", "--root", root, "--host", "127.0.0.1",
                        "--port", str(ports["trioftp"]), "--log-level", "WARNING", "--no-legacy"],
            "raw": [sys.executable, os.path.join(HERE, "raw_server.py"), "--root", root,
                    "--port", str(ports["raw"])],
            "raw-verify": [sys.executable, os.path.join(HERE, "raw_server.py"), "--root", root,
                           "--port", str(ports["raw-verify"]), "--digests"],
        }  # fmt: skip
        print(f"{'system':<10} {'case':<10} {'ops/s':>10} {'client us/op':>14} {'server us/op':>14}")
        systems = (("trioftp", _trioftp_cases), ("raw", _raw_cases), ("raw-verify", _raw_verify_cases))
        for system, cases_of in systems:
            server = subprocess.Popen(commands[system], env=env)
            servers.append(server)
            wait_listening(ports[system])
            for case, run in cases_of(ports[system], small, big, dest).items():
                ops = {"small-get": SMALL_FILES, "conn-get": 400, "conn-1mib": BIG_FILES}[case]
                measure = Measure(server.pid, ops)
                for r in range(args.rounds + 1):
                    measure.round(run, counted=r > 0)
                print(measure.row(system, case), flush=True)
    finally:
        for server in servers:
            server.terminate()
            server.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
