"""The origin's extended attributes as last answered: ls -l without round trips, and offline."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field


@dataclass(slots=True)
class _Xattrs:
    ctime_ns: int  # the file's ctime when these answers were given; setxattr changes it
    values: dict[bytes, bytes | None] = field(default_factory=dict)  # None: ENODATA
    names: list[bytes] | None = None  # listxattr's answer


class XattrCache:
    """The origin's answers to getxattr and listxattr, per path, bounded (LRU).

    ``ls -l`` asks two of them per file; on a NAS each is a round trip, and
    while the origin is offline each would be an EIO printed per file. An
    answer is trusted while the file's ctime (which every xattr change moves)
    is the one it was given under and its attributes are fresh; offline, any
    answer is served, and a question never asked is answered "no such
    attribute".
    """

    def __init__(self, max_paths: int = 50_000) -> None:
        self.max_paths = max_paths
        self._paths: OrderedDict[bytes, _Xattrs] = OrderedDict()

    def _for(self, path: bytes, ctime_ns: int | None) -> _Xattrs | None:
        found = self._paths.get(path)
        if found is None or (ctime_ns is not None and found.ctime_ns != ctime_ns):
            return None
        self._paths.move_to_end(path)
        return found

    def value(self, path: bytes, name: bytes, ctime_ns: int | None) -> tuple[bool, bytes | None]:
        """(known, value) under *ctime_ns* (None: whatever ctime it was given under)."""
        found = self._for(path, ctime_ns)
        if found is None or name not in found.values:
            return False, None
        return True, found.values[name]

    def names(self, path: bytes, ctime_ns: int) -> list[bytes] | None:
        found = self._for(path, ctime_ns)
        return found.names if found is not None else None

    def known_names(self, path: bytes) -> list[bytes]:
        """Offline: the listed names, else those whose values were asked and exist."""
        found = self._for(path, None)
        if found is None:
            return []
        if found.names is not None:
            return found.names
        return [name for name, value in found.values.items() if value is not None]

    def _slot(self, path: bytes, ctime_ns: int) -> _Xattrs:
        found = self._paths.get(path)
        if found is None or found.ctime_ns != ctime_ns:
            found = self._paths[path] = _Xattrs(ctime_ns)
            while len(self._paths) > self.max_paths:
                self._paths.popitem(last=False)
        self._paths.move_to_end(path)
        return found

    def put_value(self, path: bytes, ctime_ns: int, name: bytes, value: bytes | None) -> None:
        self._slot(path, ctime_ns).values[name] = value

    def put_names(self, path: bytes, ctime_ns: int, names: list[bytes]) -> None:
        self._slot(path, ctime_ns).names = names

    def forget(self, path: bytes) -> None:
        self._paths.pop(path, None)
