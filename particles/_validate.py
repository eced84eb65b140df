"""Small validation helpers shared by every config dataclass.

Each raises ``ValueError`` naming the parameter and the allowed values, so bad input fails
at construction time, before any compute.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import numbers
from collections.abc import Iterable

INT32_MAX = 2**31 - 1  # step counters and particle indices of the compiled program are int32
SEED_MAX = 2**63 - 1  # jax.random.key converts the seed to a C long


def closest(name: str, allowed: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the allowed name closest to a mistyped one, else ``""``."""
    match = difflib.get_close_matches(str(name), [str(a) for a in allowed], n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""


def check_choice(name: str, value, allowed: Iterable) -> None:
    allowed = tuple(allowed)
    try:
        ok = bool(value in allowed)
    except (TypeError, ValueError):  # array-valued: not a choice
        ok = False
    if ok and any(isinstance(a, bool) for a in allowed):  # 1 == True, but 1 is no flag
        ok = isinstance(value, bool) or type(value).__name__ == "bool_"
    if not ok:
        hint = closest(value, [a for a in allowed if isinstance(a, str)]) if isinstance(
            value, str) else ""
        raise ValueError(f"{name}={value!r} is not allowed; choose one of {allowed}{hint}")


def check_positive(name: str, value, *, allow_zero: bool = False, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value >= 0 if allow_zero else value > 0)
    if not ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name}={value!r} is not allowed; it must be a finite number {bound}")


def check_tolerance(name: str, value) -> None:
    """Raise unless ``value`` is a relative tolerance: a number in (0, 1)."""
    check_positive(name, value)
    if not value < 1:
        raise ValueError(f"{name}={value!r} is not allowed; it must be a relative tolerance in "
                         "(0, 1)")


def check_bool(name: str, value, *, allow_none: bool = False) -> None:
    """Raise unless ``value`` is a bool, or None with ``allow_none`` (1 and "yes" are refused)."""
    if value is None and allow_none:
        return
    if not isinstance(value, bool):
        allowed = "(None, True, False)" if allow_none else "(True, False)"
        raise ValueError(f"{name}={value!r} is not allowed; choose one of {allowed}")


def check_int(name: str, value, *, minimum: int = 1, maximum: int = INT32_MAX) -> int:
    """``value`` as a Python int; any integer type (numpy's included) is accepted, bools not.
    ``maximum`` defaults to what an int32 of the compiled program holds."""
    if (not isinstance(value, numbers.Integral) or isinstance(value, bool)
            or not minimum <= value <= maximum):
        raise ValueError(f"{name}={value!r} is not allowed; it must be an integer >= "
                         f"{minimum} and <= {maximum}")
    return int(value)


def normalise_int(obj, field: str, name: str, *, minimum: int = 1,
                  maximum: int = INT32_MAX) -> None:
    """``check_int`` on a field of a frozen dataclass, stored back as a Python int (so that a
    numpy integer from an array of widths or seeds hashes, compares and serialises as one)."""
    object.__setattr__(obj, field, check_int(name, getattr(obj, field), minimum=minimum,
                                             maximum=maximum))


def check_times(name: str, t, *, allow_inf: bool = False):
    """``t`` as a float array (k,) of strictly increasing times >= 0, finite unless
    ``allow_inf`` (a last time +inf: the converged state), or None for None."""
    if t is None:
        return None
    import numpy as np

    try:
        times = np.atleast_1d(np.asarray(t, float))
    except (TypeError, ValueError):
        times = None
    if (times is None or times.ndim != 1 or times.size == 0 or np.any(np.isnan(times))
            or np.any(times < 0)
            or np.any(np.isinf(times[:-1])) or (not allow_inf and np.isinf(times[-1]))
            or np.any(np.diff(times[np.isfinite(times)]) <= 0)):
        text = repr(t) if len(repr(t)) < 60 else repr(t)[:57] + "..."
        kind = "times >= 0 (the last may be inf)" if allow_inf else "finite times >= 0"
        raise ValueError(f"{name}={text} is not allowed; it must be one or more strictly "
                         f"increasing {kind}")
    return times


def check_finite(name: str, value) -> None:
    if not (isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)):
        raise ValueError(f"{name}={value!r} is not allowed; it must be a finite number")


def named_arguments(cls):
    """Class decorator over a keyword-only dataclass: a mistyped or positional argument is a
    ``TypeError`` naming it, the closest field and every field, instead of Python's bare
    "unexpected keyword argument"."""
    init = cls.__init__
    fields = tuple(f.name for f in dataclasses.fields(cls) if f.init)

    @functools.wraps(init)
    def __init__(self, *args, **kwargs):
        known = f"its arguments: {', '.join(fields)}" if fields else "it takes none"
        if args:
            example = f", e.g. {cls.__name__}({fields[0]}=...)" if fields else ""
            raise TypeError(f"{cls.__name__}() takes keyword arguments only{example}; {known}")
        for key in kwargs:
            if key not in fields:
                raise TypeError(f"{cls.__name__}() has no argument {key!r}"
                                f"{closest(key, fields)}; {known}")
        init(self, **kwargs)

    cls.__init__ = __init__
    return cls
