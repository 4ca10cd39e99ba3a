"""Scale: a library of a million entries, tiers of a million chunks (issue 15, item 4).

Run as root (mounts, ``drop_caches``)::

    .venv/bin/python bench/scale.py [--entries 10000,100000,1000000] [--chunks 1000000]
                                    [--data /tmp/scale-data] [--reps 3] [--out DIR]

What it builds, once, under ``--data`` (reused by later runs; never in the repo):

* ``origin-<N>/`` — a generated library of N entries (files and directories) on
  the local disk: Jellyfin-like metadata and photo trees of small files, show
  folders, and ``Movies/<Title>/movie.mkv`` media files, sparse (1 to 4 GiB, a few
  hundred at 1 M entries). The tree depends only on N.
* ``tier-<C>/ssd`` — an SSD tier directory holding C real chunk files (tagged,
  checksummed, 4 KiB raw, zstd), written through ``DiskTier.put`` directly rather
  than through a mount (minutes instead of hours; the files are the same).

What it measures, each figure a median of ``--reps`` where it is repeated:

* **start**: a mount over the largest origin with the C-chunk tier: until the
  mount answers a ``stat`` of its root, and until the tier index is loaded —
  with the index snapshot present (clean restart) and without (after a crash),
  and after the scan, with a metadata store of N entries to read back;
* **scan**: per entry (µs) of a walk + ``lstat`` of every entry after
  ``drop_caches``: the origin directly, the first scan through a fresh mount
  (nothing cached), and again after ``drop_caches`` (cachefs's metadata cache
  warm, the kernel's cold), at every N;
* **rss**: the daemon's VmRSS and VmHWM after the scans of the largest N, beside
  the RAM tier's size and what it holds;
* **eviction**: ``bench/eviction_cost.py``'s measurement (the same function) of
  the SSD tier's policy at 10 k and C chunks;
* **check**: ``cachefs check`` of the C-chunk tier after ``drop_caches``: seconds,
  chunks per second, the checker's peak RSS.

The mounts use ``metadata.max_entries`` above N (the default, 500 000, would trim
a million-entry cache) and ``stats.backend=embedded``; their state directory is a
temporary one, so the tier stays reusable. Bounds: every scan stops at
``--scan-limit`` seconds (``complete: false``), every mount is killed if it does
not answer within a minute or does not unmount.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import shutil
import signal
import stat
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from bench.eviction_cost import measure as eviction_measure  # noqa: E402
from cachefs.config import default_config  # noqa: E402
from cachefs.data.chunks import ChunkKey, origin_namespace  # noqa: E402
from cachefs.data.tiers.disk import DiskTier  # noqa: E402
from cachefs.origin.access import FileVersion  # noqa: E402
from cachefs.stats.counters import Stats  # noqa: E402

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
CHUNK = 4096
TREE_VERSION = 1  # bump when the generated tree changes: origins are rebuilt
MTIME_NS = 1_700_000_000 * 10**9


# -- the library -------------------------------------------------------------------------


def _library(entries: int) -> Iterator[tuple[str, int, bool]]:
    """``(relative path, size, sparse)`` of every file, in creation order; directories
    are implied by the paths (and counted by generate()). Deterministic in *entries*."""
    rng = random.Random(entries)
    movies = max(2, entries // 3000)  # 333 media files at 1 M entries
    for i in range(movies):
        movie = f"Movies/Film {i:04d} ({1950 + i % 75})"
        yield f"{movie}/movie.mkv", rng.randrange(1, 5) * GiB, True
        yield f"{movie}/movie.nfo", rng.randrange(500, 3000), False
        yield f"{movie}/poster.jpg", rng.randrange(2, 8) * KiB, False
        yield f"{movie}/fanart.jpg", rng.randrange(2, 8) * KiB, False
    i = 0
    while True:  # the rest in rounds, so that any prefix is a realistic mix
        kind = i % 4
        if kind == 0:  # a show season: 10 episodes, an .nfo and a thumbnail each
            base = f"Shows/Show {i // 40:05d}/Season {i // 4 % 10 + 1:02d}"
            for e in range(1, 11):
                yield f"{base}/S01E{e:02d}.nfo", rng.randrange(300, 2000), False
                yield f"{base}/S01E{e:02d}-thumb.jpg", rng.randrange(1, 8) * KiB, False
        elif kind == 1:  # a day of photos
            day = i // 4
            base = f"Photos/{2000 + day // 365 % 25}/{day % 365:03d}"
            for p in range(rng.randrange(10, 40)):
                yield f"{base}/IMG_{day % 10000:04d}{p:02d}.jpg", rng.randrange(1, 8) * KiB, False
        elif kind == 2:  # a metadata item (Jellyfin's library/<hh>/<id>/)
            item = f"{i:08x}"
            base = f"metadata/library/{item[-2:]}/{item}"
            for name in ("poster.jpg", "fanart.jpg", "landscape.jpg"):
                yield f"{base}/{name}", rng.randrange(1, 8) * KiB, False
            yield f"{base}/info.json", rng.randrange(200, 4000), False
        else:  # people
            name = f"Person {i:07d}"
            base = f"metadata/people/{name[7]}/{name}"
            yield f"{base}/person.json", rng.randrange(200, 2000), False
            yield f"{base}/folder.jpg", rng.randrange(1, 8) * KiB, False
        i += 1


def generate(root: Path, entries: int) -> dict[str, int]:
    """Build the library at *root* (exactly *entries* files + directories below it)."""
    done = root.parent / f"{root.name}.json"
    if done.exists():
        info = json.loads(done.read_text())
        if info.get("version") == TREE_VERSION and info.get("entries") == entries:
            return info
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    dirs: set[str] = set()
    files = sparse = total_bytes = 0
    fill = bytes(range(256)) * 32  # 8 KiB
    for rel, size, is_sparse in _library(entries):
        parts = rel.split("/")
        new_dirs = [
            "/".join(parts[:k]) for k in range(1, len(parts)) if "/".join(parts[:k]) not in dirs
        ]
        if len(dirs) + len(new_dirs) + files + 1 > entries:
            break
        for d in new_dirs:
            os.mkdir(root / d)
            dirs.add(d)
        path = root / rel
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            if is_sparse:
                os.ftruncate(fd, size)
                sparse += 1
            else:
                os.write(fd, fill[:size])
            total_bytes += size
        finally:
            os.close(fd)
        os.utime(path, ns=(MTIME_NS, MTIME_NS))
        files += 1
    # top up with empty files in one directory if the last item did not fit exactly
    pad = 0
    while len(dirs) + files < entries:
        if "misc" not in dirs:
            os.mkdir(root / "misc")
            dirs.add("misc")
            continue
        (root / "misc" / f"note-{pad:04d}.txt").touch()
        files += 1
        pad += 1
    info = {
        "version": TREE_VERSION,
        "entries": entries,
        "files": files,
        "dirs": len(dirs),
        "media_files": sparse,
        "apparent_bytes": total_bytes,
    }
    done.write_text(json.dumps(info))
    return info


# -- the tier ----------------------------------------------------------------------------


def fill_tier(ssd: Path, origin: Path, chunks: int) -> dict[str, float]:
    """An SSD tier directory holding *chunks* real chunk files, written through DiskTier.put
    (keys of one sparse file of the origin); built once."""
    done = ssd.parent / "filled.json"
    if done.exists():
        info = json.loads(done.read_text())
        if info.get("chunks") == chunks:
            return info
    if ssd.exists():
        shutil.rmtree(ssd)
    source = origin / "many.bin"  # not in the library: the tier only needs a version
    with open(source, "wb") as f:
        f.truncate(CHUNK * chunks)
    version = FileVersion.of(source.stat())
    source.unlink()
    cfg = default_config().tiers["ssd"]
    tier = DiskTier(
        type(cfg)("ssd", ssd, tier_max_size(chunks), cfg.eviction, 30 * 86400.0, 0),
        origin_namespace(str(origin.resolve())),
        Stats(),
    )
    start = time.perf_counter()
    tier.open()
    tier.load_index()
    raw = b"x" * CHUNK
    for index in range(chunks):
        if not tier.put(ChunkKey(version, CHUNK, index), raw, level=3):
            raise RuntimeError(f"chunk {index} was not stored")
    tier.close()
    info = {"chunks": chunks, "fill_s": round(time.perf_counter() - start, 1)}
    done.write_text(json.dumps(info))
    return info


def tier_max_size(chunks: int) -> int:
    return max(GiB, 2 * chunks * 4096)


# -- mounts ------------------------------------------------------------------------------


def attached(path: Path) -> list[str]:
    """Mount points at or below *path* (never rmtree through one: it is the origin)."""
    with open("/proc/self/mountinfo") as info:
        points = [line.split()[4] for line in info]
    return [p for p in points if p == str(path) or p.startswith(f"{path}/")]


def remove_tree(path: Path) -> None:
    left = attached(path)
    if left:
        raise RuntimeError(f"not removing {path}: still mounted there: {left}")
    shutil.rmtree(path, ignore_errors=True)


def drop_caches(enabled: bool) -> None:
    if enabled:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")


def cachefs_stats(mnt: Path) -> dict[str, object]:
    return json.loads(os.getxattr(mnt, "user.cachefs.stats"))  # type: ignore[no-any-return]


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of *pid*, in bytes."""
    out: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) * KiB
    return out


