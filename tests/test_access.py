"""Access control: users, passwords, rights and homes; TLS. Real server, real client, loopback."""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import re
import ssl
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import blake3
import pytest
import trio
import trio.testing
import trustme

import trioftp
import trioftp.server.auth as auth_module
from compat import legacy_client
from tests.conftest import NETWORK_TIMEOUT, MakeServer
from tests.v2_helpers import RawPeer, file_digest, raw_request, write_random
from trioftp.disk.digests import new_hasher
from trioftp.protocol import Cancel, Error, ErrorCode, FileInfo, FrameType, Get, Ready
from trioftp.server import Server
from trioftp.server.auth import Failure, FailureTracker, hash_password, load_users

HOST = "127.0.0.1"
ALICE_PW = "correct horse"
BOB_PW = "battery staple"


@pytest.fixture(scope="module")
def password_hashes() -> dict[str, str]:
    # scrypt is slow on purpose: hash once per module.
    return {"alice": hash_password(ALICE_PW), "bob": hash_password(BOB_PW)}


def users_file(tmp_path: Path, hashes: dict[str, str], *, anonymous: str = "") -> Path:
    path = tmp_path / "users.toml"
    path.write_text(
        f"""
[users.alice]
password = "{hashes["alice"]}"
home = "alice"
rights = ["all"]
admin = true

[users.bob]
password = "{hashes["bob"]}"
home = "shared"
rights = ["read", "list"]
{anonymous}
"""
    )
    return path


@pytest.fixture
async def users_server(
    make_server: Callable[..., Any], tmp_path: Path, password_hashes: dict[str, str]
) -> Server:
    server: Server = await make_server(users_file=str(users_file(tmp_path, password_hashes)))
    server.auth_failures = FailureTracker(base_delay=0.01, lockout_after=5)
    return server


def connect(server: Server, **kwargs: Any) -> Any:
    return trioftp.open_connection(HOST, server.port, **kwargs)


async def test_login_puts_files_in_the_users_home(users_server: Server, server_root: Path) -> None:
    (server_root / "secret.txt").write_text("not for alice")
    with trio.fail_after(NETWORK_TIMEOUT):
        async with connect(users_server, user="alice", password=ALICE_PW) as conn:
            assert conn.authorized is not None and conn.authorized.user == "alice"
            await conn.put("notes/a.txt", b"alice's")
            assert await conn.get("notes/a.txt") == b"alice's"
            assert [e.name for e in await conn.list("")] == ["notes"]  # secret.txt is not in her home
            with pytest.raises(trioftp.NotFound):
                await conn.get("secret.txt")
    assert (server_root / "alice" / "notes" / "a.txt").read_bytes() == b"alice's"


async def test_no_credentials_on_a_server_without_anonymous_access(users_server: Server) -> None:
    with trio.fail_after(NETWORK_TIMEOUT), pytest.raises(trioftp.AuthenticationFailed, match="needs a user"):
        async with connect(users_server):
            pass


async def test_wrong_password_and_unknown_user_get_the_same_answer(users_server: Server) -> None:
    answers = []
    with trio.fail_after(NETWORK_TIMEOUT):
        for user, password in (("alice", "wrong"), ("mallory", ALICE_PW)):
            with pytest.raises(trioftp.AuthenticationFailed) as caught:
                async with connect(users_server, user=user, password=password):
                    pass
            answers.append(str(caught.value))
    assert answers[0] == answers[1]
    assert "AUTH_FAILED" in answers[0]


async def test_failures_cost_a_growing_delay_then_lock_the_address_out(users_server: Server) -> None:
    users_server.auth_failures = FailureTracker(base_delay=0.05, max_delay=0.5, lockout_after=3)
    with trio.fail_after(NETWORK_TIMEOUT):
        times = []
        for _ in range(3):
            start = trio.current_time()
            with pytest.raises(trioftp.AuthenticationFailed):
                async with connect(users_server, user="alice", password="nope"):
                    pass
            times.append(trio.current_time() - start)
        assert times[0] >= 0.05 and times[2] >= 0.2  # 0.05, 0.1, 0.2: doubling
        # Locked out: even the right password fails now.
        with pytest.raises(trioftp.AuthenticationFailed):
            async with connect(users_server, user="alice", password=ALICE_PW):
                pass


