"""rsync-style --exclude/--include rules: the examples of rsync's manual, then put -r, get -r and sync."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from tests.conftest import NETWORK_TIMEOUT
from tests.test_cli_everyday import address, run_cli
from trioftp.client.tree import Rules
from trioftp.server import Server

# (rules, path, is a folder, left out?), from "INCLUDE/EXCLUDE PATTERN RULES" in rsync(1).
MANUAL = [
    (["- *.o"], "main.o", False, True),
    (["- *.o"], "lib/deep/x.o", False, True),
    (["- *.o"], "main.c", False, False),
    (["- /foo"], "foo", False, True),  # "a file (or directory) named foo in the transfer-root"
    (["- /foo"], "foo", True, True),
    (["- /foo"], "sub/foo", False, False),
    (["- foo/"], "foo", True, True),  # "any directory named foo"
    (["- foo/"], "sub/foo", True, True),
    (["- foo/"], "foo", False, False),  # a file of that name stays
    (["- foo/"], "foo/inside.txt", False, True),  # not walked into
    (["- /foo/*/bar"], "foo/x/bar", False, True),  # "two levels below a directory named foo"
    (["- /foo/*/bar"], "foo/x/y/bar", False, False),
    (["- /foo/**/bar"], "foo/x/bar", False, True),  # "two or more levels below"
    (["- /foo/**/bar"], "foo/x/y/bar", False, True),
    (["- /foo/**/bar"], "foo/bar", False, False),
    (["+ */", "+ *.c", "- *"], "src", True, False),  # "only include directories and C source files"
    (["+ */", "+ *.c", "- *"], "src/main.c", False, False),
    (["+ */", "+ *.c", "- *"], "src/main.h", False, True),
    (["+ foo/", "+ foo/bar.c", "- *"], "foo", True, False),  # "only foo directory and foo/bar.c"
    (["+ foo/", "+ foo/bar.c", "- *"], "foo/bar.c", False, False),
    (["+ foo/", "+ foo/bar.c", "- *"], "foo/baz.c", False, True),
    (["+ foo/", "+ foo/bar.c", "- *"], "other", False, True),
    (["- sub/file?.txt"], "a/sub/file1.txt", False, True),  # a "/": the end of the path
    (["- sub/file?.txt"], "a/xsub/file1.txt", False, False),  # ... from a "/" on
    (["- dir/***"], "dir", True, True),
    (["- dir/***"], "dir/a/b", False, True),
    (["- [ab].txt"], "b.txt", False, True),
    (["- [!ab].txt"], "b.txt", False, False),
    (["+ keep.log", "- *.log"], "keep.log", False, False),  # the first match decides
    (["- *.log", "+ keep.log"], "keep.log", False, True),
    (["- cache/", "+ cache/wanted"], "cache/wanted", False, True),  # an excluded folder hides all in it
]


@pytest.mark.parametrize(("rules", "path", "is_folder", "out"), MANUAL)
def test_rules_mean_what_rsync_s_manual_says(rules: list[str], path: str, is_folder: bool, out: bool) -> None:
    assert Rules(rules).excludes(path, is_folder=is_folder) is out


@pytest.mark.parametrize("rule", ["*.o", "! x", "- ", "- /"])
def test_a_malformed_rule_is_refused(rule: str) -> None:
    with pytest.raises(ValueError, match=r"PATTERN|not a pattern"):
        Rules([rule])


def make_tree(top: Path) -> None:
    for path in ["keep.txt", "build.o", "src/a.c", "src/b.o", "cache/big.bin", "docs/cache/note.txt"]:
        (top / path).parent.mkdir(parents=True, exist_ok=True)
        (top / path).write_bytes(path.encode())


def tree_of(top: Path) -> set[str]:
    return {
        path.relative_to(top).as_posix() + ("/" if path.is_dir() else "")
        for path in top.rglob("*")
        if ".trioftp" not in path.parts
    }


async def test_put_r_leaves_out_what_exclude_matches(
    server: Server, server_root: Path, tmp_path: Path
) -> None:
    make_tree(tmp_path / "src")
    with trio.fail_after(NETWORK_TIMEOUT):
        argv = ["put", "-r", address(server), str(tmp_path / "src"), "up", "--exclude", "*.o"]
        assert await run_cli(*argv, "--exclude", "/cache/") == 0
    assert tree_of(server_root / "up") == {
        "keep.txt", "src/", "src/a.c", "docs/", "docs/cache/", "docs/cache/note.txt",
    }  # fmt: skip


async def test_get_r_takes_include_before_exclude(server: Server, server_root: Path, tmp_path: Path) -> None:
    make_tree(server_root / "tree")
    with trio.fail_after(NETWORK_TIMEOUT):
        argv = ["get", "-r", address(server), "tree", str(tmp_path / "out")]
        assert await run_cli(*argv, "--include", "*/", "--include", "*.c", "--exclude", "*") == 0
    assert tree_of(tmp_path / "out") == {"src/", "src/a.c", "cache/", "docs/", "docs/cache/"}


@pytest.mark.parametrize("direction", ["up", "down"])
async def test_sync_delete_neither_copies_nor_deletes_what_is_excluded(
    server: Server, server_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], direction: str
) -> None:
    local, remote = tmp_path / "site", server_root / "www"
    source, target = (local, remote) if direction == "up" else (remote, local)
    (source / "page.html").parent.mkdir(parents=True)
    (source / "page.html").write_bytes(b"new")
    (source / "draft.tmp").write_bytes(b"source's draft")
    (target / "logs").mkdir(parents=True)
    (target / "logs" / "today.log").write_bytes(b"kept")
    (target / "old.html").write_bytes(b"gone")
    (target / "mine.tmp").write_bytes(b"target's own")
    sides = [str(local), f"{address(server)}:www"]
    with trio.fail_after(NETWORK_TIMEOUT):
        argv = ["sync", *(sides if direction == "up" else sides[::-1]), "--delete"]
        assert await run_cli(*argv, "--exclude", "*.tmp", "--exclude", "logs/") == 0
    assert tree_of(target) == {"page.html", "mine.tmp", "logs/", "logs/today.log"}
    assert (target / "mine.tmp").read_bytes() == b"target's own"
    out = capsys.readouterr().out
    assert "deleted: old.html" in out and "tmp" not in out and "logs" not in out


def test_exclude_without_r_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from trioftp.cli import main

    (tmp_path / "f.txt").write_bytes(b"f")
    assert main(["put", "127.0.0.1:9", str(tmp_path / "f.txt"), "--exclude", "*.o"]) == 2
    assert capsys.readouterr().err == "trioftp: --exclude applies to folders: give -r\n"
