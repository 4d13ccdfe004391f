"""Every v2 operation end to end over loopback: real server, real client, real sockets."""

from __future__ import annotations

import hashlib
import os
from functools import partial
from pathlib import Path

import pytest
import trio

import trioftp
from tests.conftest import NETWORK_TIMEOUT
from tests.v2_helpers import MiB, blake3_hex, connect, file_digest, write_random, writer_after
from trioftp.errors import (
    AlreadyExists,
    BadName,
    Busy,
    ChecksumMismatch,
    ConnectionClosed,
    NotFound,
    PermissionDenied,
    ProtocolViolation,
    RemoteChecksumMismatch,
    RemoteError,
    TransferTimeout,
    TrioftpError,
)
from trioftp.protocol import ErrorCode, Kind, Settings
from trioftp.server import Server

SIZES = [0, 1, 64 * 1024, 10 * MiB]
SIZE_IDS = ["0B", "1B", "64KiB", "10MiB"]


@pytest.mark.parametrize("size", SIZES, ids=SIZE_IDS)
async def test_put_then_get_in_memory(server: Server, server_root: Path, size: int) -> None:
    data = os.urandom(size)
    with trio.fail_after(NETWORK_TIMEOUT):
        async with connect(server) as conn:
            info = await conn.put("blob.bin", data)
            assert (info.name, info.kind, info.size) == ("blob.bin", Kind.FILE, size)
            assert info.digest is not None and info.digest.hex() == blake3_hex(data)
            assert (server_root / "blob.bin").read_bytes() == data
            assert await conn.get("blob.bin") == data


@pytest.mark.parametrize("size", SIZES, ids=SIZE_IDS)
async def test_upload_then_download_files(
    server: Server, server_root: Path, tmp_path: Path, size: int
) -> None:
    source = tmp_path / "source.bin"
    digest = write_random(source, size, seed=size)
    os.utime(source, ns=(1_600_000_000_123_456_789, 1_600_000_000_123_456_789))
    target = tmp_path / "copy.bin"
    with trio.fail_after(NETWORK_TIMEOUT):
        async with connect(server) as conn:
            uploaded = await conn.upload(source, "up/source.bin")
            assert uploaded.size == size and uploaded.digest == digest
            downloaded = await conn.download("up/source.bin", target)
    assert downloaded.digest == digest
    assert file_digest(server_root / "up" / "source.bin") == digest
    assert file_digest(target) == digest
    # The mtime travels both ways.
    assert (server_root / "up" / "source.bin").stat().st_mtime_ns == 1_600_000_000_123_456_789
    assert target.stat().st_mtime_ns == 1_600_000_000_123_456_789
    assert not (tmp_path / "copy.bin.trioftp-part").exists()


async def test_100_mib_upload_and_download(server: Server, server_root: Path, tmp_path: Path) -> None:
    source = tmp_path / "big.bin"
    digest = write_random(source, 100 * MiB, seed=100)
    target = tmp_path / "big-copy.bin"
    done: list[int] = []
    with trio.fail_after(NETWORK_TIMEOUT):
        async with connect(server) as conn:
            await conn.upload(source, "big.bin", progress=lambda n, total: done.append(n))
            assert done[-1] == 100 * MiB
            assert file_digest(server_root / "big.bin") == digest
            source.unlink()  # no more than two copies on disk at once
            info = await conn.download("big.bin", target)
    assert info.size == 100 * MiB
    assert file_digest(target) == digest


async def test_download_reports_the_digest_it_verified(
    server: Server, server_root: Path, tmp_path: Path
) -> None:
    digest = write_random(server_root / "fresh.bin", 3 * MiB)  # the server has not hashed it yet
    with trio.fail_after(NETWORK_TIMEOUT):
        async with connect(server) as conn:
            info = await conn.download("fresh.bin", tmp_path / "fresh.bin")
    assert info.digest == digest
    assert info.size == 3 * MiB


async def test_upload_of_a_local_folder_is_refused_before_sending(server: Server, tmp_path: Path) -> None:
    folder = tmp_path / "a-folder"
    folder.mkdir()
    with trio.fail_after(NETWORK_TIMEOUT):
        async with connect(server) as conn:
            with pytest.raises(IsADirectoryError):
                await conn.upload(folder, "x")
            assert await conn.list() == []  # nothing stored, the connection still works


