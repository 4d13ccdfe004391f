"""Denial-of-service attacks (issue 11), one at a time, against a `trioftp serve` subprocess.

    python bench/attacks.py                          # every attack, 30 s each, 60 s to settle
    python bench/attacks.py --duration 10 --settle 10 --only 1,4

Each attack gets a fresh server (`python -m trioftp serve`, its own temp root) and
runs from its own process on 127.0.0.1 for `--duration` seconds, while this
process, from 127.0.0.2, connects, says HELLO, puts a 4 KiB file and gets it back
every half second (a "probe"), and samples the server's RSS and open descriptors
from /proc/PID. After the attack ends the server is left alone for `--settle`
seconds, then its RSS is read once more.

Attacks:
  1  one connection, 30 PUT headers for 1 GiB files, then silence
  2  200 connections x 128 GETs of a 64 KiB file, never read
  3  a download peer (4 GETs of a 64 MiB file, never read) that sends only CANCEL
     frames for a closed stream, about 1.8 KB/s
  4  one address (127.0.0.1) reconnecting silently as fast as it can: 1,000 sockets,
     each reopened as soon as the server closes it
  5  200 legacy puts at once (4 MiB each, repeated), server run with --upload-memory 16 MiB

Targets (PASS/MISS):
  served   every probe done (connect to get) within 1 s, none failed
  rss      peak RSS below upload_memory + send_memory + 64 MiB
  fds      peak descriptors below the bound protocol_spec.md section 20 gives: per
           connection its socket and 8 files open for GETs, per upload holding memory
           its partial file and its folder, + 64 (listeners, logs, the interpreter)
  settled  RSS `--settle` s after the attack within 20 % of the fresh server's

Every loop is bounded in count and in time; only loopback addresses are used.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # for tests.v2_helpers

import blake3
import trio
from common import KiB, MiB, emit, free_port, proc_status, set_parent_death_signal, wait_listening

from tests.v2_helpers import RawPeer
from trioftp.protocol import Cancel, Data, End, Error, FileInfo, Get, Put, Ready, Stat
from trioftp.protocol.codec import encode_message

SERVER_HOST, PROBE_FROM = "127.0.0.1", "127.0.0.2"
MAX_CONNECTIONS, MAX_STREAMS, DEFAULT_UPLOAD_MEMORY = 1000, 128, 256 * MiB
SEND_MEMORY = 64 * MiB  # the server's default send_memory
READ_HANDLES = 8  # files one connection holds open for GETs (trioftp/server/operations.py)
UPLOAD_RESERVATION = 8 * MiB + MiB  # initial_window + one block: the least an upload reserves
PROBE_SIZE, PROBE_EVERY, PROBE_TIMEOUT, SERVED_WITHIN = 4 * KiB, 0.5, 10.0, 1.0
SAMPLE_EVERY = 0.25
ATTACKS = {
    1: "30 PUT headers of 1 GiB, then silence",
    2: "200 conns x 128 GETs never read",
    3: "CANCELs of a closed stream, 1.8 KB/s",
    4: "one address reconnecting silently",
    5: "200 legacy puts, upload_memory 16 MiB",
}
SERVER_FLAGS = {5: ["--upload-memory", str(16 * MiB)]}
UPLOAD_MEMORY = {5: 16 * MiB}


# ------------------------------------------------------------------ the attacks (own process)


async def _opened(port: int) -> trio.SocketStream:
    """A v2 connection past the HELLO exchange (a request before it is a protocol error)."""
    stream = await trio.open_tcp_stream(SERVER_HOST, port)
    await RawPeer(stream).handshake(agent="bench-attacker")
    return stream


def _frames(*messages: Any) -> bytes:
    return b"".join(encode_message(m) for m in messages)


async def attack_put_headers(port: int, deadline: float, counts: dict[str, int]) -> None:
    async with await _opened(port) as stream:
        puts = [
            Put(name=f"big{i}.bin", size=1 << 30, digest=None, resume=False, mtime_ns=None, stream_id=i)
            for i in range(1, 61, 2)
        ]
        await stream.send_all(_frames(*puts))
        counts["puts"] = len(puts)
        await trio.sleep_until(deadline)


async def attack_unread_gets(port: int, deadline: float, counts: dict[str, int]) -> None:
    gets = _frames(*(Get(name="f64k.bin", stream_id=i) for i in range(1, 257, 2)))
    opening = trio.CapacityLimiter(50)

    async def one() -> None:
        async with opening:
            stream = await _opened(port)
        async with stream:
            await stream.send_all(gets)
            counts["connections"] += 1
            await trio.sleep_until(deadline)

    async with trio.open_nursery() as nursery:
        for _ in range(200):
            nursery.start_soon(_quietly, one)


async def attack_cancel_trickle(port: int, deadline: float, counts: dict[str, int]) -> None:
    async with await _opened(port) as stream:
        gets = [Get(name="f64m.bin", stream_id=i) for i in (3, 5, 7, 9)]
        await stream.send_all(_frames(Stat(name="f64m.bin", stream_id=1), *gets))
        await trio.sleep(0.2)  # stream 1's FILE_INFO is sent: from then on it is closed
        cancel = encode_message(Cancel(stream_id=1))
        burst = cancel * max(1, round(180 / len(cancel)))  # every 0.1 s: about 1.8 KB/s
        while trio.current_time() < deadline:
            await stream.send_all(burst)
            counts["bytes_sent"] += len(burst)
            await trio.sleep(0.1)


async def attack_reconnect_flood(port: int, deadline: float, counts: dict[str, int]) -> None:
    most = 2_000_000  # connects in all, whatever the duration

    async def one() -> None:
        while trio.current_time() < deadline and counts["connects"] < most:
            sock = trio.socket.socket()
            try:
                with trio.move_on_at(deadline):
                    await sock.connect((SERVER_HOST, port))
                    counts["connects"] += 1
                    # Silent: wait for the server to close, then reopen at once.
                    while data := await sock.recv(4096):
                        counts["refusal_bytes"] += len(data)
            except OSError:
                counts["errors"] += 1
                await trio.sleep(0.01)
            finally:
                sock.close()

    async with trio.open_nursery() as nursery:
        for _ in range(1000):
            nursery.start_soon(one)


async def attack_legacy_puts(port: int, deadline: float, counts: dict[str, int]) -> None:
    size = 4 * MiB
    payload = os.urandom(size)
    opening = trio.CapacityLimiter(50)

    async def one(index: int) -> None:
        async with opening:
            stream = await trio.open_tcp_stream(SERVER_HOST, port)
        async with stream:
            for _ in range(1000):  # puts per connection, at most
                await stream.send_all(f"put|legacy{index}.bin|{size}".encode())
                answer = b""
                while len(answer) < 2:
                    more = await stream.receive_some(2 - len(answer))
                    if not more:
                        return
                    answer += more
                await stream.send_all(payload)
                counts["puts"] += 1

    with trio.move_on_at(deadline):
        async with trio.open_nursery() as nursery:
            for index in range(200):
                nursery.start_soon(_quietly, one, index)


async def _quietly(function: Callable[..., Awaitable[None]], *args: Any) -> None:
    """A refused or reset connection is a result of the attack, not a failure of the script."""
    with contextlib.suppress(OSError, trio.BrokenResourceError, trio.ClosedResourceError):
        await function(*args)


RUNNERS: dict[int, Callable[[int, float, dict[str, int]], Awaitable[None]]] = {
    1: attack_put_headers,
    2: attack_unread_gets,
    3: attack_cancel_trickle,
    4: attack_reconnect_flood,
    5: attack_legacy_puts,
}


def run_attacker(number: int, port: int, duration: float) -> None:
    """The attacker process: run one attack for `duration` seconds, print RESULT {counts}."""
    set_parent_death_signal()

    async def main() -> dict[str, int]:
        counts: dict[str, int] = {"connects": 0, "refusal_bytes": 0, "errors": 0, "connections": 0,
                                  "puts": 0, "bytes_sent": 0}  # fmt: skip
        deadline = trio.current_time() + duration
        with trio.move_on_at(deadline + 5):  # a last bound, whatever the attack does
            try:
                await RUNNERS[number](port, deadline, counts)
            except (OSError, trio.BrokenResourceError) as exc:
                counts["errors"] += 1
                print(f"attack {number}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return {key: value for key, value in counts.items() if value}

    emit("RESULT", trio.run(main))


# ------------------------------------------------------------------ the normal client (this process)


async def _until(peer: RawPeer, wanted: type) -> Any:
    while True:
        message = await peer.receive()
        if message is None or isinstance(message, Error):
            raise ConnectionError(f"server answered {message!r}")
        if isinstance(message, wanted):
            return message


async def probe(port: int, number: int) -> tuple[float, float, float]:
    """Connect from 127.0.0.2, HELLO, put 4 KiB, get it back: (connect, put, get) seconds."""
    payload = os.urandom(PROBE_SIZE)
    name = f"probe{number}.bin"
    started = time.monotonic()
    stream = await trio.open_tcp_stream(SERVER_HOST, port, local_address=PROBE_FROM)
    async with stream:
        peer = RawPeer(stream)
        await peer.handshake()
        connected = time.monotonic()
        await peer.send(
            Put(name=name, size=PROBE_SIZE, digest=None, resume=False, mtime_ns=None, stream_id=1)
        )
        await _until(peer, Ready)
        digest = blake3.blake3(payload).digest()
        await peer.send(Data(payload=payload, stream_id=1), End(size=PROBE_SIZE, digest=digest, stream_id=1))
        await _until(peer, FileInfo)
        put_done = time.monotonic()
        await peer.send(Get(name=name, stream_id=3))
        end = await _until(peer, End)
        if end.digest != digest:
            raise ConnectionError("the probe got back other bytes")
        got = time.monotonic()
    return connected - started, put_done - connected, got - put_done


class Watch:
    """The server's RSS and descriptors, sampled; the probes' latencies."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.rss: list[int] = []  # KiB
        self.fds: list[int] = []
        self.probes: list[tuple[float, float, float]] = []
        self.failures: list[str] = []

    def sample(self) -> None:
        try:
            self.rss.append(proc_status(self.pid)["VmRSS"])
            self.fds.append(len(os.listdir(f"/proc/{self.pid}/fd")))
        except (OSError, KeyError):
            pass

    async def sampling(self) -> None:
        while True:
            self.sample()
            await trio.sleep(SAMPLE_EVERY)

    async def probing(self, port: int, stop: trio.Event) -> None:
        """Probe until `stop`; a probe under way then is finished, not dropped (it may be the slow one)."""
        for number in range(1_000_000):
            if stop.is_set():
                return
            next_probe = trio.current_time() + PROBE_EVERY
            try:
                with trio.fail_after(PROBE_TIMEOUT):
                    self.probes.append(await probe(port, number))
            except (trio.TooSlowError, OSError, ConnectionError, trio.BrokenResourceError) as exc:
                self.failures.append(f"{type(exc).__name__}: {exc}"[:120])
            with trio.move_on_at(next_probe):
                await stop.wait()


