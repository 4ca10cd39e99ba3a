"""Warm re-read from a disk tier after a remount vs reading the origin directly.

Run as root: ``.venv/bin/python bench/tier_read.py [--size-mib 256] [--runs 3] [--ext bin]``.
The file's extension picks its content type and so its tier: ``bin`` →
user_data → SSD tier, ``mkv`` → media → HDD tier. Both directories live on
this machine's disk, so the ratio is "cachefs's tier path vs a plain read of
the same kind of disk", with the kernel page cache dropped before every run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from seq_read import BLOCK, drop_caches, make_file, mount, read_mbps, stats


def unmount(mnt: Path, proc) -> None:
    os.system(f"fusermount3 -u {mnt}")
    proc.wait(timeout=60)


def wait_on_disk(mnt: Path, name: str, tier: str) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        residency = json.loads(os.getxattr(mnt / name, "user.cachefs.residency"))
        if residency[tier] == residency["chunks"]:
            return
        time.sleep(0.1)
    raise SystemExit(f"chunks did not reach the {tier} tier")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--ext", default="bin")
    parser.add_argument("--origin", type=Path, help="an existing origin (e.g. the slow one)")
    parser.add_argument("--file", help="with --origin: the file to read, relative to it")
    args = parser.parse_args()
    name = args.file or f"file.{args.ext}"
    tier = "hdd" if name.endswith(".mkv") else "ssd"
    with tempfile.TemporaryDirectory(prefix="cachefs-tier-", dir="/var/tmp") as tmp:
        mnt, log = Path(tmp) / "mnt", Path(tmp) / "log"
        mnt.mkdir()
        origin = args.origin or Path(tmp) / "origin"
        if args.origin is None:
            origin.mkdir()
            make_file(origin / name, args.size_mib * BLOCK)
        size_mib = (origin / name).stat().st_size // BLOCK
        proc = mount(origin, mnt, log)
        try:
            read_mbps(mnt / name)  # cold: through the origin into the tiers
            wait_on_disk(mnt, name, tier)
        finally:
            unmount(mnt, proc)
        origin_runs, tier_runs, origin_reads = [], [], []
        for _ in range(args.runs):
            proc = mount(origin, mnt, log)  # a fresh RAM tier: reads come from the disk tier
            try:
                drop_caches()
                origin_runs.append(read_mbps(origin / name))
                drop_caches()
                tier_runs.append(read_mbps(mnt / name))
                origin_reads.append(stats(mnt)["origin_bytes_read"])
            finally:
                unmount(mnt, proc)
    o, t = statistics.median(origin_runs), statistics.median(tier_runs)
    print(
        json.dumps(
            {
                "bench": f"warm_reread_{tier}_tier_after_remount",
                "size_mib": size_mib,
                "runs": args.runs,
                "origin": str(args.origin or "a local directory on this machine's disk"),
                "origin_direct_mbps": round(o, 1),
                "cachefs_tier_mbps": round(t, 1),
                "ratio": round(t / o, 3),
                "origin_min_max": [round(min(origin_runs), 1), round(max(origin_runs), 1)],
                "tier_min_max": [round(min(tier_runs), 1), round(max(tier_runs), 1)],
                "origin_bytes_read_by_warm_runs": sum(origin_reads),
                "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
                f"kernel {platform.release()}",
            }
        )
    )


if __name__ == "__main__":
    main()
