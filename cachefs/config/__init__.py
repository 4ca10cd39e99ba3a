"""Configuration: a TOML file plus ``-o`` overrides, validated into frozen dataclasses.

Every value is checked once, here, so the rest of cachefs can trust its config.
A bad value is reported as ``FILE:LINE: dotted.key: problem`` (or ``-o key=value:``
for an override), because an operator fixing an fstab mount has nothing else to go on.
tomllib does not report positions, so a small scanner (``_LineIndexer``) maps each
key path to the line it was written on.
"""

from __future__ import annotations

import contextlib
import difflib
import math
import os
import re
import tomllib
from bisect import bisect_right
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any, TypeAlias, TypeVar

__all__ = [
    "CONTENT_TYPES",
    "EVICTION_POLICIES",
    "STATS_BACKENDS",
    "TIER_NAMES",
    "WATCH_MODES",
    "Config",
    "ConfigError",
    "ContentTypeConfig",
    "FrozenMap",
    "MetadataConfig",
    "MonitoringConfig",
    "MountConfig",
    "OriginConfig",
    "PredictionConfig",
    "Rule",
    "StatsConfig",
    "TierConfig",
    "config_to_toml",
    "default_config",
    "format_duration",
    "format_size",
    "load_config",
    "parse_duration",
    "parse_size",
]

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
TiB = 1024 * GiB
SECOND = 1.0
MINUTE = 60.0
HOUR = 3600.0
DAY = 86400.0

TIER_NAMES = ("ram", "ssd", "hdd")  # fastest first
CONTENT_TYPES = ("media", "metadata", "thumbnail", "config", "user_data")
EVICTION_POLICIES = ("lru", "lfu", "weight")
STATS_BACKENDS = ("auto", "redis", "embedded")
REDIS_URL_SCHEMES = ("redis://", "rediss://", "unix://")
# How changes made directly on the origin are noticed: auto = inotify on a local
# file system, poll on a network/FUSE one (whose remote changes raise no events).
WATCH_MODES = ("auto", "inotify", "poll", "off")

MIN_CHUNK_SIZE = 4 * KiB
MAX_CHUNK_SIZE = 64 * MiB
CHUNK_ALIGN = 4096  # page size: chunks map onto whole kernel pages


class ConfigError(Exception):
    """A configuration problem the operator must fix; the CLI exits with ``exit_code``."""

    exit_code = 2

    def __init__(self, message: str, *, key: str | None = None, where: str | None = None):
        super().__init__(message)
        self.key = key  # dotted key, when the problem belongs to one
        self.where = where  # "file:line" or "-o key=value"


# --------------------------------------------------------------------------- sizes, durations

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


def format_size(n: int) -> str:
    """The shortest exact spelling of ``n`` bytes that parse_size reads back."""
    if n < 0:
        raise ValueError(f"negative size {n}")
    for unit, mult in _SIZE_FORMATS:
        if n >= mult and n % mult == 0:
            return f"{n // mult}{unit}"
    return str(n)


