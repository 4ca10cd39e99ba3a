"""Replaying an access trace through cachefs's own tier and policy code.

``cachefs simulate`` (app/simulate.py) is the command; this is its core, kept
in the data layer beside the tiers it drives:

* the RAM tier is the real ``RamTier`` (its access rule, W-TinyLFU or LRU,
  pins aside), holding a stand-in of each object's length instead of bytes;
* a disk tier is ``DiskModel``: the same policy class ``DiskTier`` uses
  (``make_policy`` with the tier's size), the same victim picking
  (``disk.pick_victims``: pins skipped, 2 % extra per batch) and the same
  touch on a hit, without the chunk files. Sizes are taken as given (a real
  tier adds a 64-byte header, rounds to 4 KiB blocks and may compress);
* the whole stack (``StackModel``) looks up RAM, then the SSD, then the HDD,
  counts a RAM hit for the disk copies too (``RamTier.below``), stores a miss
  in RAM and its home tier (the content type's, as the read path does),
  promotes HDD chunks to the SSD every 2 s of trace time with the
  migrator's rule and budget (``promotion.py``; one pass of the migrator's
  loop, repeated here because the migrator lives in the engine layer), and
  demotes SSD evictions that still earn it.

A trace is ``timestamp,obj_id,size`` lines, libCacheSim's csv layout: a
header line is optional, ``#`` lines and blank lines are skipped, fields may
be separated by commas or whitespace, extra columns are ignored, a missing
size is 1, and an obj_id that is not a number is mapped to one (in order of
first appearance). Each line is one access. The mount's own access log
(``stats.access_log``, data/accesslog.py) is such a trace, with two more
columns its header names: ``content_type`` (the stack puts each chunk in its
type's home tier, with its keep weight) and ``tier`` (where the mount found
it: ``Trace.served``, reported beside the replay). Several files (``PATH.1``
then ``PATH``) are read as one trace.

Miss ratios are per request and per byte: ``byte_miss_ratio`` = bytes of
requests that missed / bytes requested.

A little over 500 lines because the trace reader, the tier models and the
stack model are one replay: each models a part of the read path the others
feed.
"""

from __future__ import annotations

import csv
import importlib
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from cachefs.data.accesslog import HEADER as ACCESS_LOG_HEADER
from cachefs.data.chunks import ChunkKey
from cachefs.data.tiers.disk import pick_victims
from cachefs.data.tiers.policies import EvictionPolicy, make_policy, promotion_score
from cachefs.data.tiers.promotion import (
    DEFAULT_MOVE_COST,
    DEFAULT_REWRITES_PER_DAY,
    HourlyBudget,
    promotion_bar,
    upper_tier_budget,
)
from cachefs.data.tiers.ram import RamTier
from cachefs.origin.access import FileVersion

MIGRATE_INTERVAL = 2.0  # engine/tasks.py: seconds between migrator passes
MIGRATE_BYTES_PER_SECOND = 64 * 1024 * 1024
NO_PINS: frozenset[Any] = frozenset()


class TraceError(ValueError):
    """A trace line that cannot be read."""


@dataclass
class Trace:
    """Requests as three parallel lists (compact, and cheap to replay many times)."""

    times: list[float] = field(default_factory=list)
    objects: list[int] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)
    # From an access log's content_type column: each request's content type (None
    # when the trace has no such column).
    types: list[str | None] = field(default_factory=list)
    # From its tier column: how many requests the mount served from each tier.
    served: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.objects)

    def append(self, when: float, obj: int, size: int, content_type: str | None = None) -> None:
        self.times.append(when)
        self.objects.append(obj)
        self.sizes.append(size)
        self.types.append(content_type)

    def has_types(self) -> bool:
        return any(t is not None for t in self.types)

    def working_set(self, objects: bool = False) -> int:
        """Distinct objects, or the bytes of distinct objects (each at its last size)."""
        last: dict[int, int] = {}
        for obj, size in zip(self.objects, self.sizes, strict=True):
            last[obj] = size
        return len(last) if objects else sum(last.values())


