"""cachefs vs the origin vs rclone's VFS cache, on the reproducible slow origin.

Run as root (mounts, drop_caches)::

    .venv/bin/python bench/run.py [--quick] [--reps 3] [--systems origin,rclone,cachefs]
                                  [--workloads a,b,b2,b3,c,d2,e,f2,ws,wr,wr3 | reads | writes]
                                  [--write-systems origin,cachefs,cachefs-wb]
                                  [--write-origins slow,local] [--out bench-results/]

Writes ``<out>/<timestamp>.jsonl``: one ``meta`` line (machine, versions, the
slow origin's `check` figures), one ``result`` line per system, workload and
repetition (``{"system", "workload", "rep", "metrics"}``), and an ``end`` line.
`bench/report.py` turns it into tables. Workloads (see docs/benchmarks.md):

    a   cold sequential read of one media file, 1 MiB reads       (a_cold_seq)
    b   re-read right after                                        (b_warm_reread)
    b2  re-read after drop_caches: the system's own cache          (b2_reread_after_drop)
    b3  re-read after a remount and drop_caches: its disk cache    (b3_reread_after_remount)
    c   4 concurrent cold streams, one per media file              (c_streams)
    d2  random 4 KiB reads of the cached media file after drop     (d2_random_4k)
    e   library scan: cold, warm, after drop_caches                (e_scan_cold/_warm/_after_drop)
    f2  open + first 4 KiB of cached small files after drop        (f2_small_heads)

plus the peak RSS of every cachefs / rclone process (``rss``). For a system
with a daemon every workload also records the daemon's CPU time (every thread,
reaped children included: ``daemon_cpu_s``, see systems.cpu_seconds) and from it
``cpu_s_per_gib`` (reads) or ``cpu_s_per_1000_files`` (scans); the media group
adds the daemon's CPU % at rest for IDLE_S right after the cold mount
(``idle_after_mount``) and right after its last read (``idle_after_load``).
``cachefs-nopoll`` (``mount.busy_poll=0``) beside ``cachefs`` shows what the
busy poll costs. "Cold" means the system's own cache emptied (fresh cache
directory, remount) and the kernel's caches dropped. The slow origin is brought
up at the start (``--small`` data set with --quick) and always taken down at
the end.

The write workloads run on writable origins of their own (write_origin.py):
the slow disk read-write (``slow``) and a tmpfs (``local``), each written
directly (``origin``), through cachefs, and through cachefs with the kernel's
writeback cache (``cachefs-wb``); fsync + close are part of every timing:

    ws   1 MiB sequential write() of a new 64 MiB file              (ws_seq_write_<origin>)
    wr   4 KiB pwrite()s, every block once, seeded random order    (wr_rand_4k_write_<origin>)
    wr3  the same with 3000-byte blocks (unaligned to pages)       (wr3_rand_3000_write_<origin>)

plus the peak RSS of each cachefs daemon (``w_rss_<origin>``). A random-write
file is laid out first (untimed, as fio does). Every file is read back through
the system and from the origin and compared with what was written
(``verified``). ``--quick`` writes 16 MiB files.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import importlib.metadata
import json
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import dataset
import slow_origin
import workloads as w
import write_origin
from systems import SYSTEMS, Cachefs, CachefsBase, MountError, System, force_unmount

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SEED = 20240601
RANDOM_READS = 2000  # (d'): at most this many reads ...
SMALL_SAMPLE = 300  # (f'): files opened
MiB = 1024 * 1024
GiB = 1024 * MiB
IDLE_S = 5.0  # the daemon at rest, measured for this long

# Soft limits (s): a workload stops reading when it runs out and reports
# complete=false. The watchdog adds a grace period and then kills the FUSE
# daemon, so even a hung mount cannot hold the run.
LIMITS = {
    "seq": 60.0,
    "streams": 90.0,
    "random": 5.0,
    "scan": 150.0,
    "heads": 30.0,
    "write": 60.0,
}
WATCHDOG_GRACE_S = 60.0

READ_WORKLOADS = ("a", "b", "b2", "b3", "c", "d2", "e", "f2")
WRITE_WORKLOADS = ("ws", "wr", "wr3")
ALL_WORKLOADS = READ_WORKLOADS + WRITE_WORKLOADS
WORKLOAD_ALIASES = {"reads": READ_WORKLOADS, "writes": WRITE_WORKLOADS}
QUICK_WORKLOADS = ("a", "b2", "e", "f2")
WRITE_NAMES = {"ws": "ws_seq_write", "wr": "wr_rand_4k_write", "wr3": "wr3_rand_3000_write"}
WRITE_BLOCKS = {"ws": 1024 * 1024, "wr": 4096, "wr3": 3000}
WRITE_ORIGINS = ("slow", "local")
WRITE_SYSTEMS = ("origin", "cachefs", "cachefs-wb")
WRITE_MIB, QUICK_WRITE_MIB = 64, 16
QUICK_WRITE_LIMIT = 10.0  # s; the full run's is LIMITS["write"]
# Writes cache nothing: a small RAM tier makes "RSS near the RAM tier" a real bound.
WRITE_CACHEFS_OPTIONS = "tiers.ram.max_size=64MiB"
MEDIA_GROUP = {"a", "b", "b2", "b3", "d2"}  # share one cold read of the first media file
SCAN_GROUP = {"e", "f2"}  # (f') reads files the scan (or a plain fill) cached


def log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


# -- the data set --------------------------------------------------------------


@dataclass(frozen=True)
class DataSet:
    profile: str
    media: list[str]  # relative paths
    media_size: int
    small: list[str]  # the (f') sample, relative paths

    @classmethod
    def load(cls, profile: dataset.Profile, sample: int) -> DataSet:
        # The plan is the data set's definition: no need to walk the (slow) origin.
        specs = dataset.plan(profile)
        media = [s for s in specs if s.kind == "media"]
        small = sorted(s.path for s in specs if s.size < w.SMALL_FILE)
        picked = random.Random(SEED).sample(small, min(sample, len(small)))
        return cls(profile.name, [s.path for s in media], media[0].size, picked)


@dataclass(frozen=True)
class WriteOrigin:
    """A writable origin of the write workloads and how to read its disk counters."""

    name: str  # "slow" or "local"
    path: Path
    device: Callable[[], dict[str, Any]]
    description: dict[str, Any]


def _same_bytes(path: Path, expected: bytes) -> bool:
    """Does *path* hold exactly *expected*? (read in 1 MiB pieces, compared by hash)"""
    digest = hashlib.blake2b()
    with open(path, "rb", buffering=0) as f:
        while piece := f.read(MiB):
            digest.update(piece)
    return digest.digest() == hashlib.blake2b(expected).digest()


def no_device() -> dict[str, Any]:
    return {}


# -- the slow origin -----------------------------------------------------------


def slow_origin_cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(HERE / "slow_origin.py"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def origin_up(small: bool) -> Path:
    args = ["up", *(["--small"] if small else [])]
    result = slow_origin_cli(*args)
    if result.returncode != 0 and "run `down` first" in result.stderr:
        log("slow origin is up with other settings; restarting it")
        slow_origin_cli("down")
        result = slow_origin_cli(*args)
    if result.returncode != 0:
        raise SystemExit(f"slow_origin.py up failed:\n{result.stderr}")
    return Path(result.stdout.strip())


def origin_check() -> dict[str, Any]:
    result = slow_origin_cli("check", timeout=300)
    if result.returncode != 0:
        raise SystemExit(f"slow_origin.py check failed:\n{result.stderr}")
    return json.loads(result.stdout)


def origin_down() -> None:
    result = slow_origin_cli("down", timeout=300)
    if result.returncode != 0:
        log(f"slow_origin.py down: {result.stderr.strip()}")


# -- machine and versions --------------------------------------------------------


def command_output(cmd: list[str]) -> str:
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return "unavailable"
    return (result.stdout or result.stderr).strip()


def machine() -> dict[str, Any]:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    cpu = next(
        (ln.split(":", 1)[1].strip() for ln in cpuinfo.splitlines() if "model name" in ln), ""
    )
    meminfo = Path("/proc/meminfo").read_text().split()
    return {
        "cpu": cpu or platform.processor(),
        "cores": os.cpu_count(),
        "ram_bytes": int(meminfo[meminfo.index("MemTotal:") + 1]) * 1024,
        "kernel": platform.release(),
        "arch": platform.machine(),
        "distro": command_output(["sh", "-c", ". /etc/os-release && echo $PRETTY_NAME"]),
    }


def git_revision() -> str:
    """Commit of the checkout, marked dirty when cachefs/ has local changes (read-only git)."""
    rev = command_output(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"])
    dirty = command_output(["git", "-C", str(REPO), "status", "--porcelain", "--", "cachefs"])
    return f"{rev}+local changes" if dirty and dirty != "unavailable" else rev


def versions(systems: list[str]) -> dict[str, str]:
    found = {
        "python": platform.python_version(),
        "cachefs": f"{importlib.metadata.version('cachefs')} ({git_revision()})",
        "pyfuse3": importlib.metadata.version("pyfuse3"),
        "libfuse": command_output(["fusermount3", "-V"]).rsplit(" ", 1)[-1],
    }
    if "rclone" in systems:
        found["rclone"] = command_output(["rclone", "version"]).splitlines()[0]
    return found


def filesystem_of(path: Path) -> str:
    """ "ext4 on /dev/vda": where the tier and cache directories live."""
    fstype, _, source = command_output(
        ["findmnt", "-no", "FSTYPE,SOURCE", "-T", str(path)]
    ).partition(" ")
    return f"{fstype} on {source.strip()}"


# -- recording -------------------------------------------------------------------


class Recorder:
    """Appends JSON lines and flushes each, so an interrupted run keeps what it measured."""

    def __init__(self, out: IO[str]) -> None:
        self.out = out

    def write(self, record: dict[str, Any]) -> None:
        self.out.write(json.dumps(record, ensure_ascii=False) + "\n")
        self.out.flush()


HEADLINE = {  # the figure echoed to the terminal per workload
    "a_cold_seq": ("mb_s", "MB/s"),
    "b_warm_reread": ("mb_s", "MB/s"),
    "b2_reread_after_drop": ("mb_s", "MB/s"),
    "b3_reread_after_remount": ("mb_s", "MB/s"),
    "c_streams": ("aggregate_mb_s", "MB/s aggregate"),
    "d2_random_4k": ("iops", "IOPS"),
    "e_scan_cold": ("seconds", "s"),
    "e_scan_warm": ("seconds", "s"),
    "e_scan_after_drop": ("seconds", "s"),
    "f2_small_heads": ("p50_ms", "ms p50"),
    "rss": ("peak_rss_mib", "MiB peak RSS"),
    "idle_after_mount": ("cpu_pct", "% CPU at rest"),
    "idle_after_load": ("cpu_pct", "% CPU at rest"),
}
HEADLINE_PREFIXES = {  # write workloads carry their origin in the name
    "ws_": ("mib_s", "MiB/s"),
    "wr": ("iops", "IOPS"),
    "w_rss_": ("peak_rss_mib", "MiB peak RSS"),
}


def headline(workload: str) -> tuple[str, str]:
    if workload in HEADLINE:
        return HEADLINE[workload]
    for prefix, found in HEADLINE_PREFIXES.items():
        if workload.startswith(prefix):
            return found
    return ("seconds", "s")


def cpu_per_unit(used: float, metrics: dict[str, Any]) -> dict[str, Any]:
    """The daemon's CPU seconds for a workload, per GiB read or per 1,000 files."""
    found: dict[str, Any] = {"daemon_cpu_s": round(used, 3)}
    if metrics.get("bytes"):
        found["cpu_s_per_gib"] = round(used / (metrics["bytes"] / GiB), 3)
    elif metrics.get("files"):
        found["cpu_s_per_1000_files"] = round(used / (metrics["files"] / 1000), 3)
    return found


