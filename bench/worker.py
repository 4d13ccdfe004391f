"""A benchmark client process: runs one job for one system and reports on stdout.

    python bench/worker.py JOB.json

Protocol with the orchestrator (bench/run.py), one line each:
  worker -> READY                  set up (imports done, connections or threads ready)
  orchestrator -> GO <t0>          t0 = time.monotonic() at the release (one clock for all processes)
  worker -> RESULT {json}          what it measured
For the idle-connection job: worker -> HELD {json} once its connections are open; it closes
them when the orchestrator writes EXIT (or closes stdin).

Clients never measure themselves more than they must: bytes are drained with
recv_into() a 1 MiB buffer and written straight to a file (or kept in memory
for small files). Every file is verified against a SHA-256 taken by the
orchestrator, outside the timed part (here for in-memory data, in the
orchestrator for files on disk).
"""

from __future__ import annotations

import ftplib
import json
import os
import queue
import socket
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
# The standard-library legacy client, imported from its own folder as its docstring says.
sys.path.insert(1, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "compat"))
import legacy_client
from common import (
    COPY_BUFFER,
    emit,
    raise_nofile,
    set_parent_death_signal,
    sha256_bytes,
    wait_go,
    write_all,
)

FTP_USER = FTP_PASSWORD = "bench"
monotonic = time.monotonic


# ------------------------------------------------------------ byte sinks


class FileSink:
    """Writes to a file; with `fsync` (the raw-fsync system) the file is fsynced before it counts."""

    def __init__(self, path: str, fsync: bool = False) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        self.fsync = fsync

    def __call__(self, chunk: memoryview) -> None:
        write_all(self.fd, chunk)

    def close(self) -> None:
        try:
            if self.fsync:
                os.fsync(self.fd)
        finally:
            os.close(self.fd)


class MemorySink:
    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def __call__(self, chunk: memoryview) -> None:
        self.parts.append(bytes(chunk))

    def value(self) -> bytes:
        return b"".join(self.parts)


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    data = sock.recv(n, socket.MSG_WAITALL)
    if len(data) != n:
        raise ConnectionError(f"closed after {len(data)} of {n} bytes")
    return data


def _drain(sock: socket.socket, buf: bytearray, sink: Callable[[memoryview], None], size: int | None) -> int:
    """recv_into `buf` until `size` bytes (or EOF when size is None)."""
    view = memoryview(buf)
    got = 0
    while size is None or got < size:
        want = len(buf) if size is None else min(len(buf), size - got)
        n = sock.recv_into(buf, want)
        if not n:
            if size is None:
                break
            raise ConnectionError(f"closed after {got} of {size} bytes")
        sink(view[:n])
        got += n
    return got


def _sendfile_all(sock: socket.socket, fd: int, size: int) -> None:
    offset, out = 0, sock.fileno()
    while offset < size:
        sent = os.sendfile(out, fd, offset, size - offset)
        if sent == 0:
            raise OSError("local file shrank")
        offset += sent


# ------------------------------------------------- raw baseline client


class RawClient:
    """One connection per transfer, as the raw baseline server expects."""

    def __init__(self, host: str, port: int) -> None:
        self.address = (host, port)
        self.buf = bytearray(COPY_BUFFER)

    def connect(self) -> None:  # nothing to keep: one connection per transfer
        pass

    def get(self, name: str, sink: Callable[[memoryview], None]) -> int:
        with socket.create_connection(self.address) as sock:
            sock.sendall(f"G {name}\n".encode())
            size = int.from_bytes(_recv_exact(sock, 8), "big")
            if size == (1 << 64) - 1:
                raise FileNotFoundError(name)
            return _drain(sock, self.buf, sink, size)

    def put(self, path: str, name: str, _server_root: str) -> int:
        fd = os.open(path, os.O_RDONLY)
        try:
            size = os.fstat(fd).st_size
            with socket.create_connection(self.address) as sock:
                sock.sendall(f"P {name} {size}\n".encode())
                _sendfile_all(sock, fd, size)
                if _recv_exact(sock, 2) != b"OK":
                    raise ConnectionError("raw server did not confirm the upload")
        finally:
            os.close(fd)
        return size

    def close(self) -> None:
        pass


class RawDurableClient(RawClient):
    """The raw client for the raw-durable server: the file is read and hashed (BLAKE3, as
    trioftp's client does for a small file) and its digest goes with the request."""

    def put(self, path: str, name: str, _server_root: str) -> int:
        import blake3

        with open(path, "rb") as f:
            data = f.read()
        digest = blake3.blake3(data).hexdigest()
        with socket.create_connection(self.address) as sock:
            sock.sendall(f"P {name} {len(data)} {digest}\n".encode() + data)
            if _recv_exact(sock, 2) != b"OK":
                raise ConnectionError("raw server did not confirm the upload")
        return len(data)


