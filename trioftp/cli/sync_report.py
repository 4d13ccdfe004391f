"""`trioftp sync`: runs the library's sync and prints what it did (or, with -n, would do)."""

from __future__ import annotations

import argparse

from trioftp.cli.progress import human as _human
from trioftp.cli.runner import _connect
from trioftp.client import tree


async def _sync(args: argparse.Namespace) -> None:
    error: tree.TreeTransferError | None = None
    async with _connect(args) as conn:
        try:
            plan = await tree.sync(
                conn, args.local, args.remote, direction=args.direction, delete=args.delete,
                dry_run=args.dry_run, progress=args.bars.tree(), rules=args.rules,
            )  # fmt: skip
        except tree.TreeTransferError as exc:  # still list what was done
            if exc.done is None:
                raise
            plan, error = exc.done, exc
    if args.dry_run and plan.skipped:  # exit as the real run would
        error = tree.TreeTransferError({}, plan.skipped)
    verb = "would copy" if args.dry_run else "copied"
    deleted = "would delete" if args.dry_run else "deleted"
    shown = tree.shown  # names are the sender's: escaped, so none can drive the terminal
    for path in plan.mkdir:  # folders end with "/"; "./" is the top folder itself
        print(f"{'would create' if args.dry_run else 'created'}: {shown(path)}/")
    for path in plan.copy:
        print(f"{verb}: {shown(path)}")
    for path in plan.delete:
        print(f"{deleted}: {shown(path)}")
    for path in plan.rmdir:
        print(f"{deleted}: {shown(path)}/")
    folders = f"; folders: {len(plan.mkdir)} to create, {len(plan.rmdir)} to delete"
    # The counts say when something was left out, so a failing run never reads "nothing to do".
    left_out = f"; {len(plan.skipped)} skipped" if plan.skipped else ""
    failed = f"; {len(error.failures)} failed" if error is not None and error.failures else ""
    counts = f"{len(plan.copy)} to copy ({_human(plan.bytes_to_copy)}), {len(plan.delete)} to delete"
    print(
        f"{counts}, {plan.unchanged} unchanged{folders if plan.mkdir or plan.rmdir else ''}{left_out}{failed}"
    )
    if error is not None:
        raise error
