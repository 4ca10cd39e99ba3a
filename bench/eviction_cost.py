"""What one eviction costs a disk tier, at 10k and 1M indexed chunks.

Drives ``DiskTier``'s own index code (``_pick_victims`` then ``_drop_entry``,
what ``make_room`` does under the tier lock) on a full tier held in memory:
no chunk files are written, so only the index and the policy are timed.
Each round stores one new 1 MiB chunk into a full tier; a round that needs
room picks a batch of victims (the tier evicts 2 % more than it needs, so
most rounds evict nothing). Reported per policy and index size:

* ``us_per_put``   mean CPU time of a store, eviction included (µs);
* ``us_per_victim`` the same time divided by the chunks evicted (µs);
* ``batch_ms``     the longest single batch (ms): how long the tier lock is held;
* ``us_per_hit``   the policy's bookkeeping of one read hit (µs).

Run by hand (a minute or two; 1M entries need ~1 GiB of RAM)::

    PYTHONPATH=. .venv/bin/python bench/eviction_cost.py [--sizes 10000,1000000] [--json]
        [--freeze-gc]

``--freeze-gc``: ``gc.freeze()`` the built index before the timed part, so the
cyclic collector's full passes over a million index objects (which land in
whichever round happens to trigger them) are not counted; the mount does not
freeze, so the default keeps the collector as the mount has it.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import tempfile
import time
from pathlib import Path
from typing import Any

from cachefs.config import TierConfig
from cachefs.data.tiers.disk import DiskTier
from cachefs.stats.counters import Stats

MiB = 1 << 20


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def policies() -> list[str]:
    from cachefs.config import EVICTION_POLICIES

    return list(EVICTION_POLICIES)


def measure(
    policy: str, entries: int, rounds: int, seed: int = 1, freeze_gc: bool = False
) -> dict[str, Any]:
    rng = random.Random(seed)
    clock = Clock()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = TierConfig("ssd", Path(tmp), entries * MiB, policy, 86400.0, 0)
        tier = DiskTier(cfg, b"n" * 32, Stats(), clock)
        tier.ready.set()  # the index is built by hand below: no directory scan
        for i in range(entries):
            digest = i.to_bytes(16, "little")
            tier.policy.add(digest, MiB, clock.now, 0.7)
            tier.bytes += MiB
            clock.now += 0.001
        if freeze_gc:
            gc.collect()
            gc.freeze()  # the index built so far is no longer scanned by the collector
        # a third of the chunks read again, as a warm tier's would be
        hits = [rng.randrange(entries).to_bytes(16, "little") for _ in range(entries // 3)]
        start = time.process_time()
        for digest in hits:
            clock.now += 0.001
            tier.policy.touch(digest, clock.now)
        us_per_hit = (time.process_time() - start) / max(1, len(hits)) * 1e6

        evicted = 0
        longest = 0.0
        total = 0.0
        for r in range(rounds):
            clock.now += 0.01
            digest = (entries + r).to_bytes(16, "little")
            t0 = time.process_time()
            if tier.bytes + MiB > cfg.max_size:
                victims = tier._pick_victims(tier.bytes + MiB - cfg.max_size)
                for victim, _ in victims:
                    tier._drop_entry(victim)
                evicted += len(victims)
            tier.policy.add(digest, MiB, clock.now, 0.7)
            tier.bytes += MiB
            elapsed = time.process_time() - t0
            total += elapsed
            longest = max(longest, elapsed)
        if freeze_gc:
            gc.unfreeze()
    return {
        "policy": policy,
        "entries": entries,
        "rounds": rounds,
        "evicted": evicted,
        "us_per_put": total / rounds * 1e6,
        "us_per_victim": total / max(1, evicted) * 1e6,
        "batch_ms": longest * 1e3,
        "us_per_hit": us_per_hit,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="10000,1000000", help="index sizes, comma-separated")
    parser.add_argument("--policies", default=",".join(policies()))
    parser.add_argument("--json", action="store_true")
    parser.add_argument(
        "--freeze-gc", action="store_true", help="gc.freeze() the built index before timing"
    )
    args = parser.parse_args()
    rows = []
    for entries in (int(s) for s in args.sizes.split(",")):
        # enough rounds for several batches (a batch frees 2 % of the tier)
        rounds = max(200, entries // 50 * 3 + 10)
        for policy in args.policies.split(","):
            rows.append(measure(policy, entries, rounds, freeze_gc=args.freeze_gc))
            if not args.json:
                r = rows[-1]
                print(
                    f"{r['policy']:8} {r['entries']:>9,} entries: {r['us_per_put']:8.1f} µs/put"
                    f" {r['us_per_victim']:8.1f} µs/victim  longest batch {r['batch_ms']:8.1f} ms"
                    f"  {r['us_per_hit']:5.2f} µs/hit",
                    flush=True,
                )
    if args.json:
        print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
