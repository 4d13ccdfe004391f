"""The README's quick start, run as pasted: a fresh venv, `pip install .`, serve, put, ls, get.

The blocks are found by their `<!-- quickstart:... -->` markers and run with bash in a
copy of this checkout, with HOME a temporary folder. Two changes only, so that the test
keeps to a free loopback port: serve gets `--port 0` added, and the client's `127.0.0.1`
becomes `127.0.0.1:PORT` with the port serve reports. The client block runs after the
install block's activate line, as the README says to do in the second terminal.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import trio

from tests.conftest import NETWORK_TIMEOUT

CHECKOUT = Path(__file__).resolve().parent.parent
INSTALL_TIMEOUT = 180.0  # pip builds the project and fetches its dependencies (cached after the first run)


def quickstart(name: str) -> str:
    text = (CHECKOUT / "README.md").read_text()
    found = re.search(rf"<!-- quickstart:{name} -->\n```\w*\n(.*?)^```", text, re.MULTILINE | re.DOTALL)
    assert found, f"README.md has no quickstart:{name} block"
    return found.group(1)


def _copy_checkout(into: Path) -> None:
    skip = shutil.ignore_patterns(".git", ".venv", "__pycache__", "*.egg-info", "build", ".*_cache")
    shutil.copytree(CHECKOUT, into, ignore=skip)


@pytest.mark.skipif(shutil.which("bash") is None, reason="the README's blocks are for a POSIX shell")
async def test_readme_quick_start_runs_as_pasted(tmp_path: Path) -> None:
    home, checkout = tmp_path / "home", tmp_path / "checkout"
    home.mkdir()
    await trio.to_thread.run_sync(_copy_checkout, checkout)
    env = {key: value for key, value in os.environ.items() if key not in ("VIRTUAL_ENV", "PYTHONPATH")}
    # Not this test run's venv: the quick start makes its own, with the system's python3.
    env["PATH"] = os.pathsep.join(
        part for part in env.get("PATH", "").split(os.pathsep) if not part.startswith(str(CHECKOUT))
    )
    env["HOME"] = str(home)

    def bash(script: str) -> list[str]:
        return ["bash", "-euc", script]

    install = quickstart("install")
    activate = install.splitlines()[0].split("&&")[1].strip()  # ". ~/.venvs/trioftp/bin/activate"
    with trio.fail_after(INSTALL_TIMEOUT):
        done = await trio.run_process(
            bash(install), cwd=checkout, env=env, capture_stdout=True, capture_stderr=True, check=False
        )
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-3000:]

    serve = quickstart("serve").strip()
    assert serve == "trioftp serve --root ~/shared"
    with trio.fail_after(NETWORK_TIMEOUT):
        process = await trio.lowlevel.open_process(
            bash(f"{activate}\nexec {serve} --port 0"), cwd=checkout, env=env, stderr=subprocess.PIPE
        )
        try:
            assert process.stderr is not None
            log = b""
            while not (found := re.search(rb"serving .* on 127\.0\.0\.1:(\d+)", log)):
                chunk = await process.stderr.receive_some(4096)
                assert chunk, log.decode(errors="replace")
                log += chunk
            port = int(found.group(1))
            client = quickstart("client").replace("127.0.0.1", f"127.0.0.1:{port}")
            done = await trio.run_process(
                bash(f"{activate}\n{client}"),
                cwd=tmp_path,
                env=env,
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
        finally:
            process.terminate()
            await process.wait()
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    assert done.stderr == b""  # no progress bar: stderr is no terminal here

    def undated(text: str) -> str:
        return re.sub(r"\d{4}-\d\d-\d\d \d\d:\d\d", "DATE", text)

    assert undated(done.stdout.decode()) == undated(quickstart("output"))
    assert (home / "shared" / "hello.txt").read_bytes() == b"hello\n"
