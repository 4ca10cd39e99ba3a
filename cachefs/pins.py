"""Pins: an operator's word that a file (or every file below a directory) stays in a tier.

``setfattr -n user.cachefs.pin -v ssd FILE_OR_DIR`` records the pin here,
persisted in the SSD tier directory. A pin beats the scores: a pinned file's
chunks are written to its tier and never evicted from it by pressure or TTL.
``none`` removes a pin. A file without a pin of its own inherits the nearest
pinned directory's.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

PIN_TIERS = ("ram", "ssd", "hdd")


class PinTable:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._pins: dict[str, str] = {}
        self._load()

    def _load(self) -> None:
        try:
            data = json.loads(self.path.read_text())
            self._pins = {str(k): str(v) for k, v in data.items() if v in PIN_TIERS}
        except FileNotFoundError:
            pass
        except (OSError, ValueError, AttributeError) as exc:
            log.warning("pins: cannot read %s, starting with none: %s", self.path, exc)

    def _save(self) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(self._pins, sort_keys=True))
        os.replace(tmp, self.path)

    def set(self, relpath: str, tier: str) -> None:
        """Pin *relpath* to *tier*, or unpin it with ``none``."""
        if tier == "none":
            self._pins.pop(relpath, None)
        elif tier in PIN_TIERS:
            self._pins[relpath] = tier
        else:
            raise ValueError(tier)
        self._save()

    def tier_for(self, relpath: str) -> str | None:
        """The pin that applies to *relpath*: its own, else its nearest directory's."""
        if not self._pins:
            return None  # the common case, on every open
        path = relpath
        while True:
            tier = self._pins.get(path)
            if tier is not None:
                return tier
            if not path:
                return None
            path = path.rpartition("/")[0]

    def own(self, relpath: str) -> str | None:
        return self._pins.get(relpath)

    def items(self) -> list[tuple[str, str]]:
        return sorted(self._pins.items())
