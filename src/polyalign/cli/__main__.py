"""`python -m polyalign.cli ...`: the `polyalign` command."""

import sys

from polyalign.cli import main

sys.exit(main())
