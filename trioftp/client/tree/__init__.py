"""Whole folders over one connection: upload_tree, download_tree, sync and remove_tree.

Many files are in flight at once (each on its own stream); a file is sent only
when it differs, decided by size and then digest, so a run that was cut off
resumes where it stopped: finished files are skipped, and partial ones resume
(uploads through the server's partials, downloads through `.trioftp-part`).

model: plans, scans and the error that lists what was skipped or failed;
local and remote: the walks of each side; plan: what to do, with why;
run: doing it; peer: what all of it needs of a connection (a Protocol).
"""

from trioftp.client.tree.local import scan_local, walk_local
from trioftp.client.tree.model import (
    DEFAULT_CONCURRENCY,
    FOLDER_LINK_REASON,
    NOWHERE_REASON,
    PARTIAL_REASON,
    UNLISTABLE_REASON,
    UNSERVED_REASON,
    Direction,
    FileState,
    Plan,
    Skipped,
    TreeCallback,
    TreeFailure,
    TreeProgress,
    TreeScan,
    TreeTransferError,
    shown,
)
from trioftp.client.tree.peer import TreeConnection
from trioftp.client.tree.plan import plan_sync
from trioftp.client.tree.remote import scan_remote, walk_remote
from trioftp.client.tree.rules import Rules, filter_scan
from trioftp.client.tree.run import carry_out, download_tree, remove_tree, sync, upload_tree

__all__ = [
    "DEFAULT_CONCURRENCY",
    "FOLDER_LINK_REASON",
    "NOWHERE_REASON",
    "PARTIAL_REASON",
    "Rules",
    "Direction",
    "FileState",
    "Plan",
    "Skipped",
    "TreeCallback",
    "TreeConnection",
    "TreeFailure",
    "TreeProgress",
    "TreeScan",
    "TreeTransferError",
    "UNLISTABLE_REASON",
    "UNSERVED_REASON",
    "carry_out",
    "download_tree",
    "filter_scan",
    "plan_sync",
    "remove_tree",
    "scan_local",
    "scan_remote",
    "shown",
    "sync",
    "upload_tree",
    "walk_local",
    "walk_remote",
]
