"""cachefs's eviction policies against LRU and libCacheSim's best online policies.

Every figure comes from replaying a trace through cachefs.data.simulate: the
RAM tier is the real ``RamTier`` (W-TinyLFU), a disk tier is the same policy
class and victim picking ``DiskTier`` uses; the references are libCacheSim's
(``pip install libcachesim``) LRU, ARC, LIRS, S3-FIFO, W-TinyLFU and SIEVE, fed
the same requests through its Python bindings.

Traces (synthetic, generated here from fixed seeds: the same on every run;
libCacheSim's wheel ships no sample trace, and nothing is downloaded):

* ``zipf-0.6`` .. ``zipf-1.2``: 200k requests over 20k objects of mixed sizes
  (1 KiB .. 1 MiB, log-uniform), Zipf popularity of that alpha;
* ``zipf+scan``: Zipf 1.0 over 10k objects, with a one-time scan of 5x the
  largest cache size through the middle of the trace;
* ``loop``: half the requests walk a loop over 8k objects, half are Zipf 1.0
  over 2k others;
* ``files``: a file-system-like trace: 3,000 files (70 % 1-64 KiB, 25 %
  64 KiB-4 MiB, 5 % 16-256 MiB), popularity Zipf 0.8, each access reads the
  whole file sequentially in 1 MiB chunks (the objects are chunks), and a file
  just read is read again soon with probability 0.3.

Sizes: 1, 5, 10 and 20 % of each trace's working set, in bytes. Reported:
request and byte miss ratio per policy; "best ref" is the lowest of the
references. Then the scan test (``--scan``): a hot set read over and over,
then a one-time scan of 5x the cache that reads each object twice, one second
apart, while the hot set keeps being read; the hot set's hit ratio during and
after the scan. And CPU µs per request of each policy (the references through
their Python bindings: a C policy plus a Python loop).

    PYTHONPATH=. .venv/bin/python bench/policies.py [--quick] [--objects] [--json FILE]
        [--traces loop,files] [--no-scan]

About 7 minutes on 2 cores (``--quick``: 50k requests a trace, about three
minutes).
"""

from __future__ import annotations

import argparse
import bisect
import functools
import itertools
import json
import math
import platform
import random
import sys
import time
from collections.abc import Callable
from typing import Any

from cachefs.data import simulate as sim

SHARES = (0.01, 0.05, 0.10, 0.20)
KiB, MiB = 1 << 10, 1 << 20
# (label, tier model, eviction): what cachefs is measured as
CACHEFS = [
    ("ram (tinylfu)", "ram", "tinylfu"),
    ("disk tinylfu", "ssd", "tinylfu"),
    ("disk lru", "ssd", "lru"),
    ("disk lfu", "ssd", "lfu"),
    ("disk weight", "ssd", "weight"),
]


# --------------------------------------------------------------------------- traces


def zipf_sampler(n: int, alpha: float, rng: random.Random) -> Callable[[], int]:
    cdf = list(itertools.accumulate(1.0 / (i**alpha) for i in range(1, n + 1)))
    total = cdf[-1]
    perm = list(range(n))
    rng.shuffle(perm)  # popularity is not the id order

    def draw() -> int:
        return perm[bisect.bisect_left(cdf, rng.random() * total)]

    return draw


def log_uniform(rng: random.Random, low: int, high: int) -> int:
    return int(math.exp(rng.uniform(math.log(low), math.log(high))))


def object_sizes(n: int, rng: random.Random) -> list[int]:
    return [log_uniform(rng, KiB, MiB) for _ in range(n)]


def zipf_trace(alpha: float, requests: int, objects: int = 20_000, seed: int = 1) -> sim.Trace:
    rng = random.Random(seed)
    sizes = object_sizes(objects, rng)
    draw = zipf_sampler(objects, alpha, rng)
    trace = sim.Trace()
    for i in range(requests):
        obj = draw()
        trace.append(i * 0.01, obj, sizes[obj])
    return trace


def zipf_scan_trace(requests: int, seed: int = 2) -> sim.Trace:
    rng = random.Random(seed)
    objects = 10_000
    sizes = object_sizes(objects, rng)
    draw = zipf_sampler(objects, 1.0, rng)
    wss = sum(sizes)
    scan_bytes = 5 * max(SHARES) * wss  # 5x the largest cache
    trace = sim.Trace()
    t = 0.0
    scan_obj = objects
    for i in range(requests):
        t += 0.01
        obj = draw()
        trace.append(t, obj, sizes[obj])
        if i == requests // 2:  # the scan, through the middle
            scanned = 0.0
            while scanned < scan_bytes:
                size = log_uniform(rng, KiB, MiB)
                t += 0.01
                trace.append(t, scan_obj, size)
                scan_obj += 1
                scanned += size
    return trace


def loop_trace(requests: int, seed: int = 3) -> sim.Trace:
    rng = random.Random(seed)
    loop_n, zipf_n = 8_000, 2_000
    sizes = object_sizes(loop_n + zipf_n, rng)
    draw = zipf_sampler(zipf_n, 1.0, rng)
    trace = sim.Trace()
    position = 0
    for i in range(requests):
        if i % 2:
            obj = position
            position = (position + 1) % loop_n
        else:
            obj = loop_n + draw()
        trace.append(i * 0.01, obj, sizes[obj])
    return trace


