"""The on-disk chunk format: a fixed header, then the (maybe compressed) bytes.

```
offset size field
0      4    magic b"CFSC"
4      1    format version (1)
5      1    codec: 0 raw, 1 zstd
6      2    reserved (0)
8      4    raw length (little endian)
12     4    stored length: bytes after the header
16     16   xxh3-128 of the raw bytes
32     16   key digest: which chunk this file claims to be
48     ...  payload
```

A reader trusts nothing: a wrong magic, version, digest, length or checksum
makes the chunk *corrupt*; the caller deletes it and reads elsewhere.
"""

from __future__ import annotations

import struct
import threading
from dataclasses import dataclass

import xxhash
import zstandard

MAGIC = b"CFSC"
FORMAT_VERSION = 1
CODEC_RAW = 0
CODEC_ZSTD = 1
CODEC_NAMES = {CODEC_RAW: "raw", CODEC_ZSTD: "zstd"}
HEADER = struct.Struct("<4sBBHII16s16s")
HEADER_SIZE = HEADER.size  # 48
# Store compressed only when it saves more than 5%: decompressing costs time.
COMPRESSION_WORTH_IT = 0.95
SAMPLE_SIZE = 16 * 1024

_local = threading.local()


class CorruptChunk(Exception):
    """A chunk file that must not be served."""


@dataclass(frozen=True)
class Encoded:
    blob: bytes  # header + payload, ready to write
    saved: int  # bytes compression saved (0 when stored raw)


def checksum(raw: bytes) -> bytes:
    return xxhash.xxh3_128_digest(raw)


def _compressor(level: int) -> zstandard.ZstdCompressor:
    # zstd (de)compressor objects are not thread-safe: one per thread and level.
    cache: dict[int, zstandard.ZstdCompressor] = _local.__dict__.setdefault("compressors", {})
    if level not in cache:
        cache[level] = zstandard.ZstdCompressor(level=level)
    return cache[level]


def _decompressor() -> zstandard.ZstdDecompressor:
    if not hasattr(_local, "decompressor"):
        _local.decompressor = zstandard.ZstdDecompressor()
    return _local.decompressor


def _sample_compresses(raw: bytes, level: int) -> bool:
    """Does the start of the chunk compress? Media and images mostly do not, and
    trying a whole 1 MiB chunk of them costs more than writing it."""
    if len(raw) <= 2 * SAMPLE_SIZE:
        return True
    sample = raw[:SAMPLE_SIZE]
    return len(_compressor(level).compress(sample)) <= SAMPLE_SIZE * COMPRESSION_WORTH_IT


def encode(digest: bytes, raw: bytes, level: int | None) -> Encoded:
    """Build a chunk file; *level* None stores raw, else tries zstd at that level."""
    codec, payload = CODEC_RAW, raw
    if level is not None and raw and _sample_compresses(raw, level):
        compressed = _compressor(level).compress(raw)
        if len(compressed) <= len(raw) * COMPRESSION_WORTH_IT:
            codec, payload = CODEC_ZSTD, compressed
    header = HEADER.pack(
        MAGIC, FORMAT_VERSION, codec, 0, len(raw), len(payload), checksum(raw), digest
    )
    return Encoded(header + payload, len(raw) - len(payload))


@dataclass(frozen=True)
class Header:
    codec: int
    raw_length: int
    stored_length: int
    checksum: bytes
    digest: bytes


def parse_header(blob: bytes, file_size: int | None = None) -> Header:
    """The header at the start of *blob*; *file_size* defaults to len(blob)."""
    file_size = len(blob) if file_size is None else file_size
    if len(blob) < HEADER_SIZE:
        raise CorruptChunk(f"short file ({len(blob)} bytes)")
    magic, version, codec, _, raw_len, stored_len, check, digest = HEADER.unpack_from(blob)
    if magic != MAGIC:
        raise CorruptChunk("bad magic")
    if version != FORMAT_VERSION:
        raise CorruptChunk(f"unknown format version {version}")
    if codec not in CODEC_NAMES:
        raise CorruptChunk(f"unknown codec {codec}")
    if file_size - HEADER_SIZE != stored_len:
        raise CorruptChunk(f"payload is {file_size - HEADER_SIZE} bytes, header says {stored_len}")
    return Header(codec, raw_len, stored_len, check, digest)


def decode(blob: bytes, digest: bytes | None = None) -> bytes:
    """The verified raw bytes of a whole chunk file, or CorruptChunk."""
    header = parse_header(blob)
    return decode_payload(header, memoryview(blob)[HEADER_SIZE:], digest)


def decode_payload(header: Header, payload: bytes | memoryview, digest: bytes | None) -> bytes:
    """The verified raw bytes from a parsed header and its payload.

    A raw payload given as bytes is returned as it is: no copy on the hot path.
    """
    if digest is not None and header.digest != digest:
        raise CorruptChunk("file holds another chunk")
    if header.codec == CODEC_ZSTD:
        try:
            raw = _decompressor().decompress(payload, max_output_size=header.raw_length)
        except zstandard.ZstdError as exc:
            raise CorruptChunk(f"zstd: {exc}") from None
    else:
        raw = payload if isinstance(payload, bytes) else bytes(payload)
    if len(raw) != header.raw_length:
        raise CorruptChunk(f"{len(raw)} bytes, header says {header.raw_length}")
    if checksum(raw) != header.checksum:
        raise CorruptChunk("checksum mismatch")
    return raw
