"""W1 and W2 on an S3 store: through a trioftp server backed by a bucket vs boto3 straight to the bucket.

    python bench/s3_bench.py [--size-mib 256] [--rounds 3] [--endpoint URL --bucket NAME]
                             [--compare DIR] [--profile DIR] [--rgw-tcp-nodelay]

Without --endpoint it starts a one-node Ceph (tests/ceph.py) in a temporary
folder and stops it at the end. The limit is boto3's own managed transfer
(upload_file / download_file: multipart, 10 threads) talking straight to the
same engine; trioftp is `trioftp serve --store s3://...` in its own process
and the trioftp client library in this one, every byte verified (BLAKE3 on
the server's side, the benchmark's own SHA-256 after each download). Each
round runs both in alternating order; the table shows medians and each
round's figures. Credentials: the test user's keys for the Ceph it starts,
else as boto3 finds them.

--compare DIR runs a second server from another checkout of trioftp (its
trioftp/ package, same client) in the same rounds, for an A/B in the same
minutes: its figures are "W1 B" and "W2 B". --profile DIR records the server
with py-spy (raw folded stacks, per round and workload) and each server
thread's CPU seconds from /proc during its transfers.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import boto3  # noqa: E402
import boto3.s3.transfer  # noqa: E402
import trio  # noqa: E402

from bench.common import MiB, sha256_file  # noqa: E402
from trioftp import open_connection  # noqa: E402


def start_server(
    bucket: str, endpoint: str, log: Path, tree: Path | None = None, label: str = ""
) -> tuple[subprocess.Popen[bytes], int]:
    env = dict(os.environ)
    if tree is not None:  # another checkout's trioftp package
        env["PYTHONPATH"] = os.pathsep.join([str(tree), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    prefix = f"bench{label}"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "trioftp", "serve", "--store", f"s3://{bucket}/{prefix}", "--s3-endpoint",
             endpoint, "--port", "0", "--min-rate", "0"],
            stderr=out, env=env, cwd=str(tree) if tree is not None else None,
        )  # fmt: skip
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        match = re.search(r"serving .* on 127\.0\.0\.1:(\d+)", log.read_text(errors="replace"))
        if match:
            return process, int(match.group(1))
        if process.poll() is not None:
            raise SystemExit(f"trioftp serve exited: {log.read_text(errors='replace')}")
        time.sleep(0.1)
    raise SystemExit("trioftp serve did not start within 30 s")


async def trioftp_put(port: int, source: Path, name: str) -> float:
    async with open_connection("127.0.0.1", port) as conn:
        started = time.perf_counter()
        await conn.upload(source, name, resume=False)
        return time.perf_counter() - started


async def trioftp_get(port: int, name: str, target: Path) -> float:
    async with open_connection("127.0.0.1", port) as conn:
        started = time.perf_counter()
        await conn.download(name, target, resume=False)
        return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--endpoint", help="an S3 engine already running (else a Ceph is started)")
    parser.add_argument("--bucket", default="trioftp-bench")
    parser.add_argument(
        "--rgw-tcp-nodelay", action="store_true",
        help="the Ceph it starts runs beast with tcp_nodelay=1 (no ~40 ms Nagle wait per response)",
    )  # fmt: skip
    parser.add_argument(
        "--compare", type=Path, action="append", default=[],
        help="another trioftp checkout: its server too, as B (given again: C, ...)",
    )  # fmt: skip
    parser.add_argument("--profile", type=Path, help="record the server(s) with py-spy into this folder")
    parser.add_argument(
        "--cpu", action="store_true",
        help="print the CPU seconds of server, client and engine for every transfer (boto3's too)",
    )  # fmt: skip
    args = parser.parse_args()
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)

    with tempfile.TemporaryDirectory(prefix="trioftp-s3-bench-") as folder:
        work = Path(folder)
        ceph = None
        endpoint = args.endpoint
        if endpoint is None:
            from tests.ceph import Ceph

            # Sparse: room for every round's copies.
            ceph = Ceph(work / "ceph", block_gib=32, tcp_nodelay=args.rgw_tcp_nodelay)
            started = time.monotonic()
            ceph.start()
            print(f"Ceph up in {time.monotonic() - started:.1f} s at {ceph.endpoint}", flush=True)
            endpoint = ceph.endpoint
            os.environ["AWS_ACCESS_KEY_ID"] = ceph.access_key
            os.environ["AWS_SECRET_ACCESS_KEY"] = ceph.secret_key
        server = None
        others: list[subprocess.Popen[bytes]] = []
        try:
            s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
            if ceph is not None:
                s3.create_bucket(Bucket=args.bucket)
            source = work / "source.bin"
            with source.open("wb") as out:
                for _ in range(args.size_mib):
                    out.write(os.urandom(MiB))
            expected = sha256_file(str(source))
            server, port = start_server(args.bucket, endpoint, work / "serve.log")
            servers = {"trioftp": (server, port)}
            for label, tree in zip("BCDEF", args.compare, strict=False):
                other = start_server(args.bucket, endpoint, work / f"serve-{label}.log", tree, label)
                others.append(other[0])
                servers[label] = other
            transfer = boto3.s3.transfer.TransferConfig()  # boto3's defaults: 8 MiB parts, 10 threads
            size_mb = args.size_mib * MiB / 1e6
            rows: list[dict[str, float]] = []
            for round_number in range(-1, args.rounds):  # round -1 warms the engine up, uncounted
                workloads = Round(s3, args.bucket, source, expected, work, size_mb, transfer)
                workloads.profile = args.profile
                workloads.cpu = args.cpu
                workloads.engine = ceph.pids() if ceph is not None else {}
                workloads.round = round_number + 1
                runs: list[Callable[[], None]] = [partial(workloads.boto3_put_get)]
                runs += [partial(workloads.trioftp_put_get, label, *pair) for label, pair in servers.items()]
                if round_number % 2:
                    runs.reverse()
                for run in runs:
                    run()
                shown = ", ".join(f"{k} {v:.0f} MB/s" for k, v in workloads.figures.items())
                if round_number < 0:
                    print(f"warm-up (not counted): {shown}", flush=True)
                    continue
                rows.append(workloads.figures)
                print(f"round {round_number + 1}: {shown}", flush=True)
            report(rows, args.size_mib, list(servers))
        except BaseException:
            log = work / "serve.log"
            if log.exists():
                tail = log.read_text(errors="replace")[-6000:]
                print(f"the server's log, to its end:\n{tail}", file=sys.stderr)
            raise
        finally:
            try:
                for process in (server, *others):
                    if process is not None:
                        process.terminate()
                        try:
                            process.wait(timeout=30)
                        except subprocess.TimeoutExpired:
                            process.kill()  # its clean-ups wait on an engine that stalled
                            process.wait()
            finally:
                if ceph is not None:
                    ceph.stop()
    return 0


class Round:
    """One round of the four transfers; `figures` gets MB/s by workload."""

    def __init__(
        self, s3: Any, bucket: str, source: Path, expected: str, work: Path, size_mb: float, transfer: Any,
    ) -> None:  # fmt: skip
        self.s3, self.bucket, self.source = s3, bucket, source
        self.expected, self.work, self.size_mb, self.transfer = expected, work, size_mb, transfer
        self.figures: dict[str, float] = {}
        self.profile: Path | None = None
        self.cpu = False
        self.engine: dict[str, int] = {}  # the engine's processes to account, by role
        self.round = 0

    def boto3_put_get(self) -> None:
        self.boto3_put()
        self.boto3_get()

    def boto3_put(self) -> None:
        with self.accounted(None, "boto3-W2"):
            started = time.perf_counter()
            self.s3.upload_file(str(self.source), self.bucket, "direct/source.bin", Config=self.transfer)
            self.figures["W2 boto3"] = self.size_mb / (time.perf_counter() - started)

    def boto3_get(self) -> None:
        target = self.work / "boto3.bin"
        with self.accounted(None, "boto3-W1"):
            started = time.perf_counter()
            self.s3.download_file(self.bucket, "direct/source.bin", str(target), Config=self.transfer)
            self.figures["W1 boto3"] = self.size_mb / (time.perf_counter() - started)
        assert sha256_file(str(target)) == self.expected
        target.unlink()

    def trioftp_put_get(self, label: str, server: subprocess.Popen[bytes], port: int) -> None:
        with self.watched(server, f"{label}-W2"), self.accounted(server, f"{label}-W2"):
            seconds = trio.run(trioftp_put, port, self.source, "source.bin")
        self.figures[f"W2 {label}"] = self.size_mb / seconds
        target = self.work / "trioftp.bin"
        with self.watched(server, f"{label}-W1"), self.accounted(server, f"{label}-W1"):
            seconds = trio.run(trioftp_get, port, "source.bin", target)
        self.figures[f"W1 {label}"] = self.size_mb / seconds
        assert sha256_file(str(target)) == self.expected
        target.unlink()

    @contextlib.contextmanager
    def accounted(self, server: subprocess.Popen[bytes] | None, what: str) -> Iterator[None]:
        """With --cpu: CPU seconds of the server, the client (this process, by thread) and the engine."""
        if not self.cpu or self.round < 1:
            yield
            return
        pids = {"engine " + role: pid for role, pid in self.engine.items()}
        if server is not None:
            pids["server"] = server.pid
        before = {role: thread_cpu(pid) for role, pid in pids.items()}
        mine, idle_before, started = thread_cpu(os.getpid()), machine_idle(), time.perf_counter()
        try:
            yield
        finally:
            seconds, idle = time.perf_counter() - started, machine_idle() - idle_before
            shown = [f"client {_spent(mine, thread_cpu(os.getpid()))}"]
            shown += [f"{role} {_spent(before[role], thread_cpu(pid))}" for role, pid in pids.items()]
            print(
                f"  cpu round{self.round} {what}: {seconds:.2f} s wall, {idle:.2f} core-s idle; "
                + "; ".join(shown)
            )

    @contextlib.contextmanager
    def watched(self, server: subprocess.Popen[bytes], what: str) -> Iterator[None]:
        """With --profile: py-spy on the server, and its threads' CPU seconds, during the block."""
        if self.profile is None or self.round < 1:
            yield
            return
        name = f"round{self.round}-{what}"
        spy = subprocess.Popen(
            ["py-spy", "record", "--format", "raw", "--threads", "--rate", "200", "--nonblocking",
             "-p", str(server.pid), "-o", str(self.profile / f"{name}.txt")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        time.sleep(0.5)  # py-spy attaches
        before = thread_cpu(server.pid)
        idle_before, client_before, faults_before = (
            machine_idle(),
            time.process_time(),
            page_faults(server.pid),
        )
        started = time.perf_counter()
        try:
            yield
        finally:
            seconds = time.perf_counter() - started
            after = thread_cpu(server.pid)
            idle, client = machine_idle() - idle_before, time.process_time() - client_before
            faults = page_faults(server.pid) - faults_before
            spy.send_signal(signal.SIGINT)
            spy.wait()
            used: dict[str, float] = {}
            for tid, (comm, cpu) in after.items():
                used[comm] = used.get(comm, 0.0) + cpu - before.get(tid, (comm, 0.0))[1]
            lines = [f"{comm:<24}{cpu:8.2f}" for comm, cpu in sorted(used.items(), key=lambda kv: -kv[1])]
            text = (
                f"{name}: {seconds:.2f} s wall, {os.cpu_count()} cores, {idle:.2f} core-seconds idle;"
                f" the client (this process) {client:.2f} CPU s; the server's page faults {faults},"
                " its CPU seconds by thread:\n"
                + "\n".join(lines) + "\n"
            )  # fmt: skip
            (self.profile / f"{name}.cpu").write_text(text)
            print(text, flush=True)


def _spent(before: dict[str, tuple[str, float]], after: dict[str, tuple[str, float]]) -> str:
    """The whole process's CPU seconds between two thread_cpu readings, then its busiest threads'."""
    total = after.get("process", ("", 0.0))[1] - before.get("process", ("", 0.0))[1]
    by_name: dict[str, float] = {}
    for tid, (comm, cpu) in after.items():
        if tid != "process":
            by_name[comm] = by_name.get(comm, 0.0) + cpu - before.get(tid, (comm, 0.0))[1]
    busiest = sorted(((cpu, comm) for comm, cpu in by_name.items() if cpu >= 0.02), reverse=True)[:4]
    return f"{total:.2f} (" + ", ".join(f"{comm} {cpu:.2f}" for cpu, comm in busiest) + ")"


def page_faults(pid: int) -> int:
    """Minor page faults of a process so far (fresh memory mapped for buffers shows here)."""
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[7])


def machine_idle() -> float:
    """Core-seconds every core spent idle (or waiting for I/O) since boot."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    return (int(fields[4]) + int(fields[5])) / os.sysconf("SC_CLK_TCK")


def thread_cpu(pid: int) -> dict[str, tuple[str, float]]:
    """Thread id -> (name, user + system CPU seconds) of a process, from /proc."""
    ticks = os.sysconf("SC_CLK_TCK")
    found: dict[str, tuple[str, float]] = {}
    with contextlib.suppress(OSError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        found["process"] = ("(whole process)", (int(fields[11]) + int(fields[12])) / ticks)
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            stat = (task / "stat").read_text()
            comm = stat[stat.index("(") + 1 : stat.rindex(")")]
            fields = stat[stat.rindex(")") + 2 :].split()
            found[task.name] = (re.sub(r"\d+$", "", comm), (int(fields[11]) + int(fields[12])) / ticks)
    return found


def report(rows: list[dict[str, float]], size_mib: int, labels: list[str]) -> None:
    print(f"\nmedians of {len(rows)} rounds, {size_mib} MiB, MB/s:")
    print(
        f"{'workload':<14}"
        + "".join(f"{label:>10}" for label in labels)
        + f"{'boto3':>10}"
        + "".join(f"{label + ' ratio':>14}" for label in labels)
    )
    for workload, what in (("W1", "download"), ("W2", "upload")):
        limit = statistics.median(r[f"{workload} boto3"] for r in rows)
        ours = [statistics.median(r[f"{workload} {label}"] for r in rows) for label in labels]
        print(
            f"{workload} {what:<11}" + "".join(f"{o:>10.0f}" for o in ours) + f"{limit:>10.0f}"
            + "".join(f"{o / limit:>13.2f}x" for o in ours)
        )  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
