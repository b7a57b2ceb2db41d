"""argparse ``type=`` functions that range-check numbers while the command line is parsed.

Every numeric flag of every command goes through one of these, so that a value out of range is
argparse's one-line error and exit status 2 (``splat-train: error: argument -r/--resolution:
must be -1 or an integer >= 1, got 0``), never a traceback later on. NaN and infinity are
refused for every float flag.
"""

from __future__ import annotations

import argparse
import math
from typing import Callable

__all__ = ["int_range", "float_range", "resolution_value", "iteration_number"]


def _describe(low: float | None, high: float | None, kind: str, open_low: bool = False) -> str:
    if low is not None and high is not None:
        return f"{kind} between {low} and {high}" if not open_low else f"{kind} in ({low}, {high}]"
    if low is not None:
        return f"{kind} {'>' if open_low else '>='} {low}"
    if high is not None:
        return f"{kind} <= {high}"
    return kind


def int_range(low: int | None = None, high: int | None = None) -> Callable[[str], int]:
    """An integer in ``[low, high]`` (None: unbounded on that side)."""
    wanted = _describe(low, high, "an integer")

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {wanted}, got {text!r}") from None
        if (low is not None and value < low) or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"must be {wanted}, got {value}")
        return value

    parse.__name__ = "int"
    return parse


def float_range(low: float | None = None, high: float | None = None,
                open_low: bool = False) -> Callable[[str], float]:
    """A finite float in ``[low, high]`` (``open_low``: ``(low, high]``)."""
    wanted = _describe(low, high, "a number", open_low)

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {wanted}, got {text!r}") from None
        too_low = low is not None and (value <= low if open_low else value < low)
        if not math.isfinite(value) or too_low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"must be {wanted}, got {text}")
        return value

    parse.__name__ = "float"
    return parse


def resolution_value(text: str) -> int:
    """``-r``: -1 (cap the width at 1600 px), 1/2/4/8 (divisors) or a target width >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be -1 or an integer >= 1, got {text!r}") from None
    if value != -1 and value < 1:
        raise argparse.ArgumentTypeError(f"must be -1 (width capped at 1600 px), 1, 2, 4, 8 "
                                         f"(divisors) or a target width in pixels, got {value}")
    return value


resolution_value.__name__ = "int"

#: Iteration numbers in ``--test_iterations`` etc.: -1 is the usual "never" (no iteration has
#: that number); other negative numbers are refused as typos.
iteration_number = int_range(-1)
