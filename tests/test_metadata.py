"""The metadata cache and its SQLite store, without a mount."""

from __future__ import annotations

import os
import signal
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from cachefs.meta.cache import LateRestore, MetadataCache, StatInfo
from cachefs.meta.store import MetadataStore, pack, unpack

DIR = 0o040755
FILE = 0o100644


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def info(mode: int = FILE, size: int = 1, ino: int = 7, nlink: int = 1) -> StatInfo:
    return StatInfo(mode, ino, 1, nlink, 0, 0, 0, size, 4096, 8, 1, 2, 3)


def cache(revalidate_after: float = 1.0) -> tuple[MetadataCache, Clock]:
    clock = Clock()
    return MetadataCache(revalidate_after, clock=clock), clock


def test_entries_are_fresh_for_revalidate_after() -> None:
    meta, clock = cache()
    meta.put(b"a/b", info())
    entry = meta.get(b"a/b")
    assert entry is not None and entry.st == info() and meta.fresh(entry)
    clock.now += 1.0
    assert not meta.fresh(entry)


def test_stale_and_restored_entries_are_stale_early_after_boot() -> None:
    """The monotonic clock starts near 0 at boot: "never confirmed" must not read as
    "confirmed at 0.0", which a long revalidate_after would call fresh."""
    meta, clock = cache(revalidate_after=3600.0)
    clock.now = 5.0  # five seconds after boot
    meta.put(b"d/f", info())
    meta.changed(b"d", b"f")  # an inotify event
    entry = meta.get(b"d/f")
    assert entry is not None and not meta.fresh(entry)
    meta.put_listing(b"d", [(b"f", info())])
    meta.stale_listing(b"d")
    assert not meta.listing_fresh(b"d")
    restored = MetadataCache(3600.0, clock=clock)
    restored.restore(info(DIR), [(b"d", b"f", pack(info()))], [b"d"])
    entry = restored.get(b"d/f")
    assert entry is not None and not restored.fresh(entry)
    assert not restored.listing_fresh(b"d")
    assert restored.restored_listings() == [b"d"]
    # A listing made stale since (a lost watch, the origin back online) was not
    # brought back by the store: the warm-up that re-reads restored ones skips it.
    restored.put_listing(b"e", [(b"g", info())])
    restored.stale_tree(b"")
    assert not restored.listing_fresh(b"e")
    assert restored.restored_listings() == [b"d"]


def test_zero_means_always_ask() -> None:
    meta, _ = cache(revalidate_after=0)
    meta.put(b"x", info())
    entry = meta.get(b"x")
    assert entry is not None and not meta.fresh(entry)


def test_a_complete_listing_answers_for_absent_names() -> None:
    meta, clock = cache()
    assert meta.get(b"d/missing") is None  # unknown: must ask
    meta.put_listing(b"d", [(b"one", info())])
    absent = meta.get(b"d/missing")
    assert absent is not None and absent.st is None and meta.fresh(absent)
    clock.now += 2
    assert not meta.fresh(absent)


def test_put_listing_reports_changes_and_drops_vanished_entries() -> None:
    meta, _ = cache()
    meta.put_listing(b"", [(b"keep", info(size=1)), (b"grow", info(size=1)), (b"gone", info())])
    changes = meta.put_listing(b"", [(b"keep", info(size=1)), (b"grow", info(size=2))])
    assert sorted(changes) == [(b"gone", info(), None), (b"grow", info(size=1), info(size=2))]
    assert meta.listing(b"") == [(b"keep", info(size=1)), (b"grow", info(size=2))]
    assert meta.count() == 2


def test_watched_entries_stay_fresh_until_an_event() -> None:
    meta, clock = cache()
    meta.mark_watched(b"d")
    meta.put(b"d/f", info(), meta.token(b"d"))
    clock.now += 3600
    entry = meta.get(b"d/f")
    assert entry is not None and meta.fresh(entry)
    meta.changed(b"d", b"f")
    assert not meta.fresh(entry)


def test_an_answer_that_raced_an_event_is_not_trusted_as_watched() -> None:
    meta, clock = cache()
    meta.mark_watched(b"d")
    token = meta.token(b"d")  # taken before the stat went out
    meta.changed(b"d", b"f")  # the event arrives while the stat is in flight
    meta.put(b"d/f", info(), token)
    clock.now += 2
    entry = meta.get(b"d/f")
    assert entry is not None and not meta.fresh(entry)


def test_hard_linked_files_are_never_watched() -> None:
    meta, clock = cache()
    meta.mark_watched(b"d")
    meta.put(b"d/f", info(nlink=2), meta.token(b"d"))
    clock.now += 2
    entry = meta.get(b"d/f")
    assert entry is not None and not meta.fresh(entry)


