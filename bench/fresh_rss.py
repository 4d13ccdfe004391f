"""A fresh server's RSS beside the floor Trio and our libraries set, for W5's first target.

    python bench/fresh_rss.py [--runs 5] [--source DIR ...]

Starts each server in turn, `--runs` times (order rotated each run), waits until it
accepts a connection and one second more, and reads VmRSS, RssAnon and RssFile
from /proc. Servers:
  trio          a bare `trio.serve_tcp` echo-less server: what `import trio` costs
  trio+libs     the same, having imported what trioftp's server cannot do without
                (attrs, cattrs with its msgpack preconf, msgpack, blake3): the floor
                for any Trio server speaking v2 with these libraries
  trioftp       `python -m trioftp serve` from this tree, or one per `--source DIR`
                (a `git archive` of a commit), for an A/B of two commits
W5's target (issue 13) is a fresh trioftp server <= 28 MiB. RSS moves in steps of
pymalloc's 1 MiB arenas, so medians of several starts are printed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import free_port, proc_status, set_parent_death_signal, wait_listening

HERE = os.path.dirname(os.path.abspath(__file__))
TREE = os.path.dirname(HERE)

FLOOR = """
import sys
import trio
{imports}

async def handler(stream):
    async with stream:
        async for _ in stream:
            pass

trio.run(lambda: trio.serve_tcp(handler, int(sys.argv[1]), host="127.0.0.1"))
"""
LIBS = "import attrs, blake3, cattrs, cattrs.preconf.msgpack, msgpack"


def _command(system: str, port: int, root: str) -> tuple[list[str], str | None]:
    """argv and the PYTHONPATH to run it with."""
    if system == "trio":
        return [sys.executable, "-c", FLOOR.format(imports=""), str(port)], None
    if system == "trio+libs":
        return [sys.executable, "-c", FLOOR.format(imports=LIBS), str(port)], None
    source = system.partition("@")[2] or TREE
    serve = ["serve", "--root", root, "--host", "127.0.0.1", "--port", str(port), "--log-level", "WARNING"]
    return [sys.executable, "-m", "trioftp", *serve], source


def measure(system: str) -> dict[str, int]:
    """VmRSS, RssAnon and RssFile (KiB) of one fresh server of `system`."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="fresh-rss-") as root:
        argv, path = _command(system, port, root)
        env = dict(os.environ)
        if path is not None:
            env["PYTHONPATH"] = path
        proc = subprocess.Popen(
            argv,
            env=env,
            cwd=path or root,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=set_parent_death_signal,
        )
        try:
            wait_listening(port)
            time.sleep(1.0)
            status = proc_status(proc.pid)
            return {key: status[key] for key in ("VmRSS", "RssAnon", "RssFile")}
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument(
        "--source", action="append", default=[], help="a trioftp tree to measure (repeatable)"
    )
    args = parser.parse_args()
    trioftp = [f"trioftp@{os.path.abspath(s)}" for s in args.source] or ["trioftp"]
    systems = ["trio", "trio+libs", *trioftp]
    figures: dict[str, list[dict[str, int]]] = {s: [] for s in systems}
    for run in range(args.runs):
        for system in systems[run % len(systems) :] + systems[: run % len(systems)]:
            figures[system].append(measure(system))
    print(f"fresh server RSS, MiB (median of {args.runs} starts)")
    print(f"{'system':<40} {'VmRSS':>7} {'anon':>7} {'file':>7}   runs (VmRSS)")
    for system in systems:
        rows = figures[system]

        def med(key: str, rows: list[dict[str, int]] = rows) -> float:
            return statistics.median(r[key] for r in rows) / 1024

        each = ", ".join(f"{r['VmRSS'] / 1024:.1f}" for r in rows)
        print(f"{system:<40} {med('VmRSS'):7.1f} {med('RssAnon'):7.1f} {med('RssFile'):7.1f}   {each}")


if __name__ == "__main__":
    main()
