"""The schema: every settable key, its kind and its checks, and the conversion of values.

Every value is checked once, here, so the rest of cachefs can trust its config.
Key order in ``SCHEMA`` is the order config_to_toml writes.

Two kinds of keys are accepted without being values of their own, so old
files keep loading: an old name (``renamed_to``) sets the key it was renamed
to, and a retired key (``retired``) sets nothing. Both are checked like any
key, logged as a warning where they are read (with the fix), and never written back.
"""

from __future__ import annotations

import difflib
import math
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeAlias

from cachefs.config.address import parse_listen
from cachefs.config.keys import KeyPath
from cachefs.config.model import (
    CONTENT_TYPES,
    EVICTION_POLICIES,
    STATS_BACKENDS,
    TIER_NAMES,
    WATCH_MODES,
)
from cachefs.config.units import (
    SECOND,
    KiB,
    MiB,
    format_duration,
    format_size,
    parse_duration,
    parse_size,
)

REDIS_URL_SCHEMES = ("redis://", "rediss://", "unix://")
MIN_CHUNK_SIZE = 4 * KiB
MAX_CHUNK_SIZE = 64 * MiB
CHUNK_ALIGN = 4096  # page size: chunks map onto whole kernel pages

Check: TypeAlias = Callable[[Any], str | None]  # returns a problem, or None if fine


class Invalid(Exception):
    """A value problem, before we know where the value was written."""


def _no_check(value: Any) -> str | None:
    return None


@dataclass(frozen=True)
class Field:
    kind: str  # size, duration, int, float, bool, str, path, rules
    check: Check = _no_check
    choices: tuple[str, ...] = ()
    what: str = "value"  # noun for "invalid <what> 'x' (expected one of ...)"
    renamed_to: str | None = None  # an old name of this key of the same table
    retired: str | None = None  # why a key that sets nothing can go (the note logged)
    unset: str = ""  # for a key whose default is None: what None means

    @property
    def current(self) -> bool:
        """A key of today's schema: one config_to_toml writes and a hint may suggest."""
        return self.renamed_to is None and self.retired is None


def _renamed(new_name: str, table: Mapping[str, Node]) -> Field:
    """The old name of ``table[new_name]``: the same kind and checks, another name."""
    target = table[new_name]
    assert isinstance(target, Field) and target.current
    return replace(target, renamed_to=new_name)


Node: TypeAlias = "Mapping[str, Node] | Field"


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


def _number_above(low: float) -> Check:
    def check(v: float) -> str | None:
        return None if v > low else f"must be greater than {low}, got {v}"

    return check


def _number_at_least(low: float) -> Check:
    def check(v: float) -> str | None:
        return None if v >= low else f"must be at least {low}, got {v}"

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


def _check_listen(v: str) -> str | None:
    try:
        parse_listen(v)
    except ValueError as exc:
        return str(exc)
    return None


def _check_access_log(v: str) -> str | None:
    """An absolute file path in an existing directory, or "" (off)."""
    if not v:
        return None
    if not os.path.isabs(v):
        return f'must be an absolute path (or "" for off), got {v!r}'
    if v.endswith("/") or os.path.isdir(v):
        return f"must be a file path, not a directory: {v!r}"
    directory = os.path.dirname(v)
    if not os.path.isdir(directory):
        return f"directory {directory} does not exist (cachefs makes the file, not its directory)"
    return None


def _size_at_least(low: int) -> Check:
    def check(v: int) -> str | None:
        if v >= low:
            return None
        return f"must be at least {format_size(low)}, got {format_size(v)}"

    return check


def _check_positive_duration(v: float) -> str | None:
    return None if v > 0 else "must be greater than 0"


def _check_no_ram_reserve(v: int) -> str | None:
    if v == 0:
        return None  # what `cachefs config show` wrote before: accepted, with a note
    return "the RAM tier has no file system to keep free; remove it (min_free is for ssd and hdd)"


