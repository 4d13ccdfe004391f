"""Which entries of a tree a transfer leaves out: rsync's --exclude and --include rules.

The rules are rsync's (see "INCLUDE/EXCLUDE PATTERN RULES" in its manual), so a
user's patterns mean here what they mean there:

- the rules are tried in order; the first that matches decides; none: included;
- a pattern ending in "/" matches folders only;
- a pattern starting with "/" is anchored at the tree's top; one holding another
  "/" (or "**") is matched against the end of the path, at a "/"; any other
  is matched against the last part of the name, at any depth;
- "*" matches anything but "/", "**" anything, "?" one character but "/",
  "[...]" one of a set; "dir/***" is "dir" and everything under it;
- an excluded folder is not walked into: nothing under it is included, whatever
  a later rule says.

The tree's top itself is never left out. An entry left out is neither copied nor,
on the target, deleted by `delete` (as rsync without --delete-excluded).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import attrs

from trioftp.client.tree.model import TreeScan


@attrs.frozen
class _Rule:
    include: bool
    regex: re.Pattern[str]
    whole_path: bool  # matched against the path, else against the last part of the name
    folders_only: bool

    def matches(self, path: str, is_folder: bool) -> bool:
        if self.folders_only and not is_folder:
            return False
        return self.regex.search(path if self.whole_path else path.rpartition("/")[2]) is not None


def _translate(pattern: str) -> str:
    """A shell-style pattern as a regular expression in which "*" and "?" stop at "/"."""
    out: list[str] = []
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "\\" and i + 1 < len(pattern):
            i += 1
            out.append(re.escape(pattern[i]))
        elif char == "[" and (end := pattern.find("]", i + 2)) != -1:
            body = pattern[i + 1 : end]
            negated = body[:1] in ("!", "^")
            body = body[1:] if negated else body
            out.append(f"[{'^' if negated else ''}{body.replace(chr(92), chr(92) * 2)}]")
            i = end
        else:
            out.append(re.escape(char))
        i += 1
    return "".join(out)


def _compile(include: bool, pattern: str) -> list[_Rule]:
    if not pattern.strip("/"):
        raise ValueError(f"{pattern!r} is not a pattern: it names no file or folder")
    if pattern.endswith("/***"):  # the folder itself, and all under it
        base = pattern[: -len("/***")]
        return [*_compile(include, base + "/"), *_compile(include, base + "/**")]
    anchored = pattern.startswith("/")
    folders_only = pattern.endswith("/")
    body = pattern.removeprefix("/").rstrip("/")
    whole_path = anchored or "/" in body or "**" in body
    regex = _translate(body)
    if anchored:
        text = f"^{regex}$"
    elif whole_path:
        text = f"(?:^|/){regex}$"  # the end of the path, from a "/" on
    else:
        text = f"^{regex}$"
    return [_Rule(include, re.compile(text, re.DOTALL), whole_path, folders_only)]


class Rules:
    """rsync-style include and exclude rules, in order: "- PATTERN" leaves out, "+ PATTERN" keeps.

    Raises:
        ValueError: a rule that does not start with "- " or "+ ", or an empty pattern.

    Example:
        rules = Rules(["+ *.c", "+ */", "- *"])  # only C files, in every folder
        await conn.upload_tree("src", "backup/src", rules=rules)
    """

    def __init__(self, rules: Iterable[str] = ()) -> None:
        self.rules: tuple[str, ...] = tuple(rules)
        self._compiled: list[_Rule] = []
        for rule in self.rules:
            sign, space, pattern = rule.partition(" ")
            if sign not in ("-", "+") or not space:
                raise ValueError(f"{rule!r}: a rule is '- PATTERN' (exclude) or '+ PATTERN' (include)")
            self._compiled.extend(_compile(sign == "+", pattern))

    @classmethod
    def from_options(cls, options: Sequence[tuple[str, str]]) -> Rules:
        """Rules from ("exclude" | "include", pattern) pairs, in the order they were given.

        Example:
            rules = Rules.from_options([("exclude", "*.tmp"), ("exclude", "cache/")])
        """
        return cls(f"{'+' if kind == 'include' else '-'} {pattern}" for kind, pattern in options)

    def __bool__(self) -> bool:
        return bool(self._compiled)

    def __repr__(self) -> str:
        return f"Rules({list(self.rules)!r})"

    def _decides_out(self, path: str, is_folder: bool) -> bool:
        for rule in self._compiled:
            if rule.matches(path, is_folder):
                return not rule.include
        return False

    def excludes(self, path: str, *, is_folder: bool = False) -> bool:
        """Whether `path` (relative to the tree's top, "/"-separated) is left out, or a folder holding it is.

        Example:
            assert Rules(["- *.o"]).excludes("lib/x.o")
        """
        parts = path.split("/")
        for depth in range(1, len(parts)):
            if self._decides_out("/".join(parts[:depth]), True):
                return True
        return self._decides_out(path, is_folder)


def filter_scan(scan: TreeScan, rules: Rules | None) -> TreeScan:
    """`scan` without what `rules` leave out; those paths go to its `excluded`."""
    if not rules:
        return scan
    excluded: set[str] = set()

    def keep(path: str, is_folder: bool) -> bool:
        if rules.excludes(path, is_folder=is_folder):
            excluded.add(path)
            return False
        return True

    folders = frozenset(path for path in scan.folders if keep(path, True))
    files = {path: state for path, state in scan.files.items() if keep(path, False)}
    # What a walk skipped may be of any kind; a link to a folder is matched as a folder.
    skipped = {path: why for path, why in scan.skipped.items() if keep(path, path in scan.links)}
    return attrs.evolve(
        scan,
        files=files,
        folders=folders,
        skipped=skipped,
        links=frozenset(scan.links - excluded),
        excluded=frozenset(excluded),
    )