def test_rename_moves_the_subtree() -> None:
    meta, _ = cache()
    meta.put(b"a", info(DIR))
    meta.put_listing(b"a", [(b"sub", info(DIR))])
    meta.put_listing(b"a/sub", [(b"f", info())])
    meta.moved(b"a", b"b")
    assert meta.get(b"a") is None
    assert meta.listing(b"b/sub") == [(b"f", info())]
    assert meta.listing(b"a/sub") is None


def test_removing_a_directory_forgets_what_was_below() -> None:
    meta, _ = cache()
    meta.put_listing(b"", [(b"a", info(DIR))])
    meta.put_listing(b"a", [(b"f", info())])
    meta.removed(b"a")
    assert meta.listing(b"a") is None
    absent = meta.get(b"a")
    assert absent is not None and absent.st is None
    assert meta.count() == 0


def test_trim_keeps_the_recently_used() -> None:
    meta, clock = cache()
    meta.max_entries = 100
    for d in range(5):
        clock.now += 1
        meta.put_listing(b"d%d" % d, [(b"f%d" % i, info()) for i in range(30)])
    assert meta.trim() > 0
    assert meta.count() <= 100
    assert meta.listing(b"d4") is not None and meta.listing(b"d0") is None


def test_stat_packing_round_trips() -> None:
    st_ = StatInfo(DIR, 2**64 - 1, 2**40, 3, 1000, 1000, 0, 2**50, 4096, 9, -5, 2**62, 0)
    assert unpack(pack(st_)) == st_


def store_at(tmp_path: Path, origin: str = "/srv/nas") -> MetadataStore:
    store = MetadataStore(tmp_path, origin)
    store.open()
    return store


def reload(tmp_path: Path, origin: str = "/srv/nas") -> MetadataCache:
    store = store_at(tmp_path, origin)
    restored, _ = cache()
    store.load_into(restored)
    store.close()
    return restored


def test_damaged_rows_are_skipped_and_their_listing_is_not_trusted_whole(tmp_path: Path) -> None:
    """A row whose stat is not a stat record (a damaged or planted store) is not
    loaded, and the listing of its directory is no longer whole: offline, a name
    it lacks must not be answered "no such file"."""
    store = store_at(tmp_path)
    meta, _ = cache()
    meta.put_listing(b"good", [(b"a", info(size=1)), (b"b", info(size=2))])
    meta.put_listing(b"bad", [(b"a", info(size=3)), (b"b", info(size=4)), (b"c", info(size=5))])
    store.write(meta.journal.take())
    store.close()
    db = sqlite3.connect(tmp_path / "metadata.sqlite")
    with db:
        where = "WHERE dir = ? AND name = ?"
        db.execute(f"UPDATE entry SET st = x'00' {where}", (b"bad", b"a"))
        db.execute(f"UPDATE entry SET st = 'text' {where}", (b"bad", b"b"))
    db.close()
    restored = reload(tmp_path)
    assert restored.listing(b"good") == [(b"a", info(size=1)), (b"b", info(size=2))]
    assert restored.listing(b"bad") is None
    assert restored.get(b"bad/a") is None and restored.get(b"bad/b") is None
    entry = restored.get(b"bad/c")
    assert entry is not None and entry.st == info(size=5)
    assert restored.count() == 3


def stored_library(tmp_path: Path) -> MetadataStore:
    """A store holding three listed directories of three files, and lib/empty (listed,
    empty); it is open for reading back."""
    store = store_at(tmp_path)
    meta, _ = cache()
    for d in (b"lib/a", b"lib/b", b"lib/c"):
        meta.put_listing(d, [(b"f%d" % i, info(size=i)) for i in range(3)])
    meta.put_listing(b"lib/empty", [])
    store.write(meta.journal.take())
    return store


def late_merge(store: MetadataStore, meta: MetadataCache, between: Any, batch: int = 2) -> None:
    """What MetadataLoader does, with *between()* run after the first batch (the mount
    serving meanwhile)."""
    merge = LateRestore(meta)
    for i, rows in enumerate(store.row_batches(batch)):
        merge.add(rows)
        if i == 0:
            between()
    merge.finish(store.listed_dirs())
    assert meta.late is None


def test_a_late_merge_fills_what_the_cache_does_not_know(tmp_path: Path) -> None:
    store = stored_library(tmp_path)
    meta, _ = cache()
    late_merge(store, meta, lambda: None)
    for d in (b"lib/a", b"lib/b", b"lib/c"):
        assert meta.listing(d) == [(b"f%d" % i, info(size=i)) for i in range(3)]
        assert not meta.listing_fresh(d)
        entry = meta.get(d + b"/f1")
        assert entry is not None and not meta.fresh(entry)  # restored: revalidated first
    assert meta.listing(b"lib/empty") == []
    assert meta.count() == 9 == sum(len(n.entries) for n in meta.dirs.values())


