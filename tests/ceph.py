"""A one-node Ceph cluster with an S3 endpoint (radosgw), for the S3 tests.

One monitor, one OSD on a sparse file, radosgw's beast frontend on loopback,
auth none, pool size 1, all in a temporary folder on free ports. Started once
per test session (about 16 s); radosgw alone can be stopped and started again,
for the tests of the engine going away mid-run. Not part of trioftp: this
module only starts and stops Debian's ceph binaries.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import attrs

BINARIES = ("ceph-mon", "ceph-osd", "radosgw", "radosgw-admin", "monmaptool", "ceph")
ACCESS_KEY, SECRET_KEY = "trioftp-test", "trioftp-test-secret"
START_TIMEOUT = 120.0  # a loaded 2-core machine; about 16 s when idle


class CephUnavailable(Exception):
    """The binaries are missing, or the cluster did not come up (the message says which)."""


def missing_binaries() -> list[str]:
    return [name for name in BINARIES if shutil.which(name) is None]


def _free_port(avoid: int = 0) -> int:
    """A free loopback port outside the OSD's range of 20 from `avoid`, which it may bind later."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        if not avoid <= port < avoid + 20:
            return port


def _free_range(count: int) -> int:
    """The first of `count` consecutive free loopback ports (the OSD binds several in its range).

    Below Linux's ephemeral range (32768 up): there, the local ends of closed
    connections in TIME_WAIT (thousands after a test run) make binds fail.
    """
    for _ in range(200):
        first = random.randrange(20000, 32768 - count)
        held = []
        try:
            for port in range(first, first + count):
                sock = socket.socket()
                held.append(sock)
                sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            for sock in held:
                sock.close()
        return first
    raise CephUnavailable(f"no {count} consecutive free ports on 127.0.0.1")


