"""Summarise a py-spy raw (folded) profile: where the CPU time goes, by function.

    python bench/profile_summary.py PROFILE.txt [--top 20] [--lines] [--thread NAME]

py-spy's raw format is one line per distinct stack: `frame;frame;...;leaf COUNT`.
Without `--idle`, py-spy only keeps samples where a thread was running (or in a
syscall that holds the GIL), so the percentages are shares of busy samples.

Prints, per thread: the hottest leaf functions (self time), and the trioftp/
functions whose subtree holds the most samples (inclusive time).
"""

from __future__ import annotations

import argparse
import re
from collections import Counter, defaultdict

FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^():]*)(?::(?P<line>\d+))?\)$")


def short(frame: str, keep_lines: bool) -> str:
    m = FRAME.match(frame.strip())
    if not m:
        return frame.strip()
    path = m.group("file")
    for marker in ("site-packages/", "/work/main/", "lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
    line = f":{m.group('line')}" if keep_lines and m.group("line") else ""
    return f"{m.group('func')} ({path}{line})"


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("profile")
    p.add_argument("--top", type=int, default=15)
    p.add_argument("--lines", action="store_true", help="keep line numbers (default: group by function)")
    p.add_argument("--thread", default=None, help="only threads whose name contains this")
    args = p.parse_args()

    self_time: dict[str, Counter[str]] = defaultdict(Counter)
    inclusive: dict[str, Counter[str]] = defaultdict(Counter)
    totals: Counter[str] = Counter()
    with open(args.profile) as f:
        for raw in f:
            raw = raw.rstrip("\n")
            if not raw.strip():
                continue
            stack, _, count_text = raw.rpartition(" ")
            try:
                count = int(count_text)
            except ValueError:
                continue
            frames = [fr for fr in stack.split(";") if fr]
            thread = "all"
            rest = []
            for fr in frames:
                if fr.startswith("thread ("):
                    thread = fr.split(":", 1)[1].strip() if ":" in fr else fr
                    thread = "MainThread" if thread == "MainThread" else ("worker threads" if thread else fr)
                else:
                    rest.append(short(fr, args.lines))
            if args.thread and args.thread not in thread:
                continue
            if not rest:
                continue
            totals[thread] += count
            self_time[thread][rest[-1]] += count
            for fr in set(rest):
                if "trioftp/" in fr:
                    inclusive[thread][fr] += count

    grand = sum(totals.values())
    print(f"{args.profile}: {grand} busy samples")
    for thread, total in totals.most_common():
        print(f"\n== {thread}: {total} samples ({100 * total / max(grand, 1):.0f}% of all)")
        print("  self time (leaf frames):")
        for fr, n in self_time[thread].most_common(args.top):
            print(f"    {100 * n / total:5.1f}%  {fr}")
        if inclusive[thread]:
            print("  inclusive time, trioftp/ functions:")
            for fr, n in inclusive[thread].most_common(args.top):
                print(f"    {100 * n / total:5.1f}%  {fr}")


if __name__ == "__main__":
    main()
