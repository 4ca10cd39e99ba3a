"""The three systems `bench/run.py` compares, behind one small interface.

* ``origin``  -- the slow origin read directly: its only cache is the kernel's.
* ``rclone``  -- ``rclone mount`` of the origin directory with its VFS cache
  (``--vfs-cache-mode full``), cache and config in a private directory.
* ``cachefs`` -- ``python -m cachefs mount -f`` with default settings and
  disk tiers big enough for the data set, tier directories in a private directory.
* ``cachefs-wb`` -- the same with ``mount.writeback_cache=true`` (write workloads).
* ``cachefs-nopoll`` -- ``cachefs`` with ``mount.busy_poll=0``: what the busy poll costs.
* ``cachefs-base`` -- ``cachefs`` run from another checkout (``--base-tree``), to
  compare two versions of cachefs in one run.

"Cold" for a system means an empty cache of its own: `reset()` unmounts,
deletes the cache directories and mounts afresh (the caller then drops the
kernel's caches). Each FUSE daemon runs in the foreground as our child, in its
own session, so a Ctrl-C reaches only this process and teardown stays ours.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from slow_origin import is_mounted

REPO = Path(__file__).resolve().parent.parent
MOUNT_TIMEOUT_S = 30.0
# cachefs drains its disk-store queue for at most 10 s at unmount; allow for that.
EXIT_TIMEOUT_S = 30.0

# Defaults plus disk tiers that hold the whole data set (1.14 GB), as the task asks.
# stats.backend=embedded: the default (auto) would write to a Redis on
# localhost:6379 if one happened to run; embedded keeps the run self-contained.
CACHEFS_OPTIONS = "tiers.hdd.max_size=4GiB,tiers.ssd.max_size=2GiB,stats.backend=embedded"
RCLONE_FLAGS = ["--vfs-cache-mode", "full", "--vfs-fast-fingerprint"]
CLOCK_TICK_S = 1 / os.sysconf("SC_CLK_TCK")  # the unit of /proc/PID/stat's CPU times


class MountError(RuntimeError):
    """A FUSE daemon did not come up; the message carries its log tail."""


def peak_rss_bytes(pid: int) -> int | None:
    """VmHWM (peak resident set) of a live process, or None if it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return None


def cpu_seconds(pid: int) -> float | None:
    """CPU time of a live process: all its threads, live and exited (its CPU-time
    clock, ns), plus its reaped children (cutime + cstime of /proc/PID/stat, in
    ticks); None if it is gone. utime + stime in ticks if the clock is unreadable."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # After "pid (comm)": field 3 (state) is [0], so utime..cstime (14..17) are [11:15].
    utime, stime, cutime, cstime = (int(f) for f in stat.rsplit(")", 1)[1].split()[11:15])
    try:
        # clock_getcpuclockid(pid), which Python lacks: MAKE_PROCESS_CPUCLOCK(pid, SCHED).
        own = time.clock_gettime((~pid << 3) | 2)
    except OSError:
        own = (utime + stime) * CLOCK_TICK_S
    return own + (cutime + cstime) * CLOCK_TICK_S


def force_unmount(path: Path) -> None:
    """Detach a FUSE mount whatever state its daemon is in."""
    for cmd in (["fusermount3", "-u"], ["fusermount3", "-uz"], ["umount", "-l"]):
        if not is_mounted(path):
            return
        subprocess.run([*cmd, str(path)], capture_output=True, check=False)


class System:
    """The origin itself: nothing to mount and no cache but the kernel's."""

    name = "origin"

    def __init__(self, origin: Path, workdir: Path, logs: Path) -> None:
        self.origin = origin
        self.workdir = workdir
        self.logs = logs

    @property
    def root(self) -> Path:
        """Where workloads read the data set."""
        return self.origin

    def reset(self) -> None:
        """Empty this system's own cache and make it ready to read."""

    def stop(self) -> None:
        """Release everything; safe to call at any time, repeatedly."""

    def remount(self) -> None:
        """Unmount and mount again, keeping the cache: what a daemon restart keeps."""

    def abort(self) -> None:
        """Called by the watchdog from another thread: make blocked reads fail."""

    def take_peak_rss(self) -> list[int]:
        """Peak RSS of each daemon instance since the last call."""
        return []

    def died(self) -> str | None:
        """If the daemon has exited on its own: how, with the end of its log."""
        return None

    def cpu_seconds(self) -> float | None:
        """CPU time the daemon has used so far (None: no daemon, or it is gone)."""
        return None

    def describe(self) -> dict[str, object]:
        return {"reads": str(self.origin)}


