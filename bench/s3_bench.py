"""W1 and W2 on an S3 store: through a trioftp server backed by a bucket vs boto3 straight to the bucket.

    python bench/s3_bench.py [--size-mib 256] [--rounds 3] [--endpoint URL --bucket NAME]

Without --endpoint it starts a one-node Ceph (tests/ceph.py) in a temporary
folder and stops it at the end. The limit is boto3's own managed transfer
(upload_file / download_file: multipart, 10 threads) talking straight to the
same engine; trioftp is `trioftp serve --store s3://...` in its own process
and the trioftp client library in this one, every byte verified (BLAKE3 on
the server's side, the benchmark's own SHA-256 after each download). Each
round runs both in alternating order; the table shows medians and each
round's figures. Credentials: the test user's keys for the Ceph it starts,
else as boto3 finds them.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import boto3  # noqa: E402
import boto3.s3.transfer  # noqa: E402
import trio  # noqa: E402

from bench.common import MiB, sha256_file  # noqa: E402
from trioftp import open_connection  # noqa: E402


def start_server(bucket: str, endpoint: str, log: Path) -> tuple[subprocess.Popen[bytes], int]:
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "trioftp", "serve", "--store", f"s3://{bucket}/bench", "--s3-endpoint",
             endpoint, "--port", "0", "--min-rate", "0"],
            stderr=out,
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
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="trioftp-s3-bench-") as folder:
        work = Path(folder)
        ceph = None
        endpoint = args.endpoint
        if endpoint is None:
            from tests.ceph import Ceph

            ceph = Ceph(work / "ceph", block_gib=32)  # sparse: room for every round's copies
            started = time.monotonic()
            ceph.start()
            print(f"Ceph up in {time.monotonic() - started:.1f} s at {ceph.endpoint}", flush=True)
            endpoint = ceph.endpoint
            os.environ["AWS_ACCESS_KEY_ID"] = ceph.access_key
            os.environ["AWS_SECRET_ACCESS_KEY"] = ceph.secret_key
        server = None
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
            transfer = boto3.s3.transfer.TransferConfig()  # boto3's defaults: 8 MiB parts, 10 threads
            size_mb = args.size_mib * MiB / 1e6
            rows: list[dict[str, float]] = []
            for round_number in range(-1, args.rounds):  # round -1 warms the engine up, uncounted
                workloads = Round(s3, args.bucket, port, source, expected, work, size_mb, transfer)
                order = [workloads.boto3_put, workloads.boto3_get, workloads.trioftp_put_get]
                if round_number % 2:
                    order = [workloads.trioftp_put_get, workloads.boto3_put, workloads.boto3_get]
                for run in order:
                    run()
                shown = ", ".join(f"{k} {v:.0f} MB/s" for k, v in workloads.figures.items())
                if round_number < 0:
                    print(f"warm-up (not counted): {shown}", flush=True)
                    continue
                rows.append(workloads.figures)
                print(f"round {round_number + 1}: {shown}", flush=True)
            report(rows, args.size_mib)
        except BaseException:
            log = work / "serve.log"
            if log.exists():
                tail = log.read_text(errors="replace")[-6000:]
                print(f"the server's log, to its end:\n{tail}", file=sys.stderr)
            raise
        finally:
            try:
                if server is not None:
                    server.terminate()
                    try:
                        server.wait(timeout=30)
                    except subprocess.TimeoutExpired:
                        server.kill()  # its clean-ups wait on an engine that stalled
                        server.wait()
            finally:
                if ceph is not None:
                    ceph.stop()
    return 0


class Round:
    """One round of the four transfers; `figures` gets MB/s by workload."""

    def __init__(
        self, s3: Any, bucket: str, port: int, source: Path, expected: str, work: Path, size_mb: float,
        transfer: Any,
    ) -> None:  # fmt: skip
        self.s3, self.bucket, self.port, self.source = s3, bucket, port, source
        self.expected, self.work, self.size_mb, self.transfer = expected, work, size_mb, transfer
        self.figures: dict[str, float] = {}

    def boto3_put(self) -> None:
        started = time.perf_counter()
        self.s3.upload_file(str(self.source), self.bucket, "direct/source.bin", Config=self.transfer)
        self.figures["W2 boto3"] = self.size_mb / (time.perf_counter() - started)

    def boto3_get(self) -> None:
        target = self.work / "boto3.bin"
        started = time.perf_counter()
        self.s3.download_file(self.bucket, "direct/source.bin", str(target), Config=self.transfer)
        self.figures["W1 boto3"] = self.size_mb / (time.perf_counter() - started)
        assert sha256_file(str(target)) == self.expected
        target.unlink()

    def trioftp_put_get(self) -> None:
        seconds = trio.run(trioftp_put, self.port, self.source, "source.bin")
        self.figures["W2 trioftp"] = self.size_mb / seconds
        target = self.work / "trioftp.bin"
        self.figures["W1 trioftp"] = self.size_mb / trio.run(trioftp_get, self.port, "source.bin", target)
        assert sha256_file(str(target)) == self.expected
        target.unlink()


def report(rows: list[dict[str, float]], size_mib: int) -> None:
    print(f"\nmedians of {len(rows)} rounds, {size_mib} MiB, MB/s:")
    print(f"{'workload':<14}{'trioftp':>10}{'boto3':>10}{'ratio':>9}")
    for workload, what in (("W1", "download"), ("W2", "upload")):
        ours = statistics.median(r[f"{workload} trioftp"] for r in rows)
        limit = statistics.median(r[f"{workload} boto3"] for r in rows)
        print(f"{workload} {what:<11}{ours:>10.0f}{limit:>10.0f}{ours / limit:>8.2f}x")


if __name__ == "__main__":
    raise SystemExit(main())