async def test_one_liners(server: Server, server_root: Path) -> None:
    with trio.fail_after(NETWORK_TIMEOUT):
        await trioftp.put("127.0.0.1", "notes/one.txt", b"one liner", port=server.port)
        assert (server_root / "notes" / "one.txt").read_bytes() == b"one liner"
        assert await trioftp.get("127.0.0.1", "notes/one.txt", port=server.port) == b"one liner"


async def test_unicode_and_nested_names(server: Server, server_root: Path) -> None:
    name = "café/naïve 日本語/résumé 📄.txt"
    with trio.fail_after(NETWORK_TIMEOUT):
        async with connect(server) as conn:
            await conn.put(name, b"bonjour")
            assert (server_root / "café" / "naïve 日本語" / "résumé 📄.txt").read_bytes() == b"bonjour"
            assert await conn.get(name) == b"bonjour"
            assert [e.name for e in await conn.list("café")] == ["naïve 日本語"]
            assert [e.name for e in await conn.list("café/naïve 日本語")] == ["résumé 📄.txt"]
            assert (await conn.stat(name)).size == 7


async def test_put_replaces_an_existing_file(server: Server, server_root: Path) -> None:
    (server_root / "a.txt").write_bytes(b"old content")
    with trio.fail_after(NETWORK_TIMEOUT):
        async with connect(server) as conn:
            await conn.put("a.txt", b"new")
            assert await conn.get("a.txt") == b"new"
    assert (server_root / "a.txt").read_bytes() == b"new"


async def test_put_of_identical_bytes_is_answered_without_sending_them(
    server: Server, server_root: Path
) -> None:
    data = os.urandom(300_000)
    sent: list[int] = []
    with trio.fail_after(NETWORK_TIMEOUT):
        async with connect(server) as conn:
            await conn.put("same.bin", data, progress=lambda n, total: sent.append(n))
            assert sent
            sent.clear()
            info = await conn.put("same.bin", data, progress=lambda n, total: sent.append(n))
    assert sent == []
    assert info.size == len(data) and info.digest is not None and info.digest.hex() == blake3_hex(data)


# ------------------------------------------------------------------ list/stat


async def test_list(server: Server, server_root: Path) -> None:
    (server_root / "b.txt").write_bytes(b"12345")
    (server_root / "a-folder").mkdir()
    (server_root / "a-folder" / "inner.txt").write_bytes(b"x")
    with trio.fail_after(NETWORK_TIMEOUT):
        async with connect(server) as conn:
            root = await conn.list()
            inner = await conn.list("a-folder")
            await conn.mkdir("empty")
            empty_folder = await conn.list("empty")
    # Sorted by name; the server's own .trioftp folder is never listed.
    assert [(e.name, e.kind, e.size) for e in root] == [("a-folder", Kind.DIR, 0), ("b.txt", Kind.FILE, 5)]
    assert root[1].mtime_ns == (server_root / "b.txt").stat().st_mtime_ns
    assert [(e.name, e.kind, e.size) for e in inner] == [("inner.txt", Kind.FILE, 1)]
    assert empty_folder == []


async def test_list_of_many_entries_comes_in_several_frames(server: Server, server_root: Path) -> None:
    folder = server_root / "many"
    folder.mkdir()
    names = sorted(f"file-{i:04d}-{'x' * 200}" for i in range(700))
    for name in names:
        (folder / name).touch()
    with trio.fail_after(NETWORK_TIMEOUT):
        async with connect(server) as conn:
            entries = await conn.list("many")
    assert [e.name for e in entries] == names


async def test_list_errors(server: Server, server_root: Path) -> None:
    (server_root / "file.txt").write_bytes(b"x")
    with trio.fail_after(NETWORK_TIMEOUT):
        async with connect(server) as conn:
            with pytest.raises(NotFound):
                await conn.list("missing")
            with pytest.raises(RemoteError) as caught:
                await conn.list("file.txt")
            assert caught.value.code is ErrorCode.WRONG_KIND