def files_trace(requests: int, seed: int = 4) -> sim.Trace:
    rng = random.Random(seed)
    files = 3_000
    file_sizes = []
    for _ in range(files):
        u = rng.random()
        if u < 0.70:
            file_sizes.append(log_uniform(rng, KiB, 64 * KiB))
        elif u < 0.95:
            file_sizes.append(log_uniform(rng, 64 * KiB, 4 * MiB))
        else:
            file_sizes.append(log_uniform(rng, 16 * MiB, 256 * MiB))
    draw = zipf_sampler(files, 0.8, rng)
    trace = sim.Trace()
    t = 0.0
    last = None
    while len(trace) < requests:
        f = last if last is not None and rng.random() < 0.3 else draw()
        last = f
        size = file_sizes[f]
        chunks = -(-size // MiB)
        for c in range(chunks):
            length = min(MiB, size - c * MiB)
            t += 0.001 + length / (100 * MiB)  # read at ~100 MB/s
            trace.append(t, f * 1024 + c, length)
            if len(trace) >= requests:
                break
        t += rng.expovariate(1.0)  # think time between files
    return trace


def traces(requests: int, only: set[str] | None = None) -> dict[str, sim.Trace]:
    """Every trace (or those named in *only*), by name."""
    makers: dict[str, Callable[[], sim.Trace]] = {
        f"zipf-{a}": functools.partial(zipf_trace, a, requests) for a in (0.6, 0.8, 1.0, 1.2)
    }
    makers["zipf+scan"] = lambda: zipf_scan_trace(requests)
    makers["loop"] = lambda: loop_trace(requests)
    makers["files"] = lambda: files_trace(requests)
    if only is not None:
        unknown = only - set(makers)
        if unknown:
            raise SystemExit(f"unknown traces: {', '.join(sorted(unknown))}")
    return {name: make() for name, make in makers.items() if only is None or name in only}


# --------------------------------------------------------------------------- the runs


def run_trace(
    name: str, trace: sim.Trace, refs: bool, objects: bool = False
) -> list[dict[str, Any]]:
    rows = []
    wss = trace.working_set(objects)
    for share in SHARES:
        capacity = max(1, int(wss * share))
        row: dict[str, Any] = {"trace": name, "share": share, "size": capacity, "policies": {}}
        for label, tier, eviction in CACHEFS:
            r = sim.simulate_tier(trace, capacity, tier=tier, eviction=eviction, objects=objects)
            row["policies"][label] = r
        if refs:
            for ref in sim.REFERENCES:
                row["policies"][ref] = sim.simulate_reference(trace, capacity, ref, objects)
        rows.append(row)
        print(f"  {name} {share:.0%}", file=sys.stderr, flush=True)
    return rows


def scan_test(refs: bool, seed: int = 7) -> list[dict[str, Any]]:
    """Hot-set hit ratio before, during and after a one-time scan of 5x the cache
    that reads each object twice, one second apart, with the hot set still read."""
    rng = random.Random(seed)
    capacity_objects = 2_000
    size = 64 * KiB
    capacity = capacity_objects * size
    hot_n = capacity_objects // 2
    hot_draw = zipf_sampler(hot_n, 0.8, rng)
    trace = sim.Trace()
    phase: list[str] = []
    t = 0.0
    for _ in range(20 * hot_n):  # warm
        t += 0.01
        trace.append(t, hot_draw(), size)
        phase.append("before")
    scan = list(range(10**6, 10**6 + 5 * capacity_objects))
    rate = 100  # scan objects a second: the second read comes 100 objects later
    pending: list[tuple[float, int]] = []
    for obj in scan:
        t += 1.0 / rate
        trace.append(t, obj, size)  # the scanner reads it
        phase.append("scan")
        pending.append((t + 1.0, obj))
        while pending and pending[0][0] <= t:
            _, again = pending.pop(0)
            trace.append(t, again, size)  # ... and once more a second later
            phase.append("scan")
        t += 0.001
        trace.append(t, hot_draw(), size)  # meanwhile, people read the hot set
        phase.append("during")
    for when, again in pending:
        trace.append(when, again, size)
        phase.append("scan")
    t = max(t, pending[-1][0]) if pending else t
    for _ in range(5 * hot_n):
        t += 0.01
        trace.append(t, hot_draw(), size)
        phase.append("after")

    def hot_ratios(hits: list[bool]) -> dict[str, float]:
        out = {}
        for p in ("before", "during", "after"):
            marks = [h for h, ph in zip(hits, phase, strict=True) if ph == p]
            out[p] = sum(marks) / len(marks)
        # every request while the scan runs, the scan's own (its re-reads) too
        marks = [h for h, ph in zip(hits, phase, strict=True) if ph in ("scan", "during")]
        out["all_during"] = sum(marks) / len(marks)
        return out

    results = []
    for label, tier, eviction in CACHEFS:
        hits = replay_hits(trace, capacity, tier, eviction)
        results.append({"policy": label, **hot_ratios(hits)})
    if refs:
        for ref in sim.REFERENCES:
            results.append({"policy": ref, **hot_ratios(reference_hits(trace, capacity, ref))})
    return results


def replay_hits(trace: sim.Trace, capacity: int, tier: str, eviction: str) -> list[bool]:
    model: sim.RamModel | sim.DiskModel
    model = sim.RamModel(capacity) if tier == "ram" else sim.DiskModel(capacity, eviction)
    return [
        model.access(o, s, t)
        for t, o, s in zip(trace.times, trace.objects, trace.sizes, strict=True)
    ]


def reference_hits(trace: sim.Trace, capacity: int, name: str) -> list[bool]:
    lcs = sim.libcachesim()
    cache = getattr(lcs, name)(capacity, hashpower=16)
    req = lcs.Request()
    out = []
    for t, o, s in zip(trace.times, trace.objects, trace.sizes, strict=True):
        req.obj_id, req.obj_size, req.clock_time, req.valid = o, s, int(t), True
        out.append(bool(cache.get(req)))
    return out


# --------------------------------------------------------------------------- report


def markdown(rows: list[dict[str, Any]], refs: bool) -> str:
    labels = [label for label, _, _ in CACHEFS]
    ref_names = list(sim.REFERENCES) if refs else []
    out = []
    for metric, title in (("miss_ratio", "request"), ("byte_miss_ratio", "byte")):
        head = ["trace", "size", *labels, *ref_names]
        if refs:
            head += ["best ref", "tinylfu - best"]
        out.append(f"\n{title} miss ratio\n")
        out.append("| " + " | ".join(head) + " |")
        out.append("|" + " --- |" * len(head))
        for row in rows:
            p = row["policies"]
            cells = [row["trace"], f"{row['share']:.0%}"]
            cells += [f"{p[label][metric]:.4f}" for label in labels]
            if refs:
                ref_values = {name: p[name][metric] for name in ref_names}
                cells += [f"{v:.4f}" for v in ref_values.values()]
                best_name = min(ref_values, key=ref_values.__getitem__)
                best = ref_values[best_name]
                ours = min(p["ram (tinylfu)"][metric], p["disk tinylfu"][metric])
                cells += [f"{best_name} {best:.4f}", f"{ours - best:+.4f}"]
            out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def cpu_table(rows: list[dict[str, Any]]) -> str:
    totals: dict[str, list[float]] = {}
    for row in rows:
        for name, r in row["policies"].items():
            totals.setdefault(name, []).append(r["cpu_us_per_request"])
    out = ["\n| policy | CPU µs per request (median over the runs) |", "| --- | --- |"]
    for name, values in totals.items():
        values.sort()
        out.append(f"| {name} | {values[len(values) // 2]:.1f} |")
    return "\n".join(out)


def scan_table(results: list[dict[str, Any]]) -> str:
    out = [
        "\n| policy | hot hit ratio before | during the scan | after | all requests during |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in results:
        out.append(
            f"| {r['policy']} | {r['before']:.3f} | {r['during']:.3f} | {r['after']:.3f}"
            f" | {r['all_during']:.3f} |"
        )
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="50k requests a trace")
    parser.add_argument("--requests", type=int, default=0)
    parser.add_argument("--json", dest="json_path", help="also write the raw results here")
    parser.add_argument("--no-refs", action="store_true", help="skip libCacheSim")
    parser.add_argument(
        "--objects", action="store_true", help="capacity in objects (sizes ignored); no scan test"
    )
    parser.add_argument(
        "--traces", help="only these traces, comma-separated (zipf-0.6,...,zipf+scan,loop,files)"
    )
    parser.add_argument("--no-scan", action="store_true", help="skip the scan test")
    args = parser.parse_args()
    refs = not args.no_refs
    if refs:
        try:
            sim.libcachesim()
        except sim.ReferencesUnavailable as exc:
            print(f"{exc}; running without references (--no-refs)", file=sys.stderr)
            refs = False
    requests = args.requests or (50_000 if args.quick else 200_000)
    started = time.time()
    rows: list[dict[str, Any]] = []
    chosen = set(args.traces.split(",")) if args.traces else None
    for name, trace in traces(requests, chosen).items():
        rows += run_trace(name, trace, refs, args.objects)
    scan = [] if args.objects or args.no_scan else scan_test(refs)
    elapsed = time.time() - started
    mode = "capacity in objects" if args.objects else "capacity in bytes"
    print(f"# bench/policies.py: {requests} requests a trace, {mode}, {elapsed:.0f} s")
    print(f"# {platform.processor() or platform.machine()}, Python {platform.python_version()}")
    print(markdown(rows, refs))
    print(cpu_table(rows))
    if scan:
        print("\nscan test (hot set of half the cache; scan of 5x the cache, each read twice)")
        print(scan_table(scan))
    if args.json_path:
        with open(args.json_path, "w") as f:
            json.dump({"requests": requests, "rows": rows, "scan": scan}, f, indent=1)


if __name__ == "__main__":
    main()
