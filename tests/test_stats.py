"""Access stats through a real mount, in a real redis-server and in the embedded store."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import time
from pathlib import Path

import redis

from cachefs.stats.counters import Batch, EmbeddedBackend, FileDelta, Stats, mount_prefix

from .conftest import Mounted, MountFactory, RedisServer, free_port, run_cachefs, start_redis

MiB = 1024 * 1024


def read_files(mnt: Path, names: list[str], times: int) -> None:
    for _ in range(times):
        for name in names:
            fd = os.open(mnt / name, os.O_RDONLY | os.O_DIRECT)  # every read reaches cachefs
            try:
                while os.read(fd, MiB):
                    pass
            finally:
                os.close(fd)


def make_origin(origin: Path) -> dict[str, int]:
    sizes = {"Movies/a.mkv": 3 * MiB, "Movies/a.nfo": 2000, "b.bin": MiB + 3}
    for name, size in sizes.items():
        (origin / name).parent.mkdir(parents=True, exist_ok=True)
        (origin / name).write_bytes(os.urandom(size))
    return sizes


def redis_options(server: RedisServer) -> list[str]:
    """Stats into the test's Redis, flushed every second."""
    return ["stats.backend=redis", f"stats.redis_url={server.url}", "monitoring.stats_interval=1s"]


def test_redis_holds_the_expected_counts(
    origin: Path, mount_factory: MountFactory, redis_server: RedisServer
) -> None:
    sizes = make_origin(origin)
    mounted = mount_factory(origin, redis_options(redis_server))
    read_files(mounted.mnt, list(sizes), times=2)
    mount_factory.unmount(mounted)  # the last flush happens at unmount
    r = redis_server.client()
    prefix = mount_prefix(str(mounted.mnt))
    counters = r.hgetall(prefix + "counters")
    assert int(counters["origin_bytes_read"]) == sum(sizes.values())
    # 3 media chunks read twice: at least 6 RAM lookups (the kernel may split
    # requests); read-ahead turns some misses into hits; bytes served are counted
    lookups = int(counters["misses:ram:media"]) + int(counters["hits:ram:media"])
    assert lookups >= 6 and int(counters["misses:ram:media"]) >= 1
    assert int(counters["bytes:ram:media"]) > 0
    for name, size in sizes.items():
        entry = r.hgetall(f"{prefix}file:{name}")
        assert int(entry["access_count"]) == 2
        assert int(entry["bytes_read"]) == 2 * size
        assert float(entry["read_time"]) > 0
        assert 0 < r.ttl(f"{prefix}file:{name}") <= 86400
    assert set(r.zrange(prefix + "files", 0, -1)) == set(sizes)


def embedded_stats(mounted: Mounted) -> dict:
    return json.loads((mounted.tier_dir("ssd") / "stats.json").read_text())


def test_embedded_store_keeps_counts_across_remounts(
    origin: Path, mount_factory: MountFactory
) -> None:
    sizes = make_origin(origin)
    first = mount_factory(origin, ["stats.backend=embedded"])
    read_files(first.mnt, list(sizes), times=1)
    options = first.options
    mount_factory.unmount(first)
    after_one = embedded_stats(first)
    assert after_one["counters"]["origin_bytes_read"] == sum(sizes.values())
    assert after_one["files"]["b.bin"]["access_count"] == 1
    second = mount_factory(origin, options)
    read_files(second.mnt, list(sizes), times=1)
    mount_factory.unmount(second)
    after_two = embedded_stats(second)
    assert after_two["counters"]["origin_bytes_read"] == sum(sizes.values())  # served from disk
    assert after_two["files"]["b.bin"]["access_count"] == 2
    assert after_two["files"]["b.bin"]["bytes_read"] == 2 * sizes["b.bin"]
    # Every chunk read was a hit: on the SSD, or in RAM where read-ahead had put it.
    counters = after_two["counters"]
    assert counters.get("hits:ssd:user_data", 0) + counters.get("hits:ram:user_data", 0) >= 3
    assert counters["hits:ssd:user_data"] >= 1


