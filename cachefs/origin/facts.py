"""What the mount learned of its origin when it connected, kept for when it is offline."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

STATVFS_FIELDS = (
    "f_bsize",
    "f_frsize",
    "f_blocks",
    "f_bfree",
    "f_bavail",
    "f_files",
    "f_ffree",
    "f_favail",
    "f_namemax",
)


def _unknown_statvfs() -> dict[str, int]:
    return {"f_bsize": 4096, "f_frsize": 4096, "f_namemax": 255}


@dataclass
class OriginFacts:
    # FLUSH (sent at every close) reaches the origin only where close() can
    # report an error; decided at mount, kept if the origin is offline then.
    forward_flush: bool = True
    # The origin's last statfs answer, kept (and persisted) for df while offline.
    statvfs: dict[str, int] = field(default_factory=_unknown_statvfs)

    def remember_statvfs(self, sv: os.statvfs_result) -> None:
        self.statvfs = {name: getattr(sv, name) for name in STATVFS_FIELDS}

    def restore_statvfs(self, saved: dict[str, Any] | None) -> None:
        self.statvfs.update(saved or {})
