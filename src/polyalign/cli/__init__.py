"""Layer 7, cli: the `polyalign` command (`python -m polyalign.cli`) and its subcommands.

`main` is the console entry point; each subcommand's torch-importing code is imported only when it runs.
"""

from polyalign.cli.commands import main

__all__ = ["main"]
