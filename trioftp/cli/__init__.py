"""The `trioftp` command: argv -> settings -> one library call.

Usage::

    trioftp serve [--root DIR] [--host HOST] [--port PORT] [--config FILE] ...
    trioftp get HOST[:PORT] NAME [-o PATH]      trioftp put HOST[:PORT] PATH [NAME]
    trioftp get --legacy HOST NAME [-o PATH]    trioftp put --legacy HOST PATH [NAME]  (old servers)
    trioftp ls HOST [FOLDER]    trioftp stat HOST NAME    trioftp rm HOST NAME
    trioftp mv HOST OLD NEW     trioftp mkdir HOST FOLDER     trioftp status HOST

The commands live in modules by job: `serve`, `transfer` (get, put, rm, mv, mkdir),
`listing` (ls, stat, status), `sync_report`, `passwd`; `runner` is what every client
command shares, `paths` the cp-style path and address rules, `diagnose` the one-line
messages for failures, `progress` the progress bars. This module only wires argv to them.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trioftp._lazy import lazy_exports
from trioftp._version import __version__
from trioftp.cli.options import _add_connection_options, _add_rule_options, parse_port
from trioftp.cli.progress import human as _human
from trioftp.cli.serve_options import add_serve
from trioftp.config import DEFAULT_PORT

if TYPE_CHECKING:
    from trioftp.cli.diagnose import CommandFailed, sole_exception
    from trioftp.cli.paths import folder_name, parse_remote, split_address
    from trioftp.cli.serve import _serve, _warn_if_passwords_in_clear
    from trioftp.cli.transfer import TEXT_SAMPLE
    from trioftp.server.signals import run_server

# The names `trioftp.cli` had when it was one module, still importable from here (the
# private ones are those tests imported). Patch a name in its own module: build_parser
# runs `trioftp.cli.serve._serve`, not this copy.
__all__ = [
    "build_parser", "main", "CommandFailed", "sole_exception", "folder_name", "parse_port",
    "parse_remote", "split_address", "run_server", "TEXT_SAMPLE",
    "_human", "_serve", "_warn_if_passwords_in_clear",
]  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trioftp", description="Fast, verified file transfer.")
    parser.add_argument("--version", action="version", version=f"trioftp {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_serve(sub).set_defaults(run=_when_run("serve:_serve"))
    _add_client_commands(sub)
    return parser


def _when_run(target: str, *, client: bool = False) -> Callable[[argparse.Namespace], int]:
    """The command function `target` ("module:name" in this package), imported only when the
    command runs: `trioftp serve` then loads no client code, and a client command no server.
    A client command's function is async and run by runner._run_client."""
    module, name = target.split(":")

    def run(args: argparse.Namespace) -> int:
        function = getattr(importlib.import_module(f"{__name__}.{module}"), name)
        if client:
            runner = importlib.import_module(f"{__name__}.runner")
            return int(runner._run_client(function, args))
        return int(function(args))

    return run


