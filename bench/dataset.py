"""Deterministic media-library data set for cachefs benchmarks.

Same seed and profile -> byte-identical files, names, sizes and mtimes, so runs
on different machines (or after rebuilding the image) are comparable.

Layout (full profile)::

    Movies/<Title (Year)>/movie.mkv          4 x 256 MiB, incompressible
                         /movie.nfo, poster.jpg, fanart.jpg
    Shows/<Show (Year)>/tvshow.nfo, poster.jpg, fanart.jpg
                       /Season NN/seasonNN-poster.jpg
                       /Season NN/SxxEyy - <Title>.nfo, ...-thumb.jpg
    metadata/people/<Initial>/<Name>/person.json [, folder.jpg]
    config/*.conf, *.yaml, config/plugins/*.yaml

~2,000 text files (.nfo/.json, 1-8 KiB, compressible), ~500 thumbnails
(.jpg, 20-200 KiB, random bytes), non-ASCII and punctuation in names.

Usage::

    python bench/dataset.py DEST [--small] [--seed 42]
    python bench/dataset.py --plan [--small]      # print totals, write nothing
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

KiB = 1024
MiB = 1024 * KiB
BLOCK = 4096  # ext4 block size, for space estimates
DEFAULT_SEED = 20240601
# Bump when the *content* generators change; layout/size changes are caught by
# fingerprint() anyway.  Cached images with another fingerprint get rebuilt.
GENERATOR_VERSION = 1
BASE_MTIME = 1_577_836_800  # 2020-01-01T00:00:00Z; fixed so mtimes are reproducible

MEDIA_MAGIC = b"\x1a\x45\xdf\xa3"  # EBML header: looks like Matroska to `file`
JPEG_HEAD = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
JPEG_TAIL = b"\xff\xd9"


@dataclass(frozen=True)
class Profile:
    name: str
    media_files: int
    media_size: int
    text_files: int
    thumbnails: int


FULL = Profile("full", media_files=4, media_size=256 * MiB, text_files=2000, thumbnails=500)
SMALL = Profile("small", media_files=4, media_size=16 * MiB, text_files=200, thumbnails=50)


@dataclass(frozen=True)
class FileSpec:
    path: str  # relative POSIX path inside the data set
    kind: str  # "media" | "text" | "thumb" | "config"
    size: int  # target size in bytes (text files land within a few bytes of it)


MOVIES = [
    "Amélie (2001)",
    "東京物語 (1953)",
    "Pan's Labyrinth (2006)",
    "Blade Runner (1982)",
    "Léon - The Professional (1994)",
    "Das Boot (1981)",
]
SHOWS = ["Dark (2017)", "深夜食堂 (2009)", "Ørnen (2004)", "The Wire (2002)"]
# fmt: off
FIRST_NAMES = [
    "Audrey", "José", "Zoë", "Björn", "Renée", "Søren", "Łukasz", "Chloé", "Mathieu",
    "Ingrid", "Akira", "Setsuko", "Chishū", "Guillermo", "Sigourney", "Harrison", "Élodie",
    "Nastassja", "Yasujirō", "Maribel",
]
LAST_NAMES = [
    "Tautou", "Müller", "Åström", "Núñez", "Dvořák", "O'Brien", "Kassovitz", "Bergman",
    "Kurosawa", "Hara", "Ryū", "del Toro", "Weaver", "Ford", "Jovovich", "Verdú", "Ozu",
    "Lindqvist", "Kowalski", "Fernández",
]
# fmt: on
CJK_NAMES = ["宮崎 駿", "黒澤 明", "小津 安二郎", "原 節子", "笠 智衆", "是枝 裕和"]
WORD_TEXT = (
    "the a of and to in is it that was he she they his her on with as for at by from "
    "night city rain memory letter train village river mother father daughter son war "
    "summer winter secret journey house garden dream stranger friend detective witness "
    "music silence light shadow harbour island mountain road station letter promise "
    "returns discovers loses finds remembers escapes waits travels meets forgets "
    "quietly suddenly finally together alone again never always slowly"
)
WORDS = WORD_TEXT.split()  # the first 22 are function words, skipped in titles
GENRES = ["Drama", "Comedy", "Thriller", "Science Fiction", "Documentary", "Romance"]


def content_seed(seed: int, path: str) -> int:
    """Per-file seed: content depends only on (seed, path), not on generation order."""
    return int.from_bytes(hashlib.sha256(f"{seed}/{path}".encode()).digest()[:8], "little")


# -- plan -------------------------------------------------------------------


def plan(profile: Profile, seed: int = DEFAULT_SEED) -> list[FileSpec]:
    """Every file of the data set, in generation order."""
    rng = random.Random(seed)
    specs: list[FileSpec] = []

    def text(path: str) -> None:
        specs.append(FileSpec(path, "text", rng.randint(1 * KiB, 8 * KiB)))

    def thumb(path: str) -> None:
        specs.append(FileSpec(path, "thumb", rng.randint(20 * KiB, 200 * KiB)))

    for title in MOVIES[: profile.media_files]:
        specs.append(FileSpec(f"Movies/{title}/movie.mkv", "media", profile.media_size))
        text(f"Movies/{title}/movie.nfo")
        thumb(f"Movies/{title}/poster.jpg")
        thumb(f"Movies/{title}/fanart.jpg")

    # Roughly 60% of the remaining budgets go to episodes, the rest to people.
    thumbs_left = profile.thumbnails - 2 * profile.media_files - 2 * len(SHOWS)
    episodes = max(len(SHOWS), int(0.6 * min(thumbs_left, profile.text_files)))
    for show_index, show in enumerate(SHOWS):
        root = f"Shows/{show}"
        text(f"{root}/tvshow.nfo")
        thumb(f"{root}/poster.jpg")
        thumb(f"{root}/fanart.jpg")
        count = episodes // len(SHOWS) + (show_index < episodes % len(SHOWS))
        for number in range(count):
            season, episode = divmod(number, 10)
            season_dir = f"{root}/Season {season + 1:02d}"
            if episode == 0:
                thumb(f"{season_dir}/season{season + 1:02d}-poster.jpg")
            name = f"S{season + 1:02d}E{episode + 1:02d} - {episode_title(rng)}"
            text(f"{season_dir}/{name}.nfo")
            thumb(f"{season_dir}/{name}-thumb.jpg")

    texts_left = profile.text_files - sum(s.kind == "text" for s in specs)
    thumbs_left = profile.thumbnails - sum(s.kind == "thumb" for s in specs)
    for index, name in enumerate(person_names(rng, max(texts_left, 0))):
        folder = f"metadata/people/{name[0].upper()}/{name}"
        text(f"{folder}/person.json")
        if index < thumbs_left:
            thumb(f"{folder}/folder.jpg")

    specs.extend(FileSpec(path, "config", len(body)) for path, body in config_files(seed))
    return specs


def episode_title(rng: random.Random) -> str:
    words = rng.sample(WORDS[22:], rng.randint(1, 3))
    return " ".join(words).capitalize()


def person_names(rng: random.Random, count: int) -> Iterator[str]:
    seen: set[str] = set()
    while len(seen) < count:
        if rng.random() < 0.1:
            name = rng.choice(CJK_NAMES)
        else:
            initial = rng.choice("ABCDEFGHJKLMNPRSTW")
            name = f"{rng.choice(FIRST_NAMES)} {initial}. {rng.choice(LAST_NAMES)}"
        while name in seen:  # a library disambiguates homonyms with a number
            name = f"{name.rstrip('0123456789 ')} {rng.randint(2, 999)}"
        seen.add(name)
        yield name


def config_files(seed: int) -> list[tuple[str, bytes]]:
    """Small hand-written-looking configuration files (fixed content)."""
    files = {
        "config/cachefs.conf": (
            "# cachefs benchmark origin\n[cache]\nram_mb = 512\nssd_dir = /var/cache/cachefs\n"
            "block_size = 1048576\n\n[origin]\npath = /srv/media\nreadahead_kb = 4096\n"
        ),
        "config/library.yaml": (
            "libraries:\n  - name: Movies\n    path: Movies\n    scanner: movie\n"
            "  - name: Shows\n    path: Shows\n    scanner: tv\n"
            f"seed: {seed}\nlanguages: [en, fr, ja, da]\n"
        ),
        "config/logging.conf": "[loggers]\nkeys=root\n\n[logger_root]\nlevel=INFO\n",
        "config/users.yaml": "users:\n  - name: amélie\n    role: admin\n  - name: 太郎\n"
        "    role: viewer\n",
        "config/plugins/transcoder.yaml": "enabled: true\nhwaccel: none\nmax_streams: 2\n",
        "config/plugins/subtitles.yaml": "providers: [opensubtitles]\nlanguages: [en, ja]\n",
    }
    return [(path, body.encode()) for path, body in files.items()]


# -- content ----------------------------------------------------------------


def media_blocks(spec: FileSpec, seed: int) -> Iterator[bytes]:
    """Incompressible content in 1 MiB blocks (Random.randbytes is ~400 MB/s)."""
    rng = random.Random(content_seed(seed, spec.path))
    remaining = spec.size
    first = True
    while remaining > 0:
        block = rng.randbytes(min(MiB, remaining))
        if first:
            block = MEDIA_MAGIC + block[len(MEDIA_MAGIC) :]
            first = False
        remaining -= len(block)
        yield block


def thumb_bytes(spec: FileSpec, seed: int) -> bytes:
    rng = random.Random(content_seed(seed, spec.path))
    body = rng.randbytes(spec.size - len(JPEG_HEAD) - len(JPEG_TAIL))
    return JPEG_HEAD + body + JPEG_TAIL


def text_bytes(spec: FileSpec, seed: int) -> bytes:
    """Compressible text: an .nfo XML document or a person .json, padded to size."""
    rng = random.Random(content_seed(seed, spec.path))
    path = Path(spec.path)
    title = path.parent.name if path.stem in ("movie", "tvshow", "person") else path.stem
    if path.suffix == ".json":
        head = json.dumps({"name": title, "born": 1900 + rng.randrange(100)}, ensure_ascii=False)
        head, tail = head[:-1] + ', "biography": "', '"}\n'
    else:
        head = (
            '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n<movie>\n'
            f"  <title>{title}</title>\n  <genre>{rng.choice(GENRES)}</genre>\n"
            "  <plot>"
        )
        tail = "</plot>\n</movie>\n"
    budget = spec.size - len(head.encode()) - len(tail.encode())
    words: list[str] = []
    used = 0
    while used < budget:
        word = rng.choice(WORDS)
        words.append(word)
        used += len(word) + 1
    return (head + " ".join(words)[: max(budget, 0)] + tail).encode()


# -- writing ----------------------------------------------------------------


def write_file(root: Path, spec: FileSpec, seed: int) -> None:
    path = root / spec.path
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as out:
        if spec.kind == "media":
            for block in media_blocks(spec, seed):
                out.write(block)
        elif spec.kind == "thumb":
            out.write(thumb_bytes(spec, seed))
        elif spec.kind == "text":
            out.write(text_bytes(spec, seed))
        else:
            out.write(dict(config_files(seed))[spec.path])
    mtime = BASE_MTIME + content_seed(seed, spec.path) % (4 * 365 * 86400)
    os.utime(path, (mtime, mtime))


def fix_directory_mtimes(root: Path) -> None:
    """Writing files bumps directory mtimes to 'now'; pin them for reproducibility."""
    for dirpath, _dirs, _files in os.walk(root, topdown=False):
        if Path(dirpath) != root:
            os.utime(dirpath, (BASE_MTIME, BASE_MTIME))


def generate(root: Path, profile: Profile, seed: int = DEFAULT_SEED, quiet: bool = False) -> dict:
    """Write the data set under root; return a summary (also used as manifest)."""
    specs = plan(profile, seed)
    for number, spec in enumerate(specs, 1):
        write_file(root, spec, seed)
        if not quiet and (spec.kind == "media" or number % 500 == 0):
            print(f"  [{number}/{len(specs)}] {spec.path}", file=sys.stderr)
    fix_directory_mtimes(root)
    return summary(specs, profile, seed)


def directories(specs: list[FileSpec]) -> set[str]:
    return {str(parent) for s in specs for parent in Path(s.path).parents if str(parent) != "."}


def allocated_bytes(specs: list[FileSpec]) -> int:
    """Bytes the data set occupies on a 4 KiB-block filesystem (files + directories)."""
    files = sum(-(-s.size // BLOCK) * BLOCK for s in specs)
    return files + BLOCK * len(directories(specs))


def fingerprint(specs: list[FileSpec], seed: int) -> str:
    """Identifies the exact data set: generator version, seed and every path/size."""
    digest = hashlib.sha256(f"{GENERATOR_VERSION}\n{seed}\n".encode())
    for spec in specs:
        digest.update(f"{spec.path}\t{spec.kind}\t{spec.size}\n".encode())
    return digest.hexdigest()[:16]


def summary(specs: list[FileSpec], profile: Profile, seed: int) -> dict:
    by_kind = {kind: sum(s.kind == kind for s in specs) for kind in ("media", "text", "thumb")}
    return {
        "profile": profile.name,
        "seed": seed,
        "fingerprint": fingerprint(specs, seed),
        "files": len(specs),
        "directories": len(directories(specs)),
        "bytes": sum(s.size for s in specs),
        "allocated_bytes": allocated_bytes(specs),
        **{f"{kind}_files": count for kind, count in by_kind.items()},
        "media_paths": [s.path for s in specs if s.kind == "media"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="Generate the cachefs benchmark data set.")
    parser.add_argument("dest", nargs="?", type=Path, help="directory to fill")
    parser.add_argument("--small", action="store_true", help="smoke-test sized data set")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--plan", action="store_true", help="print the summary, write nothing")
    args = parser.parse_args()
    profile = SMALL if args.small else FULL
    if args.plan:
        result = summary(plan(profile, args.seed), profile, args.seed)
    elif args.dest is None:
        parser.error("dest is required unless --plan is given")
    else:
        result = generate(args.dest, profile, args.seed)
    print(json.dumps(result, ensure_ascii=False))


if __name__ == "__main__":
    main()
