"""Users, their rights and home folders, and password checks (scrypt, never clear text).

The users file is TOML:

    [anonymous]                 # optional; off by default once a users file is given
    enabled = false
    home = "public"
    rights = ["read", "list"]

    [users.alice]
    password = "scrypt$16384$8$1$<salt>$<hash>"   # make one with `trioftp passwd`
    home = "alice"                                # inside the served root; "" is all of it
    rights = ["read", "write", "delete", "list", "rename", "mkdir"]   # or ["all"]
    admin = false                                 # may ask for the server's status
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import secrets
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import trio

from trioftp.protocol.names import BadName, check_path

SCRYPT_N, SCRYPT_R, SCRYPT_P, SCRYPT_LEN = 2**14, 8, 1, 32


class Right(enum.Enum):
    READ = "read"  # download, and the digest in stat
    WRITE = "write"  # upload (create or replace)
    DELETE = "delete"
    LIST = "list"  # list folders, stat
    RENAME = "rename"
    MKDIR = "mkdir"


ALL_RIGHTS = frozenset(Right)


@attrs.frozen
class User:
    name: str
    home: str = ""
    rights: frozenset[Right] = ALL_RIGHTS
    admin: bool = False
    password_hash: str = attrs.field(default="", repr=False)

    def may(self, right: Right) -> bool:
        return right in self.rights


ANONYMOUS_FULL = User(name="anonymous", admin=True)
"""Who a client is when no users file is configured: everything, as before auth existed."""
READ_ONLY_RIGHTS = frozenset({Right.READ, Right.LIST})
"""What a read-only server (`read_only`) leaves anyone: download, list and stat."""
NOBODY = User(name="(not logged in)", rights=frozenset())
"""Who a client is, on a server without anonymous access, until it logs in."""


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """A salted scrypt hash in the users file's format."""
    salt = salt if salt is not None else secrets.token_bytes(16)
    key = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=SCRYPT_LEN)
    b64 = base64.b64encode
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${b64(salt).decode()}${b64(key).decode()}"


def verify_password(password: str, stored: str) -> bool:
    """Check a password against a stored hash, in constant time. Blocking (~50 ms): use a thread."""
    try:
        scheme, n, r, p, salt, key = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(key)
        actual = hashlib.scrypt(
            password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p), dklen=len(expected)
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


# What an unknown name is checked against: the same scrypt cost as a real entry.
# The key needs no computing (no password matches it by chance), which keeps
# scrypt's 16 MiB and ~50 ms out of every import.
_DUMMY_HASH = "$".join(
    ("scrypt", str(SCRYPT_N), str(SCRYPT_R), str(SCRYPT_P),
     base64.b64encode(b"\0" * 16).decode(), base64.b64encode(b"\0" * SCRYPT_LEN).decode())
)  # fmt: skip


@attrs.frozen
class Users:
    """Who may log in, and what an anonymous client may do (None: nothing)."""

    users: dict[str, User]
    anonymous: User | None

    def authenticate(self, name: str, password: str) -> User | None:
        """The user if the password is right, else None. Blocking: run it on a thread.

        An unknown name costs the same scrypt as a known one, so timing does not
        tell which names exist.
        """
        user = self.users.get(name)
        ok = verify_password(password, user.password_hash if user else _DUMMY_HASH)
        return user if ok and user is not None else None


def _rights(values: Iterable[str], where: str) -> frozenset[Right]:
    values = list(values)
    if values == ["all"]:
        return ALL_RIGHTS
    try:
        return frozenset(Right(v) for v in values)
    except ValueError:
        known = ", ".join(r.value for r in Right)
        raise ValueError(f"{where}: rights must be among {known} (or ['all']), got {values}") from None


