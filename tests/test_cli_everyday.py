"""Issue 16, "Everyday use": what a daily user of the command line tripped on, each against the real CLI."""

from __future__ import annotations

import os
import pwd
import re
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest
import trio

from tests.conftest import NETWORK_TIMEOUT, MakeServer
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
    typed = [(b"password: ", b"secret\n"), (b"again: ", b"\x04")]
    answers = [(b"password: ", b"\x04")] if at == "password: " else typed
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


# ------------------------------------------------------- 2: an unreadable server folder


def _python_for(options: dict[str, object]) -> tuple[str, dict[str, str]]:
    """An interpreter of this Python version that the other user may run, and the env that finds trioftp.

    This one may live under a home that user cannot enter (pyenv's under /root): then a
    system one of the same version runs, with this one's packages and checkout on its path.
    """
    project = str(Path(__file__).resolve().parent.parent)
    paths = [project, *(path for path in sys.path if path.endswith("site-packages"))]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for candidate in (sys.executable, f"/usr/bin/{version}", f"/usr/local/bin/{version}"):
        try:
            probe = subprocess.run(
                [candidate, "-c", "import trioftp.cli"], env=env, capture_output=True, timeout=30, **options
            )  # type: ignore[call-overload]
        except OSError:
            continue
        if probe.returncode == 0:
            return candidate, env
    pytest.skip(f"no {version} that the user 'nobody' may run with trioftp importable")


def _locked_root(tmp_path: Path, nobody: pwd.struct_passwd | None) -> Path:
    """A folder holding root/{top.txt, open/a.txt, locked/s.txt}, locked/ mode 000, owned by `nobody`."""
    if nobody is None:
        base = tmp_path
    else:
        # tmp_path's parents are root's own (mode 700): nobody could not reach a root inside.
        base = Path(tempfile.mkdtemp(prefix="trioftp-locked-"))
        base.chmod(0o755)
    root = base / "root"
    (root / "open").mkdir(parents=True)
    (root / "locked").mkdir()
    (root / "top.txt").write_bytes(b"top")
    (root / "open" / "a.txt").write_bytes(b"a")
    (root / "locked" / "s.txt").write_bytes(b"secret")
    if nobody is not None:
        for path in [root, *root.rglob("*")]:
            os.chown(path, nobody.pw_uid, nobody.pw_gid)
    (root / "locked").chmod(0)
    return base


@pytest.fixture
async def locked_server(tmp_path: Path) -> AsyncIterator[tuple[int, Path]]:
    """`trioftp serve` as a user that chmod 000 keeps out, over ROOT/{top.txt, open/a.txt, locked/s.txt}.

    Run as root (as here), the server process is started as `nobody`: root reads anything,
    so chmod 000 keeps out only a normal user, which is what the issue describes.
    """
    nobody = None
    if os.geteuid() == 0:
        try:
            nobody = pwd.getpwnam("nobody")
        except KeyError:
            pytest.skip("running as root, with no user 'nobody' for the server: chmod 000 would not bite")
    base = _locked_root(tmp_path, nobody)
    root = base / "root"
    options: dict[str, object] = {}
    python = sys.executable
    if nobody is not None:
        options = {"user": nobody.pw_uid, "group": nobody.pw_gid, "extra_groups": []}
        python, options["env"] = _python_for(options)
    process = await trio.lowlevel.open_process(
        [python, "-m", "trioftp", "serve", "--root", str(root), "--port", "0", "--no-legacy"],
        stderr=subprocess.PIPE,
        cwd=str(base),
        **options,  # type: ignore[arg-type]
    )
    try:
        assert process.stderr is not None
        log = b""
        with trio.fail_after(NETWORK_TIMEOUT):
            while b"serving" not in log:
                chunk = await process.stderr.receive_some(4096)
                assert chunk, log.decode(errors="replace")
                log += chunk
        port = int(re.search(rb"on 127\.0\.0\.1:(\d+)", log).group(1))  # type: ignore[union-attr]
        yield port, root
    finally:
        process.terminate()
        with trio.move_on_after(10):
            await process.wait()
        if process.returncode is None:
            process.kill()
            await process.wait()
        os.chmod(root / "locked", 0o755)
        if nobody is not None:
            shutil.rmtree(base)


@pytest.mark.parametrize("how", ["get-r", "sync"])
async def test_an_unreadable_server_folder_is_skipped_and_the_rest_copied(
    locked_server: tuple[int, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], how: str
) -> None:
    port, _root = locked_server
    out = tmp_path / "out"
    argv = (
        ["get", "-r", f"127.0.0.1:{port}", ".", str(out)]
        if how == "get-r"
        else ["sync", f"127.0.0.1:{port}:", str(out)]
    )
    with trio.fail_after(NETWORK_TIMEOUT):
        assert await run_cli(*argv) == 1
    err = capsys.readouterr().err
    assert "locked: a folder the server may not read (permission denied); not copied" in err
    assert (out / "top.txt").read_bytes() == b"top"
    assert (out / "open" / "a.txt").read_bytes() == b"a"
    assert not (out / "locked").exists()


