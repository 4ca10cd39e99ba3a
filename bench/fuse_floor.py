"""The floor under (e) and (f'): a pyfuse3 file system that does nothing, against cachefs.

Run as root: ``.venv/bin/python bench/fuse_floor.py [--reps 7] [--small]``.

After ``drop_caches`` the kernel has forgotten every name, so a library scan
or an open of a small file is a chain of synchronous FUSE requests (OPENDIR,
READDIRPLUS twice, RELEASEDIR per directory; OPEN, READ, RELEASE per file)
whatever the file system behind them does. This script generates the bench
data set (bench/dataset.py) in a temporary directory and runs, in the same run
and alternating,

* ``floor``: a pyfuse3 + trio file system mirroring that tree from memory,
  every request answered from a dict (no cache, stats or origin), on pyfuse3's
  own request loop: what any pyfuse3 file system pays for the round trips;
* ``floor+poll``: the same with cachefs's busy poll (cachefs/fuseloop.py);
* ``cachefs-nopoll``: cachefs with ``mount.busy_poll=0``, warmed first, so
  every answer comes from its metadata cache and RAM tier;
* ``cachefs``: the same with the default busy poll;

through the (e) scan after drop_caches and the (f') open + 4 KiB + close
sample of bench/run.py, and prints medians and ratios to the floor.
"""

from __future__ import annotations

import argparse
import errno
import os
import shutil
import stat
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import dataset
import workloads
from run import DataSet

SAMPLE = 300  # (f') files, as bench/run.py


def serve_floor(tree: str, mountpoint: str, busy_poll: bool) -> None:
    """The do-nothing file system over a copy of *tree* in memory (a child process)."""
    import pyfuse3
    import trio

    from cachefs.config import default_config
    from cachefs.fuse import loop as fuseloop

    class Floor(pyfuse3.Operations):
        supports_dot_lookup = False

        def __init__(self) -> None:
            super().__init__()
            self.children: dict[int, dict[bytes, int]] = {pyfuse3.ROOT_INODE: {}}
            self.attrs: dict[int, pyfuse3.EntryAttributes] = {}
            self.data: dict[int, bytes] = {}
            self.attrs[pyfuse3.ROOT_INODE] = self.make_attrs(pyfuse3.ROOT_INODE, os.lstat(tree))
            self.load(os.fsencode(tree), pyfuse3.ROOT_INODE)

        def make_attrs(self, ino: int, st: os.stat_result) -> pyfuse3.EntryAttributes:
            a = pyfuse3.EntryAttributes()
            a.st_ino, a.st_mode, a.st_nlink, a.st_size = ino, st.st_mode, st.st_nlink, st.st_size
            a.st_blksize, a.st_mtime_ns = 4096, st.st_mtime_ns
            a.entry_timeout = a.attr_timeout = 1.0
            return a

        def load(self, path: bytes, parent: int) -> None:
            for entry in os.scandir(path):
                ino = len(self.attrs) + pyfuse3.ROOT_INODE
                st = entry.stat(follow_symlinks=False)
                self.attrs[ino] = self.make_attrs(ino, st)
                self.children[parent][os.fsencode(entry.name)] = ino
                if stat.S_ISDIR(st.st_mode):
                    self.children[ino] = {}
                    self.load(os.fsencode(entry.path), ino)
                elif st.st_size < workloads.SMALL_FILE:
                    self.data[ino] = Path(os.fsdecode(entry.path)).read_bytes()

        async def lookup(self, parent: int, name: bytes, ctx: object) -> pyfuse3.EntryAttributes:
            ino = self.children.get(parent, {}).get(name)
            if ino is None:
                raise pyfuse3.FUSEError(errno.ENOENT)
            return self.attrs[ino]

        async def getattr(self, ino: int, ctx: object) -> pyfuse3.EntryAttributes:
            return self.attrs[ino]

        async def opendir(self, ino: int, ctx: object) -> int:
            return ino

        async def readdir(self, fh: int, start: int, token: pyfuse3.ReaddirToken) -> None:
            entries = list(self.children[fh].items())
            for index in range(start, len(entries)):
                name, ino = entries[index]
                if not pyfuse3.readdir_reply(token, name, self.attrs[ino], index + 1):
                    return

        async def releasedir(self, fh: int) -> None:
            return None

        async def open(self, ino: int, flags: int, ctx: object) -> pyfuse3.FileInfo:
            return pyfuse3.FileInfo(fh=ino)

        async def read(self, fh: int, off: int, size: int) -> bytes:
            return self.data.get(fh, b"")[off : off + size]

        async def flush(self, fh: int) -> None:
            return None

        async def release(self, fh: int) -> None:
            return None

    pyfuse3.init(Floor(), mountpoint, {"fsname=floor", "default_permissions"})
    if busy_poll:
        fuseloop.install(default_config().mount.busy_poll)
    try:
        trio.run(pyfuse3.main)
    finally:
        pyfuse3.close()


