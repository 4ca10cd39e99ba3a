"""What the origin's file system type tells cachefs (statfs(2) f_type).

Whether inotify sees every change under a path (only on local file systems),
whether close() there can report a deferred write error (which decides if FUSE
FLUSH is forwarded), and a short name for log messages.
"""

from __future__ import annotations

import ctypes
import os
import platform

from cachefs.common.libc import libc

_statfs = libc.statfs
_statfs.argtypes = [ctypes.c_char_p, ctypes.c_void_p]
_statfs.restype = ctypes.c_int

# struct statfs starts with f_type, a __fsword_t: a long everywhere except
# s390x, where it is an unsigned int. The whole struct is 120 bytes on x86_64;
# the buffer is larger so no architecture's layout can overrun it.
_F_TYPE = ctypes.c_uint if platform.machine().startswith("s390") else ctypes.c_long
_STATFS_BUFFER_SIZE = 512


# statfs(2) f_type magic numbers (linux/magic.h, plus out-of-tree and newer
# file systems) -> (short name, whether inotify sees every change). True only
# where every change goes through this kernel; network, cluster and FUSE file
# systems can change elsewhere without an event. ext2, ext3 and ext4 share one magic.
_FILESYSTEMS: dict[int, tuple[str, bool]] = {
    # Local disk and memory file systems.
    0x0000EF53: ("ext2/3/4", True),
    0x58465342: ("xfs", True),
    0x9123683E: ("btrfs", True),
    0x01021994: ("tmpfs", True),
    0x858458F6: ("ramfs", True),
    0xF2F52010: ("f2fs", True),
    0x3153464A: ("jfs", True),
    0x52654973: ("reiserfs", True),
    0x00004D44: ("vfat", True),  # vfat and msdos
    0x00004006: ("fat", True),
    0x2011BAB0: ("exfat", True),
    0x5346544E: ("ntfs", True),  # the old in-kernel driver
    0x7366746E: ("ntfs3", True),
    0x00004244: ("hfs", True),
    0x0000482B: ("hfsplus", True),
    0x00004858: ("hfsx", True),
    0x2FC12FC1: ("zfs", True),
    0xCA451A4E: ("bcachefs", True),
    0x794C7630: ("overlayfs", True),  # changes made below it, in its layers, are not seen
    0x00003434: ("nilfs", True),
    0x15013346: ("udf", True),
    0x00009660: ("iso9660", True),
    0x73717368: ("squashfs", True),
    0xE0F5E1E2: ("erofs", True),
    0x28CD3D45: ("cramfs", True),
    0x24051905: ("ubifs", True),
    0x000072B6: ("jffs2", True),
    0x0000137F: ("minix", True),
    0x0000138F: ("minix", True),
    0x00002468: ("minix2", True),
    0x00002478: ("minix2", True),
    0x00004D5A: ("minix3", True),
    # Network, cluster and user-space file systems.
    0x00006969: ("nfs", False),
    0xFF534D42: ("cifs", False),
    0xFE534D42: ("smb2", False),
    0x0000517B: ("smb", False),
    0x65735546: ("fuse", False),  # also fuseblk, virtiofs, sshfs, ntfs-3g...
    0x00C36400: ("ceph", False),
    0x01021997: ("9p", False),
    0x5346414F: ("afs", False),
    0x6B414653: ("afs", False),  # kAFS
    0x73757245: ("coda", False),
    0x0000564C: ("ncp", False),
    0x0BD00BD0: ("lustre", False),
    0x47504653: ("gpfs", False),
    0x01161970: ("gfs2", False),
    0x7461636F: ("ocfs2", False),
    0x19830326: ("beegfs", False),
    0xAAD7AAEA: ("panfs", False),
    0x786F4256: ("vboxsf", False),
    0xBACBACBC: ("vmhgfs", False),
    0x7C7C6673: ("prl_fs", False),
}


def filesystem_magic(path: str | bytes) -> int | None:
    """statfs(2) f_type of the file system holding *path*; None if statfs fails."""
    buffer = ctypes.create_string_buffer(_STATFS_BUFFER_SIZE)
    if _statfs(os.fsencode(path), buffer) != 0:
        return None
    # Magics are 32-bit; the mask undoes sign extension of a long.
    return _F_TYPE.from_buffer(buffer).value & 0xFFFFFFFF


def supports_inotify(path: str | bytes) -> bool:
    """Whether inotify sees every change under *path*: its file system is a local one.

    False for network, cluster and FUSE file systems, for unknown types, and
    when statfs fails. May block (statfs on a hung network mount).
    """
    magic = filesystem_magic(path)
    return magic is not None and _FILESYSTEMS.get(magic, ("", False))[1]


# Local file systems whose files have no flush operation: close() on them can
# never report a write error (that is fsync's job), so a FUSE FLUSH forwarded
# to them does nothing. Kept to the ones checked in the kernel source.
CLOSE_CANNOT_FAIL = frozenset(
    {
        0x0000EF53,  # ext2 / ext3 / ext4
        0x58465342,  # xfs
        0x9123683E,  # btrfs
        0x01021994,  # tmpfs
        0x858458F6,  # ramfs
    }
)


def close_reports_errors(path: str | bytes) -> bool:
    """Whether close() of a file under *path* may fail with a deferred write error
    (NFS, SMB, FUSE, ... and anything unknown: True unless known otherwise)."""
    return filesystem_magic(path) not in CLOSE_CANNOT_FAIL


def filesystem_type_name(path: str | bytes) -> str:
    """A short name for the file system holding *path*, for log messages."""
    magic = filesystem_magic(path)
    if magic is None:
        return "unknown"
    known = _FILESYSTEMS.get(magic)
    return known[0] if known else f"unknown {magic:#x}"
