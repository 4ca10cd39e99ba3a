"""Access statistics: counted in process on the hot path, flushed in batches.

Nothing here touches the network on a read. ``Stats`` bumps in-memory
counters (under a lock: worker threads count too) and keeps the deltas not
yet flushed; the flusher task (background.py) hands those deltas to a
backend every ``monitoring.stats_interval``:

* ``RedisBackend`` — one pipeline per flush; keys under ``cachefs:<mount>:``;
* ``EmbeddedBackend`` — the same numbers in a JSON file in the SSD tier
  directory (``0600``), so stats survive a restart with no Redis at all.

File paths are ``os.fsdecode``d, so a name that is not UTF-8 holds surrogate
escapes: Redis gets keys and members as bytes (``os.fsencode``), the exact
bytes of the name; the JSON file keeps them as ``\\udcXX`` escapes, which read
back to the same str.

If a flush fails (Redis gone), the batch is merged back and retried later;
per-file deltas are bounded, so a long outage costs memory only up to
``MAX_PENDING_FILES`` entries (the oldest are dropped and counted).
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import redis

from cachefs.common import private
from cachefs.stats.histogram import Histogram
from cachefs.stats.hot import HotFiles

log = logging.getLogger(__name__)

MAX_PENDING_FILES = 100_000


@dataclass
class FileDelta:
    access_count: int = 0
    bytes_read: int = 0
    read_time: float = 0.0
    last_access: float = 0.0

    def merge(self, other: FileDelta) -> None:
        self.access_count += other.access_count
        self.bytes_read += other.bytes_read
        self.read_time += other.read_time
        self.last_access = max(self.last_access, other.last_access)


@dataclass
class Batch:
    counters: Counter[str] = field(default_factory=Counter)
    files: dict[str, FileDelta] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.counters) or bool(self.files)


class Stats:
    """Counters since mount (for the stats xattr) plus the deltas to flush."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tier_names: dict[tuple[str, str, bool], tuple[str, str]] = {}
        self.counters: Counter[str] = Counter()
        self._pending = Batch()
        # how long FUSE reads took in cachefs (since mount; never flushed to a backend)
        self.read_seconds = Histogram()
        self.hot = HotFiles()  # the files read most lately (cachefs top)

    # -- the hot path ---------------------------------------------------------------

    def add(self, name: str, amount: int = 1) -> None:
        with self._lock:
            self.counters[name] += amount
            self._pending.counters[name] += amount

    def tier_access(self, tier: str, content_type: str, hit: bool, nbytes: int) -> None:
        """A chunk looked up in a tier: hits, misses and bytes per tier and type."""
        names = self._tier_names.get((tier, content_type, hit))
        if names is None:  # built once per combination: this runs on every read
            outcome = "hits" if hit else "misses"
            names = (f"{outcome}:{tier}:{content_type}", f"bytes:{tier}:{content_type}")
            self._tier_names[tier, content_type, hit] = names
        count, volume = names
        with self._lock:
            for counters in (self.counters, self._pending.counters):
                counters[count] += 1
                if hit:
                    counters[volume] += nbytes

    def file_access(
        self, path: str, opened: bool = False, nbytes: int = 0, seconds: float = 0.0
    ) -> None:
        with self._lock:
            delta = self._pending.files.get(path)
            if delta is None:
                if len(self._pending.files) >= MAX_PENDING_FILES:
                    self._drop_oldest_file()
                delta = self._pending.files[path] = FileDelta()
            delta.access_count += opened
            delta.bytes_read += nbytes
            delta.read_time += seconds
            delta.last_access = time.time()
        if nbytes:
            self.hot.record(path, nbytes)

    def _drop_oldest_file(self) -> None:
        oldest = next(iter(self._pending.files))  # dicts keep insertion order
        del self._pending.files[oldest]
        self.counters["stats_file_entries_dropped"] += 1

    # -- flushing ---------------------------------------------------------------------

    def take_batch(self) -> Batch:
        with self._lock:
            batch, self._pending = self._pending, Batch()
        return batch

    def give_back(self, batch: Batch) -> None:
        """A flush failed: merge its deltas back so the next flush sends them."""
        with self._lock:
            self._pending.counters.update(batch.counters)
            for path, delta in batch.files.items():
                mine = self._pending.files.get(path)
                if mine is not None:
                    mine.merge(delta)
                elif len(self._pending.files) < MAX_PENDING_FILES:
                    self._pending.files[path] = delta
                else:
                    self.counters["stats_file_entries_dropped"] += 1

    def pending_files(self) -> int:
        with self._lock:
            return len(self._pending.files)

    # -- reading ----------------------------------------------------------------------

    def get(self, name: str) -> int:
        with self._lock:
            return self.counters[name]

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return dict(self.counters)


class StatsBackend(Protocol):
    name: str

    def flush(self, batch: Batch) -> None:
        """Blocking; raises on failure (the batch is then given back)."""
        ...

    def save_model(self, key: str, data: bytes) -> None:
        """Blocking: keep a learnt model (the prediction model) under *key*."""
        ...

    def load_model(self, key: str) -> bytes | None:
        """Blocking: the model saved under *key*, None if there is none."""
        ...

    def close(self) -> None: ...


MODEL_KEY_CHARS = re.compile(r"[^A-Za-z0-9_.-]")