class Mount:
    """A foreground cachefs daemon over *origin* at *mnt*; times its start."""

    watch = "poll"  # metadata.watch (main sets it from --watch)

    def __init__(
        self,
        origin: Path,
        mnt: Path,
        ssd: Path,
        state: Path,
        chunks: int,
        max_entries: int,
    ) -> None:
        self.origin, self.mnt, self.ssd = origin, mnt, ssd
        opts = ",".join(
            [
                "stats.backend=embedded",
                f"tiers.ssd.path={ssd}",
                f"tiers.ssd.max_size={tier_max_size(chunks)}",
                "tiers.ssd.ttl=30d",
                f"tiers.hdd.path={state / 'hdd'}",
                f"state_dir={state / 'state'}",
                f"metadata.max_entries={max_entries}",
                f"metadata.watch={self.watch}",
            ]
        )
        self.log = open(state / "daemon.log", "ab")  # noqa: SIM115
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        start = time.perf_counter()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cachefs", "mount", "-f", str(origin), str(mnt), "-o", opts],
            stdout=self.log,
            stderr=self.log,
            env=env,
            cwd=REPO,  # -m puts the working directory first on the path: this checkout
        )
        try:
            self._wait(start, state)
        except BaseException:
            self.kill()  # interrupted or failed while starting: no daemon left behind
            raise

    def _wait(self, start: float, state: Path) -> None:
        mnt = self.mnt
        deadline = start + 60
        while not os.path.ismount(mnt):
            if self.proc.poll() is not None or time.perf_counter() > deadline:
                raise RuntimeError(f"cachefs did not mount; see {state / 'daemon.log'}")
            time.sleep(0.005)
        os.stat(mnt)
        self.answers_s = time.perf_counter() - start
        while not cachefs_stats(mnt)["tiers"]["ssd"]["ready"]:  # type: ignore[index]
            if time.perf_counter() > start + 600:
                raise RuntimeError("the tier index did not load within 10 minutes")
            time.sleep(0.01)
        self.index_ready_s = time.perf_counter() - start

    def rss(self) -> dict[str, int]:
        return proc_status(self.proc.pid)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()
        subprocess.run(["fusermount3", "-u", "-z", str(self.mnt)], check=False, capture_output=True)

    def close(self) -> None:
        subprocess.run(["fusermount3", "-u", str(self.mnt)], check=False, capture_output=True)
        try:
            self.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.kill()
        self.log.close()


