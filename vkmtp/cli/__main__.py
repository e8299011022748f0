"""`python -m vkmtp.cli`: the same as the `vkmtp` command."""

import sys

from vkmtp.cli.main import main

sys.exit(main())