# -- running ---------------------------------------------------------------------


@contextlib.contextmanager
def watchdog(system: System, seconds: float) -> Iterator[threading.Event]:
    """After `seconds`, abort the system (kill its daemon) so blocked reads fail."""
    fired = threading.Event()

    def bite() -> None:
        fired.set()
        system.abort()

    timer = threading.Timer(seconds, bite)
    timer.daemon = True
    timer.start()
    try:
        yield fired
    finally:
        timer.cancel()


class Bench:
    def __init__(
        self,
        data: DataSet,
        origin: Path | None,
        recorder: Recorder,
        wanted: set[str],
        write_bytes: int = WRITE_MIB * MiB,
        write_limit: float = LIMITS["write"],
    ) -> None:
        self.data = data
        self.origin = origin
        self.recorder = recorder
        self.wanted = wanted
        self.origin_cfg = slow_origin.Config.from_env()
        self.offsets = w.random_offsets(data.media_size, RANDOM_READS, SEED)
        self.ram_tier_bytes: int | None = None
        self.write_bytes = write_bytes
        self.write_limit = write_limit

    def drop_caches(self) -> None:
        if not slow_origin.drop_caches():
            raise SystemExit("cannot drop caches: run as root")

    def cold(self, system: System) -> None:
        system.reset()
        if isinstance(system, Cachefs) and self.ram_tier_bytes is None:
            ram = system.stats().get("tiers", {}).get("ram", {})
            self.ram_tier_bytes = ram.get("max_size")
        self.drop_caches()

    def device(self) -> dict[str, Any]:
        return slow_origin.device_stats(self.origin_cfg)

    def measure(
        self, system: System, workload: str, rep: int, limit: float, fn: Callable[..., dict], *args
    ) -> bool:
        """Run fn(*args) under the watchdog and record it; False if it failed."""
        before, cpu_before = self.device(), system.cpu_seconds()
        with watchdog(system, limit + WATCHDOG_GRACE_S) as fired:
            try:
                metrics = fn(*args, limit)
            except OSError as exc:
                metrics = {"error": str(exc), "watchdog": fired.is_set()}
                if death := system.died():
                    metrics["daemon_died"] = death
        after, cpu_after = self.device(), system.cpu_seconds()
        if cpu_before is not None and cpu_after is not None:
            metrics |= cpu_per_unit(cpu_after - cpu_before, metrics)
        # What the workload cost the slow disk: 0 means it was served from a cache.
        metrics["origin_bytes_read"] = after.get("bytes_read", 0) - before.get("bytes_read", 0)
        metrics["origin_requests"] = after.get("requests", 0) - before.get("requests", 0)
        metrics["origin_seeks"] = after.get("seeks", 0) - before.get("seeks", 0)
        self.emit(system.name, workload, rep, metrics)
        return "error" not in metrics

    def idle(self, system: System, workload: str, rep: int) -> None:
        """The daemon's CPU % while nothing reads, for IDLE_S (nothing for the origin)."""
        before, start = system.cpu_seconds(), time.monotonic()
        if before is None:
            return
        time.sleep(IDLE_S)
        after, seconds = system.cpu_seconds(), time.monotonic() - start
        if after is None:
            self.emit(system.name, workload, rep, {"error": system.died() or "daemon gone"})
            return
        used = after - before
        metrics = {"cpu_pct": round(100 * used / seconds, 2), "daemon_cpu_s": round(used, 3)}
        self.emit(system.name, workload, rep, metrics | {"seconds": round(seconds, 3)})

    def emit(self, system: str, workload: str, rep: int, metrics: dict[str, Any]) -> None:
        record = {"system": system, "workload": workload, "rep": rep, "metrics": metrics}
        self.recorder.write({"type": "result", **record})
        key, unit = headline(workload)
        shown = f"ERROR {metrics['error']}" if "error" in metrics else f"{metrics.get(key)} {unit}"
        if metrics.get("complete") is False:
            shown += " (stopped at its time limit)"
        if metrics.get("verified") is False:
            shown += " (WRONG BYTES read back)"
        log(f"rep {rep} {system:8} {workload:21} {shown}")

    # Each group starts cold and measures what depends on that cold start.

    def media_group(self, system: System, rep: int) -> None:
        self.cold(system)
        self.idle(system, "idle_after_mount", rep)
        media, seq = system.root / self.data.media[0], LIMITS["seq"]
        if not self.measure(system, "a_cold_seq", rep, seq, w.sequential_read, media):
            return
        if "b" in self.wanted:
            self.measure(system, "b_warm_reread", rep, seq, w.sequential_read, media)
        if "b2" in self.wanted:
            self.drop_caches()
            self.measure(system, "b2_reread_after_drop", rep, seq, w.sequential_read, media)
        if "d2" in self.wanted:
            self.drop_caches()
            limit = LIMITS["random"]
            self.measure(system, "d2_random_4k", rep, limit, w.random_reads, media, self.offsets)
        if "b3" in self.wanted:  # cachefs: the RAM tier empty, so its disk tier serves
            system.remount()
            self.drop_caches()
            self.measure(system, "b3_reread_after_remount", rep, seq, w.sequential_read, media)
        self.idle(system, "idle_after_load", rep)

    def streams_group(self, system: System, rep: int) -> None:
        self.cold(system)
        paths = [system.root / p for p in self.data.media]
        self.measure(system, "c_streams", rep, LIMITS["streams"], w.concurrent_streams, paths)

    def scan_group(self, system: System, rep: int) -> None:
        self.cold(system)
        root, scan = system.root, LIMITS["scan"]
        if "e" in self.wanted:
            if not self.measure(system, "e_scan_cold", rep, scan, w.library_scan, root):
                return
            self.measure(system, "e_scan_warm", rep, scan, w.library_scan, root)
            self.drop_caches()
            self.measure(system, "e_scan_after_drop", rep, scan, w.library_scan, root)
        else:  # (f') alone: cache just its sample, unmeasured
            for rel in self.data.small:
                w.read_head(root / rel)
        if "f2" in self.wanted:
            self.drop_caches()
            heads = LIMITS["heads"]
            self.measure(
                system, "f2_small_heads", rep, heads, w.small_file_heads, root, self.data.small
            )

    # -- writes ----------------------------------------------------------------------

    def write_group(self, system: System, origin: WriteOrigin, rep: int) -> None:
        """The write workloads through *system* over one writable origin, from a fresh mount."""
        ram_tier: int | None = None
        try:
            system.reset()
            if isinstance(system, Cachefs):
                ram_tier = system.stats().get("tiers", {}).get("ram", {}).get("max_size")
            for workload in WRITE_WORKLOADS:
                if workload in self.wanted:
                    if system.died():  # killed by the watchdog: the next one gets a fresh mount
                        system.reset()
                    self.write_workload(system, origin, workload, rep)
        except MountError as exc:
            self.emit(system.name, f"mount_{origin.name}", rep, {"error": str(exc)})
        finally:
            system.stop()
        if peaks := system.take_peak_rss():
            metrics: dict[str, Any] = {"peak_rss_mib": round(max(peaks) / MiB, 1)}
            if ram_tier:
                metrics["ram_tier_mib"] = round(ram_tier / MiB, 1)
            self.emit(system.name, f"w_rss_{origin.name}", rep, metrics)

    def write_workload(self, system: System, origin: WriteOrigin, workload: str, rep: int) -> None:
        """One write workload: lay out (random writes), write (timed), read back, delete."""
        size, block, limit = self.write_bytes, WRITE_BLOCKS[workload], self.write_limit
        directory = system.root / "bench-writes"
        path = directory / f"{workload}.bin"
        at_origin = origin.path / "bench-writes" / path.name
        before = origin.device()
        metrics: dict[str, Any] = {}
        # Lay-out and read-back are untimed but bounded too: a slow system may
        # take as long for them as for the timed part.
        with watchdog(system, 3 * limit + WATCHDOG_GRACE_S) as fired:
            try:
                directory.mkdir(exist_ok=True)
                if workload == "ws":
                    metrics = w.sequential_write(path, size, limit)
                    expected = w.expected_after_sequential_write(int(metrics["bytes"]))
                else:
                    w.lay_out(path, size)
                    before = origin.device()  # the device's share of the timed part only
                    metrics = w.random_write(path, block, limit)
                    expected = w.expected_after_random_write(size, block, int(metrics["writes"]))
                after = origin.device()
            except OSError as exc:
                after = origin.device()
                metrics = {"error": str(exc), "watchdog": fired.is_set()}
                if death := system.died():
                    metrics["daemon_died"] = death
            else:
                try:
                    metrics["verified_mount"] = _same_bytes(path, expected)
                    metrics["verified_origin"] = _same_bytes(at_origin, expected)
                    metrics["verified"] = metrics["verified_mount"] and metrics["verified_origin"]
                    path.unlink()
                except OSError as exc:  # the figures stand; the bytes were not checked
                    metrics["verified"] = None
                    metrics["verify_error"] = str(exc)
        if before or after:  # the slow origin: what reached its disk during the timed part
            for key in ("bytes_written", "requests", "seeks"):
                metrics[f"origin_{key}"] = after.get(key, 0) - before.get(key, 0)
        self.emit(system.name, f"{WRITE_NAMES[workload]}_{origin.name}", rep, metrics)

    def run_system(self, system: System, rep: int) -> None:
        groups: list[Callable[[System, int], None]] = []
        if self.wanted & MEDIA_GROUP:
            groups.append(self.media_group)
        if "c" in self.wanted:
            groups.append(self.streams_group)
        if self.wanted & SCAN_GROUP:
            groups.append(self.scan_group)
        try:
            for group in groups:
                group(system, rep)
        except MountError as exc:
            self.emit(system.name, "mount", rep, {"error": str(exc)})
        finally:
            system.stop()  # one daemon at a time: systems never compete for the CPU
        if peaks := system.take_peak_rss():
            metrics: dict[str, Any] = {
                "peak_rss_mib": round(max(peaks) / MiB, 1),
                "daemons": len(peaks),
            }
            if isinstance(system, Cachefs) and self.ram_tier_bytes:
                metrics["ram_tier_mib"] = round(self.ram_tier_bytes / MiB, 1)
            self.emit(system.name, "rss", rep, metrics)


