"""The configuration as the rest of cachefs sees it: frozen dataclasses and the defaults."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from cachefs.config.keys import KeyPath
from cachefs.config.units import DAY, HOUR, MINUTE, GiB, KiB, MiB

TIER_NAMES = ("ram", "ssd", "hdd")  # fastest first
CONTENT_TYPES = ("media", "metadata", "thumbnail", "config", "user_data")
EVICTION_POLICIES = ("lru", "lfu", "weight", "tinylfu")
STATS_BACKENDS = ("auto", "redis", "embedded")
# How changes made directly on the origin are noticed: auto = inotify on a local
# file system, poll on a network/FUSE one (whose remote changes raise no events).
WATCH_MODES = ("auto", "inotify", "poll", "off")


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
    eviction: str  # one of EVICTION_POLICIES; "lru" for ram, where scan_resistant decides
    ttl: float  # seconds
    min_free: int  # bytes to leave free on the tier's filesystem; always 0 for ram
    # RAM tier: W-TinyLFU (policies.py) when true, so a library scan cannot flush
    # the hot set; a plain LRU when false. Disk tiers use their eviction policy.
    scan_resistant: bool = False


@dataclass(frozen=True)
class ContentTypeConfig:
    name: str
    default_tier: str  # one of TIER_NAMES
    compression: bool
    compression_level: int  # zstd level
    chunk_size: int  # bytes, a multiple of 4096
    # 0..1: the type's weight in the keep score (reads x recency x weight) that
    # ranks eviction in the weight policy and decides promotion and demotion
    keep_weight: float

    @property
    def prefetch_threshold(self) -> float:
        """The old name of keep_weight (the config key it was), for callers not yet renamed."""
        return self.keep_weight


@dataclass(frozen=True)
class Rule:
    glob: str  # matched against the path relative to the origin root
    type: str  # one of CONTENT_TYPES


@dataclass(frozen=True)
class PredictionConfig:
    window_size: int  # accesses remembered
    # 0..1: the keep score an HDD chunk needs to be promoted to the SSD; an SSD
    # eviction scoring at least half of it is demoted to the HDD
    promote_threshold: float
    max_prefetch_size: int  # bytes a prediction may fetch ahead, in all; 0 = no prefetch
    # 0..1: how likely a predicted file must be to be prefetched
    prefetch_confidence: float = 0.5
    # > 0: what moving a chunk up costs, in reads of it from the lower tier (a read
    # there and a write above); promotion needs a score of promote_threshold x this
    promote_move_cost: float = 2.0
    # >= 0: times a day promotions may rewrite the SSD tier (its max_size), spread
    # over the hours; 0 = no promotion
    promote_rewrites_per_day: float = 1.0

    @property
    def min_confidence(self) -> float:
        """The old name of promote_threshold (the config key it was), for callers not yet
        renamed."""
        return self.promote_threshold


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
    # An absolute file path: the chunk accesses as the tiers see them, CSV for
    # `cachefs simulate` (data/accesslog.py); "" = off
    access_log: str = ""
    access_log_max_size: int = 64 * MiB  # bytes; then PATH -> PATH.1 and a new PATH


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
    # bytes of writes queued for the origin, all files, before writers wait;
    # 0 = write-through: write() returns once the origin has the bytes
    write_buffer: int = 64 * MiB
    # seconds the kernel may keep entries and attributes confirmed under a working
    # inotify watch (cachefs invalidates them when the watch reports a change);
    # 0 = the attr_timeout / entry_timeout of everything else
    watched_timeout: float = HOUR


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
    persist: bool  # keep the metadata store (SQLite, WAL) in the state directory
    walk_ahead: bool = True  # list ahead of a client walking a tree (engine/walkahead.py)


@dataclass(frozen=True)
class OriginConfig:
    timeout: float  # seconds; an origin operation slower than this marks the origin offline
    probe_interval: float  # seconds between checks of an offline origin


@dataclass(frozen=True)
class MetricsConfig:
    # HOST:PORT of the Prometheus endpoint (config/address.py); "" = no endpoint
    listen: str = ""


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
    metrics: MetricsConfig = MetricsConfig()  # a default: callers from before it keep working
    # pins.json, metadata.sqlite and the embedded stats; None: the SSD tier's directory
    # (see state_directory)
    state_dir: Path | None = None
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
            # DESIGN.md's table has ssd lfu, hdd weight (from the original manager);
            # tinylfu replaces both: measured in docs/benchmarks.md, lfu and weight
            # are far worse than LRU on a file-system trace, tinylfu is not.
            "ssd": TierConfig("ssd", Path("/var/cache/cachefs/ssd"), 5 * GiB, "tinylfu", DAY, GiB),
            "hdd": TierConfig(
                "hdd", Path("/var/cache/cachefs/hdd"), 50 * GiB, "tinylfu", 7 * DAY, GiB
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
        mount=MountConfig(1.0, 1.0, 16, MiB, 50e-6, False, 64 * MiB, HOUR),
        metadata=MetadataConfig(1.0, "auto", 10 * MINUTE, 5.0, 20, 500_000, True),
        origin=OriginConfig(5.0, 2.0),
        metrics=MetricsConfig(""),
        state_dir=None,
        source=None,
    )


def state_directory(cfg: Config) -> Path:
    """Where the mount keeps its state (pins.json, metadata.sqlite, the embedded stats):
    ``state_dir`` when set, else the SSD tier's directory, where it always was."""
    if cfg.state_dir is not None:
        return cfg.state_dir
    ssd = cfg.tiers["ssd"].path
    assert ssd is not None  # the config gives every disk tier a path
    return ssd


def lookup(cfg: Config, path: KeyPath) -> Any:
    """The value at a key path: ``("tiers", "ssd", "ttl")`` -> ``cfg.tiers["ssd"].ttl``."""
    obj: Any = cfg
    for part in path:
        obj = obj[part] if isinstance(obj, Mapping) else getattr(obj, str(part))
    return obj
