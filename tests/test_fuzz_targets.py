"""The fuzz targets run over their seeds and random bytes, so the harness cannot rot unnoticed."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

FUZZ = Path(__file__).resolve().parent.parent / "fuzz"
sys.path.insert(0, str(FUZZ))

import seeds  # noqa: E402
import targets  # noqa: E402


@pytest.mark.parametrize("name", sorted(targets.TARGETS))
def test_seeds_pass_through_each_target(name: str, tmp_path: Path) -> None:
    seeds.write(tmp_path)
    inputs = sorted((tmp_path / name).iterdir())
    assert inputs
    for path in inputs:
        targets.TARGETS[name](path.read_bytes())


@pytest.mark.parametrize("name", sorted(targets.TARGETS))
@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=512))
def test_random_bytes_raise_only_protocol_errors(name: str, data: bytes) -> None:
    targets.TARGETS[name](data)
