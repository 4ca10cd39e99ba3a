"""``make demo``: a sample media library mounted through cachefs, and a read that shows the cache.

Usage: ``python -m cachefs.app.demo DIR [--direct]``

In DIR: ``origin/`` (built once: movies, shows, artwork, a config file),
``mnt/`` (the mount, left mounted), ``cache/`` (the tiers and the state),
``cachefs.log``. Then one movie is read twice (demo_tour.py): cold, and again
after the kernel's page cache was dropped, so the second read is answered by
cachefs's tiers and not by the page cache.

The sample compresses where a real library does: ``.nfo`` and ``.json``
metadata are text, the video and the JPEG artwork are random bytes.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
from pathlib import Path

from cachefs.app import demo_tour
from cachefs.app.mounttable import mount_holding

MOVIES = ["Big Buck Bunny (2008)", "Sintel (2010)", "Tears of Steel (2012)", "Amélie (2001)"]
SHOWS = ["Open Movie Show", "東京物語 Stories"]
MEDIA_SIZE = 24 * 1024 * 1024
GENRES = ["Animation", "Fantasy", "Science Fiction", "Drama", "Comedy"]
# The words of the plots: text, so the .nfo files compress as real ones do.
WORDS = [
    "a",
    "quiet",
    "story",
    "of",
    "light",
    "and",
    "sound",
    "told",
    "by",
    "those",
    "who",
    "stayed",
    "behind",
]


def write_media(path: Path, rng: random.Random, size: int = MEDIA_SIZE) -> None:
    """Random bytes throughout, as compressed video is: no chunk, nor the file, compresses."""
    with open(path, "wb") as f:
        for start in range(0, size, 1024 * 1024):
            f.write(rng.randbytes(min(1024 * 1024, size - start)))


def nfo(title: str, rng: random.Random) -> str:
    """Kodi-style XML, as scrapers write it: repetitive markup around some prose."""
    plot = " ".join(rng.choice(WORDS) for _ in range(120))
    cast = "".join(
        f"  <actor>\n    <name>Actor {rng.randint(1, 500)}</name>\n"
        f"    <role>Role {i}</role>\n    <order>{i}</order>\n  </actor>\n"
        for i in range(rng.randint(3, 8))
    )
    return (
        f'<?xml version="1.0" encoding="UTF-8" standalone="yes" ?>\n<movie>\n'
        f"  <title>{title}</title>\n  <plot>{plot}</plot>\n"
        f"  <genre>{rng.choice(GENRES)}</genre>\n  <runtime>{rng.randint(20, 150)}</runtime>\n"
        f"{cast}</movie>\n"
    )


def episode_json(show: str, season: int, episode: int, rng: random.Random) -> str:
    """A media server's sidecar: fields repeated for every person and every rating."""
    meta = {
        "show": show,
        "season": season,
        "episode": episode,
        "title": " ".join(rng.choice(WORDS) for _ in range(4)).title(),
        "overview": " ".join(rng.choice(WORDS) for _ in range(60)),
        "aired": f"20{rng.randint(10, 25)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
        "runtime": 42,
        "ratings": [
            {"source": s, "value": rng.randint(50, 99), "votes": rng.randint(1, 9999)}
            for s in ("imdb", "tmdb", "tvdb")
        ],
        "guest_stars": [
            {"name": f"Actor {rng.randint(1, 500)}", "role": f"Role {i}", "order": i}
            for i in range(rng.randint(2, 6))
        ],
    }
    return json.dumps(meta, indent=2, ensure_ascii=False)


def build(root: Path, media_size: int = MEDIA_SIZE) -> None:
    rng = random.Random(2026)
    for title in MOVIES:
        folder = root / "Movies" / title
        folder.mkdir(parents=True, exist_ok=True)
        write_media(folder / "movie.mkv", rng, media_size)
        (folder / "movie.nfo").write_text(nfo(title, rng))
        (folder / "poster.jpg").write_bytes(rng.randbytes(rng.randint(20_000, 200_000)))
        (folder / "fanart.jpg").write_bytes(rng.randbytes(rng.randint(20_000, 200_000)))
    for show in SHOWS:
        for season in range(1, 4):
            folder = root / "Shows" / show / f"Season {season:02d}"
            folder.mkdir(parents=True, exist_ok=True)
            for episode in range(1, 41):
                name = f"S{season:02d}E{episode:02d}"
                (folder / f"{name}.nfo").write_text(nfo(f"{show} {name}", rng))
                (folder / f"{name}.json").write_text(episode_json(show, season, episode, rng))
            (folder / "thumb.jpg").write_bytes(rng.randbytes(50_000))
    (root / "config").mkdir(exist_ok=True)
    (root / "config" / "library.yaml").write_text("library:\n  name: demo\n  scan: daily\n")


def mount_options(demo: Path) -> list[str]:
    """The demo's tiers and state under DIR/cache; the embedded stats store (no Redis)."""
    return [
        f"tiers.ssd.path={demo / 'cache' / 'ssd'}",
        f"tiers.hdd.path={demo / 'cache' / 'hdd'}",
        "tiers.ssd.min_free=0",  # wherever DIR is, the demo caches
        "tiers.hdd.min_free=0",
        "stats.backend=embedded",
        f"log={demo / 'cachefs.log'}",
    ]


def mount(demo: Path) -> bool:
    """Mount DIR/origin at DIR/mnt in the background; False if it already was."""
    mnt = demo / "mnt"
    mnt.mkdir(parents=True, exist_ok=True)
    held = mount_holding(os.path.realpath(mnt))
    if held is not None and held.mountpoint == os.path.realpath(mnt):
        return False
    options = ",".join(mount_options(demo))
    command = [sys.executable, "-m", "cachefs", "mount", str(demo / "origin"), str(mnt)]
    subprocess.run([*command, "-o", options], check=True, timeout=120)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dir", type=Path, help="where the origin, mount and cache go")
    parser.add_argument(
        "--direct", action="store_true", help="read with O_DIRECT instead of dropping caches"
    )
    parser.add_argument("--media-size", type=int, default=MEDIA_SIZE, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    demo: Path = args.dir.absolute()
    if not (demo / "origin").is_dir():
        build(demo / "origin", args.media_size)
        print(f"demo origin written to {demo / 'origin'}")
    fresh = mount(demo)
    mnt = demo / "mnt"
    print(f"cachefs {'is mounted' if fresh else 'was already mounted'}: {demo / 'origin'} -> {mnt}")
    print(f"(log: {demo / 'cachefs.log'})")
    print()
    demo_tour.tour(mnt, direct=args.direct)
    return 0


if __name__ == "__main__":
    sys.exit(main())
