"""argparse types for numeric options, shared by every ``jsqa-*`` command: a value out of
range is refused by the parser with one line that gives the range."""

from __future__ import annotations

import argparse
import math


def _range_text(low, high, low_open: bool = False) -> str:
    if high is None:
        return f"{'above' if low_open else 'at least'} {low:g}"
    if low is None:
        return f"at most {high:g}"
    return f"{'above ' if low_open else ''}{low:g} to {high:g}"


def whole_number(low: int | None = None, high: int | None = None):
    """A type for an integer option within ``[low, high]`` (either end may be open)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if (low is not None and value < low) or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"{value} is out of range: use {_range_text(low, high)}")
        return value

    return parse


def real_number(low: float | None = None, high: float | None = None, *, low_open: bool = False):
    """A type for a finite float option within ``[low, high]``, or ``(low, high]`` with ``low_open``."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        too_low = low is not None and (value <= low if low_open else value < low)
        if not math.isfinite(value) or too_low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"{text} is out of range: use {_range_text(low, high, low_open)}")
        return value

    return parse


positive_int = whole_number(1)
positive_float = real_number(0, low_open=True)