@contextlib.contextmanager
def mounted(*args: object, **kwargs: object) -> Iterator[Mount]:
    mount = Mount(*args, **kwargs)  # type: ignore[arg-type]
    try:
        yield mount
    finally:
        mount.close()


# -- the scan ----------------------------------------------------------------------------


def scan(root: Path, limit_s: float) -> dict[str, object]:
    """Walk the tree and lstat every entry (as bench/workloads.library_scan, without the
    reads): the per-entry cost of a media server's library scan."""
    start = time.perf_counter()
    deadline = start + limit_s
    entries = 0
    pending = [str(root)]
    while pending and time.perf_counter() <= deadline:
        with os.scandir(pending.pop()) as listing:
            for entry in listing:
                st = os.lstat(entry.path)  # explicitly: scandir may have it cached
                entries += 1
                if stat.S_ISDIR(st.st_mode):
                    pending.append(entry.path)
    seconds = time.perf_counter() - start
    return {
        "seconds": round(seconds, 3),
        "entries": entries,
        "us_per_entry": round(seconds / max(1, entries) * 1e6, 2),
        "complete": not pending,
    }


def _median_of(runs: list[dict[str, object]], key: str) -> float:
    return round(statistics.median(float(r[key]) for r in runs), 3)  # type: ignore[arg-type]


