"""stats.access_log: the mount records the chunk accesses its tiers see, and
``cachefs simulate`` replays that log as it is.

The writer in-process (batches, rotation, drops, a private file), the config
key's errors, and real mounts: reads through the mount give a log whose replay
has the requests and hits the real RAM tier gives on the same accesses.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
import trio
from click.testing import CliRunner

from cachefs.app.cli import cli
from cachefs.config import ConfigError, load_config
from cachefs.data import accesslog
from cachefs.data import simulate as sim
from cachefs.data.accesslog import HEADER, AccessLog
from cachefs.data.chunks import ChunkKey
from cachefs.data.tiers.ram import RamTier
from cachefs.origin.access import FileVersion
from cachefs.stats.counters import Stats

from .conftest import MountFactory, run_cachefs

NAMESPACE = b"n" * 32
CHUNK = 512 * 1024  # user_data's chunk size: the files here are .bin


def key(ino: int, number: int = 0) -> ChunkKey:
    return ChunkKey(FileVersion(ino, 10 * CHUNK, 1, 1), CHUNK, number)


def records(path: Path) -> list[list[str]]:
    lines = path.read_text().splitlines()
    assert lines[0] + "\n" == HEADER
    return [line.split(",") for line in lines[1:]]


# --------------------------------------------------------------------------- the writer


def test_records_are_written_in_batches_as_a_trace_simulate_reads(tmp_path: Path) -> None:
    path = tmp_path / "access.csv"
    stats = Stats()
    log = AccessLog(path, 1 << 20, NAMESPACE, stats, clock=iter(range(100, 200)).__next__)
    log.open()
    for ino, tier in [(1, "origin"), (2, "origin"), (1, "ram"), (3, "ssd")]:
        log.record(key(ino), CHUNK, "media", tier)
    assert records(path) == []  # nothing written on the read path
    trio.run(log.flush)
    log.close()
    rows = records(path)
    ids = [int(row[1]) for row in rows]
    assert [row[0] for row in rows] == ["100.000000", "101.000000", "102.000000", "103.000000"]
    assert ids[0] == ids[2] == accesslog.object_id(key(1), NAMESPACE) and len(set(ids)) == 3
    assert all(0 <= i < 2**63 for i in ids)
    assert [row[2:] for row in rows] == [[str(CHUNK), "media", t] for t in ("origin",) * 2] + [
        [str(CHUNK), "media", "ram"],
        [str(CHUNK), "media", "ssd"],
    ]
    assert stats.get("access_log_records") == 4
    trace = sim.read_trace(path)
    assert trace.objects == ids and trace.sizes == [CHUNK] * 4
    assert trace.types == ["media"] * 4
    assert trace.served == {"origin": 2, "ram": 1, "ssd": 1}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_rotation_keeps_each_file_under_the_size_and_one_previous_file(tmp_path: Path) -> None:
    path = tmp_path / "access.csv"
    stats = Stats()
    log = AccessLog(path, 4096, NAMESPACE, stats)
    log.open()
    files = [path.stat().st_ino]  # each PATH the log has written, in turn

    async def write_many() -> None:
        for batch in range(10):
            for i in range(50):  # ~3 KiB: at most one rotation a batch
                log.record(key(batch * 50 + i), CHUNK, "user_data", "origin")
            await log.flush()
            if path.stat().st_ino != files[-1]:
                files.append(path.stat().st_ino)

    trio.run(write_many)
    log.close()
    assert stats.snapshot()["access_log_rotations"] == len(files) - 1 > 1
    rotated = tmp_path / "access.csv.1"
    assert path.stat().st_size <= 4096 and rotated.stat().st_size <= 4096
    assert rotated.stat().st_size > 4096 - 100  # filled to the brim, on a line boundary
    assert stat.S_IMODE(rotated.stat().st_mode) == 0o600
    assert sorted(os.listdir(tmp_path)) == ["access.csv", "access.csv.1"]
    both = sim.read_trace(rotated, path)  # the rotated part, then the current one
    assert len(both) == len(records(rotated)) + len(records(path))
    last = accesslog.object_id(key(499), NAMESPACE)
    assert both.objects[-1] == last


def test_a_full_buffer_drops_and_counts_and_never_waits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(accesslog, "MAX_PENDING", 10)
    stats = Stats()
    log = AccessLog(tmp_path / "access.csv", 1 << 20, NAMESPACE, stats)
    log.open()
    for i in range(25):
        log.record(key(i), CHUNK, "media", "origin")
    assert log.waiting() == 10
    trio.run(log.flush)
    log.close()
    assert len(records(tmp_path / "access.csv")) == 10
    assert stats.get("access_log_dropped") == 15


def test_a_log_removed_meanwhile_is_created_again(tmp_path: Path) -> None:
    path = tmp_path / "access.csv"
    log = AccessLog(path, 1 << 20, NAMESPACE, Stats())
    log.open()
    log.record(key(1), CHUNK, "media", "origin")
    trio.run(log.flush)
    path.unlink()
    log.record(key(2), CHUNK, "media", "origin")
    trio.run(log.flush)
    log.close()
    assert [int(r[1]) for r in records(path)] == [accesslog.object_id(key(2), NAMESPACE)]


def test_a_cut_last_line_is_skipped_by_simulate_and_cut_off_by_the_next_mount(
    tmp_path: Path,
) -> None:
    path = tmp_path / "access.csv"
    log = AccessLog(path, 1 << 20, NAMESPACE, Stats())
    log.open()
    log.record(key(1), CHUNK, "media", "origin")
    trio.run(log.flush)
    log.close()
    with open(path, "a") as f:
        f.write("1796187158.91,33276")  # a crash in the middle of a line
    assert len(sim.read_trace(path)) == 1
    log.open()  # the next mount
    log.record(key(2), CHUNK, "media", "origin")
    trio.run(log.flush)
    log.close()
    rows = records(path)
    assert [int(r[1]) for r in rows] == [accesslog.object_id(key(n), NAMESPACE) for n in (1, 2)]


def test_a_symlink_or_another_users_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "elsewhere").write_text("keep me\n")
    (tmp_path / "access.csv").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(OSError):
        AccessLog(tmp_path / "access.csv", 1 << 20, NAMESPACE, Stats()).open()
    assert (tmp_path / "elsewhere").read_text() == "keep me\n"
    theirs = tmp_path / "theirs.csv"
    theirs.write_text("")
    os.chown(theirs, 12345, 12345)
    with pytest.raises(OSError, match="owned by uid 12345"):
        AccessLog(theirs, 1 << 20, NAMESPACE, Stats()).open()


# --------------------------------------------------------------------------- the keys


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ('"access.csv"', "stats.access_log: must be an absolute path"),
        ('"/nonexistent/dir/access.csv"', "directory /nonexistent/dir does not exist"),
        ('"/tmp"', "must be a file path, not a directory"),
    ],
)
def test_a_bad_access_log_names_the_key_and_the_line(
    tmp_path: Path, value: str, problem: str
) -> None:
    config = tmp_path / "cfg.toml"
    config.write_text(f'[stats]\nbackend = "embedded"\naccess_log = {value}\n')
    with pytest.raises(ConfigError) as caught:
        load_config(config)
    assert str(caught.value).startswith(f"{config}:3: stats.access_log: ")
    assert problem in str(caught.value)


def test_the_keys_default_to_off_and_64mib() -> None:
    cfg = load_config(None)
    assert cfg.stats.access_log == "" and cfg.stats.access_log_max_size == 64 << 20
    with pytest.raises(ConfigError, match="access_log_max_size: must be at least 4KiB"):
        load_config(None, {"stats.access_log_max_size": "1KiB"})


# --------------------------------------------------------------------------- real mounts


def read_chunks_direct(path: Path) -> None:
    """Read a file chunk by chunk, past the page cache: each pread stays in one chunk,
    so however the kernel cuts it into requests, it is one access of that chunk."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    try:
        size = os.fstat(fd).st_size
        for offset in range(0, size, CHUNK):
            assert os.pread(fd, CHUNK, offset)
    finally:
        os.close(fd)


