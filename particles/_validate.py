"""Small validation helpers shared by every config dataclass.

Each raises ``ValueError`` naming the parameter and the allowed values, so bad input fails
at construction time, before any compute.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable


def check_choice(name: str, value, allowed: Iterable) -> None:
    allowed = tuple(allowed)
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not allowed; choose one of {allowed}")


def check_positive(name: str, value, *, allow_zero: bool = False, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value >= 0 if allow_zero else value > 0)
    if not ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name}={value!r} is not allowed; it must be a finite number {bound}")


def check_int(name: str, value, *, minimum: int = 1) -> int:
    """``value`` as a Python int; any integer type (numpy's included) is accepted, bools not."""
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name}={value!r} is not allowed; it must be an integer >= {minimum}")
    return int(value)


def normalise_int(obj, field: str, name: str, *, minimum: int = 1) -> None:
    """``check_int`` on a field of a frozen dataclass, stored back as a Python int (so that a
    numpy integer from an array of widths or seeds hashes, compares and serialises as one)."""
    object.__setattr__(obj, field, check_int(name, getattr(obj, field), minimum=minimum))


def check_finite(name: str, value) -> None:
    if not (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)):
        raise ValueError(f"{name}={value!r} is not allowed; it must be a finite number")
