"""The `vkmtp` command line: `main` parses the subcommands (vkmtp.cli.main); chat and info have their own modules."""

from vkmtp.cli.main import main

__all__ = ["main"]
