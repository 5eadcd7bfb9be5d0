"""`python -m resnet_repro`: runs the command line (resnet_repro.cli)."""

import sys

from resnet_repro.cli import main

if __name__ == "__main__":
    sys.exit(main())
