"""The client commands that change or move files: get, put, rm, mv, mkdir."""

from __future__ import annotations

import argparse
import errno
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

from trioftp.cli.diagnose import CommandFailed, sole_exception
from trioftp.cli.paths import _local_file, _output, _remote_file, _remote_name, folder_name
from trioftp.cli.runner import _connect
from trioftp.client import legacy_servers as legacy_client
from trioftp.client import targets, tree
from trioftp.errors import RemoteError
from trioftp.protocol import ErrorCode
from trioftp.protocol.messages import Kind


async def _is_folder(conn: Any, name: str) -> bool:
    """Whether the remote `name` is a folder (a folder's STAT is cheap: it has no digest)."""
    try:
        info = await conn.stat(name)
    except RemoteError:
        return False
    return bool(info.kind is Kind.DIR)


async def _get(args: argparse.Namespace) -> None:
    given = _output(args)
    if args.recursive:
        if given == "-":
            raise CommandFailed("get -r writes a folder; '-' (standard output) takes one file")
        folder = folder_name(args.name)
        local = Path(given) if given else Path(folder.rsplit("/", 1)[-1] or ".")
        async with _connect(args) as conn:
            await conn.download_tree(
                folder, local, progress=args.bars.tree(), rules=args.rules, fsync=args.fsync
            )
        return
    use_r = f"{args.name!r} is a folder: get -r downloads a folder"
    if args.name.endswith("/") or not folder_name(args.name):
        raise CommandFailed(use_r)
    name = folder_name(args.name)  # "./a//b" as a shell user writes it
    output = _local_file(given, name)
    # The bytes are the output: a progress bar on the same terminal would mix into them.
    progress = None if given == "-" else args.bars.file(name)
    to_a_terminal = given == "-" and not args.force and sys.stdout.isatty()
    if args.legacy:

        async def fetch_legacy(target: Path) -> None:
            await legacy_client.download(
                args.host, name, target, port=args.port, progress=progress, timeout=args.timeout
            )

        await (_to_terminal(fetch_legacy, name) if to_a_terminal else fetch_legacy(output))
        return
    async with _connect(args) as conn:

        async def fetch(target: Path) -> None:
            await conn.download(name, target, progress=progress, fsync=args.fsync)

        try:
            await (_to_terminal(fetch, name) if to_a_terminal else fetch(output))
        except RemoteError as exc:
            if exc.code is ErrorCode.WRONG_KIND and await _is_folder(conn, name):
                raise CommandFailed(use_r) from None
            raise


TEXT_SAMPLE = 8192  # bytes looked at before a download is let onto a terminal


async def _to_terminal(fetch: Callable[[Path], Awaitable[None]], name: str) -> None:
    """`get -o -` onto a terminal: refused if the file's first bytes are not text.

    Binary bytes on a terminal show as garbage, and some sequences change its state
    (a charset switch, the title, keys). Only the first bytes can be looked at before
    anything is shown, so the download goes through a pipe that this task reads and
    passes on once it has judged them.
    """
    read_end, write_end = os.pipe()
    refused = False

    def refuse() -> None:
        nonlocal refused
        refused = True

    async def fetch_into_pipe() -> None:
        try:
            await fetch(Path(f"/dev/fd/{write_end}"))
        except OSError as exc:
            if not (refused and exc.errno == errno.EPIPE):  # we stopped reading on purpose
                raise
        finally:
            os.close(write_end)  # the reader's end of file

    try:
        await _judge_and_pass_on(fetch_into_pipe, read_end, name, refuse)
    except BaseExceptionGroup as group:
        alone = sole_exception(group)
        if alone is group:
            raise
        raise alone from None  # as the plain download raises it (get's WRONG_KIND hint needs that)


async def _judge_and_pass_on(
    fetch: Callable[[], Awaitable[None]], read_end: int, name: str, refuse: Callable[[], None]
) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(fetch)
        async with trio.lowlevel.FdStream(read_end) as source:
            sample = b""
            while len(sample) < TEXT_SAMPLE and (chunk := await source.receive_some(TEXT_SAMPLE)):
                sample += chunk
            if _looks_binary(sample):
                refuse()
                raise CommandFailed(
                    f"{tree.shown(name)} looks binary and standard output is a terminal: "
                    "give -o FILE, or --force to show it there anyway"
                )
            writer = await targets.InPlaceWriter.open(Path("/dev/stdout"))
            try:
                while sample:
                    await writer.write(sample)
                    sample = await source.receive_some(1024 * 1024)
            finally:
                await writer.aclose()


def _looks_binary(sample: bytes) -> bool:
    """A NUL byte, or bytes that are not UTF-8 (a character cut at the end of the sample aside)."""
    if b"\0" in sample:
        return True
    for cut in range(4):  # a UTF-8 character is at most 4 bytes: up to 3 may be missing
        try:
            sample[: len(sample) - cut].decode("utf-8")
        except UnicodeDecodeError:
            continue
        return False
    return True


async def _put(args: argparse.Namespace) -> None:
    if not args.recursive and args.path.is_dir():
        raise CommandFailed(f"{str(args.path)!r} is a folder: put -r uploads a folder")
    if args.recursive:
        async with _connect(args) as conn:
            remote = folder_name(args.name or args.path.name)
            await tree.upload_tree(conn, args.path, remote, progress=args.bars.tree(), rules=args.rules)
        return
    name = _remote_file(args.name, args.path)
    if args.legacy:
        await legacy_client.upload(
            args.host, args.path, name, port=args.port, progress=args.bars.file(name), timeout=args.timeout
        )
        return
    async with _connect(args) as conn:
        try:
            await conn.upload(args.path, name, progress=args.bars.file(name))
        except RemoteError as exc:
            # NAME without a slash may still be an existing folder: then the file goes
            # inside it, as with cp. The server says so before any byte is sent; STAT only
            # then, since a STAT of an existing file would have the server hash all of it.
            if name != args.name or exc.code is not ErrorCode.WRONG_KIND or not await _is_folder(conn, name):
                raise
            name = f"{name}/{args.path.name}"
            await conn.upload(args.path, name, progress=args.bars.file(name))


async def _rm(args: argparse.Namespace) -> None:
    async with _connect(args) as conn:
        if args.recursive:
            await tree.remove_tree(conn, folder_name(args.name))
        else:
            await conn.delete(_remote_name(args.name))


async def _mv(args: argparse.Namespace) -> None:
    old = _remote_name(args.old)
    new = folder_name(args.new)
    last = old.rpartition("/")[2]
    if args.new.endswith("/") or not new:  # into that folder, as mv does
        new = f"{new}/{last}" if new else last
    async with _connect(args) as conn:
        try:
            await conn.rename(old, new, replace=args.replace)
        except RemoteError as exc:
            # NEW without a slash may be an existing folder: then OLD goes inside it, as
            # with mv (and put). Asked only after a refusal, so a plain rename is one request.
            in_the_way = exc.code in (ErrorCode.ALREADY_EXISTS, ErrorCode.WRONG_KIND)
            if new != folder_name(args.new) or not in_the_way or not await _is_folder(conn, new):
                raise
            await conn.rename(old, f"{new}/{last}", replace=args.replace)


async def _mkdir(args: argparse.Namespace) -> None:
    async with _connect(args) as conn:
        await conn.mkdir(folder_name(args.folder))