async def test_stat_of_a_file_gives_its_digest(server: Server, server_root: Path) -> None:
    data = os.urandom(500_000)  # over the inline-hash limit: hashed on a thread
    (server_root / "f.bin").write_bytes(data)
    with trio.fail_after(NETWORK_TIMEOUT):
        async with connect(server) as conn:
            info = await conn.stat("f.bin")
            again = await conn.stat("f.bin")  # from the digest cache
            (server_root / "f.bin").write_bytes(data[::-1])  # rewritten in place: the cache must not answer
            changed = await conn.stat("f.bin")
    assert (info.name, info.kind, info.size) == ("f.bin", Kind.FILE, len(data))
    assert info.digest is not None and info.digest.hex() == blake3_hex(data)
    assert again.digest == info.digest
    assert changed.digest is not None and changed.digest.hex() == blake3_hex(data[::-1])


async def test_stat_of_a_folder(server: Server, server_root: Path) -> None:
    (server_root / "dir" / "sub").mkdir(parents=True)
    with trio.fail_after(NETWORK_TIMEOUT):
        async with connect(server) as conn:
            info = await conn.stat("dir/sub")
            with pytest.raises(NotFound):
                await conn.stat("dir/missing")
    assert (info.name, info.kind, info.size, info.digest) == ("dir/sub", Kind.DIR, 0, None)


async def test_sha256_when_the_client_offers_only_sha256(server: Server, server_root: Path) -> None:
    data = b"digest me" * 1000
    with trio.fail_after(NETWORK_TIMEOUT):
        async with connect(server, settings=Settings(digests=("sha256",))) as conn:
            assert conn.digest_algorithm == "sha256"
            info = await conn.put("s.bin", data)
            assert await conn.get("s.bin") == data
            stat = await conn.stat("s.bin")
    assert info.digest == stat.digest == hashlib.sha256(data).digest()


async def test_list_fits_a_client_with_the_smallest_frame_size(server: Server, server_root: Path) -> None:
    folder = server_root / "long-names"
    folder.mkdir()
    names = sorted(f"{i:03d}-{'n' * 240}" for i in range(300))  # 300 names of 244 bytes
    for name in names:
        (folder / name).touch()
    with trio.fail_after(NETWORK_TIMEOUT):
        async with connect(server, settings=Settings(max_frame_size=16 * 1024)) as conn:
            entries = await conn.list("long-names")
    assert [e.name for e in entries] == names


# ---------------------------------------------------------- delete/rename/mkdir


async def test_delete(server: Server, server_root: Path) -> None:
    (server_root / "file.txt").write_bytes(b"x")
    (server_root / "empty").mkdir()
    (server_root / "full").mkdir()
    (server_root / "full" / "keep.txt").write_bytes(b"keep")
    with trio.fail_after(NETWORK_TIMEOUT):
        async with connect(server) as conn:
            await conn.delete("file.txt")
            await conn.delete("empty")
            with pytest.raises(RemoteError) as refused:
                await conn.delete("full")
            with pytest.raises(NotFound):
                await conn.delete("file.txt")
    assert not (server_root / "file.txt").exists()
    assert not (server_root / "empty").exists()
    assert refused.value.code is ErrorCode.BAD_REQUEST
    assert (server_root / "full" / "keep.txt").read_bytes() == b"keep"


async def test_rename(server: Server, server_root: Path) -> None:
    (server_root / "a.txt").write_bytes(b"A")
    (server_root / "b.txt").write_bytes(b"B")
    with trio.fail_after(NETWORK_TIMEOUT):
        async with connect(server) as conn:
            with pytest.raises(AlreadyExists):
                await conn.rename("a.txt", "b.txt")
            assert (server_root / "a.txt").read_bytes() == b"A"
            assert (server_root / "b.txt").read_bytes() == b"B"
            await conn.rename("a.txt", "b.txt", replace=True)
            assert not (server_root / "a.txt").exists()
            assert (server_root / "b.txt").read_bytes() == b"A"
            with pytest.raises(NotFound):
                await conn.rename("a.txt", "c.txt")
            assert not (server_root / "c.txt").exists()
            await conn.rename("b.txt", "new/deeper/c.txt")  # missing parents are made
            assert (server_root / "new" / "deeper" / "c.txt").read_bytes() == b"A"
            await conn.rename("new", "renamed-folder")
            assert await conn.get("renamed-folder/deeper/c.txt") == b"A"
            with pytest.raises(RemoteError) as into_itself:
                await conn.rename("renamed-folder", "renamed-folder/deeper/inside")
    assert into_itself.value.code is ErrorCode.BAD_REQUEST
    assert (server_root / "renamed-folder" / "deeper" / "c.txt").exists()


