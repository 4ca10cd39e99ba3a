"""Sequential read of a cached 256 MiB file through cachefs vs the origin.

Run as root (drop_caches): ``make bench-seq`` or
``.venv/bin/python bench/seq_read.py [--size-mib 256] [--runs 3]``.
Prints one JSON line; figures are medians of --runs, ratios against the
origin file read from the page cache in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BLOCK = 1024 * 1024


def drop_caches() -> None:
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def read_mbps(path: Path) -> float:
    fd = os.open(path, os.O_RDONLY)
    total = 0
    start = time.perf_counter()
    try:
        while chunk := os.read(fd, BLOCK):
            total += len(chunk)
    finally:
        os.close(fd)
    return total / (time.perf_counter() - start) / 1e6


def make_file(path: Path, size: int) -> None:
    block = os.urandom(BLOCK)
    with open(path, "wb") as f:
        for i in range(size // BLOCK):
            f.write(i.to_bytes(8, "little") + block[8:])


def stats(mnt: Path) -> dict:
    return json.loads(os.getxattr(mnt, "user.cachefs.stats"))


def mount(origin: Path, mnt: Path, log: Path) -> subprocess.Popen[bytes]:
    cmd = [
        sys.executable,
        "-m",
        "cachefs",
        "mount",
        "-f",
        str(origin),
        str(mnt),
        "-o",
        f"tiers.ram.max_size=512MiB,stats.backend=embedded,"
        f"tiers.ssd.path={mnt}.ssd,tiers.hdd.path={mnt}.hdd",
    ]
    proc = subprocess.Popen(cmd, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 20
    while not os.path.ismount(mnt):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"mount failed: {log.read_text()}")
        time.sleep(0.05)
    return proc


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cachefs-seq-") as tmp:
        origin, mnt = Path(tmp) / "origin", Path(tmp) / "mnt"
        origin.mkdir()
        mnt.mkdir()
        make_file(origin / "movie.mkv", args.size_mib * BLOCK)
        proc = mount(origin, mnt, Path(tmp) / "cachefs.log")
        try:
            result = measure(origin / "movie.mkv", mnt / "movie.mkv", mnt, args.runs)
        finally:
            subprocess.run(["fusermount3", "-u", str(mnt)], check=False)
            proc.wait(timeout=30)
    print(json.dumps(result))


def measure(origin_file: Path, mnt_file: Path, mnt: Path, runs: int) -> dict:
    read_mbps(origin_file)  # into the page cache
    read_mbps(mnt_file)  # cold: fills the RAM tier (and the kernel page cache)
    before = stats(mnt)
    origin_hot, page_cache, ram_tier = [], [], []
    for _ in range(runs):
        origin_hot.append(read_mbps(origin_file))
        page_cache.append(read_mbps(mnt_file))  # keep_cache: the kernel serves it
    for _ in range(runs):
        drop_caches()
        ram_tier.append(read_mbps(mnt_file))  # every read goes through FUSE to the RAM tier
    after = stats(mnt)
    reads = after["fuse_reads"] - before["fuse_reads"]
    origin_mbps = statistics.median(origin_hot)
    return {
        "bench": "seq_read_cached",
        "size_mib": origin_file.stat().st_size // BLOCK,
        "runs": runs,
        "origin_page_cache_mbps": round(origin_mbps, 1),
        "cachefs_page_cache_mbps": round(statistics.median(page_cache), 1),
        "cachefs_ram_tier_mbps": round(statistics.median(ram_tier), 1),
        "ratio_page_cache": round(statistics.median(page_cache) / origin_mbps, 3),
        "ratio_ram_tier": round(statistics.median(ram_tier) / origin_mbps, 3),
        "ram_tier_min_max_mbps": [round(min(ram_tier), 1), round(max(ram_tier), 1)],
        "fuse_read_requests": reads,
        "avg_fuse_read_kib": round(
            (after["fuse_read_bytes"] - before["fuse_read_bytes"]) / max(reads, 1) / 1024, 1
        ),
        "origin_bytes_read_during_warm_runs": after["origin_bytes_read"]
        - before["origin_bytes_read"],
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, kernel {platform.release()}",
    }


if __name__ == "__main__":
    main()
