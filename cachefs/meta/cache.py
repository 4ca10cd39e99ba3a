"""The metadata cache: origin attributes and directory listings, kept and persisted.

A library scan stats every file; against a NAS or a spun-down disk each stat
costs a seek. This cache answers lookups, getattr, readdir and read-only opens
from memory while an entry is *fresh*:

* confirmed at the origin less than ``metadata.revalidate_after`` ago, or
* confirmed while an inotify watch covered its directory, with no event since
  (``watched``): the watch reports any change, so the entry stays true.

A stale entry is revalidated (one stat) before it is used, so a change made on
the origin is seen within ``revalidate_after``. While the origin is offline
every entry is served, fresh or not.

Entries are grouped by directory (:class:`DirNode`); a node whose listing was
read whole is *complete*: a name it does not hold does not exist. The cache is
persisted to SQLite (WAL) by :class:`MetadataStore`, off the hot path: changes
are journaled in memory and written in one transaction by a background task.
Entries restored from the store are never fresh: they are served only while
the origin is offline, and otherwise revalidated on first use.
"""

from __future__ import annotations

import logging
import os
import struct
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

log = logging.getLogger(__name__)

STORE_NAME = "metadata.sqlite"
STORE_FORMAT = 1
# "Never confirmed". Not 0.0: the monotonic clock counts from boot, so on a
# machine up for less than revalidate_after a 0.0 would look fresh.
NEVER = float("-inf")


class StatInfo(NamedTuple):
    """The part of an lstat the filesystem hands out; duck-types as os.stat_result."""

    st_mode: int
    st_ino: int
    st_dev: int
    st_nlink: int
    st_uid: int
    st_gid: int
    st_rdev: int
    st_size: int
    st_blksize: int
    st_blocks: int
    st_atime_ns: int
    st_mtime_ns: int
    st_ctime_ns: int

    @classmethod
    def of(cls, st: os.stat_result | StatInfo) -> StatInfo:
        if isinstance(st, StatInfo):
            return st
        return cls(
            shared_int(st.st_mode),
            st.st_ino,
            shared_int(st.st_dev),
            st.st_nlink,
            st.st_uid,
            st.st_gid,
            st.st_rdev,
            st.st_size,
            shared_int(st.st_blksize),
            st.st_blocks,
            st.st_atime_ns,
            st.st_mtime_ns,
            st.st_ctime_ns,
        )


# Values nearly every entry has in common (its mode, device, block size), one int
# object each: an int above 256 is a 28-byte object per stat result, and a library
# of a million entries kept three of them per entry (about 80 MiB).
_SHARED_INTS: dict[int, int] = {}
_SHARED_LIMIT = 4096  # distinct values kept (modes, devices, block sizes are few)


def shared_int(value: int) -> int:
    """*value*, as the one object kept for it (equal, and the same object for equal
    values while the table has room)."""
    kept = _SHARED_INTS.get(value)
    if kept is not None:
        return kept
    if len(_SHARED_INTS) < _SHARED_LIMIT:
        _SHARED_INTS[value] = value
    return value


def shared_stat(f: tuple[int, ...]) -> StatInfo:
    """A StatInfo from its 13 fields in order (the store's rows), sharing as of() does.

    Built with tuple.__new__ and indexing: a restart restores up to a million of
    these, and the named tuple's own constructor took twice as long."""
    kept = _SHARED_INTS.get
    return _new_tuple(
        StatInfo,
        (
            kept(f[0]) or shared_int(f[0]), f[1], kept(f[2]) or shared_int(f[2]), f[3], f[4],
            f[5], f[6], f[7], kept(f[8]) or shared_int(f[8]), f[9], f[10], f[11], f[12],
        ),
    )  # fmt: skip


_new_tuple = tuple.__new__

# An entry's stat is kept packed, in the store's own format: 104 bytes in one bytes
# object, where a StatInfo is a 13-slot tuple and up to nine int objects (about
# 300 bytes more). A scanned library holds a million of them; an operation that
# asks unpacks one (a microsecond, against a FUSE round trip's tens).
# mode, ino, dev, nlink, uid, gid, rdev, size, blksize, blocks: unsigned; times signed.
STAT_RECORD = struct.Struct("<10Q3q")


