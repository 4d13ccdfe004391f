"""The public API type-checks under `mypy --strict` (the package ships py.typed)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PUBLIC_MODULES = [
    "trioftp/__init__.py",
    "trioftp/client",
    "trioftp/errors.py",
    "trioftp/config.py",
    "trioftp/legacy.py",
    "trioftp/server/__init__.py",
    "trioftp/protocol",
]


def test_the_package_is_marked_typed() -> None:
    assert (REPO / "trioftp" / "py.typed").is_file()


@pytest.mark.skipif(importlib.util.find_spec("mypy") is None, reason="mypy is not installed")
def test_mypy_strict_passes_on_the_public_api(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable, "-m", "mypy", "--strict",
            "--config-file", str(REPO / "pyproject.toml"),
            "--cache-dir", str(tmp_path / "mypy_cache"),
            "--no-color-output", "--no-error-summary",
            *PUBLIC_MODULES,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
