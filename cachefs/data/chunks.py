"""Chunk identity: which bytes of which version of which file."""

from __future__ import annotations

import hashlib
import struct
from typing import NamedTuple

from cachefs.origin.access import FileVersion

_KEY_FIELDS = struct.Struct("<QQqqQQ")


def origin_namespace(origin_root: str) -> bytes:
    """Chunk digests are keyed by the origin's path: two origins never share chunks."""
    return hashlib.blake2b(origin_root.encode(), digest_size=32).digest()


class ChunkKey(NamedTuple):
    """A chunk of one *version* of one origin file.

    The version (inode, size, mtime, ctime) is part of the key, so a file
    changed at the origin can never be answered from chunks of its old
    content. The chunk size is part of it too, so a changed content-type rule
    never mixes chunk geometries. A named tuple, so the hashing every cache
    lookup does runs in C.
    """

    version: FileVersion
    chunk_size: int
    number: int  # which chunk of the file, from 0

    @property
    def offset(self) -> int:
        return self.number * self.chunk_size

    @property
    def expected_length(self) -> int:
        """Length a complete chunk has: chunk_size, or less for the last one."""
        return max(0, min(self.chunk_size, self.version.size - self.offset))

    @property
    def file_id(self) -> int:
        return self.version.ino

    def digest(self, namespace: bytes) -> bytes:
        """The chunk's name on disk: a keyed hash of the version and the chunk's place."""
        v = self.version
        fields = _KEY_FIELDS.pack(
            v.ino, v.size, v.mtime_ns, v.ctime_ns, self.chunk_size, self.number
        )
        return hashlib.blake2b(fields, digest_size=16, key=namespace).digest()


def chunk_count(size: int, chunk_size: int) -> int:
    """How many chunks a file of *size* bytes has."""
    return -(-size // chunk_size)


def file_chunk_keys(version: FileVersion, chunk_size: int) -> list[ChunkKey]:
    """The keys of every chunk of one file version."""
    return [ChunkKey(version, chunk_size, i) for i in range(chunk_count(version.size, chunk_size))]


def chunk_range(offset: int, size: int, chunk_size: int) -> range:
    """Indices of the chunks covering ``[offset, offset + size)``."""
    if size <= 0:
        return range(0)
    return range(offset // chunk_size, (offset + size - 1) // chunk_size + 1)
