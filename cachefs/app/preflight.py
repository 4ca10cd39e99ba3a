"""The checks before mounting: refuse what cannot work, and say how to fix it.

An origin or mount point that is missing, not a directory, a dead FUSE mount
or hung; a mount point already mounted; a tier directory inside the origin or
the mount point. Every check avoids stat() where a dead or stopped FUSE
daemon would make it hang: paths are resolved through the mount table, and a
stat that must happen runs in a thread with a timeout.
"""

from __future__ import annotations

import errno
import os
import shlex
import stat
import threading
from pathlib import Path

from cachefs.app.mounttable import MountEntry, mount_holding, mounted_at, within
from cachefs.config import Config


class MountError(Exception):
    exit_code = 1


NOTHING_MOUNTED = "(nothing mounted)"
# What stat() says of a FUSE mount whose daemon is gone (ECONNABORTED once aborted
# through /sys/fs/fuse/connections when the daemon asked for it).
DEAD_MOUNT_ERRNOS = frozenset({errno.ENOTCONN, errno.ECONNABORTED})
# How long a mounted mount point may take to answer stat() before it counts as hung.
PROBE_TIMEOUT = 2.0


def check_directories(origin: str, mountpoint: str) -> None:
    """Refuse an origin or mount point that cannot work, before anything is mounted.

    Whether something is mounted at the mount point comes from mountinfo, so
    that a mount there whose daemon is dead or stopped is reported, not waited on.
    """
    real_mountpoint = real_path_outside(mountpoint)
    if real_path_outside(origin) == real_mountpoint:
        raise MountError(
            f"origin and mount point are the same directory: {origin} {NOTHING_MOUNTED}"
        )
    check_mount_point_free(mountpoint, real_mountpoint)
    for role, path in (("origin", origin), ("mount point", mountpoint)):
        try:
            st = os.stat(path)
        except OSError as exc:
            raise MountError(f"{unusable_directory(role, path, exc)} {NOTHING_MOUNTED}") from None
        if not stat.S_ISDIR(st.st_mode):
            raise MountError(f"{role} {path}: not a directory {NOTHING_MOUNTED}")
    # Nothing is mounted at the mount point: realpath() no longer stats a mount there.
    real_origin, real_mountpoint = os.path.realpath(origin), os.path.realpath(mountpoint)
    if within(real_mountpoint, real_origin):
        raise MountError(
            f"mount point {_shown(mountpoint, real_mountpoint)} is inside the origin "
            f"{_shown(origin, real_origin)}: the mount would appear inside itself and the "
            "daemon's lookups of it would enter its own mount and deadlock; choose a mount "
            f"point outside the origin {NOTHING_MOUNTED}"
        )
    if within(real_origin, real_mountpoint):
        raise MountError(
            f"origin {_shown(origin, real_origin)} is inside the mount point "
            f"{_shown(mountpoint, real_mountpoint)}: once mounted, the mount would hide the "
            "origin and the daemon would reach the origin through its own mount; choose a "
            f"mount point that does not contain the origin {NOTHING_MOUNTED}"
        )


def check_tier_directories(cfg: Config, origin: str, mountpoint: str) -> None:
    """Refuse a disk tier or state directory inside the origin or the mount point.

    Runs before the tiers are opened (which creates their directories): a
    directory that does not exist yet is compared by the real path of its
    nearest existing parent, which os.path.realpath() gives.
    """
    real_origin, real_mountpoint = os.path.realpath(origin), os.path.realpath(mountpoint)
    places = [
        (f"tiers.{name}.path", "cache tier directory", tier.path)
        for name, tier in cfg.tiers.items()
        if tier.path is not None  # not the RAM tier
    ]
    if cfg.state_dir is not None:
        places.append(("state_dir", "state directory", cfg.state_dir))
    if cfg.stats.access_log:
        places.append(("stats.access_log", "access log", Path(cfg.stats.access_log)))
    for key, what, path in places:
        real = os.path.realpath(path)
        shown = f"{_shown(str(path), real)} ({key})"
        if within(real, real_origin):
            raise MountError(
                f"{what} {shown} is inside the origin "
                f"{_shown(origin, real_origin)}: the mount would show its own cache files; "
                f"set {key} to a directory outside the origin {NOTHING_MOUNTED}"
            )
        if within(real, real_mountpoint):
            raise MountError(
                f"{what} {shown} is inside the mount point "
                f"{_shown(mountpoint, real_mountpoint)}: the mount would hide it and the "
                f"daemon would store its cache through its own mount; set {key} to a "
                f"directory outside the mount point {NOTHING_MOUNTED}"
            )


