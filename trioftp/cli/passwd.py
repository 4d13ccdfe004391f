"""`trioftp passwd`: a password hash for a users file."""

from __future__ import annotations

import argparse
import getpass
import sys

from trioftp.server.auth import hash_password


def _passwd(args: argparse.Namespace) -> int:
    if sys.stdin.isatty():
        try:
            password = getpass.getpass("password: ")
            again = getpass.getpass("again: ")
        except EOFError:  # Ctrl-D at a prompt: the user gave up, as a shell's read does
            print("\ntrioftp: passwd: no password given", file=sys.stderr)
            return 1
        if again != password:
            print("trioftp: passwd: the passwords differ", file=sys.stderr)
            return 1
    else:
        password = sys.stdin.readline().rstrip("\n")
    if not password:
        print("trioftp: passwd: empty password", file=sys.stderr)
        return 1
    print(hash_password(password))
    return 0
