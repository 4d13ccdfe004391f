"""The client's local side: where downloads land, what uploads read, names refused before sending."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import trio
import trustme

import trioftp
from tests.conftest import NETWORK_TIMEOUT, MakeServer
from tests.v2_helpers import connect, writer_after
from trioftp.client import targets
from trioftp.client import upload as client_upload
from trioftp.server import Server

BODY = os.urandom(3 * 1024 * 1024 + 11)


async def read_fifo(path: Path, received: bytearray) -> None:
    """Read the FIFO to its end on a thread (abandoned on cancel: a replaced pipe never ends)."""

    def read_all() -> None:
        with open(path, "rb") as reader:
            while chunk := reader.read(65536):
                received.extend(chunk)

    await trio.to_thread.run_sync(read_all, abandon_on_cancel=True)


async def test_a_download_to_a_symlink_replaces_the_file_it_leads_to(
    server: Server, server_root: Path, tmp_path: Path
) -> None:
    (server_root / "f.bin").write_bytes(BODY)
    (tmp_path / "real.bin").write_bytes(b"old")
    (tmp_path / "link.bin").symlink_to("real.bin")
    with trio.fail_after(NETWORK_TIMEOUT):
        async with connect(server) as conn:
            await conn.download("f.bin", tmp_path / "link.bin")
    assert (tmp_path / "link.bin").is_symlink()
    assert (tmp_path / "real.bin").read_bytes() == BODY
    assert sorted(os.listdir(tmp_path)) == ["link.bin", "real.bin", "root"]


async def test_a_download_to_a_fifo_is_written_into_it(
    server: Server, server_root: Path, tmp_path: Path
) -> None:
    (server_root / "f.bin").write_bytes(BODY)
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    received = bytearray()

    with trio.fail_after(NETWORK_TIMEOUT):
        async with connect(server) as conn, trio.open_nursery() as nursery:
            nursery.start_soon(read_fifo, fifo, received)
            info = await conn.download("f.bin", fifo)
    assert bytes(received) == BODY and info.size == len(BODY)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)  # still the pipe, not a file in its place
    assert sorted(os.listdir(tmp_path)) == ["pipe", "root"]


async def test_a_download_to_a_fifo_waits_for_its_reader_and_can_be_cancelled(
    server: Server, server_root: Path, tmp_path: Path
) -> None:
    (server_root / "f.bin").write_bytes(BODY)
    os.mkfifo(tmp_path / "pipe")
    with trio.fail_after(NETWORK_TIMEOUT):
        async with connect(server) as conn:
            with trio.move_on_after(0.3) as waited:
                await conn.download("f.bin", tmp_path / "pipe")
            assert waited.cancelled_caught
            assert await conn.get("f.bin") == BODY  # the connection is still good


def test_which_targets_are_written_in_place(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe")
    (tmp_path / "file").write_bytes(b"")
    (tmp_path / "link").symlink_to("file")
    assert targets.writes_in_place(Path("/dev/null"))
    assert targets.writes_in_place(Path("/dev/stdout"))  # whatever it leads to: the shell opened it
    assert targets.writes_in_place(tmp_path / "pipe")
    assert not targets.writes_in_place(tmp_path / "file")
    assert not targets.writes_in_place(tmp_path / "link")
    assert not targets.writes_in_place(tmp_path / "new")
    assert targets.writes_in_place(Path("/dev/fd/1")) and targets.writes_in_place(Path("/proc/self/fd/2"))
    assert not targets.writes_in_place(Path("/dev/shm/notes.txt"))  # a file system like any other
    assert not targets.writes_in_place(Path("/proc/self/fd/../environ"))
    own = targets._own_descriptor
    assert (own(Path("/dev/stdout")), own(Path("/dev/fd/7")), own(Path(f"/proc/{os.getpid()}/fd/3"))) == (
        1,
        7,
        3,
    )
    assert own(Path("/proc/1/fd/1")) is None and own(Path("/dev/null")) is None
    assert targets.file_and_partial(tmp_path / "link")[0] == (tmp_path / "file").resolve()


async def test_a_download_into_a_missing_folder_names_the_path_given(
    server: Server, server_root: Path, tmp_path: Path
) -> None:
    (server_root / "f.bin").write_bytes(b"x")
    with trio.fail_after(NETWORK_TIMEOUT):
        async with connect(server) as conn:
            with pytest.raises(FileNotFoundError) as caught:
                await conn.download("f.bin", tmp_path / "nodir" / "x.bin")
    assert caught.value.filename == str(tmp_path / "nodir" / "x.bin")  # not its .trioftp-part


async def test_uploading_a_fifo_is_refused_without_waiting_for_a_writer(
    server: Server, tmp_path: Path
) -> None:
    os.mkfifo(tmp_path / "pipe")
    with writer_after(tmp_path / "pipe", 5.0), trio.fail_after(5):
        async with connect(server) as conn:
            with pytest.raises(OSError, match="not a regular file"):
                await conn.upload(tmp_path / "pipe", "pipe")


async def test_a_file_written_to_during_its_upload_is_not_stored(
    server: Server, server_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    local = tmp_path / "growing.log"
    local.write_bytes(BODY)
    real_hash_range = client_upload.hash_range

    def hash_then_append(fd: int, start: int, end: int, hasher: object) -> None:
        real_hash_range(fd, start, end, hasher)  # type: ignore[arg-type]
        with open(local, "ab") as more:  # another program appends, after we read
            more.write(b"one more line\n")

    monkeypatch.setattr(client_upload, "hash_range", hash_then_append)
    with trio.fail_after(NETWORK_TIMEOUT):
        async with connect(server) as conn:
            with pytest.raises(trioftp.LocalFileChanged, match="changed while being uploaded"):
                await conn.upload(local, "growing.log")
            monkeypatch.setattr(client_upload, "hash_range", real_hash_range)
            await conn.upload(local, "growing.log")  # once it is quiet, it goes
    assert (server_root / "growing.log").read_bytes() == BODY + b"one more line\n"


async def test_the_one_liners_raise_trioftp_bad_name(server: Server) -> None:
    with trio.fail_after(NETWORK_TIMEOUT):
        with pytest.raises(trioftp.BadName):
            await trioftp.get("127.0.0.1", "../x", port=server.port)
        with pytest.raises(trioftp.TrioftpError):
            await trioftp.put("127.0.0.1", "a\x00b", b"x", port=server.port)


async def test_a_plain_client_at_a_tls_server_is_told_about_tls(
    make_server: MakeServer, tmp_path: Path
) -> None:
    cert = trustme.CA().issue_cert("127.0.0.1")
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "both.pem"))
    server = await make_server(tls_cert=str(tmp_path / "both.pem"), tls_key=str(tmp_path / "both.pem"))
    with trio.fail_after(NETWORK_TIMEOUT):
        with pytest.raises(trioftp.TrioftpError, match="TLS"):
            async with connect(server, connect_timeout=5):
                pass


async def test_a_legacy_download_follows_a_symlink_and_writes_a_fifo_in_place(
    server: Server, server_root: Path, tmp_path: Path
) -> None:
    (server_root / "f.bin").write_bytes(BODY)
    (tmp_path / "real.bin").write_bytes(b"old")
    (tmp_path / "link.bin").symlink_to("real.bin")
    os.mkfifo(tmp_path / "pipe")
    received = bytearray()

    with trio.fail_after(NETWORK_TIMEOUT):
        assert await trioftp.legacy.download("127.0.0.1", "f.bin", tmp_path / "link.bin", port=server.port)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_fifo, tmp_path / "pipe", received)
            await trioftp.legacy.download("127.0.0.1", "f.bin", tmp_path / "pipe", port=server.port)
    assert (tmp_path / "link.bin").is_symlink() and (tmp_path / "real.bin").read_bytes() == BODY
    assert bytes(received) == BODY and stat.S_ISFIFO(os.lstat(tmp_path / "pipe").st_mode)


async def test_a_legacy_upload_of_a_fifo_is_refused(server: Server, tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe")
    with (
        writer_after(tmp_path / "pipe", 5.0),
        trio.fail_after(5),
        pytest.raises(OSError, match="not a regular file"),
    ):
        await trioftp.legacy.upload("127.0.0.1", tmp_path / "pipe", port=server.port)


async def test_a_name_too_long_for_a_partial_suffix_still_downloads_and_resumes(
    server: Server, server_root: Path, tmp_path: Path
) -> None:
    name = "n" * 250  # with ".trioftp-part" it would pass 255 bytes
    (server_root / name).write_bytes(BODY)
    partial = targets.partial_of(tmp_path / name)
    assert len(partial.name) <= 255 and partial.name.endswith(targets.PARTIAL_SUFFIX)
    partial.write_bytes(BODY[:1000])  # a cut earlier try
    with trio.fail_after(NETWORK_TIMEOUT):
        async with connect(server) as conn:
            await conn.download(name, tmp_path / name)
    assert (tmp_path / name).read_bytes() == BODY
    assert sorted(os.listdir(tmp_path)) == sorted([name, "root"])


async def test_a_download_onto_a_local_folder_fails_at_once_naming_it(
    server: Server, server_root: Path, tmp_path: Path
) -> None:
    (server_root / "f").write_bytes(BODY)
    (tmp_path / "here" / "f").mkdir(parents=True)
    with trio.fail_after(NETWORK_TIMEOUT):
        async with connect(server) as conn:
            with pytest.raises(IsADirectoryError) as caught:
                await conn.download("f", tmp_path / "here" / "f")
        with pytest.raises(IsADirectoryError):
            await trioftp.legacy.download("127.0.0.1", "f", tmp_path / "here" / "f", port=server.port)
    assert caught.value.filename == str(tmp_path / "here" / "f")
    assert os.listdir(tmp_path / "here") == ["f"]  # no partial left beside it


async def test_a_descriptor_path_naming_the_clients_own_socket_is_refused(
    server: Server, server_root: Path
) -> None:
    (server_root / "f.bin").write_bytes(BODY)
    with trio.fail_after(NETWORK_TIMEOUT):
        async with connect(server) as conn:
            sock = conn.channel.stream.socket.fileno()  # type: ignore[attr-defined]
            with pytest.raises(OSError, match="not an output this process was given"):
                await conn.download("f.bin", f"/dev/fd/{sock}")
            assert await conn.get("f.bin") == BODY  # the connection was not written into
