"""cachefs vs the origin vs rclone's VFS cache, on the reproducible slow origin.

Run as root (mounts, drop_caches)::

    .venv/bin/python bench/run.py [--quick] [--reps 3] [--systems origin,rclone,cachefs]
                                  [--workloads a,b,b2,c,d2,e,f2] [--out bench-results/]

Writes ``<out>/<timestamp>.jsonl``: one ``meta`` line (machine, versions, the
slow origin's `check` figures), one ``result`` line per system, workload and
repetition (``{"system", "workload", "rep", "metrics"}``), and an ``end`` line.
`bench/report.py` turns it into tables. Workloads (see docs/benchmarks.md):

    a   cold sequential read of one media file, 1 MiB reads       (a_cold_seq)
    b   re-read right after                                        (b_warm_reread)
    b2  re-read after drop_caches: the system's own cache          (b2_reread_after_drop)
    c   4 concurrent cold streams, one per media file              (c_streams)
    d2  random 4 KiB reads of the cached media file after drop     (d2_random_4k)
    e   library scan: cold, warm, after drop_caches                (e_scan_cold/_warm/_after_drop)
    f2  open + first 4 KiB of cached small files after drop        (f2_small_heads)

plus the peak RSS of every cachefs / rclone process (``rss``). "Cold" means
the system's own cache emptied (fresh cache directory, remount) and the
kernel's caches dropped. The slow origin is brought up at the start
(``--small`` data set with --quick) and always taken down at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
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
from systems import SYSTEMS, Cachefs, MountError, System, force_unmount

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SEED = 20240601
RANDOM_READS = 2000  # (d'): at most this many reads ...
SMALL_SAMPLE = 300  # (f'): files opened
MiB = 1024 * 1024

# Soft limits (s): a workload stops reading when it runs out and reports
# complete=false. The watchdog adds a grace period and then kills the FUSE
# daemon, so even a hung mount cannot hold the run.
LIMITS = {"seq": 60.0, "streams": 90.0, "random": 5.0, "scan": 150.0, "heads": 30.0}
WATCHDOG_GRACE_S = 60.0

ALL_WORKLOADS = ("a", "b", "b2", "c", "d2", "e", "f2")
QUICK_WORKLOADS = ("a", "b2", "e", "f2")
MEDIA_GROUP = {"a", "b", "b2", "d2"}  # share one cold read of the first media file
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
    "c_streams": ("aggregate_mb_s", "MB/s aggregate"),
    "d2_random_4k": ("iops", "IOPS"),
    "e_scan_cold": ("seconds", "s"),
    "e_scan_warm": ("seconds", "s"),
    "e_scan_after_drop": ("seconds", "s"),
    "f2_small_heads": ("p50_ms", "ms p50"),
    "rss": ("peak_rss_mib", "MiB peak RSS"),
}


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
    def __init__(self, data: DataSet, origin: Path, recorder: Recorder, wanted: set[str]) -> None:
        self.data = data
        self.origin = origin
        self.recorder = recorder
        self.wanted = wanted
        self.origin_cfg = slow_origin.Config.from_env()
        self.offsets = w.random_offsets(data.media_size, RANDOM_READS, SEED)
        self.ram_tier_bytes: int | None = None

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
        before = self.device()
        with watchdog(system, limit + WATCHDOG_GRACE_S) as fired:
            try:
                metrics = fn(*args, limit)
            except OSError as exc:
                metrics = {"error": str(exc), "watchdog": fired.is_set()}
                if death := system.died():
                    metrics["daemon_died"] = death
        after = self.device()
        # What the workload cost the slow disk: 0 means it was served from a cache.
        metrics["origin_bytes_read"] = after.get("bytes_read", 0) - before.get("bytes_read", 0)
        metrics["origin_requests"] = after.get("requests", 0) - before.get("requests", 0)
        metrics["origin_seeks"] = after.get("seeks", 0) - before.get("seeks", 0)
        self.emit(system.name, workload, rep, metrics)
        return "error" not in metrics

    def emit(self, system: str, workload: str, rep: int, metrics: dict[str, Any]) -> None:
        record = {"system": system, "workload": workload, "rep": rep, "metrics": metrics}
        self.recorder.write({"type": "result", **record})
        key, unit = HEADLINE.get(workload, ("seconds", "s"))
        shown = f"ERROR {metrics['error']}" if "error" in metrics else f"{metrics.get(key)} {unit}"
        if metrics.get("complete") is False:
            shown += " (stopped at its time limit)"
        log(f"rep {rep} {system:8} {workload:21} {shown}")

    # Each group starts cold and measures what depends on that cold start.

    def media_group(self, system: System, rep: int) -> None:
        self.cold(system)
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
    parser.add_argument("--workloads", help=f"subset of {','.join(ALL_WORKLOADS)}")
    parser.add_argument("--small", action="store_true", help="the small data set")
    parser.add_argument("--small-files", type=int, default=SMALL_SAMPLE, help="(f') sample size")
    parser.add_argument("--out", type=Path, default=Path("bench-results"))
    parser.add_argument("--keep-origin", action="store_true", help="leave the slow origin up")
    args = parser.parse_args(argv)
    args.systems = args.systems.split(",")
    unknown = set(args.systems) - set(SYSTEMS)
    if unknown:
        parser.error(f"unknown systems {sorted(unknown)}; choose from {sorted(SYSTEMS)}")
    default = QUICK_WORKLOADS if args.quick else ALL_WORKLOADS
    args.workloads = args.workloads.split(",") if args.workloads else list(default)
    if set(args.workloads) - set(ALL_WORKLOADS):
        parser.error(f"workloads are a subset of {','.join(ALL_WORKLOADS)}")
    args.reps = args.reps or (1 if args.quick else 3)
    args.small = args.small or args.quick
    return args


def preflight(systems: list[str]) -> None:
    if os.geteuid() != 0:
        raise SystemExit("bench/run.py needs root (mounts, loop devices, drop_caches)")
    if "rclone" in systems and shutil.which("rclone") is None:
        raise SystemExit("rclone is not installed: apt-get install -y rclone (or make bench)")


def interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def cleanup(systems: list[System], workdir: Path) -> None:
    for system in systems:
        system.stop()
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
    started = time.time()
    try:
        origin = origin_up(args.small)
        systems = [SYSTEMS[name](origin, workdir, logs) for name in args.systems]
        data = DataSet.load(dataset.SMALL if args.small else dataset.FULL, args.small_files)
        log("measuring the slow origin (slow_origin.py check)")
        check = origin_check()
        with open(out_file, "w", encoding="utf-8") as out:
            recorder = Recorder(out)
            recorder.write(meta(args, data, check, systems, workdir, started))
            bench = Bench(data, origin, recorder, set(args.workloads))
            for rep in range(args.reps):
                for system in systems:
                    bench.run_system(system, rep)
            recorder.write(
                {"type": "end", "elapsed_s": round(time.time() - started, 1)}
                | {"loadavg": os.getloadavg()}
            )
    finally:
        cleanup(systems, workdir)
        if not args.keep_origin:
            origin_down()


def meta(
    args: argparse.Namespace,
    data: DataSet,
    check: dict[str, Any],
    systems: list[System],
    workdir: Path,
    started: float,
) -> dict[str, Any]:
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
        "limits_s": LIMITS,
        "machine": machine(),
        "versions": versions(args.systems),
        "origin_check": check,
        "cache_fs": filesystem_of(workdir),
        "system_settings": {s.name: s.describe() for s in systems},
        "loadavg": os.getloadavg(),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    preflight(args.systems)
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
