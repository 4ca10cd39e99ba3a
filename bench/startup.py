"""Start-up time of a mount whose SSD tier holds many chunks.

Run as root: ``.venv/bin/python bench/startup.py [--chunks 100000] [--runs 3]``.
Fills an SSD tier directory with N chunk files (through DiskTier, so they are
real, verified chunks of a real origin file), then times, for a clean restart
(index snapshot present) and a crash restart (snapshot removed):

* ``answers_s`` — from exec to the mount answering a stat of its root;
* ``index_ready_s`` — until the tier's index is loaded (puts resume).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cachefs.config import default_config
from cachefs.data.chunks import ChunkKey, origin_namespace
from cachefs.data.tiers.disk import DiskTier
from cachefs.origin.access import FileVersion
from cachefs.stats.counters import Stats

CHUNK = 4096


def fill_tier(origin: Path, ssd: Path, count: int) -> None:
    data = origin / "many.bin"
    data.write_bytes(b"x" * CHUNK * count)
    version = FileVersion.of(data.stat())
    cfg = default_config().tiers["ssd"]
    tier = DiskTier(
        type(cfg)("ssd", ssd, 10 * count * CHUNK, "lfu", 86400.0, 0),
        origin_namespace(str(origin.resolve())),
        Stats(),
    )
    tier.open()
    tier.load_index()
    for index in range(count):
        tier.put(ChunkKey(version, CHUNK, index), b"x" * CHUNK, level=3)
    tier.close()


def time_mount(origin: Path, mnt: Path, ssd: Path, count: int) -> tuple[float, float]:
    opts = (
        f"stats.backend=embedded,tiers.ssd.path={ssd},tiers.hdd.path={ssd}.hdd,"
        f"tiers.ssd.max_size={10 * count * CHUNK}"
    )
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "cachefs", "mount", "-f", str(origin), str(mnt), "-o", opts],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        while not os.path.ismount(mnt):
            time.sleep(0.005)
        os.stat(mnt)
        answers = time.perf_counter() - start
        while True:
            stats = json.loads(os.getxattr(mnt, "user.cachefs.stats"))
            if stats["tiers"]["ssd"]["ready"]:
                break
            time.sleep(0.01)
        ready = time.perf_counter() - start
        assert stats["tiers"]["ssd"]["chunks"] == count, stats["tiers"]["ssd"]
        return answers, ready
    finally:
        subprocess.run(["fusermount3", "-u", str(mnt)], check=False)
        proc.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cachefs-startup-", dir="/var/tmp") as tmp:
        origin, mnt, ssd = Path(tmp) / "origin", Path(tmp) / "mnt", Path(tmp) / "ssd"
        origin.mkdir()
        mnt.mkdir()
        t0 = time.perf_counter()
        fill_tier(origin, ssd, args.chunks)
        fill_s = time.perf_counter() - t0
        result: dict[str, object] = {
            "bench": "startup",
            "chunks": args.chunks,
            "fill_s": round(fill_s, 1),
        }
        for case in ("clean", "crash"):
            runs = []
            for _ in range(args.runs):
                if case == "crash":
                    (ssd / "index").unlink(missing_ok=True)
                runs.append(time_mount(origin, mnt, ssd, args.chunks))
            result[f"{case}_answers_s"] = round(statistics.median(r[0] for r in runs), 3)
            result[f"{case}_index_ready_s"] = round(statistics.median(r[1] for r in runs), 3)
            result[f"{case}_index_ready_max_s"] = round(max(r[1] for r in runs), 3)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
