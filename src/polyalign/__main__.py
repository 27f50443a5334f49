"""`python -m polyalign ...`: the `polyalign` command, like `python -m polyalign.cli`."""

import sys

from polyalign.cli import main

sys.exit(main())
