"""Names the local store keeps for itself inside the served folder."""

from __future__ import annotations

import re

STATE_DIR = ".trioftp"

COPY_PREFIX, COPY_SUFFIX = ".trioftp-", ".part"  # an upload being copied onto another mount

COPY_NAME = re.compile(rf"{re.escape(COPY_PREFIX)}[0-9a-f]{{16}}{re.escape(COPY_SUFFIX)}")

COPY_NOTE_SUFFIX = ".copy"  # in the partial folder: names a named copy, for the sweep after a crash
