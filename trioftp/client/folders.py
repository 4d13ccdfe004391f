"""Whole folders: `upload_tree`, `download_tree`, `sync` and `remove_tree` as methods.

Each is one call of the function of the same name in trioftp.client.tree, which
the CLI calls too: one implementation, whichever door is used. The methods are
typed on tree.TreeConnection, the Protocol of what that code needs.
"""

from __future__ import annotations

import os

import trio

from trioftp.client import tree
from trioftp.client.tree import DEFAULT_CONCURRENCY, Direction, Plan, TreeCallback, TreeConnection
from trioftp.disk.syscalls import sync_filesystem


class Folders:
    """The methods of `ClientConnection` that work on a whole folder, through trioftp.client.tree."""

    async def upload_tree(
        self: TreeConnection,
        local: str | os.PathLike[str],
        remote: str = "",
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
        progress: TreeCallback | None = None,
        rules: tree.Rules | None = None,
    ) -> Plan:
        """Upload every file under a local folder, skipping files already identical on the server.

        Files go `concurrency` at a time, each on its own stream; an upload cut
        midway resumes from the server's partial on the next run.

        Args:
            local: the local folder.
            remote: the remote folder to fill ("" is the root); created as needed.
            concurrency: how many files are in flight at once.
            progress: called with a `TreeProgress` after every change.
            rules: rsync-style include/exclude rules (`trioftp.Rules`); what they leave
                out is neither copied nor, on the target, deleted.

        Returns:
            The plan carried out: `copy` (the files sent), `unchanged`, `bytes_to_copy`.

        Raises:
            TreeTransferError: some entries failed or were skipped (a FIFO, a dangling
                link, a name the protocol refuses); the others were sent. See its
                `failures`, `skipped` and `done`.
            FileNotFoundError, NotADirectoryError: `local` is missing or not a folder.
            ConnectionClosed: the connection broke.

        Example:
            plan = await conn.upload_tree("photos", "backup/photos")
            print(len(plan.copy), "files sent,", plan.unchanged, "already there")
        """
        return await tree.upload_tree(
            self, local, remote, concurrency=concurrency, progress=progress, rules=rules
        )

    async def download_tree(
        self: TreeConnection,
        remote: str,
        local: str | os.PathLike[str],
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
        progress: TreeCallback | None = None,
        rules: tree.Rules | None = None,
        fsync: bool = False,
    ) -> Plan:
        """Download every file under a remote folder, skipping files already identical here.

        A download cut midway resumes from its `.trioftp-part` file on the next run.
        With `fsync`, the local file system is synced once at the end (syncfs), also
        after a failure, so what was received is durable; no fsync per file.

        Args:
            remote: the remote folder ("" is the root).
            local: the local folder to fill; created as needed.
            concurrency: how many files are in flight at once.
            progress: called with a `TreeProgress` after every change.
            rules: rsync-style include/exclude rules (`trioftp.Rules`); what they leave
                out is neither copied nor, on the target, deleted.
            fsync: sync the local file system once at the end (see above).

        Returns:
            The plan carried out: `copy` (the files received), `unchanged`, `bytes_to_copy`.

        Raises:
            TreeTransferError: some entries failed or were skipped; the others were
                received. See its `failures`, `skipped` and `done`.
            NotFound: `remote` does not exist; RemoteError (WRONG_KIND): it is a file.
            ConnectionClosed: the connection broke.

        Example:
            await conn.download_tree("backup/photos", "photos-restored")
        """
        try:
            return await tree.download_tree(
                self, remote, local, concurrency=concurrency, progress=progress, rules=rules
            )
        finally:
            if fsync:
                await trio.to_thread.run_sync(sync_filesystem, local, True)

    async def sync(
        self: TreeConnection,
        local: str | os.PathLike[str],
        remote: str,
        *,
        direction: Direction = Direction.UP,
        delete: bool = False,
        dry_run: bool = False,
        concurrency: int = DEFAULT_CONCURRENCY,
        progress: TreeCallback | None = None,
        rules: tree.Rules | None = None,
    ) -> Plan:
        """Make `remote` match `local` (Direction.UP) or `local` match `remote` (Direction.DOWN).

        Files are compared by size, then by digest where the sizes agree; only
        those that differ are copied.

        Args:
            local: the local folder.
            remote: the remote folder ("" is the root).
            direction: which side is the source.
            delete: also delete the target's files that the source does not have.
            dry_run: only compute the plan; change nothing on either side.
            concurrency: how many files are in flight at once.
            progress: called with a `TreeProgress` after every change.
            rules: rsync-style include/exclude rules (`trioftp.Rules`); what they leave
                out is neither copied nor, on the target, deleted.

        Returns:
            The plan: `copy` and `delete` (relative paths), `unchanged`, `bytes_to_copy`.

        Raises:
            TreeTransferError: some entries failed (the others were copied, nothing was
                deleted) or were skipped (their copies on the target are never deleted).
            FileNotFoundError, NotADirectoryError, NotFound, RemoteError (WRONG_KIND): the
                source folder is missing or a file (read as empty, a run would copy nothing and
                report success, and with `delete` it would empty the target).
            ConnectionClosed: the connection broke.

        Example:
            plan = await conn.sync("site", "www", delete=True, dry_run=True)
            print("would copy", plan.copy, "and delete", plan.delete)
        """
        return await tree.sync(
            self,
            local,
            remote,
            direction=direction,
            delete=delete,
            dry_run=dry_run,
            concurrency=concurrency,
            progress=progress,
            rules=rules,
        )

    async def remove_tree(
        self: TreeConnection, remote: str, *, concurrency: int = DEFAULT_CONCURRENCY
    ) -> Plan:
        """Delete a remote folder and everything under it (files, then folders, deepest first).

        A file is deleted as it is (as `rm -r` does), and so is a symbolic link,
        to a file or a folder: the link goes, never what it leads to. The root
        cannot be removed.

        Returns:
            What was deleted: `delete` (files) and `rmdir` (folders; "" is `remote` itself).

        Raises:
            ValueError: `remote` is the root ("" or "/").
            NotFound: no such file or folder.
            TreeTransferError: some entries could not be deleted (nor the folders holding them).
            ConnectionClosed: the connection broke.

        Example:
            plan = await conn.remove_tree("backup/old-photos")
        """
        return await tree.remove_tree(self, remote, concurrency=concurrency)
