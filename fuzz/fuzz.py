"""Launcher: `python fuzz/fuzz.py TARGET [libFuzzer flags]` with trioftp instrumented for coverage."""

import sys
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parent))
with atheris.instrument_imports(include=["trioftp", "targets"]):
    import targets


def main() -> None:
    name = sys.argv.pop(1)
    atheris.Setup(sys.argv, targets.TARGETS[name])
    atheris.Fuzz()


if __name__ == "__main__":
    main()
