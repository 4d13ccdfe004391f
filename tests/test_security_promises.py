"""SECURITY.md's promise table names the tests that prove each row: those tests must exist."""

from __future__ import annotations

import re
from pathlib import Path

TOP = Path(__file__).resolve().parents[1]


def test_every_test_named_in_security_md_exists() -> None:
    text = (TOP / "SECURITY.md").read_text(encoding="utf-8")
    named = set(re.findall(r"::(test_\w+)", text))
    defined = set()
    for path in (TOP / "tests").rglob("*.py"):
        defined |= set(re.findall(r"^(?:async )?def (test_\w+)\(", path.read_text(encoding="utf-8"), re.M))
    assert len(named) > 50
    assert sorted(named - defined) == []


def test_every_promise_row_names_a_test() -> None:
    text = (TOP / "SECURITY.md").read_text(encoding="utf-8")
    rows = [line for line in text.splitlines() if line.startswith("| **")]
    assert rows
    assert [row[:60] for row in rows if "test_" not in row.rsplit(" | ", 1)[-1]] == []