def pack_stat(st: StatInfo) -> bytes:
    try:
        return STAT_RECORD.pack(*st)
    except struct.error:  # a negative unsigned field (lstat gives none): kept as 0
        return STAT_RECORD.pack(*(max(0, v) for v in st[:10]), *st[10:])


def unpack_stat(raw: bytes) -> StatInfo:
    return shared_stat(STAT_RECORD.unpack(raw))


class Entry:
    """What the origin said of one name: its stat (packed, ``raw``; None: there is
    no such entry), when that was confirmed, and whether a watch covered it."""

    __slots__ = ("confirmed", "raw", "watched")

    def __init__(
        self, st: StatInfo | None, confirmed: float = NEVER, watched: bool = False
    ) -> None:
        self.raw = None if st is None else pack_stat(st)
        self.confirmed = confirmed  # time.monotonic() of the last confirmation
        self.watched = watched  # confirmed under a watch of its directory, no event since

    @classmethod
    def packed(cls, raw: bytes | None, confirmed: float = NEVER, watched: bool = False) -> Entry:
        """An entry from a stat already packed (the store's rows, a put's own packing)."""
        entry = cls.__new__(cls)
        entry.raw, entry.confirmed, entry.watched = raw, confirmed, watched
        return entry

    @property
    def st(self) -> StatInfo | None:
        raw = self.raw
        return None if raw is None else unpack_stat(raw)

    def __repr__(self) -> str:
        return f"Entry({self.st!r}, confirmed={self.confirmed!r}, watched={self.watched!r})"


@dataclass(slots=True)
class DirNode:
    entries: dict[bytes, Entry] = field(default_factory=dict)
    complete: bool = False  # entries hold every name the directory has
    listed: float = NEVER  # monotonic time the whole listing was last confirmed
    listed_watched: bool = False
    watch_active: bool = False  # an inotify watch covers this directory
    # Bumped by every change seen (watch events, changes made through the mount):
    # an answer the origin gave before one (see Token) is not trusted as fresh.
    events: int = 0
    used: float = NEVER  # last access (monotonic), for the poller and for trimming


class Token(NamedTuple):
    """Taken before asking the origin: did anything change in the directory meanwhile,
    and was the answer covered by a watch throughout?"""

    dirpath: bytes
    events: int
    watched: bool


def split(path: bytes) -> tuple[bytes, bytes]:
    """``b"a/b/c"`` -> ``(b"a/b", b"c")``; the root's parent is itself."""
    parent, _, name = path.rpartition(b"/")
    return parent, name


def join(dirpath: bytes, name: bytes) -> bytes:
    return dirpath + b"/" + name if dirpath else name


def _below(path: bytes, prefix: bytes) -> bool:
    return not prefix or path == prefix or path.startswith(prefix + b"/")


