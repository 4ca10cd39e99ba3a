"""The read path: byte ranges → chunks → tiers, with one origin fetch per chunk.

A read is cut into chunks of the file's content-type chunk size. Each chunk is
looked up in the RAM tier; a miss is fetched from the origin in a worker
thread. Concurrent misses on the same chunk share one fetch (single flight).
"""

from __future__ import annotations

import errno
from dataclasses import dataclass, field
from typing import Protocol

import trio

from .chunks import ChunkKey, chunk_range
from .origin import FileVersion
from .stats import Stats
from .tiers import RamTier


class ChunkSource(Protocol):
    """An open origin file the cache can fetch chunks of."""

    @property
    def version(self) -> FileVersion: ...

    @property
    def chunk_size(self) -> int: ...

    @property
    def write_generation(self) -> int: ...

    def fetch(self, key: ChunkKey) -> tuple[bytes, bool]:
        """Blocking: read a chunk from the origin.

        Returns the bytes and whether the origin file still has the key's
        version (only then may the bytes be cached under that key).
        """
        ...


@dataclass
class _Flight:
    done: trio.Event = field(default_factory=trio.Event)
    data: bytes | None = None
    error: OSError | None = None


class ChunkCache:
    def __init__(self, ram: RamTier, stats: Stats, limiter: trio.CapacityLimiter) -> None:
        self.ram = ram
        self.stats = stats
        self._limiter = limiter
        self._inflight: dict[ChunkKey, _Flight] = {}

    async def read(self, source: ChunkSource, offset: int, size: int) -> bytes:
        """Bytes ``[offset, offset + size)`` of *source*, short at end of file."""
        version = source.version
        chunk_size = source.chunk_size
        end = min(offset + size, version.size)
        if offset >= end:
            return b""
        pieces: list[bytes] = []
        for index in chunk_range(offset, end - offset, chunk_size):
            key = ChunkKey(version, chunk_size, index)
            data = await self.chunk(source, key)
            start = max(offset, key.offset) - key.offset
            stop = min(end, key.offset + len(data)) - key.offset
            pieces.append(data[start:stop])
            if len(data) < key.expected_length:  # the origin file shrank under us
                break
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    async def chunk(self, source: ChunkSource, key: ChunkKey) -> bytes:
        data = self.ram.get(key)
        if data is not None:
            return data
        while True:
            flight = self._inflight.get(key)
            if flight is None:
                return await self._fetch(source, key)
            await flight.done.wait()
            if flight.error is not None:
                raise OSError(flight.error.errno, flight.error.strerror)
            if flight.data is not None:
                return flight.data
            # the leader was cancelled: try again, possibly as the new leader

    async def _fetch(self, source: ChunkSource, key: ChunkKey) -> bytes:
        flight = self._inflight[key] = _Flight()
        generation = source.write_generation
        try:
            data, current = await trio.to_thread.run_sync(source.fetch, key, limiter=self._limiter)
            self.stats.add("origin_bytes_read", len(data))
            self.stats.add("origin_reads")
            complete = len(data) == key.expected_length
            if current and complete and source.write_generation == generation:
                self.ram.put(key, data)
            flight.data = data
            return data
        except OSError as exc:
            flight.error = exc if exc.errno else OSError(errno.EIO, str(exc))
            raise
        finally:
            del self._inflight[key]
            flight.done.set()