def _add_client_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    def command(name: str, help_text: str, run: str, **options: Any) -> argparse.ArgumentParser:
        parser = sub.add_parser(name, help=help_text, description=help_text, **options)
        parser.add_argument("host", metavar="HOST[:PORT]", help=f"the server (default port {DEFAULT_PORT})")
        _add_connection_options(parser)
        parser.set_defaults(run=_when_run(run, client=True))
        return parser

    legacy_help = "talk to an old server in the legacy text protocol (no checksum, no confirmation)"
    p = command("get", "download a file (or a folder with -r)", "transfer:_get")
    p.add_argument("name", help="the remote file (with -r: folder), as a path under the served root")
    p.add_argument(
        "local", nargs="?", help="where to write it (default: the name's last part; into a folder; -: stdout)"
    )
    p.add_argument("-o", "--output", help="same as LOCAL")
    p.add_argument("-r", "--recursive", action="store_true", help="download the folder NAME and all under it")
    p.add_argument(
        "--force", action="store_true", help="with -o - on a terminal: show a file that looks binary"
    )
    _add_rule_options(p)
    p.add_argument("--legacy", action="store_true", help=legacy_help)
    p.add_argument(
        "--fsync", action="store_true", help="make the download durable before exiting (-r: once at the end)"
    )
    p = command("put", "upload a file (or a folder with -r)", "transfer:_put")
    p.add_argument("path", type=Path, help="the local file (with -r: folder); -: standard input (give NAME)")
    p.add_argument("name", nargs="?", help="remote name (default: the file's name); into it if a folder")
    p.add_argument("-r", "--recursive", action="store_true", help="upload the folder PATH and all under it")
    _add_rule_options(p)
    p.add_argument("--legacy", action="store_true", help=legacy_help)
    # -h is ls's "human sizes", so --help alone asks for help here.
    p = command("ls", "list a remote folder", "listing:_ls", add_help=False)
    p.add_argument("--help", action="help", help="show this help message and exit")
    p.add_argument("folder", nargs="?", default="", help="default: the served root (also / or .); or a file; "
                   "HOST:PORT:FOLDER (as sync writes it) works too")  # fmt: skip
    p.add_argument("-l", "--long", action="store_true", help="show each entry's kind first (d, -, l, ?)")
    p.add_argument("-h", "--human", action="store_true", help="sizes in KiB, MiB, GiB")
    p.add_argument("-R", "--recursive", action="store_true", help="list the folders under it too")
    p = command("stat", "show a remote file's size, mtime and digest", "listing:_stat")
    p.add_argument("name", help="the remote file or folder")
    p = command("rm", "delete a remote file or empty folder", "transfer:_rm")
    p.add_argument("name", help="the remote file or folder (with -r: and all under it)")
    p.add_argument("-r", "--recursive", action="store_true", help="delete the folder NAME and all under it")
    p = command("mv", "rename a remote file or folder", "transfer:_mv")
    p.add_argument("old", help="the remote file or folder to rename")
    p.add_argument("new", help="its new name; into it if an existing folder (or ends in /)")
    p.add_argument("--replace", action="store_true", help="replace an existing NEW")
    p = command("mkdir", "create a remote folder (and its parents)", "transfer:_mkdir")
    p.add_argument("folder", help="the remote folder to create")

    p = sub.add_parser(
        "sync",
        help="make a remote folder match a local one, or the other way",
        description="trioftp sync LOCAL_DIR HOST[:PORT]:REMOTE_DIR  (upload), or "
        "trioftp sync HOST[:PORT]:REMOTE_DIR LOCAL_DIR  (download). Only files that differ "
        "(by size, then digest) are sent; a cut run resumes. HOST:PORT: is the served root; "
        "HOST:DIGITS alone is refused (a port, or a folder named DIGITS?).",
    )
    p.add_argument("source", help="a local folder, or HOST[:PORT]:FOLDER")
    p.add_argument("target", help="HOST[:PORT]:FOLDER, or a local folder (the other kind than SOURCE)")
    p.add_argument("--delete", action="store_true", help="delete what the source does not have")
    p.add_argument("-n", "--dry-run", action="store_true", help="only list what would change")
    _add_rule_options(p)
    _add_connection_options(p)
    p.set_defaults(run=_when_run("sync_report:_sync", client=True))

    p = sub.add_parser("passwd", help="print a password hash for a users file",
                       description="Reads a password (asked twice on a terminal, else one line of stdin) "
                       "and prints the scrypt hash to paste into a users file.")  # fmt: skip
    p.set_defaults(run=_when_run("passwd:_passwd"))
    command(
        "status",
        "show the server's version, uptime, connections, transfers and bytes moved",
        "listing:_status",
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `trioftp` command; returns the exit code."""
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    commands = _commands(parser)
    if argv and argv[0] in commands:
        # Options may come between the positionals (`ls HOST --port N FOLDER`), as get and
        # put already took them; argparse does that only parser by parser, not through subparsers.
        args = commands[argv[0]].parse_intermixed_args(argv[1:], argparse.Namespace(command=argv[0]))
    else:
        args = parser.parse_args(argv)
    try:
        result: int = args.run(args)
    except ValueError as exc:  # a malformed argument or setting
        print(f"trioftp: {exc}", file=sys.stderr)
        return 2
    except BaseException as exc:
        from trioftp.cli.diagnose import _interrupted  # here: it is needed only when a command fails

        if _interrupted(exc):
            return 130
        raise
    return result


def _commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        **dict.fromkeys(("CommandFailed", "sole_exception"), "trioftp.cli.diagnose"),
        **dict.fromkeys(("folder_name", "parse_remote", "split_address"), "trioftp.cli.paths"),
        **dict.fromkeys(("_serve", "_warn_if_passwords_in_clear"), "trioftp.cli.serve"),
        "TEXT_SAMPLE": "trioftp.cli.transfer",
        "run_server": "trioftp.server.signals",
    },
)


if __name__ == "__main__":
    sys.exit(main())