class MetadataCache:
    def __init__(
        self,
        revalidate_after: float,
        max_entries: int = 500_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.revalidate_after = revalidate_after
        self.max_entries = max_entries
        self.clock = clock
        self.root = Entry(None)
        self.dirs: dict[bytes, DirNode] = {}
        self.journal = Journal()
        self._count = 0
        self.late: LateRestore | None = None  # a store being merged in (see LateRestore)
        self.restored_dirs: list[bytes] = []  # listings the store brought back whole

    # -- reading ------------------------------------------------------------------

    def fresh(self, entry: Entry) -> bool:
        return entry.watched or self.clock() - entry.confirmed < self.revalidate_after

    def get(self, path: bytes) -> Entry | None:
        """The entry for *path*, or a negative one if a complete listing lacks it."""
        if not path:
            return self.root if self.root.st is not None else None
        dirpath, name = split(path)
        node = self.dirs.get(dirpath)
        if node is None:
            return None
        node.used = self.clock()
        entry = node.entries.get(name)
        if entry is None and node.complete:
            return Entry(None, node.listed, node.listed_watched)
        return entry

    def watched(self, path: bytes, st: StatInfo | os.stat_result | None = None) -> bool:
        """*path* is known (as *st*, if given), confirmed under a watch of its directory
        that has reported no change since: the kernel may keep it long (it is told of
        any change)."""
        if not path:
            return False  # the root is in no watched directory
        dirpath, name = split(path)
        node = self.dirs.get(dirpath)
        entry = node.entries.get(name) if node is not None else None
        if entry is None or not entry.watched or node is None or not node.watch_active:
            return False
        return st is None or entry.raw == pack_stat(StatInfo.of(st))

    def listing(self, dirpath: bytes) -> list[tuple[bytes, StatInfo]] | None:
        """A complete listing of *dirpath* (fresh or not), or None if never read whole."""
        node = self.dirs.get(dirpath)
        if node is None or not node.complete:
            return None
        node.used = self.clock()
        return [(name, unpack_stat(e.raw)) for name, e in node.entries.items() if e.raw is not None]

    def listing_fresh(self, dirpath: bytes) -> bool:
        node = self.dirs.get(dirpath)
        if node is None or not node.complete:
            return False
        return node.listed_watched or self.clock() - node.listed < self.revalidate_after

    def count(self) -> int:
        return self._count

    # -- confirmations from the origin ------------------------------------------------

    def token(self, dirpath: bytes) -> Token:
        node = self.dirs.get(dirpath)
        if node is None:
            return Token(dirpath, 0, False)
        return Token(dirpath, node.events, node.watch_active)

    def token_covered(self, token: Token) -> Token:
        """*token*, taken before a read that added the directory's watch first
        (`ChangeDetector.read_covered`): the read was covered if the watch is active
        now; any event since the token still counts against it."""
        node = self.dirs.get(token.dirpath)
        return token._replace(watched=token.watched or (node is not None and node.watch_active))

    def _covered(self, node: DirNode, token: Token) -> bool:
        return token.watched and node.watch_active and node.events == token.events

    def put(self, path: bytes, st: StatInfo | None, token: Token | None = None) -> StatInfo | None:
        """Record what the origin says of *path*; returns what was known before.

        With a *token* this is an answer to a question asked earlier: if the
        directory changed since, the answer may predate the change and is kept
        as stale (revalidated before use). Without one it is a change cachefs
        made itself, which makes answers still in flight stale.
        """
        if not path:
            before = self.root.st
            self.root = Entry(st, self.clock())
            if st != before:
                self.journal.root(st)
            return before
        dirpath, name = split(path)
        node = self._node(dirpath)
        entry = node.entries.get(name)
        raw = None if st is None else pack_stat(st)
        before_raw = entry.raw if entry is not None else None
        # Unchanged (a revalidation's usual answer): *st* is what was known.
        before = (
            st if raw == before_raw else (None if before_raw is None else unpack_stat(before_raw))
        )
        confirmed = self.clock()
        if token is None:
            node.events += 1
        elif node.events != token.events:
            confirmed = NEVER
        # A watch reports changes made through the name in its directory; a file
        # with other hard links can change through those, unseen here.
        watched = token is not None and self._covered(node, token) and not _shared(st)
        if entry is None:
            if st is None and not node.complete:
                return None  # a negative entry is only worth keeping beside a listing
            node.entries[name] = Entry.packed(raw, confirmed, watched)
            self._count += 1
        else:
            entry.raw, entry.confirmed, entry.watched = raw, confirmed, watched
        if raw != before_raw:
            self.journal.put(dirpath, name, raw)
        if before is not None and _is_dir(before) and (st is None or not _is_dir(st)):
            self.forget_tree(path)  # the directory that was there is gone
        return before

    def put_listing(
        self, dirpath: bytes, entries: Iterable[tuple[bytes, StatInfo]], token: Token | None = None
    ) -> list[tuple[bytes, StatInfo | None, StatInfo | None]]:
        """Record a whole listing; returns ``(name, before, now)`` for every change."""
        node = self._node(dirpath)
        raced = token is not None and node.events != token.events
        now = NEVER if raced else self.clock()
        watched = token is not None and self._covered(node, token)
        seen: set[bytes] = set()
        changes: list[tuple[bytes, StatInfo | None, StatInfo | None]] = []
        for name, st in entries:
            seen.add(name)
            before = self.put(join(dirpath, name), st, token)
            if before != st:
                changes.append((name, before, st))
        for name in [n for n in node.entries if n not in seen]:
            before = node.entries[name].st
            if before is not None:
                changes.append((name, before, None))
            self._drop(dirpath, node, name)
        if not node.complete:
            self.journal.listed_dir(dirpath, True)
        node.complete, node.listed, node.listed_watched = True, now, watched
        return changes

    def _drop(self, dirpath: bytes, node: DirNode, name: bytes, forget_below: bool = True) -> None:
        """Remove an entry; a directory's subtree goes too unless it is moving."""
        entry = node.entries.pop(name)
        self._count -= 1
        if entry.raw is not None:
            self.journal.put(dirpath, name, None)
            if forget_below and _is_dir(unpack_stat(entry.raw)):
                self.forget_tree(join(dirpath, name))

    def _node(self, dirpath: bytes) -> DirNode:
        node = self.dirs.get(dirpath)
        if node is None:  # "used" counts the client's reads only, not the poller's
            node = self.dirs[dirpath] = DirNode(used=self.clock())
        return node

    # -- what cachefs itself changed ---------------------------------------------------

    def removed(self, path: bytes) -> None:
        """*path* was unlinked / rmdir'ed / renamed away through the mount."""
        dirpath, name = split(path)
        node = self.dirs.get(dirpath)
        if node is not None:
            node.events += 1
            if name in node.entries:
                self._drop(dirpath, node, name)
        self.forget_tree(path)
        self.touched(dirpath)

    def added(self, path: bytes, st: StatInfo) -> None:
        """*path* was created through the mount."""
        self.put(path, st)
        self.touched(split(path)[0])

    def moved(self, old: bytes, new: bytes) -> None:
        """A rename through the mount: the entry and everything below it move."""
        if old == new:
            return
        old_dir, old_name = split(old)
        node = self.dirs.get(old_dir)
        entry = node.entries.get(old_name) if node is not None else None
        self.removed(new)  # whatever the name held before is replaced
        if node is not None and entry is not None and entry.st is not None:
            node.events += 1
            self._drop(old_dir, node, old_name, forget_below=False)  # the subtree moves below
            self.put(new, entry.st)
            self.stale(new)  # its ctime changed
        if self.late is not None:
            self.late.dropped.append(old)  # the store's rows below it are of the old tree
        below = [d for d in self.dirs if _below(d, old)]
        for dirpath in below:
            self.dirs[_rebase(dirpath, old, new)] = self.dirs.pop(dirpath)
        if below:
            self.journal.moved_dir(old, new)
        self.touched(old_dir)

    def touched(self, dirpath: bytes) -> None:
        """A directory's own attributes (mtime, nlink) changed."""
        self.stale(dirpath)

    # -- invalidation -------------------------------------------------------------------

    def stale(self, path: bytes) -> None:
        """Make the next use of *path* ask the origin (keeps the entry for offline use)."""
        entry = self.root if not path else None
        if path:
            dirpath, name = split(path)
            node = self.dirs.get(dirpath)
            entry = node.entries.get(name) if node is not None else None
            if node is not None:
                node.events += 1
        if entry is not None:
            entry.confirmed, entry.watched = NEVER, False

    def stale_listing(self, dirpath: bytes) -> None:
        node = self.dirs.get(dirpath)
        if node is not None:
            node.listed, node.listed_watched = NEVER, False

    def changed(self, dirpath: bytes, name: bytes) -> None:
        """A watch event about *name* in *dirpath* (stale() counts it as a change)."""
        self.stale(join(dirpath, name))
        self.stale_listing(dirpath)
        self.stale(dirpath)

    def stale_tree(self, path: bytes) -> None:
        """Nothing at or below *path* can be trusted without asking (a watch was lost)."""
        self.stale(path)
        for dirpath, node in self.dirs.items():
            if _below(dirpath, path):
                node.watch_active = False
                node.listed, node.listed_watched = NEVER, False
                for entry in node.entries.values():
                    entry.confirmed, entry.watched = NEVER, False

    def stale_all(self) -> None:
        self.stale_tree(b"")

    def forget_tree(self, path: bytes) -> None:
        """Drop every directory node at or below *path* (its paths no longer exist)."""
        if self.late is not None:
            self.late.dropped.append(path)
        for dirpath in [d for d in self.dirs if _below(d, path) and (path or d)]:
            node = self.dirs.pop(dirpath)
            self._count -= len(node.entries)
            self.journal.forget_dir(dirpath)

    def mark_watched(self, dirpath: bytes) -> None:
        """An inotify watch now covers *dirpath* (a lost one goes through stale_tree)."""
        self._node(dirpath).watch_active = True

    def regular_files(self, path: bytes) -> list[tuple[bytes, StatInfo]]:
        """The regular files known at or below *path*, with their attributes: what
        can have chunks cached (pins and evictions act on these)."""
        entry = self.get(path)
        if entry is not None and entry.st is not None and not _is_dir(entry.st):
            return [(path, entry.st)] if _is_file(entry.st) else []
        return [
            (join(dirpath, name), e.st)
            for dirpath, node in self.dirs.items()
            if _below(dirpath, path)
            for name, e in node.entries.items()
            if e.st is not None and _is_file(e.st)
        ]

    # -- background helpers ---------------------------------------------------------------

    def poll_candidates(self, window: float, every: float) -> list[bytes]:
        """Directories the client read within *window* that no watch covers and
        whose listing is older than *every*, oldest first (never listed whole:
        first; re-listing makes them whole, so the poller sees every entry)."""
        now = self.clock()
        due = [
            (node.listed, dirpath)
            for dirpath, node in self.dirs.items()
            if (node.complete or node.entries)
            and not node.watch_active
            and now - node.used < window
            and now - node.listed >= every
        ]
        return [dirpath for _, dirpath in sorted(due)]

    def restored_listings(self) -> list[bytes]:
        """Listings read back from the store and not confirmed since, shallowest first.

        Only what the store brought back: a listing made stale later (a lost watch,
        the origin back online) is not one, however its fields look."""
        dirs = self.dirs
        stale = [
            d
            for d in self.restored_dirs
            if (node := dirs.get(d)) is not None and node.complete and node.listed == NEVER
        ]
        return sorted(stale, key=lambda d: (d.count(b"/") if d else -1, d))

    def trim(self) -> int:
        """Drop the least recently used directories until under max_entries."""
        if self._count <= self.max_entries:
            return 0
        target = int(self.max_entries * 0.9)
        dropped = 0
        for _, dirpath in sorted((n.used, d) for d, n in self.dirs.items()):
            if self._count <= target:
                break
            node = self.dirs.pop(dirpath)
            self._count -= len(node.entries)
            dropped += len(node.entries)
            self.journal.forget_dir(dirpath, recursive=False)
        return dropped

    # -- restoring ---------------------------------------------------------------------------

    def restore_root(self, root: StatInfo | None) -> None:
        self.root = Entry(root)

    def restore(
        self,
        root: StatInfo | None,
        rows: Iterable[tuple[bytes, bytes, bytes]],
        complete: Iterable[bytes],
    ) -> None:
        """Fill from the store before serving: every entry unconfirmed (revalidated
        before use). *rows* are ``(dir, name, packed stat)``, see LateRestore.add."""
        self.restore_root(root)
        merge = LateRestore(self)
        merge.add(rows)
        merge.finish(complete)


class LateRestore:
    """The store's rows merged into a cache (``MetadataCache.late`` while it runs).

    At mount with the origin online, the mount answers before the store is read
    (a million rows take seconds), and the rows come in batches between requests.
    What the cache learnt meanwhile wins:

    * a directory it holds whole (listed) takes no row: its listing is true now;
    * in a directory it holds in part (names looked up), rows add only the names
      it lacks, and nothing at or below a path removed or moved away meanwhile;
    * a directory it does not hold is filled from its rows, and is whole if the
      store says so.

    Whatever is merged is unconfirmed, as every restored entry: revalidated before
    use while the origin is online. Rows come a directory at a time (the store's
    key order), so a directory is looked up once, not once per row. The packed
    stats are kept as they are; a row of another length (a damaged store) is
    skipped, and its directory's listing is then not whole.
    """

    def __init__(self, cache: MetadataCache) -> None:
        self.cache = cache
        self.filled: set[bytes] = set()  # directories this merge made
        self.damaged: set[bytes] = set()
        self.dropped: list[bytes] = []  # paths removed, forgotten or moved away meanwhile
        self.restored = 0
        cache.late = self

    def add(self, rows: Iterable[tuple[bytes, bytes, bytes]]) -> None:
        damaged, dropped = self.damaged, self.dropped
        packed, size = Entry.packed, STAT_RECORD.size
        current: bytes | None = None
        entries: dict[bytes, Entry] | None = None
        count = 0
        for dirpath, name, raw in rows:
            if dirpath != current:
                current, entries = dirpath, self._entries_to_fill(dirpath)
            if entries is None or name in entries:
                continue
            if type(raw) is not bytes or len(raw) != size:
                damaged.add(dirpath)
            elif not dropped or not self._dropped(join(dirpath, name)):
                entries[name] = packed(raw)
                count += 1
        self.cache._count += count
        self.restored += count

    def _entries_to_fill(self, dirpath: bytes) -> dict[bytes, Entry] | None:
        node = self.cache.dirs.get(dirpath)
        if node is not None:
            return None if node.complete else node.entries
        if dirpath in self.filled or self._dropped(dirpath):
            return None  # trimmed or forgotten since its first rows
        self.filled.add(dirpath)
        node = self.cache.dirs[dirpath] = DirNode()
        return node.entries

    def _dropped(self, path: bytes) -> bool:
        return any(_below(path, gone) for gone in self.dropped)

    def finish(self, complete: Iterable[bytes]) -> None:
        """*complete*: the directories whose listing the store holds whole."""
        dirs = self.cache.dirs
        for dirpath in complete:
            if dirpath in self.damaged:
                continue
            node = dirs.get(dirpath)
            if node is None:  # an empty directory (or one trimmed meanwhile)
                if dirpath not in self.filled and not self._dropped(dirpath):
                    dirs[dirpath] = DirNode(complete=True)
                    self.cache.restored_dirs.append(dirpath)
            elif dirpath in self.filled:
                node.complete = True
                self.cache.restored_dirs.append(dirpath)
        self.cache.late = None


def _shared(st: StatInfo | None) -> bool:
    return st is not None and st.st_nlink > 1 and not _is_dir(st)


def _is_dir(st: StatInfo) -> bool:
    return st.st_mode & 0o170000 == 0o040000


def _is_file(st: StatInfo) -> bool:
    return st.st_mode & 0o170000 == 0o100000


# ------------------------------------------------------------------------------- journal


@dataclass
class Journal:
    """Changes not yet in the store, coalesced: tree operations in order, then puts."""

    # (dir, name) -> the packed stat (the entry's own bytes object), None: removed.
    puts: dict[tuple[bytes, bytes], bytes | None] = field(default_factory=dict)
    listed: dict[bytes, bool] = field(default_factory=dict)
    # ("forget", dir, b"" or b"r") drops a directory's rows (recursively with b"r");
    # ("move", old, new) renames a directory tree.
    tree_ops: list[tuple[str, bytes, bytes]] = field(default_factory=list)
    root_st: list[StatInfo | None] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.puts) + len(self.listed) + len(self.tree_ops) + len(self.root_st)

    def put(self, dirpath: bytes, name: bytes, raw: bytes | None) -> None:
        self.puts[dirpath, name] = raw

    def listed_dir(self, dirpath: bytes, complete: bool) -> None:
        self.listed[dirpath] = complete

    def root(self, st: StatInfo | None) -> None:
        self.root_st[:] = [st]

    def forget_dir(self, dirpath: bytes, recursive: bool = True) -> None:
        # Earlier, unwritten changes under it are moot; later ones come after this.
        def gone(d: bytes) -> bool:
            return _below(d, dirpath) if recursive else d == dirpath

        for key in [k for k in self.puts if gone(k[0])]:
            del self.puts[key]
        for d in [d for d in self.listed if gone(d)]:
            del self.listed[d]
        self.tree_ops.append(("forget", dirpath, b"r" if recursive else b""))

    def moved_dir(self, old: bytes, new: bytes) -> None:
        self.puts = {(_rebase(d, old, new), n): st for (d, n), st in self.puts.items()}
        self.listed = {_rebase(d, old, new): flag for d, flag in self.listed.items()}
        self.tree_ops.append(("move", old, new))

    def take(self) -> Journal:
        taken = Journal(self.puts, self.listed, self.tree_ops, self.root_st)
        self.puts, self.listed, self.tree_ops, self.root_st = {}, {}, [], []
        return taken


def _rebase(path: bytes, old: bytes, new: bytes) -> bytes:
    """*path* with the directory *old* it lies in renamed to *new*."""
    if not _below(path, old):
        return path
    return new + path[len(old) :] if old else join(new, path)
