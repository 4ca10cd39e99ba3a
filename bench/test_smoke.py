"""Smoke tests of the benchmark harness, each in a throw-away BENCH_DIR.

* the slow origin: up --small, check, down;
* bench/run.py: one workload, one repetition, against cachefs only (no rclone
  needed), and bench/report.py on what it wrote.

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


def bench_env(bench_dir: Path) -> dict[str, str]:
    return {
        **os.environ,
        "BENCH_DIR": str(bench_dir),
        "SLOW_ORIGIN_LATENCY_MS": str(LATENCY_MS),
        "SLOW_ORIGIN_MBPS": str(MBPS),
    }


def slow_origin(bench_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(HERE / "slow_origin.py"), *args],
        env=bench_env(bench_dir),
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


def test_run_one_workload_against_cachefs(bench_dir: Path, tmp_path: Path) -> None:
    """(f') with 20 files, 1 repetition: valid JSON lines, then a report of them."""
    run = subprocess.run(
        [
            sys.executable, str(HERE / "run.py"), "--small", "--systems", "cachefs",
            "--workloads", "f2", "--reps", "1", "--small-files", "20", "--out", str(tmp_path),
        ],
        env=bench_env(bench_dir),
        capture_output=True,
        text=True,
        timeout=180,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    results = Path(run.stdout.strip().splitlines()[-1])
    records = [json.loads(line) for line in results.read_text().splitlines()]
    meta, *measured, end = records
    assert meta["type"] == "meta" and end["type"] == "end"
    assert meta["origin_check"]["profile"] == "small"
    assert {"cpu", "cores", "ram_bytes", "kernel"} <= meta["machine"].keys()
    assert {"python", "cachefs", "pyfuse3"} <= meta["versions"].keys()

    by_workload = {r["workload"]: r for r in measured}
    assert set(by_workload) == {"f2_small_heads", "rss"}, measured
    heads = by_workload["f2_small_heads"]
    assert {"system", "workload", "rep", "metrics"} <= heads.keys()
    assert (heads["system"], heads["rep"]) == ("cachefs", 0)
    metrics = heads["metrics"]
    assert "error" not in metrics, metrics
    assert metrics["files"] == 20 and metrics["complete"] is True
    assert 0 < metrics["p50_ms"] <= metrics["p99_ms"]
    # The daemon's CPU time over the workload, and per 1,000 files (no figure asserted).
    assert {"daemon_cpu_s", "cpu_s_per_1000_files"} <= metrics.keys(), metrics
    assert by_workload["rss"]["metrics"]["peak_rss_mib"] > 0

    # run.py tears its own mounts and the slow origin down (the fixture checks again).
    assert not attached(bench_dir), attached(bench_dir)

    doc = tmp_path / "report.md"
    report = subprocess.run(
        [sys.executable, str(HERE / "report.py"), str(results), "--doc", str(doc), "--no-chart"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert report.returncode == 0, report.stderr
    text = doc.read_text()
    assert "<!-- bench:start -->" in text and "<!-- bench:end -->" in text
    assert "p50 ≤ 0.3 ms" in text
