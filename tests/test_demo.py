"""``make demo``'s steps (cachefs/app/demo.py) in a temporary directory: the sample
library, the mount, and the tour that reads a movie cold and again.

The tour runs with ``--direct`` (O_DIRECT reads, what it does without root):
dropping the kernel's caches, as ``make demo`` does as root, would slow every
other process on the machine."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import zstandard

from cachefs.app import demo

from .conftest import is_mounted, unmount

MEDIA_SIZE = 4 * 1024 * 1024
DEMO = [sys.executable, "-m", "cachefs.app.demo"]


def ratio(path: Path) -> float:
    data = path.read_bytes()
    return len(data) / len(zstandard.ZstdCompressor(level=3).compress(data))


def test_the_sample_compresses_where_a_real_library_does(tmp_path: Path) -> None:
    demo.build(tmp_path, media_size=MEDIA_SIZE)
    movie = tmp_path / "Movies" / "Sintel (2010)"
    assert (movie / "movie.mkv").stat().st_size == MEDIA_SIZE
    season = tmp_path / "Shows" / "Open Movie Show" / "Season 01"
    for text in (movie / "movie.nfo", season / "S01E01.nfo", season / "S01E01.json"):
        assert ratio(text) > 1.5, text  # metadata is text
    for binary in (movie / "movie.mkv", movie / "poster.jpg", season / "thumb.jpg"):
        assert ratio(binary) < 1.01, binary  # video and JPEGs are not


def run_demo(where: Path) -> str:
    result = subprocess.run(
        [*DEMO, str(where), "--direct", "--media-size", str(MEDIA_SIZE)],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@pytest.fixture
def demo_dir(tmp_path: Path):
    where = tmp_path / "demo"
    try:
        yield where
    finally:
        unmount(where / "mnt", None)


def test_the_demo_mounts_and_shows_a_cachefs_hit(demo_dir: Path) -> None:
    out = run_demo(demo_dir)
    assert is_mounted(demo_dir / "mnt")
    assert f"cachefs is mounted: {demo_dir / 'origin'} -> {demo_dir / 'mnt'}" in out
    cold = next(line for line in out.splitlines() if "1. cold" in line)
    again = next(line for line in out.splitlines() if "2. again" in line)
    assert "4MiB in " in cold and "from the origin 4MiB" in cold
    assert "from the origin 0B" in again and "ram 4MiB" in again
    assert "came from its ram tier, not the origin" in out
    assert "Chunk lookups" in out and "Tiers" in out  # the short cachefs stats
    assert "zstd shrank their chunks" in out
    assert (demo_dir / "cachefs.log").exists()

    # again on the mounted demo: the movie is evicted first, so the first read is cold again
    out = run_demo(demo_dir)
    assert "was already mounted" in out
    cold = next(line for line in out.splitlines() if "1. cold" in line)
    assert "from the origin 4MiB" in cold
