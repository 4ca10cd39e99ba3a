"""A reproducible slow origin (one HDD / NAS) for cachefs benchmarks.

Stack, bottom to top (all under $BENCH_DIR, default /tmp/cachefs-bench)::

    disk-<profile>.img      ext4 image holding the data set (built once, cached)
    delay/disk.img          delayfs.py (FUSE, direct_io): seek + transfer delay,
                            one request at a time
    /dev/loopN              read-only loop device on delay/disk.img (direct I/O)
    origin/                 the ext4, mounted read-only: point benchmarks here

Every page-cache miss in origin/ becomes a loop request, then a FUSE request,
then a modelled device access -- also after `echo 3 > /proc/sys/vm/drop_caches`,
because disk.img itself is never cached.

Environment: SLOW_ORIGIN_LATENCY_MS (8), SLOW_ORIGIN_MBPS (80, 10^6 B/s),
BENCH_DIR (/tmp/cachefs-bench), SLOW_ORIGIN_PYTHON (interpreter with pyfuse3).

Usage (as root)::

    python bench/slow_origin.py up [--small] [--rw]
    python bench/slow_origin.py check
    python bench/slow_origin.py path
    python bench/slow_origin.py status
    python bench/slow_origin.py down
"""

from __future__ import annotations

import argparse
import contextlib
import json
import mmap
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import dataset

HERE = Path(__file__).resolve().parent
MiB = 1024 * 1024
JOURNAL_MB = 16  # fixed (instead of size-dependent) so every image has the same layout rules
HEADROOM = 1.20  # free space beyond the data set, as the task asks
FS_OVERHEAD = 0.03  # inode tables, bitmaps, group descriptors (-i 16384, 256 B inodes)


class OriginError(RuntimeError):
    """A step of bringing the stack up/down failed; message is for the user."""


@dataclass(frozen=True)
class Config:
    bench_dir: Path
    latency_ms: float
    mbps: float

    @classmethod
    def from_env(cls) -> Config:
        return cls(
            bench_dir=Path(os.environ.get("BENCH_DIR", "/tmp/cachefs-bench")).absolute(),
            latency_ms=float(os.environ.get("SLOW_ORIGIN_LATENCY_MS", "8")),
            mbps=float(os.environ.get("SLOW_ORIGIN_MBPS", "80")),
        )

    def image(self, profile: str) -> Path:
        return self.bench_dir / f"disk-{profile}.img"

    def manifest(self, profile: str) -> Path:
        return self.bench_dir / f"disk-{profile}.json"

    @property
    def delay_mnt(self) -> Path:
        return self.bench_dir / "delay"

    @property
    def disk(self) -> Path:
        return self.delay_mnt / "disk.img"

    @property
    def origin(self) -> Path:
        return self.bench_dir / "origin"

    @property
    def build_mnt(self) -> Path:
        return self.bench_dir / "build"

    @property
    def state_file(self) -> Path:
        return self.bench_dir / "state.json"

    @property
    def pid_file(self) -> Path:
        return self.bench_dir / "delayfs.pid"

    @property
    def log_file(self) -> Path:
        return self.bench_dir / "delayfs.log"


# -- small system helpers ---------------------------------------------------