class RawVerifyClient(RawClient):
    """raw-verify: the raw client doing a verifying client's work (issue 13's same-work baseline).

    As a trioftp download does: the bytes go to a file beside the target (`.trioftp-part`),
    are hashed with BLAKE3 (the same package, one thread) as they come, the digest is checked
    against the one the server sent before the file, and only then is the file renamed in.
    No fsync (trioftp's default). A file of up to one buffer (1 MiB, W4's) is received, hashed
    and written in one thread, as trioftp writes such a download on its loop; a larger one is
    written by a thread beside the receiving and hashing one, as trioftp's writer thread does.
    Memory gets (W3) are not this baseline's job.
    """

    def get_file(self, name: str, path: str) -> int:
        import blake3

        partial = path + ".trioftp-part"
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            hasher = blake3.blake3()
            with socket.create_connection(self.address) as sock:
                sock.sendall(f"G {name}\n".encode())
                head = _recv_exact(sock, 40)
                size = int.from_bytes(head[:8], "big")
                if size == (1 << 64) - 1:
                    raise FileNotFoundError(name)

                if size > COPY_BUFFER:
                    got = _drain_beside_writer(sock, size, hasher, fd)
                else:

                    def sink(chunk: memoryview) -> None:
                        hasher.update(chunk)
                        write_all(fd, chunk)

                    got = _drain(sock, self.buf, sink, size)
            if hasher.digest() != head[8:]:
                raise ValueError(f"{name}: digest mismatch")
        except BaseException:
            os.close(fd)
            os.unlink(partial)
            raise
        os.close(fd)
        os.replace(partial, path)
        return got


def _drain_beside_writer(sock: socket.socket, size: int, hasher: Any, fd: int) -> int:
    """Receive and hash here while a writer thread writes the buffers filled before (as trioftp
    hashes on its loop while its writer thread writes): a file over one buffer only."""
    free: queue.SimpleQueue[bytearray] = queue.SimpleQueue()
    full: queue.SimpleQueue[tuple[bytearray, int] | None] = queue.SimpleQueue()
    for _ in range(8):
        free.put(bytearray(COPY_BUFFER))
    failed: list[BaseException] = []

    def writer() -> None:
        while (item := full.get()) is not None:
            buf, n = item
            if not failed:  # after a failure, buffers still go back, so the receiver never waits forever
                try:
                    write_all(fd, memoryview(buf)[:n])
                except BaseException as exc:
                    failed.append(exc)
            free.put(buf)

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    got = 0
    try:
        while got < size:
            buf = free.get()
            view = memoryview(buf)
            want, n = min(len(buf), size - got), 0
            while n < want:
                k = sock.recv_into(view[n:want])
                if not k:
                    raise ConnectionError(f"closed after {got + n} of {size} bytes")
                n += k
            hasher.update(view[:n])
            full.put((buf, n))
            got += n
    finally:
        full.put(None)
        thread.join()
    if failed:
        raise failed[0]
    return got


def _get_to_file(client: Any, name: str, path: str, durable: bool = False) -> int:
    """Fetch `name` into the file at `path` the way the system does (raw-verify: verified, renamed in)."""
    if isinstance(client, RawVerifyClient):
        return client.get_file(name, path)
    sink = FileSink(path, fsync=durable)
    try:
        size: int = client.get(name, sink)
    finally:
        sink.close()
    return size


# ------------------------------------------------------ pyftpdlib client


