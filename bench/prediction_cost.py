"""What prediction costs: CPU per open and memory per tracked file.

Run: ``.venv/bin/python bench/prediction_cost.py`` (no root, no mount: the
predictor alone, the same code the mount runs on every read-only open).

A library of DIRS directories of FILES files each is opened in a seeded mix
of in-order runs (a season) and random jumps (a shuffle); the predictor sees
every open with the directory's sorted listing, as the prefetcher hands it
(sorted once per directory, as the prefetcher's cache does). Prints µs per
open (median of 5 runs) and bytes per tracked file (tracemalloc).
"""

from __future__ import annotations

import random
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from cachefs.data.prediction import Predictor, SiblingOrder

DIRS, FILES, OPENS = 200, 500, 50_000


def stream(seed: int) -> list[bytes]:
    rng = random.Random(seed)
    opens: list[bytes] = []
    while len(opens) < OPENS:
        d = rng.randrange(DIRS)
        start = rng.randrange(FILES)
        run = rng.choice([1, 1, 2, 8, 20])  # shuffles and seasons
        opens += [f"lib/d{d:03d}/E{(start + k) % FILES:04d}.mkv".encode() for k in range(run)]
    return opens[:OPENS]


def main() -> None:
    orders = {
        f"lib/d{d:03d}".encode(): SiblingOrder(f"E{n:04d}.mkv".encode() for n in range(FILES))
        for d in range(DIRS)
    }
    opens = stream(1)
    timings = []
    for _ in range(5):
        model = Predictor(window_size=100)
        t0 = time.perf_counter()
        for path in opens:
            model.opened(path, orders.get)
        timings.append((time.perf_counter() - t0) / len(opens) * 1e6)
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    model = Predictor(window_size=100)
    for path in opens:
        model.opened(path, orders.get)
    after = tracemalloc.take_snapshot()
    grown = sum(s.size_diff for s in after.compare_to(before, "filename"))
    tracked = model.tracked_files()
    print(f"opens: {len(opens)}, directories: {DIRS} x {FILES} files, window 100")
    print(
        f"CPU per open: {statistics.median(timings):.1f} us (median of 5; min {min(timings):.1f})"
    )
    print(f"model: {tracked} files tracked, {grown / max(1, tracked):.0f} bytes per tracked file")


if __name__ == "__main__":
    main()