# -- CLI -------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="cachefs vs rclone vs the slow origin (root).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="small data set, workloads a,b2,e,f2")
    parser.add_argument("--reps", type=int, help="repetitions (default 3; 1 with --quick)")
    parser.add_argument("--systems", default="origin,rclone,cachefs")
    parser.add_argument(
        "--workloads", help=f"subset of {','.join(ALL_WORKLOADS)}; or reads, writes"
    )
    parser.add_argument("--write-systems", default=",".join(WRITE_SYSTEMS))
    parser.add_argument("--write-origins", default=",".join(WRITE_ORIGINS))
    parser.add_argument(
        "--local-origin", type=Path, help="directory for the local write origin (default: a tmpfs)"
    )
    parser.add_argument("--write-mib", type=int, help=f"file size (default {WRITE_MIB}, quick 16)")
    parser.add_argument(
        "--base-tree", type=Path, help="checkout of cachefs that system cachefs-base runs"
    )
    parser.add_argument("--small", action="store_true", help="the small data set")
    parser.add_argument("--small-files", type=int, default=SMALL_SAMPLE, help="(f') sample size")
    parser.add_argument("--out", type=Path, default=Path("bench-results"))
    parser.add_argument("--keep-origin", action="store_true", help="leave the slow origin up")
    args = parser.parse_args(argv)
    args.systems = args.systems.split(",")
    args.write_systems = args.write_systems.split(",")
    unknown = set(args.systems + args.write_systems) - set(SYSTEMS)
    if unknown:
        parser.error(f"unknown systems {sorted(unknown)}; choose from {sorted(SYSTEMS)}")
    if "rclone" in args.write_systems:
        parser.error("rclone is not a write system: it uploads after close returns")
    args.write_origins = args.write_origins.split(",")
    if set(args.write_origins) - set(WRITE_ORIGINS):
        parser.error(f"write origins are a subset of {','.join(WRITE_ORIGINS)}")
    default = QUICK_WORKLOADS if args.quick else ALL_WORKLOADS
    named = args.workloads.split(",") if args.workloads else list(default)
    args.workloads = [w for name in named for w in WORKLOAD_ALIASES.get(name, (name,))]
    if set(args.workloads) - set(ALL_WORKLOADS):
        parser.error(f"workloads are a subset of {','.join(ALL_WORKLOADS)}")
    args.write_mib = args.write_mib or (QUICK_WRITE_MIB if args.quick else WRITE_MIB)
    args.reps = args.reps or (1 if args.quick else 3)
    args.small = args.small or args.quick
    return args


