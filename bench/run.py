"""trioftp performance, measured side by side: trioftp v2, trioftp legacy, pyftpdlib, raw sockets.

    python bench/run.py                   # full run: 5 interleaved rounds (~10 minutes)
    python bench/run.py --quick           # smoke check: small sizes, 1 round (< 1 minute)
    python bench/run.py --only W1,W3 --systems trioftp,raw --runs 7
    python bench/run.py --json out.json   # also dump every run's numbers

Run it with the benchmark venv's Python (pyftpdlib and trioftp installed, see
docs/benchmarks.md). Each server runs in its own process on 127.0.0.1; clients
run in other processes (bench/worker.py); files live in a temp dir. Every file
moved is checked (size and SHA-256) outside the timed part. In each round every
system runs each workload once, in an order rotated from round to round, and
ratios are taken within the round; the table shows medians over the rounds.

Workloads:
  W1  one large download to a file (512 MiB)         MB/s
  W2  one large upload, until the server holds it    MB/s
  W3  2,000 files of 4 KiB over one connection       files/s (trioftp: 64 gets in flight)
  W3D the same 2,000 files to disk (issue 13)        files/s: trioftp `get -r` of a folder vs raw
                                                     fetching them one by one to files; trioftp
                                                     `put -r` vs raw-fsync uploading them with
                                                     the tree's concurrency (16), each fsynced,
                                                     and vs raw-durable doing all a durable
                                                     upload does (beside, BLAKE3, rename, folder fsync)
  W4  200 clients released at once, 1 MiB each      aggregate MB/s, p50/p99 latency, failures
  W5  the server's peak RSS over W4                  MiB (VmHWM, reset before W4)
  W6  10,000 idle connections (trioftp, pyftpdlib)   server RSS per connection, KiB
  W7  a 4 KiB get beside a 1 GiB download on the same connection (trioftp): latency, ms

Systems: trioftp (v2), legacy (trioftp's server, legacy protocol), pyftpdlib, raw (bench/raw_server.py
and a plain-socket client), raw-fsync (the same, with the receiver fsyncing each file before it
counts: the limit for anything durable; it runs W1, W2 and W3D's put only), raw-durable (W3D's put
only: each file written beside its target, hashed with BLAKE3 and checked against the client's digest,
fsynced, renamed in, its folder fsynced: the work a durable, atomic, verified upload does), raw-verify
(the raw client doing a verifying client's work: it checks a BLAKE3 digest the server sends, writes
beside and renames in, no fsync; the limit for a verified download; it runs W1, W3D's get and W4 only).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import queue
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from common import KiB, MiB, percentile, proc_status, reset_peak_rss, sha256_file  # noqa: E402

HOST = "127.0.0.1"
SYSTEMS = ("trioftp", "legacy", "pyftpdlib", "raw", "raw-fsync", "raw-durable", "raw-verify")
WORKLOADS = ("W1", "W2", "W3", "W3D", "W4", "W5", "W6", "W7")
DURABLE_SYSTEMS = ("raw-fsync", "raw-durable")  # W1, W2 and W3D's put only (raw-durable: W3D's put only)
PUT_ONLY_SYSTEMS = ("raw-durable",)
IDLE_SYSTEMS = ("trioftp", "pyftpdlib")  # W6 is only for these
MIXED_SYSTEMS = ("trioftp",)  # W7
VERIFY_SYSTEMS = ("raw-verify",)  # downloads to files only: W1, W3D's get, W4

FULL = {
    "big": 512 * MiB,
    "small_count": 2000,
    "small_size": 4 * KiB,
    "legacy_small_count": 200,
    "many_clients": 200,
    "many_size": 1 * MiB,
    "worker_procs": 4,
    "idle": 10_000,
    "idle_procs": 4,
    "huge": 1024 * MiB,
    "w7_warmup": 64 * MiB,
    "runs": 5,
}
QUICK = {
    "big": 32 * MiB,
    "small_count": 300,
    "small_size": 4 * KiB,
    "legacy_small_count": 20,
    "many_clients": 40,
    "many_size": 256 * KiB,
    "worker_procs": 2,
    "idle": 1000,
    "idle_procs": 2,
    "huge": 128 * MiB,
    "w7_warmup": 8 * MiB,
    "runs": 1,
}
W3_CONCURRENCY = 64
TREE_CONCURRENCY = 16  # trioftp.client.tree.DEFAULT_CONCURRENCY: raw-fsync's put uploads as many at once
TREE = "tree"  # W3D's folder in each server root


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# =================================================================== processes

_children: list[subprocess.Popen[Any]] = []


# Children run in the temp dir with PYTHONSAFEPATH: `python -m trioftp` must import the trioftp
# being measured (--source, else the installed one), never a trioftp/ that happens to sit in the
# directory the benchmark was started from.
_child_cwd: str | None = None


def _spawn(
    cmd: list[str], *, stdout: Any, stderr: Any, stdin: Any = subprocess.DEVNULL
) -> subprocess.Popen[Any]:
    proc = subprocess.Popen(
        cmd,
        stdin=stdin,
        stdout=stdout,
        stderr=stderr,
        text=True,
        bufsize=1,
        cwd=_child_cwd,
        env={**os.environ, "PYTHONSAFEPATH": "1"},
        start_new_session=True,  # Ctrl-C reaches only us; we stop every child ourselves
    )
    _children.append(proc)
    return proc


def _stop(proc: subprocess.Popen[Any], timeout: float = 5.0) -> None:
    if proc.poll() is None:
        try:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        except ProcessLookupError:
            pass
    if proc in _children:
        _children.remove(proc)


def stop_all_children() -> None:
    for proc in list(_children):
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 5
    for proc in list(_children):
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    _children.clear()


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


class Server:
    """One server process on 127.0.0.1."""

    def __init__(self, system: str, root: str, logdir: str, extra: Iterable[str] = ()) -> None:
        self.system = system
        self.root = root
        self.port = free_port()
        self.logpath = os.path.join(logdir, f"server-{system}-{self.port}.log")
        py = sys.executable
        if system in ("trioftp", "legacy"):
            cmd = [
                py,
                "-m",
                "trioftp",
                "serve",
                "--root",
                root,
                "--port",
                str(self.port),
                "--host",
                HOST,
                "--log-level",
                "WARNING",
                *extra,
            ]
        elif system == "pyftpdlib":
            cmd = [py, os.path.join(HERE, "ftp_server.py"), "--root", root, "--port", str(self.port), *extra]
        elif system in ("raw", "raw-fsync", "raw-durable", "raw-verify"):
            cmd = [py, os.path.join(HERE, "raw_server.py"), "--root", root, "--port", str(self.port), *extra]
            if system == "raw-fsync":
                cmd.append("--fsync")
            if system == "raw-durable":
                cmd.append("--durable")
            if system == "raw-verify":
                cmd.append("--digests")
        else:
            raise ValueError(system)
        self._log = open(self.logpath, "w")  # noqa: SIM115 (closed in stop())
        self.proc = _spawn(cmd, stdout=self._log, stderr=subprocess.STDOUT)
        self._wait_listening()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _wait_listening(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.system} server exited at start:\n{self.log_tail()}")
            try:
                with socket.create_connection((HOST, self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"{self.system} server did not listen within 30 s:\n{self.log_tail()}")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        try:
            with open(self.logpath) as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return ""

    def rss_kib(self) -> int:
        return proc_status(self.pid).get("VmRSS", 0)

    def stop(self) -> None:
        _stop(self.proc)
        self._log.close()


class Worker:
    """One client process running bench/worker.py on a job."""

    def __init__(self, job: dict[str, Any], workdir: str, tag: str) -> None:
        self.tag = tag
        jobpath = os.path.join(workdir, "jobs", f"{tag}.json")
        with open(jobpath, "w") as f:
            json.dump(job, f)
        self.errpath = os.path.join(workdir, "logs", f"worker-{tag}.log")
        self._err = open(self.errpath, "w")  # noqa: SIM115 (closed in finish())
        self.proc = _spawn(
            [sys.executable, os.path.join(HERE, "worker.py"), jobpath],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._err,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def expect(self, tag: str, timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"worker {self.tag}: no {tag} within {timeout:g} s")
            try:
                line = self.lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                raise RuntimeError(f"worker {self.tag} exited before {tag}:\n{self.err_tail()}")
            word, _, rest = line.partition(" ")
            if word == tag:
                return json.loads(rest) if rest else None

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(line + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            pass

    def err_tail(self, lines: int = 15) -> str:
        self._err.flush()
        try:
            with open(self.errpath) as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return ""

    def finish(self) -> None:
        try:
            if self.proc.stdin:
                self.proc.stdin.close()
        except OSError:
            pass
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(30)
        _stop(self.proc)
        self._err.close()


def run_workers(
    jobs: list[dict[str, Any]],
    workdir: str,
    tag: str,
    timeout: float,
    profile: Profiler | None = None,
    server: Server | None = None,
) -> list[Any]:
    """Start one worker per job, release them all at once, return their RESULTs.

    With `profile`, py-spy samples the server and (trioftp only) the first client
    process from the release to the end of the job.
    """
    workers = [Worker(job, workdir, f"{tag}-{i}") for i, job in enumerate(jobs)]
    spies: list[subprocess.Popen[Any]] = []
    try:
        for w in workers:
            w.expect("READY", 60)
        if profile is not None and server is not None:
            spies.append(profile.start(server.pid, f"{tag}-server"))
            if jobs[0]["system"] == "trioftp":
                spies.append(profile.start(workers[0].proc.pid, f"{tag}-client"))
            time.sleep(0.3)  # let py-spy attach
        t0 = time.monotonic()
        for w in workers:
            w.send(f"GO {t0!r}")
        return [w.expect("RESULT", timeout) for w in workers]
    finally:
        for spy in spies:
            Profiler.stop(spy)
        for w in workers:
            w.finish()


class Profiler:
    """py-spy record, attached to a running process; raw (folded) output, one file per process and job."""

    def __init__(self, outdir: str) -> None:
        self.outdir = os.path.abspath(outdir)
        os.makedirs(self.outdir, exist_ok=True)
        self.exe = shutil.which("py-spy") or os.path.join(os.path.dirname(sys.executable), "py-spy")

    def start(self, pid: int, label: str) -> subprocess.Popen[Any]:
        out = os.path.join(self.outdir, f"{label}.txt")
        cmd = [
            self.exe,
            "record",
            "--pid",
            str(pid),
            "--rate",
            "250",
            "--format",
            "raw",
            "--nonblocking",
            "--threads",
            "-o",
            out,
        ]
        return _spawn(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    @staticmethod
    def stop(spy: subprocess.Popen[Any]) -> None:
        if spy.poll() is None:
            spy.send_signal(signal.SIGINT)  # py-spy writes its file on Ctrl-C
            with contextlib.suppress(subprocess.TimeoutExpired):
                spy.wait(30)
        _stop(spy)


# ======================================================================= data


def make_file(path: str, size: int) -> None:
    with open(path, "wb") as f:
        left = size
        while left:
            chunk = os.urandom(min(left, 16 * MiB))
            f.write(chunk)
            left -= len(chunk)


class Data:
    """The files every server serves, made once, hard-linked into each server's root."""

    def __init__(self, workdir: str, sizes: dict[str, int], workloads: set[str], systems: list[str]) -> None:
        self.dir = os.path.join(workdir, "data")
        os.makedirs(self.dir)
        self.manifest: dict[str, list[Any]] = {}
        self.big = "big.bin"
        self.huge = "huge.bin"
        self.small = [f"s{i:05d}.bin" for i in range(sizes["small_count"])]
        self.many = [f"m{i:04d}.bin" for i in range(sizes["many_clients"])]
        files: list[tuple[str, int]] = []
        if workloads & {"W1", "W2"}:
            files.append((self.big, sizes["big"]))
        if "W7" in workloads:
            files.append((self.huge, sizes["huge"]))
        if workloads & {"W3", "W3D", "W7"}:
            files += [(n, sizes["small_size"]) for n in self.small]
        if workloads & {"W4", "W5"}:
            files += [(n, sizes["many_size"]) for n in self.many]
        for name, size in files:
            path = os.path.join(self.dir, name)
            make_file(path, size)
            self.manifest[name] = [size, sha256_file(path)]
        self.manifest_path = os.path.join(workdir, "manifest.json")
        with open(self.manifest_path, "w") as f:
            json.dump(self.manifest, f)
        self.roots: dict[str, str] = {}
        for system in systems:
            root = os.path.join(workdir, "roots", system)
            os.makedirs(root)
            for name, _ in files:
                if name == self.huge and system not in MIXED_SYSTEMS:
                    continue
                os.link(os.path.join(self.dir, name), os.path.join(root, name))
            if "W3D" in workloads:
                os.makedirs(os.path.join(root, TREE))
                for name in self.small:
                    os.link(os.path.join(self.dir, name), os.path.join(root, TREE, name))
            self.roots[system] = root
        self.tree = os.path.join(workdir, "tree-source")  # W3D's put: the small files, in a folder
        if "W3D" in workloads:
            os.makedirs(self.tree)
            for name in self.small:
                os.link(os.path.join(self.dir, name), os.path.join(self.tree, name))

    def check(self, path: str, name: str) -> str | None:
        """None if the file at `path` is exactly data file `name`, else what is wrong."""
        size, digest = self.manifest[name]
        try:
            actual = os.stat(path).st_size
        except FileNotFoundError:
            return "missing"
        if actual != size:
            return f"size {actual} != {size}"
        if sha256_file(path) != digest:
            return "digest mismatch"
        return None