def mount_prefix(mountpoint: str) -> str:
    """Redis key prefix for a mount: ``cachefs:srv-media:`` for /srv/media."""
    name = os.path.realpath(mountpoint).strip("/").replace("/", "-") or "root"
    return f"cachefs:{name}:"


class RedisBackend:
    """Counters in a hash, one hash per file (expiring), a sorted set of files."""

    name = "redis"

    def __init__(self, url: str, prefix: str, max_age: float, password: str | None = None) -> None:
        self.url = url
        self.prefix = prefix
        self.max_age = max(1, int(max_age))
        extra = {"password": password} if password is not None else {}
        self.client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2, **extra)

    def ping(self) -> None:
        self.client.ping()

    def flush(self, batch: Batch) -> None:
        # Bytes throughout: redis-py would encode a str as strict UTF-8, and a file
        # name that is not UTF-8 (surrogate escapes) would raise at every flush.
        prefix = os.fsencode(self.prefix)
        counters, files = prefix + b"counters", prefix + b"files"
        pipe = self.client.pipeline(transaction=False)
        for name, amount in batch.counters.items():
            pipe.hincrby(counters, os.fsencode(name), amount)
        for path, delta in batch.files.items():
            member = os.fsencode(path)
            key = prefix + b"file:" + member
            pipe.hincrby(key, "access_count", delta.access_count)
            pipe.hincrby(key, "bytes_read", delta.bytes_read)
            pipe.hincrbyfloat(key, "read_time", delta.read_time)
            pipe.hset(key, "last_access", delta.last_access)
            pipe.expire(key, self.max_age)
            pipe.zadd(files, {member: delta.last_access})
        pipe.zremrangebyscore(files, 0, time.time() - self.max_age)
        pipe.execute()

    def save_model(self, key: str, data: bytes) -> None:
        # Not under the mount's prefix: every mount of one origin shares it.
        self.client.set(f"cachefs:model:{key}".encode(), data)

    def load_model(self, key: str) -> bytes | None:
        found = self.client.get(f"cachefs:model:{key}".encode())
        if found is None:
            return None
        return found if isinstance(found, bytes) else os.fsencode(found)

    def close(self) -> None:
        self.client.close()


class EmbeddedBackend:
    """The same numbers in a JSON file, rewritten atomically at every flush."""

    name = "embedded"

    def __init__(self, path: Path, max_age: float) -> None:
        self.path = path
        self.max_age = max_age
        self.counters: Counter[str] = Counter()
        self.files: dict[str, FileDelta] = {}
        self._load()

    def _load(self) -> None:
        try:
            data = json.loads(private.read_private_file(self.path))
            self.counters.update({k: int(v) for k, v in data["counters"].items()})
            self.files = {p: FileDelta(**d) for p, d in data["files"].items()}
        except FileNotFoundError:
            pass
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("embedded stats: starting afresh, cannot read %s: %s", self.path, exc)

    def flush(self, batch: Batch) -> None:
        self.counters.update(batch.counters)
        for path, delta in batch.files.items():
            self.files.setdefault(path, FileDelta()).merge(delta)
        horizon = time.time() - self.max_age
        self.files = {p: d for p, d in self.files.items() if d.last_access >= horizon}
        payload = {
            "counters": dict(self.counters),
            "files": {p: asdict(d) for p, d in self.files.items()},
        }
        # ensure_ascii (the default): a surrogate-escaped name is written as \udcXX
        private.write_private_file(self.path, json.dumps(payload).encode())

    def _model_path(self, key: str) -> Path:
        return self.path.with_name(MODEL_KEY_CHARS.sub("_", key) + ".model")

    def save_model(self, key: str, data: bytes) -> None:
        private.write_private_file(self._model_path(key), data)

    def load_model(self, key: str) -> bytes | None:
        try:
            return private.read_private_file(self._model_path(key))
        except FileNotFoundError:
            return None

    def close(self) -> None:
        """Nothing is held open between flushes; the last flush already wrote the file."""


class StatsUnavailable(Exception):
    """stats.backend = "redis" and Redis does not answer."""


def read_password(path: str) -> str | None:
    if not path:
        return None
    try:
        return Path(path).read_text().strip()
    except OSError as exc:
        raise StatsUnavailable(f"stats.redis_password_file: cannot read {path}: {exc}") from None


def open_backend(
    backend: str,
    redis_url: str,
    max_age: float,
    mountpoint: str,
    embedded_dir: Path,
    password_file: str = "",
) -> StatsBackend:
    """The backend for ``stats.backend``: auto falls back to embedded, redis insists."""
    embedded_path = embedded_dir / "stats.json"
    if backend == "embedded":
        return EmbeddedBackend(embedded_path, max_age)
    password = read_password(password_file)
    candidate = RedisBackend(redis_url, mount_prefix(mountpoint), max_age, password)
    try:
        candidate.ping()
        return candidate
    except (redis.RedisError, OSError) as exc:
        candidate.close()
        if backend == "redis":
            raise StatsUnavailable(
                f"stats.backend = redis: {redis_url} does not answer: {exc}"
            ) from None
        log.warning(
            "stats: Redis at %s does not answer (%s); keeping stats in %s",
            redis_url,
            exc,
            embedded_path,
        )
        return EmbeddedBackend(embedded_path, max_age)