def preflight(args: argparse.Namespace) -> None:
    if os.geteuid() != 0:
        raise SystemExit("bench/run.py needs root (mounts, loop devices, drop_caches)")
    if "rclone" in args.systems and reads_wanted(args) and shutil.which("rclone") is None:
        raise SystemExit("rclone is not installed: apt-get install -y rclone (or make bench)")
    if "cachefs-base" in args.systems + args.write_systems and args.base_tree is None:
        raise SystemExit("system cachefs-base needs --base-tree")
    if writes_wanted(args) and "cachefs-wb" in args.write_systems and not knows_writeback():
        log("this cachefs has no mount.writeback_cache: leaving out system cachefs-wb")
        args.write_systems.remove("cachefs-wb")


def knows_writeback() -> bool:
    """Does the checkout's cachefs have the mount.writeback_cache key?"""
    check = "import cachefs.config as c; c.MountConfig.__dataclass_fields__['writeback_cache']"
    probe = subprocess.run([sys.executable, "-c", check], cwd=REPO, capture_output=True)
    return probe.returncode == 0


def reads_wanted(args: argparse.Namespace) -> bool:
    return bool(set(args.workloads) & set(READ_WORKLOADS))


def writes_wanted(args: argparse.Namespace) -> bool:
    return bool(set(args.workloads) & set(WRITE_WORKLOADS))


