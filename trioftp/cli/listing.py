"""The client commands that only show: ls, stat, status."""

from __future__ import annotations

import argparse
import shlex
import time
from collections.abc import Awaitable, Callable
from typing import Any

from trioftp.cli.paths import _join_remote, _remote_name, folder_name
from trioftp.cli.progress import human as _human
from trioftp.cli.runner import _connect
from trioftp.client import tree
from trioftp.errors import PermissionDenied, RemoteError
from trioftp.protocol import ErrorCode
from trioftp.protocol.messages import Entry, Kind
from trioftp.transport.concurrency import run_all


async def _ls(args: argparse.Namespace) -> None:
    folder = folder_name(args.folder)
    async with _connect(args) as conn:
        try:
            entries = await conn.list(folder)
        except RemoteError as exc:
            if exc.code is not ErrorCode.WRONG_KIND:
                raise
            # A file: its own line, as ls does (its parent's listing has it, link or not).
            last = folder.rpartition("/")[2]
            entries = [e for e in await conn.list(folder.rpartition("/")[0]) if e.name == last]
            if not entries:
                raise
            _print_entries(args, entries, set())
            return
        if not args.recursive:
            _print_entries(args, entries, await _unlistable(conn, folder, entries))
            return
        pending = [(folder, entries)]
        first = True
        while pending:
            here, entries = pending.pop(0)
            listed: dict[str, list[Entry]] = {}
            refused: set[str] = set()
            for entry in entries:  # ls -R lists the folders in each level in order
                if entry.kind is Kind.DIR:
                    try:
                        listed[entry.name] = await conn.list(_join_remote(here, entry.name))
                    except PermissionDenied:
                        refused.add(entry.name)
            if not first:
                print()
            print(f"{_quoted(here) if here else '.'}:")
            _print_entries(args, entries, refused)
            first = False
            pending[:0] = [(_join_remote(here, name), listed[name]) for name in sorted(listed)]


async def _unlistable(conn: Any, folder: str, entries: list[Entry]) -> set[str]:
    """The folders among `entries` that the server lists but will not open (ls marks them "?").

    The server lists an unreadable folder as a folder; only a LIST of it says otherwise.
    """
    refused: set[str] = set()

    def probe(name: str) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            try:
                await conn.list(_join_remote(folder, name))
            except PermissionDenied:
                refused.add(name)
            except RemoteError:  # gone since, or not a folder any more: listed as it was
                pass

        return run

    folders = [entry.name for entry in entries if entry.kind is Kind.DIR]
    await run_all([probe(name) for name in folders], limit=16)
    return refused


def _print_entries(args: argparse.Namespace, entries: list[Entry], refused: set[str]) -> None:
    """One line per entry: size, time and name; with -l its kind first, with -h sizes in units."""
    for entry in entries:
        kind = Kind.OTHER if entry.name in refused else entry.kind
        # As ls -F marks them; "?" for what the server lists but does not serve.
        suffix = {Kind.DIR: "/", Kind.LINK: "@", Kind.OTHER: "?"}.get(kind, "")
        stamp = time.strftime("%Y-%m-%d %H:%M", time.localtime(entry.mtime_ns / 1e9))
        size = _human(entry.size) if args.human else str(entry.size)
        letter = {Kind.DIR: "d", Kind.LINK: "l", Kind.OTHER: "?"}.get(kind, "-")
        lead = f"{letter} " if args.long else ""
        print(f"{lead}{size:>14} {stamp} {_quoted(entry.name)}{suffix}")


def _quoted(name: str) -> str:
    """A name as ls shows it: quoted where it would read as something else.

    Spaces at either end vanish on a terminal, and a last "/", "@" or "?" would read
    as ls's marker; a name the server sent may also hold control characters, shown
    escaped so that none drives the terminal.
    """
    if not name.isprintable():
        return "'" + tree.shown(name).replace("'", "\\'") + "'"
    return shlex.quote(name)


async def _stat(args: argparse.Namespace) -> None:
    async with _connect(args) as conn:
        info = await conn.stat(_remote_name(args.name))
        print(f"name:   {info.name}")
        print(f"kind:   {info.kind.value}")
        print(f"size:   {info.size}")
        print(f"mtime:  {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(info.mtime_ns / 1e9))}")
        if info.digest is not None:
            print(f"{conn.digest_algorithm}: {info.digest.hex()}")


async def _status(args: argparse.Namespace) -> None:
    async with _connect(args) as conn:
        info = await conn.status()
    days, rest = divmod(info.uptime_ms // 1000, 86400)
    print(f"server:       {info.agent}")
    print(f"uptime:       {f'{days}d ' if days else ''}{time.strftime('%H:%M:%S', time.gmtime(rest))}")
    print(f"connections:  {info.connections}")
    print(f"transfers:    {info.transfers} in flight")
    print(f"received:     {_human(info.bytes_received)} ({info.bytes_received} bytes)")
    print(f"sent:         {_human(info.bytes_sent)} ({info.bytes_sent} bytes)")
