"""Each half loads only its own code: a server no client modules, a client command no server.

What a process imports is what it keeps in memory (bench W5: a fresh server's RSS)
and what it waits for at start (`trioftp --help`).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def _loaded_after(code: str, *, trioftp_only: bool = True) -> list[str]:
    # The list is taken before json is imported to print it.
    probe = f"{code}\nimport sys\nloaded = sorted(sys.modules)\nimport json\nprint(json.dumps(loaded))"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    loaded: list[str] = json.loads(out.stdout.splitlines()[-1])
    return [m for m in loaded if m.startswith("trioftp")] if trioftp_only else loaded


def test_the_serve_command_loads_no_client_code() -> None:
    loaded = _loaded_after("import trioftp.cli, trioftp.cli.serve, trioftp.server.signals")
    assert "trioftp.server.server" in loaded
    client = [m for m in loaded if m.startswith("trioftp.client")]
    assert client == ["trioftp.client", "trioftp.client.targets"]  # the package's lazy names, one constant
    assert not any(
        m.startswith("trioftp.cli.") and m.endswith(("runner", "transfer", "listing")) for m in loaded
    )


def test_a_server_loads_what_only_some_servers_need_when_they_need_it() -> None:
    """The legacy dialect's code with the first legacy client, TOML with a config or users
    file, JSON with JSON logs, difflib with a mistyped setting."""
    loaded = _loaded_after("import trioftp.cli.serve, trioftp.server.signals", trioftp_only=False)
    assert "trioftp.server.server" in loaded
    for module in ("trioftp.server.legacy_session", "tomllib", "json", "difflib", "importlib.resources"):
        assert module not in loaded


@pytest.mark.parametrize("module", ["trioftp.cli.transfer", "trioftp.cli.listing", "trioftp.cli.sync_report"])
def test_client_commands_load_no_server_code(module: str) -> None:
    loaded = _loaded_after(f"import trioftp.cli, {module}")
    assert "trioftp.client.connection" in loaded
    assert [m for m in loaded if m.startswith("trioftp.server")] == []


def test_building_the_parser_loads_no_command() -> None:
    loaded = _loaded_after("import trioftp.cli; trioftp.cli.build_parser()")
    assert not any(m.startswith(("trioftp.client.", "trioftp.server")) for m in loaded)


def test_the_package_names_still_resolve() -> None:
    import trioftp
    import trioftp.cli
    import trioftp.client

    for name in trioftp.__all__:
        assert getattr(trioftp, name) is not None, name
    for name in trioftp.client.__all__:
        assert getattr(trioftp.client, name) is not None, name
    for name in trioftp.cli.__all__:
        assert getattr(trioftp.cli, name) is not None, name
    assert trioftp.blocking.get is not None
    assert set(trioftp.__all__) <= set(dir(trioftp))
    with pytest.raises(AttributeError):
        _ = trioftp.no_such_name  # type: ignore[attr-defined]