def test_what_the_mount_learnt_during_a_late_merge_wins(tmp_path: Path) -> None:
    """Rows of the store are older than anything the serving mount saw: a listing it
    made takes no row, a name it holds is not replaced, and nothing comes back at or
    below what it removed or moved away, even when those rows were still to come."""
    store = stored_library(tmp_path)
    meta, _ = cache()
    meta.put_listing(b"lib/a", [(b"f0", info(size=10))])  # listed now: f1, f2 are gone
    meta.put(b"lib/c/f0", info(size=30))  # looked up now: newer than the store's

    def serving() -> None:  # after the first batch (lib/a's f0 and f1)
        meta.removed(b"lib/c/f1")
        meta.moved(b"lib/b", b"lib/b2")
        meta.removed(b"lib/empty")

    late_merge(store, meta, serving)
    assert meta.listing(b"lib/a") == [(b"f0", info(size=10))]
    assert meta.listing(b"lib/c") is None  # held in part: not whole
    c0, c1, c2 = (meta.get(b"lib/c/f%d" % i) for i in range(3))
    assert c0 is not None and c0.st == info(size=30)
    assert c1 is None
    assert c2 is not None and c2.st == info(size=2)
    assert meta.get(b"lib/b/f0") is None and b"lib/b" not in meta.dirs
    assert b"lib/empty" not in meta.dirs
    assert meta.count() == sum(len(n.entries) for n in meta.dirs.values())


# A tiny file-system history: paths in two levels, puts, listings, removals, renames.
names = st.sampled_from([b"a", b"b", b"c"])
paths = st.lists(names, min_size=1, max_size=3).map(b"/".join)
ops = st.one_of(
    st.tuples(st.just("put"), paths, st.integers(0, 3)),
    st.tuples(st.just("dir"), paths, st.integers(0, 0)),
    st.tuples(st.just("list"), paths, st.integers(0, 3)),
    st.tuples(st.just("removed"), paths, st.integers(0, 0)),
    st.tuples(st.just("moved"), paths, st.integers(0, 0)),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(ops, max_size=25), st.integers(1, 4))
def test_the_store_holds_what_the_cache_holds(tmp_path_factory, history, flush_every) -> None:  # type: ignore[no-untyped-def]
    """After any history, flushed in any batches, a restart restores the same entries."""
    tmp_path = tmp_path_factory.mktemp("store")
    store = store_at(tmp_path)
    meta, _ = cache()
    for i, (op, path, n) in enumerate(history):
        if op == "put":
            meta.put(path, info(size=n))
        elif op == "dir":
            meta.put(path, info(DIR))
        elif op == "list":
            meta.put_listing(path, [(b"x%d" % k, info(size=k)) for k in range(n)])
        elif op == "removed":
            meta.removed(path)
        elif op == "moved":
            meta.moved(path, path + b"2")
        if i % flush_every == 0:
            store.write(meta.journal.take())
    store.write(meta.journal.take())
    store.close()
    assert meta.count() == sum(len(node.entries) for node in meta.dirs.values())
    restored = reload(tmp_path)
    assert snapshot(restored) == snapshot(meta)


def snapshot(meta: MetadataCache) -> dict[bytes, dict[bytes, StatInfo]]:
    return {
        d: {n: e.st for n, e in node.entries.items() if e.st is not None}
        for d, node in meta.dirs.items()
        if any(e.st is not None for e in node.entries.values())
    }


def test_restored_entries_are_never_fresh(tmp_path: Path) -> None:
    store = store_at(tmp_path)
    meta, _ = cache()
    meta.put(b"", info(DIR))
    meta.put_listing(b"", [(b"f", info())])
    store.write(meta.journal.take())
    store.close()
    restored = reload(tmp_path)
    entry = restored.get(b"f")
    assert entry is not None and entry.st == info() and not restored.fresh(entry)
    assert restored.root.st == info(DIR)
    assert restored.listing(b"") == [(b"f", info())] and not restored.listing_fresh(b"")


def test_a_store_of_another_origin_starts_empty(tmp_path: Path) -> None:
    store = store_at(tmp_path, "/srv/one")
    meta, _ = cache()
    meta.put(b"f", info())
    store.write(meta.journal.take())
    store.close()
    assert reload(tmp_path, "/srv/two").count() == 0


def test_an_unreadable_store_is_moved_aside(tmp_path: Path) -> None:
    (tmp_path / "metadata.sqlite").write_bytes(b"this is not a database" * 100)
    store = store_at(tmp_path)
    meta, _ = cache()
    meta.put(b"f", info())
    store.write(meta.journal.take())
    store.close()
    assert (tmp_path / "metadata.sqlite.corrupt").exists()
    assert reload(tmp_path).count() == 1


