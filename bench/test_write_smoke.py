"""Smoke test of the write workloads of bench/run.py, in a throw-away BENCH_DIR.

Both writable origins (the slow disk read-write, a tmpfs), 4 MiB files, one
repetition, origin and cachefs; then bench/report.py on what it wrote. Needs
root and /dev/fuse (skipped otherwise)::

    sudo .venv/bin/pytest bench/test_write_smoke.py -v
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

from .test_smoke import HERE, attached, bench_env, slow_origin

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not os.path.exists("/dev/fuse"),
    reason="needs root, /dev/fuse and loop devices",
)


@pytest.fixture
def bench_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="cachefs-bench-smoke-"))
    try:
        yield path
    finally:
        slow_origin(path, "down")
        left = attached(path)
        if not left:
            shutil.rmtree(path, ignore_errors=True)
        assert not left, f"left behind: {left}"


def test_run_write_workloads(bench_dir: Path, tmp_path: Path) -> None:
    """The write workloads on both writable origins, 4 MiB files, 1 repetition:
    every file reads back as written, and the report has its write tables."""
    writes_dir = bench_dir.with_name(bench_dir.name + "-writes")
    try:
        run = subprocess.run(
            [
                sys.executable, str(HERE / "run.py"), "--quick", "--workloads", "writes",
                "--write-systems", "origin,cachefs", "--write-mib", "4", "--out", str(tmp_path),
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
        assert end["type"] == "end" and meta["write_mib"] == 4
        assert set(meta["write_origins"]) == {"slow", "local"}
        by_key = {(r["system"], r["workload"]): r["metrics"] for r in measured}
        for origin in ("slow", "local"):
            for system in ("origin", "cachefs"):
                for workload in ("ws_seq_write", "wr_rand_4k_write", "wr3_rand_3000_write"):
                    metrics = by_key[system, f"{workload}_{origin}"]
                    assert "error" not in metrics, metrics
                    assert metrics["verified"] is True and metrics["complete"] is True
                    assert metrics["bytes"] >= 4 * 1024 * 1024 - 3000
            assert by_key["cachefs", f"w_rss_{origin}"]["peak_rss_mib"] > 0
        # The slow origin's disk took the bytes by the time fsync returned.
        assert by_key["origin", "ws_seq_write_slow"]["origin_bytes_written"] >= 4 * 1024 * 1024
        assert not attached(writes_dir), attached(writes_dir)

        doc = tmp_path / "writes.md"
        report = subprocess.run(
            [sys.executable, str(HERE / "report.py"), str(results), "--doc", str(doc),
             "--no-chart"],
            capture_output=True,
            text=True,
            timeout=60,
        )  # fmt: skip
        assert report.returncode == 0, report.stderr
        text = doc.read_text()
        assert "#### Writes" in text and "4 KiB random writes" in text
        assert "local origin, 4 KiB random ≥ 10,000 IOPS" in text
    finally:
        subprocess.run(
            [sys.executable, str(HERE / "write_origin.py"), "down"],
            env=bench_env(bench_dir),
            capture_output=True,
            timeout=120,
        )
        if not attached(writes_dir):
            shutil.rmtree(writes_dir, ignore_errors=True)
