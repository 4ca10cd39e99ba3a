"""Walk-ahead: list the directories a client walking a tree will list next.

A library scan (a media server's, `find`, `du`, `ls -R`) asks one thing at a
time: list a directory, lstat its entries, go down into the first
subdirectory, and so on. On a one-head origin each request then waits for the
one before it *and* for the client's turn around (two wake-ups and a FUSE
reply, ~1.5 ms here), while the disk stands idle. Reading the origin
directly has no such gap, so a cold scan through the mount was 1.2x slower
than the origin with the same origin requests.

When the client lists a directory whose parent it listed moments before, it
is walking. The walker then lists, one listing at a time, the directories the
walk will reach next, in the order a top-down walk reaches them: depth
first, subdirectories in listing order (os.walk's, find's, a media
scanner's), or in reverse when the client went into its parent's last
subdirectory first (a walker that pushes each listing's subdirectories on a
stack and pops them). When the client gets there, its listing (and the
lstat of every entry, which the listing brings) is answered from memory. It stays at most
``AHEAD_LIMIT`` directories ahead of the client, issues a listing only while
no reader's fill or client listing is in flight, and forgets the walk when
the client has listed (or, while walking, opened) nothing for
``WALK_IDLE_S``: a lone `ls` of two levels costs at most that many listings.

Files too: while a walk is on, the client's open of a file makes the next
file of that directory in listing order (a scanner reads them in that
order), when it is one chunk of its content type, be fetched as soon as the
client's own read is done: the origin's head goes on to it without waiting
for the client's turn around, and the client's open finds it in flight or
cached. One file ahead, one request of the walker at a time, so a client
that reads something else waits for at most that one file. Once the client
has opened a file in the walk (a scanner that reads heads, not a `find` or
`du` that only lists), the files of one chunk of the directories listed
ahead are fetched too, in walk order, at most ``FILES_AHEAD_LIMIT`` ahead of
the client's opens.

Trio-thread state only (docs/concurrency.md): the stack, the sets and the
timestamps are touched between awaits by the readdir handler and this task.
"""

from __future__ import annotations

import logging
import stat
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

import trio

from cachefs.meta.cache import StatInfo, join, split
from cachefs.stats.counters import Stats

log = logging.getLogger(__name__)

AHEAD_LIMIT = 32  # directories listed ahead of the client and not yet listed by it
WALK_IDLE_S = 2.0  # a walk ends when the client has listed nothing for this long
IDLE_WAIT_S = 0.002  # between looks for a moment without foreground origin work
# The same for a walk's next file: the client's turn around after its read is
# ~1.5 ms, the window to start the next file in.
FILE_WAIT_S = 0.0005
RECENT_LIMIT = 1024  # client listings remembered to recognise a walk
STACK_LIMIT = 4096  # directories waiting to be listed (the furthest are dropped)
FILES_AHEAD_LIMIT = 64  # files of one chunk fetched ahead and not opened by the client yet
FILES_QUEUED_LIMIT = 4096  # files of directories listed ahead, waiting to be fetched

Listing = Sequence[tuple[bytes, StatInfo]]


@dataclass
class _Seen:
    """A client listing: when, its subdirectories in listing order, and whether the
    client has gone into one of them yet."""

    when: float
    subdirs: list[bytes]
    entered: bool = False


def subdirectories(dirpath: bytes, entries: Listing) -> list[bytes]:
    return [join(dirpath, name) for name, st in entries if stat.S_ISDIR(st.st_mode)]


