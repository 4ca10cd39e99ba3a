"""Pins: an operator's word that a file (or every file below a directory) stays in a tier.

``setfattr -n user.cachefs.pin -v ssd FILE_OR_DIR`` records the pin here,
persisted as ``pins.json`` in the state directory (config.state_directory:
``state_dir``, by default the SSD tier's directory). A pin beats the scores: a
pinned file's chunks are written to its tier and never evicted from it by
pressure or TTL. ``none`` removes a pin. A file without a pin of its own
inherits the nearest pinned directory's. ``pins.json`` is written ``0600``
(temp file + rename) and read only when it is cachefs's own (private.py).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from cachefs.common import private

log = logging.getLogger(__name__)

PIN_TIERS = ("ram", "ssd", "hdd")


class PinTable:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._pins: dict[str, str] = {}

    def load(self) -> None:
        """Read the pins (once the directory holding them has been checked)."""
        try:
            data = json.loads(private.read_private_file(self.path))
            self._pins = {str(k): str(v) for k, v in data.items() if v in PIN_TIERS}
        except FileNotFoundError:
            pass
        except (OSError, ValueError, AttributeError) as exc:
            log.warning("pins: cannot read %s, starting with none: %s", self.path, exc)

    def _save(self) -> None:
        private.write_private_file(self.path, json.dumps(self._pins, sort_keys=True).encode())

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

    def items(self) -> list[tuple[str, str]]:
        return sorted(self._pins.items())
