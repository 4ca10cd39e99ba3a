"""Tests for cachefs.data.rules: user rules, glob semantics, extension defaults."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from cachefs.config import Rule, default_config, load_config
from cachefs.data.rules import ContentTypeResolver, compile_glob, default_content_type


def resolver(*rules: tuple[str, str]) -> ContentTypeResolver:
    cfg = dataclasses.replace(default_config(), rules=tuple(Rule(g, t) for g, t in rules))
    return ContentTypeResolver(cfg)


def matches(glob: str, path: str) -> bool:
    return compile_glob(glob).fullmatch(path) is not None


# --------------------------------------------------------------------------- user rules


def test_user_rule_beats_extension_default() -> None:
    r = resolver(("Movies/**/*.nfo", "user_data"), ("Backups/**", "user_data"))
    assert r.content_type("Movies/Alien (1979)/movie.nfo") == "user_data"
    assert r.content_type("Shows/x.nfo") == "metadata"  # no rule: extension default
    assert r.content_type("Backups/2024/film.mkv") == "user_data"
    assert r.content_type("Films/film.mkv") == "media"


def test_first_matching_rule_wins() -> None:
    r = resolver(("Music/Live/**", "user_data"), ("Music/**", "media"), ("**/*.flac", "config"))
    assert r.content_type("Music/Live/2001/a.flac") == "user_data"
    assert r.content_type("Music/Studio/a.flac") == "media"
    assert r.content_type("Other/a.flac") == "config"


def test_policy_returns_the_content_type_config() -> None:
    cfg = default_config()
    r = resolver(("Docs/**", "config"))
    assert r.policy("Docs/a.pdf") == cfg.content_types["config"]
    assert r.policy("Movies/a.mkv") == cfg.content_types["media"]
    assert r.policy("Movies/a.mkv").default_tier == "hdd"


def test_rules_are_case_sensitive() -> None:
    r = resolver(("movies/**", "config"))
    assert r.content_type("movies/a.mkv") == "config"
    assert r.content_type("Movies/a.mkv") == "media"


def test_leading_slash_is_tolerated() -> None:
    r = resolver(("Movies/*.iso", "media"))
    assert r.content_type("/Movies/a.iso") == "media"


def test_results_are_cached_per_resolver() -> None:
    r = resolver(("a/*", "config"))
    for _ in range(3):
        assert r.content_type("a/x") == "config"
    info = r._cached.cache_info()
    assert (info.hits, info.misses) == (2, 1)
    assert info.maxsize == 65536
    # A resolver for another config does not share answers.
    assert resolver().content_type("a/x") == "user_data"


def test_resolver_with_a_loaded_config(tmp_path: Path) -> None:
    path = tmp_path / "cachefs.toml"
    path.write_text('[[rules]]\nglob = "**/sample/*"\ntype = "user_data"\n')
    r = ContentTypeResolver(load_config(path))
    assert r.content_type("Movies/X/sample/x.mkv") == "user_data"
    assert r.content_type("Movies/X/x.mkv") == "media"


# --------------------------------------------------------------------------- glob semantics


@pytest.mark.parametrize(
    ("glob", "path", "expected"),
    [
        # '*' stays within one component
        ("*.nfo", "a.nfo", True),
        ("*.nfo", "dir/a.nfo", False),
        ("Movies/*", "Movies/a.mkv", True),
        ("Movies/*", "Movies/X/a.mkv", False),
        ("Movies/*/*.nfo", "Movies/X/a.nfo", True),
        ("a*b", "a/b", False),
        # '**' spans any number of directories, including zero
        ("Movies/**/*.nfo", "Movies/a.nfo", True),
        ("Movies/**/*.nfo", "Movies/X/a.nfo", True),
        ("Movies/**/*.nfo", "Movies/X/Y/Z/a.nfo", True),
        ("Movies/**/*.nfo", "TV/X/a.nfo", False),
        ("Movies/**/*.nfo", "Movies/X/a.nfo.bak", False),
        ("**/*.nfo", "a.nfo", True),
        ("**/*.nfo", "x/y/a.nfo", True),
        ("**/extrafanart/*", "Movies/X/extrafanart/1.jpg", True),
        ("**/extrafanart/*", "extrafanart/1.jpg", True),
        ("a/**/b/**/c", "a/b/c", True),
        ("a/**/b/**/c", "a/x/b/y/z/c", True),
        ("a/**/b", "a/xb", False),
        ("Movies/**", "Movies/a.mkv", True),
        ("Movies/**", "Movies/X/Y/a.mkv", True),
        ("Movies/**", "Moviesx/a.mkv", False),
        ("**", "anything/at/all", True),
        ("a**b", "axxb", True),  # '**' inside a component is a plain '*'
        ("a**b", "a/b", False),
        # '?' is one character, never '/'
        ("?.txt", "a.txt", True),
        ("?.txt", "ab.txt", False),
        ("a?b", "a/b", False),
        # classes
        ("[ab].txt", "b.txt", True),
        ("[ab].txt", "c.txt", False),
        ("[!ab].txt", "c.txt", True),
        ("[!ab].txt", "a.txt", False),
        ("[a-c]x", "bx", True),
        ("[x", "[x", True),  # unclosed '[' is literal
        # everything else is literal and case-sensitive
        ("a.b", "axb", False),
        ("(1979)+", "(1979)+", True),
        ("Movies/*.MKV", "Movies/a.mkv", False),
    ],
)
def test_glob_semantics(glob: str, path: str, expected: bool) -> None:
    assert matches(glob, path) is expected


# --------------------------------------------------------------------------- extension defaults


@pytest.mark.parametrize(
    "ext",
    [
        "mkv",
        "mp4",
        "m4v",
        "avi",
        "mov",
        "wmv",
        "webm",
        "ts",
        "m2ts",
        "mpg",
        "mpeg",
        "flv",
        "ogv",
        "mp3",
        "flac",
        "m4a",
        "aac",
        "ogg",
        "opus",
        "wav",
        "wma",
        "alac",
        "ape",
    ],
)
def test_media_extensions(ext: str) -> None:
    assert default_content_type(f"Library/item.{ext}") == "media"


@pytest.mark.parametrize(
    "ext", ["nfo", "json", "xml", "srt", "ass", "ssa", "sub", "vtt", "txt", "md", "csv"]
)
def test_metadata_extensions(ext: str) -> None:
    assert default_content_type(f"Library/item.{ext}") == "metadata"


@pytest.mark.parametrize(
    "ext", ["conf", "cfg", "ini", "yaml", "yml", "toml", "properties", "plist"]
)
def test_config_extensions(ext: str) -> None:
    assert default_content_type(f"etc/app.{ext}") == "config"


@pytest.mark.parametrize(
    "path",
    [
        "Movies/X/poster.jpg",
        ".thumbnails/a.png",
        "Movies/X/extrathumbs/1.jpg",
        "Movies/X/fanart.jpg",
        "Movies/X/X-banner.webp",
        "Music/Album/folder.jpg",
        "Music/Album/Cover.JPG",
        "Shows/S/backdrop.png",
        "Shows/S/landscape.jpg",
        "Shows/S/clearlogo.png",
        "Shows/S/metadata/1.tbn",
        "Artwork/a.gif",
        "Photos/THUMBNAILS/a.bmp",
    ],
)
def test_images_that_look_like_artwork_are_thumbnails(path: str) -> None:
    assert default_content_type(path) == "thumbnail"


@pytest.mark.parametrize(
    "path", ["Photos/2024/IMG_0001.jpg", "holiday.png", "Scans/page1.jpeg", "a.gif"]
)
def test_other_images_are_user_data(path: str) -> None:
    assert default_content_type(path) == "user_data"


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("Movies/X/X.MKV", "media"),
        ("Movies/X/X.Mp4", "media"),
        ("Movies/X/X.NFO", "metadata"),
        ("etc/App.YAML", "config"),
        ("Movies/X/POSTER.PNG", "thumbnail"),
    ],
)
def test_extensions_are_case_insensitive(path: str, expected: str) -> None:
    assert default_content_type(path) == expected
    assert resolver().content_type(path) == expected


@pytest.mark.parametrize(
    "path",
    ["README", "archive.tar.gz", "Documents/report.pdf", ".bashrc", "dir.mkv/file", "x.", "x.mkvx"],
)
def test_everything_else_is_user_data(path: str) -> None:
    assert default_content_type(path) == "user_data"


def test_extension_is_taken_from_the_last_dot() -> None:
    assert default_content_type("Movies/The.Movie.2001.1080p.mkv") == "media"
    assert default_content_type("subs/movie.en.srt") == "metadata"
    assert default_content_type("subs/movie.srt.bak") == "user_data"
