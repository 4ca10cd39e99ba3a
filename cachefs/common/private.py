"""Directories and files cachefs keeps for itself: private, whatever the umask.

DESIGN.md rule 9: nothing cachefs keeps is another user's to change. The
daemon runs with ``umask(0)`` (modes from the kernel already carry the
caller's umask, and files made at the origin must get exactly the mode asked
for), so everything made here gets its mode explicitly: directories ``0700``,
files ``0600``.

A tier or state directory is used only when it is safe, in the spirit of
ssh's StrictModes: owned by the user cachefs runs as and writable by nobody
else, and every directory on the way to it owned by root or that user and not
writable by group or others unless sticky (like ``/tmp``). Otherwise another
user could rename the directory away and plant one of their own.
"""

from __future__ import annotations

import contextlib
import errno
import os
import pwd
import stat
from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600
_WRITABLE_BY_OTHERS = stat.S_IWGRP | stat.S_IWOTH
_MAX_SYMLINKS = 40  # as the kernel's ELOOP limit


class UnsafePath(OSError):
    """A directory or file that a user other than cachefs's could change.

    An OSError, so a mount that meets one fails like for any other unusable
    tier directory: with this message and nothing mounted.
    """


def _me() -> str:
    euid = os.geteuid()
    return "root" if euid == 0 else f"uid {euid}"


def _owner(uid: int) -> str:
    try:
        return f"uid {uid} ({pwd.getpwuid(uid).pw_name})"
    except KeyError:
        return f"uid {uid}"


def make_dir(path: Path) -> bool:
    """Create one directory ``0700`` (exactly: chmod after mkdir); False if it existed."""
    try:
        os.mkdir(path, DIR_MODE)
    except FileExistsError:
        return False
    os.chmod(path, DIR_MODE)
    return True


def ensure_private_dir(path: Path) -> None:
    """Create *path* (and its missing parents, all ``0700``), check it is safe
    (check_private_dir), and make it ``0700``."""
    path = Path(os.path.abspath(path))
    missing: list[Path] = []
    probe = path
    while not os.path.lexists(probe) and probe != probe.parent:
        missing.append(probe)
        probe = probe.parent
    for directory in reversed(missing):
        make_dir(directory)
    check_private_dir(path)
    os.chmod(path, DIR_MODE)


def check_private_dir(path: Path) -> None:
    """Raise UnsafePath unless *path* is a directory safe for cachefs to keep data in.

    *path* must be owned by the effective uid and not writable by group or
    others. Every directory consulted to reach it (each ancestor, following
    symlinks the way the kernel does) must be owned by root or the effective
    uid and not writable by group or others, unless it has the sticky bit;
    every symlink on the way must be owned by root or the effective uid.
    """
    consulted, final = _resolve(Path(path))
    st = os.stat(final)
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafePath(f"{path}: not a directory")
    problem = _own_problem(st, Path(path))
    if problem:
        raise UnsafePath(f"bad ownership or modes for directory {path}: {problem}")
    for place, kind in consulted:
        problem = _ancestor_problem(os.lstat(place), place, kind)
        if problem:
            raise UnsafePath(
                f"bad ownership or modes for {kind} {place} (on the way to {path}): {problem}"
            )


def _own_problem(st: os.stat_result, path: Path) -> str:
    if st.st_uid != os.geteuid():
        return (
            f"owned by {_owner(st.st_uid)}, not by {_me()} (who cachefs runs as); "
            f"it may have been planted: remove it and let cachefs create it, or if it "
            f"is yours, `chown {os.geteuid()} {path}`"
        )
    if st.st_mode & _WRITABLE_BY_OTHERS:
        return (
            f"mode {stat.S_IMODE(st.st_mode):04o} lets group or others write to it; "
            f"fix: `chmod 700 {path}`"
        )
    return ""


