"""Warm metadata through the mount: what the kernel answers itself, cachefs vs a base tree.

Run as root (mounts)::

    .venv/bin/python bench/known_paths.py [--base-tree /tmp/s5-base] [--reps 5]
                                          [--pause 1.5] [--out bench-results/]

A library of the full profile's small files (2,000 texts, 500 thumbnails, the
config files; its four media files 1 MiB each) is generated on a local disk
under ``$BENCH_DIR/known-paths/library`` (inotify works there: ``watch = auto``
picks it). For each repetition and each system (``origin``, ``cachefs``, and
``cachefs-base`` from ``--base-tree``), in turn:

1. mount afresh, scan the library twice (bench/workloads.library_scan: walk,
   lstat all, read the head of every small file), so every cache is warm and
   the atime the kernel drops after a read it had to ask for is asked again;
2. wait ``--pause`` seconds, longer than the short kernel timeouts (1 s), as a
   media server's next scan would;
3. ``known_paths_after_scan``: lstat every path of the library, known from
   the walk (what a client re-checking its database does). A scan's readdir
   and every read the daemon answered make the kernel drop the atime it holds
   (fuse_invalidate_atime), so each of these stats asks the daemon once;
4. wait again, then ``known_paths``: the same lstats, now of what the kernel
   holds after a stat of everything (a client re-checking known paths
   periodically, with no scan between);
5. wait again, then ``e_scan_warm``: the library scan once more.

One JSON line per measurement in ``<out>/known-paths-<timestamp>.jsonl``, then
the medians per system and their ratios to the origin's (its page cache).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import dataset
from bench import workloads as w
from bench.systems import Cachefs, CachefsBase, System

PROFILE = dataset.Profile(
    "known-paths", media_files=4, media_size=dataset.MiB, text_files=2000, thumbnails=500
)
SCAN_LIMIT_S = 300.0


def library(bench_dir: Path) -> Path:
    root = bench_dir / "known-paths" / "library"
    done = root.parent / "generated.json"
    if not done.exists():
        root.mkdir(parents=True, exist_ok=True)
        summary = dataset.generate(root, PROFILE, quiet=True)
        done.write_text(json.dumps(summary))
    return root


def all_paths(root: Path) -> list[str]:
    return sorted(
        os.path.relpath(os.path.join(d, n), root)
        for d, dirs, names in os.walk(root)
        for n in dirs + names
    )


def lstat_all(root: Path, paths: list[str]) -> dict[str, object]:
    start = time.perf_counter()
    for rel in paths:
        os.lstat(root / rel)
    return {"seconds": round(time.perf_counter() - start, 4), "paths": len(paths)}


def one_rep(system: System, paths: list[str], pause: float) -> dict[str, dict[str, object]]:
    system.reset()
    try:
        for _ in range(2):
            w.library_scan(system.root, SCAN_LIMIT_S)
        time.sleep(pause)
        after_scan = lstat_all(system.root, paths)
        time.sleep(pause)
        known = lstat_all(system.root, paths)
        time.sleep(pause)
        scan = w.library_scan(system.root, SCAN_LIMIT_S)
        return {"known_paths_after_scan": after_scan, "known_paths": known, "e_scan_warm": scan}
    finally:
        system.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base-tree", type=Path, help="checkout run as cachefs-base")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--pause", type=float, default=1.5)
    parser.add_argument("--out", type=Path, default=Path("bench-results"))
    args = parser.parse_args(argv)
    bench_dir = Path(os.environ.get("BENCH_DIR", "/tmp/cachefs-bench"))
    origin = library(bench_dir)
    paths = all_paths(origin)
    workdir = Path(tempfile.mkdtemp(prefix="known-paths-", dir=bench_dir))
    logs = args.out / "logs"
    systems: list[System] = [System(origin, workdir, logs), Cachefs(origin, workdir, logs)]
    if args.base_tree is not None:
        CachefsBase.tree = args.base_tree.resolve()
        systems.append(CachefsBase(origin, workdir, logs))
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    out_file = args.out / f"known-paths-{stamp}.jsonl"
    seconds: dict[tuple[str, str], list[float]] = {}
    with open(out_file, "w") as out:
        for rep in range(args.reps):
            for system in systems:  # in turn, so the machine's noise spreads over all
                for workload, metrics in one_rep(system, paths, args.pause).items():
                    line = {"system": system.name, "workload": workload, "rep": rep, **metrics}
                    out.write(json.dumps(line) + "\n")
                    out.flush()
                    seconds.setdefault((system.name, workload), []).append(
                        float(metrics["seconds"])  # type: ignore[arg-type]
                    )
    print(f"{len(paths)} paths, {args.reps} reps, medians (s) and x the origin; {out_file}")
    for workload in ("known_paths_after_scan", "known_paths", "e_scan_warm"):
        base = statistics.median(seconds[("origin", workload)])
        for system in systems:
            median = statistics.median(seconds[(system.name, workload)])
            print(f"  {workload:22} {system.name:13} {median:8.4f}  {median / base:6.2f}x")


if __name__ == "__main__":
    main()