def test_reads_go_on_while_redis_is_down_and_counts_catch_up(
    origin: Path, mount_factory: MountFactory, redis_server: RedisServer
) -> None:
    sizes = make_origin(origin)
    mounted = mount_factory(origin, redis_options(redis_server))
    read_files(mounted.mnt, list(sizes), times=1)
    r = redis_server.client()
    prefix = mount_prefix(str(mounted.mnt))
    deadline = time.monotonic() + 10
    while not r.hget(f"{prefix}file:b.bin", "access_count") and time.monotonic() < deadline:
        time.sleep(0.1)  # the first read has been flushed
    redis_server.stop()
    read_files(mounted.mnt, list(sizes), times=3)  # every read succeeds meanwhile
    time.sleep(1.5)  # a flush fails while Redis is away
    assert mounted.stats()["stats_pending_files"] == len(sizes)
    redis_server.start()  # a new, empty Redis: it must receive the 3 reads of the outage
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        entry = r.hgetall(f"{prefix}file:b.bin")
        if entry and int(entry["access_count"]) == 3:
            break
        time.sleep(0.2)
    assert int(r.hget(f"{prefix}file:b.bin", "access_count")) == 3
    assert "unavailable" in mounted.log() and "is back" in mounted.log()


def mount_requiring_redis(origin: Path, mnt: Path, port: int) -> subprocess.CompletedProcess[str]:
    """``cachefs mount`` with stats.backend=redis on *port*, tier dirs beside *mnt*."""
    mnt.mkdir()
    opts = (
        f"stats.backend=redis,stats.redis_url=redis://127.0.0.1:{port}/0,"
        f"tiers.ssd.path={mnt}.ssd,tiers.hdd.path={mnt}.hdd"
    )
    return run_cachefs("mount", str(origin), str(mnt), "-o", opts)


def test_backend_redis_refuses_to_mount_without_redis(tmp_path: Path, origin: Path) -> None:
    mnt = tmp_path / "mnt"
    result = mount_requiring_redis(origin, mnt, free_port())
    assert result.returncode == 1
    assert "does not answer" in result.stderr and "nothing mounted" in result.stderr
    assert not os.path.ismount(mnt)


def test_backend_auto_falls_back_to_embedded(origin: Path, mount_factory: MountFactory) -> None:
    mounted = mount_factory(
        origin,
        [
            "stats.backend=auto",
            f"stats.redis_url=redis://127.0.0.1:{free_port()}/0",
        ],
    )
    assert mounted.stats()["stats_backend"] == "embedded"
    assert "keeping stats in" in mounted.log()


def test_pending_file_entries_are_bounded(monkeypatch) -> None:
    monkeypatch.setattr("cachefs.stats.counters.MAX_PENDING_FILES", 3)
    stats = Stats()
    for i in range(5):
        stats.file_access(f"f{i}", opened=True)
    assert stats.pending_files() == 3
    assert stats.get("stats_file_entries_dropped") == 2
    batch = stats.take_batch()
    stats.file_access("g", opened=True)
    stats.give_back(batch)
    assert stats.pending_files() == 3


def test_a_batch_given_back_merges() -> None:
    stats = Stats()
    stats.add("x", 2)
    stats.file_access("f", opened=True, nbytes=10)
    batch = stats.take_batch()
    stats.add("x", 1)
    stats.file_access("f", nbytes=5)
    stats.give_back(batch)
    again = stats.take_batch()
    assert again.counters["x"] == 3
    assert again.files["f"].access_count == 1 and again.files["f"].bytes_read == 15
    assert isinstance(Batch().files, dict) and FileDelta().access_count == 0


def test_redis_password_from_a_file(
    tmp_path: Path, origin: Path, mount_factory: MountFactory
) -> None:
    port = free_port()
    server = start_redis(port, password="s3cret")
    try:
        (tmp_path / "pw").write_text("s3cret\n")
        (origin / "f.bin").write_bytes(b"x" * 1000)
        mounted = mount_factory(
            origin,
            [
                "stats.backend=redis",
                f"stats.redis_url=redis://127.0.0.1:{port}/0",
                f"stats.redis_password_file={tmp_path / 'pw'}",
            ],
        )
        read_files(mounted.mnt, ["f.bin"], times=1)
        mount_factory.unmount(mounted)
        client = redis.Redis(host="127.0.0.1", port=port, password="s3cret")
        prefix = mount_prefix(str(mounted.mnt))
        assert int(client.hget(f"{prefix}file:f.bin", "access_count")) == 1
        refused = mount_requiring_redis(origin, tmp_path / "again", port)  # no password
        assert refused.returncode == 1 and "does not answer" in refused.stderr
    finally:
        server.kill()
        server.wait()


