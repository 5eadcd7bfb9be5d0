"""`python -m resnet_repro.lease <verb>` (see cli.py)."""

import sys

from resnet_repro.lease.cli import main

sys.exit(main())