def measure_scans(
    origin: Path,
    ssd: Path,
    work: Path,
    chunks: int,
    entries: int,
    reps: int,
    limit_s: float,
    drop: bool,
    restarts: bool,
) -> dict[str, object]:
    state = Path(tempfile.mkdtemp(prefix="state-", dir=work))
    mnt = state / "mnt"
    mnt.mkdir()
    result: dict[str, object] = {"entries": entries}
    direct = []
    for _ in range(reps):
        drop_caches(drop)
        direct.append(scan(origin, limit_s))
    result["origin_us_per_entry"] = _median_of(direct, "us_per_entry")
    with mounted(origin, mnt, ssd, state, chunks, max(2 * entries, 1000)) as m:
        result["answers_s"] = round(m.answers_s, 3)
        result["index_ready_s"] = round(m.index_ready_s, 3)
        drop_caches(drop)
        first = scan(mnt, limit_s)
        result["first"] = first
        result["first_us_per_entry"] = first["us_per_entry"]
        result["rss_after_first"] = m.rss()
        again = []
        for _ in range(reps):
            drop_caches(drop)
            again.append(scan(mnt, limit_s))
        result["again"] = again
        result["again_us_per_entry"] = _median_of(again, "us_per_entry")
        result["complete"] = bool(first["complete"]) and all(r["complete"] for r in again)
        stats = cachefs_stats(mnt)
        result["metadata_entries"] = stats.get("metadata_entries")
        result["change_detection"] = stats.get("change_detection")
        result["ram_tier"] = stats["tiers"]["ram"]  # type: ignore[index]
        result["rss"] = m.rss()
    # restart with the metadata store of the scan (and the tier): what a reboot costs
    runs = []
    for _ in range(reps if restarts else 0):
        with mounted(origin, mnt, ssd, state, chunks, max(2 * entries, 1000)) as m:
            runs.append({"answers_s": m.answers_s, "index_ready_s": m.index_ready_s, **m.rss()})
    if runs:
        result["restart_with_store_answers_s"] = _median_of(runs, "answers_s")
        result["restart_with_store_index_ready_s"] = _median_of(runs, "index_ready_s")
        result["restart_with_store_rss"] = int(statistics.median(r["VmRSS"] for r in runs))
    remove_tree(state)
    return result


def measure_start(origin: Path, ssd: Path, work: Path, chunks: int, reps: int) -> dict[str, object]:
    """Mount start and index load with *chunks* in the SSD tier, clean and after a crash."""
    result: dict[str, object] = {"chunks": chunks}
    for case in ("clean", "crash"):
        runs = []
        for _ in range(reps):
            state = Path(tempfile.mkdtemp(prefix="start-", dir=work))
            (state / "mnt").mkdir()
            if case == "crash":
                (ssd / "index").unlink(missing_ok=True)
            with mounted(origin, state / "mnt", ssd, state, chunks, 1000) as m:
                stats = cachefs_stats(state / "mnt")
                held = stats["tiers"]["ssd"]["chunks"]  # type: ignore[index]
                if held != chunks:
                    raise RuntimeError(f"the tier holds {held} chunks, not {chunks}")
                runs.append({"answers_s": m.answers_s, "index_ready_s": m.index_ready_s, **m.rss()})
            remove_tree(state)
        result[f"{case}_answers_s"] = _median_of(runs, "answers_s")
        result[f"{case}_index_ready_s"] = _median_of(runs, "index_ready_s")
        result[f"{case}_index_ready_max_s"] = round(max(r["index_ready_s"] for r in runs), 3)
        result[f"{case}_rss"] = int(statistics.median(r["VmRSS"] for r in runs))
    return result