def rss_now(pid: int) -> int:
    return proc_status(pid)["VmRSS"]


async def run_one(number: int, duration: float, settle: float, root: Path) -> dict[str, Any]:
    (root / "f64k.bin").write_bytes(os.urandom(64 * KiB))
    with (root / "f64m.bin").open("wb") as f:
        for _ in range(64):
            f.write(os.urandom(MiB))
    port = free_port()
    log_path = root.parent / f"server-{number}.log"
    command = [
        sys.executable, "-m", "trioftp", "serve", "--root", str(root), "--host", SERVER_HOST,
        "--port", str(port), "--log-level", "WARNING", "--max-connections", str(MAX_CONNECTIONS),
        "--max-streams", str(MAX_STREAMS), *SERVER_FLAGS.get(number, []),
    ]  # fmt: skip
    with log_path.open("wb") as log_file:
        # Blocking Popen is fine here: nothing else runs yet, and it returns at once.
        server = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT)  # noqa: ASYNC220
    try:
        await trio.to_thread.run_sync(wait_listening, port)
        watch = Watch(server.pid)
        with trio.fail_after(PROBE_TIMEOUT):
            await probe(port, -1)  # warm: the first request's imports and caches are not the attack's
        await trio.sleep(1)
        fresh = rss_now(server.pid)
        attack = ["--attacker", str(number), "--port", str(port), "--duration", str(duration)]
        # Started from this (the main) thread: the attacker's parent-death signal fires when the
        # thread that started it ends, and trio's open_process starts it from a worker thread.
        attacker = subprocess.Popen([sys.executable, __file__, *attack], stdout=subprocess.PIPE)  # noqa: ASYNC220
        stop = trio.Event()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch.sampling)
            async with trio.open_nursery() as probing:
                probing.start_soon(watch.probing, port, stop)
                try:
                    out, _ = await trio.to_thread.run_sync(attacker.communicate, None, duration + 30)
                except subprocess.TimeoutExpired:
                    attacker.kill()
                    out, _ = attacker.communicate()
                stop.set()
            nursery.cancel_scope.cancel()
        result_line = [line for line in out.decode().splitlines() if line.startswith("RESULT ")]
        counts = json.loads(result_line[-1][7:]) if result_line else {"no result; exit": attacker.returncode}
        await trio.sleep(settle)
        after = rss_now(server.pid)
        return {
            "number": number, "fresh": fresh, "after": after, "watch": watch, "counts": counts,
            "alive": server.poll() is None,
        }  # fmt: skip
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGTERM)
            try:
                await trio.to_thread.run_sync(lambda: server.wait(timeout=20))
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