class FtpClient:
    """stdlib ftplib for the control connection; data drained with recv_into."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.buf = bytearray(COPY_BUFFER)
        self.ftp: ftplib.FTP | None = None

    def connect(self) -> None:
        ftp = ftplib.FTP()
        ftp.connect(self.host, self.port)
        ftp.login(FTP_USER, FTP_PASSWORD)
        ftp.voidcmd("TYPE I")
        self.ftp = ftp

    def get(self, name: str, sink: Callable[[memoryview], None]) -> int:
        assert self.ftp is not None
        data = self.ftp.transfercmd(f"RETR {name}")
        data.settimeout(None)  # a plain blocking socket, as the other clients use
        with data:
            got = _drain(data, self.buf, sink, None)
        self.ftp.voidresp()
        return got

    def put(self, path: str, name: str, _server_root: str) -> int:
        assert self.ftp is not None
        fd = os.open(path, os.O_RDONLY)
        try:
            size = os.fstat(fd).st_size
            data = self.ftp.transfercmd(f"STOR {name}")
            data.settimeout(None)  # os.sendfile needs a blocking socket
            with data:
                _sendfile_all(data, fd, size)
                data.shutdown(socket.SHUT_WR)
            self.ftp.voidresp()  # 226: the server has the whole file and closed it
        finally:
            os.close(fd)
        return size

    def close(self) -> None:
        if self.ftp is not None:
            try:
                self.ftp.quit()
            except Exception:
                self.ftp.close()


# ------------------------------------------------------- legacy client


class LegacyClient:
    def __init__(self, host: str, port: int) -> None:
        self.address = (host, port)
        self.buf = bytearray(COPY_BUFFER)
        self.sock: socket.socket | None = None

    def connect(self) -> None:
        self.sock = socket.create_connection(self.address)

    def get(self, name: str, sink: Callable[[memoryview], None]) -> int:
        assert self.sock is not None
        return legacy_client.get_into(self.sock, name, self.buf, sink, settle=0)

    def put(self, path: str, name: str, server_root: str) -> int:
        assert self.sock is not None
        fd = os.open(path, os.O_RDONLY)
        try:
            size = os.fstat(fd).st_size
            legacy_client.put_file_on(self.sock, name, fd, size)
        finally:
            os.close(fd)
        # The legacy protocol sends nothing after a put: the upload is done when the
        # server has committed it (atomic rename), which we watch for on its disk.
        target = os.path.join(server_root, name)
        deadline = monotonic() + 120
        while True:
            try:
                if os.stat(target).st_size == size:
                    return size
            except FileNotFoundError:
                pass
            if monotonic() > deadline:
                raise TimeoutError("legacy upload never appeared on the server")
            time.sleep(0.0002)

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()


BLOCKING_CLIENTS: dict[str, Callable[[str, int], Any]] = {
    "raw": RawClient,
    "raw-fsync": RawClient,  # the same client; its server fsyncs uploads, and downloads are fsynced here
    "raw-durable": RawDurableClient,  # W3D's put only
    "raw-verify": RawVerifyClient,
    "pyftpdlib": FtpClient,
    "legacy": LegacyClient,
}


# ------------------------------------------- jobs for the blocking clients


def blocking_job(job: dict[str, Any]) -> None:
    make = BLOCKING_CLIENTS[job["system"]]
    host, port, kind = job["host"], job["port"], job["workload"]
    durable = job["system"] == "raw-fsync"

    if kind == "download":
        client = make(host, port)
        emit("READY")
        wait_go()
        start = monotonic()
        client.connect()
        size = _get_to_file(client, job["name"], job["dest"], durable)
        seconds = monotonic() - start
        client.close()
        emit("RESULT", {"seconds": seconds, "bytes": size})

    elif kind == "upload":
        client = make(host, port)
        emit("READY")
        wait_go()
        start = monotonic()
        client.connect()
        size = client.put(job["src"], job["upload_name"], job["server_root"])
        seconds = monotonic() - start
        client.close()
        emit("RESULT", {"seconds": seconds, "bytes": size})

    elif kind == "small":
        manifest = _load_manifest(job)
        names = job["names"]
        client = make(host, port)
        client.connect()
        got: dict[str, bytes] = {}
        emit("READY")
        wait_go()
        start = monotonic()
        for name in names:
            sink = MemorySink()
            client.get(name, sink)
            got[name] = sink.value()
        seconds = monotonic() - start
        client.close()
        emit("RESULT", {"seconds": seconds, "files": len(names), "bad": _check_memory(got, manifest)})

    elif kind == "many":
        names, dest = job["names"], job["dest_dir"]
        go = threading.Event()
        results: list[Any] = [None] * len(names)

        def one(i: int, name: str) -> None:
            go.wait()
            try:
                client = make(host, port)
                client.connect()
                size = _get_to_file(client, name, os.path.join(dest, name))
                results[i] = [monotonic(), size, None]
                client.close()
            except Exception as exc:
                results[i] = [monotonic(), 0, f"{type(exc).__name__}: {exc}"]

        threads = [threading.Thread(target=one, args=(i, n), daemon=True) for i, n in enumerate(names)]
        for t in threads:
            t.start()
        emit("READY")
        t0 = wait_go()
        go.set()
        for t in threads:
            t.join()
        emit("RESULT", {"t0": t0, "results": results})

    elif kind == "tree-get":
        # W3 to disk, the baseline: the files fetched one by one, each to its file.
        names, dest = job["names"], job["dest_dir"]
        client = make(host, port)
        emit("READY")
        wait_go()
        start = monotonic()
        for name in names:
            _get_to_file(client, f"{job['folder']}/{name}", os.path.join(dest, name), durable)
        emit("RESULT", {"seconds": monotonic() - start, "files": len(names)})

    elif kind == "tree-put":
        # W3 to disk, the durable baselines: `concurrency` threads upload the files, and
        # the raw-fsync server writes and fsyncs each before it answers (raw-durable: also
        # beside the target, hashed and checked, renamed in, the folder fsynced).
        names, src, remote = job["names"], job["src_dir"], job["remote"]
        shares = [names[i :: job["concurrency"]] for i in range(job["concurrency"])]
        errors: list[str] = []

        def upload(share: list[str]) -> None:
            client = make(host, port)
            try:
                for name in share:
                    client.put(os.path.join(src, name), f"{remote}/{name}", "")
            except Exception as exc:
                errors.append(f"{type(exc).__name__}: {exc}")

        threads = [threading.Thread(target=upload, args=(share,), daemon=True) for share in shares if share]
        emit("READY")
        wait_go()
        start = monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        emit("RESULT", {"seconds": monotonic() - start, "files": len(names), "errors": errors})

    elif kind == "idle":
        idle_job(job)
    else:
        raise SystemExit(f"unknown workload {kind}")


def _load_manifest(job: dict[str, Any]) -> dict[str, list[Any]]:
    with open(job["manifest"]) as f:
        manifest: dict[str, list[Any]] = json.load(f)
    return manifest


def _check_memory(got: dict[str, bytes], manifest: dict[str, list[Any]]) -> list[str]:
    bad = []
    for name, data in got.items():
        size, digest = manifest[name]
        if len(data) != size or sha256_bytes(data) != digest:
            bad.append(name)
    return bad


# ------------------------------------------------------------ idle (W6)


def _ftp_reply(sock: socket.socket, pending: bytearray) -> bytes:
    while True:
        end = pending.find(b"\r\n")
        if end >= 0:
            line = bytes(pending[:end])
            del pending[: end + 2]
            if len(line) >= 4 and line[:3].isdigit() and line[3:4] == b" ":
                return line
            continue
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("FTP server closed the connection")
        pending += chunk


def _idle_ftp(sock: socket.socket) -> None:
    pending = bytearray()
    if not _ftp_reply(sock, pending).startswith(b"220"):
        raise ConnectionError("no FTP banner")
    sock.sendall(f"USER {FTP_USER}\r\n".encode())
    _ftp_reply(sock, pending)
    sock.sendall(f"PASS {FTP_PASSWORD}\r\n".encode())
    if not _ftp_reply(sock, pending).startswith(b"230"):
        raise ConnectionError("FTP login failed")


def _idle_v2(sock: socket.socket) -> None:
    from trioftp.protocol import NEED_DATA, PEER_CLOSED, Connection, Role
    from trioftp.protocol.messages import Error, Hello

    machine = Connection(Role.CLIENT)
    sock.sendall(machine.initiate())
    while True:
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("trioftp server closed during the handshake")
        machine.receive_data(data)
        while (event := machine.next_event()) is not NEED_DATA:
            if isinstance(event, Hello):
                return
            if event is PEER_CLOSED or isinstance(event, Error):
                raise ConnectionError(f"trioftp server refused: {event!r}")


def idle_job(job: dict[str, Any]) -> None:
    """Open `count` connections, each ready for commands (v2 HELLO done / FTP logged in), and hold them."""
    raise_nofile()
    handshake = _idle_v2 if job["system"] == "trioftp" else _idle_ftp
    address = (job["host"], job["port"])
    emit("READY")
    wait_go()
    held: list[socket.socket] = []
    failed = 0
    error = None
    start = monotonic()
    for _ in range(job["count"]):
        try:
            sock = socket.create_connection(address, timeout=30)
            handshake(sock)
            held.append(sock)
        except Exception as exc:
            failed += 1
            error = f"{type(exc).__name__}: {exc}"
    emit("HELD", {"held": len(held), "failed": failed, "error": error, "seconds": monotonic() - start})
    sys.stdin.readline()  # EXIT or EOF
    for sock in held:
        sock.close()


# ------------------------------------------------------- trioftp (v2) jobs


def trioftp_job(job: dict[str, Any]) -> None:
    if job["workload"] == "idle":
        idle_job(job)
        return
    import trio

    trio.run(_trioftp_main, job)


async def _trioftp_main(job: dict[str, Any]) -> None:
    import trio
    import trio.testing

    import trioftp
    import trioftp.client.connection  # trioftp's names load on first use: load them before timing

    host, port, kind = job["host"], job["port"], job["workload"]

    async def go() -> float:
        emit("READY")
        return await trio.to_thread.run_sync(wait_go)

    if kind == "download":
        await go()
        start = monotonic()
        async with trioftp.open_connection(host, port) as conn:
            info = await conn.download(job["name"], job["dest"])
            seconds = monotonic() - start
        emit("RESULT", {"seconds": seconds, "bytes": info.size})

    elif kind == "upload":
        await go()
        start = monotonic()
        async with trioftp.open_connection(host, port) as conn:
            info = await conn.upload(job["src"], job["upload_name"])
            seconds = monotonic() - start
        emit("RESULT", {"seconds": seconds, "bytes": info.size})

    elif kind == "small":
        manifest = _load_manifest(job)
        names = list(job["names"])
        got: dict[str, bytes] = {}
        async with trioftp.open_connection(host, port) as conn:
            await go()
            start = monotonic()
            queue = iter(names)

            async def getter() -> None:
                for name in queue:
                    got[name] = await conn.get(name)

            async with trio.open_nursery() as nursery:
                for _ in range(job["concurrency"]):
                    nursery.start_soon(getter)
            seconds = monotonic() - start
        emit("RESULT", {"seconds": seconds, "files": len(got), "bad": _check_memory(got, manifest)})

    elif kind == "many":
        names, dest = job["names"], job["dest_dir"]
        results: list[Any] = [None] * len(names)
        release = trio.Event()

        async def one(i: int, name: str) -> None:
            await release.wait()
            try:
                async with trioftp.open_connection(host, port) as conn:
                    info = await conn.download(name, os.path.join(dest, name))
                    results[i] = [monotonic(), info.size, None]
            except Exception as exc:
                results[i] = [monotonic(), 0, f"{type(exc).__name__}: {exc}"]

        async with trio.open_nursery() as nursery:
            for i, name in enumerate(names):
                nursery.start_soon(one, i, name)
            await trio.testing.wait_all_tasks_blocked()
            t0 = await go()
            release.set()
        emit("RESULT", {"t0": t0, "results": results})

    elif kind == "tree-get":
        await go()
        start = monotonic()
        async with trioftp.open_connection(host, port) as conn:
            plan = await conn.download_tree(job["folder"], job["dest_dir"])
        emit("RESULT", {"seconds": monotonic() - start, "files": len(plan.copy)})

    elif kind == "tree-put":
        await go()
        start = monotonic()
        async with trioftp.open_connection(host, port) as conn:
            plan = await conn.upload_tree(job["src_dir"], job["remote"])
        emit("RESULT", {"seconds": monotonic() - start, "files": len(plan.copy), "errors": []})

    elif kind == "mixed":
        manifest = _load_manifest(job)
        small = job["small_name"]
        size, digest = manifest[small]
        latencies: list[float] = []
        bad = 0
        progress = [0]
        done = trio.Event()
        async with trioftp.open_connection(host, port) as conn:
            await conn.get(small)  # warm the small file's digest cache, as on a running server
            await go()
            start = monotonic()
            big_seconds = [0.0]

            async def big() -> None:
                def note(done_bytes: int, _total: int) -> None:
                    progress[0] = done_bytes

                await conn.download(job["name"], job["dest"], progress=note)
                big_seconds[0] = monotonic() - start
                done.set()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(big)
                # poll the download's progress: start the small gets once it is well under way
                while progress[0] < job["warmup_bytes"] and not done.is_set():  # noqa: ASYNC110
                    await trio.sleep(0.001)
                while not done.is_set():
                    t = monotonic()
                    data = await conn.get(small)
                    elapsed = monotonic() - t
                    if not done.is_set():  # it overlapped the big download from start to end
                        latencies.append(elapsed)
                    if len(data) != size or sha256_bytes(data) != digest:
                        bad += 1
                    with trio.move_on_after(job["interval"]):
                        await done.wait()
        emit("RESULT", {"latencies": latencies, "bad": bad, "big_seconds": big_seconds[0]})
    else:
        raise SystemExit(f"unknown workload {kind}")


def main() -> None:
    set_parent_death_signal()
    with open(sys.argv[1]) as f:
        job = json.load(f)
    if job["system"] == "trioftp":
        trioftp_job(job)
    else:
        blocking_job(job)


if __name__ == "__main__":
    main()
