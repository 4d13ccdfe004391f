"""Issue 16, "Everyday use": what a daily user of the command line tripped on, each against the real CLI."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
import trio

from tests.conftest import NETWORK_TIMEOUT
from trioftp.cli import main
from trioftp.server import Server

# The child makes the pseudo-terminal its controlling one, as a login shell would, so that
# getpass (which opens /dev/tty) and isatty() see a terminal.
_IN_A_TERMINAL = (
    "import fcntl, sys, termios; fcntl.ioctl(0, termios.TIOCSCTTY, 0); "
    "from trioftp.cli import main; sys.exit(main(sys.argv[1:]))"
)


def run_in_pty(
    argv: Sequence[str],
    answers: Sequence[tuple[bytes, bytes]] = (),
    *,
    columns: int = 80,
    timeout: float = NETWORK_TIMEOUT,
    cwd: Path | None = None,
) -> tuple[int, str]:
    """`trioftp ARGV` with a pseudo-terminal as its stdin, stdout and stderr.

    `answers`: (prompt, keys) pairs; the keys are typed once the prompt has been shown.
    Returns the exit status and everything the terminal showed.
    """
    import fcntl
    import struct
    import termios

    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    env = {**os.environ, "COLUMNS": str(columns), "TERM": "xterm"}
    env.pop("TRIOFTP_PASSWORD", None)
    process = subprocess.Popen(
        [sys.executable, "-c", _IN_A_TERMINAL, *argv],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        start_new_session=True,
        env=env,
        cwd=cwd,
    )
    os.close(slave)
    shown = b""
    pending = list(answers)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if pending and pending[0][0] in shown:
                os.write(master, pending.pop(0)[1])
            ready, _, _ = select.select([master], [], [], 0.1)
            if not ready:
                continue
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: every copy of the terminal's other end is closed
                break
            if not chunk:
                break
            shown += chunk
        code = process.wait(timeout=max(deadline - time.monotonic(), 1))
    finally:
        os.close(master)
        if process.poll() is None:
            process.kill()
            process.wait()
    return code, shown.decode(errors="replace")


async def run_cli(*argv: str) -> int:
    return await trio.to_thread.run_sync(main, list(argv))


def address(server: Server) -> str:
    return f"127.0.0.1:{server.port}"


# ------------------------------------------------------------------ 3: passwd


@pytest.mark.parametrize("at", ["password: ", "again: "])
def test_passwd_ctrl_d_at_a_prompt_is_one_line_not_a_traceback(at: str) -> None:
    answers = [(b"password: ", b"\x04")] if at == "password: " else [(b"password: ", b"secret\n"), (b"again: ", b"\x04")]
    code, shown = run_in_pty(["passwd"], answers)
    assert code == 1, shown
    assert "Traceback" not in shown and "EOFError" not in shown
    assert shown.strip().splitlines()[-1] == "trioftp: passwd: no password given"


# ------------------------------------------------------------- 4: sync remote to remote


def test_sync_with_both_sides_remote_is_refused_and_makes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    # Refused before connecting: nobody listens on port 9 here, and nothing may be made.
    assert main(["sync", "127.0.0.1:9:www", "127.0.0.1:9:b"]) == 2
    err = capsys.readouterr().err
    assert "both remote" in err and len(err.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


async def test_sync_down_into_a_local_folder_named_with_a_colon_still_works(
    server: Server, server_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (server_root / "www").mkdir()
    (server_root / "www" / "index.html").write_bytes(b"<p>hi</p>")
    (tmp_path / "a:b").mkdir()
    monkeypatch.chdir(tmp_path)
    with trio.fail_after(NETWORK_TIMEOUT):
        assert await run_cli("sync", f"{address(server)}:www", "a:b") == 0
    assert (tmp_path / "a:b" / "index.html").read_bytes() == b"<p>hi</p>"


# ------------------------------------------------------------------ 5: mv into a folder


@pytest.mark.parametrize("replace", [False, True], ids=["plain", "replace"])
async def test_mv_onto_an_existing_folder_moves_into_it(
    server: Server, server_root: Path, replace: bool
) -> None:
    (server_root / "archive").mkdir()
    (server_root / "old.txt").write_bytes(b"old")
    with trio.fail_after(NETWORK_TIMEOUT):
        argv = ["mv", address(server), "old.txt", "archive", *(["--replace"] if replace else [])]
        assert await run_cli(*argv) == 0
    assert (server_root / "archive" / "old.txt").read_bytes() == b"old"
    assert not (server_root / "old.txt").exists()
