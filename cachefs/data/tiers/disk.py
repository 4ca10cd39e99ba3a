"""A persistent cache tier: checksummed chunk files in a directory (SSD or HDD).

Layout of a tier directory (directories 0700, files 0600, whatever the umask)::

    .lock                 flock()ed while a mount uses the tier
    secret                32 random bytes: the key of this tier's chunk tags
    format                "cachefs chunk format 2": the chunks here are of this format
    index                 snapshot of the index (sizes, access counts); a hint
    tmp/                  chunk files being written; leftovers of a crash are removed
    chunks/ab/ab12...ef   one file per chunk, named by its key digest

A directory another user owns or could write to (or could swap, through a
directory above it) is refused at open (cachefs.common.private).

Every method blocks (file I/O) and is called from worker threads; the index is
guarded by one lock and file I/O happens outside it. A chunk file only ever
appears under its final name complete (temp file + rename), and every read is
verified (chunkfile.decode_payload: the tag under this tier's secret, then the
checksum), so neither a crash, nor a flipped bit on disk, nor a file this tier
did not write can make a wrong byte reach a reader. A tier whose ``format``
marker is missing or old (or whose secret had to be made anew) drops all its
chunk files when its index loads: they could never verify.

Longer than the other modules, for a reason: the index, the eviction order,
the pins, the byte count and the files they describe change together under
the one lock, and splitting them would spread that invariant over several
classes. The chunk file format is in chunkfile.py, the ranking in policies.py.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import struct
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Container, Iterable, Iterator
from pathlib import Path

from cachefs.common import private
from cachefs.config import TierConfig, format_size
from cachefs.data.chunks import ChunkKey
from cachefs.data.tiers import chunkfile
from cachefs.data.tiers.policies import EvictionPolicy, make_policy
from cachefs.data.tiers.ram import TierCounters
from cachefs.stats.counters import Stats

log = logging.getLogger(__name__)

BLOCK = 4096
INDEX_MAGIC = b"CFSI"
INDEX_HEADER = struct.Struct("<4sII")  # magic, version, count
INDEX_RECORD = struct.Struct("<16sIdId")  # digest, size, last access, count, weight
FREE_SPACE_RECHECK = 1.0  # seconds between statvfs() calls
SECRET_NAME = "secret"
FORMAT_NAME = "format"
FORMAT_MARKER = f"cachefs chunk format {chunkfile.FORMAT_VERSION}\n".encode()
READ_NOTES = 65536  # reads RAM served, waiting to be counted here (the oldest drop)


class TierInUse(Exception):
    """Another cachefs mount holds this tier directory."""


def allocated(length: int) -> int:
    """Bytes a file of *length* takes on disk (whole 4 KiB blocks)."""
    return -(-length // BLOCK) * BLOCK


MAKE_ROOM_TRIES = 4  # rounds of evict-then-reserve before a put is skipped


class DiskTier:
    def __init__(
        self,
        cfg: TierConfig,
        namespace: bytes,
        stats: Stats,
        clock: Callable[[], float] = time.time,
    ) -> None:
        assert cfg.path is not None
        self.name = cfg.name
        self.cfg = cfg
        self.path = Path(cfg.path)
        self.namespace = namespace
        self.stats = stats
        self.clock = clock
        self.policy: EvictionPolicy = make_policy(cfg.eviction, cfg.max_size)
        # The index (digest -> allocated bytes, access history) is the policy itself:
        # one structure per chunk, not a dict beside it.
        self._writing: Counter[bytes] = Counter()  # chunk files puts are writing right now
        self.pinned: set[bytes] = set()  # never evicted by pressure or TTL (pins.py)
        # chunks read again since they came (a promotion score above 0): what
        # hot_chunks looks at, rather than every chunk of the tier
        self._reread: dict[bytes, None] = {}  # (a dict: ties keep a fixed order)
        # Chunks RAM served a read of (note_read), counted at the next pass.
        self._read_notes: deque[ChunkKey] = deque(maxlen=READ_NOTES)
        self.bytes = 0  # allocated bytes of indexed chunks plus writes in progress
        self.counters = TierCounters()
        self.ready = threading.Event()  # set once the index is loaded
        self._lock = threading.Lock()
        self._lock_fd: int | None = None
        self._free_space = (0.0, float("inf"))  # (checked at, bytes free)
        self.secret = b""  # the key of this tier's chunk tags; read or made by open()
        self._drop_all = False  # chunk files here cannot verify: load_index drops them
        # Why the free-space reserve (min_free) stops this tier caching, or None.
        self.not_caching_reason: str | None = None
        self.skipped_min_free = 0  # chunks not stored because of the reserve
        # Where evicted chunks whose score still deserves it go (ssd -> hdd).
        self.demote_to: DiskTier | None = None
        self.demote_threshold = 0.0

    # -- lifecycle ----------------------------------------------------------------

    def open(self) -> None:
        """Create, check and lock the directory; fast, so the mount can fail early.

        Raises private.UnsafePath (an OSError) when another user owns the
        directory or could change it; missing parents are created 0700.
        """
        for sub in ("", "chunks", "tmp"):
            private.ensure_private_dir(self.path / sub)
        fd = private.open_private(self.path / ".lock", os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise TierInUse(f"{self.path} is used by another cachefs mount") from None
        self._lock_fd = fd
        for leftover in (self.path / "tmp").iterdir():
            with contextlib.suppress(OSError):
                leftover.unlink()
        self._open_secret()

    def _open_secret(self) -> None:
        """Read the tier's secret, or make one (then no chunk here can verify)."""
        secret = self._read_small(SECRET_NAME)
        marker = self._read_small(FORMAT_NAME)
        if secret is None or len(secret) != chunkfile.SECRET_SIZE:
            if secret is not None:
                log.warning("%s tier: %s is damaged: making a new one", self.name, SECRET_NAME)
            # The marker goes first: a crash before the chunks are dropped drops them next time.
            with contextlib.suppress(FileNotFoundError):
                (self.path / FORMAT_NAME).unlink()
            marker = None
            secret = os.urandom(chunkfile.SECRET_SIZE)
            private.write_private_file(self.path / SECRET_NAME, secret, self.path / "tmp")
        self.secret = secret
        self._drop_all = marker != FORMAT_MARKER

    def _read_small(self, name: str) -> bytes | None:
        try:
            return private.read_private_file(self.path / name)
        except FileNotFoundError:
            return None

    def load_index(self) -> None:
        """Rebuild the index: a listing of chunks/ for what is there (the truth: a crash
        may have left the snapshot stale), the snapshot for the size and access history
        of what it lists, in its order; a stat only for chunk files it does not list
        (in the listing's order).

        A chunk file is written once under its name and never changed there, so the
        size the snapshot recorded is the file's (one dropped and stored again at
        another compression level between a snapshot and a crash is off by less
        than a chunk until it is evicted). Not stat()ing a million chunk files
        that the snapshot lists halves a clean restart; and the snapshot is read
        record by record against the listing, not into a dict of every record
        (at a million chunks that dict cost 130 MiB of RSS the daemon kept).
        """
        if self._drop_all:
            self._drop_unverifiable()
        # A dict, not a set: the files left to stat keep the listing's order, which is
        # the order of their inodes on disk (after a crash: every file; a set's order
        # seeks all over a cold inode table).
        on_disk = dict.fromkeys(self._scan_names())
        now = self.clock()
        for digest, size, last, count, weight in self._snapshot_records():
            if on_disk.pop(digest, 0) is None:
                self._restore(digest, size, min(last, now), count, weight)
        chunks = str(self.path / "chunks")  # (a str path: pathlib costs more than the stat)
        for digest in on_disk:  # written since the snapshot (or there is none)
            name = digest.hex()
            try:
                st = os.stat(f"{chunks}/{name[:2]}/{name}", follow_symlinks=False)
            except OSError:
                continue  # gone meanwhile
            self._restore(digest, allocated(st.st_size), min(st.st_mtime, now), 1, 1.0)
        del on_disk
        self.ready.set()
        self.make_room(0)  # the config may have shrunk since the last mount
        log.info("%s tier: %d chunks, %d bytes indexed", self.name, len(self.policy), self.bytes)

    def _restore(self, digest: bytes, size: int, last: float, count: int, weight: float) -> None:
        with self._lock:
            if digest in self.policy:  # written by a put since the mount: counted
                return
            self.policy.restore(digest, size, last, count, weight)
            self._note_reads(digest)
            self.bytes += size

    def _drop_unverifiable(self) -> None:
        """Delete every chunk file (of an older format, or tagged with another secret),
        then write the format marker: counted and logged once, never one by one."""
        dropped = 0
        for digest in self._scan_names(regular_only=False):
            with contextlib.suppress(FileNotFoundError):
                self.chunk_path(digest).unlink()
                dropped += 1
        with contextlib.suppress(FileNotFoundError):
            (self.path / "index").unlink()  # the history of chunks that are gone
        private.write_private_file(self.path / FORMAT_NAME, FORMAT_MARKER, self.path / "tmp")
        self._drop_all = False
        if dropped:
            log.warning(
                "%s tier: dropped %d chunk files of an older format (or of another "
                "secret): they cannot be verified; they are fetched again as needed",
                self.name,
                dropped,
            )

    def close(self) -> None:
        if self.ready.is_set():
            self.save_index()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # -- reads ----------------------------------------------------------------------

    def chunk_path(self, digest: bytes) -> Path:
        name = digest.hex()
        return self.path / "chunks" / name[:2] / name

    def known_to_hold(self, key: ChunkKey) -> bool:
        """From the index alone (no I/O: safe on the trio thread); False until it loads."""
        if not self.ready.is_set():
            return False
        # No lock: a dict lookup is atomic under the GIL, and the trio thread
        # must not wait while a worker holds the lock for an eviction batch.
        return key.digest(self.namespace) in self.policy

    def known_absent(self, key: ChunkKey) -> bool:
        """True when the loaded index says the chunk is not here, so `get` would
        answer None without I/O (safe on the trio thread); False until it loads."""
        return self.ready.is_set() and key.digest(self.namespace) not in self.policy

    def count_miss(self) -> None:
        """A lookup that `known_absent` answered: counted as `get` counts its misses."""
        self.counters.misses += 1

    def contains(self, key: ChunkKey) -> bool:
        digest = key.digest(self.namespace)
        if self.ready.is_set():
            return self.contains_digest(digest)
        return not self._drop_all and self.chunk_path(digest).exists()

    def get(self, key: ChunkKey) -> bytes | None:
        """The chunk's verified bytes, or None (absent, unreadable or corrupt)."""
        digest = key.digest(self.namespace)
        try:
            parts = self._read_parts(digest)
            if parts is None:
                self.counters.misses += 1
                return None
            raw = chunkfile.decode_payload(parts[0], parts[1], digest, self.secret)
            if len(raw) != key.expected_length:
                raise chunkfile.CorruptChunk(f"{len(raw)} bytes, expected {key.expected_length}")
        except chunkfile.CorruptChunk as exc:
            log.warning("%s tier: corrupt chunk %s (%s): deleted", self.name, digest.hex(), exc)
            self.stats.add("corrupt_chunks")
            self.discard_digests([digest])
            self.counters.misses += 1
            return None
        with self._lock:
            self.policy.touch(digest, self.clock())
            self._note_reads(digest)
        self.counters.hits += 1
        return raw

    def note_read(self, key: ChunkKey) -> None:
        """RAM served a read of *key*: it counts for this tier's copy too. Called on the
        trio thread, so it only appends (deque.append is atomic); the read is counted
        under the lock by the next eviction, migrator pass, TTL sweep or snapshot."""
        self._read_notes.append(key)

    def _count_noted_reads(self) -> None:
        """Touch the policy for the reads RAM served of chunks held here (lock held)."""
        notes = self._read_notes
        if not notes:
            return
        now = self.clock()
        namespace, policy = self.namespace, self.policy
        while True:
            try:
                key = notes.popleft()
            except IndexError:
                break
            digest = key.digest(namespace)
            if digest in policy:
                policy.touch(digest, now)
                self._note_reads(digest)

    def _read_parts(self, digest: bytes) -> tuple[chunkfile.Header, bytes] | None:
        """Header and payload, read separately so a raw payload needs no copy."""
        if not self._indexed_or_unknown(digest):
            return None
        try:
            fd = os.open(self.chunk_path(digest), os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            self._forget([digest])
            return None
        except OSError as exc:
            log.warning("%s tier: cannot read chunk %s: %s", self.name, digest.hex(), exc)
            return None
        try:
            header = chunkfile.parse_header(
                os.pread(fd, chunkfile.HEADER_SIZE, 0), os.fstat(fd).st_size
            )
            payload = os.pread(fd, header.stored_length, chunkfile.HEADER_SIZE)
        except OSError as exc:  # a failing disk is a miss, never an error for the reader
            log.warning("%s tier: cannot read chunk %s: %s", self.name, digest.hex(), exc)
            return None
        finally:
            os.close(fd)
        return header, payload

    def _indexed_or_unknown(self, digest: bytes) -> bool:
        """False when the loaded index says the chunk is not here, or, before it
        loads, when every chunk file here is about to be dropped."""
        if not self.ready.is_set():
            return not self._drop_all
        return self.contains_digest(digest)

    def _read_blob(self, digest: bytes, check_index: bool = True) -> bytes | None:
        if check_index and not self._indexed_or_unknown(digest):
            return None
        try:
            with open(self.chunk_path(digest), "rb") as f:
                return f.read()
        except FileNotFoundError:
            self._forget([digest])
        except OSError as exc:  # a failing disk is a miss, never an error for the reader
            log.warning("%s tier: cannot read chunk %s: %s", self.name, digest.hex(), exc)
        return None

    # -- writes -------------------------------------------------------------------------

    def put(self, key: ChunkKey, raw: bytes, level: int | None, weight: float = 1.0) -> bool:
        """Store a chunk (compressed at *level*, or raw); False if it was not stored."""
        digest = key.digest(self.namespace)
        if not self.ready.is_set():
            return False  # capacity unknown until the index is loaded
        with self._lock:
            if digest in self.policy:
                self.policy.touch(digest, self.clock())
                self._note_reads(digest)
                return True
        encoded = chunkfile.encode(digest, raw, level, self.secret)
        blob, start = encoded.blob, chunkfile.HEADER_SIZE
        if not self._store(digest, blob[:start], memoryview(blob)[start:], weight):
            return False
        self.stats.add("compressed_bytes_saved", encoded.saved)
        return True

    def put_blob(
        self,
        digest: bytes,
        blob: bytes,
        weight: float = 1.0,
        history: tuple[float | None, int] | None = None,
    ) -> bool:
        """Store a chunk file another tier verified, making room first; never over max_size.

        The header is re-tagged with this tier's secret (the payload is written
        as it is: no recompression), so *blob* must come verified: this tier
        vouches for it from now on. *history* (last access, access count)
        carries a moved chunk's record along.
        """
        if len(blob) < chunkfile.HEADER_SIZE:
            return False
        header = chunkfile.retag(blob, self.secret)
        return self._store(
            digest, header, memoryview(blob)[chunkfile.HEADER_SIZE :], weight, history
        )

    def _store(
        self,
        digest: bytes,
        header: bytes,
        payload: bytes | memoryview,
        weight: float = 1.0,
        history: tuple[float | None, int] | None = None,
    ) -> bool:
        if not self.ready.is_set():
            return False  # capacity unknown until the index is loaded
        size = allocated(len(header) + len(payload))
        if size > self.cfg.max_size or not self.make_room(size):
            return False
        with self._lock:
            self._writing[digest] += 1  # an eviction of an older copy must not unlink it
        written = self._write(digest, header, payload)
        with self._lock:
            self._writing[digest] -= 1
            if not self._writing[digest]:
                del self._writing[digest]
            if not written:
                self.bytes -= size
                if digest not in self.policy and digest not in self._writing:
                    # An older copy an eviction left on disk because this write was on
                    # its way (_unlink spares a chunk being stored): the write failed,
                    # so nothing counts that file any more.
                    with contextlib.suppress(FileNotFoundError):
                        self.chunk_path(digest).unlink()
                return False
            if digest in self.policy:  # a concurrent put of the same chunk won
                self.bytes -= size
            else:
                last, count = history if history is not None else (None, 1)
                if last is None:
                    self.policy.add(digest, size, self.clock(), weight)
                else:
                    self.policy.restore(digest, size, last, max(1, count), weight)
                    self._note_reads(digest)
        return True

    def make_room(self, size: int) -> bool:
        """Evict until *size* more bytes fit under max_size and the free-space reserve.

        On success the *size* bytes are reserved (counted in self.bytes). Victims
        are unlinked before the room is taken, so what is counted (files on disk
        plus rooms taken and not yet written) never passes max_size, even with
        several writers; a writer that keeps losing the room to others gives up.
        When the free-space reserve alone is what stops it (evicting all it may
        would fit max_size, not min_free), the tier says so once (see
        _reserve_state) and counts the chunk in skipped_min_free.
        """
        free = self._free_bytes()
        reserve_need = int(max(self.cfg.min_free - (free - size), 0))
        for _ in range(MAKE_ROOM_TRIES):
            with self._lock:
                self._count_noted_reads()
                over = self.bytes + size - self.cfg.max_size
                need = max(over, reserve_need)
                if need <= 0:
                    self.bytes += size
                    break
                victims = self._pick_victims(need)
                freeable = sum(s for _, s in victims)
                if freeable < need:  # cannot free enough: evict nothing
                    blocked_by_reserve = freeable >= over
                    break
                demote = self._worth_demoting(victims)
                leaving = self._drop_leaving(victims)
            self._evict(victims, demote, leaving)
            reserve_need = 0  # freed just now; the cached free-space figure predates it
        else:
            return False  # kept losing the room to other writers
        if need > 0:
            if blocked_by_reserve:
                self._reserve_state(free, blocked=True, chunk=size > 0)
            return False
        if self.not_caching_reason is not None:
            self._reserve_state(free, blocked=False, chunk=False)
        return True

    def _reserve_state(self, free: float, blocked: bool, chunk: bool) -> None:
        """Whether min_free stops this tier caching: logged once as it starts and
        once as it ends; shown in stats_dict meanwhile."""
        setting = f"tiers.{self.name}.min_free"
        if blocked:
            reason = (
                f"{_size(free)} free on the filesystem of {self.path}, "
                f"below {setting} = {_size(self.cfg.min_free)}"
            )
            with self._lock:
                starting = self.not_caching_reason is None
                self.not_caching_reason = reason
                self.skipped_min_free += chunk
            if starting:
                log.warning(
                    "%s tier: caching nothing: %s; free some space there, lower %s "
                    "(-o %s=0 keeps no reserve), or move tiers.%s.path to a bigger "
                    "filesystem",
                    self.name,
                    reason,
                    setting,
                    setting,
                    self.name,
                )
            return
        with self._lock:
            ended, self.not_caching_reason = self.not_caching_reason, None
        if ended is not None:
            log.info(
                "%s tier: caching again: %s free, above %s = %s",
                self.name,
                _size(free),
                setting,
                _size(self.cfg.min_free),
            )

    def _pick_victims(self, need: int) -> list[tuple[bytes, int]]:
        """Chunks to evict to free *need* bytes, best victims first (index unchanged)."""
        return pick_victims(
            self.policy, self.pinned, need, self.bytes, self.cfg.max_size, self.clock()
        )

    def _write(self, digest: bytes, header: bytes, payload: bytes | memoryview) -> bool:
        """temp file (0600) + rename; on ENOSPC evict some and try once more."""
        length = len(header) + len(payload)
        for attempt in range(2):
            tmp = self.path / "tmp" / f"{digest.hex()}.{threading.get_ident()}"
            try:
                with os.fdopen(private.create_file(tmp), "wb") as f:
                    f.write(header)
                    f.write(payload)
                final = self.chunk_path(digest)
                private.make_dir(final.parent)
                os.replace(tmp, final)
                return True
            except OSError as exc:
                with contextlib.suppress(OSError):
                    tmp.unlink()
                if exc.errno in (errno.ENOSPC, errno.EDQUOT) and attempt == 0:
                    self._evict_bytes(max(4 * length, self.bytes // 10))
                    continue
                log.warning("%s tier: not caching a chunk: %s", self.name, exc)
                return False
        return False

    def move_to(self, key: ChunkKey, target: DiskTier) -> bool:
        return self.move_digest_to(key.digest(self.namespace), target)

    def move_digest_to(self, digest: bytes, target: DiskTier) -> bool:
        """Move a chunk to another tier: copy, verify, then delete here.

        A crash between the steps leaves the chunk in both tiers (or only
        here); it is never lost, and a duplicate is harmless.
        """
        blob = self._read_verified(digest)
        if blob is None:
            return False
        with self._lock:
            weight = self.policy.weight_of(digest)
            history = (self.policy.last_access(digest), self.policy.access_count(digest))
        if not target.put_blob(digest, blob, weight, history):
            return False
        self.discard_digests([digest])
        return True

    def _read_verified(self, digest: bytes, check_index: bool = True) -> bytes | None:
        """A chunk file's bytes after a full check: never spread a corrupt chunk."""
        blob = self._read_blob(digest, check_index)
        if blob is None:
            return None
        try:
            chunkfile.decode(blob, digest, self.secret)
        except chunkfile.CorruptChunk:
            self.stats.add("corrupt_chunks")
            self.discard_digests([digest])
            return None
        return blob

    # -- removal ------------------------------------------------------------------------

    def discard_digests(self, digests: Iterable[bytes]) -> None:
        with self._lock:
            gone = [(d, self._drop_entry(d)) for d in digests]
        self._unlink(gone, evicted=False)

    def discard(self, keys: Iterable[ChunkKey]) -> None:
        self.discard_digests(k.digest(self.namespace) for k in keys)

    def sweep_expired(self) -> int:
        """Drop chunks not accessed within the tier's TTL."""
        with self._lock:
            self._count_noted_reads()
            expired = self.policy.expired(self.clock(), self.cfg.ttl)
            gone = [(d, self._drop_entry(d)) for d in expired if d not in self.pinned]
        self._unlink(gone, evicted=True)
        return len(gone)

    def _evict_bytes(self, nbytes: int) -> None:
        with self._lock:
            victims = self._pick_victims(nbytes)
            demote = self._worth_demoting(victims)
            leaving = self._drop_leaving(victims)
        self._evict(victims, demote, leaving)

    def _drop_leaving(self, victims: list[tuple[bytes, int]]) -> int:
        """Take victims out of the index (lock held); their bytes stay counted, since
        their files stay on disk until _evict unlinks them. Returns those bytes."""
        leaving = sum(self._drop_entry(digest) for digest, _ in victims)
        self.bytes += leaving
        return leaving

    def _evict(
        self, victims: list[tuple[bytes, int]], demote: list[tuple[bytes, float]], leaving: int
    ) -> None:
        """Demote what deserves it, unlink the victims, then stop counting them: another
        writer never sees room that is still taken on disk."""
        try:
            self._demote(demote)
            self._unlink(victims, evicted=True)
        finally:
            with self._lock:
                self.bytes -= leaving

    # -- scores, promotion and demotion ---------------------------------------------------

    def score(self, digest: bytes, now: float) -> float:
        """The chunk's promotion score (policies.promotion_score, defined once there):
        reads served from this tier x recency factor x type weight; 0.0 if unknown."""
        return self.policy.promotion_score(digest, now)

    def hot_chunks(self, threshold: float) -> list[tuple[bytes, float, int]]:
        """``(digest, score, size)`` of chunks scoring at least *threshold*, best first.

        Only chunks read again since they came can score above 0, so for a
        positive threshold only those are scored, not the whole index.
        """
        now = self.clock()
        with self._lock:
            self._count_noted_reads()
            policy = self.policy
            looked_at = self._reread if threshold > 0 else policy.keys()
            scored = [
                (d, self.score(d, now), policy.size_of(d))
                for d in looked_at
                if d not in self.pinned  # a pin, not a score, decides where these live
            ]
        hot = [entry for entry in scored if entry[1] >= threshold]
        hot.sort(key=lambda entry: entry[1], reverse=True)
        return hot

    def weakest_score(self) -> float:
        """Score of the chunk this tier would evict first (0 when empty)."""
        now = self.clock()
        with self._lock:
            victims = self.policy.victims(now)
            try:
                for digest in victims:
                    return self.score(digest, now)
            finally:
                victims.close()
        return 0.0

    def contains_digest(self, digest: bytes) -> bool:
        with self._lock:
            return digest in self.policy

    def set_pinned(self, digests: list[bytes], pinned: bool) -> None:
        with self._lock:
            if pinned:
                self.pinned.update(digests)
            else:
                self.pinned.difference_update(digests)

    def has_room(self, size: int) -> bool:
        with self._lock:
            return self.bytes + size <= self.cfg.max_size

    def _worth_demoting(self, victims: list[tuple[bytes, int]]) -> list[tuple[bytes, float]]:
        """Victims whose score still deserves the lower tier (called under the lock)."""
        if self.demote_to is None:
            return []
        now = self.clock()
        return [
            (digest, self.policy.weight_of(digest))
            for digest, _ in victims
            if self.score(digest, now) >= self.demote_threshold
        ]

    def _demote(self, chunks: list[tuple[bytes, float]]) -> None:
        """Copy evicted-but-deserving chunks down before they are unlinked here."""
        target = self.demote_to
        if target is None:
            return
        for digest, weight in chunks:
            blob = self._read_verified(digest, check_index=False)  # already out of the index
            if blob is not None and target.put_blob(digest, blob, weight):
                self.stats.add("demotions")

    def _forget(self, digests: Iterable[bytes]) -> None:
        with self._lock:
            for digest in digests:
                self._drop_entry(digest)

    def _note_reads(self, digest: bytes) -> None:
        """Remember a chunk read again since it came (lock held)."""
        if self.policy.access_count(digest) >= 2:
            self._reread[digest] = None

    def _drop_entry(self, digest: bytes) -> int:
        """Remove from the index; returns the bytes it accounted for."""
        self.pinned.discard(digest)
        self._reread.pop(digest, None)
        size = self.policy.size_of(digest)
        self.policy.remove(digest)
        self.bytes -= size
        return size

    def _unlink(self, entries: list[tuple[bytes, int]], evicted: bool) -> None:
        for digest, _ in entries:
            with self._lock:
                # Stored again since it was dropped (or being stored): that file is the
                # new copy, counted in the index; deleting it would leave a ghost.
                if digest in self.policy or digest in self._writing:
                    continue
                with contextlib.suppress(FileNotFoundError):
                    self.chunk_path(digest).unlink()
            if evicted:
                self.counters.evictions += 1

    # -- free space -----------------------------------------------------------------------

    def _free_bytes(self) -> float:
        checked, free = self._free_space
        now = time.monotonic()
        if now - checked > FREE_SPACE_RECHECK:
            try:
                sv = os.statvfs(self.path)
                free = sv.f_bavail * sv.f_frsize
            except OSError:
                free = float("inf")
            self._free_space = (now, free)
        return free

    # -- the index on disk ----------------------------------------------------------------

    def _scan_names(self, regular_only: bool = True) -> Iterator[bytes]:
        """The digests of the chunk files under chunks/ (names only: no stat); with
        *regular_only* False, of whatever is named like one."""
        chunks = self.path / "chunks"
        for fan in os.scandir(chunks):
            if not fan.is_dir(follow_symlinks=False):
                continue
            for entry in os.scandir(fan.path):
                name = entry.name
                if len(name) != 32:
                    continue  # not ours; `cachefs check` reports it
                try:
                    digest = bytes.fromhex(name)
                except ValueError:
                    continue
                if not regular_only or entry.is_file(follow_symlinks=False):  # d_type
                    yield digest

    def save_index(self) -> None:
        with self._lock:
            self._count_noted_reads()
            records = self.policy.snapshot()
        body = b"".join(
            INDEX_RECORD.pack(d, size, last, min(count, 2**32 - 1), weight)
            for d, size, last, count, weight in records
        )
        data = INDEX_HEADER.pack(INDEX_MAGIC, 1, len(records)) + body
        try:
            private.write_private_file(self.path / "index", data, self.path / "tmp")
        except OSError as exc:
            log.warning("%s tier: cannot save the index: %s", self.name, exc)

    def _snapshot_records(self) -> Iterator[tuple[bytes, int, float, int, float]]:
        """``(digest, size, last access, count, weight)`` of the index snapshot, one
        record at a time; none when there is no valid snapshot."""
        try:
            data = private.read_private_file(self.path / "index")
            magic, version, count = INDEX_HEADER.unpack_from(data)
            body = memoryview(data)[INDEX_HEADER.size :]
            if magic != INDEX_MAGIC or version != 1 or len(body) != count * INDEX_RECORD.size:
                raise ValueError("not an index snapshot")
        except (OSError, ValueError, struct.error) as exc:
            if not isinstance(exc, FileNotFoundError):
                log.warning("%s tier: ignoring the index snapshot: %s", self.name, exc)
            return iter(())
        return INDEX_RECORD.iter_unpack(body)

    # -- introspection -------------------------------------------------------------------

    def stats_dict(self) -> dict[str, int | bool | str | None]:
        with self._lock:
            chunks = len(self.policy)
            reason = self.not_caching_reason
            skipped = self.skipped_min_free
        return {
            "chunks": chunks,
            "bytes": self.bytes,
            "max_size": self.cfg.max_size,
            "ready": self.ready.is_set(),
            "caching": reason is None,  # False while the min_free reserve stops it
            "not_caching_reason": reason,
            "skipped_min_free": skipped,
            **self.counters.as_dict(),
        }


def pick_victims(
    policy: EvictionPolicy,
    pinned: Container[bytes],
    need: int,
    held: int,
    max_size: int,
    now: float,
) -> list[tuple[bytes, int]]:
    """Chunks to evict to free *need* bytes, best victims first, pins skipped; the
    index is unchanged (DiskTier, and the simulator's disk tiers: cachefs.data.simulate).

    It evicts a little more than needed so the next puts do not each evict: 2 % of
    the tier (of what it holds, *held*, when the filesystem fills before max_size
    does). The cost is the policy's per victim, never a sort of the index.
    """
    victims: list[tuple[bytes, int]] = []
    freed = 0
    target = need + min(held, max_size) // 50
    passing = policy.victims(now)
    try:
        for digest in passing:
            if freed >= target:
                break
            if digest in pinned:
                continue
            size = policy.size_of(digest)
            victims.append((digest, size))
            freed += size
    finally:
        passing.close()  # what it went past and we keep goes back in place
    return victims


def _size(n: float) -> str:
    """Bytes for a log line: exact, and readable."""
    if n == float("inf"):
        return "unknown"
    return f"{int(n)} bytes" if n < 1024 else f"{int(n)} bytes ({format_size(n, exact=False)})"