def parse_trace(
    lines: Iterable[str],
    source: str = "trace",
    trace: Trace | None = None,
    names: dict[str, int] | None = None,
) -> Trace:
    """Parse ``timestamp,obj_id,size`` lines (see the module docstring), into *trace*
    when given (*names*: the ids given to names so far, shared between files)."""
    trace = Trace() if trace is None else trace
    names = {} if names is None else names
    type_column = tier_column = None
    before = len(trace)
    for number, line in enumerate(lines, 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        fields = next(csv.reader([text])) if "," in text else text.split()
        fields = [f.strip() for f in fields]
        try:
            when = float(fields[0])
        except (ValueError, IndexError):
            if number == 1 or len(trace) == before:
                header = [f.lower() for f in fields]  # a header line; it may name columns
                type_column = _column(header, "content_type")
                tier_column = _column(header, "tier")
                continue
            raise TraceError(f"{source}:{number}: not a timestamp: {fields[0]!r}") from None
        if len(fields) < 2 or not fields[1]:
            raise TraceError(f"{source}:{number}: no obj_id")
        raw = fields[1]
        try:
            obj = int(raw)
        except ValueError:
            obj = names.setdefault(raw, -1 - len(names))  # negative: never a numeric id
        try:
            size = int(float(fields[2])) if len(fields) > 2 and fields[2] else 1
        except ValueError:
            raise TraceError(f"{source}:{number}: not a size: {fields[2]!r}") from None
        if size < 0 or not math.isfinite(when):
            raise TraceError(f"{source}:{number}: bad timestamp or size")
        content_type = None
        if type_column is not None and len(fields) > type_column and fields[type_column]:
            content_type = fields[type_column]
        trace.append(when, obj, size, content_type)
        if tier_column is not None and len(fields) > tier_column and fields[tier_column]:
            tier = fields[tier_column]
            trace.served[tier] = trace.served.get(tier, 0) + 1
    return trace


def _column(header: list[str], name: str) -> int | None:
    # only past the three libCacheSim columns, whose meaning is fixed by position
    return header.index(name) if name in header[3:] else None


def read_trace(*paths: str | Path) -> Trace:
    """One trace from one or more files, in order (an access log: ``PATH.1 PATH``)."""
    trace = Trace()
    names: dict[str, int] = {}
    for path in paths:
        with open(path, encoding="utf-8", errors="replace") as f:
            parse_trace(_whole_lines(f), str(path), trace, names)
    return trace


def _whole_lines(lines: Iterable[str]) -> Iterator[str]:
    """The lines of a file, but for an access log's cut last line (no newline: the
    mount stopped while it wrote it), which would read as a wrong record."""
    log = False
    last = None
    for number, line in enumerate(lines):
        if number == 0:
            log = line == ACCESS_LOG_HEADER
        if last is not None:
            yield last
        last = line
    if last is not None and (last.endswith("\n") or not log):
        yield last


# --------------------------------------------------------------------------- tier models


class _Length:
    """What the RAM tier stores in a simulation: something with the object's length."""

    __slots__ = ("n",)

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n


class _TraceClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Counts:
    requests: int = 0
    hits: int = 0
    bytes_requested: int = 0
    bytes_hit: int = 0

    def record(self, size: int, hit: bool) -> None:
        self.requests += 1
        self.bytes_requested += size
        if hit:
            self.hits += 1
            self.bytes_hit += size

    @property
    def miss_ratio(self) -> float:
        return 1 - self.hits / self.requests if self.requests else 0.0

    @property
    def byte_miss_ratio(self) -> float:
        return 1 - self.bytes_hit / self.bytes_requested if self.bytes_requested else 0.0


class RamModel:
    """The real RamTier, fed a trace."""

    name = "ram"

    def __init__(self, capacity: int, scan_resistant: bool = True) -> None:
        self.clock = _TraceClock()
        self.tier = RamTier(capacity, scan_resistant, self.clock)
        self._keys: dict[int, ChunkKey] = {}

    def key(self, obj: int) -> ChunkKey:
        key = self._keys.get(obj)
        if key is None:
            key = self._keys[obj] = ChunkKey(FileVersion(obj, 0, 0, 0), 0, 0)
        return key

    def lookup(self, obj: int, now: float) -> bool:
        self.clock.now = now
        return self.tier.get(self.key(obj)) is not None

    def store(self, obj: int, size: int, now: float) -> None:
        self.clock.now = now
        self.tier.put(self.key(obj), cast(bytes, _Length(size)))

    def access(self, obj: int, size: int, now: float) -> bool:
        if self.lookup(obj, now):
            return True
        self.store(obj, size, now)
        return False


class DiskModel:
    """A disk tier's index and policy (DiskTier without files): the same policy class,
    the same victim picking, the same bookkeeping of a hit."""

    def __init__(
        self,
        capacity: int,
        eviction: str,
        name: str = "ssd",
        size_of: Callable[[int], int] = lambda length: length,
    ) -> None:
        self.name = name
        self.capacity = capacity
        self.policy: EvictionPolicy[Any] = make_policy(eviction, capacity)
        self.bytes = 0
        self.size_of = size_of  # the bytes a chunk of this length takes in the tier
        self.evictions = 0
        self._reread: dict[Any, None] = {}
        self.on_evict: Callable[[Any, int, float], None] | None = None

    def __contains__(self, key: object) -> bool:
        return key in self.policy

    def lookup(self, key: Any, now: float) -> bool:
        """DiskTier.get: a hit touches the policy; a miss is not recorded."""
        if key not in self.policy:
            return False
        self.policy.touch(key, now)
        if self.policy.access_count(key) >= 2:
            self._reread[key] = None
        return True

    def store(
        self,
        key: Any,
        length: int,
        now: float,
        weight: float = 1.0,
        history: tuple[float, int] | None = None,
    ) -> bool:
        """DiskTier.put / put_blob: make room (evicting nothing unless enough can go), add."""
        if key in self.policy:
            self.lookup(key, now)
            return True
        size = self.size_of(length)
        if size > self.capacity:
            return False
        need = self.bytes + size - self.capacity
        if need > 0:
            victims = pick_victims(self.policy, NO_PINS, need, self.bytes, self.capacity, now)
            if sum(s for _, s in victims) < need:
                return False
            for victim, vsize in victims:
                if self.on_evict is not None:
                    self.on_evict(victim, vsize, now)
                self._drop(victim)
                self.evictions += 1
        self.bytes += size
        if history is None:
            self.policy.add(key, size, now, weight)
        else:
            self.policy.restore(key, size, history[0], max(1, history[1]), weight)
            if history[1] >= 2:
                self._reread[key] = None
        return True

    def _drop(self, key: Any) -> None:
        self.bytes -= self.policy.size_of(key)
        self.policy.remove(key)
        self._reread.pop(key, None)

    def access(self, key: Any, length: int, now: float) -> bool:
        if self.lookup(key, now):
            return True
        self.store(key, length, now)
        return False

    def hot_chunks(self, threshold: float, now: float) -> list[tuple[Any, float, int]]:
        """DiskTier.hot_chunks."""
        scored = [
            (k, self.policy.promotion_score(k, now), self.policy.size_of(k)) for k in self._reread
        ]
        hot = [entry for entry in scored if entry[1] >= threshold]
        hot.sort(key=lambda entry: entry[1], reverse=True)
        return hot

    def weakest_score(self, now: float) -> float:
        victims = self.policy.victims(now)
        try:
            for key in victims:
                return self.policy.promotion_score(key, now)
        finally:
            victims.close()
        return 0.0

    def move_to(self, key: Any, target: DiskModel, now: float) -> bool:
        policy = self.policy
        last = policy.last_access(key)
        history = (last if last is not None else now, policy.access_count(key))
        if not target.store(key, policy.size_of(key), now, policy.weight_of(key), history):
            return False
        self._drop(key)
        return True


# --------------------------------------------------------------------------- one tier


def simulate_tier(
    trace: Trace,
    capacity: int,
    tier: str = "ssd",
    eviction: str = "tinylfu",
    scan_resistant: bool = True,
    objects: bool = False,
) -> dict[str, Any]:
    """One tier of *capacity* (bytes, or objects with *objects*) over *trace*."""
    counts = Counts()
    model: RamModel | DiskModel
    if tier == "ram":
        model = RamModel(capacity, scan_resistant)
    else:
        model = DiskModel(capacity, eviction, tier)
    access = model.access
    now = -math.inf
    started = time.process_time()
    for when, obj, size in zip(trace.times, trace.objects, trace.sizes, strict=True):
        now = when if when > now else now  # a trace's clock never goes back for the tier
        counts.record(size, access(obj, 1 if objects else size, now))
    cpu = time.process_time() - started
    return {
        "size": capacity,
        "requests": counts.requests,
        "miss_ratio": counts.miss_ratio,
        "byte_miss_ratio": counts.byte_miss_ratio,
        "cpu_us_per_request": cpu / max(1, counts.requests) * 1e6,
    }


# --------------------------------------------------------------------------- the stack


@dataclass(frozen=True)
class StackConfig:
    ram: int = 0
    ssd: int = 0
    hdd: int = 0
    scan_resistant: bool = True
    ssd_eviction: str = "tinylfu"
    hdd_eviction: str = "tinylfu"
    home: str = "ssd"  # where a miss is stored: the content type's default_tier
    weight: float = 0.75  # the content type's keep_weight
    # For traces that name each request's content type (an access log): the type's
    # (home tier, keep_weight); a type not in it gets home and weight above.
    types: Mapping[str, tuple[str, float]] = field(default_factory=dict)
    promote_threshold: float = 0.6
    promote_move_cost: float = DEFAULT_MOVE_COST
    promote_rewrites_per_day: float = DEFAULT_REWRITES_PER_DAY
    objects: bool = False


class StackModel:
    """RAM, then the SSD, then the HDD, as the read path and the migrator use them."""

    def __init__(self, cfg: StackConfig) -> None:
        self.cfg = cfg
        self.ram = RamModel(cfg.ram, cfg.scan_resistant) if cfg.ram else None
        self.disks: dict[str, DiskModel] = {}
        if cfg.ssd:
            self.disks["ssd"] = DiskModel(cfg.ssd, cfg.ssd_eviction, "ssd")
        if cfg.hdd:
            self.disks["hdd"] = DiskModel(cfg.hdd, cfg.hdd_eviction, "hdd")
        self.tier_counts = {name: Counts() for name in ("ram", *self.disks)}
        self.promotions = 0
        self.demotions = 0
        self._next_pass = -math.inf
        self._clock = _TraceClock()
        self.budget: HourlyBudget | None = None
        ssd, hdd = self.disks.get("ssd"), self.disks.get("hdd")
        if ssd is not None and hdd is not None:
            self.budget = upper_tier_budget(cfg.ssd, cfg.promote_rewrites_per_day, self._clock)
            ssd.on_evict = self._demote

    def home(self, name: str | None = None) -> DiskModel | None:
        """ChunkCache.home_tier: the content type's tier, or the SSD."""
        return (
            self.disks.get(name or self.cfg.home) or self.disks.get("ssd") or self.disks.get("hdd")
        )

    def access(self, obj: int, length: int, now: float, content_type: str | None = None) -> str:
        """Where the request was served from: a tier's name or "origin"."""
        if self.budget is not None and now >= self._next_pass:
            self._migrate_until(now)
        self._clock.now = now
        ram = self.ram
        if ram is not None and ram.lookup(obj, now):
            for disk in self.disks.values():  # RamTier.below: the read counts there too
                if obj in disk:
                    disk.lookup(obj, now)
            return "ram"
        for name, disk in self.disks.items():
            if disk.lookup(obj, now):
                if ram is not None:
                    ram.store(obj, length, now)
                return name
        if ram is not None:
            ram.store(obj, length, now)
        policy = self.cfg.types.get(content_type) if content_type is not None else None
        name, weight = policy if policy is not None else (self.cfg.home, self.cfg.weight)
        home = self.home(name)
        if home is not None:
            home.store(obj, length, now, weight)
        return "origin"

    def _migrate_until(self, now: float) -> None:
        """The migrator's passes due since the last request (every MIGRATE_INTERVAL):
        the first and the last of them (the ones between see the same chunks,
        with scores in between and budget in between)."""
        first = self._next_pass if math.isfinite(self._next_pass) else now
        due = [first]
        last = first + math.floor((now - first) / MIGRATE_INTERVAL) * MIGRATE_INTERVAL
        if last > first:
            due.append(last)
        for when in due:
            self._clock.now = when
            self._promote(when)
        self._next_pass = due[-1] + MIGRATE_INTERVAL

    def _promote(self, now: float) -> None:
        """Migrator.promote_once."""
        assert self.budget is not None
        lower, upper = self.disks["hdd"], self.disks["ssd"]
        budget = min(MIGRATE_BYTES_PER_SECOND * MIGRATE_INTERVAL, self.budget.available())
        weakest = upper.weakest_score(now)
        bar = promotion_bar(self.cfg.promote_threshold, self.cfg.promote_move_cost)
        for key, score, size in lower.hot_chunks(bar, now):
            if size > budget:
                break
            if upper.bytes + size > upper.capacity and score <= weakest:
                break
            if lower.move_to(key, upper, now):
                self.promotions += 1
                budget -= size
                self.budget.spend(size)

    def _demote(self, key: Any, size: int, now: float) -> None:
        """DiskTier._worth_demoting + _demote: an SSD eviction that still earns it."""
        ssd, hdd = self.disks["ssd"], self.disks["hdd"]
        policy = ssd.policy
        last = policy.last_access(key)
        if last is None:
            return
        score = promotion_score(policy.access_count(key), last, policy.weight_of(key), now)
        earned = score >= self.cfg.promote_threshold / 2
        if earned and hdd.store(key, size, now, policy.weight_of(key)):  # anew, as put_blob does
            self.demotions += 1


def simulate_stack(
    trace: Trace, cfg: StackConfig, streams: dict[str, Trace] | None = None
) -> dict[str, Any]:
    """The whole stack over *trace*; *streams*, when given, gets each tier's own
    request stream: the requests that reached it (all reach RAM; a RAM miss reaches
    the SSD; ...), as ``compare_stack`` feeds a reference in that tier's place."""
    stack = StackModel(cfg)
    present = [n for n in stack.tier_counts if n in stack.disks or (n == "ram" and stack.ram)]
    if streams is not None:
        streams.update({name: Trace() for name in present})
    total = Counts()
    per_tier = stack.tier_counts
    now = -math.inf
    started = time.process_time()
    objects = cfg.objects
    requests = zip(trace.times, trace.objects, trace.sizes, trace.types, strict=True)
    for when, obj, size, content_type in requests:
        now = when if when > now else now
        where = stack.access(obj, 1 if objects else size, now, content_type)
        total.record(size, where != "origin")
        for name, counts in per_tier.items():  # each tier sees what reached it
            counts.record(size, where == name)
            if streams is not None and name in streams:
                streams[name].append(when, obj, size)
            if where == name:
                break
    cpu = time.process_time() - started
    tiers = {
        name: {
            "requests": c.requests,
            "hits": c.hits,
            "hit_ratio": 1 - c.miss_ratio if c.requests else 0.0,
            "byte_hit_ratio": 1 - c.byte_miss_ratio if c.bytes_requested else 0.0,
        }
        for name, c in per_tier.items()
        if name in present
    }
    return {
        "ram": cfg.ram,
        "ssd": cfg.ssd,
        "hdd": cfg.hdd,
        "requests": total.requests,
        "miss_ratio": total.miss_ratio,
        "byte_miss_ratio": total.byte_miss_ratio,
        "tiers": tiers,
        "promotions": stack.promotions,
        "demotions": stack.demotions,
        "cpu_us_per_request": cpu / max(1, total.requests) * 1e6,
    }


# --------------------------------------------------------------------------- references

# libCacheSim's Python bindings (a bench dependency, not a runtime one): the
# reference policies, by the name they are reported under.
REFERENCES = ("LRU", "ARC", "LIRS", "S3FIFO", "WTinyLFU", "Sieve")


class ReferencesUnavailable(RuntimeError):
    """libcachesim is not installed."""


def libcachesim() -> Any:
    try:
        return importlib.import_module("libcachesim")
    except ImportError:
        raise ReferencesUnavailable(
            "the reference policies need libCacheSim's Python bindings: "
            "pip install libcachesim (or: pip install -e '.[bench]')"
        ) from None


def simulate_reference(
    trace: Trace, capacity: int, policy: str, objects: bool = False
) -> dict[str, Any]:
    """One libCacheSim policy of *capacity* over *trace*, counted as simulate_tier counts."""
    lcs = libcachesim()
    distinct = max(2, len(set(trace.objects)))
    hashpower = max(12, min(26, math.ceil(math.log2(distinct)) + 1))
    cache = getattr(lcs, policy)(capacity, hashpower=hashpower)
    request = lcs.Request()
    counts = Counts()
    get = cache.get
    clock = 0
    started = time.process_time()
    for when, obj, size in zip(trace.times, trace.objects, trace.sizes, strict=True):
        clock = max(clock, int(when))
        request.obj_id = obj & 0x7FFFFFFFFFFFFFFF  # an unsigned id: names map below 0
        request.obj_size = 1 if objects else max(1, size)
        request.clock_time = clock
        request.valid = True
        counts.record(size, bool(get(request)))
    cpu = time.process_time() - started
    return {
        "size": capacity,
        "requests": counts.requests,
        "miss_ratio": counts.miss_ratio,
        "byte_miss_ratio": counts.byte_miss_ratio,
        "cpu_us_per_request": cpu / max(1, counts.requests) * 1e6,
    }


def compare_stack(
    trace: Trace, cfg: StackConfig, references: Iterable[str] = REFERENCES
) -> dict[str, Any]:
    """simulate_stack, with each reference policy beside it twice over.

    * ``reference``: one cache of the stack's total size (RAM + SSD + HDD) fed the
      whole trace, against the stack's miss ratios: what the same bytes would do
      as a single cache with that policy (it keeps no copy twice, where a chunk
      in RAM also has its disk copy, and moves nothing between tiers);
    * each tier's ``reference``: one cache of that tier's size fed the requests
      that reached the tier in this replay, against the tier's hit ratios: how
      well the tier's own policy does in its place in the stack (the reference
      sees no RAM hit, promotion or demotion, which the tier does, and stores
      every request that reaches it, where a tier that is not the content
      type's home stores only what moves there).
    """
    streams: dict[str, Trace] = {}
    result = simulate_stack(trace, cfg, streams)
    names = tuple(references)
    total = cfg.ram + cfg.ssd + cfg.hdd
    result["reference_size"] = total
    result["reference"] = {
        name: _miss_ratios(simulate_reference(trace, total, name, cfg.objects)) for name in names
    }
    for tier, stream in streams.items():
        capacity = getattr(cfg, tier)
        result["tiers"][tier]["reference"] = {
            name: _hit_ratios(simulate_reference(stream, capacity, name, cfg.objects))
            for name in (names if len(stream) else ())  # a tier nothing reached
        }
    return result


def _miss_ratios(result: Mapping[str, Any]) -> dict[str, float]:
    return {"miss_ratio": result["miss_ratio"], "byte_miss_ratio": result["byte_miss_ratio"]}


def _hit_ratios(result: Mapping[str, Any]) -> dict[str, float]:
    return {"hit_ratio": 1 - result["miss_ratio"], "byte_hit_ratio": 1 - result["byte_miss_ratio"]}


def size_in_units(text: str, trace: Trace, objects: bool, parse: Callable[[str], int]) -> int:
    """A ``--size``: a size (``1GiB``, bytes) or, with ``%``, a share of the working set."""
    text = text.strip()
    if text.endswith("%"):
        share = float(text[:-1]) / 100
        return max(1, int(trace.working_set(objects) * share))
    return int(text) if objects else parse(text)
