"""Key paths (``("tiers", "ssd", "path")``, ``("rules", 0, "glob")``) and how TOML spells them."""

from __future__ import annotations

import re
from typing import TypeAlias

KeyPath: TypeAlias = tuple[str | int, ...]

BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def toml_string(text: str) -> str:
    """``text`` as a TOML basic string, quotes included."""
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def dotted(path: KeyPath) -> str:
    """``("rules", 0, "glob")`` -> ``rules[0].glob``; odd keys quoted as TOML would."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            key = part if BARE_KEY.fullmatch(part) else toml_string(part)
            out += f".{key}" if out else key
    return out
