"""Local errors in the store's terms: an OSError or a refusal becomes a StorageError with its Problem."""

from __future__ import annotations

import errno

from trioftp.storage.interface import Problem, StorageError
from trioftp.storage.local.layout import STATE_DIR


def os_problem(exc: OSError, name: str) -> StorageError:
    if isinstance(exc, FileNotFoundError | NotADirectoryError):
        return StorageError(Problem.NOT_FOUND, f"{name!r} does not exist")
    if isinstance(exc, PermissionError):
        return StorageError(Problem.DENIED, f"{name!r}: permission denied")
    if isinstance(exc, IsADirectoryError):
        return StorageError(Problem.WRONG_KIND, f"{name!r} is a folder")
    if isinstance(exc, FileExistsError):
        return StorageError(Problem.EXISTS, f"{name!r} already exists")
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return StorageError(Problem.NO_SPACE, "no space left on the server")
    if exc.errno == errno.ENOTEMPTY:
        return StorageError(Problem.NOT_EMPTY, f"folder {name!r} is not empty")
    if exc.errno == errno.ENAMETOOLONG:
        return StorageError(Problem.BAD_NAME, f"{name!r} is too long for the server's file system")
    if exc.errno == errno.EXDEV:
        return StorageError(Problem.BAD_REQUEST, f"{name!r}: cannot move between file systems of the server")
    return StorageError(Problem.INTERNAL, f"{name!r}: {exc.strerror or exc}")


def parent_is_a_file(name: str) -> StorageError:
    return StorageError(Problem.WRONG_KIND, f"a parent of {name!r} is a file, not a folder")


def outside(name: str) -> StorageError:
    return StorageError(Problem.DENIED, f"{name!r} leads outside the served folder")


def reserved(name: str = STATE_DIR) -> StorageError:
    return StorageError(Problem.DENIED, f"{STATE_DIR!r} is reserved for the server")
