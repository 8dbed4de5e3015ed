"""``dgm``: the command line, a thin argparse layer over the library (``dgm.cli.parser`` and one module per
command).

The error policy: user errors (bad data, bad flags, a missing or foreign checkpoint) print one line
``dgm: error: ...`` on stderr and exit with status 2, without a traceback and without touching existing
files; Ctrl-C exits with 130. Set ``DGM_DEBUG=1`` to see the traceback instead.
"""

from __future__ import annotations

import os
import sys

from dgm.cli.parser import build_parser

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``dgm``; returns the exit status."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as stop:  # --help (0) or a usage error (2), already printed
        return stop.code if isinstance(stop.code, int) else 2
    if args.command == "train":  # `accelerate launch --cpu --num_processes N` starts one process: start N
        from dgm.training.launch import relaunch

        if (workers := relaunch(sys.argv[1:] if argv is None else argv)) is not None:
            return workers
    if os.environ.get("DGM_DEBUG"):
        return args.handler(args)
    try:
        return args.handler(args)
    except KeyboardInterrupt:
        print("dgm: interrupted; the last checkpoint is saved (dgm train ... --resume continues)",
              file=sys.stderr)
        return 130
    except (ValueError, OSError, FloatingPointError) as err:  # CheckpointError is a ValueError
        message = " ".join(str(err).split()) or type(err).__name__
        print(f"dgm: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