def report(result: dict[str, Any]) -> list[str]:
    number, watch = result["number"], result["watch"]
    upload_memory = UPLOAD_MEMORY.get(number, DEFAULT_UPLOAD_MEMORY)
    rss_bound = (upload_memory + SEND_MEMORY + 64 * MiB) / KiB
    uploads = upload_memory // min(UPLOAD_RESERVATION, upload_memory)
    fd_bound = MAX_CONNECTIONS * (1 + READ_HANDLES) + 2 * uploads + 64
    peak_rss = max(watch.rss, default=0)
    peak_fds = max(watch.fds, default=0)
    totals = [sum(p) for p in watch.probes]
    puts = [p[1] * 1000 for p in watch.probes]
    gets = [p[2] * 1000 for p in watch.probes]
    worst = max(totals, default=float("inf"))
    served = bool(watch.probes) and not watch.failures and worst <= SERVED_WITHIN

    def ms(values: list[float]) -> str:
        return f"{statistics.median(values):.1f}/{max(values):.1f}" if values else "-"

    lines = [
        f"attack {number}: {ATTACKS[number]}",
        f"  attacker: {result['counts']}; server {'alive' if result['alive'] else 'GONE'}",
        f"  RSS MiB fresh {result['fresh'] / KiB:.1f}, peak {peak_rss / KiB:.1f}, "
        f"after settle {result['after'] / KiB:.1f}; fds peak {peak_fds}",
        f"  probes from {PROBE_FROM}: {len(watch.probes)} done, {len(watch.failures)} failed; "
        f"put ms p50/max {ms(puts)}, get ms p50/max {ms(gets)}, whole probe max "
        f"{worst * 1000:.0f} ms" + (f"; first failure: {watch.failures[0]}" if watch.failures else ""),
    ]
    settled = result["after"] <= result["fresh"] * 1.2
    for ok, what, figure in [
        (served, f"served: every probe within {SERVED_WITHIN:g} s",
         f"max {worst:.2f} s, {len(watch.failures)} failed"),
        (peak_rss < rss_bound, f"rss: peak < upload + send memory + 64 MiB = {rss_bound / KiB:.0f} MiB",
         f"{peak_rss / KiB:.1f} MiB"),
        (peak_fds < fd_bound, f"fds: peak < {MAX_CONNECTIONS}x{1 + READ_HANDLES}+2x{uploads}+64 = {fd_bound}",
         str(peak_fds)),
        (settled, "settled: RSS after <= 1.2x fresh", f"{result['after'] / max(result['fresh'], 1):.2f}x"),
    ]:  # fmt: skip
        lines.append(f"  {'PASS' if ok else 'MISS'}  {what:<52} {figure}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=30.0, help="seconds per attack (default 30)")
    parser.add_argument(
        "--settle", type=float, default=60.0, help="seconds after an attack before RSS is read"
    )
    parser.add_argument("--only", default="", help="attack numbers, e.g. 1,4 (default: all)")
    parser.add_argument("--attacker", type=int, help=argparse.SUPPRESS)  # run one attack (a child process)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.attacker is not None:
        run_attacker(args.attacker, args.port, args.duration)
        return
    chosen = [int(n) for n in args.only.split(",")] if args.only else sorted(ATTACKS)
    print(f"attacks {chosen}: {args.duration:g} s each, {args.settle:g} s to settle; "
          f"max_connections {MAX_CONNECTIONS}, max_streams {MAX_STREAMS}", flush=True)  # fmt: skip
    for number in chosen:
        with tempfile.TemporaryDirectory(prefix=f"trioftp-attack{number}-") as temp:
            root = Path(temp) / "root"
            root.mkdir()
            result = trio.run(run_one, number, args.duration, args.settle, root)
            print("\n".join(report(result)), flush=True)


if __name__ == "__main__":
    main()