class WalkAhead:
    def __init__(
        self,
        enabled: bool,
        stats: Stats,
        busy: Callable[[], bool],
        fresh: Callable[[bytes], bool],
        online: Callable[[], bool],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.enabled = enabled  # metadata.walk_ahead
        self.stats, self.busy, self.fresh, self.online = stats, busy, fresh, online
        self.clock = clock
        # Set by the composition root: lists a directory through the mount's cache.
        self.list_dir: Callable[[bytes], Awaitable[Listing]] | None = None
        # Client listings: when, and their subdirectories in listing order.
        self._recent: OrderedDict[bytes, _Seen] = OrderedDict()
        self._reverse = False  # the client takes a directory's last subdirectory first
        self._walk = 0  # bumped when the walk is forgotten: listings then in flight drop
        self._stack: list[bytes] = []  # directories to list, the next on top
        # Listed here and not yet by the client, in the order listed (the walk's order).
        self._ahead: OrderedDict[bytes, None] = OrderedDict()
        self._last_client = float("-inf")
        self._wake = trio.Event()
        self.in_flight = 0  # listings of this walker at the origin (0 or 1)
        # Set by the composition root: a directory's cached listing, whether a file is
        # one chunk, and the fetch of such a file (the prefetcher's).
        self.cached_listing: Callable[[bytes], Listing | None] = lambda dirpath: None
        self.one_chunk: Callable[[bytes, StatInfo], bool] = lambda path, st: False
        self.fetch_file: Callable[[bytes, StatInfo], Awaitable[int]] | None = None
        self._last_walk = float("-inf")  # when the client was last seen walking
        self._next_file: tuple[bytes, StatInfo] | None = None
        self._files: deque[tuple[bytes, StatInfo]] = deque()  # of directories listed ahead
        self._unread: set[bytes] = set()  # files fetched ahead, not opened by the client yet
        self._client_reads = False  # the client has opened a file in this walk
        self._positions: tuple[Listing | None, dict[bytes, int]] = (None, {})

    # -- fed by the readdir handler --------------------------------------------------

    def client_listed(self, dirpath: bytes, entries: Listing) -> None:
        """The client read the listing of *dirpath* (its first readdir)."""
        if not self.enabled:
            return
        now = self.clock()
        if now - self._last_client > WALK_IDLE_S:
            self._forget_walk()
        self._last_client = now
        listed_here = dirpath in self._ahead
        if listed_here:  # and its subdirectories are on the stack already
            self._passed(dirpath)
            self.stats.add("walk_ahead_used")
        walking = bool(dirpath) and self._listed_lately(split(dirpath)[0], now)
        subdirs = subdirectories(dirpath, entries)
        self._remember(dirpath, now, subdirs)
        if walking and self._direction_changed(dirpath):
            self._restart_from(dirpath)  # what was stacked is in the other order
            listed_here = False
        if walking and not listed_here:
            self._push(subdirs)
        if walking:
            self._last_walk = now
            self._wake.set()

    def client_opened(self, path: bytes) -> None:
        """The client opened *path* for reading: while it walks, the next file of the
        directory is fetched (see the module's docstring)."""
        now = self.clock()
        if not self.enabled or now - self._last_walk > WALK_IDLE_S:
            return
        # Reading its way through a big directory, the client is still walking.
        self._last_client = self._last_walk = now
        if not self._client_reads:
            self._client_reads = True
            self._wake.set()  # the files of directories listed ahead are due now
        if path in self._unread:
            self._unread.discard(path)
            self._wake.set()  # room for one more ahead
        dirpath, name = split(path)
        listing = self.cached_listing(dirpath)
        if listing is None:
            return
        if self._positions[0] is not listing:  # a dict per directory, not a search per open
            self._positions = (listing, {n: i for i, (n, _) in enumerate(listing)})
        at = self._positions[1].get(name)
        if at is None:
            return
        for next_name, st in listing[at + 1 :]:
            if stat.S_ISREG(st.st_mode):
                nxt = join(dirpath, next_name)
                if self.one_chunk(nxt, st):
                    self._next_file = (nxt, st)
                    self._wake.set()
                return  # only the very next file: a scanner reads in listing order

    def _remember(self, dirpath: bytes, now: float, subdirs: list[bytes]) -> None:
        recent = self._recent
        parent = split(dirpath)[0]
        if dirpath and parent in recent:
            # Used again: the walk is below it, and the direction checks read it.
            recent.move_to_end(parent)
        recent[dirpath] = _Seen(now, subdirs)
        recent.move_to_end(dirpath)
        while len(recent) > RECENT_LIMIT:
            recent.popitem(last=False)

    def _direction_changed(self, dirpath: bytes) -> bool:
        """Which way the client goes, from where it first went into its parent: the
        first subdirectory or the last (a parent with one subdirectory tells nothing)."""
        parent = self._recent[split(dirpath)[0]]
        entered, parent.entered = parent.entered, True
        siblings = parent.subdirs
        if entered or len(siblings) < 2 or dirpath not in (siblings[0], siblings[-1]):
            return False
        reverse = dirpath == siblings[-1]
        changed, self._reverse = reverse != self._reverse, reverse
        return changed

    def _restart_from(self, dirpath: bytes) -> None:
        """The walk goes the other way: start again from *dirpath*'s siblings still to
        come in the new order (what lay further up is left to the client)."""
        self._forget_walk()
        siblings = self._recent[split(dirpath)[0]].subdirs
        at = siblings.index(dirpath)
        self._push(siblings[:at] if self._reverse else siblings[at + 1 :])

    def _passed(self, dirpath: bytes) -> None:
        """The client is at *dirpath*: what came before it in the walk it has listed
        or skipped (a scanner that does not go into a subtree), so that no longer
        counts against the limit."""
        while self._ahead:
            first, _ = self._ahead.popitem(last=False)
            if first == dirpath:
                return

    def _listed_lately(self, dirpath: bytes, now: float) -> bool:
        seen = self._recent.get(dirpath)
        return seen is not None and now - seen.when <= WALK_IDLE_S

    def _push(self, subdirs: list[bytes]) -> None:
        """Next in a top-down walk: a directory's subdirectories, the one the client
        will take first on top."""
        self._stack.extend(subdirs if self._reverse else reversed(subdirs))
        if len(self._stack) > STACK_LIMIT:
            del self._stack[: len(self._stack) - STACK_LIMIT]

    def _forget_walk(self) -> None:
        self._stack.clear()
        self._ahead.clear()
        self._files.clear()
        self._unread.clear()
        self._client_reads = False
        self._walk += 1

    def describe(self, counters: Mapping[str, int]) -> dict[str, int | bool]:
        return {
            "walk_ahead": self.enabled,
            "walk_ahead_listings": counters.get("walk_ahead_listings", 0),
            "walk_ahead_used": counters.get("walk_ahead_used", 0),
            "walk_ahead_files": counters.get("walk_ahead_files", 0),
        }

    # -- the task ---------------------------------------------------------------------

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            while await self._step():
                # A step may end without waiting on anything (a directory the client
                # has listed, an origin gone offline): yield, or the loop starves.
                await trio.lowlevel.checkpoint()

    async def _step(self) -> bool:
        """Do the piece of work the client needs soonest; False when there is none."""
        if self._next_file is not None:
            await self._fetch_next_file()
            return True
        if self.clock() - self._last_client > WALK_IDLE_S:
            self._forget_walk()
            return False
        files_due = (
            self._client_reads and bool(self._files) and len(self._unread) < FILES_AHEAD_LIMIT
        )
        listing_due = bool(self._stack) and len(self._ahead) < AHEAD_LIMIT
        if not (files_due or listing_due):
            return False  # the client's next listing or open wakes us
        if self.busy() or not self.online():
            await trio.sleep(IDLE_WAIT_S)
        elif files_due:  # a listed directory's files come before the next listing
            await self._fetch(*self._files.popleft())
        else:
            await self._list_next()
        return True

    async def _fetch_next_file(self) -> None:
        while self._next_file is not None and self.busy():
            await trio.sleep(FILE_WAIT_S)  # the client's read first, then this one
        due, self._next_file = self._next_file, None
        if due is not None and self.online():  # offline: the client meets it itself
            await self._fetch(*due)

    async def _fetch(self, path: bytes, st: StatInfo) -> None:
        assert self.fetch_file is not None
        walk = self._walk
        self.in_flight += 1
        try:
            fetched = await self.fetch_file(path, st)
        except OSError:
            return  # gone or unreadable: the client meets it itself
        finally:
            self.in_flight -= 1
        if fetched:
            self.stats.add("walk_ahead_files")
            if walk == self._walk:
                self._unread.add(path)

    async def _list_next(self) -> None:
        dirpath = self._stack.pop()
        if dirpath in self._recent or self.fresh(dirpath):
            return  # the client has been there, or the cache answers without the origin
        assert self.list_dir is not None
        walk = self._walk
        self.in_flight += 1
        try:
            entries = await self.list_dir(dirpath)
        except OSError:
            return  # gone, unreadable or offline: the client meets it itself
        finally:
            self.in_flight -= 1
        self.stats.add("walk_ahead_listings")
        if walk == self._walk:  # else the walk was forgotten (or turned) meanwhile
            self._ahead[dirpath] = None
            self._push(subdirectories(dirpath, entries))
            self._queue_files(dirpath, entries)

    def _queue_files(self, dirpath: bytes, entries: Listing) -> None:
        """The files of one chunk in a directory listed ahead: the client reads them
        after its listing, before the next directory's."""
        for name, st in entries:
            path = join(dirpath, name)
            if len(self._files) < FILES_QUEUED_LIMIT and self.one_chunk(path, st):
                self._files.append((path, st))
