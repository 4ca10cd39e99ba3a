"""The part of ``make demo`` that shows the cache: one movie read cold, then again.

Between the two reads the kernel's page cache is dropped (``echo 3 >
/proc/sys/vm/drop_caches``, as root), so the second read reaches cachefs
and is answered by its tiers. Without root, both reads use ``O_DIRECT``,
which passes the page cache of the mount by. The numbers printed come from
the mount's stats xattr, before and after each read.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rich.console import Group

from cachefs.app.commands.mounts import read_stats
from cachefs.app.commands.output import console_out, size
from cachefs.app.commands.stats import lookups_table, summarize, tiers_table

PIECE = 1024 * 1024  # bytes a read asks for, as a player would
EVICT = "user.cachefs.evict"
RESIDENCY = "user.cachefs.residency"
SETTLE_SECONDS = 10.0  # the most the tour waits for chunks to reach their disk tier


def drop_kernel_caches() -> bool:
    """Empty the page cache (of the mount and of the origin); False without root."""
    if os.geteuid() != 0:
        return False
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
    except OSError:
        return False  # a container may refuse it even to root
    return True


def read_through(path: Path, direct: bool) -> int:
    """Read a whole file in PIECE requests; the bytes read."""
    flags = os.O_RDONLY | (os.O_DIRECT if direct else 0)
    fd = os.open(path, flags)
    total = 0
    try:
        while data := os.pread(fd, PIECE, total):
            total += len(data)
    finally:
        os.close(fd)
    return total


def from_tiers(before: dict[str, Any], after: dict[str, Any]) -> dict[str, int]:
    """Bytes each tier served to reads between two stats answers."""
    served: dict[str, int] = {}
    for key, value in after.get("tier_bytes", {}).items():
        tier = key.partition(":")[0]
        served[tier] = served.get(tier, 0) + value - before.get("tier_bytes", {}).get(key, 0)
    return {tier: n for tier, n in served.items() if n}


def timed_read(mnt: Path, path: Path, direct: bool) -> dict[str, Any]:
    before = read_stats(str(mnt))
    started = time.perf_counter()
    nbytes = read_through(path, direct)
    seconds = time.perf_counter() - started
    after = read_stats(str(mnt))
    return {
        "bytes": nbytes,
        "seconds": seconds,
        "origin": after["origin_bytes_read"] - before["origin_bytes_read"],
        "tiers": from_tiers(before, after),
    }


def describe(read: dict[str, Any]) -> str:
    speed = read["bytes"] / read["seconds"] / 2**20 if read["seconds"] else 0.0
    tiers = ", ".join(f"{tier} {size(n)}" for tier, n in read["tiers"].items()) or "none"
    return (
        f"{size(read['bytes'])} in {read['seconds']:.3f} s ({speed:.0f} MiB/s); "
        f"from the origin {size(read['origin'])}, from cachefs's tiers: {tiers}"
    )


def settle(paths: list[Path]) -> list[dict[str, int]]:
    """The files' residency once their chunks are in a disk tier (stores run behind the
    reads), or as it is after SETTLE_SECONDS."""
    deadline = time.monotonic() + SETTLE_SECONDS
    while True:
        residencies = [json.loads(os.getxattr(path, RESIDENCY)) for path in paths]
        if all(r["ssd"] + r["hdd"] >= r["chunks"] for r in residencies):
            return residencies
        if time.monotonic() > deadline:
            return residencies
        time.sleep(0.1)


def metadata_files(mnt: Path) -> Iterator[Path]:
    for pattern in ("*.nfo", "*.json"):
        yield from sorted((mnt / "Shows").glob(f"*/Season 01/{pattern}"))


def tour(mnt: Path, direct: bool = False) -> None:
    movie = sorted((mnt / "Movies").glob("*/movie.mkv"))[0]
    name = movie.relative_to(mnt)
    os.setxattr(movie, EVICT, b"1")  # cold even when the demo ran before
    dropped = not direct and drop_kernel_caches()
    direct = direct or not dropped
    how = "O_DIRECT reads (no root: the page cache is passed by)" if direct else "buffered reads"
    print(f"Reading {name} twice, {how}:")
    cold = timed_read(mnt, movie, direct)
    print(f"  1. cold (evicted from cachefs first):  {describe(cold)}")
    if dropped:
        drop_kernel_caches()
        print("     kernel page cache dropped (echo 3 > /proc/sys/vm/drop_caches)")
    warm = timed_read(mnt, movie, direct)
    print(f"  2. again:                              {describe(warm)}")
    if warm["origin"] == 0 and warm["tiers"]:
        where = " and ".join(warm["tiers"])
        print(f"  The second read reached cachefs and came from its {where} tier, not the origin.")
    (residency,) = settle([movie])
    print(
        f"  {name.name} is now in ram: {residency['ram']}, ssd: {residency['ssd']}, "
        f"hdd: {residency['hdd']} of its {residency['chunks']} chunks."
    )

    saved_before = read_stats(str(mnt))["compressed_bytes_saved"]
    files = list(metadata_files(mnt))
    nbytes = sum(read_through(path, direct=True) for path in files)
    settle(files)
    saved = read_stats(str(mnt))["compressed_bytes_saved"] - saved_before
    print()
    print(
        f"Metadata: {len(files)} .nfo/.json files read ({size(nbytes)}); zstd shrank their "
        f"chunks in the disk tier to {size(nbytes - saved)}. Video and JPEG artwork do not "
        "compress and are stored as they are."
    )
    print()
    print(f"cachefs stats {mnt} (the first tables):")
    report = summarize(str(mnt), read_stats(str(mnt)))
    console_out().print(Group(lookups_table(report), tiers_table(report)))
