"""``dgm``: the command line, the only code that knows argparse."""

from dgm.cli.main import main

__all__ = ["main"]