def run_simulate(*args: str) -> dict:
    result = CliRunner().invoke(cli, ["simulate", *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_a_mount_records_its_accesses_and_simulate_replays_them_as_the_tier_counts(
    tmp_path: Path, origin: Path, mount_factory: MountFactory
) -> None:
    sizes = {"a.bin": 3 * CHUNK - 1000, "b.bin": 100_000, "c.bin": 2 * CHUNK, "d.bin": 5000}
    for name, size in sizes.items():
        (origin / name).write_bytes(os.urandom(size))
    log_path = tmp_path / "logs" / "access.csv"
    log_path.parent.mkdir()
    mounted = mount_factory(
        origin,
        ["tiers.ram.max_size=64MiB", "stats.backend=embedded", f"stats.access_log={log_path}"],
    )
    order = ["a.bin", "b.bin", "a.bin", "c.bin", "d.bin", "b.bin", "a.bin", "c.bin", "b.bin"]
    for name in order:
        read_chunks_direct(mounted.mnt / name)
    assert mounted.stats()["access_log"] == str(log_path)
    mount_factory.unmount(mounted)  # the last records are written at unmount

    # One record per access: per open, each chunk once, in order.
    expected = [
        (name, n, min(CHUNK, sizes[name] - n * CHUNK))
        for name in order
        for n in range(-(-sizes[name] // CHUNK))
    ]
    rows = records(log_path)
    assert len(rows) == len(expected)
    ids: dict[tuple[str, int], int] = {}
    for row, (name, n, length) in zip(rows, expected, strict=True):
        assert ids.setdefault((name, n), int(row[1])) == int(row[1])  # stable per chunk
        assert int(row[2]) == length
        assert row[3] == "user_data" and row[4] in ("ram", "ssd", "hdd", "origin")
    assert len(set(ids.values())) == len(ids)  # distinct chunks, distinct ids
    assert stat.S_IMODE(log_path.stat().st_mode) == 0o600
    log_text = log_path.read_text()
    assert all(name not in log_text for name in sizes)  # never a file name

    # The replay has the requests and the hits the real RAM tier gives on them.
    times = [float(row[0]) for row in rows]
    for scan_resistant in (True, False):
        capacity = 4 * CHUNK
        now = [0.0]
        tier = RamTier(capacity, scan_resistant, clock=lambda now=now: now[0])
        hits = 0
        for when, (name, n, length) in zip(times, expected, strict=True):
            now[0] = when
            chunk = ChunkKey(FileVersion(ids[(name, n)], 0, 0, 0), 0, 0)
            if tier.get(chunk) is not None:
                hits += 1
            else:
                tier.put(chunk, b"x" * length)
        flag = f"tiers.ram.scan_resistant={str(scan_resistant).lower()}"
        out = run_simulate(str(log_path), "--size", str(capacity), "--tier", "ram", "-o", flag)
        (result,) = out["results"]
        assert result["requests"] == len(expected)
        assert round(result["requests"] * (1 - result["miss_ratio"])) == hits
        assert 0 < hits < len(expected)  # (6 with W-TinyLFU, 3 with the LRU)
        served = out["recorded"]["served"]
        assert sum(served.values()) == len(expected)
    # the whole stack replays it too, each chunk in its content type's home tier
    out = run_simulate(str(log_path), "--ram", "1MiB", "--ssd", "1GiB")
    assert out["results"][0]["requests"] == len(expected)
    assert out["results"][0]["tiers"]["ssd"]["hits"] > 0


def test_rotation_bounds_the_log_of_a_mount_and_odd_names_are_fine(
    tmp_path: Path, origin: Path, mount_factory: MountFactory
) -> None:
    odd = os.fsdecode(b"caf\xe9 \xff\xfe\n,name.bin")  # not UTF-8, a newline, a comma
    (origin / odd).write_bytes(os.urandom(3 * CHUNK))
    for i in range(20):
        (origin / f"small{i}.bin").write_bytes(os.urandom(1000 + i))
    log_path = tmp_path / "access.csv"
    mounted = mount_factory(
        origin,
        [
            "tiers.ram.max_size=64MiB",
            "stats.backend=embedded",
            f"stats.access_log={log_path}",
            "stats.access_log_max_size=4KiB",
        ],
    )
    for _ in range(12):
        read_chunks_direct(mounted.mnt / odd)
        for i in range(20):
            read_chunks_direct(mounted.mnt / f"small{i}.bin")
    stats = mounted.stats()
    mount_factory.unmount(mounted)
    rotated = tmp_path / "access.csv.1"
    assert log_path.stat().st_size <= 4096 and rotated.stat().st_size <= 4096
    assert stat.S_IMODE(rotated.stat().st_mode) == 0o600
    assert stats["access_log_dropped"] == 0
    text = (rotated.read_text() + log_path.read_text()).encode()
    assert text.isascii() and b"name" not in text and b"small" not in text
    kept = len(records(rotated)) + len(records(log_path))
    assert 0 < kept < 12 * 23  # the oldest records went with the file before PATH.1
    out = run_simulate(str(rotated), str(log_path), "--size", "1MiB", "--tier", "ram")
    assert out["results"][0]["requests"] == kept


def test_off_by_default_nothing_is_written(
    tmp_path: Path, origin: Path, mount_factory: MountFactory
) -> None:
    (origin / "a.bin").write_bytes(os.urandom(2 * CHUNK))
    mounted = mount_factory(origin)
    read_chunks_direct(mounted.mnt / "a.bin")
    stats = mounted.stats()
    mount_factory.unmount(mounted)
    assert stats["access_log"] == "off" and stats["access_log_records"] == 0
    assert not list(tmp_path.rglob("*.csv*"))  # no log anywhere


def test_an_access_log_that_cannot_be_ours_refuses_the_mount(tmp_path: Path, origin: Path) -> None:
    log_path = tmp_path / "access.csv"
    log_path.symlink_to(tmp_path / "target")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    cache = tmp_path / "cache"
    options = (
        f"stats.backend=embedded,tiers.ssd.path={cache}/ssd,tiers.hdd.path={cache}/hdd,"
        f"stats.access_log={log_path}"
    )
    result = run_cachefs("mount", "-f", str(origin), str(mnt), "-o", options)
    assert result.returncode != 0
    assert f"stats.access_log = {log_path}: cannot open it" in result.stderr
    assert "nothing mounted" in result.stderr
    assert not os.path.ismount(mnt) and not (tmp_path / "target").exists()
    inside = origin / "access.csv"
    result = run_cachefs(
        "mount", "-f", str(origin), str(mnt), "-o", options.replace(str(log_path), str(inside))
    )
    assert result.returncode != 0 and "(stats.access_log) is inside the origin" in result.stderr
