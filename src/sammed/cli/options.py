"""argparse ``type=`` functions that reject bad values while the command line is parsed.

A NaN learning rate, a negative worker count or a probability of 5 must stop the command
before anything is read, built or written (argparse prints one usage line and exits 2),
not surface as a traceback minutes later or, worse, train to NaN weights with exit 0.
"""

from __future__ import annotations

import argparse
import math
from typing import Callable


def _number(text: str, kind: type) -> float | int:
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, got {text!r}") from None
    if kind is float and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def bounded(
    kind: type, low: float | None = None, high: float | None = None, *, low_open: bool = False
) -> Callable[[str], float | int]:
    """A parser for ``kind`` (int or float) within [low, high] (``low_open``: low excluded)."""

    def parse(text: str) -> float | int:
        value = _number(text, kind)
        if low is not None and high is not None and not low_open and not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be between {low:g} and {high:g}, got {text!r}")
        if low is not None and (value < low or (low_open and value == low)):
            raise argparse.ArgumentTypeError(f"must be {'>' if low_open else '>='} {low:g}, got {text!r}")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"must be <= {high:g}, got {text!r}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


positive_int = bounded(int, 1)
non_negative_int = bounded(int, 0)
positive_float = bounded(float, 0, low_open=True)
non_negative_float = bounded(float, 0)
probability = bounded(float, 0, 1)
size_exponent = bounded(float, 0, 2)
bias_coefficient = bounded(float, 0, 1)
port_number = bounded(int, 1, 65535)


def scale_range(text: str) -> tuple[float, float]:
    """``"0.7,1.5"`` -> (0.7, 1.5): two finite numbers with 0 < low <= high <= 4."""
    parts = text.split(",")
    if len(parts) != 2:
        raise argparse.ArgumentTypeError(f"expected LOW,HIGH, got {text!r}")
    low, high = (float(_number(part.strip(), float)) for part in parts)
    if not 0 < low <= high <= 4:
        raise argparse.ArgumentTypeError(f"expected 0 < LOW <= HIGH <= 4, got {text!r}")
    return low, high


def pattern_list(text: str) -> tuple[str, ...]:
    """``"*__svfine,*__svcoarse"`` -> two shell patterns; none empty (split always gives one)."""
    values = tuple(v.strip() for v in text.split(","))
    if any(not v for v in values):
        raise argparse.ArgumentTypeError(f"expected comma-separated patterns, got {text!r}")
    return values


def case_weight_list(text: str) -> tuple[tuple[str, float], ...]:
    """``"tsct=3,ch2*=0.5"`` -> (("tsct", 3.0), ("ch2*", 0.5)): shell patterns of case ids, each
    with a finite weight 0 < W <= 100."""
    pairs = []
    for part in text.split(","):
        pattern, sep, weight = part.strip().rpartition("=")
        if not sep or not pattern.strip():
            raise argparse.ArgumentTypeError(f"expected PATTERN=W[,PATTERN=W], got {text!r}")
        value = float(_number(weight.strip(), float))
        if not 0 < value <= 100:
            raise argparse.ArgumentTypeError(f"expected a weight 0 < W <= 100, got {weight.strip()!r}")
        pairs.append((pattern.strip(), value))
    return tuple(pairs)


def int_list(text: str) -> tuple[int, ...]:
    """``"120,180"`` -> (120, 180); at least one value."""
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError(f"expected at least one integer, got {text!r}")
    return values
