"""What the control surface does to the cache: pin, evict, report residency.

The FUSE layer's control xattrs (``user.cachefs.pin``, ``.evict``,
``.residency``) and, later, the operator's CLI act through this one object.
Files are found in the metadata cache, never at the origin: what is not known
there has no chunks, and every control must work while the origin is offline
or hung. Tier files are touched in worker threads (the disk limiter); the RAM
tier only on the trio thread.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import trio

from cachefs.data.chunkcache import ChunkCache
from cachefs.data.chunks import ChunkKey, file_chunk_keys
from cachefs.data.pins import PinTable
from cachefs.data.rules import ContentTypeResolver
from cachefs.data.tiers.disk import DiskTier
from cachefs.data.tiers.ram import RamTier
from cachefs.meta.cache import MetadataCache, StatInfo
from cachefs.origin.access import FileVersion


class CacheControl:
    def __init__(
        self,
        meta: MetadataCache,
        resolver: ContentTypeResolver,
        ram: RamTier,
        disks: Mapping[str, DiskTier],
        cache: ChunkCache,
        pins: PinTable,
        disk_limiter: trio.CapacityLimiter,
    ) -> None:
        self.meta, self.resolver, self.ram, self.disks = meta, resolver, ram, dict(disks)
        self.cache, self.pins, self.disk_limiter = cache, pins, disk_limiter

    def chunk_size(self, path: bytes) -> int:
        return self.resolver.policy(os.fsdecode(path)).chunk_size

    # -- pins ---------------------------------------------------------------------------

    async def pin(self, relpath: str, tier: str) -> None:
        """Pin *relpath* (a file or a directory) to *tier*, or unpin it ("none")."""
        await trio.to_thread.run_sync(self.pins.set, relpath, tier, limiter=self.disk_limiter)
        await self.apply_pin(relpath)

    async def reapply_pins(self) -> None:
        """After a restart, mark the chunks of pinned files again once indexes load."""
        await self.cache.indexes_loaded()
        for relpath, _ in self.pins.items():
            await self.apply_pin(relpath)

    async def apply_pin(self, relpath: str) -> None:
        """Bring cached chunks of *relpath* (a file, or every file below a directory)
        in line with its pin: moved into the pinned disk tier and marked there; for a
        ``ram`` pin, also read from the disks into memory."""
        for path, st in self.meta.regular_files(os.fsencode(relpath)):
            version = FileVersion.of(st)
            tier = self.pins.tier_for(os.fsdecode(path))
            chunk_size = self.chunk_size(path)
            in_ram = {key for key in file_chunk_keys(version, chunk_size) if key in self.ram}
            loaded = await trio.to_thread.run_sync(
                self._pin_on_disks, version, chunk_size, tier, in_ram, limiter=self.disk_limiter
            )
            if tier == "ram":
                self.ram.pinned_files.add(version.ino)
                for key, data in loaded:
                    self.ram.put(key, data)
            else:
                self.ram.pinned_files.discard(version.ino)

    def _pin_on_disks(
        self, version: FileVersion, chunk_size: int, tier: str | None, in_ram: set[ChunkKey]
    ) -> list[tuple[ChunkKey, bytes]]:
        """Blocking: move a file's disk chunks into its pinned tier and mark them;
        for a ram pin, the chunks the disks hold and RAM does not (*in_ram*, found
        on the trio thread, which alone touches the RAM tier), as much as RAM takes."""
        keys = file_chunk_keys(version, chunk_size)
        target = self.disks.get(tier or "")
        for name, disk in self.disks.items():
            digests = [k.digest(disk.namespace) for k in keys]
            if target is not None and name != target.name:
                for digest in digests:
                    if disk.contains_digest(digest):
                        disk.move_digest_to(digest, target)
            disk.set_pinned(digests, False)
        if target is not None:
            digests = [k.digest(target.namespace) for k in keys]
            target.set_pinned([d for d in digests if target.contains_digest(d)], True)
        loaded: list[tuple[ChunkKey, bytes]] = []
        room = self.ram.max_size
        for key in keys if tier == "ram" else []:
            if key in in_ram or key.expected_length > room:
                continue
            for disk in self.disks.values():
                data = disk.get(key)
                if data is not None:
                    loaded.append((key, data))
                    room -= len(data)
                    break
        return loaded

    # -- evict and residency --------------------------------------------------------------

    def files_below(self, path: bytes) -> list[tuple[bytes, StatInfo]]:
        """The regular files the metadata cache knows at or below *path*."""
        return self.meta.regular_files(path)

    async def evict(self, files: list[tuple[bytes, StatInfo]]) -> None:
        """Drop every cached chunk of *files* (path, attributes) from every tier."""
        for path, st in files:
            version = FileVersion.of(st)
            self.ram.drop_file(version.ino)
            await self.cache.forget_version(version, self.chunk_size(path))

    async def residency(self, version: FileVersion, chunk_size: int) -> dict[str, int]:
        """How many of a file version's chunks each tier holds."""
        keys = file_chunk_keys(version, chunk_size)
        in_ram = {key for key in keys if key in self.ram}

        def on_disks() -> dict[str, set[ChunkKey]]:
            return {n: {k for k in keys if t.contains(k)} for n, t in self.disks.items()}

        disks = await trio.to_thread.run_sync(on_disks, limiter=self.disk_limiter)
        cached = in_ram.union(*disks.values())
        counts = {name: len(found) for name, found in disks.items()}
        # a chunk may be in RAM and on a disk at once; "uncached" is in no tier
        return {
            "chunks": len(keys),
            "chunk_size": chunk_size,
            "ram": len(in_ram),
            **counts,
            "uncached": len(keys) - len(cached),
        }