def write_origins_up(args: argparse.Namespace, workdir: Path) -> list[WriteOrigin]:
    """The writable origins the write workloads use (taken down by write_origins_down)."""
    found = []
    for name in args.write_origins:
        if name == "slow":
            cfg = write_origin.config()
            log("bringing the writable slow origin up (write_origin.py)")
            path = write_origin.up(cfg)
            found.append(
                WriteOrigin(
                    "slow",
                    path,
                    lambda cfg=cfg: slow_origin.device_stats(cfg),
                    {"latency_ms": cfg.latency_ms, "mbps": cfg.mbps, "fs": filesystem_of(path)},
                )
            )
        else:
            path = args.local_origin or write_origin.mount_tmpfs(workdir / "local-origin")
            found.append(WriteOrigin("local", path, no_device, {"fs": filesystem_of(path)}))
    return found


def write_origins_down(origins: list[WriteOrigin], workdir: Path) -> None:
    for origin in origins:
        if origin.name == "slow":
            write_origin.down(write_origin.config())
        elif origin.path == workdir / "local-origin":
            write_origin.unmount_tmpfs(origin.path)


def interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def cleanup(systems: list[System], workdir: Path, origins: list[WriteOrigin]) -> None:
    for system in systems:
        system.stop()
    write_origins_down(origins, workdir)
    leftovers = [p for p, _ in slow_origin.mounts_under(workdir)]
    for path in leftovers:
        force_unmount(path)
    if slow_origin.mounts_under(workdir):
        log(f"still mounted under {workdir}; not deleting it")
    else:
        shutil.rmtree(workdir, ignore_errors=True)


