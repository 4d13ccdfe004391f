"""`python -m trioftp` works like the `trioftp` command."""

import sys

from trioftp.cli import main

sys.exit(main())
