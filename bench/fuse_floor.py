"""The floor under (e) and (f'): a pyfuse3 file system that does nothing, against cachefs.

Run as root: ``.venv/bin/python bench/fuse_floor.py [--reps 7] [--small]``.

After ``drop_caches`` the kernel has forgotten every name, so a library scan
or an open of a small file is a chain of synchronous FUSE requests (OPENDIR,
READDIRPLUS twice, RELEASEDIR per directory; LOOKUP, OPEN, READ, FLUSH per
file) whatever the file system behind them does. This script generates the
bench data set (bench/dataset.py) in a temporary directory and runs, in the
same run and alternating,

* ``floor``: a pyfuse3 + trio file system mirroring that tree from memory,
  every request answered from a dict (no cache, stats or origin): the least
  any pyfuse3 file system can cost on this machine;
* ``cachefs``: cachefs over the same directory, warmed first, so every answer
  comes from its metadata cache and RAM tier;

through the (e) scan after drop_caches and the (f') open + 4 KiB + close
sample of bench/run.py, and prints medians and the cachefs / floor ratio.
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


def serve_floor(tree: str, mountpoint: str) -> None:
    """The do-nothing file system over a copy of *tree* in memory (a child process)."""
    import pyfuse3
    import trio

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
    tree, floor_mnt, cachefs_mnt = work / "tree", work / "floor", work / "cachefs"
    dataset.generate(tree, profile, quiet=True)
    floor_mnt.mkdir()
    cachefs_mnt.mkdir()
    repo = Path(__file__).resolve().parents[1]
    opts = f"tiers.ssd.path={work}/ssd,tiers.hdd.path={work}/hdd,stats.backend=embedded"
    mount = [sys.executable, "-m", "cachefs.cli", "mount", "-f", str(tree), str(cachefs_mnt)]
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    procs = {
        floor_mnt: subprocess.Popen(
            [sys.executable, __file__, "--serve", str(tree), str(floor_mnt)]
        ),
        cachefs_mnt: subprocess.Popen([*mount, "-o", opts], cwd=repo, **quiet),  # type: ignore[call-overload]
    }
    try:
        for mnt, proc in procs.items():
            wait_mounted(mnt, proc)
        workloads.library_scan(cachefs_mnt, 600)  # warm: metadata cache, RAM tier
        results: dict[str, dict[str, list[float]]] = {
            name: {"scan": [], "heads": []} for name in ("floor", "cachefs")
        }
        for _ in range(args.reps):  # alternate, so both see the same machine
            for name, mnt in (("floor", floor_mnt), ("cachefs", cachefs_mnt)):
                results[name]["scan"].append(scan_after_drop(mnt))
                results[name]["heads"].append(heads_p50(mnt, sample))
        report(results)
    finally:
        for mnt, proc in procs.items():
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
        print(f"{metric:5} cachefs / floor: {medians['cachefs'] / medians['floor']:.2f}x")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--serve":
        serve_floor(sys.argv[2], sys.argv[3])
    else:
        main()
