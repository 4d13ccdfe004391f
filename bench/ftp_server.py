"""pyftpdlib 2.x in its fastest configuration, for the benchmark.

sendfile on (the default on Linux), sendfile chunk and receive size tunable
(the defaults here were the fastest measured on the 2-core reference machine),
no per-command logging, unlimited connections per address.

Run (from the benchmark venv): python bench/ftp_server.py --root DIR --port P
User "bench", password "bench".
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import raise_nofile, set_parent_death_signal
from pyftpdlib.authorizers import DummyAuthorizer
from pyftpdlib.handlers import DTPHandler, FTPHandler
from pyftpdlib.servers import FTPServer

USER = PASSWORD = "bench"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--max-cons", type=int, default=20000)
    parser.add_argument("--sendfile-chunk", type=int, default=1024 * 1024, help="bytes per sendfile() call")
    parser.add_argument("--recv-size", type=int, default=64 * 1024, help="bytes per recv() on uploads")
    args = parser.parse_args()
    set_parent_death_signal()
    raise_nofile()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("pyftpdlib").setLevel(logging.WARNING)

    authorizer = DummyAuthorizer()
    authorizer.add_user(USER, PASSWORD, args.root, perm="elradfmwMT")

    class FastDTP(DTPHandler):
        ac_out_buffer_size = args.sendfile_chunk
        ac_in_buffer_size = args.recv_size

    class Handler(FTPHandler):
        pass

    Handler.authorizer = authorizer
    Handler.use_sendfile = True
    Handler.dtp_handler = FastDTP
    Handler.banner = "bench ready"

    server = FTPServer(("127.0.0.1", args.port), Handler, backlog=4096)
    server.max_cons = args.max_cons
    server.max_cons_per_ip = 0
    server.serve_forever(handle_exit=True)


if __name__ == "__main__":
    main()