def run(args: argparse.Namespace, out_file: Path) -> None:
    logs = out_file.with_suffix(".logs")
    bench_dir = slow_origin.Config.from_env().bench_dir
    bench_dir.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="run-", dir=bench_dir))
    systems: list[System] = []
    writers: list[tuple[WriteOrigin, System]] = []
    origins: list[WriteOrigin] = []
    started = time.time()
    if args.base_tree is not None:
        CachefsBase.tree = args.base_tree.resolve()
    try:
        origin: Path | None = None
        check: dict[str, Any] | None = None
        if reads_wanted(args):
            origin = origin_up(args.small)
            systems = [SYSTEMS[name](origin, workdir, logs) for name in args.systems]
        data = DataSet.load(dataset.SMALL if args.small else dataset.FULL, args.small_files)
        if reads_wanted(args):
            log("measuring the slow origin (slow_origin.py check)")
            check = origin_check()
        if writes_wanted(args):
            origins = write_origins_up(args, workdir)
            for where in origins:
                for name in args.write_systems:
                    system = SYSTEMS[name](where.path, workdir / f"writes-{where.name}",
                                           logs / f"writes-{where.name}")  # fmt: skip
                    if isinstance(system, Cachefs):
                        system.extra_options = WRITE_CACHEFS_OPTIONS
                    writers.append((where, system))
        with open(out_file, "w", encoding="utf-8") as out:
            recorder = Recorder(out)
            recorder.write(meta(args, data, check, systems, workdir, started, writers))
            limit = QUICK_WRITE_LIMIT if args.quick else LIMITS["write"]
            bench = Bench(data, origin, recorder, set(args.workloads), args.write_mib * MiB, limit)
            for rep in range(args.reps):
                for system in systems:
                    bench.run_system(system, rep)
                for where, system in writers:
                    bench.write_group(system, where, rep)
            recorder.write(
                {"type": "end", "elapsed_s": round(time.time() - started, 1)}
                | {"loadavg": os.getloadavg()}
            )
    finally:
        cleanup(systems + [s for _, s in writers], workdir, origins)
        if origin is not None and not args.keep_origin:
            origin_down()


