"""`python -m lease <verb>` (see cli.py)."""

import sys

from lease.cli import main

sys.exit(main())