def run(cmd: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise OriginError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


def log(message: str) -> None:
    print(f"slow_origin: {message}", file=sys.stderr, flush=True)


def unescape_mountinfo(field: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def mounts() -> list[tuple[Path, str]]:
    """(mount point, fs type) of every mount, from /proc/self/mountinfo."""
    result = []
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as info:
        for line in info:
            fields = line.split()
            fstype = fields[fields.index("-") + 1]
            result.append((Path(unescape_mountinfo(fields[4])), fstype))
    return result


def is_mounted(path: Path) -> bool:
    # Not os.path.ismount(): it reports False for a FUSE mount whose daemon died.
    return any(point == path for point, _ in mounts())


def mounts_under(root: Path) -> list[tuple[Path, str]]:
    return [(p, t) for p, t in mounts() if p == root or root in p.parents]


def loop_devices() -> dict[str, str]:
    """/dev/loopN -> backing file, for every attached loop device."""
    result = {}
    for backing in Path("/sys/block").glob("loop*/loop/backing_file"):
        name = backing.parent.parent.name
        path = backing.read_text().strip().removesuffix(" (deleted)")
        result[f"/dev/{name}"] = path
    return result


def loops_under(root: Path) -> list[str]:
    return sorted(dev for dev, path in loop_devices().items() if Path(path).is_relative_to(root))


def drop_caches() -> bool:
    """Flush and drop page/dentry/inode caches system-wide; False if not permitted."""
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError:
        return False
    return True


def daemon_python() -> str:
    """An interpreter that can import pyfuse3: explicit, the repo's venv, or ours."""
    if "SLOW_ORIGIN_PYTHON" in os.environ:
        return os.environ["SLOW_ORIGIN_PYTHON"]
    venv = HERE.parent / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


# -- image -------------------------------------------------------------------


def image_size(specs: list[dataset.FileSpec]) -> int:
    data = dataset.allocated_bytes(specs)
    size = int(data * (HEADROOM + FS_OVERHEAD)) + (JOURNAL_MB + 16) * MiB
    return -(-size // MiB) * MiB


def mkfs(image: Path, profile: dataset.Profile) -> None:
    # Fixed UUID and directory-hash seed: readdir order (and so every scan
    # benchmark) is the same on every rebuild of the image.
    fs_uuid = uuid.uuid5(uuid.NAMESPACE_URL, f"cachefs-bench/{profile.name}")
    hash_seed = uuid.uuid5(fs_uuid, "hash_seed")
    run([
        "mkfs.ext4", "-q", "-F", "-b", "4096", "-m", "0", "-i", "16384",
        "-J", f"size={JOURNAL_MB}", "-L", f"bench-{profile.name}", "-U", str(fs_uuid),
        "-E", f"lazy_itable_init=0,lazy_journal_init=0,root_owner=0:0,hash_seed={hash_seed}",
        str(image),
    ])  # fmt: skip


def populate(cfg: Config, image: Path, profile: dataset.Profile) -> dict:
    """Loop-mount the fresh image WITHOUT the delay layer and write the data set."""
    loop = run(["losetup", "-f", "--show", str(image)]).stdout.strip()
    try:
        cfg.build_mnt.mkdir(exist_ok=True)
        run(["mount", "-t", "ext4", "-o", "noatime", loop, str(cfg.build_mnt)])
        try:
            summary = dataset.generate(cfg.build_mnt, profile)
            fs = os.statvfs(cfg.build_mnt)
            summary["fs_free_bytes"] = fs.f_bavail * fs.f_frsize
        finally:
            unmount(cfg.build_mnt)
    finally:
        run(["losetup", "-d", loop], check=False)
    return summary


def build_image(cfg: Config, profile: dataset.Profile) -> None:
    image, started = cfg.image(profile.name), time.monotonic()
    partial = image.with_suffix(".partial")  # never leave a half-built image under the real name
    specs = dataset.plan(profile)
    size = image_size(specs)
    log(f"building {image} ({size / MiB:.0f} MiB, {len(specs)} files); this is done once")
    partial.unlink(missing_ok=True)
    with open(partial, "wb") as out:
        out.truncate(size)
    try:
        mkfs(partial, profile)
        summary = populate(cfg, partial, profile)
        run(["e2fsck", "-fn", str(partial)])  # the image is shared by all later runs
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    summary.update(image_bytes=size, build_seconds=round(time.monotonic() - started, 1))
    partial.rename(image)
    cfg.manifest(profile.name).write_text(json.dumps(summary, ensure_ascii=False, indent=1))
    log(f"built {image} in {summary['build_seconds']} s")


def ensure_image(cfg: Config, profile: dataset.Profile) -> Path:
    image = cfg.image(profile.name)
    manifest = read_json(cfg.manifest(profile.name)) or {}
    wanted = dataset.fingerprint(dataset.plan(profile), dataset.DEFAULT_SEED)
    if image.exists() and manifest.get("fingerprint") == wanted:
        return image
    if image.exists():
        log(f"{image} holds another version of the data set; rebuilding")
    build_image(cfg, profile)
    return image


# -- the slow stack ----------------------------------------------------------


def daemon_alive(cfg: Config) -> int | None:
    """PID of our delayfs daemon if it is still running (guards against PID reuse)."""
    try:
        pid = int(cfg.pid_file.read_text())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    return pid if b"delayfs.py" in cmdline and os.fsencode(cfg.delay_mnt) in cmdline else None


def start_delayfs(cfg: Config, image: Path, rw: bool) -> None:
    if is_mounted(cfg.delay_mnt):
        # stat() would be answered from the kernel's attribute cache even with
        # the daemon gone; stats.json is direct_io, so reading it asks the daemon.
        if daemon_alive(cfg) and read_json(cfg.delay_mnt / "stats.json") is not None:
            return
        raise OriginError(f"{cfg.delay_mnt} is a dead FUSE mount; run `down` first")
    cfg.delay_mnt.mkdir(exist_ok=True)
    cmd = [
        daemon_python(), str(HERE / "delayfs.py"), str(image), str(cfg.delay_mnt),
        "--latency-ms", str(cfg.latency_ms), "--mbps", str(cfg.mbps), *(["--rw"] if rw else []),
    ]  # fmt: skip
    with open(cfg.log_file, "ab") as log_out:
        # New session: the daemon must outlive this command and ignore its Ctrl-C.
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log_out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    cfg.pid_file.write_text(str(proc.pid))
    deadline = time.monotonic() + 20
    while not (is_mounted(cfg.delay_mnt) and cfg.disk.exists()):
        if proc.poll() is not None or time.monotonic() > deadline:
            tail = cfg.log_file.read_text(errors="replace")[-2000:]
            raise OriginError(f"delayfs did not come up; log {cfg.log_file}:\n{tail}")
        time.sleep(0.05)


def attach_loop(cfg: Config, rw: bool) -> tuple[str, bool]:
    """Loop device on delay/disk.img; returns (device, direct I/O active)."""
    existing = [d for d, p in loop_devices().items() if Path(p) == cfg.disk]
    if existing:
        device = existing[0]
    else:
        base = ["losetup", "-f", "--show"] + ([] if rw else ["-r"])
        # Direct I/O spares a second copy of every page in memory; the FUSE
        # file is direct_io anyway, so buffered mode is only a fallback.
        proc = run([*base, "--direct-io=on", str(cfg.disk)], check=False)
        device = proc.stdout.strip() if proc.returncode == 0 else ""
        if not device:
            device = run([*base, str(cfg.disk)]).stdout.strip()
    dio = Path(f"/sys/block/{Path(device).name}/loop/dio")
    return device, dio.exists() and dio.read_text().strip() == "1"


def mount_origin(cfg: Config, device: str, rw: bool) -> None:
    if is_mounted(cfg.origin):
        return
    cfg.origin.mkdir(exist_ok=True)
    run(["mount", "-t", "ext4", "-o", ("rw" if rw else "ro") + ",noatime", device, str(cfg.origin)])


def up(cfg: Config, profile: dataset.Profile, rw: bool) -> None:
    cfg.bench_dir.mkdir(parents=True, exist_ok=True)
    wanted = {"profile": profile.name, "rw": rw, "latency_ms": cfg.latency_ms, "mbps": cfg.mbps}
    state = read_json(cfg.state_file)
    if state and is_mounted(cfg.delay_mnt):
        running = {key: state.get(key) for key in wanted}
        if running != wanted:
            raise OriginError(f"already up with {running}; run `down` first to get {wanted}")
        image = Path(state["image"])  # never rebuild an image that is being served
    elif is_mounted(cfg.delay_mnt) or loops_under(cfg.bench_dir):
        raise OriginError("half set-up stack without state file; run `down` first")
    else:
        image = ensure_image(cfg, profile)
    # Written before anything is started so that a failed `up` can be resumed.
    cfg.state_file.write_text(json.dumps({**wanted, "image": str(image)}))
    start_delayfs(cfg, image, rw)
    device, dio = attach_loop(cfg, rw)
    mount_origin(cfg, device, rw)
    state = {
        **wanted,
        "image": str(image),
        "loop": device,
        "loop_direct_io": dio,
        "pid": daemon_alive(cfg),
        "origin": str(cfg.origin),
    }
    cfg.state_file.write_text(json.dumps(state, indent=1))
    print(cfg.origin)


# -- teardown ----------------------------------------------------------------


def unmount(path: Path) -> None:
    """Unmount everything stacked on path; lazily if it is busy."""
    for _ in range(10):
        if not is_mounted(path):
            return
        if run(["umount", str(path)], check=False).returncode != 0:
            log(f"{path} busy, lazy unmount")
            run(["umount", "-l", str(path)], check=False)
    raise OriginError(f"could not unmount {path}")


def unmount_fuse(path: Path) -> None:
    for cmd in (["fusermount3", "-u"], ["fusermount3", "-u", "-z"], ["umount", "-l"]):
        if not is_mounted(path):
            return
        run([*cmd, str(path)], check=False)


def stop_daemon(cfg: Config) -> None:
    pid = daemon_alive(cfg)
    if pid is None:
        return
    os.kill(pid, signal.SIGTERM)  # delayfs unmounts itself on SIGTERM
    for _ in range(100):
        if daemon_alive(cfg) is None:
            return
        time.sleep(0.05)
    log(f"delayfs {pid} ignored SIGTERM, killing")
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def attempt(action: Callable[..., object], *args: object) -> None:
    """Run one teardown step; a failure must not stop the remaining steps."""
    try:
        action(*args)
    except (OriginError, OSError) as exc:
        log(f"down: {exc}")


def down(cfg: Config) -> bool:
    """Tear down in reverse order, tolerating any half set-up state."""
    # After a lazy FUSE unmount a loop device's backing path no longer starts
    # with BENCH_DIR, so remember which devices are ours before touching anything.
    our_loops = loops_under(cfg.bench_dir)
    # origin/, build/ and anything else stacked under BENCH_DIR, deepest first.
    block_mounts = [p for p, t in mounts_under(cfg.bench_dir) if not t.startswith("fuse")]
    for path in sorted(block_mounts, key=lambda p: len(p.parts), reverse=True):
        attempt(unmount, path)
    for device in our_loops:
        # On a device that is still busy this only sets autoclear, which is fine.
        attempt(run, ["losetup", "-d", device], False)
    attempt(unmount_fuse, cfg.delay_mnt)
    attempt(stop_daemon, cfg)
    for path, _ in mounts_under(cfg.bench_dir):
        attempt(unmount_fuse, path)
    for path in (cfg.state_file, cfg.pid_file):
        path.unlink(missing_ok=True)
    mounted = [str(p) for p, _ in mounts_under(cfg.bench_dir)]
    busy_loops = [d for d in our_loops if d in loop_devices()]
    if mounted:
        log(f"still mounted: {mounted}")
    if busy_loops:
        log(
            f"{busy_loops} still open by some process (lazily unmounted origin); "
            "they detach themselves (autoclear) once it closes its files"
        )
    return not (mounted or busy_loops)


# -- measurements ------------------------------------------------------------


def media_files(cfg: Config) -> list[Path]:
    state = read_json(cfg.state_file)
    if not state or not is_mounted(cfg.origin):
        raise OriginError("the slow origin is not up; run `up` first")
    manifest = read_json(cfg.manifest(state["profile"])) or {}
    return [cfg.origin / p for p in manifest.get("media_paths", [])]


def random_offsets(files: list[Path], count: int, seed: int) -> list[tuple[Path, int]]:
    rng = random.Random(seed)
    picks = []
    for _ in range(count):
        path = rng.choice(files)
        picks.append((path, rng.randrange(path.stat().st_size // 4096) * 4096))
    return picks


def timed_reads(picks: list[tuple[Path, int]], direct: bool) -> list[float]:
    """Latency in ms of one 4 KiB read per pick, O_DIRECT or buffered without readahead."""
    buf = mmap.mmap(-1, 4096)  # page aligned, as O_DIRECT requires
    flags = os.O_RDONLY | (os.O_DIRECT if direct else 0)
    fds = {path: os.open(path, flags) for path in {p for p, _ in picks}}
    try:
        for fd in fds.values():  # a 4 KiB read must stay 4 KiB, not a readahead window
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
        latencies = []
        for path, offset in picks:
            start = time.perf_counter()
            os.preadv(fds[path], [buf], offset)
            latencies.append((time.perf_counter() - start) * 1000)
        return latencies
    finally:
        for fd in fds.values():
            os.close(fd)


def sequential_mb_s(path: Path, limit: int = 64 * MiB) -> tuple[float, int]:
    """Buffered 1 MiB reads of the first `limit` bytes, as a media player would."""
    start, done = time.perf_counter(), 0
    with open(path, "rb", buffering=0) as media:
        os.posix_fadvise(media.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)
        while done < limit and (chunk := media.read(min(MiB, limit - done))):
            done += len(chunk)
    return done / (time.perf_counter() - start) / 1e6, done


def parallel_reads(files: list[Path], readers: int, each: int) -> tuple[float, list[float]]:
    """`readers` threads doing O_DIRECT random reads at once: (total IOPS, latencies)."""
    results: list[list[float]] = [[] for _ in range(readers)]
    jobs = [random_offsets(files, each, seed=100 + n) for n in range(readers)]
    threads = [
        threading.Thread(target=lambda n=n: results[n].extend(timed_reads(jobs[n], True)))
        for n in range(readers)
    ]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    return readers * each / elapsed, [ms for per_reader in results for ms in per_reader]


def device_stats(cfg: Config) -> dict:
    return read_json(cfg.delay_mnt / "stats.json") or {}


def check(cfg: Config, samples: int, readers: int) -> dict:
    files = media_files(cfg)
    state = read_json(cfg.state_file) or {}
    report: dict = {
        "profile": state.get("profile"),
        "latency_ms": state.get("latency_ms"),
        "mbps": state.get("mbps"),
        "loop_direct_io": state.get("loop_direct_io"),
    }
    dropped = drop_caches()
    direct = timed_reads(random_offsets(files, samples, seed=1), direct=True)
    picks = random_offsets(files, 20, seed=2)
    drop_caches()
    cold = timed_reads(picks, direct=False)  # buffered, right after drop_caches
    warm = timed_reads(picks, direct=False)  # same blocks again: page cache hits
    drop_caches()
    dropped_again = timed_reads(picks, direct=False)  # drop_caches must bring latency back
    drop_caches()
    before = device_stats(cfg)
    seq, seq_bytes = sequential_mb_s(max(files, key=lambda p: p.stat().st_size))
    after = device_stats(cfg)
    iops, par = parallel_reads(files, readers, each=25)
    single_ms = statistics.median(direct)
    report.update(
        drop_caches=dropped,
        rand4k_direct_median_ms=round(single_ms, 2),
        rand4k_direct_p90_ms=round(statistics.quantiles(direct, n=10)[-1], 2),
        rand4k_after_drop_caches_median_ms=round(statistics.median(cold), 2),
        rand4k_page_cache_median_ms=round(statistics.median(warm), 3),
        rand4k_after_second_drop_median_ms=round(statistics.median(dropped_again), 2),
        seq_mb_s=round(seq, 1),
        seq_bytes=seq_bytes,
        seq_device_requests=after.get("requests", 0) - before.get("requests", 0),
        seq_device_seeks=after.get("seeks", 0) - before.get("seeks", 0),
        parallel_readers=readers,
        parallel_total_iops=round(iops, 1),
        single_reader_iops=round(1000 / single_ms, 1),
        parallel_median_ms=round(statistics.median(par), 2),
        # Serialised device: N readers share one queue, so total IOPS stays at
        # the single-reader figure and each request waits ~N service times.
        parallel_serialised=iops < 1.5 * 1000 / single_ms,
    )
    return report


# -- CLI ---------------------------------------------------------------------


def status(cfg: Config) -> dict:
    return {
        "state": read_json(cfg.state_file),
        "daemon_pid": daemon_alive(cfg),
        "mounts": [f"{p} ({t})" for p, t in mounts_under(cfg.bench_dir)],
        "loops": loops_under(cfg.bench_dir),
        "images": {p.name: p.stat().st_size for p in cfg.bench_dir.glob("disk-*.img")},
        "device": device_stats(cfg) if is_mounted(cfg.delay_mnt) else None,
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Slow HDD/NAS-like origin for benchmarks.")
    sub = parser.add_subparsers(dest="command", required=True)
    up_cmd = sub.add_parser("up", help="build image if missing, start the stack (idempotent)")
    up_cmd.add_argument("--small", action="store_true", help="smoke-test sized data set")
    up_cmd.add_argument(
        "--rw",
        action="store_true",
        help="mount read-write (writes are delayed too, and MODIFY the cached image)",
    )
    sub.add_parser("down", help="tear everything down, even a half set-up stack")
    check_cmd = sub.add_parser("check", help="measure latency/bandwidth, print one JSON line")
    check_cmd.add_argument("--samples", type=int, default=50, help="random 4 KiB reads")
    check_cmd.add_argument("--readers", type=int, default=4, help="concurrent readers")
    sub.add_parser("path", help="print the origin mount point")
    sub.add_parser("status", help="print state, mounts and device counters as JSON")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = Config.from_env()
    if args.command == "path":
        print(cfg.origin)
        return 0
    if args.command == "status":
        print(json.dumps(status(cfg)))
        return 0
    if os.geteuid() != 0:
        log("needs root (mount, losetup, drop_caches)")
        return 2
    try:
        if args.command == "up":
            up(cfg, dataset.SMALL if args.small else dataset.FULL, args.rw)
        elif args.command == "down":
            return 0 if down(cfg) else 1
        elif args.command == "check":
            print(json.dumps(check(cfg, args.samples, args.readers)))
    except OriginError as exc:
        log(str(exc))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
