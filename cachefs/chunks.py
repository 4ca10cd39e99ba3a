"""Chunk identity: which bytes of which version of which file."""

from __future__ import annotations

from dataclasses import dataclass

from .origin import FileVersion


@dataclass(frozen=True, slots=True)
class ChunkKey:
    """A chunk of one *version* of one origin file.

    The version (size + mtime_ns + dev/ino) is part of the key, so a file
    changed at the origin can never be answered from chunks of its old
    content. The chunk size is part of it too, so a changed content-type rule
    never mixes chunk geometries.
    """

    version: FileVersion
    chunk_size: int
    index: int

    @property
    def offset(self) -> int:
        return self.index * self.chunk_size

    @property
    def expected_length(self) -> int:
        """Length a complete chunk has: chunk_size, or less for the last one."""
        return max(0, min(self.chunk_size, self.version.size - self.offset))

    @property
    def file_id(self) -> tuple[int, int]:
        return (self.version.dev, self.version.ino)


def chunk_range(offset: int, size: int, chunk_size: int) -> range:
    """Indices of the chunks covering ``[offset, offset + size)``."""
    if size <= 0:
        return range(0)
    return range(offset // chunk_size, (offset + size - 1) // chunk_size + 1)
