"""Memory per entry after a library scan: where a million-entry library's RSS goes.

    .venv/bin/python bench/entry_memory.py [--dirs 2000] [--per-dir 50] [--tree DIR]

An in-process mount (the real CacheFS handlers, no kernel) over a generated
origin of --dirs directories of --per-dir small files; every directory is
listed and every entry looked up, as the kernel does in a walk + lstat, so
the metadata cache, the inode table and what the handlers keep per inode hold
the whole library. The metadata journal is taken first (the saver does that
every second in a mount), then tracemalloc reports the bytes each source line
holds, per entry. --tree runs another checkout the same way, each in its own
interpreter, for a before/after in the same run.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import tracemalloc
from pathlib import Path
from typing import Any


def build_origin(root: Path, dirs: int, per_dir: int) -> None:
    marker = root / f".built-{dirs}x{per_dir}"
    if marker.exists():
        return
    for d in range(dirs):
        directory = root / "lib" / f"{d:05d}"
        directory.mkdir(parents=True, exist_ok=True)
        for f in range(per_dir):
            (directory / f"file{f:04d}.nfo").write_bytes(b"x")
    marker.touch()


def measure(root: Path, dirs: int, top: int) -> dict[str, Any]:
    import pyfuse3
    import trio

    from cachefs.app import compose
    from cachefs.config import load_config
    from cachefs.origin.access import Origin
    from cachefs.stats.counters import EmbeddedBackend

    def readdir_reply(token: list[bytes], name: bytes, attrs: Any, next_id: int) -> bool:
        token.append(name)
        return True

    pyfuse3.readdir_reply = readdir_reply  # the kernel's side: collect the names
    state = Path(tempfile.mkdtemp(prefix="entry-memory-"))
    cfg = load_config(
        None,
        {
            "tiers.ram.max_size": "8MiB",
            "tiers.ssd.path": str(state / "ssd"),
            "tiers.hdd.path": str(state / "hdd"),
            "stats.backend": "embedded",
            "metadata.watch": "off",
            "metadata.max_entries": "100000000",
        },
    )
    parts = compose.build(
        Origin(str(root)), cfg, lambda: EmbeddedBackend(state / "stats.json", 3600)
    )
    parts.open()
    parts.connect()

    class Ctx:
        uid, gid, pid, umask = os.geteuid(), os.getegid(), os.getpid(), 0o022

    entries = 0

    async def scan() -> None:
        nonlocal entries
        fs = parts.fs
        lib = (await fs.lookup(pyfuse3.ROOT_INODE, b"lib", Ctx)).st_ino  # type: ignore[arg-type]
        for d in range(dirs):
            inode = (await fs.lookup(lib, b"%05d" % d, Ctx)).st_ino  # type: ignore[arg-type]
            fh = await fs.opendir(inode, Ctx)  # type: ignore[arg-type]
            names: list[bytes] = []
            await fs.readdir(fh, 0, names)  # type: ignore[arg-type]
            await fs.releasedir(fh)
            for name in names:
                await fs.lookup(inode, name, Ctx)  # type: ignore[arg-type]
            entries += 1 + len(names)
        parts.meta.journal.take()  # what the saver writes every second

    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    trio.run(scan)
    gc.collect()
    after = tracemalloc.take_snapshot()
    stats = after.compare_to(before, "lineno")
    result = {
        "entries": entries,
        "bytes_per_entry": round(sum(s.size_diff for s in stats) / entries),
        "top": [(round(s.size_diff / entries, 1), str(s.traceback)) for s in stats[:top]],
    }
    parts.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dirs", type=int, default=2000)
    parser.add_argument("--per-dir", type=int, default=50)
    parser.add_argument("--origin", type=Path, default=Path("/tmp/cachefs-entry-memory"))
    parser.add_argument("--top", type=int, default=10, help="source lines to show")
    parser.add_argument("--tree", type=Path, help="another checkout of cachefs to measure")
    parser.add_argument("--measure-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure_only:
        print(json.dumps(measure(args.origin, args.dirs, args.top)))
        return
    build_origin(args.origin, args.dirs, args.per_dir)
    trees = {"cachefs": Path(__file__).resolve().parent.parent}
    if args.tree:
        trees["cachefs-base"] = args.tree.resolve()
    for name, tree in trees.items():
        out = subprocess.run(
            [sys.executable, __file__, "--measure-only", "--origin", str(args.origin),
             "--dirs", str(args.dirs), "--top", str(args.top)],
            env={**os.environ, "PYTHONPATH": str(tree)}, cwd=tree,
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        result = json.loads(out.stdout)
        print(f"{name}: {result['bytes_per_entry']} bytes per entry ({result['entries']} entries)")
        for size, where in result["top"]:
            print(f"  {size:7.1f} B  {where.replace(str(tree) + '/', '')}")


if __name__ == "__main__":
    main()
