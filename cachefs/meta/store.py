"""The metadata cache on disk: SQLite in WAL mode, in the SSD tier directory.

WAL keeps the file consistent through a crash (kill -9, power cut): a
transaction is in the store whole or not at all. Nothing read back is trusted
as fresh (see metadata.py); the store only spares a re-walk of the origin and
answers while the origin is offline. A store that will not open is moved aside
and replaced by an empty one; it is a cache, never the only copy of anything.

The store is ``0600`` (private.py): the file is created so before SQLite
opens it, and SQLite gives its ``-wal`` and ``-shm`` files the mode of the
main file.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
import sqlite3
import threading
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

from cachefs.common import private
from cachefs.meta.cache import (
    STORE_FORMAT,
    STORE_NAME,
    Journal,
    MetadataCache,
    StatInfo,
    pack_stat,
    unpack_stat,
)

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS entry (
    dir BLOB NOT NULL, name BLOB NOT NULL, st BLOB NOT NULL, PRIMARY KEY (dir, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS listed (dir BLOB PRIMARY KEY) WITHOUT ROWID;
"""


pack, unpack = pack_stat, unpack_stat  # the cache keeps stats in the store's format


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """No cyclic garbage collection inside (unless it was off already)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _subtree(column: str, dirpath: bytes) -> tuple[str, tuple[bytes, ...]]:
    """SQL matching *dirpath* and every directory below it."""
    if not dirpath:
        return "1", ()
    # Below "a/b" sort the paths from "a/b/" up to (not including) "a/b0": '0' follows '/'.
    return (
        f"({column} = ? OR ({column} >= ? AND {column} < ?))",
        (dirpath, dirpath + b"/", dirpath + b"0"),
    )


class MetadataStore:
    def __init__(self, directory: Path, origin_root: str) -> None:
        self.path = directory / STORE_NAME
        self.origin_root = origin_root
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()  # one writer thread at a time

    # -- opening -----------------------------------------------------------------

    def open(self) -> None:
        """Open (or create) the store; one from another origin or format starts empty."""
        try:
            self._db = self._connect()
            if self._identity_differs():
                log.info("metadata store %s was for another origin: starting empty", self.path)
                self._reset()
        except sqlite3.DatabaseError as exc:
            self._move_aside(exc)
            self._db = self._connect()
        self.set_meta(origin=self.origin_root, format=STORE_FORMAT)

    def _connect(self) -> sqlite3.Connection:
        # 0600 before SQLite opens (or creates) it; its -wal and -shm files take
        # this mode. Ones left by an older cachefs, maybe 0644, are tightened.
        private.ensure_private_file(self.path)
        for suffix in ("-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                private.ensure_private_file(Path(f"{self.path}{suffix}"), create=False)
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")  # WAL: consistent after a crash, maybe older
        db.executescript(_SCHEMA)
        db.execute("PRAGMA quick_check").fetchone()
        return db

    def _identity_differs(self) -> bool:
        meta = self.meta()
        return bool(meta) and (
            meta.get("origin") != self.origin_root or meta.get("format") != STORE_FORMAT
        )

    def _reset(self) -> None:
        assert self._db is not None
        with self._db:
            self._db.execute("BEGIN")
            for table in ("meta", "entry", "listed"):
                self._db.execute(f"DELETE FROM {table}")

    def _move_aside(self, exc: Exception) -> None:
        log.warning("metadata store %s is unreadable (%s): starting a new one", self.path, exc)
        if self._db is not None:
            self._db.close()
            self._db = None
        for suffix in ("", "-wal", "-shm"):
            src = Path(f"{self.path}{suffix}")
            if src.exists():
                os.replace(src, f"{src}.corrupt")

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    # -- small key/value facts (origin identity, root attributes) -----------------------

    def meta(self) -> dict[str, Any]:
        assert self._db is not None
        rows = self._db.execute("SELECT key, value FROM meta").fetchall()
        return {key: json.loads(value) for key, value in rows}

    def set_meta(self, **values: Any) -> None:
        assert self._db is not None
        with self._lock:
            self._db.executemany(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                [(k, json.dumps(v)) for k, v in values.items()],
            )

    # -- loading and writing ----------------------------------------------------------------

    def load_into(self, cache: MetadataCache) -> int:
        """Blocking: fill *cache* before it serves; returns the entries restored."""
        assert self._db is not None
        listed = self.listed_dirs()
        before = cache.count()
        # Millions of new objects and no garbage: the cyclic collector's passes over
        # the growing heap were most of the load's time (4.5 s for a million rows).
        with collector_paused():
            cache.restore(self.root(), self._rows(self._db), listed)
        return cache.count() - before

    def root(self) -> StatInfo | None:
        """The origin root's attributes as last seen (what an offline start serves)."""
        root_raw = self.meta().get("root")
        return StatInfo(*root_raw) if root_raw else None

    def listed_dirs(self) -> list[bytes]:
        """Blocking: the directories whose listing the store holds whole."""
        with self._lock:  # the saver's thread may be writing on this connection
            assert self._db is not None
            return [d for (d,) in self._db.execute("SELECT dir FROM listed")]

    @staticmethod
    def _rows(db: sqlite3.Connection) -> sqlite3.Cursor:
        """Every entry row, streamed, in the primary key's order (a directory's
        entries together: the order LateRestore.add relies on)."""
        return db.execute("SELECT dir, name, st FROM entry ORDER BY dir, name")

    def row_batches(self, size: int) -> Generator[list[tuple[bytes, bytes, bytes]], None, None]:
        """Blocking, a batch of *size* rows per ``next()`` (each may come from another
        thread): the entries, for a merge into a cache that serves already. Read
        through a connection of its own, read only, in one read transaction: the
        saver's writes on the main connection go on meanwhile, unseen by it."""
        db = sqlite3.connect(
            f"file:{self.path}?mode=ro", uri=True, check_same_thread=False, isolation_level=None
        )
        try:
            db.execute("BEGIN")
            rows = self._rows(db)
            while batch := rows.fetchmany(size):
                yield batch
        finally:
            db.close()

    def write(self, journal: Journal) -> None:
        """Blocking: apply *journal* in one transaction."""
        with self._lock:
            db = self._db
            if db is None:
                return
            db.execute("BEGIN")
            try:
                self._apply(db, journal)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    @staticmethod
    def _apply(db: sqlite3.Connection, journal: Journal) -> None:
        for op, a, b in journal.tree_ops:
            if op == "forget":
                for table in ("entry", "listed"):
                    where, args = _subtree("dir", a) if b else ("dir = ?", (a,))
                    db.execute(f"DELETE FROM {table} WHERE {where}", args)
            else:
                _move_tree(db, a, b)
        db.executemany(
            "DELETE FROM entry WHERE dir = ? AND name = ?",
            [key for key, st in journal.puts.items() if st is None],
        )
        db.executemany(
            "INSERT OR REPLACE INTO entry (dir, name, st) VALUES (?, ?, ?)",
            [(d, n, raw) for (d, n), raw in journal.puts.items() if raw is not None],
        )
        db.executemany(
            "DELETE FROM listed WHERE dir = ?", [(d,) for d, f in journal.listed.items() if not f]
        )
        db.executemany(
            "INSERT OR IGNORE INTO listed (dir) VALUES (?)",
            [(d,) for d, f in journal.listed.items() if f],
        )
        if journal.root_st:
            st = journal.root_st[0]
            db.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('root', ?)",
                (json.dumps(list(st) if st is not None else None),),
            )


def _move_tree(db: sqlite3.Connection, old: bytes, new: bytes) -> None:
    """Rename the directory *old* (and everything below) to *new*."""
    for table, columns in (("entry", "dir, name, st"), ("listed", "dir")):
        where, args = _subtree("dir", old)
        rows = db.execute(f"SELECT {columns} FROM {table} WHERE {where}", args).fetchall()
        db.execute(f"DELETE FROM {table} WHERE {where}", args)
        marks = ", ".join("?" * len(columns.split(",")))
        db.executemany(
            f"INSERT OR REPLACE INTO {table} ({columns}) VALUES ({marks})",
            [(new + row[0][len(old) :], *row[1:]) for row in rows],
        )
