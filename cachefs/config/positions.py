"""Where each key of a TOML file is written, for error messages.

tomllib does not report positions, so ``LineIndexer`` scans the text tomllib
has accepted and maps each key path to the line it was written on.
"""

from __future__ import annotations

import contextlib
import re
import tomllib
from bisect import bisect_right

from cachefs.config.keys import BARE_KEY, KeyPath


class _ScanError(Exception):
    pass


_WS_CHARS = " \t"
_ML_BASIC_STR = re.compile(r'"""(?:[^"\\]|\\.|"{1,2}(?!"))*"{0,2}"""', re.DOTALL)
_ML_LITERAL_STR = re.compile(r"'''(?:[^']|'{1,2}(?!'))*'{0,2}'''", re.DOTALL)
_BASIC_STR = re.compile(r'"(?:[^"\\\n]|\\.)*"')
_LITERAL_STR = re.compile(r"'[^'\n]*'")
_SCALAR = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:[Zz]|[+-]\d{2}:\d{2})?"
    r"|[^,\]\}\s#]+"
)
_VALUE_PATTERNS = (_ML_BASIC_STR, _ML_LITERAL_STR, _BASIC_STR, _LITERAL_STR, _SCALAR)


class LineIndexer:
    """Maps key paths to the line they are written on, for error messages.

    Runs only on text tomllib has accepted, so it can assume valid TOML; it
    understands headers, ``[[arrays]]`` (with their index), dotted keys, inline
    tables and arrays, and skips strings and comments so they cannot mislead it.
    """

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.line_starts = [0] + [m.end() for m in re.finditer("\n", text)]
        self.lines: dict[KeyPath, int] = {}
        self.array_counts: dict[KeyPath, int] = {}

    def build(self) -> dict[KeyPath, int]:
        # On a surprise keep what we have; lookups fall back to the enclosing table.
        with contextlib.suppress(_ScanError):
            self._document()
        return self.lines

    def _record(self, path: KeyPath, pos: int) -> None:
        line = bisect_right(self.line_starts, pos)
        for i in range(1, len(path) + 1):
            self.lines.setdefault(path[:i], line)

    def _peek(self) -> str:
        return self.text[self.pos : self.pos + 1]

    def _skip(self, newlines: bool) -> None:
        text = self.text
        while self.pos < len(text):
            c = text[self.pos]
            if c in _WS_CHARS or (newlines and c in "\r\n"):
                self.pos += 1
            elif c == "#":
                end = text.find("\n", self.pos)
                self.pos = len(text) if end < 0 else end
            else:
                return

    def _expect(self, token: str) -> None:
        self._skip(newlines=False)
        if not self.text.startswith(token, self.pos):
            raise _ScanError(token)
        self.pos += len(token)

    def _resolve(self, keys: list[str]) -> KeyPath:
        """A header's keys -> path, stepping into the latest element of each [[array]]."""
        path: KeyPath = ()
        for key in keys:
            path = (*path, key)
            if path in self.array_counts:
                path = (*path, self.array_counts[path])
        return path

    def _document(self) -> None:
        table: KeyPath = ()
        while True:
            self._skip(newlines=True)
            if self.pos >= len(self.text):
                return
            start = self.pos
            if self.text.startswith("[[", self.pos):
                self.pos += 2
                keys = self._key()
                self._expect("]]")
                base = (*self._resolve(keys[:-1]), keys[-1])
                self.array_counts[base] = self.array_counts.get(base, -1) + 1
                table = (*base, self.array_counts[base])
                self._record(table, start)
            elif self._peek() == "[":
                self.pos += 1
                keys = self._key()
                self._expect("]")
                table = self._resolve(keys)
                self._record(table, start)
            else:
                self._key_value(table)

    def _key_value(self, table: KeyPath) -> None:
        start = self.pos
        path = (*table, *self._key())
        self._expect("=")
        self._record(path, start)
        self._value(path)

    def _key(self) -> list[str]:
        keys = []
        while True:
            self._skip(newlines=False)
            keys.append(self._simple_key())
            self._skip(newlines=False)
            if self._peek() != ".":
                return keys
            self.pos += 1

    def _simple_key(self) -> str:
        for pattern in (_BASIC_STR, _LITERAL_STR, BARE_KEY):
            m = pattern.match(self.text, self.pos)
            if m:
                self.pos = m.end()
                raw = m.group()
                # Let tomllib decode quoted keys' escapes; they are rare.
                return raw if pattern is BARE_KEY else str(tomllib.loads(f"k = {raw}")["k"])
        raise _ScanError("key")

    def _value(self, path: KeyPath) -> None:
        self._skip(newlines=False)
        c = self._peek()
        if c == "[":
            self._array(path)
        elif c == "{":
            self._inline_table(path)
        else:
            for pattern in _VALUE_PATTERNS:
                m = pattern.match(self.text, self.pos)
                if m:
                    self.pos = m.end()
                    return
            raise _ScanError("value")

    def _array(self, path: KeyPath) -> None:
        self.pos += 1
        index = 0
        while True:
            self._skip(newlines=True)
            if self._peek() in ("]", ""):
                self.pos += 1
                return
            self._record((*path, index), self.pos)
            self._value((*path, index))
            index += 1
            self._skip(newlines=True)
            if self._peek() == ",":
                self.pos += 1

    def _inline_table(self, path: KeyPath) -> None:
        self.pos += 1
        while True:
            self._skip(newlines=True)
            if self._peek() in ("}", ""):
                self.pos += 1
                return
            self._key_value(path)
            self._skip(newlines=True)
            if self._peek() == ",":
                self.pos += 1
