"""The fault suite: each guarantee, tried the way it breaks. Every case is bounded in
time and checks bytes exactly.

Never wrong: short-lived handles with read-ahead in flight, kill -9 under load,
corrupt and swapped chunk files. Never stuck: a hung origin under writers and
readers. Never stale: see test_coherence_matrix.py.
"""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

from .conftest import MountFactory

MiB = 1024 * 1024


def file_bytes(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


def test_short_lived_handles_with_read_ahead_read_only_their_own_bytes(
    origin: Path, mount_factory: MountFactory
) -> None:
    """Readers open, read a few MiB sequentially (so read-ahead runs) and close
    at once, many at a time: every byte is the file's own."""
    files = {f"Movies/m{i}.mkv": file_bytes(i, 12 * MiB) for i in range(6)}
    for rel, data in files.items():
        (origin / rel).parent.mkdir(exist_ok=True)
        (origin / rel).write_bytes(data)
    m = mount_factory(origin, ["tiers.ram.max_size=16MiB", "stats.backend=embedded"])
    names = sorted(files)
    wrong: list[str] = []
    reads = [0]
    stop = time.monotonic() + 6.0

    def reader(seed: int) -> None:
        rng = random.Random(seed)
        while time.monotonic() < stop and not wrong:
            rel = rng.choice(names)
            start = rng.randrange(0, 10 * MiB)
            length = rng.randrange(128 * 1024, 2 * MiB)
            with open(m.mnt / rel, "rb") as f:
                f.seek(start)
                got = f.read(length)
            reads[0] += 1
            if got != files[rel][start : start + length]:
                wrong.append(f"{rel} [{start}, +{length})")

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not wrong, wrong
    assert reads[0] > 50
    assert m.stats()["open_files"] == 0
