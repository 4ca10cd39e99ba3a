"""Build a small media-library-like origin for ``make demo``.

Usage: ``python -m cachefs.app.demo DIR``
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

MOVIES = ["Big Buck Bunny (2008)", "Sintel (2010)", "Tears of Steel (2012)", "Amélie (2001)"]
SHOWS = ["Open Movie Show", "東京物語 Stories"]
MEDIA_SIZE = 24 * 1024 * 1024


def write_media(path: Path, rng: random.Random) -> None:
    block = rng.randbytes(1024 * 1024)
    with open(path, "wb") as f:
        for i in range(MEDIA_SIZE // len(block)):
            f.write(i.to_bytes(8, "little") + block[8:])  # incompressible, yet distinct blocks


def nfo(title: str, rng: random.Random) -> str:
    plot = " ".join(
        rng.choice(["a", "quiet", "story", "of", "light", "and", "sound"]) for _ in range(200)
    )
    return f"<movie>\n  <title>{title}</title>\n  <plot>{plot}</plot>\n</movie>\n"


def build(root: Path) -> None:
    rng = random.Random(2026)
    for title in MOVIES:
        folder = root / "Movies" / title
        folder.mkdir(parents=True, exist_ok=True)
        write_media(folder / "movie.mkv", rng)
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
                meta = {"show": show, "season": season, "episode": episode, "runtime": 42}
                (folder / f"{name}.json").write_text(json.dumps(meta, indent=2))
            (folder / "thumb.jpg").write_bytes(rng.randbytes(50_000))
    (root / "config").mkdir(exist_ok=True)
    (root / "config" / "library.yaml").write_text("library:\n  name: demo\n  scan: daily\n")


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit("usage: python -m cachefs.app.demo DIR")
    root = Path(sys.argv[1])
    build(root)
    print(f"demo origin written to {root}")


if __name__ == "__main__":
    main()
