"""Load of a metadata store of N entries into a fresh metadata cache (what a restart
with a scanned library's store pays before the mount answers).

    .venv/bin/python bench/store_load.py [--entries 1000000] [--reps 3] [--tree DIR]
    sudo .venv/bin/python bench/store_load.py --mount [--entries 1000000] [--tree DIR]

The store is generated once under --dir (15 files per directory, plain stat
fields) and reused; --tree runs another checkout's cachefs on the same store,
for a before/after in the same run. Prints the seconds of each repetition, their
median, and the RSS the first load added per entry.

With --mount it times a real mount instead (root: FUSE) over an empty origin
with that store in its state directory, each tree in turn, --reps times: until
the mount answers a ``stat`` of its root, and until its log says the store is
in ("entries restored").
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from cachefs.meta.cache import StatInfo

PER_DIR = 15


def stat_of(i: int) -> StatInfo:
    """The i-th file's stat: a regular file of a few KiB."""
    size, ns = 4000 + i % 5000, 10**18 + i
    return StatInfo(0o100644, 1000 + i, 2049, 1, 0, 0, 0, size, 4096, 8, 10**18, ns, ns)


def build(directory: Path, entries: int, origin: str = "/srv/bench") -> None:
    from cachefs.meta.store import MetadataStore, pack

    store = MetadataStore(directory, origin)
    store.open()
    db = store._db
    assert db is not None
    if db.execute("SELECT count(*) FROM entry").fetchone()[0] == entries:
        return
    with db:
        db.execute("DELETE FROM entry")
        db.execute("DELETE FROM listed")
        db.executemany(
            "INSERT INTO entry VALUES (?, ?, ?)",
            (
                (
                    b"lib/%06d" % (i // PER_DIR),
                    b"file%07d.nfo" % i,
                    pack(stat_of(i)),
                )
                for i in range(entries)
            ),
        )
        dirs = (entries + PER_DIR - 1) // PER_DIR
        db.executemany("INSERT INTO listed VALUES (?)", ((b"lib/%06d" % d,) for d in range(dirs)))
    store.close()


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def measure(directory: Path, reps: int) -> dict[str, Any]:
    """Seconds of each load, and the bytes per entry the first load added to the RSS
    (what the cache of a restored library holds, per entry)."""
    from cachefs.meta.cache import MetadataCache
    from cachefs.meta.store import MetadataStore

    store = MetadataStore(directory, "/srv/bench")
    store.open()
    times = []
    per_entry = 0.0
    for rep in range(reps):
        cache = None  # the previous load's cache goes before the next one is built
        before = rss_bytes()
        cache = MetadataCache(1.0, max_entries=1 << 30)
        start = time.perf_counter()
        count = store.load_into(cache)
        times.append(round(time.perf_counter() - start, 3))
        if rep == 0:
            per_entry = (rss_bytes() - before) / max(1, count)
    store.close()
    return {"seconds": times, "rss_bytes_per_entry": round(per_entry)}


def time_mount(tree: Path, work: Path, store: Path) -> tuple[float, float]:
    """(seconds until the mount answers, until its store is in) of one mount of *tree*
    over work/origin with a copy of *store* as its metadata store."""
    state = work / "state"
    shutil.rmtree(state, ignore_errors=True)
    state.mkdir(mode=0o700)
    shutil.copy(store, state / "metadata.sqlite")
    mnt = work / "mnt"
    mnt.mkdir(exist_ok=True)
    opts = ",".join(
        [
            "stats.backend=embedded",
            f"state_dir={state}",
            f"tiers.ssd.path={work / 'ssd'}",
            f"tiers.hdd.path={work / 'hdd'}",
            "metadata.max_entries=4000000",
            "metadata.watch=off",  # no warm-up re-reading the (made-up) directories
        ]
    )
    log_path = work / "daemon.log"
    with open(log_path, "wb") as log:
        start = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-m", "cachefs", "mount", "-f", str(work / "origin"), str(mnt),
             "-o", opts],
            stdout=log, stderr=log, env={**os.environ, "PYTHONPATH": str(tree)},
            cwd=tree,  # -m puts the working directory first on the path
        )  # fmt: skip
        try:
            while not os.path.ismount(mnt):
                if proc.poll() is not None or time.perf_counter() - start > 120:
                    raise RuntimeError(f"no mount; see {log_path}")
                time.sleep(0.005)
            os.stat(mnt)
            answers = time.perf_counter() - start
            while b"entries restored" not in log_path.read_bytes():
                if time.perf_counter() - start > 120:
                    raise RuntimeError(f"the store was never read; see {log_path}")
                time.sleep(0.01)
            store_in = time.perf_counter() - start
        finally:
            subprocess.run(["fusermount3", "-u", str(mnt)], check=False)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    return round(answers, 3), round(store_in, 3)


def measure_mounts(args: argparse.Namespace, trees: dict[str, Path]) -> None:
    work = args.dir / "mount"
    (work / "origin").mkdir(parents=True, exist_ok=True)
    stored = args.dir / "for-mount"
    stored.mkdir(exist_ok=True)
    build(stored, args.entries, str((work / "origin").resolve()))
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in trees}
    for _ in range(args.reps):  # the trees take turns: the same load for each
        for name, tree in trees.items():
            results[name].append(time_mount(tree, work, stored / "metadata.sqlite"))
    for name, runs in results.items():
        answers = statistics.median(a for a, _ in runs)
        store_in = statistics.median(b for _, b in runs)
        print(
            f"{name:13} {args.entries} entries: answers {answers} s, store in {store_in} s"
            f" (median of {len(runs)}: {runs})"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/cachefs-store-bench"))
    parser.add_argument("--tree", type=Path, help="another checkout of cachefs to measure")
    parser.add_argument("--mount", action="store_true", help="time real mounts (root)")
    parser.add_argument("--measure-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure_only:
        print(json.dumps(measure(args.dir, args.reps)))
        return
    args.dir.mkdir(parents=True, exist_ok=True)
    trees = {"cachefs": Path(__file__).resolve().parent.parent}
    if args.tree:
        trees["cachefs-base"] = args.tree.resolve()
    if args.mount:
        measure_mounts(args, trees)
        return
    build(args.dir, args.entries)
    for name, tree in trees.items():  # each in its own interpreter: no shared state
        out = subprocess.run(
            [sys.executable, __file__, "--measure-only", "--dir", str(args.dir),
             "--reps", str(args.reps)],
            env={"PYTHONPATH": str(tree)}, capture_output=True, text=True, check=True,
        )  # fmt: skip
        result = json.loads(out.stdout)
        times = result["seconds"]
        print(
            f"{name:13} {args.entries} entries: {times} s, median {statistics.median(times)} s;"
            f" {result['rss_bytes_per_entry']} bytes of RSS per entry"
        )


if __name__ == "__main__":
    main()
