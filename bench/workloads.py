"""The measured workloads of `bench/run.py`: plain reads of a mounted data set.

Each function reads through whatever directory it is given (the origin or a
mount of it), stops at its time limit (then reports ``complete: false``) and
returns a flat dict of metrics. None of them drops caches or mounts anything:
the caller sets the scene, so every system gets exactly the same calls.
"""

from __future__ import annotations

import itertools
import math
import os
import random
import stat
import statistics
import threading
import time
from collections.abc import Iterable
from pathlib import Path

MiB = 1024 * 1024
BLOCK = MiB  # media player-sized reads
PAGE = 4096
SMALL_FILE = MiB  # the scan reads the head of every file below this size


def percentile(values: Iterable[float], pct: float) -> float:
    """Nearest-rank percentile: an observed value, defined for a single sample."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def latency_summary(latencies_ms: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(percentile(latencies_ms, 50), 4),
        "p99_ms": round(percentile(latencies_ms, 99), 4),
        "mean_ms": round(statistics.fmean(latencies_ms), 4) if latencies_ms else math.nan,
        "max_ms": round(max(latencies_ms, default=math.nan), 4),
    }


# -- (a), (b), (b') sequential read of one file --------------------------------


def sequential_read(path: Path, limit_s: float) -> dict[str, object]:
    """Read a file front to back in 1 MiB read()s, as a media player does."""
    start = time.perf_counter()
    deadline = start + limit_s
    done, complete = 0, True
    fd = os.open(path, os.O_RDONLY)
    try:
        while chunk := os.read(fd, BLOCK):
            done += len(chunk)
            if time.perf_counter() > deadline:
                complete = False
                break
    finally:
        os.close(fd)
    seconds = time.perf_counter() - start
    return {
        "mb_s": round(done / seconds / 1e6, 2),
        "bytes": done,
        "seconds": round(seconds, 3),
        "complete": complete,
    }


# -- (c) concurrent streams ----------------------------------------------------


def _stream(path: Path, deadline: float, marks: list[tuple[float, int]]) -> None:
    """One reader: append (completion time, bytes) of every read (the thread's only output)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        while chunk := os.read(fd, BLOCK):
            marks.append((time.perf_counter(), len(chunk)))
            if marks[-1][0] > deadline:
                break
    finally:
        os.close(fd)


def _longest_gap(start: float, marks: list[tuple[float, int]]) -> float:
    times = [start, *(t for t, _ in marks)]
    return max(b - a for a, b in itertools.pairwise(times))


def concurrent_streams(paths: list[Path], limit_s: float) -> dict[str, object]:
    """One thread per file reading it sequentially, all started together.

    The longest gap is the longest wait a player would see between two
    consecutive reads of one stream (the first read counts from the start):
    what makes a video stutter, whatever the average.
    """
    marks: list[list[tuple[float, int]]] = [[] for _ in paths]
    errors: list[OSError] = []
    start = time.perf_counter()
    deadline = start + limit_s

    def reader(index: int) -> None:
        try:
            _stream(paths[index], deadline, marks[index])
        except OSError as exc:
            errors.append(exc)

    # Daemon threads: a reader stuck on a dead mount must not keep the run alive.
    threads = [threading.Thread(target=reader, args=(i,), daemon=True) for i in range(len(paths))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    if not all(marks):
        raise OSError("a stream read nothing")
    end = max(m[-1][0] for m in marks)
    per_stream = [sum(n for _, n in m) / (m[-1][0] - start) / 1e6 for m in marks]
    total = sum(n for m in marks for _, n in m)
    return {
        "streams": len(paths),
        "aggregate_mb_s": round(total / (end - start) / 1e6, 2),
        "slowest_mb_s": round(min(per_stream), 2),
        "max_gap_s": round(max(_longest_gap(start, m) for m in marks), 4),
        "bytes": total,
        "seconds": round(end - start, 3),
        "complete": end <= deadline,
    }


# -- (d') random 4 KiB reads ----------------------------------------------------


def random_offsets(size: int, count: int, seed: int) -> list[int]:
    """A fixed list of page-aligned offsets: the same for every system and run."""
    rng = random.Random(seed)
    return [rng.randrange(size // PAGE) * PAGE for _ in range(count)]


def random_reads(path: Path, offsets: list[int], budget_s: float) -> dict[str, object]:
    """Single-threaded 4 KiB pread()s at the given offsets, for at most budget_s.

    Stopping at the budget is part of the workload (a slow origin manages a
    few hundred reads in it), not a failure, so there is no ``complete`` flag.
    """
    fd = os.open(path, os.O_RDONLY)
    latencies: list[float] = []
    start = time.perf_counter()
    try:
        # Without this the kernel turns each 4 KiB read into a read-ahead window.
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
        for offset in offsets:
            before = time.perf_counter()
            os.pread(fd, PAGE, offset)
            latencies.append((time.perf_counter() - before) * 1000)
            if before - start > budget_s:
                break
    finally:
        os.close(fd)
    seconds = time.perf_counter() - start
    return {
        "reads": len(latencies),
        "iops": round(len(latencies) / seconds, 1),
        **latency_summary(latencies),
        "seconds": round(seconds, 3),
    }


# -- (e) media-library scan ----------------------------------------------------


def read_head(path: str | Path) -> int:
    """open + read the first 4 KiB + close: what a scanner does to sniff a file."""
    fd = os.open(path, os.O_RDONLY)
    try:
        return len(os.read(fd, PAGE))
    finally:
        os.close(fd)


def library_scan(root: Path, limit_s: float) -> dict[str, object]:
    """Walk the tree, lstat everything, read the head of every small regular file."""
    start = time.perf_counter()
    deadline = start + limit_s
    files = dirs = heads = 0
    pending = [str(root)]
    while pending and time.perf_counter() <= deadline:
        with os.scandir(pending.pop()) as entries:
            for entry in entries:
                st = os.lstat(entry.path)  # explicitly: scandir may have it cached
                if stat.S_ISDIR(st.st_mode):
                    dirs += 1
                    pending.append(entry.path)
                elif stat.S_ISREG(st.st_mode):
                    files += 1
                    if st.st_size < SMALL_FILE:
                        read_head(entry.path)
                        heads += 1
    return {
        "seconds": round(time.perf_counter() - start, 3),
        "files": files,
        "dirs": dirs,
        "heads_read": heads,
        "complete": not pending,
    }


# -- (f') open + first 4 KiB of cached small files -----------------------------


def small_file_heads(root: Path, rel_paths: list[str], limit_s: float) -> dict[str, object]:
    """Latency of open + 4 KiB read + close, one file after another."""
    latencies: list[float] = []
    start = time.perf_counter()
    for rel in rel_paths:
        before = time.perf_counter()
        read_head(root / rel)
        latencies.append((time.perf_counter() - before) * 1000)
        if before - start > limit_s:
            break
    return {
        "files": len(latencies),
        **latency_summary(latencies),
        "seconds": round(time.perf_counter() - start, 3),
        "complete": len(latencies) == len(rel_paths),
    }


# -- (w) writes: 1 MiB sequential, 4 KiB and 3000-byte random, fsync at close ----------

WRITE_SEED = 20240602


def write_pattern(size: int, block: int) -> bytes:
    """The bytes written: incompressible, the same for every system and run."""
    return random.Random(WRITE_SEED).randbytes(size + block)  # slices start anywhere


def lay_out(path: Path, size: int) -> None:
    """Create *path* with *size* bytes written front to back, fsync'd: the untimed
    set-up of a random-write job, as fio lays out its file first."""
    data = memoryview(write_pattern(size, 0))
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for offset in range(0, size, BLOCK):
            os.pwrite(fd, data[offset : min(size, offset + BLOCK)], offset)
        os.fsync(fd)
    finally:
        os.close(fd)


def random_write_offsets(size: int, block: int) -> list[int]:
    """Every whole block of the file once, in a seeded random order (fio's random map)."""
    offsets = [i * block for i in range(size // block)]
    random.Random(WRITE_SEED + block).shuffle(offsets)
    return offsets


def _piece(data: memoryview, n: int, block: int) -> memoryview:
    """The n-th random write's bytes: never what the layout put at that offset."""
    start = (n * 7 + 1) % block
    return data[start : start + block]


def expected_after_random_write(size: int, block: int, writes: int) -> bytes:
    """The file's content after lay_out() and the first *writes* random writes."""
    data = memoryview(write_pattern(size, block))
    content = bytearray(data[:size])
    for n, offset in enumerate(random_write_offsets(size, block)[:writes]):
        content[offset : offset + block] = _piece(data, n, block)
    return bytes(content)


def expected_after_sequential_write(size: int) -> bytes:
    return write_pattern(size, 0)[:size]


def _finish_write(
    fd: int, start: float, done: int, writes: int, complete: bool, latencies: list[float]
) -> dict[str, object]:
    """fsync + close are part of the measured time (fio's fsync_on_close=1)."""
    before_sync = time.perf_counter()
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    end = time.perf_counter()
    seconds = end - start
    return {
        "mib_s": round(done / seconds / MiB, 2),
        "iops": round(writes / seconds, 1),
        "writes": writes,
        "bytes": done,
        "seconds": round(seconds, 3),
        "fsync_close_s": round(end - before_sync, 3),
        **latency_summary(latencies),
        "complete": complete,
    }


def sequential_write(path: Path, size: int, limit_s: float) -> dict[str, object]:
    """Write a new file front to back in 1 MiB write()s, then fsync and close it."""
    data = memoryview(write_pattern(size, 0))
    latencies: list[float] = []
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    start = time.perf_counter()
    deadline = start + limit_s
    done = 0
    try:
        while done < size:
            before = time.perf_counter()
            done += os.write(fd, data[done : min(size, done + BLOCK)])
            latencies.append((time.perf_counter() - before) * 1000)
            if before > deadline:
                break
    except BaseException:
        os.close(fd)
        raise
    return _finish_write(fd, start, done, len(latencies), done >= size, latencies)


def random_write(path: Path, block: int, limit_s: float) -> dict[str, object]:
    """pwrite()s of *block* bytes at block-aligned offsets of a laid-out file, each
    block once in a seeded random order; then fsync and close (all timed)."""
    size = os.stat(path).st_size
    offsets = random_write_offsets(size, block)
    data = memoryview(write_pattern(size, block))
    latencies: list[float] = []
    fd = os.open(path, os.O_WRONLY)
    start = time.perf_counter()
    deadline = start + limit_s
    done = 0
    try:
        for n, offset in enumerate(offsets):
            before = time.perf_counter()
            done += os.pwrite(fd, _piece(data, n, block), offset)
            latencies.append((time.perf_counter() - before) * 1000)
            if before > deadline:
                break
    except BaseException:
        os.close(fd)
        raise
    complete = len(latencies) == len(offsets)
    return _finish_write(fd, start, done, len(latencies), complete, latencies)