@attrs.define
class Ceph:
    """A running cluster under `folder`; `endpoint` is radosgw's S3 URL."""

    folder: Path
    endpoint: str = ""
    block_gib: int = 4  # the OSD's sparse file: what the cluster can hold
    # Beast's default keeps Nagle's algorithm on: each response with a body then waits ~40 ms
    # for the client's delayed ACK between its headers and its body (docs/s3.md).
    tcp_nodelay: bool = False
    access_key: str = ACCESS_KEY
    secret_key: str = SECRET_KEY
    _rgw_port: int = 0
    _procs: dict[str, subprocess.Popen[bytes]] = attrs.field(factory=dict)

    # ---------------------------------------------------------------- start

    def start(self) -> None:
        """Start mon, osd and rgw; return once S3 answers. Raises CephUnavailable."""
        if missing := missing_binaries():
            raise CephUnavailable(
                f"Ceph binaries missing ({', '.join(missing)}): "
                "apt-get install --no-install-recommends radosgw ceph-mon ceph-osd"
            )
        self.folder.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(self.folder)
        if free.free < free.total * 0.06:
            raise CephUnavailable(f"under 6% free disk at {self.folder}: the Ceph monitor refuses to start")
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        d = self.folder
        for sub in ("run", "log", "mon.a", "osd.0", "rgw"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        osd_ports = _free_range(20)
        mon_port, self._rgw_port = _free_port(avoid=osd_ports), _free_port(avoid=osd_ports)
        self.endpoint = f"http://127.0.0.1:{self._rgw_port}"
        fsid = str(uuid.uuid4())
        ports = {"mon_port": mon_port, "rgw_port": self._rgw_port}
        ports.update(osd_min=osd_ports, osd_max=osd_ports + 19)
        ports.update(block_bytes=self.block_gib << 30)
        options = " tcp_nodelay=1" if self.tcp_nodelay else ""
        conf = _CONF.format(fsid=fsid, d=d, frontend_options=options, **ports)
        (d / "ceph.conf").write_text(conf)
        self._run("monmaptool", "--create", "--addv", "a", f"[v2:127.0.0.1:{mon_port}]", "--fsid", fsid,
                  str(d / "monmap"))  # fmt: skip
        self._run("ceph-mon", "-c", self.conf, "--mkfs", "-i", "a", "--monmap", str(d / "monmap"))
        self._spawn("mon", "ceph-mon", "-c", self.conf, "-i", "a", "-f")
        self._run("ceph", "-c", self.conf, "osd", "create", timeout=60)
        self._run("ceph-osd", "-c", self.conf, "-i", "0", "--mkfs", timeout=90)
        self._spawn("osd", "ceph-osd", "-c", self.conf, "-i", "0", "-f")
        deadline = time.monotonic() + START_TIMEOUT
        while b"1 up" not in self._run("ceph", "-c", self.conf, "osd", "stat", check=False, timeout=30):
            self._wait_a_bit(deadline, "the OSD to come up")
        # Before radosgw runs: after, each admin call stalls 20 s and more.
        self._run(
            "radosgw-admin", "-c", self.conf, "-n", "client.rgw.a", "user", "create", "--uid=trioftp",
            "--display-name=trioftp", f"--access-key={self.access_key}", f"--secret-key={self.secret_key}",
            timeout=90,
        )  # fmt: skip
        self.start_rgw()

    @property
    def conf(self) -> str:
        return str(self.folder / "ceph.conf")

    def _run(self, *argv: str, check: bool = True, timeout: float = 30) -> bytes:
        done = subprocess.run(argv, capture_output=True, timeout=timeout, check=False, cwd=self.folder)
        if check and done.returncode != 0:
            error = done.stderr.decode(errors="replace")[-2000:]
            raise CephUnavailable(f"{' '.join(argv)} failed ({done.returncode}): {error}")
        return done.stdout

    def _spawn(self, role: str, *argv: str) -> None:
        with open(self.folder / "log" / f"{role}.out", "ab") as out:
            self._procs[role] = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=self.folder,
                start_new_session=True,
            )  # fmt: skip

    def _wait_a_bit(self, deadline: float, what: str) -> None:
        for role, proc in self._procs.items():
            if proc.poll() is not None:
                raise CephUnavailable(
                    f"ceph {role} exited ({proc.returncode}) waiting for {what}; {self._tail(role)}"
                )
        if time.monotonic() > deadline:
            raise CephUnavailable(f"timed out waiting for {what}")
        time.sleep(0.2)

    def _tail(self, role: str) -> str:
        try:
            return (self.folder / "log" / f"{role}.out").read_text(errors="replace")[-1500:]
        except OSError:
            return ""

    # ---------------------------------------------------------------- radosgw

    def start_rgw(self) -> None:
        """Start radosgw (again) on the same port; return once S3 answers."""
        self._spawn("rgw", "radosgw", "-c", self.conf, "-n", "client.rgw.a", "-f")
        deadline = time.monotonic() + START_TIMEOUT
        while not self.answers():
            self._wait_a_bit(deadline, "radosgw to answer")

    def stop_rgw(self) -> None:
        """Stop radosgw: its port closes at once, so clients meet a dead engine.

        SIGTERM, not SIGKILL: a killed radosgw leaves its watches on cluster
        objects, and the next bucket creation waits 30 s for them to expire.
        """
        self._kill("rgw", signal.SIGTERM)

    def answers(self) -> bool:
        try:
            with urllib.request.urlopen(self.endpoint + "/", timeout=2):
                return True
        except urllib.error.HTTPError as answer:
            answer.close()  # it holds the connection open
            return True  # any HTTP answer (403 without credentials) means it serves
        except OSError:
            return False

    # ---------------------------------------------------------------- stop

    def _kill(self, role: str, first: signal.Signals = signal.SIGKILL) -> None:
        proc = self._procs.pop(role, None)
        if proc is None:
            return
        for signum in dict.fromkeys((first, signal.SIGKILL)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signum)  # its own session: any child it made goes too
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
                return

    def pids(self) -> dict[str, int]:
        """Process ids of the running daemons, by role (for benchmarks that count their CPU)."""
        return {role: proc.pid for role, proc in self._procs.items() if proc.poll() is None}

    def stop(self) -> None:
        """Stop every process this cluster started (radosgw first)."""
        for role in ("rgw", "osd", "mon"):
            self._kill(role)


_CONF = """\
[global]
fsid = {fsid}
mon host = v2:127.0.0.1:{mon_port}
auth cluster required = none
auth service required = none
auth client required = none
ms mon client mode = crc
ms client mode = crc
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd crush chooseleaf type = 0
mon allow pool size one = true
mon warn on pool no redundancy = false
mon max pg per osd = 1000
mon data avail warn = 1
run dir = {d}/run
log file = {d}/log/$name.log
admin socket = {d}/run/$name.asok
ms bind ipv6 = false
ms bind port min = {osd_min}
ms bind port max = {osd_max}
public addr = 127.0.0.1
cluster addr = 127.0.0.1
[mon]
mon data = {d}/mon.a
[osd]
osd data = {d}/osd.0
osd objectstore = bluestore
bluestore block path = {d}/osd.0/block.file
bluestore block create = true
bluestore block size = {block_bytes}
osd memory target = 939524096
[client.rgw.a]
rgw frontends = beast endpoint=127.0.0.1:{rgw_port}{frontend_options}
rgw data = {d}/rgw
# Deleted objects' data goes only when radosgw's garbage collector runs (after 2 h by default):
# a benchmark that rewrites 512 MiB files would fill the OSD and stall every write.
rgw gc obj min wait = 10
rgw gc processor period = 10
"""