def measure_check(ssd: Path, drop: bool) -> dict[str, object]:
    drop_caches(drop)
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "cachefs", "check", str(ssd)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        cwd=REPO,
    )
    assert proc.stdout is not None
    out = proc.stdout.read().decode()
    _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage: its peak RSS
    proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - start
    return {
        "seconds": round(seconds, 2),
        "exit_code": proc.returncode,
        "summary": out.strip().splitlines()[-1:],
        "peak_rss": usage.ru_maxrss * KiB,
    }


def machine() -> dict[str, object]:
    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram_bytes": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "loadavg": os.getloadavg(),
    }


# -- main --------------------------------------------------------------------------------


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--entries", default="10000,100000,1000000", help="library sizes")
    parser.add_argument("--chunks", type=int, default=1_000_000, help="chunks in the SSD tier")
    parser.add_argument("--data", type=Path, default=Path("/tmp/scale-data"))
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--scan-limit", type=float, default=900.0, help="seconds per scan")
    parser.add_argument("--parts", default="start,scan,eviction,check")
    parser.add_argument("--no-drop-caches", action="store_true", help="(the smoke test)")
    parser.add_argument(
        "--watch",
        default="poll",
        choices=("poll", "inotify", "off", "auto"),
        help="metadata.watch of the mounts (poll: the same whatever inotify instances "
        "other programs hold; the NAS mode)",
    )
    parser.add_argument("--out", type=Path, help="directory for scale-<time>.json")
    args = parser.parse_args()
    Mount.watch = args.watch
    # SIGTERM unwinds like Ctrl-C: the finally blocks unmount and remove the run directory
    signal.signal(signal.SIGTERM, _interrupt)
    sizes = sorted(int(s) for s in args.entries.split(","))
    parts = set(args.parts.split(","))
    drop = not args.no_drop_caches
    args.data.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="run-", dir=args.data))
    started = time.perf_counter()
    result: dict[str, object] = {"bench": "scale", "machine": machine(), "args": vars(args) | {}}
    result["args"] = {k: str(v) for k, v in vars(args).items()}

    def note(message: str) -> None:
        print(f"[{time.perf_counter() - started:7.1f} s] {message}", file=sys.stderr, flush=True)

    try:
        libraries = {}
        for n in sizes:
            t0 = time.perf_counter()
            libraries[n] = generate(args.data / f"origin-{n}", n)
            note(f"library of {n} entries: {libraries[n]} ({time.perf_counter() - t0:.1f} s)")
        result["libraries"] = libraries
        largest = args.data / f"origin-{sizes[-1]}"
        ssd = args.data / f"tier-{args.chunks}" / "ssd"
        result["tier"] = fill_tier(ssd, largest, args.chunks)
        note(f"tier of {args.chunks} chunks: {result['tier']}")
        if "start" in parts:
            result["start"] = measure_start(largest, ssd, work, args.chunks, args.reps)
            note(f"start: {result['start']}")
        if "scan" in parts:
            scans = []
            for n in sizes:
                scans.append(
                    measure_scans(
                        args.data / f"origin-{n}", ssd, work, args.chunks, n,
                        args.reps, args.scan_limit, drop, n == sizes[-1],
                    )
                )  # fmt: skip
                note(f"scan of {n}: {scans[-1]}")
            result["scan"] = scans
        if "eviction" in parts:
            policy = default_config().tiers["ssd"].eviction
            evictions = []
            for n in sorted({min(10_000, args.chunks), args.chunks}):
                evictions.append(eviction_measure(policy, n, max(200, n // 50 * 3 + 10)))
                note(f"eviction at {n}: {evictions[-1]}")
            result["eviction"] = evictions
        if "check" in parts:
            result["check"] = measure_check(ssd, drop) | {"chunks": args.chunks}
            note(f"check: {result['check']}")
    finally:
        remove_tree(work)
    result["seconds"] = round(time.perf_counter() - started, 1)
    text = json.dumps(result)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        path = args.out / f"scale-{time.strftime('%Y%m%d-%H%M%S')}.json"
        path.write_text(text + "\n")
        print(path)
    else:
        print(text)


if __name__ == "__main__":
    main()
