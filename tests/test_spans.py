"""Read-ahead spans through a real mount: a turn's chunks in one origin call.

Over a local origin (a change there is seen at once) and over the slow one-head
origin of tests/logged_origin.py (one request at a time, every read logged).
"""

from __future__ import annotations

import itertools
import os
import random
import threading
import time
from pathlib import Path

from . import logged_origin
from .conftest import DEFAULT_TEST_OPTIONS, MountFactory, read_direct

MiB = 1024 * 1024  # a media chunk
NO_GUESSES = [*DEFAULT_TEST_OPTIONS, "prediction.max_prefetch_size=0"]


def test_a_change_at_the_origin_during_a_span_gives_old_or_new_chunks_never_wrong_bytes(
    origin: Path, mount_factory: MountFactory
) -> None:
    """A film is read sequentially (its read-ahead reads spans) and one page far
    ahead of the reader changes at the origin meanwhile: every chunk the reader
    gets is the old or the new one at its place, the change is seen by the fetch
    that read past it, and a later open reads the new content whole."""
    films = origin / "Films"
    films.mkdir()
    rng = random.Random(7)
    chunks = 48  # the window never reaches past 32 chunks ahead of the reader
    old = [rng.randbytes(MiB) for _ in range(chunks)]
    path = films / "film.mkv"
    path.write_bytes(b"".join(old))
    changed_at = 44 * MiB + 8192
    page = rng.randbytes(4096)
    new = bytearray(b"".join(old))
    new[changed_at : changed_at + len(page)] = page
    # no watch: the change is seen by the fetch that reads past it, not told before
    mounted = mount_factory(origin, [*NO_GUESSES, "metadata.watch=off"])
    got = []
    fd = os.open(mounted.mnt / "Films" / "film.mkv", os.O_RDONLY | os.O_DIRECT)
    try:
        for n in range(chunks):
            got.append(os.pread(fd, MiB, n * MiB))
            if n == 3:
                out = os.open(path, os.O_WRONLY)
                try:
                    os.pwrite(out, page, changed_at)
                finally:
                    os.close(out)
    finally:
        os.close(fd)
    stats = mounted.stats()
    for n, chunk in enumerate(got):
        assert chunk in (old[n], bytes(new[n * MiB : (n + 1) * MiB])), n
    assert got[44] == bytes(new[44 * MiB : 45 * MiB])  # read after the change
    assert stats["origin_changed_during_read"] >= 1
    time.sleep(1.2)  # past metadata.revalidate_after: the next open asks the origin
    assert read_direct(mounted.mnt / "Films" / "film.mkv") == bytes(new)


def _request_chunks(log: logged_origin.Log, fh: int) -> list[tuple[int, logged_origin.Read]]:
    return [(r.offset // MiB, r) for r in log.reads if r.fh == fh]


def test_a_foreground_read_waits_for_at_most_one_chunk_of_a_span(
    tmp_path: Path, mount_factory: MountFactory
) -> None:
    """Two films are read at once (their read-ahead takes turns, a span each) while
    another file is read at random places (no read-ahead: a foreground fill each
    time), over an origin that serves one request at a time.

    Checked from the origin's log, by order only: while one of the random reads'
    requests waited for the head, the requests served of each film were of one
    chunk at most (the one whose pread was under way when it came). A span's
    chunks are read one pread each, so a foreground request gets in between two
    of them, and never waits for the rest of the span."""
    source = tmp_path / "source"
    (source / "Films").mkdir(parents=True)
    rng = random.Random(11)
    films = {f"film{n}.mkv": rng.randbytes(24 * MiB) for n in (1, 2)}
    for name, data in films.items():
        (source / "Films" / name).write_bytes(data)
    other = rng.randbytes(16 * MiB)
    (source / "Films" / "other.dat").write_bytes(other)
    log_path = tmp_path / "origin.log"
    with logged_origin.serve(source, tmp_path / "origin", log_path, delay_ms=5.0) as served:
        mounted = mount_factory(served, NO_GUESSES)
        mnt = mounted.mnt / "Films"
        failures: list[BaseException] = []

        def stream(name: str) -> None:
            try:
                with open(mnt / name, "rb", buffering=0) as f:
                    pieces = []
                    while piece := f.read(MiB):
                        pieces.append(piece)
                assert b"".join(pieces) == films[name]
            except BaseException as exc:  # reported by the test below
                failures.append(exc)

        threads = [threading.Thread(target=stream, args=(name,)) for name in films]
        for thread in threads:
            thread.start()
        picks = random.Random(3).sample(range(16), 8)
        issued: dict[int, float] = {}  # the MiB read -> when the client asked (monotonic)
        fd = os.open(mnt / "other.dat", os.O_RDONLY | os.O_DIRECT)
        try:
            for n in picks:
                issued[n] = time.monotonic()
                assert os.pread(fd, 64 * 1024, n * MiB) == other[n * MiB : n * MiB + 64 * 1024]
                time.sleep(0.01)
        finally:
            os.close(fd)
        for thread in threads:
            thread.join(60)
        mount_factory.unmount(mounted)
    assert not failures, failures
    log = logged_origin.read_log(log_path)
    by_path: dict[str, list[int]] = {}
    for fh, (_, relpath) in log.opens.items():
        by_path.setdefault(os.path.basename(relpath), []).append(fh)
    foreground = [r for r in log.reads if r.fh in by_path["other.dat"]]
    ahead = [r for r in log.reads if r.fh not in by_path["other.dat"]]
    assert len(foreground) >= len(picks)
    # the films were read in turns: runs of several chunks of one film at the head
    film_chunks = [(r.fh, r.offset // MiB) for r in ahead]
    switches = sum(a[0] != b[0] for a, b in itertools.pairwise(film_chunks))
    assert switches * 3 < len(set(film_chunks)), (switches, len(set(film_chunks)))
    waited = 0
    for request in foreground:
        # the read-ahead requests served while it waited for the head, by file
        served: dict[int, set[int]] = {}
        for r in ahead:
            if request.arrived < r.ended <= request.started:
                served.setdefault(r.fh, set()).add(r.offset // MiB)
        waited += bool(served)
        assert all(len(chunks) <= 1 for chunks in served.values()), (request, served)
    assert waited > 0  # the check had something to check: the head was busy
    # ... and none waited inside the mount for a span to end: from the client's
    # read to its first request reaching the origin, the head started requests of
    # one chunk of each film at most (the pread under way, or the one right after;
    # a chunk is two requests of 5 ms here, so the mount's own way to the origin
    # has ~20 ms, plenty even on a loaded machine).
    for n, asked in issued.items():
        arrived = min(r.arrived for r in foreground if r.offset // MiB == n)
        started: dict[int, set[int]] = {}
        for r in ahead:
            if asked < r.started < arrived:
                started.setdefault(r.fh, set()).add(r.offset // MiB)
        assert all(len(chunks) <= 2 for chunks in started.values()), (n, started)
