"""Prediction benchmarks: the next episode, and a photo album, on the slow origin.

Run as root: ``.venv/bin/python bench/prediction.py [--reps 3] [--out bench-results]``
(``make bench`` runs it after run.py).

The writable slow disk model (write_origin.py: 8 ms per non-sequential
request, 80 MB/s, one request at a time) gets a season of episodes and an
album of photos, written once and untimed. Then, for each system, from an
empty cache and cold kernel caches:

* **next episode**: a player watches the season in order: it opens an
  episode, reads the first 4 MiB (the time from open to there is the
  episode's *start*), then the rest sequentially in 1 MiB reads, closes it,
  and pauses ``PAUSE_S`` before the next, as a player between episodes. The
  figure is the start of episodes 2..N: p50 and p99; and the first episode's
  (cold for everybody: a prefetch of the second must not slow it);
* **album in order**: a viewer opens each photo of the album in order, reads
  it whole (the time from open to the last byte is its *first view*), and
  pauses ``PHOTO_PAUSE_S``; **album shuffled**: the same in a random order,
  the control (prediction must not help, nor cost much).

Systems: ``origin`` (the slow disk read directly), ``cachefs-off`` (cachefs
with ``prediction.max_prefetch_size=0``), ``cachefs``, ``rclone``
(``--vfs-cache-mode full``), and when asked for, ``cachefs-base`` (cachefs from
the checkout given with ``--base-tree``: two versions A/B in one run).
cachefs's prefetch precision and coverage come from its stats. Output:
``<out>/prediction-<timestamp>.json`` (with each item's time) and a Markdown
table on stdout (the report for docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import slow_origin
import write_origin
from systems import Cachefs, CachefsBase, MountError, Rclone, System, force_unmount

MiB = 1024 * 1024
EPISODES = 6
EPISODE_BYTES = 32 * MiB
START_BYTES = 4 * MiB
PAUSE_S = 1.0
PHOTOS = 40
PHOTO_BYTES = 300 * 1024
PHOTO_PAUSE_S = 0.1
SEED = 20261202


class CachefsOff(Cachefs):
    name = "cachefs-off"
    mode_options = "prediction.max_prefetch_size=0"


SYSTEMS: dict[str, type[System]] = {
    "origin": System,
    "cachefs-off": CachefsOff,
    "cachefs": Cachefs,
    "cachefs-base": CachefsBase,
    "rclone": Rclone,
}


def log(message: str) -> None:
    print(f"prediction: {message}", file=sys.stderr, flush=True)


def write_library(origin: Path) -> tuple[list[str], list[str]]:
    """The season and the album, written once (deterministic bytes)."""
    rng = random.Random(SEED)
    season_dir = origin / "Shows" / "Bench Show" / "Season 01"
    album_dir = origin / "Photos" / "Trip"
    season_dir.mkdir(parents=True, exist_ok=True)
    album_dir.mkdir(parents=True, exist_ok=True)
    episodes = []
    for n in range(1, EPISODES + 1):
        name = f"Bench Show - S01E{n:02d}.mkv"
        (season_dir / name).write_bytes(rng.randbytes(EPISODE_BYTES))
        episodes.append(str((season_dir / name).relative_to(origin)))
    photos = []
    for n in range(1, PHOTOS + 1):
        name = f"IMG_{n:04d}.jpg"
        (album_dir / name).write_bytes(rng.randbytes(PHOTO_BYTES))
        photos.append(str((album_dir / name).relative_to(origin)))
    os.sync()
    return episodes, photos


def play_season(root: Path, episodes: list[str]) -> list[float]:
    """Seconds from open to the first START_BYTES of each episode, in order."""
    os.listdir(root / Path(episodes[0]).parent)  # the player lists the season first
    starts = []
    for rel in episodes:
        t0 = time.perf_counter()
        with open(root / rel, "rb", buffering=0) as f:
            got = 0
            while got < START_BYTES:
                chunk = f.read(MiB)
                if not chunk:
                    break
                got += len(chunk)
            starts.append(time.perf_counter() - t0)
            while f.read(MiB):
                pass
        time.sleep(PAUSE_S)
    return starts


def view_album(root: Path, photos: list[str]) -> list[float]:
    """Seconds from open to the last byte of each photo, in the order given."""
    os.listdir(root / Path(photos[0]).parent)
    views = []
    for rel in photos:
        t0 = time.perf_counter()
        with open(root / rel, "rb", buffering=0) as f:
            while f.read(MiB):
                pass
        views.append(time.perf_counter() - t0)
        time.sleep(PHOTO_PAUSE_S)
    return views


def summary_ms(seconds: list[float]) -> dict[str, float]:
    ms = sorted(s * 1000 for s in seconds)
    p99 = ms[min(len(ms) - 1, round(0.99 * (len(ms) - 1)))]
    return {
        "p50_ms": round(statistics.median(ms), 2),
        "p99_ms": round(p99, 2),
        "n": len(ms),
        "ms": [round(m, 2) for m in ms],
    }


def prediction_stats(system: System) -> dict[str, Any]:
    if not isinstance(system, Cachefs):
        return {}
    stats = system.stats()
    keys = ("predictions", "prefetch_bytes", "prefetch_used_bytes", "prefetch_precision",
            "prefetch_covered", "prefetch_coverage")  # fmt: skip
    return {k: stats.get(k) for k in keys}


WORKLOADS = ("next_episode", "album_in_order", "album_shuffled")


def run_once(
    system: System, episodes: list[str], photos: list[str], workloads: tuple[str, ...] = WORKLOADS
) -> dict[str, Any]:
    result: dict[str, Any] = {}
    shuffled = photos[:]
    random.Random(SEED).shuffle(shuffled)
    for workload, fn, items in (
        ("next_episode", play_season, episodes),
        ("album_in_order", view_album, photos),
        ("album_shuffled", view_album, shuffled),
    ):
        if workload not in workloads:
            continue
        system.reset()
        slow_origin.drop_caches()
        times = fn(system.root, items)
        measured = times[1:]  # the first one is cold for everybody
        first = {"first_ms": round(times[0] * 1000, 2)}  # a prefetch must not slow it
        result[workload] = summary_ms(measured) | first | prediction_stats(system)
        system.stop()
    return result


def report(results: list[dict[str, Any]]) -> str:
    systems = [s for s in SYSTEMS if any(s in r for r in results)]
    lines = [
        "| workload | " + " | ".join(systems) + " |",
        "| --- | " + " | ".join("---" for _ in systems) + " |",
    ]
    for workload, what in (
        ("next_episode", "next episode: open → first 4 MiB, episodes 2-6"),
        ("album_in_order", "album in order: open → last byte, photos 2-40"),
        ("album_shuffled", "album shuffled (control): open → last byte"),
    ):
        if not any(workload in r.get(s, {}) for r in results for s in systems):
            continue  # not run (--workloads)
        for stat in ("p50_ms", "p99_ms"):
            cells = []
            for system in systems:
                runs = [
                    r[system][workload][stat]
                    for r in results
                    if system in r and workload in r[system]
                ]
                cells.append(f"{statistics.median(runs):.1f}" if runs else "-")
            lines.append(f"| {what}, {stat[:3]} ms | " + " | ".join(cells) + " |")
        if workload == "next_episode":
            cells = []
            for system in systems:
                runs = [
                    r[system][workload]["first_ms"]
                    for r in results
                    if system in r and workload in r[system]
                ]
                cells.append(f"{statistics.median(runs):.1f}" if runs else "-")
            lines.append(
                "| first episode (cold): open → first 4 MiB, ms | " + " | ".join(cells) + " |"
            )
        ours = [r["cachefs"][workload] for r in results if workload in r.get("cachefs", {})]
        precision = [o.get("prefetch_precision") for o in ours]
        coverage = [o.get("prefetch_coverage") for o in ours]
        if ours and None not in precision and None not in coverage:
            shown = f"{statistics.median(precision):.2f} / {statistics.median(coverage):.2f}"
            cells = [shown if s == "cachefs" else "" for s in systems]
            lines.append(f"| {what}: prefetch precision / coverage | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--systems", default=",".join(s for s in SYSTEMS if s != "cachefs-base"))
    parser.add_argument(
        "--base-tree", type=Path, help="checkout of cachefs that system cachefs-base runs"
    )
    parser.add_argument("--out", type=Path, default=Path("bench-results"))
    parser.add_argument(
        "--workloads",
        default=",".join(WORKLOADS),
        help="which of " + ", ".join(WORKLOADS) + " to run (comma-separated; all by default)",
    )
    args = parser.parse_args(argv)
    workloads = tuple(args.workloads.split(","))
    if unknown := set(workloads) - set(WORKLOADS):
        parser.error(f"unknown workloads: {', '.join(sorted(unknown))}")
    if os.geteuid() != 0:
        raise SystemExit("run as root (loop devices, mounts, drop_caches)")
    if args.base_tree is not None:
        CachefsBase.tree = args.base_tree.resolve()
    cfg = write_origin.config()
    workdir = Path(tempfile.mkdtemp(prefix="prediction-", dir=cfg.bench_dir.parent))
    logs = args.out / "prediction-logs"
    logs.mkdir(parents=True, exist_ok=True)
    systems: list[System] = []
    results: list[dict[str, Any]] = []
    started = time.time()
    try:
        log("bringing the writable slow origin up, writing the season and the album")
        origin = write_origin.up(cfg)
        episodes, photos = write_library(origin)
        systems = [SYSTEMS[name](origin, workdir, logs) for name in args.systems.split(",")]
        for rep in range(args.reps):
            rep_result: dict[str, Any] = {}
            for system in systems:
                try:
                    rep_result[system.name] = run_once(system, episodes, photos, workloads)
                except MountError as exc:
                    log(f"{system.name}: {exc}")
                    continue
                for workload, shown in rep_result[system.name].items():
                    log(f"rep {rep} {system.name:12} {workload} p50 {shown['p50_ms']} ms")
            results.append(rep_result)
    finally:
        for system in systems:
            system.stop()
        for path, _ in slow_origin.mounts_under(workdir):
            force_unmount(path)
        write_origin.down(cfg)
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.fromtimestamp(started, dt.UTC).strftime("%Y%m%d-%H%M%S")
    out = args.out / f"prediction-{stamp}.json"
    meta = {
        "date": dt.datetime.fromtimestamp(started, dt.UTC).isoformat(timespec="seconds"),
        "reps": args.reps,
        "origin": {"latency_ms": cfg.latency_ms, "mbps": cfg.mbps},
        "episodes": [EPISODES, EPISODE_BYTES],
        "photos": [PHOTOS, PHOTO_BYTES],
        "workloads": workloads,
        "loadavg": os.getloadavg(),
    }
    out.write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    print(report(results))
    log(f"results in {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