def test_failure_tracker_numbers() -> None:
    tracker = FailureTracker()  # the defaults that the README and SECURITY.md state
    failures = [tracker.record_failure("10.0.0.1", "mallory", now=float(t)) for t in range(10)]
    assert [f.delay for f in failures] == [0.5, 1, 2, 4, 8, 10, 10, 10, 10, 10]
    assert [f.locked_until for f in failures] == [None] * 9 + [9.0 + 600]
    assert tracker.locked_until("10.0.0.1", now=608.9) == 609.0
    assert tracker.locked_until("10.0.0.2", now=100.0) is None  # per address
    assert tracker.locked_until("10.0.0.1", now=609.0) is None
    # Over, and the failures behind it forgotten: the address starts afresh.
    assert tracker.record_failure("10.0.0.1", "mallory", now=609.0) == Failure(delay=0.5, count=1)
    # Failures older than the window do not count.
    assert tracker.record_failure("10.0.0.1", "mallory", now=609.0 + 600).count == 1


async def test_logging_into_ones_own_account_does_not_wipe_failures_against_others(
    users_server: Server,
) -> None:
    users_server.auth_failures = FailureTracker(base_delay=0.01, max_delay=0.1, lockout_after=3)

    async def log_in(user: str, password: str) -> bool:
        try:
            async with connect(users_server, user=user, password=password):
                return True
        except trioftp.AuthenticationFailed:
            return False

    with trio.fail_after(NETWORK_TIMEOUT):
        assert not await log_in("alice", "typo")
        assert await log_in("alice", ALICE_PW)  # forgives alice's typo, not the guesses below
        assert not await log_in("bob", "guess 1")
        assert not await log_in("bob", "guess 2")
        assert await log_in("alice", ALICE_PW)
        assert not await log_in("bob", "guess 3")  # the third failure: locked out
        assert not await log_in("alice", ALICE_PW)


