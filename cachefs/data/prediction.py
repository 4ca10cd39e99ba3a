"""What is read next: a model fed by the files a mount opens.

Two kinds of evidence, each with a confidence in [0, 1]:

* **structure**: the next sibling in natural sort order with the same
  extension (``S01E03.mkv`` → ``S01E04.mkv``, ``IMG_0041.jpg`` →
  ``IMG_0042.jpg``, ``07 - x.flac`` → ``08 - y.flac``). How far it is trusted
  is learnt per directory: every move from one file of a directory to
  another counts as "in order" (it went to the next sibling) or not, and the
  confidence is ``(in_order + 1) / (moves + 2)``: 0.5 before anything is
  known, towards 1 for an album played in order, towards 0 for a shuffle;
* **history**: a successor model over the access stream. Each of the last
  ``CONTEXT`` distinct files opened before B (within the last ``window_size``
  opens) counts B as one of its successors, weighted ``1 / distance``, so
  A B and A x B both teach "B follows A"; the confidence that A is followed
  by B is B's share of A's successor weight, damped by how much was seen of A
  (``weight / (total + 1)``), so one observation never reaches certainty.
  Successors are learnt across directories (the film after its trailer) and
  kept for the last ``MAX_FILES`` files.

Everything here is pure and in memory (trio thread only); the model is saved
as JSON through the stats backend (cachefs.engine.prefetch), so it survives a
restart and can be shared by the mounts of one origin.
"""

from __future__ import annotations

import bisect
import json
import os
import re
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

MAX_FILES = 50_000  # files whose successors are remembered (least recently opened go first)
MAX_SUCCESSORS = 4  # kept per file, heaviest first
MAX_DIRS = 20_000  # directories whose order is remembered
CONTEXT = 4  # distinct earlier opens credited with each open (the cost per open is this)
MODEL_VERSION = 1

_DIGITS = re.compile(rb"(\d+)")


def natural_key(name: bytes) -> tuple[tuple[int, int | bytes], ...]:
    """Sort key that orders ``ep2`` before ``ep10`` (digit runs compare as numbers)."""
    parts = _DIGITS.split(name.lower())
    return tuple((1, int(p)) if i % 2 else (0, p) for i, p in enumerate(parts) if p)


def _extension(name: bytes) -> bytes:
    return os.path.splitext(name)[1].lower()


def _split(path: bytes) -> tuple[bytes, bytes]:
    head, _, tail = path.rpartition(b"/")
    return head, tail


@dataclass(frozen=True)
class Prediction:
    path: bytes  # origin-relative
    confidence: float
    why: str  # "structure" or "history"


@dataclass
class _DirOrder:
    moves: int = 0
    in_order: int = 0
    last: bytes | None = None  # the name opened last in this directory

    @property
    def confidence(self) -> float:
        return (self.in_order + 1) / (self.moves + 2)


class SiblingOrder:
    """A directory's regular files in natural order, for finding the next one fast."""

    SCAN = 64  # names looked at past a file for the next one with its extension

    def __init__(self, names: Iterable[bytes]) -> None:
        self.names = sorted(names, key=natural_key)
        self.keys = [natural_key(n) for n in self.names]

    def after(self, name: bytes) -> bytes | None:
        """The first name after *name* in natural order with the same extension."""
        ext = _extension(name)
        start = bisect.bisect_right(self.keys, natural_key(name))
        for candidate in self.names[start : start + self.SCAN]:
            if _extension(candidate) == ext:
                return candidate
        return None


Siblings = Callable[[bytes], SiblingOrder | None]  # dirpath -> its files, None if unknown