def check_mount_point_free(mountpoint: str, real_mountpoint: str) -> None:
    """Refuse to stack a mount on top of one that is already at the mount point."""
    entry = mounted_at(real_mountpoint)
    if entry is None:
        return
    answer = statwithin(real_mountpoint, PROBE_TIMEOUT)
    if isinstance(answer, OSError) and answer.errno in DEAD_MOUNT_ERRNOS:
        problem, fix = dead_mount("mount point", mountpoint, real_mountpoint, entry)
        raise MountError(f"{problem}: {fix}, then mount again {NOTHING_MOUNTED}")
    where = shlex.quote(entry.mountpoint)
    if answer is None:
        state = f", and it does not answer (stat() waited {PROBE_TIMEOUT:g} s)"
        fix = f"`fusermount3 -u {where}` (or `umount -l {where}`)"
        if not entry.is_fuse:
            fix = f"`umount -l {where}`"
    else:
        state = ""
        fix = f"`fusermount3 -u {where}`" if entry.is_fuse else f"`umount {where}`"
    raise MountError(
        f"mount point {mountpoint} is already mounted ({entry.describe()}){state}: "
        f"unmount it first with {fix}, or choose another mount point {NOTHING_MOUNTED}"
    )


def unusable_directory(role: str, path: str, exc: OSError) -> str:
    """Why stat() of the origin or mount point failed, and the fix where there is one."""
    if exc.errno in DEAD_MOUNT_ERRNOS:
        problem, fix = dead_mount(role, path, os.path.realpath(path))
        again = "mount the origin again, then mount cachefs" if role == "origin" else "mount again"
        return f"{problem}: {fix}, then {again}"
    if exc.errno in (errno.ENOENT, errno.ENOTDIR):
        return f"{role} {path}: no such directory"
    return f"{role} {path}: {exc.strerror or exc}"


def dead_mount(role: str, path: str, real: str, entry: MountEntry | None = None) -> tuple[str, str]:
    """("ROLE PATH is a dead FUSE mount (...)", "unmount it with ...") for an ENOTCONN path."""
    entry = entry or mount_holding(real)
    if entry is None:  # ENOTCONN comes from a mount; this is not expected
        return f"{role} {path}: {os.strerror(errno.ENOTCONN)}", "unmount what is mounted there"
    where = shlex.quote(entry.mountpoint)
    if entry.is_fuse:
        kind, gone = "dead FUSE mount", "its daemon is gone"
        fix = f"`fusermount3 -u {where}` (or `umount -l {where}`)"
    else:
        kind, gone = "dead mount", "it no longer answers"
        fix = f"`umount -l {where}`"
    if entry.mountpoint == real:
        return f"{role} {path} is a {kind} ({entry.describe()}; {gone})", f"unmount it with {fix}"
    return (
        f"{role} {path} is on a {kind} at {entry.mountpoint} ({entry.describe()}; {gone})",
        f"unmount that with {fix}",
    )


def real_path_outside(path: str, depth: int = 0) -> str:
    """os.path.realpath(*path*) without stat()ing *path* itself.

    realpath() lstat()s every component, the last one included; lstat() of a
    mount point asks the file system mounted there, which fails if its daemon
    died and waits forever if it is stopped. Here the parent goes through
    realpath() and the last component through readlink(), which the kernel
    answers without asking a file system mounted there.
    """
    stripped = path.rstrip("/")
    if not stripped:
        return "/"
    head, name = os.path.split(stripped)
    head = head or os.getcwd()
    if name == ".":
        return real_path_outside(head, depth)
    if name == "..":
        return os.path.dirname(real_path_outside(head, depth))
    joined = os.path.join(os.path.realpath(head), name)
    try:
        target = os.readlink(joined)
    except OSError:  # not a symlink (or not there): joined is the real path
        return joined
    if depth >= 40:  # a symlink loop: let realpath() deal with it
        return os.path.realpath(joined)
    return real_path_outside(os.path.join(os.path.dirname(joined), target), depth + 1)


def statwithin(path: str, timeout: float) -> os.stat_result | OSError | None:
    """stat(*path*) in a helper thread: its result or error, None if it did not answer.

    For a path with something mounted on it, which may be a stopped daemon's;
    a thread still waiting does not keep the process from exiting.
    """
    answer: list[os.stat_result | OSError] = []

    def probe() -> None:
        try:
            answer.append(os.stat(path))
        except OSError as exc:
            answer.append(exc)

    thread = threading.Thread(target=probe, name="cachefs-mount-probe", daemon=True)
    thread.start()
    thread.join(timeout)
    return answer[0] if answer else None


def _shown(path: str, real: str) -> str:
    """*path* as given, with its real path when a symlink or relative path hides it."""
    return path if os.path.abspath(path) == real else f"{path} (really {real})"
