"""One validator for constructor options: each check raises a ``ValueError`` that names the option,
what is allowed and what was given, and returns the value so a constructor can write
``self.chunk_size = check_int("chunk_size", chunk_size, min=1, owner="s5")``."""

from __future__ import annotations

import math
from typing import Any, Callable, Iterable


def _who(owner: str | None) -> str:
    return f"{owner}: " if owner else ""


def check_int(
    name: str, value: Any, *, min: int | None = None, max: int | None = None, owner: str | None = None
) -> int:
    """An ``int`` (not a bool) within ``[min, max]`` (either bound may be omitted)."""
    ok = isinstance(value, int) and not isinstance(value, bool)
    if ok and min is not None and value < min:
        ok = False
    if ok and max is not None and value > max:
        ok = False
    if not ok:
        if min == 1 and max is None:
            want = "a positive int"
        elif min == 0 and max is None:
            want = "a non-negative int"
        else:
            want = "an int" + (f" >= {min}" if min is not None else "") + (f" <= {max}" if max is not None else "")
        raise ValueError(f"{_who(owner)}{name} must be {want}, got {value!r}")
    return value


def check_number(
    name: str,
    value: Any,
    *,
    min: float | None = None,
    max: float | None = None,
    min_open: bool = False,
    max_open: bool = False,
    owner: str | None = None,
) -> float:
    """A finite real number within the bounds (``min_open``/``max_open``: strict inequality)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok and min is not None and (value <= min if min_open else value < min):
        ok = False
    if ok and max is not None and (value >= max if max_open else value > max):
        ok = False
    if not ok:
        lo = "" if min is None else f"{'>' if min_open else '>='} {min}"
        hi = "" if max is None else f"{'<' if max_open else '<='} {max}"
        want = " and ".join(p for p in (lo, hi) if p)
        if min == 0 and min_open and max is None:
            want = "> 0 (a positive number)"
        raise ValueError(f"{_who(owner)}{name} must be a finite number{' ' + want if want else ''}, got {value!r}")
    return value


def check_probability(name: str, value: Any, *, owner: str | None = None) -> float:
    """A probability in ``[0, 1)`` (dropout rates: 1 would drop everything)."""
    return check_number(name, value, min=0.0, max=1.0, max_open=True, owner=owner)


def check_choice(name: str, value: Any, choices: Iterable[Any], *, owner: str | None = None) -> Any:
    """One of ``choices``."""
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"{_who(owner)}{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")
    return value


def check_bool(name: str, value: Any, *, owner: str | None = None) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{_who(owner)}{name} must be True or False, got {value!r}")
    return value


def check_optional(check: Callable[..., Any], name: str, value: Any, *args, **kwargs) -> Any:
    """``None``, or a value that passes ``check``: ``check_optional(check_int, "rank", rank, min=1)``."""
    if value is None:
        return None
    try:
        return check(name, value, *args, **kwargs)
    except ValueError as e:
        raise ValueError(f"{e} (or None)") from None
