"""`trioftp serve`: its flags (one per ServerConfig field), start-up checks and warnings."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import sys
from typing import Any

import attrs
import trio

from trioftp.cli.diagnose import _fail, _host_port, _listen_problem, _reason, _setup_problem, sole_exception
from trioftp.config import ServerConfig, build_config, load_toml, setting_from_text
from trioftp.disk.syscalls import return_freed_buffers
from trioftp.logs import setup_logging
from trioftp.server import Server
from trioftp.server.signals import run_server

log = logging.getLogger("trioftp")


def _serve(args: argparse.Namespace) -> int:
    """Exit status: 2 for a bad setting (raised to main), 1 if the server cannot start, see run_server."""
    flags = {f.name: getattr(args, f.name) for f in attrs.fields(ServerConfig)}
    for name, value in flags.items():
        if isinstance(value, str):
            flags[name] = setting_from_text(name, value, "--" + name.replace("_", "-"))
    file_settings: dict[str, Any] = {}
    if args.config:
        try:
            file_settings = load_toml(args.config.expanduser())
        except OSError as exc:
            return _fail(f"--config {args.config}: {_reason(exc)}")
    config = build_config(file_settings, flags)
    setup_logging(config.log_level, config.log_format)
    try:
        server = Server(config)
    except (OSError, ValueError) as exc:
        return _fail(_setup_problem(exc, config))
    _warn_if_passwords_in_clear(config)
    _warn_if_open_to_all(config)
    # The process is the server's own, so it may tune the allocator for itself.
    return_freed_buffers()
    try:
        code = trio.run(run_server, server)
    except BaseException as exc:
        problem = _listen_problem(sole_exception(exc), server)
        if problem is None:
            raise
        return _fail(problem)
    if code:
        print("trioftp: stopped before transfers finished", file=sys.stderr)
    return code


def _warn_if_passwords_in_clear(config: ServerConfig) -> None:
    """Logins without TLS send passwords as they are: worth a warning when others can listen."""
    if config.users_file and not config.tls_cert and not _is_loopback(config.host):
        log.warning(
            "users log in without TLS on %s: their passwords cross the network in clear text "
            "(serve with --tls-cert and --tls-key)", config.host
        )  # fmt: skip


def _warn_if_open_to_all(config: ServerConfig) -> None:
    """No users file beyond loopback: anyone who reaches the port may change everything served."""
    if config.users_file or _is_loopback(config.host):
        return
    where = _host_port(config.host or "every address", config.port)
    if config.read_only:
        log.warning("no users file and --read-only: anyone who can reach %s may download every file", where)
        return
    log.warning(
        "NO USERS FILE: anyone who can reach %s may download, upload, overwrite and delete every file "
        "under %s. Add users (trioftp passwd, then --users-file; see the README's \"Users and TLS\") "
        "or serve with --read-only", where, config.root,
    )  # fmt: skip


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name, or "" (every address): may be reachable from elsewhere
        return False
