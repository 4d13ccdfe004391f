"""Server settings: one frozen attrs class, loaded from defaults, a TOML file and flags."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import attrs

DEFAULT_PORT = 8885  # the old text-protocol server's port, so its clients need no change
DEFAULT_TIMEOUT = 30.0  # seconds a client gives a server to let it in (connect, TLS, HELLO, login)
DEFAULT_ROOT = Path("trioftp-files")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
LOG_FORMATS = ("text", "json")
# Settings that name a file or folder: "~" in them is the user's home, as in a shell.
PATH_SETTINGS = frozenset({"root", "users_file", "tls_cert", "tls_key"})
# Settings counted in bytes: a number, or a string with a unit ("1G", "64MiB").
SIZE_SETTINGS = frozenset(
    {"max_file_size", "max_frame_size", "initial_window", "upload_memory", "send_memory", "s3_memory"}
)

# As rsync and GNU coreutils read them: a bare letter (and KiB...) counts in 1024s, KB... in 1000s.
_SIZE = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*(?:([kmgt])(i?b)?|(b))?\s*", re.IGNORECASE)
_UNIT_POWERS = {"k": 1, "m": 2, "g": 3, "t": 4}
SIZE_FORM = "a size: bytes, or a number with K, M, G or T (powers of 1024, as KiB...; KB... are 1000s)"


def parse_size(text: str) -> int:
    """Bytes from "1048576", "64K", "1.5G", "64MiB" (1024s) or "10MB" (1000s), any case.

    Raises:
        ValueError: not of that form; the message says what is.

    Example:
        assert parse_size("64MiB") == parse_size("64M") == 64 * 1024 * 1024
    """
    match = _SIZE.fullmatch(text)
    if match is None:
        raise ValueError(f"{text!r} is not {SIZE_FORM}")
    number, letter, suffix, _bytes = match.groups()
    base = 1000 if suffix and suffix.lower() == "b" else 1024
    return int(float(number) * base ** _UNIT_POWERS[letter.lower()]) if letter else int(float(number))


def _positive(_inst: Any, attribute: attrs.Attribute[Any], value: float) -> None:
    if value <= 0:
        raise ValueError(f"{attribute.name} must be positive, got {value}")


def _non_negative(_inst: Any, attribute: attrs.Attribute[Any], value: float) -> None:
    if value < 0:
        raise ValueError(f"{attribute.name} must not be negative, got {value}")


def _store_address(_inst: Any, attribute: attrs.Attribute[Any], value: str) -> None:
    if value and not re.fullmatch(r"s3://[^/\s]+(/\S*)?", value):
        raise ValueError(f"{attribute.name}: {value!r} is not s3://BUCKET or s3://BUCKET/PREFIX")


def _port_number(_inst: Any, attribute: attrs.Attribute[Any], value: int) -> None:
    if not 0 <= value <= 65535:
        raise ValueError(f"{attribute.name} must be in 0..65535, got {value}")


def _log_level(_inst: Any, attribute: attrs.Attribute[Any], value: str) -> None:
    if value.upper() not in LOG_LEVELS:
        raise ValueError(f"{attribute.name}: {value!r} is not one of {', '.join(LOG_LEVELS)}")


def _log_format(_inst: Any, attribute: attrs.Attribute[Any], value: str) -> None:
    if value not in LOG_FORMATS:
        raise ValueError(f"{attribute.name}: {value!r} is not one of {', '.join(LOG_FORMATS)}")


def parse_address(value: str) -> tuple[str, int]:
    """`HOST:PORT`, `[IPv6]:PORT`, or `PORT` alone (on 127.0.0.1), as (host, port)."""
    host, _, port = value.rpartition(":")
    host = host.removeprefix("[").removesuffix("]") or "127.0.0.1"
    if not port.isdigit() or int(port) > 65535:
        raise ValueError(f"expected HOST:PORT, got {value!r}")
    return host, int(port)


def _address_or_empty(_inst: Any, attribute: attrs.Attribute[Any], value: str) -> None:
    if value:
        try:
            parse_address(value)
        except ValueError as exc:
            raise ValueError(f"{attribute.name}: {exc}") from None


@attrs.frozen
class ServerConfig:
    """Everything `trioftp serve` can be told. Each field's default is the one used.

    Frozen: make a changed copy with `evolve`. `trioftp serve --help` lists every
    field with its meaning (FIELD_HELP); a TOML `[server]` table uses the same names.

    Raises:
        ValueError: a port, limit or timeout out of range, or an unknown log level or format
            (at construction).

    Example:
        config = ServerConfig(root=Path("/srv/files"), host="0.0.0.0", max_connections=2000)
    """

    root: Path = attrs.field(default=DEFAULT_ROOT, converter=Path)
    host: str = "127.0.0.1"
    port: int = attrs.field(default=DEFAULT_PORT, validator=_port_number)
    backlog: int = attrs.field(default=4096, validator=_positive)
    max_connections: int = attrs.field(default=1000, validator=_positive)
    max_connections_per_ip: int = attrs.field(default=250, validator=_positive)
    max_streams: int = attrs.field(default=128, validator=_positive)
    max_file_size: int = attrs.field(default=2**40, validator=_non_negative)
    max_frame_size: int = attrs.field(default=1024 * 1024, validator=_positive)
    initial_window: int = attrs.field(default=8 * 1024 * 1024, validator=_positive)
    upload_memory: int = attrs.field(default=256 * 1024 * 1024, validator=_positive)
    send_memory: int = attrs.field(default=64 * 1024 * 1024, validator=_positive)
    handshake_timeout: float = attrs.field(default=10.0, validator=_positive)
    idle_timeout: float = attrs.field(default=300.0, validator=_positive)
    min_rate: float = attrs.field(default=1024.0, validator=_non_negative)
    min_rate_window: float = attrs.field(default=30.0, validator=_positive)
    drain_timeout: float = attrs.field(default=10.0, validator=_non_negative)
    partial_ttl: float = attrs.field(default=24 * 3600.0, validator=_non_negative)
    legacy: bool = True
    legacy_settle: float = attrs.field(default=0.02, validator=_non_negative)
    legacy_timeout: float = attrs.field(default=60.0, validator=_positive)
    legacy_layout: bool = False
    log_level: str = attrs.field(default="INFO", validator=_log_level)  # any case
    log_format: str = attrs.field(default="text", validator=_log_format)
    metrics: str = attrs.field(default="", validator=_address_or_empty)
    users_file: str = ""
    legacy_with_users: bool = False
    tls_cert: str = ""
    tls_key: str = ""
    read_only: bool = False
    store: str = attrs.field(default="", validator=_store_address)
    s3_endpoint: str = ""
    s3_region: str = ""
    s3_memory: int = attrs.field(default=256 * 1024 * 1024, validator=_positive)

    def evolve(self, **changes: Any) -> ServerConfig:
        """A copy with some fields changed (validated like a new one).

        Example:
            test_config = config.evolve(port=0, idle_timeout=5.0)
        """
        return attrs.evolve(self, **changes)


FIELD_HELP: dict[str, str] = {
    "root": "folder to serve (created if missing)",
    "host": "address to listen on",
    "port": "TCP port (0 picks a free one)",
    "backlog": "listen backlog: connections waiting for a slot queue here",
    "max_connections": "connections served at once; the excess waits in the backlog",
    "max_connections_per_ip": "connections served at once from one address",
    "max_streams": "operations in flight on one connection",
    "max_file_size": "largest file accepted by put, in bytes (or 1G, 500M, 2TiB: K, M, G, T are 1024s)",
    "max_frame_size": "largest frame payload accepted, in bytes (or 1M, 64KiB, ...)",
    "initial_window": "bytes a client may send on one upload before the server grants more (or 8M, ...)",
    "upload_memory": (
        "bytes of upload buffers held at once, server-wide (v2 and legacy; or 256M, 1GiB, ...); more "
        "uploads wait for READY, then get BUSY; one connection holds at most a quarter, one address half"
    ),
    "send_memory": (
        "bytes of file contents read into memory for sending at once, server-wide (small downloads; "
        "or 64M, ...); more wait, then get BUSY"
    ),
    "handshake_timeout": "seconds a new connection has to finish its hello",
    "idle_timeout": "seconds a connection may sit with nothing in flight",
    "min_rate": "bytes/s a transfer must keep up (averaged over min_rate_window), else it is dropped",
    "min_rate_window": "seconds over which min_rate is measured",
    "drain_timeout": "seconds transfers in flight get to finish on shutdown",
    "partial_ttl": "seconds an interrupted upload is kept for resume",
    "legacy": "accept old text-protocol clients on the same port",
    "legacy_settle": "seconds of quiet that end a legacy header (it has no terminator)",
    "legacy_timeout": "seconds a legacy client may stay silent mid-command",
    "legacy_layout": "store legacy puts under upload/ and serve legacy gets from download/",
    "log_level": "DEBUG, INFO, WARNING or ERROR (any case)",
    "log_format": "text or json (one JSON object per line, event fields at the top level)",
    "metrics": "HOST:PORT to serve Prometheus metrics on (GET /metrics); empty: off",
    "users_file": "TOML file of users, homes and rights; empty: no login, everyone may do everything",
    "legacy_with_users": "accept legacy clients even with a users file (they get the anonymous rights)",
    "tls_cert": "PEM certificate chain: serve over TLS (with --tls-key)",
    "tls_key": "PEM private key of --tls-cert",
    "read_only": "serve for download and listing only: no upload, delete, rename or mkdir, for anyone",
    "store": "s3://BUCKET/PREFIX: serve an S3-compatible bucket instead of --root (see docs/s3.md)",
    "s3_endpoint": "URL of the S3 engine of --store (empty: AWS); credentials as boto3 finds them",
    "s3_region": "region of the S3 engine of --store (empty: as boto3 finds it, else us-east-1)",
    "s3_memory": "bytes of parts in flight and ranges read ahead to and from --store, all transfers at once",
}

# What a setting of each field type may be given as, and how the error names it.
_ACCEPTS: dict[str, tuple[tuple[type, ...], str]] = {
    "Path": ((str, os.PathLike), "a path"),
    "str": ((str,), "a string"),
    "int": ((int,), "a whole number"),
    "float": ((int, float), "a number"),
    "bool": ((bool,), "true or false"),
}
_FIELD_TYPES: dict[str, str] = {a.name: str(a.type) for a in attrs.fields(ServerConfig)}


def check_setting(name: str, value: Any) -> Any:
    """One setting's value if it has its field's type, with "~" expanded in paths.

    Raises:
        ValueError: unknown name or wrong type, e.g. "port: 'abc' is not a whole number".
    """
    if name not in _FIELD_TYPES:
        raise ValueError(f"unknown setting {name}{_did_you_mean(name)}")
    if name in SIZE_SETTINGS and isinstance(value, str):
        try:
            return parse_size(value)
        except ValueError as exc:
            raise ValueError(f"{name}: {exc}") from None
    kinds, expected = _ACCEPTS[_FIELD_TYPES[name]]
    # bool is an int subclass, but `port = true` is a mistake, not port 1.
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        raise ValueError(f"{name}: {value!r} is not {expected}")
    if name in PATH_SETTINGS:
        if name == "root" and not str(value):  # Path("") is ".": the folder it happens to start in
            raise ValueError("root: '' is empty: name the folder to serve ('.' for this one)")
        expanded = os.path.expanduser(str(value))
        return Path(expanded) if isinstance(value, os.PathLike) else expanded
    return value


def setting_from_text(name: str, text: str, where: str) -> Any:
    """A setting typed as text (a command-line flag) as its field's type; errors name `where`.

    Raises:
        ValueError: not a number where one is needed, e.g. "--port: 'abc' is not a whole number".
    """
    kind = _FIELD_TYPES[name]
    if name in SIZE_SETTINGS:
        try:
            return parse_size(text)
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
    convert: dict[str, tuple[Any, str]] = {"int": (int, "a whole number"), "float": (float, "a number")}
    if kind not in convert:
        return Path(text) if kind == "Path" else text
    make, expected = convert[kind]
    try:
        return make(text)
    except ValueError:
        raise ValueError(f"{where}: {text!r} is not {expected}") from None


def _did_you_mean(name: str) -> str:
    import difflib  # here, not at the top: only a mistyped setting needs it (bench W5)

    close = difflib.get_close_matches(name, [*_FIELD_TYPES, "server"], n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def load_toml(path: Path) -> dict[str, Any]:
    """The `[server]` table of a TOML file.

    Raises:
        OSError: the file cannot be read.
        ValueError: not TOML, no `[server]` table, a setting outside it, or an unknown or
            mistyped setting; the message starts with the file's path.
    """
    import tomllib  # here, not at the top: a server started without a file never reads TOML

    with path.open("rb") as f:
        try:
            data = tomllib.load(f)
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"{path}: {exc}") from None
    if "server" not in data:
        # Settings at the top level were once read as they are; one table, always, keeps
        # a file that also holds other tables (or a misspelt header) from being half-read.
        found = f" (found: {', '.join(sorted(data))})" if data else " (the file is empty)"
        raise ValueError(f"{path}: no [server] table: put the settings under a [server] header{found}")
    table = data["server"]
    if not isinstance(table, dict):
        raise ValueError(f"{path}: [server] must be a table")
    # Keys above the [server] header would otherwise be silently ignored.
    outside = sorted(set(data) - {"server"})
    if outside:
        raise ValueError(f"{path}: outside the [server] table: {', '.join(outside)} (move under [server])")
    unknown = sorted(set(table) - set(_FIELD_TYPES))
    if unknown:
        plural = "s" if len(unknown) > 1 else ""
        raise ValueError(f"{path}: unknown setting{plural} {', '.join(unknown)}{_did_you_mean(unknown[0])}")
    try:
        settings = {name: check_setting(name, value) for name, value in table.items()}
        ServerConfig(**settings)  # values out of range, named with the file they are in
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
    return settings


def build_config(file_settings: dict[str, Any], flag_settings: dict[str, Any]) -> ServerConfig:
    """Defaults, then the file, then flags: the later wins.

    Raises:
        ValueError: an unknown setting, a wrong type or a value out of range, naming the setting.
    """
    merged = {**file_settings, **{k: v for k, v in flag_settings.items() if v is not None}}
    checked = {name: check_setting(name, value) for name, value in merged.items()}
    return ServerConfig(**checked)
