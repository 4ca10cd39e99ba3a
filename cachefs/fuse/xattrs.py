"""The control surface: ``user.cachefs.*`` extended attributes.

Reading them reports what the cache holds; setting some of them acts on it.
They are answered by cachefs itself, never stored at the origin, and not
listed by listxattr so that ``cp -a`` / ``rsync -X`` do not copy them around.
"""

from __future__ import annotations

import errno
import json
import os
import stat
from typing import TYPE_CHECKING, Any

import pyfuse3
import trio
from pyfuse3 import FUSEError

from cachefs.data.chunks import ChunkKey, file_chunk_keys
from cachefs.data.pins import PIN_TIERS
from cachefs.fuse.inodes import ROOT_INODE
from cachefs.origin.access import FileVersion

if TYPE_CHECKING:
    from cachefs.fuse.operations import CacheFS

PREFIX = b"user.cachefs."
STATS = PREFIX + b"stats"
RESIDENCY = PREFIX + b"residency"
CONTENT_TYPE = PREFIX + b"content_type"
EVICT = PREFIX + b"evict"
PIN = PREFIX + b"pin"


def is_control(name: bytes) -> bool:
    return name.startswith(PREFIX)


def _json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True).encode()


async def get_control(fs: CacheFS, inode: int, name: bytes) -> bytes:
    if name == STATS and inode == ROOT_INODE:
        return _json(fs.stats_snapshot())
    if name == RESIDENCY:
        return _json(await residency(fs, inode))
    if name == CONTENT_TYPE:
        return fs.policy_for(fs._path(inode)).name.encode()
    if name == PIN:
        return (fs.pins.tier_for(os.fsdecode(fs._path(inode))) or "none").encode()
    raise FUSEError(pyfuse3.ENOATTR)


async def set_control(fs: CacheFS, inode: int, name: bytes, value: bytes) -> None:
    if name == EVICT:
        await evict(fs, fs._path(inode))
        return
    if name == PIN:
        tier = value.decode(errors="replace").strip()
        if tier not in (*PIN_TIERS, "none"):
            raise FUSEError(errno.EINVAL)
        relpath = os.fsdecode(fs._path(inode))
        await trio.to_thread.run_sync(fs.pins.set, relpath, tier, limiter=fs.disk_limiter)
        await fs.apply_pin(relpath)
        return
    # prefetch arrives with the prefetcher.
    raise FUSEError(errno.ENOTSUP)


async def evict(fs: CacheFS, path: bytes) -> None:
    """Drop every cached chunk of a file, or of every file known below a directory."""
    files = fs.meta.regular_files(path)
    if not files:
        st = await fs._stat_inode_cached(path)
        if stat.S_ISDIR(st.st_mode):
            return  # a directory with nothing known below it: nothing cached
        if not stat.S_ISREG(st.st_mode):
            raise FUSEError(pyfuse3.ENOATTR)
        files = [(path, st)]
    for file_path, st in files:
        version = FileVersion.of(st)
        fs.ram.drop_file(version.ino)
        await fs.cache.forget_version(version, fs.policy_for(file_path).chunk_size)


async def _current_version(fs: CacheFS, inode: int) -> FileVersion:
    """The version whose chunks a file has: its open handles', else the cached
    attributes' (fresh or not: a control xattr never waits for the origin)."""
    state = fs._states.get(inode)
    if state is not None and state.handles and state.version is not None:
        return state.version
    st = await fs._stat_inode_cached(fs._path(inode))
    if not stat.S_ISREG(st.st_mode):
        raise FUSEError(pyfuse3.ENOATTR)
    return FileVersion.of(st)


async def residency(fs: CacheFS, inode: int) -> dict[str, int]:
    """How many of a file's chunks each tier holds (current version only)."""
    version = await _current_version(fs, inode)
    chunk_size = fs.policy_for(fs._path(inode)).chunk_size
    keys = file_chunk_keys(version, chunk_size)
    in_ram = {key for key in keys if key in fs.ram}

    def on_disks() -> dict[str, set[ChunkKey]]:
        return {n: {k for k in keys if t.contains(k)} for n, t in fs.disks.items()}

    disks = await trio.to_thread.run_sync(on_disks, limiter=fs.disk_limiter)
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
