"""Progress bars for the command line, drawn by rich on a terminal's stderr; nothing elsewhere.

rich is imported only once a bar is to be drawn, so a script or a pipe pays nothing for it.
Speed and time left are worked out here from the bytes moved since a transfer's first report:
a resumed transfer's first report counts what was already there, which moved at no speed now.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from trioftp.client.tree import TreeProgress


def human(n: float) -> str:
    """Bytes in binary units, as a person reads them: "512B", "1.5MiB"."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024:
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1024
    return f"{n:.1f}TiB"


class _Rate:
    """Bytes per second since the first report, leaving out the bytes that report already had."""

    def __init__(self) -> None:
        self.start: tuple[float, int] | None = None

    def fields(self, done: int, total: int) -> dict[str, str]:
        now = time.monotonic()
        if self.start is None:
            self.start = (now, done)
        began, first = self.start
        elapsed = now - began
        rate = (done - first) / elapsed if elapsed > 0.2 else 0.0
        left = f"{(total - done) / rate:.0f}s left" if rate > 0 and done < total else ""
        return {"speed": f"{human(rate)}/s" if rate > 0 else "", "left": left}


class Bars:
    """The bars of one command: one per file, and for a tree an overall one above them.

    Close it (`with Bars() as bars:`) before printing anything else: the bars end on
    their own lines, so an error or a Ctrl-C never lands on a bar's line.
    """

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = self.stream.isatty()
        self._progress: Any = None

    def __enter__(self) -> Bars:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def _live(self) -> Any:
        if self._progress is None:
            from rich.console import Console
            from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn

            self._progress = Progress(
                TextColumn("{task.description}", markup=False),
                BarColumn(),
                TextColumn("{task.percentage:>5.1f}%"),
                DownloadColumn(binary_units=True),
                TextColumn("{task.fields[speed]}", markup=False),
                TextColumn("{task.fields[left]}", markup=False),
                console=Console(file=self.stream),
                auto_refresh=True,
                refresh_per_second=8,
            )
            self._progress.start()
        return self._progress

    def file(self, label: str) -> Callable[[int, int], None] | None:
        """A callback for one transfer's progress(done, total); None when nothing is shown."""
        if not self.enabled:
            return None
        task: list[Any] = []
        rate = _Rate()

        def update(done: int, total: int) -> None:
            progress = self._live()
            if not task:
                task.append(progress.add_task(label, total=total, completed=done, **rate.fields(done, total)))
            else:
                progress.update(task[0], total=total, completed=done, **rate.fields(done, total))

        return update

    def tree(self) -> Callable[[TreeProgress], None] | None:
        """A callback for a tree transfer: an overall bar (files and bytes), and a bar per file in flight."""
        if not self.enabled:
            return None
        overall: list[Any] = []
        rate = _Rate()
        files: dict[str, tuple[Any, _Rate]] = {}

        def update(state: TreeProgress) -> None:
            from trioftp.client.tree import shown

            progress = self._live()
            moved = state.bytes_done - state.bytes_resumed
            label = f"{state.files_done}/{state.files_total} files"
            fields = rate.fields(moved, state.bytes_total - state.bytes_resumed)
            sizes = {"total": state.bytes_total, "completed": state.bytes_done}
            if not overall:
                overall.append(progress.add_task(label, **sizes, **fields))
            progress.update(overall[0], description=label, **sizes, **fields)
            for path in list(files):
                if path not in state.file_bytes:
                    progress.remove_task(files.pop(path)[0])
            for path, (done, total) in sorted(state.file_bytes.items()):
                if path not in files:
                    file_rate = _Rate()
                    fields = file_rate.fields(done, total)
                    task = progress.add_task(f"  {shown(path)}", total=total, completed=done, **fields)
                    files[path] = (task, file_rate)
                else:
                    task, file_rate = files[path]
                    progress.update(task, total=total, completed=done, **file_rate.fields(done, total))

        return update
