"""The on-disk chunk format: a fixed header, then the (maybe compressed) bytes.

```
offset size field
0      4    magic b"CFSC"
4      1    format version (2)
5      1    codec: 0 raw, 1 zstd
6      2    reserved (0)
8      4    raw length (little endian)
12     4    stored length: bytes after the header
16     16   xxh3-128 of the raw bytes
32     16   key digest: which chunk this file claims to be
48     16   tag: keyed BLAKE2b-128 of bytes 0-47, keyed by the tier's secret
64     ...  payload
```

A reader trusts nothing: a wrong magic, version, digest, tag, length or
checksum makes the chunk *corrupt*; the caller deletes it and reads elsewhere.

Threat model (DESIGN.md rule 9), three layers:

* **Permissions are the barrier.** Tier directories are ``0700`` and refused
  when another user owns them or could write to them or to a directory above
  them (private.py), so no other user can put a file where cachefs reads.
* **The tag makes any file this tier did not write fail.** Each tier has a
  random 32-byte ``secret`` (``0600``); the tag covers the key digest the
  file is named by, every header field and the xxh3-128 of the raw bytes. A
  file planted by someone without the secret, a chunk file swapped with
  another (even with its digest field patched) and a chunk copied in from
  another tier or another machine never verify. Moving a chunk to another
  tier re-tags its header with the target's secret (retag), without
  recompressing. The tag is over the 48 header bytes only, so the read path
  never runs BLAKE2b over a payload.
* **xxh3 catches corruption.** The checksum covers the payload (and the tag
  covers the checksum): a flipped bit or a torn write after a power cut fails.

Format version 1 had no tag; a tier still holding such files drops them all
at its next start (disktier.py, the tier's ``format`` marker).
"""

from __future__ import annotations

import hashlib
import hmac
import struct
import threading
from dataclasses import dataclass

import xxhash
import zstandard

MAGIC = b"CFSC"
FORMAT_VERSION = 2
CODEC_RAW = 0
CODEC_ZSTD = 1
CODEC_NAMES = {CODEC_RAW: "raw", CODEC_ZSTD: "zstd"}
SIGNED = struct.Struct("<4sBBHII16s16s")  # the fields the tag covers
TAG_SIZE = 16
HEADER_SIZE = SIGNED.size + TAG_SIZE  # 64
SECRET_SIZE = 32  # bytes of a tier's secret, the key of its tags
_TAG_PERSON = b"cachefs chunk v2"  # BLAKE2b personalisation: tags of nothing else
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


def tag(secret: bytes, signed: bytes) -> bytes:
    """The tag of a header's first 48 bytes under a tier's *secret*."""
    return hashlib.blake2b(signed, digest_size=TAG_SIZE, key=secret, person=_TAG_PERSON).digest()


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


def encode(digest: bytes, raw: bytes, level: int | None, secret: bytes) -> Encoded:
    """Build a chunk file tagged with *secret*; *level* None stores raw, else tries
    zstd at that level."""
    codec, payload = CODEC_RAW, raw
    if level is not None and raw and _sample_compresses(raw, level):
        compressed = _compressor(level).compress(raw)
        if len(compressed) <= len(raw) * COMPRESSION_WORTH_IT:
            codec, payload = CODEC_ZSTD, compressed
    signed = SIGNED.pack(
        MAGIC, FORMAT_VERSION, codec, 0, len(raw), len(payload), checksum(raw), digest
    )
    return Encoded(signed + tag(secret, signed) + payload, len(raw) - len(payload))


def retag(blob: bytes, secret: bytes) -> bytes:
    """The header of a chunk file (the first HEADER_SIZE bytes of *blob*), tagged
    with another tier's *secret*: how a verified chunk moves between tiers."""
    signed = blob[: SIGNED.size]
    return bytes(signed) + tag(secret, signed)


@dataclass(frozen=True)
class Header:
    codec: int
    raw_length: int
    stored_length: int
    checksum: bytes
    digest: bytes
    signed: bytes  # the header bytes the tag covers
    tag: bytes


def parse_header(blob: bytes, file_size: int | None = None) -> Header:
    """The header at the start of *blob*; *file_size* defaults to len(blob)."""
    file_size = len(blob) if file_size is None else file_size
    if len(blob) < HEADER_SIZE:
        raise CorruptChunk(f"short file ({len(blob)} bytes)")
    magic, version, codec, _, raw_len, stored_len, check, digest = SIGNED.unpack_from(blob)
    if magic != MAGIC:
        raise CorruptChunk("bad magic")
    if version != FORMAT_VERSION:
        old = "old" if version < FORMAT_VERSION else "unknown"
        raise CorruptChunk(f"{old} format version {version}")
    if codec not in CODEC_NAMES:
        raise CorruptChunk(f"unknown codec {codec}")
    if file_size - HEADER_SIZE != stored_len:
        raise CorruptChunk(f"payload is {file_size - HEADER_SIZE} bytes, header says {stored_len}")
    signed = bytes(blob[: SIGNED.size])
    tag_bytes = bytes(blob[SIGNED.size : HEADER_SIZE])
    return Header(codec, raw_len, stored_len, check, digest, signed, tag_bytes)


def decode(blob: bytes, digest: bytes | None, secret: bytes) -> bytes:
    """The verified raw bytes of a whole chunk file, or CorruptChunk."""
    header = parse_header(blob)
    return decode_payload(header, memoryview(blob)[HEADER_SIZE:], digest, secret)


def decode_payload(
    header: Header, payload: bytes | memoryview, digest: bytes | None, secret: bytes
) -> bytes:
    """The verified raw bytes from a parsed header and its payload.

    *digest* is the one the file is named by (None: whatever it claims);
    *secret* is the tier's. A raw payload given as bytes is returned as it
    is: no copy on the hot path.
    """
    if digest is not None and header.digest != digest:
        raise CorruptChunk("file holds another chunk")
    if not hmac.compare_digest(tag(secret, header.signed), header.tag):
        raise CorruptChunk("bad tag: not written by this tier")
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
