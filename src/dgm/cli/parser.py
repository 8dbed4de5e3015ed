"""The ``dgm`` parser: ``build_parser()`` assembles the subcommands, one module each (``dgm.cli.train``,
``sample``, ``inpaint``, ``evaluate``, ``report``, ``demo``, ``verify``); each registers its ``run(args) -> int`` as
``args.handler``."""

from __future__ import annotations

import argparse

__all__ = ["build_parser"]


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line ``dgm: error: ...`` (exit status 2)."""

    def error(self, message: str):
        self.exit(2, f"dgm: error: {self.prog}: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    """The ``dgm`` parser with its subcommands."""
    from dgm.cli import demo, evaluate, inpaint, report, sample, train, verify

    parser = _Parser(prog="dgm", description="Deep generative models, from VAEs to DDPMs.",
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser, metavar="COMMAND")
    for command in (train, sample, inpaint, evaluate, report, demo, verify):
        command.add_parser(sub)
    return parser
