"""Argument types and help shared by the commands of ``dgm``: numbers checked as they are parsed, so a bad
value is one line naming it (``dgm: error: dgm train: argument --steps: expected a positive integer, got
'many'``)."""

from __future__ import annotations

import argparse

__all__ = ["DEVICE_HELP", "nonneg_float", "nonneg_int", "number", "positive_float", "positive_int", "probability",
           "unit_float"]

DEVICE_HELP = "auto (CUDA when available, else CPU), cpu or cuda"


def number(convert, ok, rule: str):
    """An argparse type: ``convert(text)`` that must satisfy ``ok``, else an error quoting the text."""

    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            value = None
        if value is None or not ok(value):
            raise argparse.ArgumentTypeError(f"expected {rule}, got {text!r}")
        return value

    return parse


positive_int = number(int, lambda v: v >= 1, "a positive integer")
nonneg_int = number(int, lambda v: v >= 0, "an integer >= 0")
nonneg_float = number(float, lambda v: 0 <= v < float("inf"), "a number >= 0")
positive_float = number(float, lambda v: 0 < v < float("inf"), "a positive number")
unit_float = number(float, lambda v: 0 < v < 1, "a number in (0, 1)")
probability = number(float, lambda v: 0 <= v < 1, "a number in [0, 1)")
