"""The regular files below the paths a command is given, and their residency."""

from __future__ import annotations

import errno
import json
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from cachefs.app.commands.mounts import RESIDENCY, Target

RESIDENCY_KEYS = ("chunks", "ram", "ssd", "hdd", "uncached")


@dataclass
class File:
    path: str
    size: int
    top: Target  # the path it was found below


@dataclass
class Walked:
    files: list[File]
    errors: list[str]  # "path: reason", for directories that could not be listed


def walk(targets: list[Target]) -> Walked:
    """Every regular file at or below *targets*, in directory order, without
    following symlinks (each file once, even if two targets overlap)."""
    files: list[File] = []
    errors: list[str] = []
    seen: set[str] = set()
    for target in targets:
        for path, size in _regular_files(target.path, errors):
            if path not in seen:
                seen.add(path)
                files.append(File(path, size, target))
    return Walked(files, errors)


def _regular_files(top: str, errors: list[str]) -> Iterator[tuple[str, int]]:
    try:
        st = os.lstat(top)
    except OSError as exc:
        errors.append(f"{top}: {exc.strerror}")
        return
    if stat.S_ISREG(st.st_mode):
        yield top, st.st_size
        return
    if not stat.S_ISDIR(st.st_mode):
        return

    def failed(exc: OSError) -> None:
        errors.append(f"{exc.filename}: {exc.strerror}")

    for directory, dirs, names in os.walk(top, onerror=failed):
        dirs.sort()
        for name in sorted(names):
            path = os.path.join(directory, name)
            try:
                st = os.lstat(path)
            except OSError as exc:
                errors.append(f"{path}: {exc.strerror}")
                continue
            if stat.S_ISREG(st.st_mode):
                yield path, st.st_size


def residency(path: str) -> dict[str, Any]:
    """``user.cachefs.residency`` of a file: chunks, chunk_size, ram, ssd, hdd, uncached."""
    value = os.getxattr(path, RESIDENCY, follow_symlinks=False)
    answer = json.loads(value)
    if not isinstance(answer, dict):
        raise OSError(errno.EBADMSG, "residency is not a JSON object")
    return answer