def modes(tmp_path: Path) -> dict[str, int]:
    return {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.glob("metadata.sqlite*")}


def test_the_store_and_its_wal_and_shm_files_are_private(tmp_path: Path) -> None:
    old = os.umask(0)  # as in the daemon
    try:
        store = store_at(tmp_path)
        meta, _ = cache()
        meta.put(b"f", info())
        store.write(meta.journal.take())
        assert modes(tmp_path) == {
            "metadata.sqlite": 0o600,
            "metadata.sqlite-wal": 0o600,
            "metadata.sqlite-shm": 0o600,
        }
        store.close()
        (tmp_path / "metadata.sqlite").write_bytes(b"not a database" * 100)
        store_at(tmp_path).close()  # moved aside: the new store is private too
        assert modes(tmp_path)["metadata.sqlite"] == 0o600
    finally:
        os.umask(old)


def test_a_store_left_readable_by_others_is_tightened(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        db = sqlite3.connect(tmp_path / "metadata.sqlite")  # as an older cachefs made it
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE TABLE t (x)")
        held = sqlite3.connect(tmp_path / "metadata.sqlite")
        held.execute("SELECT * FROM t").fetchall()  # keeps -wal and -shm in place
        db.close()
        for path in tmp_path.glob("metadata.sqlite*"):
            path.chmod(0o644)
        store_at(tmp_path).close()
        held.close()
        assert set(modes(tmp_path).values()) == {0o600}
    finally:
        os.umask(old)


WRITER = """
import sys
from pathlib import Path
from cachefs.meta.cache import LateRestore, MetadataCache, StatInfo
from cachefs.meta.store import MetadataStore
store = MetadataStore(Path(sys.argv[1]), "/srv/nas")
store.open()
meta = MetadataCache(1.0)
print("ready", flush=True)
n = 0
while True:
    n += 1
    entries = [(b"f%d" % i, StatInfo(0o100644, i, 1, 1, 0, 0, 0, n, 4096, 8, 1, 2, 3))
               for i in range(500)]
    meta.put_listing(b"d%d" % (n % 50), entries)
    store.write(meta.journal.take())
"""


def test_kill_9_in_the_middle_of_writes_leaves_a_store_that_opens(tmp_path: Path) -> None:
    for delay in (0.05, 0.2, 0.5):
        writer = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(tmp_path)],
            stdout=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])},
        )
        assert writer.stdout is not None and writer.stdout.readline() == b"ready\n"
        time.sleep(delay)
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        restored = reload(tmp_path)
        assert not (tmp_path / "metadata.sqlite.corrupt").exists()
        # Every transaction is whole: each directory has all 500 entries or none.
        assert all(len(node.entries) == 500 for node in restored.dirs.values())


def test_an_answer_older_than_a_change_made_through_the_mount_is_not_fresh() -> None:
    """An lstat in flight while cachefs unlinks (or writes) the file must not bring it back."""
    meta, _ = cache()
    meta.put_listing(b"d", [(b"f", info())])
    token = meta.token(b"d")  # a getattr asks the origin ...
    meta.removed(b"d/f")  # ... while an unlink through the mount completes
    meta.put(b"d/f", info(), token)  # the getattr's (older) answer arrives
    entry = meta.get(b"d/f")
    assert entry is not None and not meta.fresh(entry)


def test_a_listing_that_raced_a_change_is_not_fresh() -> None:
    meta, _ = cache()
    token = meta.token(b"d")
    meta.added(b"d/new", info())  # created through the mount while the listing was read
    meta.put_listing(b"d", [], token)
    assert not meta.listing_fresh(b"d")


def test_fields_most_entries_share_are_one_object_each(tmp_path: Path) -> None:
    """A million cached entries hold a million modes, devices and block sizes; equal
    values are kept as one int object (28 bytes each saved, three times an entry),
    whether the entry came from the origin or back from the store."""
    for name in ("a", "b"):
        (tmp_path / name).write_bytes(b"x" * 5000)
    a, b = (StatInfo.of(os.lstat(tmp_path / name)) for name in ("a", "b"))
    assert a == StatInfo.of(os.lstat(tmp_path / "a"))  # the values are unchanged
    assert a.st_mode == b.st_mode and a.st_mode > 256  # (ints up to 256 are shared anyway)
    assert a.st_mode is b.st_mode and a.st_dev is b.st_dev and a.st_blksize is b.st_blksize
    restored = unpack(pack(a))
    assert restored == a
    assert restored.st_dev is a.st_dev and restored.st_mode is a.st_mode