def human_size(n: float) -> str:
    """``n`` bytes for people: "512 B", "1.5 MiB" (rounded; format_size is exact)."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024:
            return f"{int(n)} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


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


# --------------------------------------------------------------------------- dataclasses

K = TypeVar("K")
V = TypeVar("V")


class FrozenMap(Mapping[K, V]):
    """A read-only, hashable dict, so a Config is immutable all the way down."""

    __slots__ = ("_data",)

    def __init__(self, data: Mapping[K, V] | Iterable[tuple[K, V]] = ()) -> None:
        self._data: dict[K, V] = dict(data)

    def __getitem__(self, key: K) -> V:
        return self._data[key]

    def __iter__(self) -> Iterator[K]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __hash__(self) -> int:
        return hash(frozenset(self._data.items()))

    def __repr__(self) -> str:
        return f"FrozenMap({self._data!r})"


@dataclass(frozen=True)
class TierConfig:
    name: str
    path: Path | None  # None for ram
    max_size: int  # bytes
    eviction: str  # one of EVICTION_POLICIES
    ttl: float  # seconds
    min_free: int  # bytes to leave free on the tier's filesystem
    # RAM tier: new chunks wait in a probation segment until read again, so a
    # library scan cannot flush the hot set. Disk tiers rank by lfu / weight.
    scan_resistant: bool = False


@dataclass(frozen=True)
class ContentTypeConfig:
    name: str
    default_tier: str  # one of TIER_NAMES
    compression: bool
    compression_level: int  # zstd level
    chunk_size: int  # bytes, a multiple of 4096
    prefetch_threshold: float  # 0..1


@dataclass(frozen=True)
class Rule:
    glob: str  # matched against the path relative to the origin root
    type: str  # one of CONTENT_TYPES


@dataclass(frozen=True)
class PredictionConfig:
    window_size: int  # accesses remembered
    min_confidence: float  # 0..1
    max_prefetch_size: int  # bytes


@dataclass(frozen=True)
class MonitoringConfig:
    stats_interval: float  # seconds
    cleanup_interval: float  # seconds
    max_stats_age: float  # seconds


@dataclass(frozen=True)
class StatsConfig:
    backend: str  # one of STATS_BACKENDS
    redis_url: str
    redis_password_file: str = ""  # a file holding the Redis password; "" = none


@dataclass(frozen=True)
class MountConfig:
    attr_timeout: float  # seconds
    entry_timeout: float  # seconds
    max_threads: int
    read_ahead: int  # bytes; the kernel's read-ahead for the mount, 0 = kernel default
    busy_poll: float  # seconds the FUSE reader polls for the next request before sleeping; 0 = off
    # The kernel buffers writes and sends them at writeback, fsync and close:
    # write() returns before the origin has the bytes (docs/configuration.md).
    writeback_cache: bool = False


@dataclass(frozen=True)
class MetadataConfig:
    # seconds; attributes/listings confirmed this recently are served from the
    # cache; 0 = always ask the origin
    revalidate_after: float
    watch: str  # one of WATCH_MODES
    poll_window: float  # seconds; directories read within this window are polled for changes
    poll_interval: float  # seconds; a polled directory is re-listed at least this often
    poll_budget: int  # directory re-listings per second the poller may spend (I/O budget), >= 1
    max_entries: int  # attributes kept in memory and in the store (bounded), >= 1000
    persist: bool  # keep the metadata store (SQLite, WAL) in the SSD tier directory


@dataclass(frozen=True)
class OriginConfig:
    timeout: float  # seconds; an origin operation slower than this marks the origin offline
    probe_interval: float  # seconds between checks of an offline origin


@dataclass(frozen=True)
class Config:
    tiers: Mapping[str, TierConfig]  # always all of TIER_NAMES
    content_types: Mapping[str, ContentTypeConfig]  # always all of CONTENT_TYPES
    rules: tuple[Rule, ...]
    prediction: PredictionConfig
    monitoring: MonitoringConfig
    stats: StatsConfig
    mount: MountConfig
    metadata: MetadataConfig
    origin: OriginConfig
    # Where it came from is not part of its value: a round-trip through TOML is equal.
    source: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        # Callers may pass plain dicts/lists; freeze them so the whole Config is immutable.
        object.__setattr__(self, "tiers", FrozenMap(self.tiers))
        object.__setattr__(self, "content_types", FrozenMap(self.content_types))
        object.__setattr__(self, "rules", tuple(self.rules))


def default_config() -> Config:
    """The built-in defaults (DESIGN.md, with the sane chunk-size minimums)."""
    return Config(
        tiers={
            "ram": TierConfig("ram", None, 512 * MiB, "lru", HOUR, 0, scan_resistant=True),
            "ssd": TierConfig("ssd", Path("/var/cache/cachefs/ssd"), 5 * GiB, "lfu", DAY, GiB),
            "hdd": TierConfig(
                "hdd", Path("/var/cache/cachefs/hdd"), 50 * GiB, "weight", 7 * DAY, GiB
            ),
        },
        content_types={
            "media": ContentTypeConfig("media", "hdd", True, 3, MiB, 0.7),
            "metadata": ContentTypeConfig("metadata", "ram", True, 3, 64 * KiB, 0.8),
            "thumbnail": ContentTypeConfig("thumbnail", "ssd", True, 3, 128 * KiB, 0.6),
            "config": ContentTypeConfig("config", "ram", False, 3, 64 * KiB, 0.9),
            "user_data": ContentTypeConfig("user_data", "ssd", True, 3, 512 * KiB, 0.75),
        },
        rules=(),
        prediction=PredictionConfig(100, 0.6, 100 * MiB),
        monitoring=MonitoringConfig(5 * MINUTE, HOUR, DAY),
        stats=StatsConfig("auto", "redis://localhost:6379/11"),
        mount=MountConfig(1.0, 1.0, 16, MiB, 50e-6, False),
        metadata=MetadataConfig(1.0, "auto", 10 * MINUTE, 5.0, 20, 500_000, True),
        origin=OriginConfig(5.0, 2.0),
        source=None,
    )


# --------------------------------------------------------------------------- schema

KeyPath: TypeAlias = tuple[str | int, ...]
Check: TypeAlias = Callable[[Any], str | None]  # returns a problem, or None if fine


class _Invalid(Exception):
    """A value problem, before we know where the value was written."""


def _no_check(value: Any) -> str | None:
    return None


@dataclass(frozen=True)
class _Field:
    kind: str  # size, duration, int, float, bool, str, path, rules
    check: Check = _no_check
    choices: tuple[str, ...] = ()
    what: str = "value"  # noun for "invalid <what> 'x' (expected one of ...)"


_Node: TypeAlias = "Mapping[str, _Node] | _Field"


def _check_positive_size(v: int) -> str | None:
    return None if v > 0 else "must be greater than 0"


def _duration_at_least(low: float) -> Check:
    def check(v: float) -> str | None:
        if v >= low:
            return None
        return f"must be at least {format_duration(low)}, got {format_duration(v)}"

    return check


def _duration_at_most(high: float) -> Check:
    def check(v: float) -> str | None:
        if v <= high:
            return None
        return f"must be at most {format_duration(high)}, got {format_duration(v)}"

    return check


def _between(low: float, high: float) -> Check:
    def check(v: float) -> str | None:
        return None if low <= v <= high else f"must be between {low} and {high}, got {v}"

    return check


def _int_at_least(low: int) -> Check:
    def check(v: int) -> str | None:
        return None if v >= low else f"must be at least {low}, got {v}"

    return check


def _check_chunk_size(v: int) -> str | None:
    if not MIN_CHUNK_SIZE <= v <= MAX_CHUNK_SIZE:
        return f"must be between 4KiB and 64MiB, got {format_size(v)}"
    if v % CHUNK_ALIGN:
        return f"must be a multiple of 4096 bytes, got {v}"
    return None


def _check_redis_url(v: str) -> str | None:
    if v.startswith(REDIS_URL_SCHEMES):
        return None
    return f"invalid Redis URL {v!r} (must start with redis://, rediss:// or unix://)"


def _check_positive_duration(v: float) -> str | None:
    return None if v > 0 else "must be greater than 0"


_TIER_FIELDS: dict[str, _Node] = {
    "max_size": _Field("size", _check_positive_size),
    "eviction": _Field("str", choices=EVICTION_POLICIES, what="eviction policy"),
    "ttl": _Field("duration", _check_positive_duration),
    "min_free": _Field("size"),
}
_DISK_TIER_FIELDS: dict[str, _Node] = {"path": _Field("path"), **_TIER_FIELDS}
_RAM_TIER_FIELDS: dict[str, _Node] = {
    **_TIER_FIELDS,
    # the RAM tier is an LRU (segmented when scan_resistant); the others rank on disk
    "eviction": _Field("str", choices=("lru",), what="RAM tier eviction policy"),
    "scan_resistant": _Field("bool"),
}
_CONTENT_TYPE_FIELDS: dict[str, _Node] = {
    "default_tier": _Field("str", choices=TIER_NAMES, what="tier name"),
    "compression": _Field("bool"),
    "compression_level": _Field("int", _between(1, 22)),  # zstd's regular levels
    "chunk_size": _Field("size", _check_chunk_size),
    "prefetch_threshold": _Field("float", _between(0.0, 1.0)),
}

# Key order here is the order config_to_toml writes.
_SCHEMA: dict[str, _Node] = {
    "tiers": {"ram": _RAM_TIER_FIELDS, "ssd": _DISK_TIER_FIELDS, "hdd": _DISK_TIER_FIELDS},
    "content_types": {name: _CONTENT_TYPE_FIELDS for name in CONTENT_TYPES},
    "rules": _Field("rules"),
    "prediction": {
        "window_size": _Field("int", _between(1, 1_000_000)),
        "min_confidence": _Field("float", _between(0.0, 1.0)),
        "max_prefetch_size": _Field("size"),
    },
    "monitoring": {
        "stats_interval": _Field("duration", _duration_at_least(SECOND)),
        "cleanup_interval": _Field("duration", _duration_at_least(SECOND)),
        "max_stats_age": _Field("duration", _check_positive_duration),
    },
    "stats": {
        "backend": _Field("str", choices=STATS_BACKENDS, what="stats backend"),
        "redis_url": _Field("str", _check_redis_url),
        "redis_password_file": _Field("str"),
    },
    "mount": {
        "attr_timeout": _Field("duration"),
        "entry_timeout": _Field("duration"),
        "max_threads": _Field("int", _between(1, 1024)),
        "read_ahead": _Field("size"),
        "busy_poll": _Field("duration", _duration_at_most(0.01)),
        "writeback_cache": _Field("bool"),
    },
    "metadata": {
        "revalidate_after": _Field("duration"),  # 0 allowed: always ask the origin
        "watch": _Field("str", choices=WATCH_MODES, what="watch mode"),
        "poll_window": _Field("duration", _check_positive_duration),  # watch = "off" stops polling
        "poll_interval": _Field("duration", _check_positive_duration),
        "poll_budget": _Field("int", _int_at_least(1)),
        "max_entries": _Field("int", _int_at_least(1000)),
        "persist": _Field("bool"),
    },
    "origin": {
        "timeout": _Field("duration", _check_positive_duration),
        "probe_interval": _Field("duration", _check_positive_duration),
    },
}
_TABLE_NOUNS: dict[KeyPath, str] = {("tiers",): "tier", ("content_types",): "content type"}
_RULE_KEYS = ("glob", "type")


def _leaves(node: _Node = _SCHEMA, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Every settable key path except rules, in schema order."""
    if isinstance(node, _Field):
        if node.kind != "rules":
            yield prefix
        return
    for key, child in node.items():
        yield from _leaves(child, (*prefix, key))


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _dotted(path: KeyPath) -> str:
    """``("rules", 0, "glob")`` -> ``rules[0].glob``; odd keys quoted as TOML would."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            key = part if _BARE_KEY.fullmatch(part) else _toml_string(part)
            out += f".{key}" if out else key
    return out


# --------------------------------------------------------------------------- value coercion


def _describe(value: Any) -> str:
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, int):
        return f"integer {value}"
    if isinstance(value, float):
        return f"float {value!r}"
    if isinstance(value, str):
        return f"string {value!r}"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return f"{type(value).__name__} {value}"


_TRUE = frozenset({"true", "yes", "1", "on"})
_FALSE = frozenset({"false", "no", "0", "off"})


def _to_size(value: Any, from_text: bool, base_dir: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise _Invalid(f'expected a size such as "512MiB" or a byte count, got {_describe(value)}')
    try:
        return parse_size(value)
    except ValueError as e:
        raise _Invalid(str(e)) from None


def _to_duration(value: Any, from_text: bool, base_dir: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise _Invalid(f'expected a duration such as "5m" or seconds, got {_describe(value)}')
    try:
        return parse_duration(value)
    except ValueError as e:
        raise _Invalid(str(e)) from None


def _to_int(value: Any, from_text: bool, base_dir: str) -> int:
    if from_text:
        try:
            return int(value.strip())
        except ValueError:
            raise _Invalid(f"invalid integer {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Invalid(f"expected an integer, got {_describe(value)}")
    return value


def _to_float(value: Any, from_text: bool, base_dir: str) -> float:
    if from_text:
        try:
            value = float(value)
        except ValueError:
            raise _Invalid(f"invalid number {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Invalid(f"expected a number, got {_describe(value)}")
    if not math.isfinite(value):
        raise _Invalid(f"expected a finite number, got {value}")
    return float(value)


def _to_bool(value: Any, from_text: bool, base_dir: str) -> bool:
    if from_text:
        word = value.strip().lower()
        if word in _TRUE or word in _FALSE:
            return word in _TRUE
        raise _Invalid(f"invalid boolean {value!r} (expected true/false, yes/no, on/off, 1/0)")
    if not isinstance(value, bool):
        raise _Invalid(f"expected true or false, got {_describe(value)}")
    return value


def _to_str(value: Any, from_text: bool, base_dir: str) -> str:
    if not isinstance(value, str):
        raise _Invalid(f"expected a string, got {_describe(value)}")
    return value


def _to_path(value: Any, from_text: bool, base_dir: str) -> Path:
    if not isinstance(value, str):
        raise _Invalid(f"expected a directory path string, got {_describe(value)}")
    if not value.strip():
        raise _Invalid("expected a directory path, got an empty string")
    # A relative path means "next to the config file" (or the cwd, for -o).
    return Path(os.path.abspath(os.path.join(base_dir, os.path.expanduser(value))))


_CONVERTERS: dict[str, Callable[[Any, bool, str], Any]] = {
    "size": _to_size,
    "duration": _to_duration,
    "int": _to_int,
    "float": _to_float,
    "bool": _to_bool,
    "str": _to_str,
    "path": _to_path,
}


def _coerce(spec: _Field, value: Any, *, from_text: bool, base_dir: str) -> Any:
    """Convert and validate one value; raises _Invalid with the problem."""
    result = _CONVERTERS[spec.kind](value, from_text, base_dir)
    if spec.choices and result not in spec.choices:
        raise _Invalid(
            f"invalid {spec.what} {result!r} (expected one of: {', '.join(spec.choices)})"
        )
    problem = spec.check(result)
    if problem:
        raise _Invalid(problem)
    return result


def _unknown_key(path: KeyPath, table: Mapping[str, Any]) -> str:
    key = str(path[-1])
    if path == ("tiers", "ram", "path"):
        return "the ram tier lives in memory and takes no path"
    noun = _TABLE_NOUNS.get(path[:-1], "key")
    known = list(table)
    close = difflib.get_close_matches(key, known, n=1)
    hint = f"did you mean {close[0]!r}?" if close else f"expected one of: {', '.join(known)}"
    return f"unknown {noun} {key!r} ({hint})"


# --------------------------------------------------------------------------- line index


class _ScanError(Exception):
    pass


_WS_CHARS = " \t"
_ML_BASIC_STR = re.compile(r'"""(?:[^"\\]|\\.|"{1,2}(?!"))*"{0,2}"""', re.DOTALL)
_ML_LITERAL_STR = re.compile(r"'''(?:[^']|'{1,2}(?!'))*'{0,2}'''", re.DOTALL)
_BASIC_STR = re.compile(r'"(?:[^"\\\n]|\\.)*"')
_LITERAL_STR = re.compile(r"'[^'\n]*'")
_SCALAR = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:[Zz]|[+-]\d{2}:\d{2})?"
    r"|[^,\]\}\s#]+"
)
_VALUE_PATTERNS = (_ML_BASIC_STR, _ML_LITERAL_STR, _BASIC_STR, _LITERAL_STR, _SCALAR)


class _LineIndexer:
    """Maps key paths to the line they are written on, for error messages.

    Runs only on text tomllib has accepted, so it can assume valid TOML; it
    understands headers, ``[[arrays]]`` (with their index), dotted keys, inline
    tables and arrays, and skips strings and comments so they cannot mislead it.
    """

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.line_starts = [0] + [m.end() for m in re.finditer("\n", text)]
        self.lines: dict[KeyPath, int] = {}
        self.array_counts: dict[KeyPath, int] = {}

    def build(self) -> dict[KeyPath, int]:
        # On a surprise keep what we have; lookups fall back to the enclosing table.
        with contextlib.suppress(_ScanError):
            self._document()
        return self.lines

    def _record(self, path: KeyPath, pos: int) -> None:
        line = bisect_right(self.line_starts, pos)
        for i in range(1, len(path) + 1):
            self.lines.setdefault(path[:i], line)

    def _peek(self) -> str:
        return self.text[self.pos : self.pos + 1]

    def _skip(self, newlines: bool) -> None:
        text = self.text
        while self.pos < len(text):
            c = text[self.pos]
            if c in _WS_CHARS or (newlines and c in "\r\n"):
                self.pos += 1
            elif c == "#":
                end = text.find("\n", self.pos)
                self.pos = len(text) if end < 0 else end
            else:
                return

    def _expect(self, token: str) -> None:
        self._skip(newlines=False)
        if not self.text.startswith(token, self.pos):
            raise _ScanError(token)
        self.pos += len(token)

    def _resolve(self, keys: list[str]) -> KeyPath:
        """A header's keys -> path, stepping into the latest element of each [[array]]."""
        path: KeyPath = ()
        for key in keys:
            path = (*path, key)
            if path in self.array_counts:
                path = (*path, self.array_counts[path])
        return path

    def _document(self) -> None:
        table: KeyPath = ()
        while True:
            self._skip(newlines=True)
            if self.pos >= len(self.text):
                return
            start = self.pos
            if self.text.startswith("[[", self.pos):
                self.pos += 2
                keys = self._key()
                self._expect("]]")
                base = (*self._resolve(keys[:-1]), keys[-1])
                self.array_counts[base] = self.array_counts.get(base, -1) + 1
                table = (*base, self.array_counts[base])
                self._record(table, start)
            elif self._peek() == "[":
                self.pos += 1
                keys = self._key()
                self._expect("]")
                table = self._resolve(keys)
                self._record(table, start)
            else:
                self._key_value(table)

    def _key_value(self, table: KeyPath) -> None:
        start = self.pos
        path = (*table, *self._key())
        self._expect("=")
        self._record(path, start)
        self._value(path)

    def _key(self) -> list[str]:
        keys = []
        while True:
            self._skip(newlines=False)
            keys.append(self._simple_key())
            self._skip(newlines=False)
            if self._peek() != ".":
                return keys
            self.pos += 1

    def _simple_key(self) -> str:
        for pattern in (_BASIC_STR, _LITERAL_STR, _BARE_KEY):
            m = pattern.match(self.text, self.pos)
            if m:
                self.pos = m.end()
                raw = m.group()
                # Let tomllib decode quoted keys' escapes; they are rare.
                return raw if pattern is _BARE_KEY else str(tomllib.loads(f"k = {raw}")["k"])
        raise _ScanError("key")

    def _value(self, path: KeyPath) -> None:
        self._skip(newlines=False)
        c = self._peek()
        if c == "[":
            self._array(path)
        elif c == "{":
            self._inline_table(path)
        else:
            for pattern in _VALUE_PATTERNS:
                m = pattern.match(self.text, self.pos)
                if m:
                    self.pos = m.end()
                    return
            raise _ScanError("value")

    def _array(self, path: KeyPath) -> None:
        self.pos += 1
        index = 0
        while True:
            self._skip(newlines=True)
            if self._peek() in ("]", ""):
                self.pos += 1
                return
            self._record((*path, index), self.pos)
            self._value((*path, index))
            index += 1
            self._skip(newlines=True)
            if self._peek() == ",":
                self.pos += 1

    def _inline_table(self, path: KeyPath) -> None:
        self.pos += 1
        while True:
            self._skip(newlines=True)
            if self._peek() in ("}", ""):
                self.pos += 1
                return
            self._key_value(path)
            self._skip(newlines=True)
            if self._peek() == ",":
                self.pos += 1


# --------------------------------------------------------------------------- loading


class _Loader:
    """Merges a file and overrides over the defaults, remembering where each key was set."""

    def __init__(self) -> None:
        self.values: dict[KeyPath, Any] = {p: _lookup(default_config(), p) for p in _leaves()}
        self.origins: dict[KeyPath, str] = {}  # user-set key -> "file:line" or "-o k=v"
        self.rules: tuple[Rule, ...] = ()
        self.file = ""
        self.lines: dict[KeyPath, int] = {}

    def error(self, path: KeyPath, problem: str, where: str | None = None) -> ConfigError:
        where = where or self.where(path)
        key = _dotted(path)
        return ConfigError(f"{where}: {key}: {problem}", key=key, where=where)

    def where(self, path: KeyPath) -> str:
        # A key we cannot place falls back to its table's header, then line 1.
        for end in range(len(path), 0, -1):
            if path[:end] in self.lines:
                return f"{self.file}:{self.lines[path[:end]]}"
        return f"{self.file}:1"

    # -- file

    def load_file(self, path: str) -> None:
        self.file = path
        text = _read_text(path)
        data = _parse_toml(path, text)
        self.lines = _LineIndexer(text).build()
        base_dir = os.path.dirname(os.path.abspath(path))
        self.apply_table(data, _SCHEMA, (), base_dir)

    def apply_table(
        self, data: Mapping[str, Any], node: Mapping[str, _Node], prefix: KeyPath, base_dir: str
    ) -> None:
        for key, value in data.items():
            path = (*prefix, key)
            spec = node.get(key)
            if spec is None:
                raise self.error(path, _unknown_key(path, node))
            if isinstance(spec, _Field) and spec.kind == "rules":
                self.rules = self.parse_rules(value)
            elif isinstance(spec, _Field):
                try:
                    self.values[path] = _coerce(spec, value, from_text=False, base_dir=base_dir)
                except _Invalid as e:
                    raise self.error(path, str(e)) from None
                self.origins[path] = self.where(path)
            elif isinstance(value, dict):
                self.apply_table(value, spec, path, base_dir)
            else:
                raise self.error(path, f"expected a table, got {_describe(value)}")

    def parse_rules(self, value: Any) -> tuple[Rule, ...]:
        if not isinstance(value, list):
            raise self.error(("rules",), f"expected [[rules]] tables, got {_describe(value)}")
        return tuple(self.parse_rule(("rules", i), item) for i, item in enumerate(value))

    def parse_rule(self, path: KeyPath, item: Any) -> Rule:
        if not isinstance(item, dict):
            raise self.error(path, f"expected a table with glob and type, got {_describe(item)}")
        for key in item:
            if key not in _RULE_KEYS:
                raise self.error(
                    (*path, key), _unknown_key((*path, key), dict.fromkeys(_RULE_KEYS))
                )
        for key in _RULE_KEYS:
            if key not in item:
                raise self.error(path, f"missing required key {key!r}")
            if not isinstance(item[key], str):
                raise self.error((*path, key), f"expected a string, got {_describe(item[key])}")
        glob, ctype = item["glob"], item["type"]
        if not glob or glob.startswith("/"):
            problem = "must be a non-empty glob relative to the origin root (no leading '/')"
            raise self.error((*path, "glob"), f"invalid glob {glob!r}: {problem}")
        if ctype not in CONTENT_TYPES:
            expected = ", ".join(CONTENT_TYPES)
            problem = f"unknown content type {ctype!r} (expected one of: {expected})"
            raise self.error((*path, "type"), problem)
        return Rule(glob, ctype)

    # -- overrides

    def apply_override(self, key: str, raw: str) -> None:
        where = f"-o {key}={raw}"
        path = tuple(key.split("."))
        node: _Node = _SCHEMA
        for i, part in enumerate(path):
            if isinstance(node, _Field):
                if node.kind == "rules":
                    break
                raise self.error(path, f"{_dotted(path[:i])} is a value, not a table", where)
            if part not in node:
                raise self.error(path[: i + 1], _unknown_key(path[: i + 1], node), where)
            node = node[part]
        if isinstance(node, _Field) and node.kind == "rules":
            problem = "rules cannot be set with -o; write [[rules]] tables in the config file"
            raise self.error(path, problem, where)
        if not isinstance(node, _Field):
            example = f"{key}.{next(iter(node))}"
            raise self.error(path, f"is a table; set one of its keys, e.g. -o {example}=...", where)
        try:
            self.values[path] = _coerce(node, raw, from_text=True, base_dir=os.getcwd())
        except _Invalid as e:
            raise self.error(path, str(e), where) from None
        self.origins[path] = where

    # -- result

    def build(self, source: str | None) -> Config:
        v = self.values

        def section(cls: type[Any], prefix: KeyPath, **fixed: Any) -> Any:
            names = [f.name for f in fields(cls) if f.name not in fixed]
            return cls(**fixed, **{n: v[(*prefix, n)] for n in names})

        cfg = Config(
            tiers={
                n: section(
                    TierConfig,
                    ("tiers", n),
                    name=n,
                    **({"path": None} if n == "ram" else {"scan_resistant": False}),
                )
                for n in TIER_NAMES
            },
            content_types={
                n: section(ContentTypeConfig, ("content_types", n), name=n) for n in CONTENT_TYPES
            },
            rules=self.rules,
            prediction=section(PredictionConfig, ("prediction",)),
            monitoring=section(MonitoringConfig, ("monitoring",)),
            stats=section(StatsConfig, ("stats",)),
            mount=section(MountConfig, ("mount",)),
            metadata=section(MetadataConfig, ("metadata",)),
            origin=section(OriginConfig, ("origin",)),
            source=source,
        )
        self.check_tier_paths(cfg)
        return cfg

    def check_tier_paths(self, cfg: Config) -> None:
        """Two disk tiers sharing a directory would evict each other's chunks."""
        ssd, hdd = cfg.tiers["ssd"].path, cfg.tiers["hdd"].path
        assert ssd is not None and hdd is not None
        if ssd == hdd or ssd in hdd.parents or hdd in ssd.parents:
            keys = {"ssd": ("tiers", "ssd", "path"), "hdd": ("tiers", "hdd", "path")}
            name = "hdd" if keys["hdd"] in self.origins else "ssd"
            other = "ssd" if name == "hdd" else "hdd"
            other_path = cfg.tiers[other].path
            problem = (
                f"{cfg.tiers[name].path} overlaps {_dotted(keys[other])} ({other_path}); "
                "each disk tier needs its own directory"
            )
            raise self.error(keys[name], problem, self.origins.get(keys[name]))


def _lookup(cfg: Config, path: KeyPath) -> Any:
    obj: Any = cfg
    for part in path:
        obj = obj[part] if isinstance(obj, Mapping) else getattr(obj, str(part))
    return obj


def _read_text(path: str) -> str:
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        reason = e.strerror or str(e)
        raise ConfigError(f"{path}: cannot read config file: {reason}", where=path) from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        where = f"{path}:{line}"
        raise ConfigError(f"{where}: config file is not valid UTF-8", where=where) from None


_TOML_POSITION = re.compile(r"\(at line (\d+), column \d+\)")


def _parse_toml(path: str, text: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        m = _TOML_POSITION.search(str(e))
        line = int(m.group(1)) if m else text.count("\n") + 1  # "at end of document"
        where = f"{path}:{line}"
        raise ConfigError(f"{where}: invalid TOML: {e}", where=where) from None


def load_config(
    path: str | os.PathLike[str] | None, overrides: Mapping[str, str] | None = None
) -> Config:
    """Defaults, then the TOML file at ``path`` (if any), then ``-o`` overrides.

    Raises ConfigError naming the key and where it was written on any problem.
    """
    loader = _Loader()
    source = None if path is None else os.fsdecode(path)
    if source is not None:
        loader.load_file(source)
    for key, raw in (overrides or {}).items():
        loader.apply_override(key, raw)
    return loader.build(source)


# --------------------------------------------------------------------------- writing


def _toml_string(text: str) -> str:
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _toml_value(spec: _Field, value: Any) -> str:
    if spec.kind == "size":
        return _toml_string(format_size(value))
    if spec.kind == "duration":
        return _toml_string(format_duration(value))
    if spec.kind == "bool":
        return "true" if value else "false"
    if spec.kind in ("int", "float"):
        return repr(value)
    return _toml_string(str(value))


def _emit(cfg: Config, node: Mapping[str, _Node], prefix: KeyPath, out: list[str]) -> None:
    leaves = [(k, s) for k, s in node.items() if isinstance(s, _Field) and s.kind != "rules"]
    if leaves:
        out += ["", f"[{_dotted(prefix)}]"]
        out += [f"{k} = {_toml_value(s, _lookup(cfg, (*prefix, k)))}" for k, s in leaves]
    for key, spec in node.items():
        if isinstance(spec, _Field) and spec.kind == "rules":
            _emit_rules(cfg.rules, out)
        elif not isinstance(spec, _Field):
            _emit(cfg, spec, (*prefix, key), out)


def _emit_rules(rules: tuple[Rule, ...], out: list[str]) -> None:
    if not rules:
        out += ["", "# no [[rules]]: extension defaults only"]
    for rule in rules:
        out += ["", "[[rules]]", f"glob = {_toml_string(rule.glob)}"]
        out += [f"type = {_toml_string(rule.type)}"]


def config_to_toml(cfg: Config) -> str:
    """The effective config as TOML that load_config reads back into an equal Config."""
    out = ["# cachefs effective configuration"]
    if cfg.source:
        out.append(f"# loaded from {cfg.source!r}")
    _emit(cfg, _SCHEMA, (), out)
    return "\n".join(out) + "\n"
