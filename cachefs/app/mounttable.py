"""The mount table (/proc/self/mountinfo): what is mounted where, read without stat()."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass


@dataclass(frozen=True)
class MountEntry:
    """One line of /proc/self/mountinfo."""

    mountpoint: str
    device: str  # major:minor
    fstype: str  # "ext4", "fuse.sshfs", ...
    source: str  # "/dev/sda1", "nas:/media", or a FUSE file system's fsname

    @property
    def is_fuse(self) -> bool:
        return self.fstype.partition(".")[0] in ("fuse", "fuseblk")

    def describe(self) -> str:
        return f"{self.fstype} from {self.source}"


def _unescape_mountinfo(field: bytes) -> str:
    """A mountinfo path field (space, tab, newline and backslash octal-escaped) as a str."""
    return os.fsdecode(re.sub(rb"\\([0-7]{3})", lambda m: bytes([int(m.group(1), 8)]), field))


def read_mountinfo() -> list[MountEntry]:
    """Every mount this process sees, in mountinfo order (the top of a stack comes last).

    Read from /proc rather than by stat(), which would wait on the daemon of a
    mount (our own, or a stopped one).
    """
    entries = []
    with open("/proc/self/mountinfo", "rb") as mountinfo:
        for line in mountinfo:
            fields = line.split()
            # ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER
            try:
                dash = fields.index(b"-", 6)
            except ValueError:
                continue
            if len(fields) < dash + 3:
                continue
            entries.append(
                MountEntry(
                    mountpoint=_unescape_mountinfo(fields[4]),
                    device=fields[2].decode(),
                    fstype=_unescape_mountinfo(fields[dash + 1]),
                    source=_unescape_mountinfo(fields[dash + 2]),
                )
            )
    return entries


def mounted_at(mountpoint: str) -> MountEntry | None:
    """The top mount at *mountpoint*, which must be a real path (see real_path_outside)."""
    found = None
    for entry in read_mountinfo():
        if entry.mountpoint == mountpoint:
            found = entry  # the last match is the top of the stack
    return found


def mount_holding(path: str) -> MountEntry | None:
    """The mount that *path* (a real path) is on: the nearest mount point at or above it."""
    found = None
    for entry in read_mountinfo():
        if within(path, entry.mountpoint) and (
            found is None or len(entry.mountpoint) >= len(found.mountpoint)
        ):
            found = entry
    return found


def mount_device(mountpoint: str) -> str | None:
    """``major:minor`` of the filesystem mounted at *mountpoint*, from mountinfo.

    *mountpoint* must already be a real path (realpath() would stat it).
    """
    entry = mounted_at(mountpoint)
    return entry.device if entry is not None else None


def within(path: str, directory: str) -> bool:
    """*path* is *directory* or below it (both real paths)."""
    return path == directory or path.startswith(directory.rstrip("/") + "/")