_TIER_FIELDS: dict[str, Node] = {
    "max_size": Field("size", _check_positive_size),
    "eviction": Field("str", choices=EVICTION_POLICIES, what="eviction policy"),
    "ttl": Field("duration", _check_positive_duration),
    "min_free": Field("size"),
}
_DISK_TIER_FIELDS: dict[str, Node] = {"path": Field("path"), **_TIER_FIELDS}
_RAM_TIER_FIELDS: dict[str, Node] = {
    "max_size": _TIER_FIELDS["max_size"],
    "ttl": _TIER_FIELDS["ttl"],
    "scan_resistant": Field("bool"),
    # Retired: files written by `cachefs config show` before have them. The RAM
    # tier's policy is set by scan_resistant, and it has no file system.
    "eviction": Field(
        "str",
        choices=("lru",),
        what="RAM tier eviction policy",
        retired=(
            "the RAM tier takes its policy from scan_resistant (W-TinyLFU, or an LRU "
            "when false); remove it"
        ),
    ),
    "min_free": Field(
        "size",
        _check_no_ram_reserve,
        retired="the RAM tier has no file system to keep free; remove it",
    ),
}
_CONTENT_TYPE_FIELDS: dict[str, Node] = {
    "default_tier": Field("str", choices=TIER_NAMES, what="tier name"),
    "compression": Field("bool"),
    "compression_level": Field("int", _between(1, 22)),  # zstd's regular levels
    "chunk_size": Field("size", _check_chunk_size),
    # weight of the type in the keep score: eviction (weight policy), promotion, demotion
    "keep_weight": Field("float", _between(0.0, 1.0)),
}
_CONTENT_TYPE_FIELDS["prefetch_threshold"] = _renamed("keep_weight", _CONTENT_TYPE_FIELDS)
_PREDICTION_FIELDS: dict[str, Node] = {
    "window_size": Field("int", _between(1, 1_000_000)),
    # the keep score an HDD chunk needs for the SSD; SSD evictions at half of it go down
    "promote_threshold": Field("float", _between(0.0, 1.0)),
    # a move up, in reads of the chunk from the lower tier: the bar is threshold x this
    "promote_move_cost": Field("float", _number_above(0.0)),
    # times a day promotions may rewrite the SSD (its max_size); 0 = no promotion
    "promote_rewrites_per_day": Field("float", _number_at_least(0.0)),
    "max_prefetch_size": Field("size"),
    "prefetch_confidence": Field("float", _between(0.0, 1.0)),
}
_PREDICTION_FIELDS["min_confidence"] = _renamed("promote_threshold", _PREDICTION_FIELDS)

# Key order here is the order config_to_toml writes.
SCHEMA: dict[str, Node] = {
    # Top-level values first: TOML puts them before any table. None = unset.
    "state_dir": Field("path", unset="the ssd tier's directory (tiers.ssd.path)"),
    "tiers": {"ram": _RAM_TIER_FIELDS, "ssd": _DISK_TIER_FIELDS, "hdd": _DISK_TIER_FIELDS},
    "content_types": {name: _CONTENT_TYPE_FIELDS for name in CONTENT_TYPES},
    "rules": Field("rules"),
    "prediction": _PREDICTION_FIELDS,
    "monitoring": {
        "stats_interval": Field("duration", _duration_at_least(SECOND)),
        "cleanup_interval": Field("duration", _duration_at_least(SECOND)),
        "max_stats_age": Field("duration", _check_positive_duration),
    },
    "stats": {
        "backend": Field("str", choices=STATS_BACKENDS, what="stats backend"),
        "redis_url": Field("str", _check_redis_url),
        "redis_password_file": Field("str"),
        "access_log": Field("str", _check_access_log),
        "access_log_max_size": Field("size", _size_at_least(4 * KiB)),
    },
    "mount": {
        "attr_timeout": Field("duration"),
        "entry_timeout": Field("duration"),
        "max_threads": Field("int", _between(1, 1024)),
        "read_ahead": Field("size"),
        "busy_poll": Field("duration", _duration_at_most(0.01)),
        "writeback_cache": Field("bool"),
        "write_buffer": Field("size"),
        "watched_timeout": Field("duration"),  # 0 allowed: no longer timeouts
    },
    "metadata": {
        "revalidate_after": Field("duration"),  # 0 allowed: always ask the origin
        "watch": Field("str", choices=WATCH_MODES, what="watch mode"),
        "poll_window": Field("duration", _check_positive_duration),  # watch = "off" stops polling
        "poll_interval": Field("duration", _check_positive_duration),
        "poll_budget": Field("int", _int_at_least(1)),
        "max_entries": Field("int", _int_at_least(1000)),
        "persist": Field("bool"),
        "walk_ahead": Field("bool"),
    },
    "origin": {
        "timeout": Field("duration", _check_positive_duration),
        "probe_interval": Field("duration", _check_positive_duration),
    },
    "metrics": {"listen": Field("str", _check_listen)},
}
_TABLE_NOUNS: dict[KeyPath, str] = {("tiers",): "tier", ("content_types",): "content type"}
RULE_KEYS = ("glob", "type")
# Keys outside any table; ``-o`` passes them without a dot (``-o state_dir=/x``).
TOP_LEVEL_KEYS = tuple(k for k, v in SCHEMA.items() if isinstance(v, Field) and v.kind != "rules")