async def test_ls_marks_an_unreadable_folder_with_a_question_mark(
    locked_server: tuple[int, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    port, _root = locked_server
    with trio.fail_after(NETWORK_TIMEOUT):
        assert await run_cli("ls", f"127.0.0.1:{port}") == 0
        names = [line.split()[-1] for line in capsys.readouterr().out.splitlines()]
        assert names == ["locked?", "open/", "top.txt"]
        assert await run_cli("ls", "-R", f"127.0.0.1:{port}") == 0
        out = capsys.readouterr().out
    assert out.splitlines()[0] == ".:" and "locked?" in out and "\nopen:\n" in out and "a.txt" in out


# -------------------------------------------------------------------- 9: arguments


async def test_ls_takes_options_between_its_arguments_and_sync_s_address_form(
    server: Server, server_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (server_root / "reports").mkdir()
    (server_root / "reports" / "2026.pdf").write_bytes(b"x" * 3000)
    with trio.fail_after(NETWORK_TIMEOUT):
        assert await run_cli("ls", "127.0.0.1", "--port", str(server.port), "reports") == 0
        assert capsys.readouterr().out.split()[-1] == "2026.pdf"
        assert await run_cli("ls", f"127.0.0.1:{server.port}:reports") == 0
        assert capsys.readouterr().out.split()[-1] == "2026.pdf"
        assert await run_cli("ls", "-l", "-h", address(server), "reports") == 0
        line = capsys.readouterr().out.strip()
        assert line.startswith("- ") and " 2.9KiB " in line
        assert await run_cli("ls", "-l", address(server)) == 0
        assert capsys.readouterr().out.startswith("d ")
    assert capsys.readouterr().err == ""


async def test_ls_r_lists_each_folder_under_a_header(
    server: Server, server_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (server_root / "a" / "b").mkdir(parents=True)
    (server_root / "a" / "b" / "deep.txt").write_bytes(b"d")
    (server_root / "top.txt").write_bytes(b"t")
    with trio.fail_after(NETWORK_TIMEOUT):
        assert await run_cli("ls", "-R", address(server)) == 0
    out = capsys.readouterr().out.splitlines()
    lines = [line.split()[-1] if line and not line.endswith(":") else line for line in out]
    assert lines == [".:", "a/", "top.txt", "", "a:", "b/", "", "a/b:", "deep.txt"]


@pytest.mark.parametrize(
    ("name", "shown"),
    [(" lead", "' lead'"), ("trail ", "'trail '"), ("what?", "'what?'"), ("plain.txt", "plain.txt")],
)
async def test_ls_quotes_names_that_would_read_as_something_else(
    server: Server, server_root: Path, capsys: pytest.CaptureFixture[str], name: str, shown: str
) -> None:
    (server_root / name).write_bytes(b"x")
    with trio.fail_after(NETWORK_TIMEOUT):
        assert await run_cli("ls", address(server)) == 0
    assert capsys.readouterr().out.rstrip("\n").endswith(f" {shown}")


# ------------------------------------------------------- 7: open to all, read-only


@pytest.mark.parametrize("read_only", [False, True], ids=["open", "read-only"])
def test_serve_beyond_loopback_without_users_warns_at_start(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], read_only: bool
) -> None:
    # 192.0.2.1 (TEST-NET-1) is no address of this machine: the warning comes, then the
    # listen fails, so nothing listens beyond loopback in a test.
    extra = ["--read-only"] if read_only else []
    argv = ["serve", "--root", str(tmp_path), "--host", "192.0.2.1", "--port", "0", *extra]
    # A process of its own: serve sets up logging on its stderr, which must not outlive the test.
    result = subprocess.run(
        [sys.executable, "-m", "trioftp", *argv], capture_output=True, text=True, timeout=NETWORK_TIMEOUT
    )
    assert result.returncode == 1
    err = result.stderr
    warning = next(line for line in err.splitlines() if "WARNING" in line)
    if read_only:
        assert "anyone who can reach 192.0.2.1:0 may download every file" in warning
    else:
        assert "NO USERS FILE: anyone who can reach 192.0.2.1:0 may download, upload" in warning
        assert "--users-file" in warning and "--read-only" in warning
    assert "cannot listen on 192.0.2.1:0" in err


async def test_a_read_only_server_serves_downloads_and_refuses_changes(
    make_server: MakeServer, server_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server = await make_server(read_only=True)
    (server_root / "kept.txt").write_bytes(b"kept")
    (tmp_path / "new.txt").write_bytes(b"new")
    with trio.fail_after(NETWORK_TIMEOUT):
        assert await run_cli("get", address(server), "kept.txt", str(tmp_path / "copy.txt")) == 0
        assert await run_cli("ls", address(server)) == 0
        capsys.readouterr()
        for argv in (
            ["put", address(server), str(tmp_path / "new.txt")],
            ["rm", address(server), "kept.txt"],
            ["mv", address(server), "kept.txt", "moved.txt"],
            ["mkdir", address(server), "made"],
        ):
            assert await run_cli(*argv) == 1, argv
            assert "PERMISSION_DENIED" in capsys.readouterr().err
    assert (tmp_path / "copy.txt").read_bytes() == b"kept"
    assert sorted(os.listdir(server_root)) == [".trioftp", "kept.txt"]


# ------------------------------------------------------------------ 6: progress bars


ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")


def screen_lines(shown: str) -> list[str]:
    """What the terminal shows line by line, escape sequences out, each line as its last redraw left it."""
    lines = []
    for line in ANSI.sub("", shown).replace("\r\n", "\n").split("\n"):
        lines.append(line.rsplit("\r", 1)[-1])
    return [line for line in lines if line.strip()]


async def test_get_under_a_terminal_draws_a_bar_that_ends_once_at_100(
    server: Server, server_root: Path, tmp_path: Path
) -> None:
    (server_root / "big.bin").write_bytes(os.urandom(8 * 1024 * 1024))
    with trio.fail_after(NETWORK_TIMEOUT):
        code, shown = await trio.to_thread.run_sync(
            lambda: run_in_pty(["get", address(server), "big.bin", str(tmp_path / "copy.bin")])
        )
    assert code == 0, shown
    last = screen_lines(shown)
    assert len(last) == 1 and "big.bin" in last[0] and "100.0%" in last[0], last
    assert "8.0/8.0 MiB" in last[0]
    assert "ss" not in last[0].split("MiB")[-1]  # no leftovers of a longer line ("ETA    1ss")


async def test_an_error_after_a_bar_gets_a_line_of_its_own(server: Server, server_root: Path) -> None:
    (server_root / "big.bin").write_bytes(os.urandom(4 * 1024 * 1024))
    with trio.fail_after(NETWORK_TIMEOUT):  # /dev/full: written in place, and full at the first block
        code, shown = await trio.to_thread.run_sync(
            lambda: run_in_pty(["get", address(server), "big.bin", "/dev/full"])
        )
    assert code == 1, shown
    lines = screen_lines(shown)
    assert lines[-1].startswith("trioftp: get: "), lines


async def test_a_tree_download_shows_an_overall_bar(
    server: Server, server_root: Path, tmp_path: Path
) -> None:
    (server_root / "tree").mkdir()
    for number in range(3):
        (server_root / "tree" / f"f{number}.bin").write_bytes(os.urandom(1024 * 1024))
    with trio.fail_after(NETWORK_TIMEOUT):
        code, shown = await trio.to_thread.run_sync(
            lambda: run_in_pty(["get", "-r", address(server), "tree", str(tmp_path / "copy")])
        )
    assert code == 0, shown
    assert any("3/3 files" in line and "100.0%" in line for line in screen_lines(shown)), shown


def test_the_speed_leaves_out_what_a_resume_already_had(monkeypatch: pytest.MonkeyPatch) -> None:
    from trioftp.cli import progress

    clock = [100.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: clock[0])
    rate = progress._Rate()
    rate.fields(900 * 1024 * 1024, 1000 * 1024 * 1024)  # resumed at 900 MiB
    clock[0] += 10
    fields = rate.fields(980 * 1024 * 1024, 1000 * 1024 * 1024)  # 80 MiB in 10 s
    assert fields == {"speed": "8.0MiB/s", "left": "2s left"}


# ------------------------------------------------------------- 8: errors that say what failed


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (
            ["--ca", "{tmp}/nonexistent.pem"],
            "trioftp: ls: --ca {tmp}/nonexistent.pem: no such file or directory",
        ),
        (
            ["--ca", "{tmp}/report.pdf"],
            "trioftp: ls: --ca {tmp}/report.pdf: no CA certificate in PEM form in it",
        ),
        ([], "trioftp: ls: cannot connect to 127.0.0.1:{port}: connection refused"),
    ],
    ids=["ca-missing", "ca-not-pem", "refused"],
)
def test_connection_errors_name_what_failed_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], expected: str
) -> None:
    (tmp_path / "report.pdf").write_bytes(b"%PDF-1.4 not a certificate\n")
    fill = {"tmp": str(tmp_path), "port": str(_closed_port())}
    assert main(["ls", "127.0.0.1:{port}".format(**fill), *[a.format(**fill) for a in argv]]) == 1
    assert capsys.readouterr().err == expected.format(**fill) + "\n"


def test_many_tree_failures_come_one_per_line() -> None:
    from trioftp.client.tree import TreeTransferError

    lost = OSError(5, "Input/output error")
    text = str(TreeTransferError({"a": lost, "b": lost}))
    assert text.splitlines() == [
        "2 files failed:",
        "  a: [Errno 5] Input/output error",
        "  b: [Errno 5] Input/output error",
    ]
