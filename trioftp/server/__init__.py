"""The trioftp server (see `trioftp.server.server`): `Server`, and `serve` for one call.

The package's modules, by job: server (listeners, connection tasks, shutdown),
session (one v2 connection), operations (one v2 request), legacy_session (one
legacy connection), transfers (what v2 and legacy transfers share), shared
(what every session of a server shares), mapping (the store's terms in the
wire's), stores (the store a configuration names), auth, budget, rate, metrics.
"""

from trioftp.server.server import Server, raise_open_file_limit, serve

__all__ = ["Server", "raise_open_file_limit", "serve"]