async def test_parallel_guesses_get_no_more_checks_than_the_lockout_allows(
    users_server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    users_server.auth_failures = FailureTracker(base_delay=0.01, max_delay=0.1, lockout_after=3)
    checked: list[str] = []
    verify = auth_module.verify_password
    monkeypatch.setattr(
        auth_module, "verify_password", lambda pw, stored: checked.append(pw) or verify(pw, stored)
    )

    async def guess(password: str) -> None:
        with pytest.raises(trioftp.AuthenticationFailed):
            async with connect(users_server, user="alice", password=password):
                pass

    with trio.fail_after(NETWORK_TIMEOUT):
        async with trio.open_nursery() as nursery:
            for i in range(12):  # all at once: the checks would overlap on threads
                nursery.start_soon(guess, f"guess {i}")
    assert len(checked) == 3
    assert not users_server.auth_failures._checking  # no turn left behind for the address


def test_failure_tracker_forgets_addresses_that_do_not_come_back() -> None:
    tracker = FailureTracker(lockout_after=2)
    for n in range(5000):  # one failure each, or two: then locked out
        for _ in range(1 + n % 2):
            tracker.record_failure(f"10.0.{n // 256}.{n % 256}", "mallory", now=0.0)
    for n in range(4000):  # ten minutes later, others
        tracker.record_failure(f"10.1.{n // 256}.{n % 256}", "mallory", now=601.0)
    assert len(tracker._failures) + len(tracker._locked_until) <= 4000 * 2


def cheap_hash(password: str) -> str:
    """A users-file scrypt entry that takes microseconds, so no thread runs long under a mock clock."""
    salt = b"salt" * 4
    key = hashlib.scrypt(password.encode(), salt=salt, n=2, r=1, p=1, dklen=32)
    return f"scrypt$2$1$1${base64.b64encode(salt).decode()}${base64.b64encode(key).decode()}"


@pytest.fixture
def patient_autojump_clock() -> trio.testing.MockClock:
    """A mock clock that jumps only after 10 ms of real idleness, not while a login's check runs."""
    return trio.testing.MockClock(autojump_threshold=0.01)


async def test_a_lockout_ends_on_time_whatever_is_tried_meanwhile(
    make_server: MakeServer,
    tmp_path: Path,
    patient_autojump_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hashes = {"alice": cheap_hash(ALICE_PW), "bob": cheap_hash(BOB_PW)}
    users_server: Server = await make_server(users_file=str(users_file(tmp_path, hashes)))
    caplog.set_level(logging.WARNING, logger="trioftp.server")
    tracker = users_server.auth_failures = FailureTracker(
        base_delay=0.01, max_delay=0.5, lockout_after=3, lockout=10.0
    )
    checked: list[str] = []
    verify = auth_module.verify_password
    monkeypatch.setattr(
        auth_module, "verify_password", lambda pw, stored: checked.append(pw) or verify(pw, stored)
    )

    async def answer(password: str) -> str:
        with pytest.raises(trioftp.AuthenticationFailed) as caught:
            async with connect(users_server, user="alice", password=password):
                pass
        return str(caught.value)

    with trio.fail_after(NETWORK_TIMEOUT):
        wrong = [await answer(f"guess {i}") for i in range(3)]
        locked_until = tracker.locked_until("127.0.0.1", trio.current_time())
        assert locked_until is not None
        assert checked == ["guess 0", "guess 1", "guess 2"]
        # Each retry while locked out, the right password too: refused without
        # a check, after the longest delay, with the same answer; not counted.
        while trio.current_time() < locked_until - 2:
            start = trio.current_time()
            assert await answer(ALICE_PW) == wrong[0]
            assert 0.5 <= trio.current_time() - start < 1.5
        assert len(checked) == 3
        assert tracker.locked_until("127.0.0.1", trio.current_time()) == locked_until
        await trio.sleep_until(locked_until)
        async with connect(users_server, user="alice", password=ALICE_PW) as conn:
            assert conn.authorized is not None and conn.authorized.user == "alice"
    lines = [r.getMessage() for r in caplog.records if "login" in r.getMessage()]
    assert re.search(
        r"login failed for user 'alice': 3 failures, 127\.0\.0\.1 is locked out for 10 s, until "
        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ; answering in 0\.04 s",
        lines[2],
    ), lines[2]
    refused = lines[3:]
    assert len(refused) >= 3
    assert all(
        re.search(
            r"login refused for user 'alice', password not checked: 127\.0\.0\.1 is locked out until "
            r"\S+Z \(\d+ s more\); answering in 0\.5 s",
            line,
        )
        for line in refused
    ), refused


async def test_rights_are_enforced_per_request(users_server: Server, server_root: Path) -> None:
    (server_root / "shared").mkdir(exist_ok=True)
    (server_root / "shared" / "doc.txt").write_text("shared doc")
    with trio.fail_after(NETWORK_TIMEOUT):
        async with connect(users_server, user="bob", password=BOB_PW) as conn:
            assert set(conn.authorized.rights) == {"read", "list"}  # type: ignore[union-attr]
            assert await conn.get("doc.txt") == b"shared doc"
            assert [e.name for e in await conn.list()] == ["doc.txt"]
            for attempt in (
                conn.put("new.txt", b"x"),
                conn.delete("doc.txt"),
                conn.rename("doc.txt", "moved.txt"),
                conn.mkdir("folder"),
            ):
                with pytest.raises(trioftp.PermissionDenied):
                    await attempt
            assert await conn.get("doc.txt") == b"shared doc"  # the connection goes on
    assert sorted(p.name for p in (server_root / "shared").iterdir()) == ["doc.txt"]


async def test_a_user_cannot_leave_the_home(users_server: Server, server_root: Path, tmp_path: Path) -> None:
    (server_root / "outside.txt").write_text("root file")
    (server_root / "alice").mkdir(exist_ok=True)
    os.symlink(server_root / "outside.txt", server_root / "alice" / "link.txt")
    os.symlink(server_root, server_root / "alice" / "up")
    with trio.fail_after(NETWORK_TIMEOUT):
        async with connect(users_server, user="alice", password=ALICE_PW) as conn:
            for name in ("link.txt", "up/outside.txt"):
                with pytest.raises(trioftp.PermissionDenied):
                    await conn.get(name)
            with pytest.raises(trioftp.PermissionDenied):
                await conn.put("up/planted.txt", b"x")
            with pytest.raises(trioftp.PermissionDenied):
                await conn.rename("up/outside.txt", "mine.txt")
    assert not (server_root / "planted.txt").exists()
    assert (server_root / "outside.txt").read_text() == "root file"


async def test_a_request_before_auth_ends_the_connection(users_server: Server) -> None:
    with trio.fail_after(NETWORK_TIMEOUT):
        async with RawPeer.connect(users_server) as peer:
            await peer.send(Get(name="x", stream_id=1))
            answers = await peer.receive_until_closed()
    assert answers and isinstance(answers[-1], Error) and answers[-1].code is ErrorCode.AUTH_FAILED


async def test_anonymous_access_gets_its_own_home_and_rights(
    make_server: Callable[..., Any], tmp_path: Path, password_hashes: dict[str, str], server_root: Path
) -> None:
    anonymous = '[anonymous]\nenabled = true\nhome = "public"\nrights = ["read", "list"]\n'
    server = await make_server(users_file=str(users_file(tmp_path, password_hashes, anonymous=anonymous)))
    (server_root / "public" / "readme.txt").write_text("hello")
    with trio.fail_after(NETWORK_TIMEOUT):
        async with connect(server) as conn:
            assert await conn.get("readme.txt") == b"hello"
            with pytest.raises(trioftp.PermissionDenied):
                await conn.put("upload.txt", b"x")
        async with connect(server, user="alice", password=ALICE_PW) as conn:  # users still log in
            await conn.put("mine.txt", b"alice")
    assert (server_root / "alice" / "mine.txt").exists()


async def _anonymous_server(
    make_server: Callable[..., Any], tmp_path: Path, hashes: dict[str, str], rights: str
) -> Server:
    anonymous = f'[anonymous]\nenabled = true\nhome = "public"\nrights = {rights}\n'
    server: Server = await make_server(users_file=str(users_file(tmp_path, hashes, anonymous=anonymous)))
    return server


@pytest.mark.parametrize(("rights", "digest_given"), [('["list"]', False), ('["read", "list"]', True)])
async def test_stat_gives_the_digest_only_with_the_read_right(
    make_server: Callable[..., Any],
    tmp_path: Path,
    password_hashes: dict[str, str],
    server_root: Path,
    rights: str,
    digest_given: bool,
) -> None:
    """The digest tells what the file holds; `list` alone gives name, kind, size and time."""
    server = await _anonymous_server(make_server, tmp_path, password_hashes, rights)
    (server_root / "public" / "secret.txt").write_bytes(b"the content")
    with trio.fail_after(NETWORK_TIMEOUT):
        async with connect(server) as conn:
            info = await conn.stat("secret.txt")
            hasher = new_hasher(conn.digest_algorithm)
    hasher.update(b"the content")
    assert (info.kind.value, info.size) == ("file", len(b"the content"))
    assert info.digest == (hasher.digest() if digest_given else None)


def _put_with_digest(stream_id: int, name: str, data: bytes, digest: bytes) -> bytes:
    fields = {"name": name, "size": len(data), "digest": digest, "resume": False, "mtime_ns": None}
    return raw_request(FrameType.PUT, stream_id, **fields)


@pytest.mark.parametrize(("rights", "short_cut"), [('["write"]', False), ('["read", "write"]', True)])
async def test_a_put_short_cuts_only_for_a_user_who_may_read_the_file(
    make_server: Callable[..., Any],
    tmp_path: Path,
    password_hashes: dict[str, str],
    server_root: Path,
    rights: str,
    short_cut: bool,
) -> None:
    """Otherwise FILE_INFO for the right digest and READY for a wrong one would confirm a guess."""
    server = await _anonymous_server(make_server, tmp_path, password_hashes, rights)
    content = b"the secret content"
    (server_root / "public" / "secret.txt").write_bytes(content)
    right, wrong = blake3.blake3(content).digest(), blake3.blake3(b"the public content").digest()
    guesses = {1: right, 3: wrong}
    with trio.fail_after(NETWORK_TIMEOUT):
        async with RawPeer.connect(server) as peer:
            await peer.send_raw(
                b"".join(_put_with_digest(i, "secret.txt", content, d) for i, d in guesses.items())
            )
            answers = {m.stream_id: type(m) for m in [await peer.receive(), await peer.receive()]}  # type: ignore[union-attr]
            await peer.send(*(Cancel(stream_id=i) for i, kind in answers.items() if kind is Ready))
    assert answers == {1: FileInfo if short_cut else Ready, 3: Ready}
    assert (server_root / "public" / "secret.txt").read_bytes() == content


async def test_legacy_clients_are_refused_when_there_are_users(users_server: Server) -> None:
    with trio.fail_after(NETWORK_TIMEOUT):
        with pytest.raises(legacy_client.Refused):
            await trio.to_thread.run_sync(legacy_client.get, HOST, users_server.port, "x.txt")


async def test_legacy_with_users_gets_only_anonymous_rights(
    make_server: Callable[..., Any], tmp_path: Path, password_hashes: dict[str, str], server_root: Path
) -> None:
    anonymous = '[anonymous]\nenabled = true\nhome = "public"\nrights = ["read"]\n'
    server = await make_server(
        users_file=str(users_file(tmp_path, password_hashes, anonymous=anonymous)), legacy_with_users=True
    )
    (server_root / "public" / "old.txt").write_bytes(b"legacy readable")
    with trio.fail_after(NETWORK_TIMEOUT):
        data = await trio.to_thread.run_sync(legacy_client.get, HOST, server.port, "old.txt")
        assert data == b"legacy readable"
        with pytest.raises(legacy_client.Refused):  # the old protocol's only refusal is a close
            await trio.to_thread.run_sync(legacy_client.put, HOST, server.port, "new.txt", b"x")
    assert not (server_root / "public" / "new.txt").exists()


def test_an_unknown_user_costs_the_same_scrypt_as_a_wrong_password(
    tmp_path: Path, password_hashes: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    users = load_users(users_file(tmp_path, password_hashes))
    checked: list[str] = []
    verify = auth_module.verify_password
    monkeypatch.setattr(
        auth_module, "verify_password", lambda pw, stored: checked.append(stored) or verify(pw, stored)
    )
    assert users.authenticate("mallory", ALICE_PW) is None
    assert users.authenticate("alice", "wrong") is None
    unknown, wrong = (stored.split("$")[:4] for stored in checked)
    assert unknown == wrong == password_hashes["alice"].split("$")[:4]  # scrypt, same N, r, p


def test_importing_trioftp_runs_no_scrypt() -> None:
    # scrypt takes 16 MiB and ~50 ms: every server's peak memory and every CLI
    # command's start paid for it when the unknown-user hash was computed at import.
    code = (
        "import hashlib\n"
        "def refuse(*args, **kwargs):\n"
        "    raise AssertionError('scrypt at import')\n"
        "hashlib.scrypt = refuse\n"
        "import trioftp, trioftp.cli, trioftp.server.auth\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parent.parent)


def test_users_file_mistakes_are_reported(tmp_path: Path) -> None:
    path = tmp_path / "users.toml"
    path.write_text('[users.eve]\npassword = "plain text"\n')
    with pytest.raises(ValueError, match="scrypt"):
        load_users(path)
    path.write_text('[users.eve]\npassword = "scrypt$1$1$1$AA==$AA=="\nrights = ["fly"]\n')
    with pytest.raises(ValueError, match="rights"):
        load_users(path)
    path.write_text('[users.eve]\npassword = "scrypt$1$1$1$AA==$AA=="\nhome = "../up"\n')
    with pytest.raises(ValueError, match="home"):
        load_users(path)


# ------------------------------------------------------------------------ TLS


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
async def tls_server(make_server: Callable[..., Any], ca: trustme.CA, tmp_path: Path) -> Server:
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.cert_chain_pems[0].write_to_path(str(cert_path))
    for pem in cert.cert_chain_pems[1:]:
        pem.write_to_path(str(cert_path), append=True)
    cert.private_key_pem.write_to_path(str(key_path))
    server: Server = await make_server(tls_cert=str(cert_path), tls_key=str(key_path), handshake_timeout=1.0)
    return server


def client_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


async def test_tls_round_trip_large_file(tls_server: Server, ca: trustme.CA, tmp_path: Path) -> None:
    digest = write_random(tmp_path / "big.bin", 6 * 1024 * 1024 + 17)
    with trio.fail_after(NETWORK_TIMEOUT):
        async with connect(tls_server, tls=client_context(ca)) as conn:
            await conn.upload(tmp_path / "big.bin", "big.bin")
            await conn.download("big.bin", tmp_path / "back.bin")
            assert await conn.get("big.bin") == (tmp_path / "big.bin").read_bytes()
    assert file_digest(tmp_path / "back.bin") == digest


async def test_tls_client_refuses_an_untrusted_certificate(tls_server: Server) -> None:
    with trio.fail_after(NETWORK_TIMEOUT), pytest.raises(trioftp.ConnectionClosed, match="TLS"):
        async with connect(tls_server, tls=ssl.create_default_context()):
            pass


async def test_plain_client_against_a_tls_server_fails_cleanly(tls_server: Server) -> None:
    with trio.fail_after(NETWORK_TIMEOUT), pytest.raises(trioftp.TrioftpError):
        async with connect(tls_server, connect_timeout=3):
            pass


async def test_stalled_tls_handshake_is_dropped(tls_server: Server, ca: trustme.CA) -> None:
    with trio.fail_after(NETWORK_TIMEOUT):
        stream = await trio.open_tcp_stream(HOST, tls_server.port)
        start = trio.current_time()
        assert await stream.receive_some(100) == b""  # the server gives up on us
        assert trio.current_time() - start < 5
        await stream.aclose()
        async with connect(tls_server, tls=client_context(ca)) as conn:  # others are fine
            await conn.put("ok.txt", b"ok")


async def test_tls_with_login(
    make_server: Callable[..., Any], ca: trustme.CA, tmp_path: Path, password_hashes: dict[str, str]
) -> None:
    cert = ca.issue_cert("127.0.0.1")
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "both.pem"))
    server = await make_server(
        tls_cert=str(tmp_path / "both.pem"),
        tls_key=str(tmp_path / "both.pem"),
        users_file=str(users_file(tmp_path, password_hashes)),
    )
    with trio.fail_after(NETWORK_TIMEOUT):
        async with connect(server, tls=client_context(ca), user="alice", password=ALICE_PW) as conn:
            await conn.put("over-tls.txt", b"secret")
            assert await conn.get("over-tls.txt") == b"secret"


async def test_one_liners_take_credentials(users_server: Server) -> None:
    with trio.fail_after(NETWORK_TIMEOUT):
        login = {"port": users_server.port, "user": "alice", "password": ALICE_PW}
        await trioftp.put(HOST, "one.txt", b"1", **login)  # type: ignore[arg-type]
        assert await trioftp.get(HOST, "one.txt", **login) == b"1"  # type: ignore[arg-type]
        with pytest.raises(trioftp.AuthenticationFailed):
            await trioftp.get(HOST, "one.txt", port=users_server.port)
