"""Changes made directly on the origin: seen by inotify, or by polling.

On a local origin (ext4, xfs, a USB disk...) every change goes through this
kernel, so an inotify watch on each directory cachefs has read reports it at
once: entries confirmed under a watch stay fresh until an event says
otherwise, and the kernel's caches are invalidated as the event arrives.

On NFS, SMB or FUSE origins a change made on another machine produces no
event. There the poller re-lists directories read within
``metadata.poll_window``, oldest confirmation first, at most
``metadata.poll_budget`` listings a second, each at least every
``metadata.poll_interval`` (sooner with a short ``revalidate_after``). With
inotify the poller still runs, for the directories no watch covers (the
kernel's watch limit reached). Either way a lookup or open of an entry older
than ``metadata.revalidate_after`` asks the origin first, so the promise holds
even for what neither has looked at yet.

A watch that cannot be set up is never quiet: ``watch = "inotify"`` refuses
to mount without one, ``auto`` falls back to polling with a warning and says
why in ``user.cachefs.stats``.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

import trio

from cachefs.common.supervise import Task
from cachefs.config import MetadataConfig
from cachefs.meta.cache import MetadataCache, StatInfo, join, split
from cachefs.meta.inotify import (
    IN_CLOSE_WRITE,
    IN_CREATE,
    IN_DELETE,
    IN_MODIFY,
    IN_MOVED_FROM,
    IN_MOVED_TO,
    Inotify,
    WatchEvent,
)
from cachefs.origin.access import FileVersion, Origin
from cachefs.origin.fstypes import filesystem_type_name
from cachefs.origin.fstypes import supports_inotify as local_filesystem
from cachefs.origin.monitor import OriginMonitor, OriginOffline
from cachefs.stats.counters import Stats

log = logging.getLogger(__name__)

T = TypeVar("T")

# A listing is re-read once half of revalidate_after has passed, and the poller
# looks for due listings every quarter: entries it keeps are never stale.
POLL_AHEAD = 0.5
IDLE_SLEEP_MAX = 0.5
# Events that add, remove or move a name (the others change what a name holds).
NAME_EVENTS = IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO
_INSTANCE_LIMIT = "/proc/sys/fs/inotify/max_user_instances"


class WatchUnavailable(Exception):
    """``metadata.watch = "inotify"`` and no inotify instance can be had."""


class ChangeListener(Protocol):
    """What the detector tells about changes, and asks to re-read (the FUSE layer)."""

    async def relist(self, dirpath: bytes) -> list[tuple[bytes, StatInfo]]:
        """Read *dirpath* at the origin and bring the metadata cache in line."""
        ...

    def tell_kernel(self, dirpath: bytes, name: bytes, content: bool, names: bool = True) -> None:
        """*name* in *dirpath* changed at the origin (*content*: its bytes may have;
        *names*: the name itself may have come, gone or moved, not only its attributes)."""
        ...

    def watch_lost(self, dirpath: bytes) -> None:
        """What the kernel holds of *dirpath* and below (b"": everything) may have changed
        unreported: the watch that vouched for it stopped (a queue overflow, the
        directory moved or unmounted, a failed reader, the origin back online)."""
        ...


class ChangeDetector:
    def __init__(
        self,
        cfg: MetadataConfig,
        meta: MetadataCache,
        origin: Origin,
        monitor: OriginMonitor,
        stats: Stats,
    ) -> None:
        self.cfg = cfg
        self.meta = meta
        self.origin = origin
        self.monitor = monitor
        self.stats = stats
        # Set by the composition root once the FUSE operations exist.
        self.listener: ChangeListener | None = None
        self.mode = cfg.watch  # "auto" is settled by settle()
        self.reason = "configured"
        self._inotify: Inotify | None = None
        self._covered: set[bytes] = set()  # directories watched
        self._adding: dict[bytes, trio.Event] = {}
        self._limit_reached = False
        self._reading = False  # the change watch task is reading events
        # Set by the composition root while the metadata store is read in the
        # background: the warm-up revalidates what it brings back, so it waits.
        self.store_loaded: Callable[[], Awaitable[None]] | None = None

    @property
    def _listener(self) -> ChangeListener:
        assert self.listener is not None, "the composition root sets it"
        return self.listener

    def watched_count(self) -> int:
        return len(self._covered)

    @property
    def reporting(self) -> bool:
        """Watches are read as they report: what they cover may be kept long by the
        kernel, which is told of every change (False while the reader is down)."""
        return self._inotify is not None and self._reading

    def settle(self, filesystem: tuple[bool, str] | None) -> None:
        """Blocking, before mounting: decide the mode and get the inotify instance.

        *filesystem* is (local, type name) of the origin, None if it is offline.
        WatchUnavailable when inotify was asked for and cannot be had.
        """
        mode = self.cfg.watch
        if mode == "auto":
            if filesystem is None:
                mode, self.reason = "poll", "origin offline at mount"
            else:
                local, kind = filesystem
                mode, self.reason = ("inotify" if local else "poll"), f"origin is {kind}"
        if mode == "inotify":
            try:
                self._inotify = Inotify()
            except OSError as exc:
                why = _inotify_failure(exc)
                if self.cfg.watch == "inotify":
                    raise WatchUnavailable(
                        f"metadata.watch = inotify: {why}; or set metadata.watch = auto or poll"
                    ) from None
                mode, self.reason = "poll", f"inotify unavailable: {why}"
                log.warning("origin change detection falls back to polling: %s", why)
        self.mode = mode
        log.info("origin change detection: %s (%s)", mode, self.reason)

    def tasks(self) -> list[Task]:
        """For the Engine, once settle() has decided the mode."""
        if self.mode == "off":
            return []
        found = [Task("poller", self._poll)]  # with inotify: for directories no watch covers
        if self.monitor.online:
            found.append(Task("metadata warm-up", self._warm_up, once=True))
        if self.mode == "inotify":
            found.append(Task("change watch", self._watch_events))
        return found

    async def _warm_up(self) -> None:
        """After a restart, re-read the listings the store brought back, paced by
        poll_budget, so the first library scan finds its entries confirmed (and,
        with inotify, watched) instead of asking the origin file by file."""
        if self.store_loaded is not None:
            await self.store_loaded()
        pending = self.meta.restored_listings()
        if not pending:
            return
        started = trio.current_time()
        pause = 1.0 / self.cfg.poll_budget
        for dirpath in pending:
            if not self.monitor.online:
                return  # revalidation on use takes over when it comes back
            if not self.meta.listing_fresh(dirpath):
                await self.poll_directory(dirpath)
                await trio.sleep(pause)
        took = trio.current_time() - started
        log.info("metadata: %d restored directories revalidated in %.1fs", len(pending), took)

    def reset(self) -> None:
        """The origin came back (maybe remounted): watches on the old one mean nothing."""
        if self._inotify is not None:
            for key in self._covered:
                self._inotify.remove(key)
        self._covered.clear()
        self._limit_reached = False
        self._listener.watch_lost(b"")

    # -- inotify -------------------------------------------------------------------

    def catch_up(self) -> None:
        """Apply the watch events the kernel has queued already (a non-blocking read).

        Called before an entry confirmed under a watch is trusted: a change made
        at the origin before the request arrived is seen by it, however busy the
        loop is, rather than by whichever of the two the loop gets to first.
        """
        if self._inotify is not None:
            events = self._inotify.pending_events()
            if events:
                self._apply_or_lose(events)

    async def cover(self, dirpath: bytes) -> None:
        """Watch *dirpath* before its entries are confirmed at the origin (once)."""
        if self._inotify is None or dirpath in self._covered or self._limit_reached:
            return
        pending = self._adding.get(dirpath)
        if pending is not None:
            await pending.wait()
            return
        done = self._adding[dirpath] = trio.Event()
        try:
            watched = await self.monitor.call(self._add_watch, dirpath)
        except OSError as exc:  # gone, not a directory, offline: no watch, no harm
            log.debug("no watch on %r: %s", dirpath, exc)
            return
        finally:
            del self._adding[dirpath]
            done.set()
        self._settle(dirpath, watched)

    async def read_covered(self, dirpath: bytes, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)``, a timed origin read of *dirpath* or of its entries, with
        *dirpath* covered first, as `cover` then ``monitor.call(fn, ...)`` would, but in
        one worker thread: the watch is added before the read starts, and the
        read costs one thread hop instead of two (a library scan lists every
        directory once, and a hop costs more than the watch).

        The caller's token taken before this call says "not watched" for a
        directory this call covered: `MetadataCache.token_covered` brings it up to date.
        """
        if (
            self._inotify is None
            or dirpath in self._covered
            or self._limit_reached
            or dirpath in self._adding
        ):
            await self.cover(dirpath)  # nothing to add, or another task is adding it
            return await self.monitor.call(fn, *args)
        done = self._adding[dirpath] = trio.Event()
        watched: list[bool] = []  # filled in the worker thread, read once it returned

        def work() -> T:
            try:
                watched.append(self._add_watch(dirpath))
            except OSError as exc:  # gone, not a directory: no watch, no harm
                log.debug("no watch on %r: %s", dirpath, exc)
            return fn(*args)

        try:
            return await self.monitor.call(work)
        finally:
            del self._adding[dirpath]
            done.set()
            if watched:  # empty if the watch failed, or the call was abandoned first
                self._settle(dirpath, watched[0])

    def _settle(self, dirpath: bytes, watched: bool) -> None:
        if watched:
            self._covered.add(dirpath)
            self.meta.mark_watched(dirpath)
        else:
            self._limit_reached = True  # Inotify logged it; entries fall back to revalidate_after

    def _inotify_remove(self, key: bytes) -> None:
        if self._inotify is not None:
            self._inotify.remove(key)

    def _add_watch(self, dirpath: bytes) -> bool:
        assert self._inotify is not None
        with self.origin.proc_path(dirpath) as path:
            return self._inotify.add(dirpath, path)

    async def _watch_events(self) -> None:
        assert self._inotify is not None
        self._reading = True
        try:
            while True:
                self._apply(await self._inotify.read_events())
        except Exception:
            # Restarted by the engine after a pause; until then no reply is given the
            # long timeouts of watched entries (`reporting`), and what the kernel holds
            # already goes: the events of the pause would reach it only at the restart.
            self._events_lost("the inotify reader failed")
            raise
        finally:
            self._reading = False

    def _apply_or_lose(self, events: list[WatchEvent]) -> None:
        """_apply; if it fails part-way, the rest of *events* is lost: as an overflow."""
        try:
            self._apply(events)
        except Exception:
            self._events_lost("applying inotify events failed")
            raise

    def _events_lost(self, why: str) -> None:
        """Events were lost but the watches stand: everything is revalidated, and the
        kernel drops what it holds (it may keep it long while watched)."""
        log.warning("%s: revalidating every cached entry", why)
        self.meta.stale_all()
        for dirpath in self._covered:
            self.meta.mark_watched(dirpath)
        self._listener.watch_lost(b"")

    def _apply(self, events: list[WatchEvent]) -> None:
        meta = self.meta
        seen: dict[tuple[bytes, bytes], tuple[bool, bool]] = {}  # -> (content, names)
        for event in events:
            if event.overflow:
                self._events_lost("inotify queue overflowed")
                continue
            if event.key is None:
                continue
            if event.directory_gone and not event.name:
                # Moved, deleted or unmounted: the watch no longer stands for this path,
                # nor for what the kernel holds below it.
                self._covered.discard(event.key)
                self._inotify_remove(event.key)
                meta.stale_tree(event.key)
                self._listener.watch_lost(event.key)
                continue
            if not event.name:  # the watched directory's own attributes
                meta.stale(event.key)
                if event.key:  # the parent's watch reports it too, if there is one
                    self._listener.tell_kernel(*split(event.key), False, False)
                continue
            content = bool(event.mask & (IN_MODIFY | IN_CLOSE_WRITE))
            names = bool(event.mask & NAME_EVENTS)
            key = (event.key, event.name)
            was_content, was_names = seen.get(key, (False, False))
            seen[key] = (was_content or content, was_names or names)
            if event.is_dir and names:
                # A directory came, went or moved: nothing known below the name holds.
                # (A chmod of it changes its own attributes only: its subtree stays.)
                meta.stale_tree(join(event.key, event.name))
        for (dirpath, name), (content, names) in seen.items():
            meta.changed(dirpath, name)
            self._listener.tell_kernel(dirpath, name, content, names)

    # -- polling ---------------------------------------------------------------------

    def poll_every(self) -> float:
        """How often a polled directory is re-listed: before its entries go stale,
        and at least every poll_interval (so a long revalidate_after still sees
        changes soon)."""
        return min(self.cfg.revalidate_after * POLL_AHEAD, self.cfg.poll_interval)

    async def _poll(self) -> None:
        pause = 1.0 / self.cfg.poll_budget
        every = self.poll_every()
        idle = min(IDLE_SLEEP_MAX, every / 2)
        if self.cfg.revalidate_after <= 0:
            return  # every lookup asks the origin anyway: nothing to keep fresh
        while True:
            due = self.meta.poll_candidates(self.cfg.poll_window, every)
            if not due or not self.monitor.online:
                await trio.sleep(idle)
                continue
            for dirpath in due[: self.cfg.poll_budget]:
                await self.poll_directory(dirpath)
                await trio.sleep(pause)

    async def poll_directory(self, dirpath: bytes) -> None:
        """Re-list *dirpath*; tell the kernel about every entry that changed."""
        before = dict(self.meta.listing(dirpath) or [])
        try:
            now = dict(await self._listener.relist(dirpath))
        except OriginOffline:
            return
        except (FileNotFoundError, NotADirectoryError):
            if not dirpath:
                return  # the origin root itself: the outage monitor's business
            parent, name = split(dirpath)
            self.meta.changed(parent, name)
            self.meta.forget_tree(dirpath)
            self._listener.tell_kernel(parent, name, False)
            return
        except OSError as exc:
            log.debug("poll of %r: %s", dirpath, exc)
            return
        for name in before.keys() | now.keys():
            old, new = before.get(name), now.get(name)
            if _differs(old, new):
                self._listener.tell_kernel(dirpath, name, _content_differs(old, new))


def filesystem_of(root: str) -> tuple[bool, str]:
    """Blocking: (whether inotify sees every change, a type name) for the origin."""
    return local_filesystem(root), filesystem_type_name(root)


def _inotify_failure(exc: OSError) -> str:
    """Why inotify_init1 failed, with the fix for the common case."""
    if exc.errno == errno.EMFILE:
        try:
            with open(_INSTANCE_LIMIT) as f:
                limit = f.read().strip()
        except OSError:
            limit = "?"
        return (
            f"cannot create an inotify instance: the per-user limit "
            f"fs.inotify.max_user_instances = {limit} is reached (other programs hold them); "
            "raise it (sysctl fs.inotify.max_user_instances=1024)"
        )
    return f"cannot create an inotify instance: {exc.strerror or exc}"


def _differs(old: StatInfo | None, new: StatInfo | None) -> bool:
    """A change worth telling the kernel (an atime update is not)."""
    if old is None or new is None:
        return old is not new
    return old._replace(st_atime_ns=0) != new._replace(st_atime_ns=0)


def _content_differs(old: StatInfo | None, new: StatInfo | None) -> bool:
    return old is None or new is None or FileVersion.of(old) != FileVersion.of(new)