def wait_mounted(mnt: Path, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 120
    while not os.path.ismount(mnt):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"{mnt} did not mount")
        time.sleep(0.05)


def drop_caches() -> None:
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def scan_after_drop(root: Path) -> float:
    drop_caches()
    return float(workloads.library_scan(root, 600)["seconds"])  # type: ignore[arg-type]


def heads_p50(root: Path, sample: list[str]) -> float:
    drop_caches()
    return float(workloads.small_file_heads(root, sample, 600)["p50_ms"])  # type: ignore[arg-type]


def start_system(name: str, tree: Path, work: Path) -> tuple[Path, subprocess.Popen[bytes]]:
    """Mount system *name* over *tree* in *work*; returns its mount point and process."""
    mnt = work / name
    mnt.mkdir()
    if name.startswith("floor"):
        poll = "poll" if name == "floor+poll" else "stock"
        cmd = [sys.executable, __file__, "--serve", str(tree), str(mnt), poll]
        return mnt, subprocess.Popen(cmd)
    opts = f"tiers.ssd.path={work}/{name}-ssd,tiers.hdd.path={work}/{name}-hdd"
    opts += ",stats.backend=embedded"
    if name == "cachefs-nopoll":
        opts += ",mount.busy_poll=0"
    cmd = [sys.executable, "-m", "cachefs", "mount", "-f", str(tree), str(mnt), "-o", opts]
    repo = Path(__file__).resolve().parents[1]
    quiet = subprocess.DEVNULL
    return mnt, subprocess.Popen(cmd, cwd=repo, stdout=quiet, stderr=quiet)


SYSTEMS = ("floor", "floor+poll", "cachefs-nopoll", "cachefs")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--small", action="store_true", help="the small data set")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root (mounts, drop_caches)")
    profile = dataset.SMALL if args.small else dataset.FULL
    sample = DataSet.load(profile, SAMPLE).small
    work = Path(tempfile.mkdtemp(prefix="cachefs-floor-"))
    tree = work / "tree"
    dataset.generate(tree, profile, quiet=True)
    mounts: dict[str, tuple[Path, subprocess.Popen[bytes]]] = {}
    try:
        for name in SYSTEMS:
            mounts[name] = start_system(name, tree, work)
            wait_mounted(*mounts[name])
            workloads.library_scan(mounts[name][0], 600)  # warm: metadata cache, RAM tier
        results: dict[str, dict[str, list[float]]] = {
            name: {"scan": [], "heads": []} for name in SYSTEMS
        }
        for _ in range(args.reps):  # alternate, so all see the same machine
            for name, (mnt, _) in mounts.items():
                results[name]["scan"].append(scan_after_drop(mnt))
                results[name]["heads"].append(heads_p50(mnt, sample))
        report(results)
    finally:
        for mnt, proc in mounts.values():
            subprocess.run(["fusermount3", "-u", str(mnt)], capture_output=True)
            proc.wait(timeout=60)
        shutil.rmtree(work, ignore_errors=True)


def report(results: dict[str, dict[str, list[float]]]) -> None:
    for metric, unit in (("scan", "s"), ("heads", "ms p50")):
        medians = {}
        for name, values in results.items():
            medians[name] = statistics.median(values[metric])
            runs = ", ".join(f"{v:.3f}" for v in values[metric])
            print(f"{metric:5} {name:8} median {medians[name]:.3f} {unit}  (runs: {runs})")
        for name in SYSTEMS[1:]:
            print(f"{metric:5} {name} / floor: {medians[name] / medians['floor']:.2f}x")


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--serve":
        serve_floor(sys.argv[2], sys.argv[3], busy_poll=sys.argv[4] == "poll")
    else:
        main()
