"""The FUSE handlers: metadata from the metadata cache, reads through the chunk cache.

Every handler is async; origin I/O runs in worker threads through the outage
monitor (cachefs.origin.monitor), so a slow origin never blocks the trio loop
and a dead one is noticed. Lookups, getattr, readdir and read-only opens are
answered from the metadata cache while its entries are fresh; changes go to
the origin first, then update the cache.

Longer than the other modules, for a reason: pyfuse3 dispatches every request
to one Operations object, and its handlers share the inode table, the open
handles and the per-file states, so they stay one class. What needs none of
that lives beside it: the handles (handles.py), the control xattrs
(xattrs.py), the cache controls (cachefs.engine.control).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import itertools
import logging
import os
import stat
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, ParamSpec, TypeVar

import pyfuse3
import trio
from pyfuse3 import FUSEError

from cachefs.config import Config, ContentTypeConfig
from cachefs.data.chunkcache import ChunkCache
from cachefs.data.chunks import ChunkKey
from cachefs.data.pins import PinTable
from cachefs.data.rules import ContentTypeResolver
from cachefs.data.tiers.ram import RamTier
from cachefs.engine.control import CacheControl
from cachefs.engine.engine import Engine
from cachefs.engine.prefetch import Prefetcher
from cachefs.engine.walkahead import WalkAhead
from cachefs.fuse import xattrs
from cachefs.fuse.handles import (
    DirHandle,
    FileState,
    OpenFile,
    close_a_duplicate,
    fstat_file,
    open_now,
    sync_file,
)
from cachefs.fuse.inodes import ROOT_INODE, InodeTable
from cachefs.fuse.kernelcache import KernelStore
from cachefs.fuse.writes import WriteBehind
from cachefs.meta.cache import MetadataCache, StatInfo, join, split
from cachefs.meta.changes import ChangeDetector
from cachefs.meta.xattrs import XattrCache
from cachefs.origin.access import (
    RENAME_EXCHANGE,
    FileVersion,
    Origin,
    OriginFile,
    open_flags_for_origin,
)
from cachefs.origin.facts import OriginFacts
from cachefs.origin.monitor import OriginMonitor, OriginOffline
from cachefs.stats.counters import Stats

log = logging.getLogger(__name__)

WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_APPEND
CAPABILITY_XATTR = b"security.capability"
# Our own changes make the origin's watch report them too; the kernel needs no
# notice of those (it saw the change itself).
OWN_CHANGE_SECONDS = 2.0
# Kernel invalidations sent in one worker thread when a watch is lost.
DROP_BATCH = 256

P = ParamSpec("P")
T = TypeVar("T")


def version_mark(st: StatInfo | os.stat_result) -> int:
    """A FileVersion's fields (the inode aside: the mark is kept per inode) in one
    int. Two versions of one file with the same mark would take a 64-bit hash
    collision; the cost of one would be the kernel keeping the older attributes
    for attr_timeout, as it may without close-to-open."""
    return hash((st.st_size, st.st_mtime_ns, st.st_ctime_ns))


def advise(fn: Callable[..., None], *args: Any) -> None:
    """Tell an advisory part (prediction, walk-ahead) what a client did. Those only
    guess what comes next: a bug in one is logged, and never fails the request it
    watches (a walk-ahead KeyError once failed a library scan's readdir)."""
    try:
        fn(*args)
    except Exception:
        log.exception("%s failed; the request goes on", getattr(fn, "__qualname__", fn))


def fuse_handler(
    fn: Callable[P, Coroutine[Any, Any, T]],
) -> Callable[P, Coroutine[Any, Any, T]]:
    """Turn every failure into a clean errno; pyfuse3 dies on anything but FUSEError."""

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await fn(*args, **kwargs)
        except FUSEError:
            raise
        except OSError as exc:
            raise FUSEError(exc.errno or errno.EIO) from None
        except Exception:
            log.exception("unexpected error in %s", fn.__name__)
            raise FUSEError(errno.EIO) from None

    return wrapper


class CacheFS(pyfuse3.Operations):
    """The FUSE handlers. Every part they use is built by the composition root
    (cachefs.app.compose) and handed in; nothing here starts or stops anything."""

    supports_dot_lookup = False  # no NFS export, so the kernel never asks for . and ..

    def __init__(
        self,
        *,
        cfg: Config,
        origin: Origin,
        facts: OriginFacts,
        monitor: OriginMonitor,
        inodes: InodeTable,
        meta: MetadataCache,
        xattr_cache: XattrCache,
        detector: ChangeDetector,
        resolver: ContentTypeResolver,
        ram: RamTier,
        cache: ChunkCache,
        pins: PinTable,
        control: CacheControl,
        prefetcher: Prefetcher,
        walker: WalkAhead,
        engine: Engine,
        stats: Stats,
        report: Callable[[], dict[str, Any]],
    ) -> None:
        super().__init__()
        self.origin, self.facts, self.monitor, self.inodes = origin, facts, monitor, inodes
        self.meta, self.xattr_cache, self.detector = meta, xattr_cache, detector
        self.resolver, self.ram, self.cache, self.pins = resolver, ram, cache, pins
        self.engine, self.stats, self.prefetcher = engine, stats, prefetcher
        self.walker = walker
        self.control_xattrs = xattrs.ControlXattrs(self, control, prefetcher, report, cfg)
        # The kernel may keep attributes and names no longer than we would trust them.
        self.attr_timeout = min(cfg.mount.attr_timeout, cfg.metadata.revalidate_after)
        self.entry_timeout = min(cfg.mount.entry_timeout, cfg.metadata.revalidate_after)
        # Except what a working watch vouches for: the kernel is told when it changes
        # (tell_kernel), or when the watch stops vouching (watch_lost).
        watched = cfg.mount.watched_timeout
        self.watched_timeouts = (max(watched, self.entry_timeout), max(watched, self.attr_timeout))
        self._long_timeouts = watched > 0
        self._lost: set[bytes] = set()  # subtrees whose kernel copies are to be dropped
        self._dropping = False  # a task drops them
        # pyfuse3 asks for FUSE_CAP_WRITEBACK_CACHE at INIT when this is set.
        self.enable_writeback_cache = cfg.mount.writeback_cache
        # With the kernel's writeback cache the kernel queues writes itself.
        write_buffer = 0 if cfg.mount.writeback_cache else cfg.mount.write_buffer
        self.writes = WriteBehind(write_buffer, monitor, engine.spawn, self._write_landed)
        self._notify_limiter = trio.CapacityLimiter(2)  # kernel cache invalidations and stores
        self.kernel_store = KernelStore(self._notify_limiter, engine.spawn, stats)
        self._own_changes: dict[bytes, float] = {}  # path -> when we changed it
        self._files: dict[int, OpenFile] = {}
        self._dirs: dict[int, DirHandle] = {}
        self._listings: dict[bytes, trio.Event] = {}  # origin listings in flight, by path
        self._states: dict[int, FileState] = {}
        self._handle_ids = itertools.count(1)
        self._as_root = os.geteuid() == 0
        self.initialized = trio.Event()

    # -- what other parts ask of the handlers ---------------------------------------------

    @property
    def open_file_count(self) -> int:
        return len(self._files)

    def path_of(self, inode: int) -> bytes:
        return self._path(inode)

    async def cached_attr(self, path: bytes) -> StatInfo:
        return await self._stat_inode_cached(path)

    def forget_metadata(self, path: bytes) -> None:
        """``user.cachefs.forget``: what is cached of *path* and below is revalidated at
        its next use (kept meanwhile, for offline use), and the kernel is told."""
        self.meta.stale_tree(path)
        self.meta.stale_listing(path)
        self.xattr_cache.forget(path)
        dirpath, name = split(path)
        self.tell_kernel(dirpath, name, True)
        self.watch_lost(path)  # what the kernel holds below it, too

    def open_version(self, inode: int) -> FileVersion | None:
        state = self._states.get(inode)
        return state.version if state is not None and state.handles else None

    def hand_to_kernel(
        self, path: bytes, version: FileVersion, chunks: Sequence[tuple[ChunkKey, bytes]]
    ) -> None:
        """A prefetched head of *path* (its first chunks, of *version*) goes into the
        kernel's page cache, where the open the prediction expects keeps it
        (cachefs.fuse.kernelcache). Only where the kernel can hold no page of
        another version, and no reader or writer is using the file."""
        inode = self.inodes.find(path)
        entry = self.meta.get(path)
        st = entry.st if entry is not None else None
        if (
            inode is None  # the kernel does not know the file: its reads come here
            or inode != self.inodes.fuse_ino(version.ino)  # another file under the name now
            or st is None
            or FileVersion.of(st) != version  # changed since the prefetch read it
            or self.enable_writeback_cache  # the kernel would trust the size it stores
            or self.kernel_store.busy(inode)
        ):
            return
        state = self._states.get(inode)
        if state is not None and (
            state.handles or state.writers or state.written or state.version not in (None, version)
        ):
            return
        state = self._state(inode)
        # The kernel will hold pages of this version: an open of another one drops them.
        state.version, state.chunk_size = version, chunks[0][0].chunk_size
        if self.kernel_store.store(inode, [(key.offset, data) for key, data in chunks]):
            state.handed = [key for key, _ in chunks]

    def _in_background(self, fn: Callable[..., Coroutine[Any, Any, None]], *args: Any) -> None:
        self.engine.spawn(fn.__name__, fn, *args)

    def init(self) -> None:
        # Called by libfuse while it answers the kernel's INIT request.
        self.initialized.set()

    # -- helpers -------------------------------------------------------------

    async def _io(self, fn: Callable[..., T], *args: Any) -> T:
        """A blocking origin call that reads (timed: a hang marks the origin offline)."""
        return await self.monitor.call(fn, *args)

    async def _untimed(self, fn: Callable[..., T], *args: Any) -> T:
        """A blocking origin call that may rightly take long (fsync, a FIFO): never cut short."""
        return await self.monitor.call(fn, *args, timed=False)

    async def _change(self, fn: Callable[..., T], *args: Any) -> T:
        """A blocking origin call that changes something: EROFS while offline, never cut short."""
        self._require_online()
        return await self._untimed(fn, *args)

    def _require_online(self) -> None:
        if not self.monitor.online:
            raise FUSEError(errno.EROFS)  # changes are refused, never queued and lost

    def _changed_here(self, *paths: bytes) -> None:
        now = time.monotonic()
        for path in paths:
            self._own_changes[path] = now
        if len(self._own_changes) > 4096:
            self._own_changes = {
                p: t for p, t in self._own_changes.items() if now - t < OWN_CHANGE_SECONDS
            }

    # -- metadata: cache first, origin when stale -------------------------------------

    async def _attr(self, path: bytes) -> StatInfo:
        """lstat of origin *path*: from the metadata cache while fresh, else the origin."""
        self.detector.catch_up()  # a change the watch has reported already counts
        entry = self.meta.get(path)
        if entry is not None and (self.meta.fresh(entry) or not self.monitor.online):
            self.stats.add("metadata_hits")
            return _existing(entry.st)
        if not self.monitor.online:
            raise OriginOffline()  # never seen: nothing true to say
        self.stats.add("metadata_revalidations")
        dirpath = split(path)[0]
        token = self.meta.token(dirpath)
        try:
            if path:  # watched before it is asked, in the lstat's own worker thread
                raw = await self.detector.read_covered(dirpath, self.origin.lstat, path)
            else:
                raw = await self._io(self.origin.lstat, path)
        except FileNotFoundError:
            self._observed(path, None, self.meta.token_covered(token))
            raise
        except OriginOffline:
            if entry is None:
                raise
            return _existing(entry.st)
        st = StatInfo.of(raw)
        self._observed(path, st, self.meta.token_covered(token))
        return st

    def _observed(self, path: bytes, st: StatInfo | None, token: Any = None) -> None:
        """Record what the origin said of *path*; a changed file loses its old chunks."""
        before = self.meta.put(path, st, token)
        if before is not None and before != st:
            self._forget_content(path, before, st)

    def _forget_content(self, path: bytes, before: StatInfo, now: StatInfo | None) -> None:
        if not stat.S_ISREG(before.st_mode):
            return
        old = FileVersion.of(before)
        if now is None or FileVersion.of(now) != old:
            self._drop_version(old, self.policy_for(path).chunk_size)

    def _drop_version(self, old: FileVersion, chunk_size: int) -> None:
        """A file version the origin no longer has: its chunks leave every tier."""
        self.ram.drop_file(old.ino)
        state = self._states.get(self.inodes.fuse_ino(old.ino))
        if state is not None:
            if state.no_chunks == old:
                return  # nothing of it was cached, or it was dropped already
            state.no_chunks = old
        if chunk_size:
            self._in_background(self.cache.forget_version, old, chunk_size)

    async def _listing(self, dirpath: bytes) -> list[tuple[bytes, StatInfo]]:
        """Entries of origin directory *dirpath* with their lstat, cache first.

        One listing of a directory at a time: a caller that finds one in flight
        waits for it, then asks the cache again, so what that listing brought
        answers it only if still fresh (no event since, ...), as any cached listing.
        """
        while True:
            self.detector.catch_up()
            cached = self.meta.listing(dirpath)
            if cached is not None and (self.meta.listing_fresh(dirpath) or not self.monitor.online):
                self.stats.add("metadata_hits")
                return cached
            if not self.monitor.online:
                raise OriginOffline()
            pending = self._listings.get(dirpath)
            if pending is None:
                break
            await pending.wait()
        done = self._listings[dirpath] = trio.Event()
        try:
            return await self.relist(dirpath)
        except OriginOffline:
            if cached is None:
                raise
            return cached
        finally:
            del self._listings[dirpath]
            done.set()

    async def list_directory(self, dirpath: bytes) -> list[tuple[bytes, StatInfo]]:
        """A listing through the cache, as a client's (for the walk-ahead)."""
        return await self._listing(dirpath)

    def listings_in_flight(self) -> int:
        return len(self._listings)

    async def relist(self, dirpath: bytes) -> list[tuple[bytes, StatInfo]]:
        """Read *dirpath* at the origin and bring the cache in line; returns its entries."""
        token = self.meta.token(dirpath)
        self.stats.add("metadata_listings")
        # Watched before it is read, in the listing's own worker thread.
        raw = await self.detector.read_covered(dirpath, self.origin.listdir, dirpath)
        token = self.meta.token_covered(token)
        entries = [(name, StatInfo.of(st)) for name, st in raw]
        for name, before, now in self.meta.put_listing(dirpath, entries, token):
            if before is not None:
                self._forget_content(join(dirpath, name), before, now)
        return entries

    # -- changes seen at the origin (watch events, the poller) --------------------------

    def tell_kernel(self, dirpath: bytes, name: bytes, content: bool, names: bool = True) -> None:
        """*name* in *dirpath* changed at the origin: drop what the kernel caches of it
        (*names*: the name may have come, gone or moved, so the directory's entry and
        attributes go too; otherwise only what the name holds changed)."""
        path = join(dirpath, name)
        changed_at = self._own_changes.get(path)
        if changed_at is not None and time.monotonic() - changed_at < OWN_CHANGE_SECONDS:
            # Our own change: the kernel saw it happen. With short timeouts that is
            # all; with long ones the event may also be someone else's change in the
            # same moment, which the kernel would keep for watched_timeout: only the
            # pages stay (ours, just written), names and attributes go.
            if not self._long_timeouts or self.detector.mode != "inotify":
                return
            content = False
        parent = self.inodes.find(dirpath)
        child = self.inodes.find(path)
        state = self._states.get(child) if child is not None and content else None
        if state is not None:
            state.recheck = True
        if parent is not None and name and names:
            self._in_background(self._notify_kernel, pyfuse3.invalidate_entry, parent, name)
            if self._long_timeouts:  # its mtime and link count, kept long too
                self._in_background(self._notify_kernel, pyfuse3.invalidate_inode, parent, True)
        if child is not None:
            self._in_background(self._notify_kernel, pyfuse3.invalidate_inode, child, not content)

    def watch_lost(self, dirpath: bytes) -> None:
        """No watch vouches any more for what the kernel holds at and below *dirpath*
        (b"": anywhere): it drops every name and attribute of it, so the next use asks
        here, where the entries are stale (revalidated) and replies short again."""
        self._lost.add(dirpath)
        if not self._dropping:
            self._dropping = self.engine.spawn("watch lost", self._drop_lost)

    async def _drop_lost(self) -> None:
        try:
            while self._lost:
                lost, self._lost = self._lost, set()
                links, inodes = self.inodes.names_in(lost)
                for inode in inodes:  # an open file's next read asks the origin
                    state = self._states.get(inode)
                    if state is not None:
                        state.recheck = True
                calls: list[tuple[Callable[..., None], Any, Any]] = [
                    (pyfuse3.invalidate_entry, parent, name) for parent, name in links
                ]
                calls += [(pyfuse3.invalidate_inode, inode, True) for inode in inodes]
                for start in range(0, len(calls), DROP_BATCH):
                    batch = calls[start : start + DROP_BATCH]
                    await trio.to_thread.run_sync(_notify_all, batch, limiter=self._notify_limiter)
        finally:
            self._dropping = False

    def _kernel_timeouts(
        self, path: bytes | None, st: StatInfo | os.stat_result
    ) -> tuple[float, float]:
        """(entry, attr) timeouts for a reply giving *st* for *path*: long while a watch
        that is read as it reports vouches for exactly that entry (a listing a readdir
        goes on with may be older than the cache), short otherwise (None: unknown)."""
        if (
            path is not None
            and self._long_timeouts
            and self.detector.reporting
            and self.monitor.online
            and self.meta.watched(path, st)
        ):
            return self.watched_timeouts
        return self.entry_timeout, self.attr_timeout

    async def _notify_kernel(self, fn: Callable[..., None], *args: Any) -> None:
        # From a worker thread: the kernel may wait on a request this loop must answer.
        with contextlib.suppress(OSError):  # ENOENT: the kernel had forgotten it already
            await trio.to_thread.run_sync(fn, *args, limiter=self._notify_limiter)

    def back_online(self) -> None:
        """What was served while offline is revalidated before it is trusted again."""
        self.inodes.root_ino = self.origin.root_ino  # a remounted share may number it anew
        self.meta.stale_all()
        self.detector.reset()

    def _path(self, inode: int) -> bytes:
        try:
            return self.inodes.path(inode)
        except KeyError:
            raise FUSEError(errno.ENOENT) from None

    def _child_path(self, parent: int, name: bytes) -> bytes:
        # The origin would refuse the name; a cached listing that lacks it must not
        # answer ENOENT instead (the kernel checks only FUSE's own 1024-byte limit).
        if len(name) > self.facts.statvfs.get("f_namemax", 255):
            raise FUSEError(errno.ENAMETOOLONG)
        try:
            return self.inodes.child_path(parent, name)
        except KeyError:
            raise FUSEError(errno.ENOENT) from None

    def attributes(
        self, st: StatInfo | os.stat_result, path: bytes | None = None
    ) -> pyfuse3.EntryAttributes:
        """The reply for *st*; with the *path* it came from, timeouts that may be long."""
        attrs = pyfuse3.EntryAttributes()
        attrs.st_ino = self.inodes.fuse_ino(st.st_ino)
        attrs.generation = self.inodes.generation(attrs.st_ino)
        attrs.entry_timeout, attrs.attr_timeout = self._kernel_timeouts(path, st)
        attrs.st_mode = st.st_mode
        attrs.st_nlink = st.st_nlink
        attrs.st_uid = st.st_uid
        attrs.st_gid = st.st_gid
        attrs.st_rdev = st.st_rdev
        # writes still queued for the origin count: the kernel must not shrink the file
        attrs.st_size = self.writes.size_with_queued(attrs.st_ino, st.st_size)
        attrs.st_blksize = st.st_blksize
        attrs.st_blocks = st.st_blocks
        attrs.st_atime_ns = st.st_atime_ns
        attrs.st_mtime_ns = st.st_mtime_ns
        attrs.st_ctime_ns = st.st_ctime_ns
        if stat.S_ISREG(st.st_mode):
            # The version the kernel now holds attributes of, as one int in the inode
            # table: after a library scan it holds them for every file.
            self.inodes.set_kernel_mark(attrs.st_ino, version_mark(st))
        return attrs

    def _entry(
        self, parent: int, name: bytes, st: StatInfo | os.stat_result, path: bytes | None = None
    ) -> pyfuse3.EntryAttributes:
        """Attributes for a reply that makes the kernel count one more lookup."""
        self._remember(parent, name, st)
        return self.attributes(st, path)

    def _remember(self, parent: int, name: bytes, st: StatInfo | os.stat_result) -> None:
        inode = self.inodes.fuse_ino(st.st_ino)
        if self.inodes.remember(parent, name, inode, stat.S_IFMT(st.st_mode)):
            # A new file under a reused number: nothing known of the old one applies.
            self._states.pop(inode, None)
            self.inodes.set_kernel_mark(inode, 0)

    def policy_for(self, relpath: bytes) -> ContentTypeConfig:
        return self.resolver.policy(os.fsdecode(relpath))

    def _state(self, inode: int) -> FileState:
        state = self._states.get(inode)
        if state is None:
            state = self._states[inode] = FileState()
        return state

    def _note_version(self, inode: int, st: StatInfo | os.stat_result) -> bool:
        """Record a regular file's current version; True if it was unchanged."""
        state = self._state(inode)
        version = FileVersion.of(st)
        if state.version == version:
            return True
        if state.version is not None:
            self._drop_version(state.version, state.chunk_size)
        state.version, state.handed = version, None
        state.write_generation += 1
        return False

    async def _stat_inode(self, inode: int) -> StatInfo:
        """lstat by path, or fstat an open handle once the file is unlinked."""
        try:
            path = self.inodes.path(inode)
        except KeyError:
            path = None
        if path is not None:
            try:
                return await self._attr(path)
            except FileNotFoundError:
                pass
        state = self._states.get(inode)
        files = [self._files[fh].file for fh in state.handles] if state is not None else []
        for file in files:
            if file.opened:
                return StatInfo.of(await self._io(fstat_file, file))
        raise FUSEError(errno.ENOENT)

    async def _stat_inode_cached(self, path: bytes) -> StatInfo:
        """lstat of *path* from the metadata cache, fresh or not; the origin only when
        nothing is cached (for the control surface, which must not wait on it)."""
        entry = self.meta.get(path)
        if entry is not None:
            return _existing(entry.st)
        return await self._attr(path)

    def _meta_update(self, inode: int, st: os.stat_result) -> None:
        """Our change gave *inode* these attributes, under every name it has."""
        for path in self.inodes.paths(inode):
            self._observed(path, StatInfo.of(st))
            self._changed_here(path)

    def _links_changed(self, inode: int | None) -> None:
        """A link of *inode* came or went: the link count its other names show is old."""
        for path in self.inodes.paths(inode) if inode is not None else []:
            self.meta.stale(path)

    def _owner(
        self, ctx: pyfuse3.RequestContext, parent_st: StatInfo | os.stat_result
    ) -> tuple[int, int]:
        """Owner of a new entry: the caller, with BSD group semantics under setgid dirs."""
        gid = parent_st.st_gid if parent_st.st_mode & stat.S_ISGID else ctx.gid
        return ctx.uid, gid

    async def _create_as_caller(
        self, parent: int, name: bytes, ctx: pyfuse3.RequestContext, make: Callable[[bytes], None]
    ) -> pyfuse3.EntryAttributes:
        """Create an entry with *make*, hand it to the caller, return its attributes."""
        path = self._child_path(parent, name)
        parent_path = self._path(parent)

        def work() -> os.stat_result:
            make(path)
            if self._as_root:
                uid, gid = self._owner(ctx, self.origin.lstat(parent_path))
                self.origin.chown(path, uid, gid)
            return self.origin.lstat(path)

        st = await self._change(work)
        self.meta.added(path, StatInfo.of(st))
        self._changed_here(path, parent_path)
        return self._entry(parent, name, st)

    # -- lookup and attributes ------------------------------------------------

    @fuse_handler
    async def lookup(
        self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        if name == b".":
            return self._entry_for_known(parent_inode, await self._stat_inode(parent_inode))
        if name == b"..":
            grand = self.inodes.parent_of(parent_inode)
            return self._entry_for_known(grand, await self._stat_inode(grand))
        path = self._child_path(parent_inode, name)
        st = await self._attr(path)
        return self._entry(parent_inode, name, st, path)

    def _entry_for_known(self, inode: int, st: StatInfo) -> pyfuse3.EntryAttributes:
        if inode != ROOT_INODE:
            parent = self.inodes.parent_of(inode)
            self._remember(parent, self._path(inode).rpartition(b"/")[2], st)
        return self.attributes(st)

    @fuse_handler
    async def forget(self, inode_list: Sequence[tuple[int, int]]) -> None:
        for inode, count in inode_list:
            self.inodes.forget(inode, count)
            if not self.inodes.known(inode):
                self._states.pop(inode, None)

    @fuse_handler
    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        st = await self._stat_inode(inode)
        if stat.S_ISREG(st.st_mode) and inode in self._states:
            self._revalidate_open_file(inode, st)
        try:
            path: bytes | None = self.inodes.path(inode)
        except KeyError:
            path = None  # unlinked: from its open handle
        if self.inodes.fuse_ino(st.st_ino) != inode:
            path = None  # its name holds another file now: nothing vouches for this inode
        return self.attributes(st, path)

    def _revalidate_open_file(self, inode: int, st: StatInfo) -> None:
        """A file changed at the origin while open: switch to the new version.

        The kernel drops its own stale pages when it sees the new size / mtime
        in these attributes (libfuse enables auto_inval_data).
        """
        state = self._states[inode]
        if state.handles and state.version not in (None, FileVersion.of(st)):
            self._note_version(inode, st)
            # Belt and braces beside auto_inval_data; from a worker thread, since
            # the kernel may wait on pages whose reads this loop must answer.
            self._in_background(self._invalidate_kernel_cache, inode)

    def _changed_under_reader(self, inode: int, version: FileVersion) -> None:
        """A read found the origin file changed (at *version*): the next getattr asks
        the origin, and the kernel, told now, asks before it reads again."""
        state = self._states.get(inode)
        if state is None or state.version == version:
            return
        for path in self.inodes.paths(inode):
            self.meta.stale(path)
        self._in_background(self._invalidate_kernel_cache, inode)

    async def _invalidate_kernel_cache(self, inode: int) -> None:
        with contextlib.suppress(OSError):
            await trio.to_thread.run_sync(
                pyfuse3.invalidate_inode, inode, False, limiter=self._notify_limiter
            )

    @fuse_handler
    async def setattr(
        self,
        inode: int,
        attr: pyfuse3.EntryAttributes,
        fields: pyfuse3.SetattrFields,
        fh: int | None,
        ctx: pyfuse3.RequestContext,
    ) -> pyfuse3.EntryAttributes:
        self._require_online()
        await self.writes.drain(inode)  # a truncate or utime lands after the queued writes
        await self.kernel_store.wait(inode)  # a truncation after the pages stored, not before
        handle = self._files.get(fh) if fh is not None else None
        file = handle.file if handle is not None and handle.file.opened else None
        path = b"" if file is not None else self._path(inode)  # the path is used without an fd
        if fields.update_size and inode in self._states:
            self._states[inode].write_generation += 1

        def work() -> os.stat_result:
            with file.use() if file is not None else contextlib.nullcontext() as fd:
                return change(fd)

        def change(fd: int | None) -> os.stat_result:
            if fields.update_uid or fields.update_gid:
                uid = attr.st_uid if fields.update_uid else -1
                gid = attr.st_gid if fields.update_gid else -1
                os.fchown(fd, uid, gid) if fd is not None else self.origin.chown(path, uid, gid)
            if fields.update_mode:
                mode = stat.S_IMODE(attr.st_mode)
                os.fchmod(fd, mode) if fd is not None else self.origin.chmod(path, mode)
            if fields.update_size:
                size = attr.st_size
                os.ftruncate(fd, size) if fd is not None else self.origin.truncate(path, size)
            if fields.update_atime or fields.update_mtime:
                self._set_times(path, fd, attr, fields)
            return os.fstat(fd) if fd is not None else self.origin.lstat(path)

        st = await self._change(work)
        self._meta_update(inode, st)
        if stat.S_ISREG(st.st_mode) and inode in self._states:
            self._note_version(inode, st)
        return self.attributes(st)

    def _set_times(
        self,
        path: bytes,
        fd: int | None,
        attr: pyfuse3.EntryAttributes,
        fields: pyfuse3.SetattrFields,
    ) -> None:
        current = os.fstat(fd) if fd is not None else self.origin.lstat(path)
        atime = attr.st_atime_ns if fields.update_atime else current.st_atime_ns
        mtime = attr.st_mtime_ns if fields.update_mtime else current.st_mtime_ns
        if fd is not None:
            os.utime(fd, ns=(atime, mtime))
        else:
            self.origin.utime(path, atime, mtime)

    @fuse_handler
    async def readlink(self, inode: int, ctx: pyfuse3.RequestContext) -> bytes:
        return await self._io(self.origin.readlink, self._path(inode))

    @fuse_handler
    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        data = pyfuse3.StatvfsData()
        with contextlib.suppress(OriginOffline):  # df goes on: the last answer
            self.facts.remember_statvfs(await self._io(self.origin.statvfs))
        for name, value in self.facts.statvfs.items():
            setattr(data, name, value)
        return data

    @fuse_handler
    async def access(self, inode: int, mode: int, ctx: pyfuse3.RequestContext) -> bool:
        # Only called without default_permissions; cachefs always mounts with it,
        # so this is a fallback that follows the classic owner/group/other bits.
        st = await self._stat_inode(inode)
        if ctx.uid == 0:
            return not (mode & os.X_OK) or bool(st.st_mode & 0o111) or stat.S_ISDIR(st.st_mode)
        if ctx.uid == st.st_uid:
            bits = (st.st_mode >> 6) & 7
        elif st.st_gid == ctx.gid or st.st_gid in pyfuse3.get_sup_groups(ctx.pid):
            bits = (st.st_mode >> 3) & 7
        else:
            bits = st.st_mode & 7
        return (mode & bits) == mode

    # -- namespace ------------------------------------------------------------

    @fuse_handler
    async def mknod(
        self, parent_inode: int, name: bytes, mode: int, rdev: int, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        return await self._create_as_caller(
            parent_inode, name, ctx, lambda p: self.origin.mknod(p, mode, rdev)
        )

    @fuse_handler
    async def mkdir(
        self, parent_inode: int, name: bytes, mode: int, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        return await self._create_as_caller(
            parent_inode, name, ctx, lambda p: self.origin.mkdir(p, stat.S_IMODE(mode))
        )

    @fuse_handler
    async def symlink(
        self, parent_inode: int, name: bytes, target: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        return await self._create_as_caller(
            parent_inode, name, ctx, lambda p: self.origin.symlink(target, p)
        )

    @fuse_handler
    async def link(
        self, inode: int, new_parent_inode: int, new_name: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        src = self._path(inode)
        dst = self._child_path(new_parent_inode, new_name)

        def work() -> os.stat_result:
            self.origin.link(src, dst)
            return self.origin.lstat(dst)

        st = await self._change(work)
        self._links_changed(inode)
        self.meta.added(dst, StatInfo.of(st))
        self._changed_here(src, dst, split(dst)[0])
        return self._entry(new_parent_inode, new_name, st)

    @fuse_handler
    async def unlink(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        path = self._child_path(parent_inode, name)
        await self._open_lazy_handles(self.inodes.child(parent_inode, name))
        await self._change(self.origin.unlink, path)
        self._removed(parent_inode, name, path)

    @fuse_handler
    async def rmdir(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        path = self._child_path(parent_inode, name)
        await self._change(self.origin.rmdir, path)
        self._removed(parent_inode, name, path)

    def _removed(self, parent_inode: int, name: bytes, path: bytes) -> None:
        inode = self.inodes.child(parent_inode, name)
        self.inodes.unlinked(parent_inode, name)
        self.meta.removed(path)
        self._links_changed(inode)
        self._changed_here(path, split(path)[0])

    async def _open_lazy_handles(self, inode: int | None) -> None:
        """Give lazily opened handles of *inode* their origin fd before its name goes:
        an open file stays readable after unlink, as on a local disk."""
        state = self._states.get(inode) if inode is not None else None
        for fh in list(state.handles) if state is not None else []:
            handle = self._files.get(fh)
            if handle is not None and not handle.file.opened:
                await self._io(open_now, handle.file)

    @fuse_handler
    async def rename(
        self,
        parent_inode_old: int,
        name_old: bytes,
        parent_inode_new: int,
        name_new: bytes,
        flags: int,
        ctx: pyfuse3.RequestContext,
    ) -> None:
        old = self._child_path(parent_inode_old, name_old)
        new = self._child_path(parent_inode_new, name_new)
        await self._open_lazy_handles(self.inodes.child(parent_inode_new, name_new))
        await self._change(self.origin.rename, old, new, flags)
        if flags & RENAME_EXCHANGE:
            for path in (old, new):  # both names still exist, with the other's file
                self.meta.stale(path)
                self.meta.stale_listing(split(path)[0])
                self.meta.forget_tree(path)
        else:
            self.meta.moved(old, new)
        self._changed_here(old, new, split(old)[0], split(new)[0])
        self.inodes.renamed(
            (parent_inode_old, name_old),
            (parent_inode_new, name_new),
            exchange=bool(flags & RENAME_EXCHANGE),
        )

    # -- files ----------------------------------------------------------------

    @fuse_handler
    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        path = self._path(inode)
        writable = bool(flags & WRITE_FLAGS)
        fd: int | None = None
        if writable:
            if flags & os.O_TRUNC:
                await self.writes.drain(inode)  # the truncation comes after what is queued
            fd, raw = await self._change(self._open_origin, path, flags)
            self._meta_update(inode, raw)
            st = StatInfo.of(raw)
        else:
            st = await self._attr(path)
            if not stat.S_ISREG(st.st_mode):  # a FIFO or device: open it for real, untimed
                fd, raw = await self._untimed(self._open_origin, path, flags)
                st = StatInfo.of(raw)
        # A head being stored lands before this reply: one without keep_cache drops it.
        await self.kernel_store.wait(inode)
        unchanged = self._note_version(inode, st)
        self._count_handed(inode, unchanged and not flags & os.O_DIRECT)
        if self.inodes.kernel_mark(inode) != version_mark(st):
            # Close-to-open: the kernel may hold attributes (size!) of an older
            # version for up to attr_timeout; make it ask again before reading.
            self.inodes.set_kernel_mark(inode, 0)
            # Attributes only: no page lock to wait for, so unlike a data
            # invalidation it may run on the trio thread (docs/concurrency.md).
            with contextlib.suppress(OSError):  # ENOENT: the kernel holds no attributes
                pyfuse3.invalidate_inode(inode, attr_only=True)
        fh = self._add_handle(fd, inode, path, flags)
        if not writable and stat.S_ISREG(st.st_mode):
            if not unchanged:  # the kernel holds no page of it: a read will come here
                self.cache.first_read_soon(self._files[fh])
            advise(self.prefetcher.opened, path)  # what comes next is fetched meanwhile
            advise(self.walker.client_opened, path)  # a walking client's next file too
        # keep_cache lets the kernel keep its page cache across opens; only safe
        # while the origin file is the version those pages came from.
        return pyfuse3.FileInfo(fh=fh, keep_cache=unchanged)

    def _count_handed(self, inode: int, kept: bool) -> None:
        """A head handed to the kernel is the prefetch's use once an open keeps it
        (its reads never come here to be counted)."""
        state = self._states[inode]
        if kept and state.handed:
            self.cache.prefetch_read_elsewhere(state.handed)
        state.handed = None

    def _open_origin(self, path: bytes, flags: int) -> tuple[int, os.stat_result]:
        fd = self.origin.open(path, self._origin_open_flags(flags))
        return fd, os.fstat(fd)

    def _origin_open_flags(self, flags: int) -> int:
        """How to open the origin file behind a FUSE open with *flags*."""
        if self.enable_writeback_cache and flags & WRITE_FLAGS:
            # The kernel reads the pages it writes in part, through any handle,
            # and does O_APPEND itself (each write comes with its offset).
            if flags & os.O_ACCMODE == os.O_WRONLY:
                flags = flags & ~os.O_ACCMODE | os.O_RDWR
            flags &= ~os.O_APPEND
        return open_flags_for_origin(flags)

    def _reopen_read_only(self, inode: int, path: bytes, flags: int) -> int:
        """Blocking: the origin fd of a lazily opened handle, under its current name."""
        with contextlib.suppress(KeyError):  # unlinked: the name it was opened under will do
            path = self.inodes.path(inode)
        return self.origin.open(path, open_flags_for_origin(flags & ~WRITE_FLAGS))

    @fuse_handler
    async def create(
        self,
        parent_inode: int,
        name: bytes,
        mode: int,
        flags: int,
        ctx: pyfuse3.RequestContext,
    ) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        self._require_online()
        path = self._child_path(parent_inode, name)
        parent_path = self._path(parent_inode)
        open_flags = self._origin_open_flags(flags) | os.O_CREAT
        perm = stat.S_IMODE(mode)

        def work() -> tuple[int, os.stat_result]:
            try:
                fd = self.origin.open(path, open_flags | os.O_EXCL, perm)
            except FileExistsError:
                if flags & os.O_EXCL:
                    raise
                # Created at the origin since the kernel's lookup: just open it,
                # and leave its owner alone.
                fd = self.origin.open(path, open_flags & ~os.O_CREAT)
                return fd, os.fstat(fd)
            try:
                if self._as_root:
                    uid, gid = self._owner(ctx, self.origin.lstat(parent_path))
                    os.fchown(fd, uid, gid)
                    if perm & (stat.S_ISUID | stat.S_ISGID):  # chown cleared them
                        os.fchmod(fd, perm)
                return fd, os.fstat(fd)
            except BaseException:
                os.close(fd)
                raise

        fd, st = await self._change(work)
        self.meta.added(path, StatInfo.of(st))
        self._changed_here(path, parent_path)
        attrs = self._entry(parent_inode, name, st)
        self._note_version(attrs.st_ino, st)
        fh = self._add_handle(fd, attrs.st_ino, path, flags | os.O_RDWR)
        return pyfuse3.FileInfo(fh=fh), attrs

    def _add_handle(self, fd: int | None, inode: int, path: bytes, flags: int) -> int:
        fh = next(self._handle_ids)
        state = self._state(inode)
        policy = self.policy_for(path)
        state.chunk_size = policy.chunk_size
        relpath = os.fsdecode(path)
        pin = self.pins.tier_for(relpath)
        writable = bool(flags & WRITE_FLAGS)
        file = OriginFile(fd, functools.partial(self._reopen_read_only, inode, path, flags))
        handle = OpenFile(file, inode, state, policy, relpath, pin, writable=writable)
        state.writers += writable
        handle.on_origin_change = functools.partial(self._changed_under_reader, inode)
        self._files[fh] = handle
        if pin == "ram" and state.version is not None:
            self.ram.pinned_files.add(state.version.ino)
        self.stats.file_access(relpath, opened=True)
        state.handles.add(fh)
        self.inodes.opened(inode)
        return fh

    @fuse_handler
    async def read(self, fh: int, off: int, size: int) -> bytes:
        self.stats.add("fuse_reads")
        self.stats.add("fuse_read_bytes", size)
        handle = self._files[fh]
        if self.writes.has_queued(handle.inode):
            # A read sees the bytes written before it: it waits for them as long as
            # batches keep landing (EIO once none has within origin.timeout: a hang).
            await self.writes.drain(handle.inode, stall=self.monitor.timeout)
        if handle.state.recheck:
            handle.state.recheck = False
            self._revalidate_open_file(handle.inode, await self._stat_inode(handle.inode))
        sequential = off == handle.next_offset
        handle.next_offset = off + size
        started = time.perf_counter()
        data = await self.cache.read(handle, off, size, sequential)
        seconds = time.perf_counter() - started
        self.stats.read_seconds.observe(seconds)
        self.stats.add("fuse_read_bytes_served", len(data))  # fuse_read_bytes: asked for
        self.stats.file_access(handle.relpath, nbytes=len(data), seconds=seconds)
        return data

    @fuse_handler
    async def write(self, fh: int, off: int, buf: bytes) -> int:
        handle = self._files[fh]
        self._require_online()
        state = handle.state
        state.write_generation += 1
        state.written = True  # until its last writer closes: see FileState
        if self.writes.enabled:
            await self.writes.write(handle, off, buf)  # on the origin by fsync or close
            return len(buf)

        def work() -> tuple[int, os.stat_result]:
            with handle.file.use() as fd:
                return os.pwrite(fd, buf, off), os.fstat(fd)

        written, st = await self._untimed(work)  # online: checked above
        self._write_landed(handle.inode, st)
        return written

    def _write_landed(self, inode: int, st: os.stat_result) -> None:
        """Writes to *inode* reached the origin, which now has attributes *st*."""
        self._meta_update(inode, st)
        state = self._states.get(inode)
        if state is None:
            return
        state.write_generation += 1  # a fetch that overlapped the write is not cached
        self._note_version(inode, st)
        version = FileVersion.of(st)
        state.no_chunks = version  # made while written: nothing of it is cached
        # The origin's kernel dropped any capability the file had when it took
        # this write (as ours would): the kernel's check before the next write
        # is answered without asking the origin.
        self._no_caps(state, version)

    def _no_caps(self, state: FileState, version: FileVersion) -> None:
        state.no_caps, state.no_caps_until = version, time.monotonic() + self.attr_timeout

    @fuse_handler
    async def flush(self, fh: int) -> None:
        # Closing a duplicate makes origins that report errors at close (NFS,
        # SMB) report them now, to the process that called close().
        self.stats.add("fuse_flushes")
        if not self.facts.forward_flush and not self.writes.enabled:
            # The origin's close() cannot fail (ext4, xfs, ...) and no write is
            # queued here: ENOSYS makes the kernel stop sending FLUSH, one round
            # trip less for every close().
            raise FUSEError(errno.ENOSYS)
        handle = self._files[fh]
        if not handle.file.opened or not handle.writable:
            return  # nothing written through this handle: nothing to report
        await self._writes_landed(handle)
        if self.facts.forward_flush:
            await self._untimed(close_a_duplicate, handle.file)

    async def _writes_landed(self, handle: OpenFile) -> None:
        """close() and fsync(): the queued writes are on the origin, or their error is raised."""
        await self.writes.drain(handle.inode)
        self.writes.raise_error(handle)

    @fuse_handler
    async def fsync(self, fh: int, datasync: bool) -> None:
        handle = self._files[fh]
        await self._writes_landed(handle)  # fsync of any fd syncs the file: every handle's
        if not handle.file.opened:
            return  # opened read-only and never read from the origin
        await self._untimed(sync_file, handle.file, datasync)

    @fuse_handler
    async def release(self, fh: int) -> None:
        handle = self._files[fh]
        if handle.writable:
            # mmap's dirty pages may come after the last FLUSH: they land before the fd goes
            await self.writes.drain(handle.inode)
        del self._files[fh]
        self.writes.forget(handle)
        state = handle.state
        state.handles.discard(fh)
        if handle.writable:
            state.writers -= 1
            if not state.writers and state.written:
                # Reads may cache its chunks again, of the version it has now.
                state.written = False
                if state.no_chunks == state.version:
                    state.no_chunks = None
        self.inodes.closed(handle.inode)
        if not self.inodes.known(handle.inode):
            self._states.pop(handle.inode, None)
        self.cache.stop_read_ahead(handle)
        fd = handle.file.release()  # None while a fetch still uses it: that closes it
        if fd is not None:
            # Not awaited: close() returns at once; on a hung origin the thread waits alone.
            self._in_background(self.monitor.close_fd, fd)

    # -- directories ------------------------------------------------------------

    @fuse_handler
    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        path = self._path(inode)  # ENOENT early for a vanished directory
        fh = next(self._handle_ids)
        handle = self._dirs[fh] = DirHandle(inode)
        if self.monitor.online and not self.meta.listing_fresh(path):
            # A READDIR follows nearly every OPENDIR: the origin is read while the
            # kernel takes this reply and sends it, one round trip sooner.
            ahead = trio.Event()
            if self.engine.spawn("list-ahead", self._list_ahead, handle, path, ahead):
                handle.ahead = ahead
        return fh

    async def _list_ahead(self, handle: DirHandle, path: bytes, done: trio.Event) -> None:
        """The listing opendir started, for the handle's first readdir."""
        try:
            handle.entries = await self._listing(path)
        except OSError:
            pass  # the readdir lists for itself and meets the error there
        finally:
            done.set()

    @fuse_handler
    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        handle = self._dirs[fh]
        ahead, handle.ahead = handle.ahead, None
        if ahead is not None:
            await ahead.wait()  # listed since this handle was opened: its first readdir
        elif start_id == 0:
            handle.entries = None  # a rewind lists again (the cache answers while fresh)
        if handle.entries is None:
            handle.entries = await self._listing(self._path(handle.inode))
        if start_id == 0:
            advise(self.walker.client_listed, self._path(handle.inode), handle.entries)
        try:
            dirpath: bytes | None = self.inodes.path(handle.inode)
        except KeyError:
            dirpath = None  # gone meanwhile: these replies keep the short timeouts
        for index in range(start_id, len(handle.entries)):
            name, st = handle.entries[index]
            # Remember first (it may bump the generation), undo if the reply is full.
            self._remember(handle.inode, name, st)
            attrs = self.attributes(st, None if dirpath is None else join(dirpath, name))
            if not pyfuse3.readdir_reply(token, name, attrs, index + 1):
                self.inodes.forget(self.inodes.fuse_ino(st.st_ino), 1)
                break

    @fuse_handler
    async def releasedir(self, fh: int) -> None:
        self._dirs.pop(fh, None)

    @fuse_handler
    async def fsyncdir(self, fh: int, datasync: bool) -> None:
        path = self._path(self._dirs[fh].inode)

        def work() -> None:
            fd = self.origin.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

        await self._untimed(work)

    # -- extended attributes ------------------------------------------------------

    @fuse_handler
    async def getxattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> bytes:
        if xattrs.is_control(name):
            return await self.control_xattrs.get(inode, name)
        state = self._states.get(inode)
        if name == CAPABILITY_XATTR and state is not None and state.version is not None:
            value = await self._capability(inode, state)
        else:
            value = await self._origin_xattr(self._path(inode), name)
        if value is None:
            raise FUSEError(pyfuse3.ENOATTR)
        return value

    async def _capability(self, inode: int, state: FileState) -> bytes | None:
        """security.capability of an open file: the kernel asks before every write()."""
        if self.writes.has_queued(inode):
            return None  # the origin drops any capability when the queued bytes land
        version, generation = state.version, state.write_generation
        if state.no_caps == version and time.monotonic() < state.no_caps_until:
            return None
        value = await self._origin_xattr(self._path(inode), CAPABILITY_XATTR)
        unchanged = (state.version, state.write_generation) == (version, generation)
        if value is None and unchanged and version is not None:
            self._no_caps(state, version)
        return value

    def _ctimes(self, path: bytes) -> tuple[int | None, int]:
        """(the ctime an xattr answer may be trusted under now, None if the attributes
        are not fresh; the ctime a new answer is recorded under)."""
        entry = self.meta.get(path)
        st = entry.st if entry is not None else None
        if entry is None or st is None:
            return None, -1
        return (st.st_ctime_ns if self.meta.fresh(entry) else None), st.st_ctime_ns

    async def _origin_xattr(self, path: bytes, name: bytes) -> bytes | None:
        """The origin's getxattr answer (None: no such attribute), through the xattr cache."""
        trusted, ctime = self._ctimes(path)
        known, value = self.xattr_cache.value(path, name, trusted)
        if known and trusted is not None:
            self.stats.add("xattr_hits")
            return value
        if not self.monitor.online:
            return self.xattr_cache.value(path, name, None)[1]
        try:
            value = await self._io(self.origin.getxattr, path, name)
        except OriginOffline:
            return self.xattr_cache.value(path, name, None)[1]
        except OSError as exc:
            if exc.errno != errno.ENODATA:
                raise
            value = None
        self.xattr_cache.put_value(path, ctime, name, value)
        return value

    @fuse_handler
    async def setxattr(
        self, inode: int, name: bytes, value: bytes, ctx: pyfuse3.RequestContext
    ) -> None:
        if xattrs.is_control(name):
            await self.control_xattrs.set(inode, name, value)
            return
        path = self._path(inode)
        await self._change(self.origin.setxattr, path, name, value)
        self._xattrs_changed(inode, path)
        self._changed_here(path)

    def _xattrs_changed(self, inode: int, path: bytes) -> None:
        self.meta.stale(path)  # its ctime changed
        self.xattr_cache.forget(path)
        state = self._states.get(inode)
        if state is not None:
            state.no_caps = None
            state.write_generation += 1  # an answer asked for before this one is old

    @fuse_handler
    async def listxattr(self, inode: int, ctx: pyfuse3.RequestContext) -> list[bytes]:
        path = self._path(inode)
        trusted, ctime = self._ctimes(path)
        names = self.xattr_cache.names(path, trusted) if trusted is not None else None
        if names is None and not self.monitor.online:
            names = self.xattr_cache.known_names(path)
        if names is None:
            try:
                names = await self._io(self.origin.listxattr, path)
                self.xattr_cache.put_names(path, ctime, names)
            except OriginOffline:
                names = self.xattr_cache.known_names(path)
        return [n for n in names if not xattrs.is_control(n)]

    @fuse_handler
    async def removexattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        if xattrs.is_control(name):
            raise FUSEError(errno.EPERM)
        path = self._path(inode)
        await self._change(self.origin.removexattr, path, name)
        self._xattrs_changed(inode, path)
        self._changed_here(path)


def _notify_all(calls: list[tuple[Callable[..., None], Any, Any]]) -> None:
    """Blocking: tell the kernel each of *calls* (ENOENT: it had forgotten it already)."""
    for fn, *args in calls:
        with contextlib.suppress(OSError):
            fn(*args)


def _existing(st: StatInfo | None) -> StatInfo:
    """A cached entry's attributes; a cached "no such entry" is ENOENT."""
    if st is None:
        raise FileNotFoundError(errno.ENOENT, "no such entry")
    return st
