"""README.md and docs/ stay true: their Python runs against a real server, their commands
parse, their TOML loads, their links lead to files that are there.

The Python blocks run as written, in a temporary working folder, in a worker
thread (they call `trio.run` themselves) while the test's server runs here. The
only change: the server's port replaces 8885, the default port, both in the
text and in the defaults of `trioftp.get`, `trioftp.put` and `open_connection`.
"""

from __future__ import annotations

import argparse
import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

import trioftp
from tests.conftest import NETWORK_TIMEOUT
from trioftp.cli import build_parser, main
from trioftp.config import DEFAULT_PORT, ServerConfig, build_config, load_toml
from trioftp.server import Server
from trioftp.server.auth import hash_password, load_users

CHECKOUT = Path(__file__).resolve().parent.parent
README = CHECKOUT / "README.md"
# The rules a user looks up moved from the README to docs/: checked the same way.
DOCUMENTS = [README, *sorted((CHECKOUT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)


def shown(path: Path) -> str:
    return str(path.relative_to(CHECKOUT))


def blocks(language: str) -> list[tuple[str, str]]:
    """Every ```language block of the README and docs/, as (file, text)."""
    found = [
        (shown(path), body)
        for path in DOCUMENTS
        for lang, body in FENCE.findall(path.read_text())
        if lang == language
    ]
    assert found, f"README.md and docs/ have no ```{language} block"
    return found


def all_text() -> str:
    return "\n".join(path.read_text() for path in DOCUMENTS)


def trioftp_commands() -> Iterator[list[str]]:
    """Every `trioftp ...` (or `python -m trioftp ...`) command line of the ```sh blocks, as argv."""
    for _, block in blocks("sh"):
        for line in block.splitlines():
            for command in line.split("&&"):
                words = shlex.split(command, comments=True)
                if words[:3] == ["python", "-m", "trioftp"]:
                    words = ["trioftp", *words[3:]]
                if words[:1] == ["trioftp"]:
                    # `[--replace]` marks an optional flag: check the flag.
                    yield [word[1:-1] if re.fullmatch(r"\[-.*\]", word) else word for word in words[1:]]


def subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("trioftp has no subcommands")


# ------------------------------------------------------------------ python


def stored_files(root: Path) -> list[Path]:
    return [path for path in root.rglob("*") if path.is_file() and ".trioftp" not in path.parts]


async def test_python_examples_run_against_a_real_server(
    server: Server, server_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = server.port
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(trioftp.get.__kwdefaults__, "port", port)
    monkeypatch.setitem(trioftp.put.__kwdefaults__, "port", port)
    monkeypatch.setattr(trioftp.open_connection.__wrapped__, "__defaults__", (port,))
    for number, (where, block) in enumerate(blocks("python"), 1):
        code = compile(re.sub(rf"\b{DEFAULT_PORT}\b", str(port), block), f"{where} python #{number}", "exec")
        with trio.fail_after(NETWORK_TIMEOUT):
            await trio.to_thread.run_sync(exec, code, {"__name__": "__readme__"})
    assert stored_files(server_root), "the examples stored nothing"


# ---------------------------------------------------------------- commands


def test_command_lines_name_real_subcommands_and_flags(capsys: pytest.CaptureFixture[str]) -> None:
    commands = list(trioftp_commands())
    assert commands, "README.md and docs/ show no trioftp command"
    for argv in commands:
        try:
            build_parser().parse_args(argv)
        except SystemExit:
            pytest.fail(
                f"README.md or docs/: `trioftp {shlex.join(argv)}` does not parse: {capsys.readouterr().err}"
            )


def test_inline_flags_exist() -> None:
    """`--flag` in the prose of the README and docs/ names an option of some subcommand."""
    options = {
        option for parser in subparsers(build_parser()).values() for option in parser._option_string_actions
    }
    mentioned = set(re.findall(r"`(--[a-z][a-z0-9-]*)", all_text()))
    assert mentioned, "README.md and docs/ mention no --flag"
    assert mentioned <= options, f"README.md or docs/ mention unknown flags: {sorted(mentioned - options)}"


def test_serve_help_named_in_the_readme_works(capsys: pytest.CaptureFixture[str]) -> None:
    assert "trioftp serve --help" in README.read_text()
    assert "trioftp serve --help" in (CHECKOUT / "docs" / "cli.md").read_text()
    with pytest.raises(SystemExit) as exited:
        main(["serve", "--help"])
    assert exited.value.code == 0
    assert "--root" in capsys.readouterr().out


def test_toml_examples_are_valid_settings(tmp_path: Path) -> None:
    kinds = []
    for number, (_, block) in enumerate(blocks("toml"), 1):
        path = tmp_path / f"example{number}.toml"
        if "[users." in block:
            # A users file: the README elides the hash, so put a real one in its place.
            path.write_text(re.sub(r'"scrypt\$[^"]*"', f'"{hash_password("x")}"', block))
            users = load_users(path)
            assert users.users and users.anonymous is not None
            kinds.append("users")
        else:
            path.write_text(block)
            config: Any = build_config(load_toml(path), {})
            assert isinstance(config, ServerConfig)
            kinds.append("server")
    assert sorted(set(kinds)) == ["server", "users"]


# ------------------------------------------------------------------- links

LINK = re.compile(r"\]\(([^)\s]+)\)")


def anchors(path: Path) -> set[str]:
    """The #anchors a Markdown viewer gives the headings of `path` (GitHub's rule)."""
    found = set()
    for heading in re.findall(r"^#+ (.*)$", path.read_text(), re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        found.add(slug)
    return found


@pytest.mark.parametrize("document", DOCUMENTS, ids=shown)
def test_links_lead_to_files_that_are_there(document: Path) -> None:
    for target in LINK.findall(document.read_text()):
        if re.match(r"[a-z]+:", target):  # a web address: not checked here
            continue
        name, _, anchor = target.partition("#")
        linked = (document.parent / name).resolve() if name else document
        assert linked.exists(), f"{shown(document)} links to {target}: no such file"
        if anchor:
            assert anchor in anchors(linked), f"{shown(document)} links to {target}: no such heading"


def test_the_readme_links_every_document_in_docs() -> None:
    linked = set(LINK.findall(README.read_text()))
    for path in DOCUMENTS[1:]:
        assert f"docs/{path.name}" in linked, f"README.md does not link docs/{path.name}"


# ------------------------------------------------------------------ tests


TEST_COMMAND = 'pip install -e ".[test]" && python -m pytest -q'


def test_the_readme_says_how_to_run_the_tests_and_ci_runs_just_that() -> None:
    assert f"```sh\n{TEST_COMMAND}\n```" in README.read_text()
    script = (CHECKOUT / ".ci" / "run").read_text()
    # Checks come first; the README's command is what the script ends with.
    assert script.rstrip("\n").splitlines()[-1] == TEST_COMMAND
    checks = ["ruff check .", "ruff format --check .", "mypy --strict trioftp"]
    lines = script.splitlines()
    assert all(check in lines for check in checks), script
