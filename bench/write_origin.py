"""Writable origins for the write benchmarks: the slow disk, read-write, and a tmpfs.

The read benchmarks' slow origin (slow_origin.py) is mounted read-only and holds
the data set; the write workloads get their own copy of the same stack on an
empty ext4, in a directory beside ``$BENCH_DIR`` (``$BENCH_DIR-writes``), so
neither can disturb the other::

    $BENCH_DIR-writes/disk-writes.img   empty ext4, made afresh by every `up`
    $BENCH_DIR-writes/delay/disk.img    delayfs.py --rw: the same seek + bandwidth model
    /dev/loopN                          read-write loop device on it (direct I/O)
    $BENCH_DIR-writes/origin/           the ext4, mounted read-write  <- write here

Writes reach the delay layer when the ext4 writes back: at fsync, or when the
kernel's dirty-page limits make it. The local origin is a tmpfs that run.py
mounts in its work directory (or any directory given with --local-origin).

Usage (as root)::

    python bench/write_origin.py up      # prints the origin directory
    python bench/write_origin.py status
    python bench/write_origin.py down
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import slow_origin

MiB = 1024 * 1024
IMAGE_BYTES = 768 * MiB  # three 64 MiB files at a time, with room to spare
TMPFS_BYTES = 1024 * MiB


def config() -> slow_origin.Config:
    """The read origin's settings (latency, bandwidth), in a directory of its own."""
    base = slow_origin.Config.from_env()
    return slow_origin.Config(
        bench_dir=base.bench_dir.with_name(base.bench_dir.name + "-writes"),
        latency_ms=base.latency_ms,
        mbps=base.mbps,
    )


def make_image(image: Path) -> None:
    image.unlink(missing_ok=True)
    with open(image, "wb") as out:
        out.truncate(IMAGE_BYTES)
    slow_origin.run([
        "mkfs.ext4", "-q", "-F", "-b", "4096", "-m", "0", "-J", "size=16", "-L", "bench-writes",
        "-E", "lazy_itable_init=0,lazy_journal_init=0,root_owner=0:0", str(image),
    ])  # fmt: skip


def up(cfg: slow_origin.Config) -> Path:
    """Bring the writable slow origin up (an empty file system each time)."""
    if slow_origin.is_mounted(cfg.origin):
        slow_origin.down(cfg)  # start empty: an earlier run may have left files
    cfg.bench_dir.mkdir(parents=True, exist_ok=True)
    image = cfg.image("writes")
    make_image(image)
    state = {"profile": "writes", "rw": True, "latency_ms": cfg.latency_ms, "mbps": cfg.mbps}
    cfg.state_file.write_text(json.dumps({**state, "image": str(image)}))
    slow_origin.start_delayfs(cfg, image, rw=True)
    device, dio = slow_origin.attach_loop(cfg, rw=True)
    slow_origin.mount_origin(cfg, device, rw=True)
    state.update(image=str(image), loop=device, loop_direct_io=dio, origin=str(cfg.origin))
    cfg.state_file.write_text(json.dumps(state, indent=1))
    return cfg.origin


def down(cfg: slow_origin.Config) -> bool:
    ok = slow_origin.down(cfg)
    cfg.image("writes").unlink(missing_ok=True)
    return ok


def mount_tmpfs(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    if not slow_origin.is_mounted(path):
        slow_origin.run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS_BYTES},mode=0755", "tmpfs",
                         str(path)])  # fmt: skip
    return path


def unmount_tmpfs(path: Path) -> None:
    if slow_origin.is_mounted(path):
        subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=("up", "down", "status", "path"))
    args = parser.parse_args(argv)
    cfg = config()
    if args.command == "path":
        print(cfg.origin)
        return 0
    if args.command == "status":
        print(json.dumps(slow_origin.status(cfg)))
        return 0
    if os.geteuid() != 0:
        slow_origin.log("needs root (mount, losetup)")
        return 2
    try:
        if args.command == "up":
            print(up(cfg))
        else:
            return 0 if down(cfg) else 1
    except slow_origin.OriginError as exc:
        slow_origin.log(str(exc))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
