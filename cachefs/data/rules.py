"""Path -> content type -> policy.

The operator's ``[[rules]]`` come first (first match wins), then defaults by file
extension. Lookups sit on the read path, so globs are compiled once and answers
are kept in a bounded LRU cache.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable

from cachefs.config import Config, ContentTypeConfig

__all__ = ["CACHE_SIZE", "ContentTypeResolver", "compile_glob", "default_content_type"]

CACHE_SIZE = 65536  # distinct paths remembered per resolver

# fmt: off
_MEDIA = frozenset({
    "mkv", "mp4", "m4v", "avi", "mov", "wmv", "webm", "ts", "m2ts", "mpg", "mpeg", "flv", "ogv",
    "mp3", "flac", "m4a", "aac", "ogg", "opus", "wav", "wma", "alac", "ape",
})
_METADATA = frozenset({"nfo", "json", "xml", "srt", "ass", "ssa", "sub", "vtt", "txt", "md", "csv"})
_IMAGES = frozenset({"jpg", "jpeg", "png", "webp", "gif", "bmp", "tbn"})
_CONFIG = frozenset({"conf", "cfg", "ini", "yaml", "yml", "toml", "properties", "plist"})
# fmt: on
# An image is artwork (thumbnail policy) when its name or a directory says so.
_ARTWORK_HINTS = (
    "thumb",  # also thumbnail, .thumbnails, extrathumbs
    "artwork",
    "poster",
    "fanart",
    "banner",
    "metadata",
    "cover",
    "folder",
    "backdrop",
    "landscape",
    "logo",
)


def _translate_component(part: str) -> str:
    """One path component of a glob -> regex; nothing in it may match '/'."""
    out: list[str] = []
    i, n = 0, len(part)
    while i < n:
        c = part[i]
        if c == "*":
            while i + 1 < n and part[i + 1] == "*":
                i += 1  # "a**b" inside a component is just "*"
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[" and (end := _class_end(part, i)) > 0:
            out.append(_translate_class(part[i + 1 : end]))
            i = end
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


def _class_end(part: str, start: int) -> int:
    """Index of the ']' closing the class opened at ``start``, or -1 (then '[' is literal)."""
    i = start + 1
    if i < len(part) and part[i] in "!^":
        i += 1
    if i < len(part) and part[i] == "]":
        i += 1  # a leading ']' is a member, as in fnmatch
    end = part.find("]", i)
    return end


def _translate_class(body: str) -> str:
    negate = body[:1] in ("!", "^")
    if negate:
        body = body[1:]
    # Escape what is special inside a regex class (incl. the set-operation chars).
    members = re.sub(r"([\\\]\[^&~|])", r"\\\1", body)
    return f"[^/{members}]" if negate else f"(?!/)[{members}]"


def compile_glob(glob: str) -> re.Pattern[str]:
    """Compile a rule glob, matched against the whole '/'-separated relative path.

    ``*`` and ``?`` stay within one component; a ``**`` component matches any
    number of directories, including none (``a/**/b`` matches ``a/b``); a
    trailing ``/**`` matches everything below; ``[abc]``/``[!abc]`` are classes.
    """
    parts = glob.split("/")
    out: list[str] = []
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if part == "**":
            out.append(".*" if last else "(?:[^/]*/)*")
        else:
            out.append(_translate_component(part) + ("" if last else "/"))
    return re.compile("".join(out), re.DOTALL)


def _extension(name: str) -> str:
    stem, dot, ext = name.rpartition(".")
    return ext.lower() if dot and stem else ""  # ".bashrc" has no extension


def _looks_like_artwork(components: Iterable[str]) -> bool:
    return any(hint in part.lower() for part in components for hint in _ARTWORK_HINTS)


def default_content_type(relpath: str) -> str:
    """The content type by extension alone (after no rule matched)."""
    components = relpath.split("/")
    ext = _extension(components[-1])
    if ext in _MEDIA:
        return "media"
    if ext in _METADATA:
        return "metadata"
    if ext in _IMAGES:
        return "thumbnail" if _looks_like_artwork(components) else "user_data"
    if ext in _CONFIG:
        return "config"
    return "user_data"


class ContentTypeResolver:
    """Answers "what kind of file is this, and how do we cache it?" for one Config."""

    def __init__(self, cfg: Config) -> None:
        self._policies = cfg.content_types
        self._rules = tuple((compile_glob(rule.glob), rule.type) for rule in cfg.rules)
        # Per instance, so a reloaded config never sees another config's answers.
        self._cached = functools.lru_cache(maxsize=CACHE_SIZE)(self._resolve)

    def content_type(self, relpath: str) -> str:
        """Content type of ``relpath`` (relative to the origin root, '/'-separated)."""
        return self._cached(relpath)

    def policy(self, relpath: str) -> ContentTypeConfig:
        return self._policies[self.content_type(relpath)]

    def _resolve(self, relpath: str) -> str:
        relpath = relpath.lstrip("/")  # tolerate callers that keep the root's slash
        for pattern, ctype in self._rules:
            if pattern.fullmatch(relpath):
                return ctype
        return default_content_type(relpath)
