"""Smoke test of the slow origin: up --small, check, down, in a throw-away BENCH_DIR.

Needs root and /dev/fuse (skipped otherwise).  Run with::

    sudo .venv/bin/pytest bench/test_smoke.py -v
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
LATENCY_MS = 8.0
MBPS = 80.0

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not os.path.exists("/dev/fuse"),
    reason="needs root, /dev/fuse and loop devices",
)


def slow_origin(bench_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "BENCH_DIR": str(bench_dir),
        "SLOW_ORIGIN_LATENCY_MS": str(LATENCY_MS),
        "SLOW_ORIGIN_MBPS": str(MBPS),
    }
    return subprocess.run(
        [sys.executable, str(HERE / "slow_origin.py"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )


def attached(bench_dir: Path) -> list[str]:
    """Mounts and loop devices that still reference bench_dir."""
    with open("/proc/self/mountinfo") as info:
        leftovers = [line.split()[4] for line in info if str(bench_dir) in line.split()[4]]
    losetup = subprocess.run(["losetup", "-a"], capture_output=True, text=True).stdout
    return leftovers + [line for line in losetup.splitlines() if str(bench_dir) in line]


@pytest.fixture
def bench_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="cachefs-bench-smoke-"))
    try:
        yield path
    finally:
        down = slow_origin(path, "down")
        left = attached(path)
        # Never rmtree through a mount point that is somehow still there.
        if not left:
            shutil.rmtree(path, ignore_errors=True)
        assert not left, f"left behind: {left}; down said: {down.stderr}"


def test_slow_origin_small(bench_dir: Path) -> None:
    up = slow_origin(bench_dir, "up", "--small")
    assert up.returncode == 0, up.stderr
    origin = Path(up.stdout.strip())
    assert origin == bench_dir / "origin"
    assert slow_origin(bench_dir, "path").stdout.strip() == str(origin)
    assert (origin / "Movies" / "Amélie (2001)" / "movie.mkv").stat().st_size == 16 * 1024 * 1024

    again = slow_origin(bench_dir, "up", "--small")  # idempotent
    assert again.returncode == 0, again.stderr

    result = slow_origin(bench_dir, "check", "--samples", "30")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1
    report = json.loads(lines[0])

    assert report["drop_caches"] is True
    half = LATENCY_MS / 2
    assert report["rand4k_direct_median_ms"] >= half, report
    assert report["rand4k_after_drop_caches_median_ms"] >= half, report
    assert report["rand4k_after_second_drop_median_ms"] >= half, report
    assert report["rand4k_page_cache_median_ms"] < 1, report  # the cache still works
    # If anything cached disk.img, the read would run at memory speed.
    assert 0 < report["seq_mb_s"] < 1.5 * MBPS, report
    assert report["parallel_serialised"] is True, report


def test_down_is_idempotent(bench_dir: Path) -> None:
    assert slow_origin(bench_dir, "down").returncode == 0
    assert slow_origin(bench_dir, "down").returncode == 0