def _home(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{where}: home must be a string")
    try:
        home = check_path(value.strip("/"), allow_root=True)
    except BadName as exc:
        raise ValueError(f"{where}: bad home folder: {exc}") from None
    if home.split("/", 1)[0] == ".trioftp":
        raise ValueError(f"{where}: home {home!r} is inside the server's own .trioftp folder")
    return home


def load_users(path: Path) -> Users:
    """Read a users file (see the module doc). Raises ValueError with the place of any mistake."""
    import tomllib  # here, not at the top: a server without users never reads TOML

    with path.open("rb") as f:
        data = tomllib.load(f)
    unknown = set(data) - {"users", "anonymous"}
    if unknown:
        raise ValueError(f"{path}: unknown tables {', '.join(sorted(unknown))}")
    users: dict[str, User] = {}
    for name, table in data.get("users", {}).items():
        where = f"{path}: [users.{name}]"
        extra = set(table) - {"password", "home", "rights", "admin"}
        if extra:
            raise ValueError(f"{where}: unknown keys {', '.join(sorted(extra))}")
        password = table.get("password", "")
        if not password.startswith("scrypt$"):
            raise ValueError(f"{where}: password must be a scrypt hash (make one with `trioftp passwd`)")
        users[name] = User(
            name=name,
            home=_home(table.get("home", ""), where),
            rights=_rights(table.get("rights", ["all"]), where),
            admin=bool(table.get("admin", False)),
            password_hash=password,
        )
    anonymous = None
    table = data.get("anonymous", {})
    if table.get("enabled", False):
        where = f"{path}: [anonymous]"
        anonymous = User(
            name="anonymous",
            home=_home(table.get("home", ""), where),
            rights=_rights(table.get("rights", ["read", "list"]), where),
        )
    return Users(users=users, anonymous=anonymous)


SWEEP_MIN = 1024  # addresses the failure tables hold before they are first swept


@attrs.frozen
class Failure:
    """A failed login: `delay` seconds before the answer; `locked_until` if it started a lockout."""

    delay: float
    count: int  # failures from the address within the window, this one included
    locked_until: float | None = None


class FailureTracker:
    """Failed logins per client address (IP): a growing delay, then a lockout with a fixed end.

    Counted per address, whatever the user name, so guessing many names from
    one address is bounded as much as guessing one; no user name is ever
    locked out by itself (anyone could lock a real user out that way). With the
    defaults:

    * a failure is remembered for `window` (600 s);
    * the n-th remembered failure is answered after `base_delay * 2**(n-1)`
      seconds, at most `max_delay`: 0.5, 1, 2, 4, 8, then 10 s;
    * the `lockout_after`-th (10th) locks the address out for `lockout` (600 s)
      from that failure, and the failures behind it are forgotten: once the
      lockout ends the address starts afresh;
    * while locked out, every login from the address is refused without its
      password being checked, answered after `max_delay` like the last
      failures, and not counted: retrying does not push the end back;
    * a successful login forgets the address's failures for that user name
      only (a mistyped password), so logging into one's own account does not
      wipe out guesses against others;
    * an address's logins are checked one at a time (`one_check_at_a_time`),
      so parallel connections get no more guesses before the lockout than one.

    Times are the caller's clock (the server passes `trio.current_time()`).
    """

    def __init__(
        self,
        *,
        window: float = 600.0,
        lockout_after: int = 10,
        lockout: float = 600.0,
        base_delay: float = 0.5,
        max_delay: float = 10.0,
    ) -> None:
        self.window = window
        self.lockout_after = lockout_after
        self.lockout = lockout
        self.base_delay = base_delay
        self.max_delay = max_delay
        self._failures: dict[str, list[tuple[float, str]]] = {}  # (when, user name) per address
        self._locked_until: dict[str, float] = {}
        self._checking: dict[str, trio.Lock] = {}
        self._sweep_at = SWEEP_MIN

    @asynccontextmanager
    async def one_check_at_a_time(self, address: str) -> AsyncIterator[None]:
        """Hold the address's turn: check a login and record its outcome inside.

        Without it, guesses sent on many connections at once would all be
        checked before the first failure was counted.
        """
        lock = self._checking.setdefault(address, trio.Lock())
        try:
            async with lock:
                yield
        finally:
            # A released trio.Lock passes straight to a waiter: unlocked means nobody waits.
            if not lock.locked():
                self._checking.pop(address, None)

    def _recent(self, address: str, now: float) -> list[tuple[float, str]]:
        failures = [(t, user) for t, user in self._failures.get(address, []) if now - t < self.window]
        if failures:
            self._failures[address] = failures
        else:
            self._failures.pop(address, None)
        return failures

    def locked_until(self, address: str, now: float) -> float | None:
        """When the address's lockout ends, if it is locked out at `now`."""
        until = self._locked_until.get(address)
        if until is not None and now >= until:
            del self._locked_until[address]
            return None
        return until

    def record_failure(self, address: str, user: str, now: float) -> Failure:
        """Count a failed login (of an address not locked out); the lockout_after-th locks it out."""
        self._sweep(now)
        failures = self._recent(address, now)
        failures.append((now, user))
        self._failures[address] = failures
        count = len(failures)
        delay = min(self.base_delay * 2.0 ** (count - 1), self.max_delay)
        if count < self.lockout_after:
            return Failure(delay=delay, count=count)
        del self._failures[address]
        self._locked_until[address] = now + self.lockout
        return Failure(delay=delay, count=count, locked_until=now + self.lockout)

    def _sweep(self, now: float) -> None:
        """Drop addresses whose failures and lockout are all over.

        An address that fails once and never comes back is otherwise kept for
        good. Sweeping whenever the tables have doubled since the last sweep
        costs amortized O(1) per failure and keeps them within about twice
        what is live (and at least SWEEP_MIN).
        """
        if len(self._failures) + len(self._locked_until) < self._sweep_at:
            return
        for address in list(self._failures):
            self._recent(address, now)
        for address in list(self._locked_until):
            self.locked_until(address, now)
        self._sweep_at = max(SWEEP_MIN, 2 * (len(self._failures) + len(self._locked_until)))

    def record_success(self, address: str, user: str) -> None:
        """Forget the address's failures for `user`; those for other names stay."""
        left = [(t, name) for t, name in self._failures.get(address, []) if name != user]
        if left:
            self._failures[address] = left
        else:
            self._failures.pop(address, None)
