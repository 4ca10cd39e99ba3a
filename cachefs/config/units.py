"""Sizes and durations: how a config spells bytes and seconds, both ways.

``parse_*`` read what an operator writes (``"512MiB"``, ``"1h30m"``);
``format_*`` write a value back so that ``parse_*`` reads exactly it.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal
from fractions import Fraction

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
TiB = 1024 * GiB
SECOND = 1.0
MINUTE = 60.0
HOUR = 3600.0
DAY = 86400.0


_SIZE_UNITS: dict[str, int] = {
    "": 1,
    "b": 1,
    "k": KiB,
    "kib": KiB,
    "kb": 1000,
    "m": MiB,
    "mib": MiB,
    "mb": 1000**2,
    "g": GiB,
    "gib": GiB,
    "gb": 1000**3,
    "t": TiB,
    "tib": TiB,
    "tb": 1000**4,
}
_SIZE_RE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*")
_SIZE_HINT = '(expected e.g. "512MiB", "5GiB", "4096")'


def parse_size(text: str | int) -> int:
    """Bytes from ``"512MiB"``, ``"100KB"`` (decimal), ``"1.5GiB"``, ``"4096"`` or an int.

    Units are case-insensitive; K/M/G/T alone are binary. Fractions of a unit
    round down to whole bytes. Raises ValueError on anything else.
    """
    if isinstance(text, bool) or not isinstance(text, int | str):
        raise ValueError(f"invalid size {text!r} {_SIZE_HINT}")
    if isinstance(text, int):
        if text < 0:
            raise ValueError(f"invalid size {text} (must not be negative)")
        return text
    m = _SIZE_RE.fullmatch(text)
    unit = m.group(2).lower() if m else ""
    if m is None or unit not in _SIZE_UNITS:
        raise ValueError(f"invalid size {text!r} {_SIZE_HINT}")
    amount = Fraction(m.group(1)) * _SIZE_UNITS[unit]
    if _SIZE_UNITS[unit] == 1 and amount.denominator != 1:
        raise ValueError(f"invalid size {text!r} (not a whole number of bytes)")
    return int(amount)


_SIZE_FORMATS = (
    ("TiB", TiB),
    ("GiB", GiB),
    ("MiB", MiB),
    ("KiB", KiB),
    ("TB", 1000**4),
    ("GB", 1000**3),
    ("MB", 1000**2),
    ("KB", 1000),
)


_BINARY_UNITS = (("KiB", KiB), ("MiB", MiB), ("GiB", GiB), ("TiB", TiB))


def format_size(n: int | float, *, exact: bool = True) -> str:
    """``n`` bytes in the units parse_size reads: the one way cachefs writes a size.

    ``exact`` (the default; config files, error messages): the shortest exact
    spelling, ``"512MiB"``, ``"100KB"``, ``"4097"``, which parse_size reads back as ``n``.
    ``exact=False`` (reports, log lines): binary units with one decimal when not
    whole, ``"512MiB"``, ``"1.5GiB"``, ``"117.7MiB"``, ``"512B"``; read back, it is
    within 5 % of ``n``. Both spell 1 to 1023 whole KiB, MiB, GiB or TiB alike.
    """
    if not n >= 0 or n == math.inf:  # also NaN
        raise ValueError(f"invalid size {n!r}")
    if exact:
        if n != int(n):
            raise ValueError(f"invalid size {n!r} (not a whole number of bytes)")
        whole = int(n)
        for unit, mult in _SIZE_FORMATS:
            if whole >= mult and whole % mult == 0:
                return f"{whole // mult}{unit}"
        return str(whole)
    if n < KiB:
        return f"{int(n)}B"
    # The largest binary unit not above n; the next one up when n rounds to 1024.0 of it.
    i = max(i for i, (_, mult) in enumerate(_BINARY_UNITS) if n >= mult)
    unit, mult = _BINARY_UNITS[i]
    if n % mult == 0:
        return f"{int(n) // mult}{unit}"
    tenths = round(n * 10 / mult)
    if tenths >= 10240 and i + 1 < len(_BINARY_UNITS):
        unit, mult = _BINARY_UNITS[i + 1]
        tenths = round(n * 10 / mult)
    return f"{tenths // 10}.{tenths % 10}{unit}"


_DURATION_UNITS: dict[str, Fraction] = {
    "us": Fraction(1, 1_000_000),
    "µs": Fraction(1, 1_000_000),
    "ms": Fraction(1, 1000),
    "s": Fraction(1),
    "m": Fraction(60),
    "h": Fraction(3600),
    "d": Fraction(86400),
    "w": Fraction(604800),
}
_DURATION_NUMBER = re.compile(r"\s*(\d+(?:\.\d+)?)\s*")
_DURATION_PART = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(us|µs|ms|s|m|h|d|w)(?![a-z])", re.IGNORECASE)
_DURATION_HINT = '(expected e.g. "30s", "5m", "1h30m", "7d", "250ms", "50us")'


def parse_duration(text: str | int | float) -> float:
    """Seconds from ``"1h30m"``, ``"250ms"``, ``"7d"``, ``"1w"``, ``"300"`` or a number.

    Units: us (or µs), ms, s, m, h, d, w (case-insensitive); parts add up. Raises ValueError
    on anything else, including negative or non-finite numbers.
    """
    if isinstance(text, bool) or not isinstance(text, int | float | str):
        raise ValueError(f"invalid duration {text!r} {_DURATION_HINT}")
    if not isinstance(text, str):
        if not math.isfinite(text) or text < 0:
            raise ValueError(f"invalid duration {text!r} (must be a finite number >= 0)")
        return float(text)
    if m := _DURATION_NUMBER.fullmatch(text):
        return float(Fraction(m.group(1)))
    total, pos = Fraction(0), 0
    while pos < len(text) and not text[pos:].isspace():
        part = _DURATION_PART.match(text, pos)
        if part is None:
            raise ValueError(f"invalid duration {text!r} {_DURATION_HINT}")
        total += Fraction(part.group(1)) * _DURATION_UNITS[part.group(2).lower()]
        pos = part.end()
    if pos == 0:
        raise ValueError(f"invalid duration {text!r} {_DURATION_HINT}")
    return float(total)  # summed exactly, rounded once: "1h30m" == 5400.0


_DURATION_FORMATS = (
    ("d", 86400_000_000),
    ("h", 3600_000_000),
    ("m", 60_000_000),
    ("s", 1_000_000),
    ("ms", 1000),
    ("us", 1),
)


def format_duration(seconds: float) -> str:
    """A readable spelling (``"1h30m"``, ``"50us"``) that parse_duration reads back exactly."""
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"invalid duration {seconds!r}")
    us = round(Fraction(seconds) * 1_000_000)
    if float(Fraction(us, 1_000_000)) != seconds:
        # Not a whole number of microseconds: plain seconds, shortest exact digits.
        return f"{Decimal(repr(float(seconds))):f}s"
    if us == 0:
        return "0s"
    parts = []
    for unit, mult in _DURATION_FORMATS:
        count, us = divmod(us, mult)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)