class Predictor:
    def __init__(self, window_size: int) -> None:
        self.window_size = max(1, window_size)
        self._recent: deque[bytes] = deque(maxlen=self.window_size)
        self._successors: OrderedDict[bytes, dict[bytes, float]] = OrderedDict()
        self._dirs: OrderedDict[bytes, _DirOrder] = OrderedDict()
        self.observed = 0

    # -- learning ------------------------------------------------------------------------

    def opened(self, path: bytes, siblings: Siblings) -> list[Prediction]:
        """*path* was opened for reading: learn from it, and say what comes next."""
        if self._recent and self._recent[-1] == path:
            return self.predict(path, siblings)  # the same file again: nothing new
        self.observed += 1
        self._learn_successor(path)
        self._learn_order(path, siblings)
        self._recent.append(path)
        return self.predict(path, siblings)

    def _learn_successor(self, path: bytes) -> None:
        seen: set[bytes] = set()
        for distance, earlier in enumerate(reversed(self._recent), start=1):
            if len(seen) == CONTEXT:
                break
            if earlier == path or earlier in seen:
                continue
            seen.add(earlier)
            weights = self._successors.get(earlier)
            if weights is None:
                weights = self._successors[earlier] = {}
            self._successors.move_to_end(earlier)
            weights[path] = weights.get(path, 0.0) + 1.0 / distance
            if len(weights) > MAX_SUCCESSORS:
                del weights[min(weights, key=weights.__getitem__)]
        while len(self._successors) > MAX_FILES:
            self._successors.popitem(last=False)

    def _learn_order(self, path: bytes, siblings: Siblings) -> None:
        dirpath, name = _split(path)
        order = self._dirs.get(dirpath)
        if order is None:
            order = self._dirs[dirpath] = _DirOrder()
        self._dirs.move_to_end(dirpath)
        if order.last is not None and order.last != name:
            order.moves += 1
            order.in_order += self._next_sibling(dirpath, order.last, siblings) == name
        order.last = name
        while len(self._dirs) > MAX_DIRS:
            self._dirs.popitem(last=False)

    # -- predicting ----------------------------------------------------------------------

    def predict(self, path: bytes, siblings: Siblings) -> list[Prediction]:
        """What follows *path*, most likely first (at most one guess per file)."""
        found: dict[bytes, Prediction] = {}
        dirpath, name = _split(path)
        nxt = self._next_sibling(dirpath, name, siblings)
        if nxt is not None:
            order = self._dirs.get(dirpath) or _DirOrder()
            target = dirpath + b"/" + nxt if dirpath else nxt
            found[target] = Prediction(target, order.confidence, "structure")
        weights = self._successors.get(path) or {}
        total = sum(weights.values())
        for successor, weight in weights.items():
            confidence = weight / (total + 1.0)
            known = found.get(successor)
            if known is None or known.confidence < confidence:
                found[successor] = Prediction(successor, confidence, "history")
        return sorted(found.values(), key=lambda p: -p.confidence)

    def _next_sibling(self, dirpath: bytes, name: bytes, siblings: Siblings) -> bytes | None:
        order = siblings(dirpath)
        return order.after(name) if order is not None else None

    def tracked_files(self) -> int:
        return len(self._successors)

    # -- persistence ---------------------------------------------------------------------

    def to_json(self) -> bytes:
        def hexed(b: bytes) -> str:
            return b.hex()

        return json.dumps(
            {
                "version": MODEL_VERSION,
                "successors": {
                    hexed(a): {hexed(b): w for b, w in ws.items()}
                    for a, ws in self._successors.items()
                },
                "dirs": {
                    hexed(d): [o.moves, o.in_order, hexed(o.last) if o.last is not None else None]
                    for d, o in self._dirs.items()
                },
            }
        ).encode()

    def load_json(self, data: bytes) -> None:
        """Merge a saved model in (what this mount learnt since counts too)."""
        saved = json.loads(data)
        if saved.get("version") != MODEL_VERSION:
            return
        for a, ws in saved["successors"].items():
            weights = self._successors.setdefault(bytes.fromhex(a), {})
            for b, w in ws.items():
                key = bytes.fromhex(b)
                weights[key] = weights.get(key, 0.0) + float(w)
            while len(weights) > MAX_SUCCESSORS:
                del weights[min(weights, key=weights.__getitem__)]
        for d, (moves, in_order, last) in saved["dirs"].items():
            order = self._dirs.setdefault(bytes.fromhex(d), _DirOrder())
            order.moves += int(moves)
            order.in_order += int(in_order)
            if order.last is None and last is not None:
                order.last = bytes.fromhex(last)
        while len(self._successors) > MAX_FILES:
            self._successors.popitem(last=False)
        while len(self._dirs) > MAX_DIRS:
            self._dirs.popitem(last=False)
