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
from collections.abc import Callable
from typing import Any, Protocol

import pyfuse3
from pyfuse3 import FUSEError

from cachefs.config import Config, config_to_toml
from cachefs.data.pins import PIN_TIERS
from cachefs.engine.control import CacheControl
from cachefs.engine.prefetch import Prefetcher
from cachefs.fuse.inodes import ROOT_INODE
from cachefs.meta.cache import StatInfo
from cachefs.origin.access import FileVersion

PREFIX = b"user.cachefs."
STATS = PREFIX + b"stats"
RESIDENCY = PREFIX + b"residency"
CONTENT_TYPE = PREFIX + b"content_type"
EVICT = PREFIX + b"evict"
PIN = PREFIX + b"pin"
PREFETCH = PREFIX + b"prefetch"
FORGET = PREFIX + b"forget"
CONFIG = PREFIX + b"config"  # the mount's effective configuration, as TOML


def is_control(name: bytes) -> bool:
    return name.startswith(PREFIX)


class Files(Protocol):
    """What the control xattrs ask of the FUSE operations about an inode."""

    def path_of(self, inode: int) -> bytes:
        """Its origin-relative path (FUSEError ENOENT if it has none)."""
        ...

    async def cached_attr(self, path: bytes) -> StatInfo:
        """Its attributes from the metadata cache, fresh or not (the origin only if unknown)."""
        ...

    def open_version(self, inode: int) -> FileVersion | None:
        """The version its open handles read, None if it has none open."""
        ...

    async def relist(self, dirpath: bytes) -> list[tuple[bytes, StatInfo]]:
        """Read a directory at the origin (its entries become known)."""
        ...

    def forget_metadata(self, path: bytes) -> None:
        """Trust nothing cached of *path* and below without asking the origin again."""
        ...


class ControlXattrs:
    def __init__(
        self,
        files: Files,
        control: CacheControl,
        prefetcher: Prefetcher,
        report: Callable[[], dict[str, Any]],
        cfg: Config,
    ) -> None:
        self.files, self.control, self.report = files, control, report
        self.prefetcher = prefetcher
        # -o overrides included: what `cachefs config show MOUNT` prints
        self.config_toml = config_to_toml(cfg).encode()

    async def get(self, inode: int, name: bytes) -> bytes:
        if name == STATS and inode == ROOT_INODE:
            return _json(self.report())
        if name == CONFIG and inode == ROOT_INODE:
            return self.config_toml
        if name == RESIDENCY:
            return _json(await self.residency(inode))
        path = self.files.path_of(inode)
        if name == CONTENT_TYPE:
            return self.control.resolver.policy(os.fsdecode(path)).name.encode()
        if name == PIN:
            return (self.control.pins.tier_for(os.fsdecode(path)) or "none").encode()
        raise FUSEError(pyfuse3.ENOATTR)

    async def set(self, inode: int, name: bytes, value: bytes) -> None:
        if name == EVICT:
            await self.evict(self.files.path_of(inode))
            return
        if name == FORGET:
            self.files.forget_metadata(self.files.path_of(inode))
            return
        if name == PIN:
            tier = value.decode(errors="replace").strip()
            if tier not in (*PIN_TIERS, "none"):
                raise FUSEError(errno.EINVAL)
            await self.control.pin(os.fsdecode(self.files.path_of(inode)), tier)
            return
        if name == PREFETCH:
            await self.prefetch(self.files.path_of(inode))
            return
        raise FUSEError(errno.ENOTSUP)

    async def prefetch(self, path: bytes) -> None:
        """Queue a whole file, or every file below a directory, for the prefetcher.

        A directory whose entries nobody has listed yet is listed first (one
        level, at the origin); what is below its subdirectories counts once
        they have been listed (by a scan, say)."""
        if self.prefetcher.warm(path):
            return
        st = await self.files.cached_attr(path)
        if not stat.S_ISDIR(st.st_mode):
            raise FUSEError(pyfuse3.ENOATTR)
        await self.files.relist(path)
        self.prefetcher.warm(path)

    async def evict(self, path: bytes) -> None:
        """Drop every cached chunk of a file, or of every file known below a directory."""
        files = self.control.files_below(path)
        if not files:
            st = await self.files.cached_attr(path)
            if stat.S_ISDIR(st.st_mode):
                return  # a directory with nothing known below it: nothing cached
            if not stat.S_ISREG(st.st_mode):
                raise FUSEError(pyfuse3.ENOATTR)
            files = [(path, st)]
        await self.control.evict(files)

    async def residency(self, inode: int) -> dict[str, int]:
        """How many of a file's chunks each tier holds (current version only)."""
        path = self.files.path_of(inode)
        version = self.files.open_version(inode)
        if version is None:
            # the cached attributes' version, fresh or not: a control xattr never
            # waits for the origin
            st = await self.files.cached_attr(path)
            if not stat.S_ISREG(st.st_mode):
                raise FUSEError(pyfuse3.ENOATTR)
            version = FileVersion.of(st)
        return await self.control.residency(version, self.control.chunk_size(path))


def _json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True).encode()