# File names need not be UTF-8: the origin's bytes, 255 of them at most.
ODD_NAMES = [
    b"caf\xe9.nfo",  # Latin-1
    b"long-" + b"\xe9" * 246 + b".bin",  # 255 bytes, not UTF-8 either
    b"d\xfe\xff/inner.nfo",  # in a directory whose name is not UTF-8
]


def make_odd_files(origin: Path) -> dict[bytes, bytes]:
    assert len(ODD_NAMES[1]) == 255
    files = {name: b"content of " + name for name in ODD_NAMES}
    for name, data in files.items():
        path = os.path.join(os.fsencode(origin), name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
    return files


def read_raw(mnt: Path, name: bytes) -> bytes:
    fd = os.open(os.path.join(os.fsencode(mnt), name), os.O_RDONLY | os.O_DIRECT)
    try:
        return os.pread(fd, 1 << 20, 0)
    finally:
        os.close(fd)


def test_file_names_that_are_not_utf8_reach_redis_as_their_bytes(
    origin: Path, mount_factory: MountFactory, redis_server: RedisServer
) -> None:
    files = make_odd_files(origin)
    mounted = mount_factory(origin, redis_options(redis_server))
    for name, data in files.items():
        assert read_raw(mounted.mnt, name) == data
    r = redis.Redis(host="127.0.0.1", port=redis_server.port)  # bytes in, bytes out
    prefix = mount_prefix(str(mounted.mnt)).encode()

    def access_counts() -> list[int]:
        return [int(r.hget(prefix + b"file:" + name, "access_count") or 0) for name in files]

    deadline = time.monotonic() + 10
    while access_counts() != [1, 1, 1] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert access_counts() == [1, 1, 1]
    for name, data in files.items():
        assert int(r.hget(prefix + b"file:" + name, "bytes_read")) == len(data)
    assert set(r.zrange(prefix + b"files", 0, -1)) == set(files)
    # the daemon lives on, and so do its flushes
    assert mounted.proc.poll() is None
    assert read_raw(mounted.mnt, ODD_NAMES[0]) == files[ODD_NAMES[0]]
    deadline = time.monotonic() + 10
    while access_counts()[0] != 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert access_counts() == [2, 1, 1]
    assert "stats: redis backend unavailable" not in mounted.log()


def test_the_embedded_store_keeps_names_that_are_not_utf8(
    origin: Path, mount_factory: MountFactory
) -> None:
    files = make_odd_files(origin)
    mounted = mount_factory(origin, ["stats.backend=embedded"])
    for name, data in files.items():
        assert read_raw(mounted.mnt, name) == data
    mount_factory.unmount(mounted)  # the last flush happens at unmount
    path = mounted.tier_dir("ssd") / "stats.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    stored = EmbeddedBackend(path, max_age=3600).files
    assert {os.fsencode(name) for name in stored} == set(files)
    for name, data in files.items():
        assert stored[os.fsdecode(name)].bytes_read == len(data)


def test_hot_files_rank_by_recent_bytes_and_forget_with_time() -> None:
    from cachefs.stats import hot

    now = [0.0]
    files = hot.HotFiles(clock=lambda: now[0])
    files.record("old.mkv", 10_000_000)
    now[0] = 4 * hot.HALF_LIFE  # sixteen times less by now
    files.record("new.jpg", 1_000_000)
    ranked = files.top(5)
    assert [f["path"] for f in ranked] == ["new.jpg", "old.mkv"]
    assert ranked[1]["bytes_per_second"] < ranked[0]["bytes_per_second"]
    now[0] += 40 * hot.HALF_LIFE
    assert files.top(5) == []  # read long ago: nothing is hot