def meta(
    args: argparse.Namespace,
    data: DataSet,
    check: dict[str, Any] | None,
    systems: list[System],
    workdir: Path,
    started: float,
    writers: list[tuple[WriteOrigin, System]],
) -> dict[str, Any]:
    writes: dict[str, Any] = {}
    if writers:
        writes = {
            "write_mib": args.write_mib,
            "write_workloads": [w for w in WRITE_WORKLOADS if w in args.workloads],
            "write_systems": args.write_systems,
            "write_origins": {o.name: {"path": str(o.path), **o.description} for o, _ in writers},
            "write_settings": {s.name: s.describe() for _, s in writers},
        }
    return {
        "type": "meta",
        "date": dt.datetime.fromtimestamp(started, dt.UTC).isoformat(timespec="seconds"),
        "quick": args.quick,
        "reps": args.reps,
        "systems": args.systems,
        "workloads": args.workloads,
        "profile": data.profile,
        "media_file": data.media[0],
        "media_size": data.media_size,
        "small_sample": len(data.small),
        "random_reads": RANDOM_READS,
        "limits_s": LIMITS | ({"write": QUICK_WRITE_LIMIT} if args.quick else {}),
        "machine": machine(),
        "versions": versions(args.systems if reads_wanted(args) else []),
        "origin_check": check,
        "cache_fs": filesystem_of(workdir),
        "system_settings": {s.name: s.describe() for s in systems},
        "loadavg": os.getloadavg(),
        **writes,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    preflight(args)
    # SIGINT too: a shell that started us in the background may have set it to ignore.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, interrupt)
    args.out.mkdir(parents=True, exist_ok=True)
    out_file = args.out / f"{dt.datetime.now():%Y%m%d-%H%M%S}.jsonl"
    try:
        run(args, out_file)
    except KeyboardInterrupt:
        log("interrupted; mounts cleaned up")
        return 130
    log(f"results in {out_file}")
    print(out_file)
    return 0


if __name__ == "__main__":
    sys.exit(main())