class FuseSystem(System):
    """A FUSE daemon over the origin, run as a foreground child process."""

    def __init__(self, origin: Path, workdir: Path, logs: Path) -> None:
        super().__init__(origin, workdir, logs)
        self.base = workdir / self.name
        self.mnt = self.base / "mnt"
        self.cache = self.base / "cache"
        # Beside the results, not in the work dir: a crash must stay explainable.
        self.log = logs / f"{self.name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.peaks: list[int] = []

    @property
    def root(self) -> Path:
        return self.mnt

    def command(self) -> list[str]:
        raise NotImplementedError

    def environment(self) -> dict[str, str] | None:
        """The daemon's environment (None: ours)."""
        return None

    def directory(self) -> Path:
        """The daemon's working directory (``python -m`` imports from it first)."""
        return REPO

    def reset(self) -> None:
        self.stop()
        shutil.rmtree(self.cache, ignore_errors=True)
        self.cache.mkdir(parents=True)
        self.mnt.mkdir(parents=True, exist_ok=True)
        self._start()

    def remount(self) -> None:
        self.stop()
        self._start()

    def _start(self) -> None:
        cmd = self.command()
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:
            log.write(f"--- {time.strftime('%H:%M:%S')} {' '.join(cmd)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.directory(),
                env=self.environment(),
                start_new_session=True,
            )
        deadline = time.monotonic() + MOUNT_TIMEOUT_S
        while not (is_mounted(self.mnt) and self._answers()):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                tail = self.log.read_text(errors="replace")[-3000:]
                self.stop()
                raise MountError(f"{self.name} did not mount {self.mnt}; log tail:\n{tail}")
            time.sleep(0.05)

    def _answers(self) -> bool:
        try:
            os.listdir(self.mnt)
        except OSError:
            return False
        return True

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            force_unmount(self.mnt)
            return
        # VmHWM must be read while the process still exists.
        if (peak := peak_rss_bytes(proc.pid)) is not None:
            self.peaks.append(peak)
        force_unmount(self.mnt)
        try:
            proc.wait(timeout=EXIT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self._kill(proc)

    def _kill(self, proc: subprocess.Popen[bytes]) -> None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, sig)
            try:
                proc.wait(timeout=10)
                return
            except subprocess.TimeoutExpired:
                continue

    def abort(self) -> None:
        proc = self.proc
        if proc is None:
            return
        if (peak := peak_rss_bytes(proc.pid)) is not None:
            self.peaks.append(peak)
        # Killing the daemon closes /dev/fuse: every waiting request fails with ENOTCONN.
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        force_unmount(self.mnt)

    def take_peak_rss(self) -> list[int]:
        peaks, self.peaks = self.peaks, []
        return peaks

    def cpu_seconds(self) -> float | None:
        proc = self.proc
        return None if proc is None else cpu_seconds(proc.pid)

    def died(self) -> str | None:
        if self.proc is None or self.proc.poll() is None:
            return None
        tail = self.log.read_text(errors="replace")[-1500:]
        return f"{self.name} exited with status {self.proc.returncode}; {self.log} ends:\n{tail}"


class Rclone(FuseSystem):
    name = "rclone"

    def command(self) -> list[str]:
        config = self.base / "rclone.conf"
        config.touch()  # an empty private config: nothing in ~ is read or written
        return [
            "rclone", "mount", str(self.origin), str(self.mnt), *RCLONE_FLAGS,
            "--cache-dir", str(self.cache), "--config", str(config),
        ]  # fmt: skip

    def describe(self) -> dict[str, object]:
        return {"flags": " ".join(RCLONE_FLAGS), "cache_dir": str(self.cache)}


class Cachefs(FuseSystem):
    name = "cachefs"
    tree = REPO  # the checkout whose cachefs package the daemon runs
    mode_options = ""  # what this variant sets beyond CACHEFS_OPTIONS

    def __init__(self, origin: Path, workdir: Path, logs: Path) -> None:
        super().__init__(origin, workdir, logs)
        self.extra_options = ""  # set by the caller: e.g. a smaller RAM tier for writes

    def settings(self) -> str:
        """Every -o setting but the tier directories."""
        return ",".join(o for o in (CACHEFS_OPTIONS, self.mode_options, self.extra_options) if o)

    def options(self) -> str:
        tiers = f"tiers.ssd.path={self.cache / 'ssd'},tiers.hdd.path={self.cache / 'hdd'}"
        return f"{self.settings()},{tiers}"

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", self.module(), "mount", "-f",
            str(self.origin), str(self.mnt), "-o", self.options(),
        ]  # fmt: skip

    def module(self) -> str:
        """``python -m`` target: a checkout from before the package layout has cachefs.cli."""
        return "cachefs" if (self.tree / "cachefs" / "__main__.py").exists() else "cachefs.cli"

    def environment(self) -> dict[str, str] | None:
        if self.tree == REPO:
            return None
        return {**os.environ, "PYTHONPATH": str(self.tree)}

    def directory(self) -> Path:
        return self.tree

    def describe(self) -> dict[str, object]:
        found: dict[str, object] = {"options": self.settings(), "tier_dirs": str(self.cache)}
        if self.tree != REPO:
            found["tree"] = str(self.tree)
        return found

    def stats(self) -> dict:
        """The mount's ``user.cachefs.stats`` (counters and tier sizes), {} if unreadable."""
        try:
            return json.loads(os.getxattr(self.mnt, "user.cachefs.stats"))
        except (OSError, ValueError):
            return {}


class CachefsWriteback(Cachefs):
    """cachefs with the kernel's writeback cache: write() returns before the origin has
    the bytes, which reach it at writeback, fsync and close (docs/configuration.md)."""

    name = "cachefs-wb"
    mode_options = "mount.writeback_cache=true"


class CachefsNoPoll(Cachefs):
    """cachefs with the busy poll off: set beside ``cachefs`` to see what polling costs."""

    name = "cachefs-nopoll"
    mode_options = "mount.busy_poll=0"


class CachefsBase(Cachefs):
    """cachefs from another checkout (``CachefsBase.tree``, set from --base-tree)."""

    name = "cachefs-base"

    def _start(self) -> None:
        if self.tree == REPO:
            raise MountError("cachefs-base needs --base-tree (another checkout of cachefs)")
        super()._start()


SYSTEMS: dict[str, type[System]] = {
    "origin": System,
    "rclone": Rclone,
    "cachefs": Cachefs,
    "cachefs-wb": CachefsWriteback,
    "cachefs-nopoll": CachefsNoPoll,
    "cachefs-base": CachefsBase,
}