def remove(path: str) -> None:
    if os.path.isdir(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        for p in (path, path + ".trioftp-part"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(p)


def settle() -> None:
    """Between runs: write back what the last run left dirty, so it is not charged to the next."""
    os.sync()


# ===================================================================== results


class Results:
    def __init__(self) -> None:
        # values[(workload, metric)][system] = one value per round (None: the run failed)
        self.values: dict[tuple[str, str], dict[str, list[float | None]]] = defaultdict(
            lambda: defaultdict(list)
        )
        # ratios[(workload, metric, a, b)] = a/b per round
        self.ratios: dict[tuple[str, str, str, str], list[float]] = defaultdict(list)
        self.failures: dict[tuple[str, str], list[str]] = defaultdict(list)
        self.extra: dict[str, Any] = defaultdict(list)

    def add(self, workload: str, metric: str, system: str, value: float | None) -> None:
        self.values[(workload, metric)][system].append(value)

    def fail(self, workload: str, system: str, what: str) -> None:
        self.failures[(workload, system)].append(what)
        log(f"  FAILURE {workload} {system}: {what}")

    def round_ratios(self, workload: str, metric: str, pairs: Iterable[tuple[str, str]]) -> None:
        """Ratios of this round's values (the last one appended for each system)."""
        series = self.values.get((workload, metric), {})
        for a, b in pairs:
            va = series.get(a, [None])[-1] if series.get(a) else None
            vb = series.get(b, [None])[-1] if series.get(b) else None
            if va is not None and vb:
                self.ratios[(workload, metric, a, b)].append(va / vb)

    def median(self, workload: str, metric: str, system: str) -> float | None:
        vals = [v for v in self.values.get((workload, metric), {}).get(system, []) if v is not None]
        return statistics.median(vals) if vals else None

    def ratio(self, workload: str, metric: str, a: str, b: str) -> float | None:
        vals = self.ratios.get((workload, metric, a, b), [])
        return statistics.median(vals) if vals else None

    def to_json(self) -> dict[str, Any]:
        return {
            "values": {f"{w}:{m}": dict(s) for (w, m), s in self.values.items()},
            "ratios": {f"{w}:{m}:{a}/{b}": v for (w, m, a, b), v in self.ratios.items()},
            "failures": {f"{w}:{s}": v for (w, s), v in self.failures.items()},
            "extra": dict(self.extra),
        }


# =================================================================== workloads


class Bench:
    def __init__(self, args: argparse.Namespace, sizes: dict[str, int], workdir: str) -> None:
        self.args = args
        self.sizes = sizes
        self.workdir = workdir
        self.systems: list[str] = args.systems
        self.workloads: set[str] = args.only
        self.results = Results()
        for sub in ("jobs", "logs", "dl"):
            os.makedirs(os.path.join(workdir, sub))
        self.logdir = os.path.join(workdir, "logs")
        self.dl = os.path.join(workdir, "dl")
        log("making test files ...")
        self.data = Data(workdir, sizes, self.workloads, self.systems)
        settle()
        self.servers: dict[str, Server] = {}
        self.profiler = Profiler(args.profile) if args.profile else None
        self._warming = False

    def _spy(self, system: str) -> dict[str, Any]:
        """run_workers() arguments that profile the trioftp servers, when --profile is on."""
        if self.profiler is None or self._warming or system not in ("trioftp", "legacy"):
            return {}
        return {"profile": self.profiler, "server": self.servers[system]}

    # -------------------------------------------------------------- servers

    def start_servers(self) -> None:
        for system in self.systems:
            extra = ["--no-legacy"] if system == "trioftp" else []
            self.servers[system] = Server(system, self.data.roots[system], self.logdir, extra)
        log("servers: " + ", ".join(f"{s} pid {v.pid} port {v.port}" for s, v in self.servers.items()))

    def stop_servers(self) -> None:
        for server in self.servers.values():
            server.stop()
        self.servers.clear()

    def _job(self, system: str, workload: str, **fields: Any) -> dict[str, Any]:
        server = self.servers[system]
        return {"system": system, "workload": workload, "host": HOST, "port": server.port, **fields}

    def _check_server(self, system: str, workload: str) -> None:
        server = self.servers.get(system)
        if server is not None and not server.alive():
            self.results.fail(workload, system, f"server died:\n{server.log_tail()}")
            raise RuntimeError(f"{system} server died")

    # ------------------------------------------------------------- W1 / W2

    def w1(self, system: str, rnd: int, counted: bool = True) -> None:
        dest = os.path.join(self.dl, f"w1-{system}-{rnd}.bin")
        try:
            [res] = run_workers(
                [self._job(system, "download", name=self.data.big, dest=dest)],
                self.workdir,
                f"w1-{system}-{rnd}",
                timeout=300,
                **self._spy(system),
            )
            problem = self.data.check(dest, self.data.big)
        except Exception as exc:
            res, problem = None, f"{type(exc).__name__}: {exc}"
        finally:
            self._check_server(system, "W1")
        remove(dest)
        settle()
        if not counted:
            return
        if problem is not None or res is None:
            self.results.fail("W1", system, problem or "no result")
            self.results.add("W1", "MB/s", system, None)
            return
        self.results.add("W1", "MB/s", system, res["bytes"] / 1e6 / res["seconds"])

    def w2(self, system: str, rnd: int) -> None:
        name = f"w2-{system}-{rnd}.bin"
        stored = os.path.join(self.data.roots[system], name)
        src = os.path.join(self.data.dir, self.data.big)
        try:
            [res] = run_workers(
                [self._job(system, "upload", src=src, upload_name=name, server_root=self.data.roots[system])],
                self.workdir,
                f"w2-{system}-{rnd}",
                timeout=300,
                **self._spy(system),
            )
            problem = self.data.check(stored, self.data.big)
        except Exception as exc:
            res, problem = None, f"{type(exc).__name__}: {exc}"
        finally:
            self._check_server(system, "W2")
        remove(stored)
        settle()
        if problem is not None or res is None:
            self.results.fail("W2", system, problem or "no result")
            self.results.add("W2", "MB/s", system, None)
            return
        self.results.add("W2", "MB/s", system, res["bytes"] / 1e6 / res["seconds"])

    # ------------------------------------------------------------------ W3

    def w3(self, system: str, rnd: int, counted: bool = True) -> None:
        names = self.data.small
        if system == "legacy":
            # Every legacy GET waits out the server's header settle time (legacy_settle,
            # 20 ms): 2,000 of them would take 40 s a run, so legacy moves a subset.
            names = names[: self.sizes["legacy_small_count"]]
        job = self._job(
            system, "small", names=names, manifest=self.data.manifest_path, concurrency=W3_CONCURRENCY
        )
        try:
            [res] = run_workers([job], self.workdir, f"w3-{system}-{rnd}", timeout=300, **self._spy(system))
        except Exception as exc:
            res = None
            if counted:
                self.results.fail("W3", system, f"{type(exc).__name__}: {exc}")
        finally:
            self._check_server(system, "W3")
        if not counted:
            return
        if res is None:
            self.results.add("W3", "files/s", system, None)
            return
        if res["bad"] or res["files"] != len(names):
            self.results.fail(
                "W3", system, f"{len(res['bad'])} files wrong, {res['files']} of {len(names)} got"
            )
            self.results.add("W3", "files/s", system, None)
            return
        self.results.add("W3", "files/s", system, res["files"] / res["seconds"])

    # ------------------------------------------------------------------ W3D

    def w3d(self, system: str, rnd: int) -> None:
        """W3 to disk: get -r of the small files (trioftp, raw), put -r of them (trioftp, raw-fsync)."""
        names = self.data.small
        if system in ("trioftp", "raw", "raw-verify"):
            dest = os.path.join(self.dl, f"w3d-{system}-{rnd}")
            os.makedirs(dest)
            job = self._job(system, "tree-get", folder=TREE, names=names, dest_dir=dest)
            self._w3d_run(system, rnd, "get files/s", job, dest)
            remove(dest)
            settle()
        if system in ("trioftp", "raw-fsync", "raw-durable"):
            remote = f"up-{system}-{rnd}"
            stored = os.path.join(self.data.roots[system], remote)
            if system != "trioftp":
                os.makedirs(stored)  # the raw server makes no folders
            job = self._job(
                system, "tree-put", src_dir=self.data.tree, remote=remote, names=names,
                concurrency=TREE_CONCURRENCY,
            )  # fmt: skip
            self._w3d_run(system, rnd, "put files/s", job, stored)
            remove(stored)
            settle()

    def _w3d_run(self, system: str, rnd: int, metric: str, job: dict[str, Any], folder: str) -> None:
        tag = f"w3d-{metric.split()[0]}-{system}-{rnd}"
        problem = None
        try:
            [res] = run_workers([job], self.workdir, tag, timeout=300, **self._spy(system))
            wrong = [n for n in self.data.small if self.data.check(os.path.join(folder, n), n) is not None]
            if res.get("errors"):
                problem = f"{len(res['errors'])} errors, e.g. {res['errors'][0]}"
            elif wrong:
                problem = f"{len(wrong)} files wrong or missing, e.g. {wrong[0]}"
        except Exception as exc:
            res, problem = None, f"{type(exc).__name__}: {exc}"
        finally:
            self._check_server(system, "W3D")
        if problem is not None or res is None:
            self.results.fail("W3D", system, f"{metric}: {problem or 'no result'}")
            self.results.add("W3D", metric, system, None)
            return
        self.results.add("W3D", metric, system, len(self.data.small) / res["seconds"])

    # ------------------------------------------------------------ W4 + W5

    def w4(self, system: str, rnd: int, counted: bool = True) -> None:
        server = self.servers[system]
        dest_dir = os.path.join(self.dl, f"w4-{system}-{rnd}")
        os.makedirs(dest_dir)
        names = self.data.many
        procs = self.sizes["worker_procs"]
        slices = [names[i::procs] for i in range(procs)]
        jobs = [self._job(system, "many", names=s, dest_dir=dest_dir) for s in slices if s]
        # W5: the server's peak RSS over W4 (VmHWM, reset first; VmRSS sampled as a cross-check).
        rss_before = server.rss_kib()
        hwm_reset = reset_peak_rss(server.pid)
        sampled = [rss_before]
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                try:
                    sampled.append(server.rss_kib())
                except OSError:
                    return
                time.sleep(0.005)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        error = None
        try:
            outs = run_workers(jobs, self.workdir, f"w4-{system}-{rnd}", timeout=600, **self._spy(system))
        except Exception as exc:
            outs, error = [], f"{type(exc).__name__}: {exc}"
        finally:
            stop.set()
            sampler.join()
            self._check_server(system, "W4")
        hwm = proc_status(server.pid).get("VmHWM", 0) if hwm_reset else 0
        peak_kib = max(hwm, max(sampled))
        # Verify every file, outside the timed part.
        ends: list[float] = []
        latencies: list[float] = []
        failures: list[str] = []
        total = 0
        for job, out in zip(jobs, outs, strict=True):
            t0 = out["t0"]
            for name, (end, size, err) in zip(job["names"], out["results"], strict=True):
                if err is not None:
                    failures.append(f"{name}: {err}")
                    continue
                problem = self.data.check(os.path.join(dest_dir, name), name)
                if problem is not None:
                    failures.append(f"{name}: {problem}")
                    continue
                ends.append(end)
                latencies.append(end - t0)
                total += size
        if error is not None:
            failures.append(error)
        remove(dest_dir)
        settle()
        if not counted:
            return
        if failures:
            self.results.fail("W4", system, f"{len(failures)} failed, e.g. {failures[0]}")
        self.results.add("W4", "failures", system, float(len(names) - len(ends)))
        if ends:
            t0 = outs[0]["t0"]
            self.results.add("W4", "agg MB/s", system, total / 1e6 / (max(ends) - t0))
            p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
            self.results.add("W4", "p50 ms", system, p50 * 1e3)
            self.results.add("W4", "p99 ms", system, p99 * 1e3)
            self.results.add("W4", "p99/p50", system, p99 / p50)
        else:
            for metric in ("agg MB/s", "p50 ms", "p99 ms", "p99/p50"):
                self.results.add("W4", metric, system, None)
        self.results.add("W5", "peak RSS MiB", system, peak_kib / 1024)
        self.results.add("W5", "RSS growth MiB", system, (peak_kib - rss_before) / 1024)
        if not hwm_reset:
            self.results.extra["W5 note"].append("VmHWM could not be reset: sampled VmRSS only")

    # ------------------------------------------------------------------ W6

    def w6(self, system: str, rnd: int) -> None:
        total = self.sizes["idle"]
        procs = self.sizes["idle_procs"]
        extra = {
            "trioftp": [
                "--max-connections",
                str(total + 1000),
                "--max-connections-per-ip",
                str(total + 1000),
                "--no-legacy",
            ],
            "pyftpdlib": ["--max-cons", str(total + 1000)],
        }[system]
        server = Server(system, self.data.roots[system], self.logdir, extra)
        workers: list[Worker] = []
        try:
            base_job = {"system": system, "workload": "idle", "host": HOST, "port": server.port}
            # Warm up: a few connections opened and closed, so one-time costs are not charged per connection.
            warm = Worker({**base_job, "count": 50}, self.workdir, f"w6-warm-{system}-{rnd}")
            warm.expect("READY", 60)
            warm.send("GO")
            warm.expect("HELD", 60)
            warm.send("EXIT")
            warm.finish()
            time.sleep(0.5)
            before = server.rss_kib()
            share = [total // procs + (1 if i < total % procs else 0) for i in range(procs)]
            workers = [
                Worker({**base_job, "count": n}, self.workdir, f"w6-{system}-{rnd}-{i}")
                for i, n in enumerate(share)
            ]
            for w in workers:
                w.expect("READY", 60)
            for w in workers:
                w.send("GO")
            held = failed = 0
            errors = []
            for w in workers:
                out = w.expect("HELD", 300)
                held += out["held"]
                failed += out["failed"]
                if out["error"]:
                    errors.append(out["error"])
            time.sleep(1.0)  # let the server finish with the last handshakes
            after = max(server.rss_kib(), server.rss_kib())
            if not server.alive():
                raise RuntimeError(f"server died:\n{server.log_tail()}")
        except Exception as exc:
            self.results.fail("W6", system, f"{type(exc).__name__}: {exc}")
            self.results.add("W6", "KiB/conn", system, None)
            return
        finally:
            for w in workers:
                w.send("EXIT")
            for w in workers:
                w.finish()
            server.stop()
        if failed:
            self.results.fail("W6", system, f"{failed} of {total} connections failed, e.g. {errors[0]}")
        self.results.add("W6", "KiB/conn", system, (after - before) / max(held, 1))
        self.results.add("W6", "RSS MiB held", system, after / 1024)
        self.results.add("W6", "RSS MiB fresh", system, before / 1024)
        self.results.add("W6", "held", system, float(held))

    # ------------------------------------------------------------------ W7

    def w7(self, system: str, rnd: int) -> None:
        dest = os.path.join(self.dl, f"w7-{rnd}.bin")
        job = self._job(
            system,
            "mixed",
            name=self.data.huge,
            dest=dest,
            small_name=self.data.small[0],
            manifest=self.data.manifest_path,
            warmup_bytes=self.sizes["w7_warmup"],
            interval=0.01,
        )
        try:
            [res] = run_workers([job], self.workdir, f"w7-{rnd}", timeout=300, **self._spy(system))
            problem = self.data.check(dest, self.data.huge)
        except Exception as exc:
            res, problem = None, f"{type(exc).__name__}: {exc}"
        finally:
            self._check_server(system, "W7")
        remove(dest)
        settle()
        if res is not None and res["bad"]:
            problem = f"{res['bad']} small gets returned wrong bytes"
        if problem is not None or res is None or not res["latencies"]:
            self.results.fail("W7", system, problem or "no small get finished while the big download ran")
            for metric in ("p50 ms", "max ms"):
                self.results.add("W7", metric, system, None)
            return
        lat = res["latencies"]
        self.results.add("W7", "p50 ms", system, statistics.median(lat) * 1e3)
        self.results.add("W7", "max ms", system, max(lat) * 1e3)
        self.results.add("W7", "gets", system, float(len(lat)))
        self.results.add("W7", "1 GiB MB/s", system, self.sizes["huge"] / 1e6 / res["big_seconds"])

    # --------------------------------------------------------------- rounds

    def rotated(self, systems: list[str], rnd: int) -> list[str]:
        k = rnd % len(systems) if systems else 0
        return systems[k:] + systems[:k]

    def warmup(self) -> None:
        log("warm-up round (not counted): W1, W3, W4 once per system")
        self._warming = True
        for system in self.systems:
            if system in PUT_ONLY_SYSTEMS:
                continue
            if self.workloads & {"W1", "W2"}:
                self.w1(system, -1, counted=False)
            if system in DURABLE_SYSTEMS:
                continue
            if "W3" in self.workloads and system not in VERIFY_SYSTEMS:
                self.w3(system, -1, counted=False)
            if self.workloads & {"W4", "W5"}:
                self.w4(system, -1, counted=False)
        self._warming = False

    def run(self) -> Results:
        self.start_servers()
        try:
            if self.args.warmup:
                self.warmup()
            for rnd in range(self.args.runs):
                log(f"round {rnd + 1}/{self.args.runs}")
                order = self.rotated(self.systems, rnd)
                self.round(rnd, order)
        finally:
            self.stop_servers()
        return self.results

    def round(self, rnd: int, order: list[str]) -> None:
        r = self.results
        plain = [s for s in order if s not in DURABLE_SYSTEMS]
        large = [s for s in order if s not in PUT_ONLY_SYSTEMS]
        pairs = [
            ("trioftp", "raw"), ("legacy", "raw"), ("pyftpdlib", "raw"), ("trioftp", "pyftpdlib"),
            ("trioftp", "legacy"), ("trioftp", "raw-fsync"), ("legacy", "raw-fsync"), ("raw", "raw-fsync"),
            ("trioftp", "raw-verify"), ("raw-verify", "raw"), ("raw-verify", "legacy"),
        ]  # fmt: skip
        if "W1" in self.workloads:
            for system in large:
                self.w1(system, rnd)
            r.round_ratios("W1", "MB/s", _pairs(order, pairs))
            log("  W1 " + self._last("W1", "MB/s", large))
        if "W2" in self.workloads:
            for system in [s for s in large if s not in VERIFY_SYSTEMS]:
                self.w2(system, rnd)
            r.round_ratios("W2", "MB/s", _pairs(order, pairs))
            log("  W2 " + self._last("W2", "MB/s", large))
        if "W3" in self.workloads:
            for system in [s for s in plain if s not in VERIFY_SYSTEMS]:
                self.w3(system, rnd)
            r.round_ratios(
                "W3",
                "files/s",
                _pairs(order, [("trioftp", "pyftpdlib"), ("trioftp", "raw"), ("legacy", "pyftpdlib")]),
            )
            log("  W3 " + self._last("W3", "files/s", [s for s in plain if s not in VERIFY_SYSTEMS]))
        if "W3D" in self.workloads:
            tree = ("trioftp", "raw", "raw-fsync", "raw-durable", "raw-verify")
            tree_systems = [s for s in order if s in tree]
            for system in tree_systems:
                self.w3d(system, rnd)
            r.round_ratios(
                "W3D",
                "get files/s",
                _pairs(order, [("trioftp", "raw"), ("trioftp", "raw-verify"), ("raw-verify", "raw")]),
            )
            r.round_ratios(
                "W3D",
                "put files/s",
                _pairs(
                    order,
                    [("trioftp", "raw-fsync"), ("trioftp", "raw-durable"), ("raw-durable", "raw-fsync")],
                ),
            )
            log(
                "  W3D get "
                + self._last("W3D", "get files/s", ["trioftp", "raw", "raw-verify"])
                + " | put "
                + self._last("W3D", "put files/s", ["trioftp", "raw-fsync", "raw-durable"])
            )
        if self.workloads & {"W4", "W5"}:
            for system in plain:
                self.w4(system, rnd)
            r.round_ratios(
                "W4",
                "agg MB/s",
                _pairs(
                    order,
                    [
                        ("trioftp", "raw"),
                        ("trioftp", "pyftpdlib"),
                        ("legacy", "raw"),
                        ("pyftpdlib", "raw"),
                        ("trioftp", "raw-verify"),
                        ("raw-verify", "raw"),
                        ("raw-verify", "pyftpdlib"),
                    ],
                ),
            )
            r.round_ratios(
                "W5", "peak RSS MiB", _pairs(order, [("trioftp", "pyftpdlib"), ("legacy", "pyftpdlib")])
            )
            log(
                "  W4 "
                + self._last("W4", "agg MB/s", plain)
                + " | p99 ms "
                + self._last("W4", "p99 ms", plain)
            )
            log("  W5 " + self._last("W5", "peak RSS MiB", plain))
        if "W6" in self.workloads:
            idle = [s for s in order if s in IDLE_SYSTEMS]
            for system in idle:
                self.w6(system, rnd)
            r.round_ratios("W6", "KiB/conn", _pairs(idle, [("trioftp", "pyftpdlib")]))
            log("  W6 " + self._last("W6", "KiB/conn", idle))
        if "W7" in self.workloads:
            for system in [s for s in order if s in MIXED_SYSTEMS]:
                self.w7(system, rnd)
                log(
                    "  W7 "
                    + self._last("W7", "p50 ms", [system])
                    + " | max ms "
                    + self._last("W7", "max ms", [system])
                )

    def _last(self, workload: str, metric: str, systems: list[str]) -> str:
        out = []
        for s in systems:
            vals = self.results.values.get((workload, metric), {}).get(s, [])
            v = vals[-1] if vals else None
            out.append(f"{s}={_fmt(v)}")
        return " ".join(out)


def _pairs(present: list[str], pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(a, b) for a, b in pairs if a in present and b in present]


# ====================================================================== report


def _fmt(v: float | None, digits: int | None = None) -> str:
    if v is None:
        return "-"
    if digits is not None:
        return f"{v:.{digits}f}"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


ROWS: list[tuple[str, str, str]] = [
    ("W1", "MB/s", "W1 download 512 MiB, MB/s"),
    ("W2", "MB/s", "W2 upload 512 MiB, MB/s"),
    ("W3", "files/s", "W3 4 KiB files, files/s"),
    ("W3D", "get files/s", "W3D get -r to disk, files/s"),
    ("W3D", "put files/s", "W3D put -r durable, files/s"),
    ("W4", "agg MB/s", "W4 200 clients, agg MB/s"),
    ("W4", "p50 ms", "W4 latency p50, ms"),
    ("W4", "p99 ms", "W4 latency p99, ms"),
    ("W4", "p99/p50", "W4 p99/p50"),
    ("W4", "failures", "W4 failures (sum of runs)"),
    ("W5", "peak RSS MiB", "W5 server peak RSS, MiB"),
    ("W5", "RSS growth MiB", "W5 RSS growth over W4, MiB"),
    ("W6", "KiB/conn", "W6 idle conns, KiB/conn"),
    ("W6", "RSS MiB held", "W6 server RSS holding them, MiB"),
    ("W6", "RSS MiB fresh", "W6 fresh server RSS before, MiB"),
    ("W7", "p50 ms", "W7 4 KiB get beside 1 GiB, p50 ms"),
    ("W7", "max ms", "W7 same, max ms"),
    ("W7", "1 GiB MB/s", "W7 the 1 GiB download, MB/s"),
]
RATIO_COLUMNS = [
    ("trioftp", "raw"),
    ("trioftp", "raw-fsync"),
    ("trioftp", "legacy"),
    ("trioftp", "pyftpdlib"),
    ("legacy", "raw"),
    ("legacy", "raw-fsync"),
    ("trioftp", "raw-durable"),
    ("raw-durable", "raw-fsync"),
    ("trioftp", "raw-verify"),
    ("raw-verify", "raw"),
]
RATIO_METRICS = {
    ("W1", "MB/s"),
    ("W2", "MB/s"),
    ("W3", "files/s"),
    ("W3D", "get files/s"),
    ("W3D", "put files/s"),
    ("W4", "agg MB/s"),
    ("W5", "peak RSS MiB"),
    ("W6", "KiB/conn"),
}


def render_table(res: Results, systems: list[str], sizes: dict[str, int]) -> str:
    label_w = 38
    width = {s: max(11, len(s) + 1) for s in systems}  # a space between columns, "raw-durable" too
    header = f"{'workload (median of runs)':<{label_w}}" + "".join(f"{s:>{width[s]}}" for s in systems)
    header += " |" + "".join(f"{a + '/' + b:>{_ratio_width(a, b)}}" for a, b in RATIO_COLUMNS)
    lines = [header, "-" * len(header)]
    for workload, metric, label in ROWS:
        series = res.values.get((workload, metric))
        if not series:
            continue
        label = _label(label, sizes)
        row = f"{label:<{label_w}}"
        for s in systems:
            if metric == "failures":
                vals = [v for v in series.get(s, []) if v is not None]
                row += f"{(_fmt(sum(vals), 0) if vals else '-'):>{width[s]}}"
            elif s in series:
                row += f"{_fmt(res.median(workload, metric, s)):>{width[s]}}"
            else:
                row += f"{'N/A':>{width[s]}}"
        row += " |"
        for a, b in RATIO_COLUMNS:
            r = res.ratio(workload, metric, a, b) if (workload, metric) in RATIO_METRICS else None
            row += f"{(_fmt(r, 2) + 'x') if r is not None else '':>{_ratio_width(a, b)}}"
        lines.append(row)
    return "\n".join(lines)


def _ratio_width(a: str, b: str) -> int:
    return max(18, len(a) + len(b) + 3)


def _x(r: float | None) -> str:
    return "-" if r is None else f"{r:.2f}x"


def _label(label: str, sizes: dict[str, int]) -> str:
    big = f"{sizes['big'] // MiB} MiB"
    return (
        label.replace("512 MiB", big)
        .replace("200 clients", f"{sizes['many_clients']} clients")
        .replace("1 GiB", f"{sizes['huge'] // MiB} MiB" if sizes["huge"] != 1024 * MiB else "1 GiB")
    )


def evaluate_targets(res: Results, systems: list[str]) -> list[tuple[str, str, str]]:
    """(verdict, target, measured) for each of issue 13's targets whose inputs were measured."""
    out: list[tuple[str, str, str]] = []

    def verdict(ok: bool | None) -> str:
        return "N/A " if ok is None else ("PASS" if ok else "MISS")

    def all_verified(workload: str, system: str) -> bool:
        vals = res.values.get((workload, "MB/s"), {}).get(system, [])
        return bool(vals) and all(v is not None for v in vals) and not res.failures.get((workload, system))

    def ratio_target(workload: str, metric: str, a: str, b: str, bound: float, label: str) -> None:
        if not res.values.get((workload, metric), {}).get(a):
            return
        r = res.ratio(workload, metric, a, b)
        ok = None if r is None else r >= bound
        if ok and metric == "MB/s":
            ok = all_verified(workload, a)
        out.append((verdict(ok), label, f"{_x(r)} {b}"))

    ratio_target("W1", "MB/s", "trioftp", "raw", 0.9, "W1 download trioftp >= 0.9x raw, verified")
    ratio_target("W1", "MB/s", "trioftp", "legacy", 0.95, "W1 download trioftp >= 0.95x legacy")
    ratio_target("W2", "MB/s", "trioftp", "raw-fsync", 0.9, "W2 upload trioftp >= 0.9x raw-fsync, verified")
    ratio_target("W2", "MB/s", "legacy", "raw-fsync", 0.9, "W2 upload legacy >= 0.9x raw-fsync, verified")

    if res.values.get(("W3", "files/s"), {}).get("trioftp"):
        fps = res.median("W3", "files/s", "trioftp")
        out.append(
            (
                verdict(fps is not None and fps >= 10_000),
                "W3 to memory trioftp >= 10,000 files/s",
                f"{_fmt(fps)}",
            )
        )
        r = res.ratio("W3", "files/s", "trioftp", "pyftpdlib")
        out.append((verdict(None if r is None else r >= 4), "W3 trioftp >= 4x pyftpdlib", f"{_x(r)}"))
    ratio_target("W3D", "get files/s", "trioftp", "raw", 1.0, "W3D get -r to disk >= 1.0x raw one by one")
    ratio_target(
        "W3D", "put files/s", "trioftp", "raw-fsync", 0.8, "W3D put -r >= 0.8x raw-fsync, same concurrency"
    )
    ratio_target(  # not one of issue 13's targets: the baseline that does the same work, for reference
        "W3D", "put files/s", "trioftp", "raw-durable", 0.8, "W3D put -r >= 0.8x raw-durable (same work)"
    )

    if res.values.get(("W4", "agg MB/s"), {}).get("trioftp"):
        ratio_target("W4", "agg MB/s", "trioftp", "raw", 0.9, "W4 trioftp >= 0.9x raw (aggregate)")
        ratio_target(
            "W4", "agg MB/s", "trioftp", "pyftpdlib", 1.3, "W4 trioftp >= 1.3x pyftpdlib (aggregate)"
        )
        fails = sum(v for v in res.values.get(("W4", "failures"), {}).get("trioftp", []) if v is not None)
        out.append(
            (
                verdict(fails == 0 and not res.failures.get(("W4", "trioftp"))),
                "W4 trioftp zero failures",
                f"{fails:.0f} failed over all runs",
            )
        )
        q = res.median("W4", "p99/p50", "trioftp")
        out.append(
            (
                verdict(None if q is None else q <= 2.0),
                "W4 trioftp p99 <= 2x p50",
                f"p99/p50 = {_fmt(q, 2)} (p50 {_fmt(res.median('W4', 'p50 ms', 'trioftp'))} ms, "
                f"p99 {_fmt(res.median('W4', 'p99 ms', 'trioftp'))} ms)",
            )
        )
    if res.values.get(("W6", "RSS MiB fresh"), {}).get("trioftp"):
        fresh = res.median("W6", "RSS MiB fresh", "trioftp")
        out.append(
            (
                verdict(fresh is not None and fresh <= 28.0),
                "W5 fresh trioftp server <= 28 MiB RSS",
                f"{_fmt(fresh)} MiB",
            )
        )
    if res.values.get(("W5", "RSS growth MiB"), {}).get("trioftp"):
        growth = res.median("W5", "RSS growth MiB", "trioftp")
        out.append(
            (
                verdict(growth is not None and growth <= 4.0),
                "W5 W4 adds <= 4 MiB to the server",
                f"{_fmt(growth)} MiB",
            )
        )
    if res.values.get(("W6", "KiB/conn"), {}).get("trioftp"):
        k = res.median("W6", "KiB/conn", "trioftp")
        out.append(
            (verdict(k is not None and k <= 8.0), "W6 trioftp <= 8 KiB per idle connection", f"{_fmt(k)} KiB")
        )
    if res.values.get(("W7", "p50 ms"), {}).get("trioftp"):
        p = res.median("W7", "p50 ms", "trioftp")
        out.append(
            (
                verdict(p is not None and p <= 20.0),
                "W7 trioftp small get <= 20 ms beside a big download",
                f"p50 {_fmt(p)} ms (worst {_fmt(res.median('W7', 'max ms', 'trioftp'))} ms; medians of runs)",
            )
        )
    # The same-work baseline against the same bounds: a target is out of reach for a verifying
    # client only if raw-verify misses it too, in the same run (issue 13).
    ratio_target("W1", "MB/s", "raw-verify", "raw", 0.9, "(baseline) W1 raw-verify >= 0.9x raw")
    ratio_target("W1", "MB/s", "raw-verify", "legacy", 0.95, "(baseline) W1 raw-verify >= 0.95x legacy")
    ratio_target("W3D", "get files/s", "raw-verify", "raw", 1.0, "(baseline) W3D get raw-verify >= 1.0x raw")
    ratio_target("W4", "agg MB/s", "raw-verify", "raw", 0.9, "(baseline) W4 raw-verify >= 0.9x raw")
    ratio_target(
        "W4", "agg MB/s", "raw-verify", "pyftpdlib", 1.3, "(baseline) W4 raw-verify >= 1.3x pyftpdlib"
    )
    return out


def machine_info() -> str:
    import trio

    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        import pyftpdlib

        ftp_version = pyftpdlib.__ver__
    except Exception:
        ftp_version = "not installed"
    return (
        f"nproc {os.cpu_count()}, CPU {cpu}, kernel {platform.release()}, "
        f"Python {platform.python_version()}, trio {trio.__version__}, pyftpdlib {ftp_version}"
    )


def source_info() -> str:
    """Which trioftp the servers and clients import: its folder, and its git commit and state."""
    probe = (
        "import os, trioftp; print(trioftp.__version__, os.path.dirname(os.path.dirname(trioftp.__file__)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        cwd=_child_cwd or tempfile.gettempdir(),
        env={**os.environ, "PYTHONSAFEPATH": "1"},
    )
    if out.returncode != 0:
        return f"trioftp cannot be imported: {out.stderr.strip().splitlines()[-1:]}"
    version, folder = out.stdout.split()[:2]
    text = f"trioftp {version} from {folder}"
    try:
        commit = subprocess.run(
            ["git", "-C", folder, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", folder, "status", "--porcelain", "--", "trioftp"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        state = f"{len(dirty.splitlines())} uncommitted change(s) under trioftp/" if dirty else "clean"
        text += f" (git {commit}, {state})"
    except (OSError, subprocess.CalledProcessError):
        marker = os.path.join(folder, "SOURCE")
        if os.path.exists(marker):
            with open(marker) as f:
                text += f" ({f.read().strip()})"
    return text


# ======================================================================== main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=None, help="rounds (default 5; --quick: 1)")
    p.add_argument("--quick", action="store_true", help="small sizes, 1 round: a smoke check (< 1 minute)")
    p.add_argument("--only", default=",".join(WORKLOADS), help="workloads, e.g. W1,W3 (default: all)")
    p.add_argument("--systems", default=",".join(SYSTEMS), help=f"systems (default: {','.join(SYSTEMS)})")
    p.add_argument(
        "--no-warmup", dest="warmup", action="store_false", help="skip the uncounted warm-up round"
    )
    p.add_argument("--tmpdir", default=None, help="where the temp dir goes (default: the system's)")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (logs, jobs) after the run")
    p.add_argument("--json", default=None, help="write every run's numbers to this file")
    p.add_argument(
        "--source",
        default=None,
        metavar="DIR",
        help="measure the trioftp package in DIR (a checkout or `git archive` export holding trioftp/) "
        "instead of the installed one",
    )
    p.add_argument(
        "--profile",
        default=None,
        metavar="DIR",
        help="py-spy record the trioftp servers (and the trioftp client) during each job into DIR "
        "(slows them: do not report numbers from a profiled run); see bench/profile_summary.py",
    )
    args = p.parse_args(argv)
    only = {w.strip().upper() for w in args.only.split(",") if w.strip()}
    unknown = only - set(WORKLOADS)
    if unknown:
        p.error(f"unknown workloads: {', '.join(sorted(unknown))}")
    if "W5" in only:
        only.add("W4")  # W5 is measured over W4
    args.only = only
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    bad = set(systems) - set(SYSTEMS)
    if bad:
        p.error(f"unknown systems: {', '.join(sorted(bad))} (known: {', '.join(SYSTEMS)})")
    args.systems = [s for s in SYSTEMS if s in systems]
    if args.runs is None:
        args.runs = QUICK["runs"] if args.quick else FULL["runs"]
    if args.quick:
        args.warmup = False
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.source:
        source = os.path.abspath(args.source)
        if not os.path.isfile(os.path.join(source, "trioftp", "__init__.py")):
            print(f"--source {source}: no trioftp/ package there", file=sys.stderr)
            return 2
        sys.path.insert(0, source)
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (source, os.environ.get("PYTHONPATH")) if p)
    sizes = QUICK if args.quick else FULL
    workdir = tempfile.mkdtemp(prefix="trioftp-bench-", dir=args.tmpdir)
    global _child_cwd
    _child_cwd = workdir

    def on_signal(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    # SIGINT too: a shell that starts us in the background leaves SIGINT ignored, and then
    # Python installs no KeyboardInterrupt handler; both signals must stop every child.
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    started = time.monotonic()
    try:
        log(
            f"work dir {workdir}; systems {','.join(args.systems)}; workloads {','.join(sorted(args.only))}; "
            f"{args.runs} round(s){' (quick)' if args.quick else ''}"
        )
        measured = source_info()
        log(f"measuring {measured}")
        if measured.startswith("trioftp cannot be imported"):
            return 2
        bench = Bench(args, sizes, workdir)
        results = bench.run()
    except KeyboardInterrupt:
        log("interrupted: stopping every process")
        return 130
    finally:
        stop_all_children()
        if args.keep:
            log(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    elapsed = time.monotonic() - started
    print()
    print(f"machine: {machine_info()}")
    print(f"measured: {measured}")
    if args.profile:
        print(
            f"PROFILED RUN (py-spy attached, numbers perturbed): profiles in {os.path.abspath(args.profile)}"
        )
    print(
        f"{args.runs} round(s), systems interleaved in rotated order each round; ratios are medians of "
        f"per-round ratios; wall time {elapsed:.0f} s"
    )
    print()
    print(render_table(results, args.systems, sizes))
    print()
    targets = evaluate_targets(results, args.systems)
    if targets:
        print("targets:")
        for verdict, target, what in targets:
            print(f"  {verdict}  {target:<56} {what}")
    if results.failures:
        print()
        print("failures:")
        for (w, s), items in sorted(results.failures.items()):
            print(f"  {w} {s}: {len(items)} run(s), e.g. {items[0].splitlines()[0] if items[0] else ''}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "machine": machine_info(),
                    "source": measured,
                    "sizes": sizes,
                    "runs": args.runs,
                    **results.to_json(),
                },
                f,
                indent=1,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