def leaves(node: Node = SCHEMA, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Every key path holding a value of its own (no rules, old names or retired keys),
    in schema order."""
    if isinstance(node, Field):
        if node.kind != "rules" and node.current:
            yield prefix
        return
    for key, child in node.items():
        yield from leaves(child, (*prefix, key))


# --------------------------------------------------------------------------- value coercion


def describe(value: Any) -> str:
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
        raise Invalid(f'expected a size such as "512MiB" or a byte count, got {describe(value)}')
    try:
        return parse_size(value)
    except ValueError as e:
        raise Invalid(str(e)) from None


def _to_duration(value: Any, from_text: bool, base_dir: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise Invalid(f'expected a duration such as "5m" or seconds, got {describe(value)}')
    try:
        return parse_duration(value)
    except ValueError as e:
        raise Invalid(str(e)) from None


def _to_int(value: Any, from_text: bool, base_dir: str) -> int:
    if from_text:
        try:
            return int(value.strip())
        except ValueError:
            raise Invalid(f"invalid integer {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, int):
        raise Invalid(f"expected an integer, got {describe(value)}")
    return value


def _to_float(value: Any, from_text: bool, base_dir: str) -> float:
    if from_text:
        try:
            value = float(value)
        except ValueError:
            raise Invalid(f"invalid number {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Invalid(f"expected a number, got {describe(value)}")
    if not math.isfinite(value):
        raise Invalid(f"expected a finite number, got {value}")
    return float(value)


def _to_bool(value: Any, from_text: bool, base_dir: str) -> bool:
    if from_text:
        word = value.strip().lower()
        if word in _TRUE or word in _FALSE:
            return word in _TRUE
        raise Invalid(f"invalid boolean {value!r} (expected true/false, yes/no, on/off, 1/0)")
    if not isinstance(value, bool):
        raise Invalid(f"expected true or false, got {describe(value)}")
    return value


def _to_str(value: Any, from_text: bool, base_dir: str) -> str:
    if not isinstance(value, str):
        raise Invalid(f"expected a string, got {describe(value)}")
    return value


def _to_path(value: Any, from_text: bool, base_dir: str) -> Path:
    if not isinstance(value, str):
        raise Invalid(f"expected a directory path string, got {describe(value)}")
    if not value.strip():
        raise Invalid("expected a directory path, got an empty string")
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


def coerce(spec: Field, value: Any, *, from_text: bool, base_dir: str) -> Any:
    """Convert and validate one value; raises Invalid with the problem."""
    result = _CONVERTERS[spec.kind](value, from_text, base_dir)
    if spec.choices and result not in spec.choices:
        raise Invalid(
            f"invalid {spec.what} {result!r} (expected one of: {', '.join(spec.choices)})"
        )
    problem = spec.check(result)
    if problem:
        raise Invalid(problem)
    return result


def unknown_key(path: KeyPath, table: Mapping[str, Any]) -> str:
    key = str(path[-1])
    if path == ("tiers", "ram", "path"):
        return "the ram tier lives in memory and takes no path"
    if len(path) > 1 and key in TOP_LEVEL_KEYS:
        return f"{key} is a top-level key: write it before the first [table]"
    noun = _TABLE_NOUNS.get(path[:-1], "key")
    known = [k for k, v in table.items() if not isinstance(v, Field) or v.current]
    close = difflib.get_close_matches(key, known, n=1)
    hint = f"did you mean {close[0]!r}?" if close else f"expected one of: {', '.join(known)}"
    return f"unknown {noun} {key!r} ({hint})"