async def test_mkdir(server: Server, server_root: Path) -> None:
    (server_root / "a-file").write_bytes(b"x")
    with trio.fail_after(NETWORK_TIMEOUT):
        async with connect(server) as conn:
            await conn.mkdir("x/y/z")
            assert (server_root / "x" / "y" / "z").is_dir()
            await conn.mkdir("x/y/z")  # an existing folder is fine
            await conn.mkdir("x")
            with pytest.raises(AlreadyExists):
                await conn.mkdir("a-file")
            assert (await conn.stat("x/y")).kind is Kind.DIR
    assert (server_root / "a-file").read_bytes() == b"x"


async def test_files_and_folders_are_not_mistaken_for_each_other(server: Server, server_root: Path) -> None:
    (server_root / "folder").mkdir()
    (server_root / "file").write_bytes(b"x")
    with trio.fail_after(NETWORK_TIMEOUT):
        async with connect(server) as conn:
            with pytest.raises(RemoteError) as get_folder:
                await conn.get("folder")
            with pytest.raises(RemoteError) as put_folder:
                await conn.put("folder", b"would hide the folder")
            sent: list[int] = []
            with pytest.raises(RemoteError) as put_under_file:
                await conn.put("file/inside", os.urandom(MiB), progress=lambda n, t: sent.append(n))
            with pytest.raises(RemoteError) as rename_under_file:
                await conn.rename("folder", "file/folder")
            with pytest.raises(RemoteError) as mkdir_under_file:
                await conn.mkdir("file/sub")
            assert await conn.get("file") == b"x"  # the connection goes on
    assert get_folder.value.code is ErrorCode.WRONG_KIND
    assert put_folder.value.code is ErrorCode.WRONG_KIND
    # A parent that is a file: refused before any byte is sent, and not as "already exists".
    assert put_under_file.value.code is ErrorCode.WRONG_KIND and sent == []
    assert rename_under_file.value.code is ErrorCode.WRONG_KIND
    assert mkdir_under_file.value.code is ErrorCode.WRONG_KIND
    assert (server_root / "folder").is_dir()
    assert (server_root / "file").read_bytes() == b"x"


async def test_get_of_a_missing_file(server: Server) -> None:
    with trio.fail_after(NETWORK_TIMEOUT):
        async with connect(server) as conn:
            with pytest.raises(NotFound) as caught:
                await conn.get("nope.txt")
            assert caught.value.code is ErrorCode.NOT_FOUND
            assert "nope.txt" in str(caught.value)
            assert await conn.list() == []  # still usable


async def test_no_common_digest_is_refused_at_the_handshake(server: Server) -> None:
    with trio.fail_after(NETWORK_TIMEOUT):
        with pytest.raises(ConnectionClosed, match="PROTOCOL_ERROR"):
            async with connect(server, settings=Settings(digests=("md5",))):
                pass
        async with connect(server) as conn:
            assert await conn.list() == []