def _ancestor_problem(st: os.stat_result, place: Path, kind: str) -> str:
    if st.st_uid not in (0, os.geteuid()):
        fix = f"`chown root {place}`" if kind == "directory" else "make it root's"
        return (
            f"owned by {_owner(st.st_uid)}, not by root or {_me()}, so that user could "
            f"swap what is below it; fix: {fix}, or choose another tier path"
        )
    if kind == "symlink":
        return ""
    mode = stat.S_IMODE(st.st_mode)
    if mode & _WRITABLE_BY_OTHERS and not mode & stat.S_ISVTX:
        return (
            f"mode {mode:04o} lets group or others write to it, so they could rename "
            f"what is below it away and plant their own; fix: `chmod go-w {place}` "
            f"(or `chmod +t {place}`, like /tmp)"
        )
    return ""


def _resolve(path: Path) -> tuple[list[tuple[Path, str]], Path]:
    """The directories (and symlinks) looked at to reach *path*, and where it leads."""
    if not path.is_absolute():
        path = Path(os.getcwd()) / path
    pending = list(path.parts[1:])
    current = Path("/")
    consulted: dict[Path, str] = {}
    hops = 0
    while pending:
        name = pending.pop(0)
        if name in ("", "."):
            continue
        if name == "..":
            current = current.parent
            continue
        consulted.setdefault(current, "directory")
        candidate = current / name
        st = os.lstat(candidate)
        if stat.S_ISLNK(st.st_mode):
            hops += 1
            if hops > _MAX_SYMLINKS:
                raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), str(path))
            consulted.setdefault(candidate, "symlink")
            target = Path(os.readlink(candidate))
            if target.is_absolute():
                current = Path("/")
                pending[:0] = target.parts[1:]
            else:
                pending[:0] = target.parts
            continue
        current = candidate
    return list(consulted.items()), current


# -- files ---------------------------------------------------------------------------


def open_private(path: Path, flags: int = os.O_RDONLY) -> int:
    """Open (with O_CREAT in *flags*: create ``0600``) a file of ours; returns the fd.

    Refuses a symlink (ELOOP), a file that is not regular, and one owned by
    another user; a mode with group or other bits is tightened to ``0600``.
    """
    fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnsafePath(f"{path}: not a regular file")
        if st.st_uid != os.geteuid():
            raise UnsafePath(
                f"bad ownership for file {path}: owned by {_owner(st.st_uid)}, "
                f"not by {_me()}; remove it",
            )
        if stat.S_IMODE(st.st_mode) != FILE_MODE:
            os.fchmod(fd, FILE_MODE)
    except BaseException:
        os.close(fd)
        raise
    return fd


def ensure_private_file(path: Path, create: bool = True) -> None:
    """Create *path* empty ``0600`` if missing (FileNotFoundError without *create*);
    make an existing one of ours ``0600``."""
    os.close(open_private(path, os.O_RDWR | (os.O_CREAT if create else 0)))


def read_private_file(path: Path) -> bytes:
    """The bytes of a file of ours (see open_private); FileNotFoundError if absent."""
    fd = open_private(path)
    with os.fdopen(fd, "rb") as f:
        return f.read()


def create_file(path: Path) -> int:
    """A new file ``0600`` (O_EXCL: never an existing file or a symlink), open for writing."""
    fd = os.open(
        path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE
    )
    try:
        os.fchmod(fd, FILE_MODE)  # exactly, whatever the umask
    except BaseException:
        os.close(fd)
        raise
    return fd


def write_private_file(path: Path, data: bytes, tmp_dir: Path | None = None) -> None:
    """Replace *path* atomically with *data*, mode ``0600``: temp file + rename.

    The temp file is ``<tmp_dir or the same directory>/<name>.tmp``, created
    afresh (a leftover is removed first), so a reader sees the old content or
    the new, never a mix. No fsync: what cachefs keeps is a cache, and each
    reader copes with a file lost or emptied by a power cut (a lost ``secret``
    or ``format`` marker makes the tier drop its chunks and fill again).
    """
    tmp = (tmp_dir or path.parent) / f"{path.name}.tmp"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    fd = create_file(tmp)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
