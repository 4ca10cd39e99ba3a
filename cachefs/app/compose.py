"""The composition root: one function builds every part of a mount from its Config.

:func:`build` makes the parts and hands each the others it needs; nothing
else in cachefs constructs a collaborator. :class:`Mount` then runs the
mount's life in order:

1. :meth:`Mount.open` (blocking, before mounting): the disk tiers are created,
   checked and locked, then pins, the stats backend and the metadata store
   are read from the state directory (the SSD tier's unless ``state_dir`` is
   set), which by then has passed its ownership check;
2. :meth:`Mount.connect` (blocking): reach the origin, or start offline from
   the metadata store; settle the change detection mode;
3. :meth:`Mount.tasks` / :meth:`Mount.shutdown_steps`: what the Engine runs
   while the mount is served, and how it stops;
4. :meth:`Mount.close`: tiers, store and stats backend closed.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from cachefs.common import private
from cachefs.common.supervise import Task
from cachefs.config import Config, state_directory
from cachefs.data.accesslog import AccessLog
from cachefs.data.chunkcache import ChunkCache
from cachefs.data.chunks import origin_namespace
from cachefs.data.pins import PinTable
from cachefs.data.rules import ContentTypeResolver
from cachefs.data.tiers.disk import DiskTier
from cachefs.data.tiers.ram import RamTier
from cachefs.engine.control import CacheControl
from cachefs.engine.engine import Engine, ShutdownStep
from cachefs.engine.prefetch import Prefetcher
from cachefs.engine.tasks import Flusher, Janitor, MetadataLoader, MetadataSaver, Migrator
from cachefs.engine.walkahead import WalkAhead
from cachefs.fuse.inodes import InodeTable
from cachefs.fuse.loop import BusyPoll, describe_busy_poll
from cachefs.fuse.operations import CacheFS
from cachefs.meta.cache import MetadataCache
from cachefs.meta.changes import ChangeDetector, filesystem_of
from cachefs.meta.store import MetadataStore
from cachefs.meta.xattrs import XattrCache
from cachefs.origin.access import Origin, is_mountpoint
from cachefs.origin.facts import OriginFacts
from cachefs.origin.fstypes import close_reports_errors
from cachefs.origin.monitor import OriginMonitor
from cachefs.stats.counters import Stats, StatsBackend
from cachefs.stats.snapshot import LatestReport

log = logging.getLogger(__name__)

DRAIN_SECONDS = 10.0  # at unmount: how long queued chunks may take to reach their tier
HOT_FILES_REPORTED = 10  # in the stats report, for cachefs top
PUBLISH_INTERVAL = 1.0  # seconds between two reports handed to the metrics endpoint


class StateUnusable(Exception):
    """The state directory cannot be made private (ownership, modes, permissions)."""


class AccessLogUnusable(Exception):
    """The access log (stats.access_log) cannot be opened as a private file of ours."""


@dataclass
class Mount:
    """Every part of one mount, built by :func:`build`."""

    cfg: Config
    origin: Origin
    facts: OriginFacts
    monitor: OriginMonitor
    stats: Stats
    meta: MetadataCache
    detector: ChangeDetector
    ram: RamTier
    disks: dict[str, DiskTier]
    disk_limiter: trio.CapacityLimiter
    cache: ChunkCache
    pins: PinTable
    control: CacheControl
    prefetcher: Prefetcher
    engine: Engine
    fs: CacheFS
    open_stats: Callable[[], StatsBackend]
    state_dir: Path
    meta_store: MetadataStore | None = None
    loader: MetadataLoader | None = None  # reads the store while serving (online at mount)
    stats_backend: StatsBackend | None = None
    access_log: AccessLog | None = None  # stats.access_log, when set
    busy_poll: BusyPoll | None = None  # set by the server when pyfuse3 polls
    started_at: float = field(default_factory=time.time)  # Unix time the daemon built it
    # the report for the metrics endpoint's threads (metrics.listen), published by a task
    latest: LatestReport = field(default_factory=LatestReport)
    _steps: list[ShutdownStep] = field(default_factory=list)

    # -- before mounting ---------------------------------------------------------------

    def open(self) -> None:
        """Create and lock the disk tier directories (fail early), then read the state."""
        for tier in self.disks.values():
            tier.open()
        # Made private and checked like a tier directory (the SSD tier's, by default).
        try:
            private.ensure_private_dir(self.state_dir)
        except OSError as exc:
            raise StateUnusable(str(exc)) from None
        if self.access_log is not None:
            try:
                self.access_log.open()
            except OSError as exc:
                reason = exc.strerror or str(exc)
                raise AccessLogUnusable(
                    f"stats.access_log = {self.access_log.path}: cannot open it: {reason}"
                ) from None
        self.pins.load()
        self.stats_backend = self.open_stats()
        self.prefetcher.use_backend(self._backend)
        if self.cfg.metadata.persist:
            store = MetadataStore(self.state_dir, self.origin.root)
            store.open()
            self.meta.restore_root(store.root())  # an offline start needs it to mount
            self.meta_store = store

    def connect(self) -> None:
        """Blocking: reach the origin, or start offline from the metadata store."""
        facts = self.meta_store.meta() if self.meta_store is not None else {}
        self.origin.expect_mountpoint = bool(facts.get("root_mountpoint"))
        self.facts.restore_statvfs(facts.get("statvfs"))
        try:
            _with_timeout(self.origin.reconnect, self.cfg.origin.timeout)
        except OSError as exc:
            if self.meta.root.st is None:
                raise
            self.origin.root_ino = self.meta.root.st.st_ino
            self.monitor.mark_offline(f"at mount: {exc}")
            filesystem = None
            if self.meta_store is not None:  # the tree to serve offline, before serving
                restored = self.meta_store.load_into(self.meta)
                log.info("metadata store %s: %d entries restored", self.meta_store.path, restored)
        else:
            # A mount point now must stay one: if it turns into a plain directory
            # later, the share was unmounted, not emptied.
            self.origin.expect_mountpoint = is_mountpoint(self.origin.root)
            self.facts.forward_flush = close_reports_errors(self.origin.root)
            filesystem = filesystem_of(self.origin.root)
            self.facts.remember_statvfs(os.statvfs(self.origin.root))
            if self.meta_store is not None:
                self.meta_store.set_meta(
                    root_mountpoint=self.origin.expect_mountpoint, statvfs=self.facts.statvfs
                )
                # Online, nothing needs the store to answer: it is read while serving.
                self.loader = MetadataLoader(self.meta, self.meta_store, self.disk_limiter)
                self.detector.store_loaded = self.loader.wait
        self.fs.inodes.root_ino = self.origin.root_ino
        self.detector.settle(filesystem)

    # -- while served ------------------------------------------------------------------

    def tasks(self) -> list[Task]:
        """Every background task of the mount, for the Engine (after connect)."""
        cfg = self.cfg
        janitor = Janitor(
            self.ram,
            cfg.tiers["ram"].ttl,
            self.disks,
            self.disk_limiter,
            cfg.monitoring.cleanup_interval,
        )
        flusher = Flusher(self.stats, self._backend(), cfg.monitoring.stats_interval)
        migrator = Migrator(
            self.cache,
            self.disks["hdd"],
            self.disks["ssd"],
            cfg.prediction.promote_threshold,
            self.stats,
            self.disk_limiter,
            move_cost=cfg.prediction.promote_move_cost,
            rewrites_per_day=cfg.prediction.promote_rewrites_per_day,
        )
        saver = MetadataSaver(self.meta, self.meta_store, self.disk_limiter)
        access_log = self.access_log
        self._steps = [
            ShutdownStep("queued writes reach the origin", self.fs.writes.drain_all, DRAIN_SECONDS),
            ShutdownStep("drain chunk stores", self.cache.drain, DRAIN_SECONDS),
            *([ShutdownStep("flush the access log", access_log.flush)] if access_log else []),
            ShutdownStep("flush stats", flusher.flush_once),
            ShutdownStep("save metadata", saver.save_once),
            ShutdownStep("save the prediction model", self.prefetcher.save_model),
        ]
        metrics = [Task("metrics snapshot", self.publish_reports)] if cfg.metrics.listen else []
        logging_ = [Task("access log writer", access_log.run)] if access_log else []
        return [
            *metrics,
            *logging_,
            *self.cache.tasks(),
            Task("origin monitor", self.monitor.run),
            *self.detector.tasks(),
            *([Task("metadata load", self.loader.run, once=True)] if self.loader else []),
            Task("pin re-apply", self._reapply_pins, once=True),
            Task("janitor", janitor.run),
            Task("stats flusher", flusher.run),
            Task("migrator", migrator.run),
            Task("metadata saver", saver.run),
            Task("prefetcher", self.prefetcher.run),
            *([Task("walk-ahead", self.fs.walker.run)] if self.fs.walker.enabled else []),
            Task("prediction model", self.prefetcher.keep_saving),
        ]

    async def _reapply_pins(self) -> None:
        if self.loader is not None:  # the pinned files are found in the metadata
            await self.loader.wait()
        await self.control.reapply_pins()

    async def publish_reports(self) -> None:
        """The report, handed to the metrics endpoint's threads every second: they
        convert that copy and never touch what the trio thread changes."""
        while True:
            self.latest.publish(self.report())
            await trio.sleep(PUBLISH_INTERVAL)

    def shutdown_steps(self) -> list[ShutdownStep]:
        """In order: queued chunks reach their tier, stats are flushed, metadata saved."""
        return list(self._steps)

    def _backend(self) -> StatsBackend:
        assert self.stats_backend is not None, "open() opens it"
        return self.stats_backend

    def report(self) -> dict[str, Any]:
        """``user.cachefs.stats``: counters, tier sizes, origin and watch state."""
        counters = self.stats.snapshot()
        return (
            {
                "origin": self.origin.root,
                "started_at": round(self.started_at, 3),
                "tiers": {"ram": self.ram.stats()}
                | {name: tier.stats_dict() for name, tier in self.disks.items()},
                # per "tier:content type": chunk lookups that hit, missed, bytes served
                "tier_hits": _per_tier(counters, "hits:"),
                "tier_misses": _per_tier(counters, "misses:"),
                "tier_bytes": _per_tier(counters, "bytes:"),
                "background_failures": counters.get("background_failures", 0),
                "origin_changed_during_read": counters.get("origin_changed_during_read", 0),
                "xattr_hits": counters.get("xattr_hits", 0),
                "origin_bytes_read": counters.get("origin_bytes_read", 0),
                "origin_reads": counters.get("origin_reads", 0),
                "corrupt_chunks": counters.get("corrupt_chunks", 0),
                "promotions": counters.get("promotions", 0),
                "demotions": counters.get("demotions", 0),
                "compressed_bytes_saved": counters.get("compressed_bytes_saved", 0),
                "stats_backend": self._backend().name,
                "stats_pending_files": self.stats.pending_files(),
                "store_skipped": counters.get("store_skipped", 0),
                "access_log": str(self.access_log.path) if self.access_log else "off",
                "access_log_records": counters.get("access_log_records", 0),
                "access_log_dropped": counters.get("access_log_dropped", 0),
                "access_log_rotations": counters.get("access_log_rotations", 0),
                "fuse_reads": counters.get("fuse_reads", 0),
                "fuse_read_bytes": counters.get("fuse_read_bytes", 0),
                "fuse_read_bytes_served": counters.get("fuse_read_bytes_served", 0),
                "read_seconds": self.stats.read_seconds.snapshot(),
                "fuse_flushes": counters.get("fuse_flushes", 0),
                "hot_files": self.stats.hot.top(HOT_FILES_REPORTED),
                "fills_in_flight": self.cache.fills_in_flight(),
                "open_files": self.fs.open_file_count,
                "known_inodes": self.fs.inodes.count(),
                "metadata_entries": self.meta.count(),
                "metadata_hits": counters.get("metadata_hits", 0),
                "metadata_revalidations": counters.get("metadata_revalidations", 0),
                "metadata_listings": counters.get("metadata_listings", 0),
                "watched_directories": self.detector.watched_count(),
                "change_detection": self.detector.mode,
                "change_detection_reason": self.detector.reason,
                **describe_busy_poll(self.busy_poll),
            }
            | self.monitor.describe()
            | self.prefetcher.describe(counters)
            | self.fs.walker.describe(counters)
        )

    # -- after unmounting --------------------------------------------------------------

    def close(self) -> None:
        if self.access_log is not None:
            self.access_log.close()
        for tier in self.disks.values():
            tier.close()
        if self.meta_store is not None:
            self.meta_store.close()
        if self.stats_backend is not None:
            self.stats_backend.close()


def build(origin: Origin, cfg: Config, open_stats: Callable[[], StatsBackend]) -> Mount:
    """Every part of a mount of *origin*, wired; nothing opened or started yet.

    *open_stats* opens the stats backend; it is called by :meth:`Mount.open`
    once the state directory (where the embedded backend keeps its file) has
    passed its ownership check.
    """
    stats = Stats()
    monitor = OriginMonitor(
        origin, cfg.origin.timeout, cfg.origin.probe_interval, cfg.mount.max_threads
    )
    meta = MetadataCache(cfg.metadata.revalidate_after, cfg.metadata.max_entries)
    detector = ChangeDetector(cfg.metadata, meta, origin, monitor, stats)
    ram = RamTier(cfg.tiers["ram"].max_size, cfg.tiers["ram"].scan_resistant)
    namespace = origin_namespace(origin.root)
    disks = {name: DiskTier(cfg.tiers[name], namespace, stats) for name in ("ssd", "hdd")}
    # An SSD eviction moves a chunk that still earns it down to the HDD.
    disks["ssd"].demote_to = disks["hdd"]
    disks["ssd"].demote_threshold = cfg.prediction.promote_threshold / 2
    # Worker threads for tier files; origin threads are the monitor's.
    disk_limiter = trio.CapacityLimiter(cfg.mount.max_threads)
    engine = Engine(stats)
    access_log = None
    if cfg.stats.access_log:
        access_log = AccessLog(
            Path(cfg.stats.access_log), cfg.stats.access_log_max_size, namespace, stats
        )
    cache = ChunkCache(
        ram,
        disks,
        stats,
        monitor.reads,
        disk_limiter,
        origin_call=monitor.call,
        spawn=engine.spawn,
        access_log=access_log,
    )
    state_dir = state_directory(cfg)
    pins = PinTable(state_dir / "pins.json")
    resolver = ContentTypeResolver(cfg)
    control = CacheControl(meta, resolver, ram, disks, cache, pins, disk_limiter)
    prefetcher = Prefetcher(
        cfg.prediction,
        cache,
        meta,
        resolver,
        pins,
        origin,
        monitor,
        stats,
        model_key=f"prediction-{namespace.hex()[:32]}",
    )
    walker = WalkAhead(
        cfg.metadata.walk_ahead,
        stats,
        busy=lambda: cache.foreground_fills() > 0 or fs.listings_in_flight() > walker.in_flight,
        fresh=meta.listing_fresh,
        online=lambda: monitor.online,
    )
    mount: Mount

    def report() -> dict[str, Any]:
        return mount.report()

    fs = CacheFS(
        cfg=cfg,
        origin=origin,
        facts=OriginFacts(),
        monitor=monitor,
        inodes=InodeTable(origin.root_ino),
        meta=meta,
        xattr_cache=XattrCache(),
        detector=detector,
        resolver=resolver,
        ram=ram,
        cache=cache,
        pins=pins,
        control=control,
        prefetcher=prefetcher,
        walker=walker,
        engine=engine,
        stats=stats,
        report=report,
    )
    walker.list_dir = fs.list_directory
    prefetcher.head_ready = fs.hand_to_kernel
    walker.cached_listing = meta.listing
    walker.one_chunk, walker.fetch_file = prefetcher.one_chunk, prefetcher.fetch_one_chunk_file
    detector.listener = fs
    monitor.on_online.append(fs.back_online)
    mount = Mount(
        cfg=cfg,
        origin=origin,
        facts=fs.facts,
        monitor=monitor,
        stats=stats,
        meta=meta,
        detector=detector,
        ram=ram,
        disks=disks,
        disk_limiter=disk_limiter,
        cache=cache,
        pins=pins,
        control=control,
        prefetcher=prefetcher,
        engine=engine,
        fs=fs,
        open_stats=open_stats,
        state_dir=state_dir,
        access_log=access_log,
    )
    return mount


def _per_tier(counters: dict[str, Any], prefix: str) -> dict[str, int]:
    return {k.removeprefix(prefix): v for k, v in counters.items() if k.startswith(prefix)}


def _with_timeout(fn: Callable[[], None], timeout: float) -> None:
    """Blocking, before trio runs: *fn* in a daemon thread, ETIMEDOUT if it hangs."""
    failure: list[BaseException] = []

    def run() -> None:
        try:
            fn()
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=run, daemon=True, name="origin-connect")
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise OSError(errno.ETIMEDOUT, f"no answer within {timeout:g}s")
    if failure:
        raise failure[0]