async def test_a_server_that_is_not_trioftp_is_a_protocol_violation(nursery: trio.Nursery) -> None:
    async def http_server(stream: trio.SocketStream) -> None:
        await stream.send_all(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        await stream.aclose()

    listeners = await nursery.start(partial(trio.serve_tcp, http_server, 0, host="127.0.0.1"))
    port = listeners[0].socket.getsockname()[1]
    with trio.fail_after(NETWORK_TIMEOUT), pytest.raises(ProtocolViolation, match="not a trioftp v2 server"):
        async with connect(port):
            pass
    nursery.cancel_scope.cancel()


async def test_a_closed_connection_says_so(server: Server) -> None:
    with trio.fail_after(NETWORK_TIMEOUT):
        async with connect(server) as conn:
            pass
        with pytest.raises(ConnectionClosed):
            await conn.list()


async def test_put_sets_the_mtime(server: Server, server_root: Path) -> None:
    with trio.fail_after(NETWORK_TIMEOUT):
        async with connect(server) as conn:
            info = await conn.put("dated.txt", b"x", mtime_ns=1_500_000_000_000_000_000)
    assert info.mtime_ns == 1_500_000_000_000_000_000
    assert (server_root / "dated.txt").stat().st_mtime_ns == 1_500_000_000_000_000_000


# --------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("cls", "code"),
    [
        (NotFound, ErrorCode.NOT_FOUND),
        (AlreadyExists, ErrorCode.ALREADY_EXISTS),
        (PermissionDenied, ErrorCode.PERMISSION_DENIED),
        (BadName, ErrorCode.BAD_NAME),
        (RemoteChecksumMismatch, ErrorCode.CHECKSUM_MISMATCH),
        (Busy, ErrorCode.BUSY),
    ],
)
def test_error_classes_carry_their_wire_code(cls: type[RemoteError], code: ErrorCode) -> None:
    error = trioftp.errors.remote_error(code, "why")
    assert type(error) is cls
    assert error.code is code
    assert isinstance(error, RemoteError) and isinstance(error, TrioftpError)
    assert str(error) == f"{code.name}: why"


def test_every_client_error_is_a_trioftp_error() -> None:
    for cls in (ConnectionClosed, ProtocolViolation, TransferTimeout, ChecksumMismatch, RemoteError):
        assert issubclass(cls, TrioftpError)
    assert issubclass(RemoteChecksumMismatch, ChecksumMismatch)
    unknown = trioftp.errors.remote_error(ErrorCode.TOO_LARGE, "")
    assert type(unknown) is RemoteError and unknown.code is ErrorCode.TOO_LARGE


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_connect_by_address_or_by_name(server: Server, server_root: Path, host: str) -> None:
    (server_root / "a.txt").write_bytes(b"hello")
    with trio.fail_after(NETWORK_TIMEOUT):
        async with trioftp.open_connection(host, server.port) as conn:
            assert await conn.get("a.txt") == b"hello"


async def test_an_ipv6_address_is_dialled_directly(monkeypatch: pytest.MonkeyPatch) -> None:
    from trioftp.client.connection import _open_tcp

    try:
        listeners = await trio.open_tcp_listeners(0, host="::1")
    except OSError:
        pytest.skip("no IPv6 loopback here")
    port = listeners[0].socket.getsockname()[1]

    async def accept_and_close() -> None:
        accepted = await listeners[0].accept()
        await accepted.aclose()

    async def no_lookup(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("an address needs no happy eyeballs")

    monkeypatch.setattr(trio, "open_tcp_stream", no_lookup)
    try:
        with trio.fail_after(NETWORK_TIMEOUT):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(accept_and_close)
                stream = await _open_tcp("::1", port)
                assert stream.socket.family == trio.socket.AF_INET6
                await stream.aclose()
    finally:
        await listeners[0].aclose()


async def test_a_refused_address_is_a_clear_error() -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    await listeners[0].aclose()  # nobody listens there now
    with trio.fail_after(NETWORK_TIMEOUT), pytest.raises(ConnectionClosed, match="cannot connect"):
        async with trioftp.open_connection("127.0.0.1", port):
            pass


async def test_a_port_out_of_range_is_a_clear_error() -> None:
    with trio.fail_after(NETWORK_TIMEOUT), pytest.raises(ConnectionClosed, match="cannot connect"):
        async with trioftp.open_connection("127.0.0.1", 70000):
            pass


async def test_a_fifo_in_the_root_is_refused_at_once(server: Server, server_root: Path) -> None:
    os.mkfifo(server_root / "pipe")
    (server_root / "ok.txt").write_bytes(b"ok")
    # The open used to wait, on a worker thread, for a local writer.
    with writer_after(server_root / "pipe", 5.0), trio.fail_after(5):
        async with connect(server) as conn:
            with pytest.raises(RemoteError) as caught:
                await conn.get("pipe")
            assert caught.value.code is ErrorCode.WRONG_KIND
            assert await conn.get("ok.txt") == b"ok"
        with pytest.raises(NotFound):  # the legacy protocol's NO|0
            await trioftp.legacy.get("127.0.0.1", "pipe", port=server.port)
