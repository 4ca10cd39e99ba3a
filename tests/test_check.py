"""``cachefs check``: finds every kind of bad chunk, repairs exactly those, respects a mount."""

from __future__ import annotations

import fcntl
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from cachefs.app.check import NoSecret, NotATierDirectory, TierReport, check_tier
from cachefs.app.cli import cli
from cachefs.config import TierConfig
from cachefs.data.chunks import ChunkKey
from cachefs.data.tiers import chunkfile
from cachefs.data.tiers.disk import DiskTier
from cachefs.origin.access import FileVersion
from cachefs.stats.counters import Stats

COMPRESSIBLE = b"cachefs " * 4096  # 32 KiB that zstd shrinks a lot
INCOMPRESSIBLE_SIZE = 20_000


@dataclass
class Tier:
    path: Path
    secret: bytes
    chunks: dict[str, Path] = field(default_factory=dict)  # label -> chunk file

    def add(self, label: str, raw: bytes, level: int | None, secret: bytes | None = None) -> Path:
        """A chunk file tagged with the tier's secret (or another *secret*)."""
        digest = os.urandom(16)
        name = digest.hex()
        target = self.path / "chunks" / name[:2] / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(chunkfile.encode(digest, raw, level, secret or self.secret).blob)
        self.chunks[label] = target
        return target


def make_tier(path: Path, count: int = 3) -> Tier:
    """A tier with *count* zstd chunks and *count* raw chunks, all good."""
    (path / "chunks").mkdir(parents=True)
    (path / "tmp").mkdir()
    secret = os.urandom(chunkfile.SECRET_SIZE)
    (path / "secret").write_bytes(secret)
    tier = Tier(path, secret)
    for i in range(count):
        tier.add(f"zstd{i}", COMPRESSIBLE + bytes([i]), level=3)
        tier.add(f"raw{i}", os.urandom(INCOMPRESSIBLE_SIZE), level=None)
    return tier


def run(*args: str | Path) -> Result:
    return CliRunner().invoke(cli, ["check", *map(str, args)])


def flip_payload_byte(path: Path) -> None:
    blob = bytearray(path.read_bytes())
    blob[chunkfile.HEADER_SIZE + 10] ^= 0xFF
    path.write_bytes(bytes(blob))


def codec_of(path: Path) -> str:
    return chunkfile.CODEC_NAMES[chunkfile.parse_header(path.read_bytes()).codec]


def table_row(result: Result, tier_path: Path) -> list[str]:
    return table_row_of(result.stdout, tier_path)


def table_row_of(stdout: str, tier_path: Path) -> list[str]:
    """The cells of the summary table's row for *tier_path* (columns are 2+ spaces apart)."""
    row = next(line for line in stdout.splitlines() if line.startswith(f"{tier_path} "))
    return re.split(r"\s{2,}", row.strip())


def all_files(path: Path) -> set[Path]:
    return {p for p in path.rglob("*") if p.is_file()}


@pytest.fixture
def tier(tmp_path: Path) -> Tier:
    return make_tier(tmp_path / "ssd")


@dataclass
class Damage:
    bad: set[Path]
    leftover: Path
    renamed: Path  # holds a good chunk, but not the one its name says


@pytest.fixture
def damaged(tier: Tier) -> Damage:
    """One of each kind of damage the checker must catch."""
    assert codec_of(tier.chunks["zstd0"]) == "zstd"
    assert codec_of(tier.chunks["raw0"]) == "raw"
    flip_payload_byte(tier.chunks["zstd0"])
    flip_payload_byte(tier.chunks["raw0"])
    truncated = tier.chunks["raw1"]
    truncated.write_bytes(truncated.read_bytes()[:-100])
    # A good chunk file under another digest's name: its header claims a different chunk.
    name = os.urandom(16).hex()
    renamed = tier.path / "chunks" / name[:2] / name
    renamed.parent.mkdir(exist_ok=True)
    tier.chunks["raw2"].rename(renamed)
    leftover = tier.path / "tmp" / "deadbeef.1234"
    leftover.write_bytes(b"half a chunk")
    bad = {tier.chunks["zstd0"], tier.chunks["raw0"], truncated, renamed}
    return Damage(bad, leftover, renamed)


@pytest.fixture
def mount_lock(tier: Tier) -> Iterator[None]:
    """Hold .lock the way a running mount does (our own open file description)."""
    fd = os.open(tier.path / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        yield
    finally:
        os.close(fd)


def test_all_good_exits_0_with_counts(tier: Tier) -> None:
    (tier.path / "index").write_bytes(b"snapshot")
    result = run(tier.path)
    assert result.exit_code == 0, result.output
    cells = table_row(result, tier.path)
    # tier, chunks, good, bad, on disk, raw, zstd, leftover, index, locked
    assert cells[1:4] == ["6", "6", "0"]
    assert cells[6:] == ["3", "0", "yes", "no"]


def test_report_sums_sizes(tier: Tier) -> None:
    report = check_tier(tier.path)
    files = list(tier.chunks.values())
    assert report.bytes_on_disk == sum(p.stat().st_size for p in files)
    assert report.raw_bytes == 3 * (len(COMPRESSIBLE) + 1) + 3 * INCOMPRESSIBLE_SIZE
    assert (report.good, report.compressed, report.bad, report.exit_code) == (6, 3, [], 0)
    assert not report.has_index and not report.locked


def test_each_kind_of_damage_is_reported(tier: Tier, damaged: Damage) -> None:
    report = check_tier(tier.path)
    assert {entry.path for entry in report.bad} == damaged.bad
    assert report.leftovers == [damaged.leftover]
    assert (report.checked, report.good, report.exit_code) == (6, 2, 1)
    reasons = {entry.path: entry.reason for entry in report.bad}
    assert reasons[tier.chunks["raw0"]] == "checksum mismatch"
    assert reasons[tier.chunks["zstd0"]].startswith(("zstd:", "checksum mismatch"))
    assert "payload is" in reasons[tier.chunks["raw1"]]
    assert "another chunk" in reasons[damaged.renamed]

    result = run("--verbose", tier.path)
    assert result.exit_code == 1
    for path in damaged.bad:
        assert f"bad      {path}: {reasons[path]}" in result.stdout
    assert f"leftover {damaged.leftover}" in result.stdout
    assert "--repair removes them" in result.stderr
    assert all_files(tier.path) >= damaged.bad | {damaged.leftover}  # nothing deleted


def test_repair_removes_exactly_the_bad_files(tier: Tier, damaged: Damage) -> None:
    before = all_files(tier.path)
    result = run("--repair", tier.path)
    assert result.exit_code == 0, result.output
    removed = damaged.bad | {damaged.leftover}
    assert all_files(tier.path) == before - removed
    for path in removed:
        assert f"removed  {path} (" in result.stdout
    assert table_row(result, tier.path)[8] == "5"  # the "removed" column

    again = run(tier.path)
    assert again.exit_code == 0, again.output
    assert check_tier(tier.path).good == 2


def test_unexpected_entries_under_chunks_are_bad(tier: Tier) -> None:
    chunks = tier.path / "chunks"
    fanout = tier.chunks["zstd0"].parent
    strays = [
        fanout / ("a" * 32 + ".part"),  # not a chunk name
        chunks / tier.chunks["raw0"].name,  # no fan-out directory
        chunks / "XY",  # fan-out name that is not lowercase hex
        fanout / (fanout.name + "0" * 30),  # a directory where a chunk file should be
        fanout / (("ff" if fanout.name != "ff" else "fe") + "0" * 30),  # wrong fan-out dir
    ]
    strays[0].write_bytes(b"x")
    tier.chunks["raw0"].rename(strays[1])
    strays[2].mkdir()
    strays[3].mkdir()
    strays[4].write_bytes(tier.chunks["raw1"].read_bytes())
    (fanout / "link").symlink_to(tier.chunks["zstd1"])

    report = check_tier(tier.path, repair=True)
    assert {e.path for e in report.bad} == {*strays, fanout / "link"}
    assert report.exit_code == 0
    assert not any(p.exists() or p.is_symlink() for p in [*strays, fanout / "link"])
    assert tier.chunks["zstd1"].exists()  # the symlink's target is a good chunk


def test_not_a_tier_dir_exits_2(tmp_path: Path, tier: Tier) -> None:
    result = run(tier.path, tmp_path / "missing", tmp_path)
    assert result.exit_code == 2
    assert f"{tmp_path / 'missing'}: not a cachefs tier directory" in result.stderr
    assert f"{tmp_path}: not a cachefs tier directory" in result.stderr
    assert str(tier.path) in result.stdout  # the good directory is still checked
    with pytest.raises(NotATierDirectory):
        check_tier(tmp_path)


@pytest.mark.usefixtures("mount_lock")
def test_locked_tier_is_checked_read_only(tier: Tier, damaged: Damage) -> None:
    result = run(tier.path)
    assert result.exit_code == 1, result.output
    cells = table_row(result, tier.path)
    assert cells[3] == "4"  # bad chunks are still found
    assert cells[7] == "1 in use"  # tmp/ files belong to the running mount
    assert cells[-1] == "yes"  # locked

    before = {p: p.read_bytes() for p in all_files(tier.path)}
    refused = run("--repair", tier.path)
    assert refused.exit_code == 2
    assert "in use by a running mount" in refused.stderr
    assert not [line for line in refused.stdout.splitlines() if line.startswith("removed")]
    assert table_row(refused, tier.path)[8] == "refused"
    assert {p: p.read_bytes() for p in all_files(tier.path)} == before


def test_check_holds_a_shared_lock(tier: Tier) -> None:
    """While the check runs, a mount cannot take the tier (it needs LOCK_EX)."""
    (tier.path / ".lock").touch()
    seen: list[bool] = []

    class Probe:
        def start(self, path: Path, total: int) -> None:
            fd = os.open(tier.path / ".lock", os.O_RDWR)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                seen.append(False)
            except BlockingIOError:
                seen.append(True)
            finally:
                os.close(fd)

        def advance(self) -> None:
            pass

    report: TierReport = check_tier(tier.path, progress=Probe())
    assert seen == [True] and not report.locked


def test_subprocess_smoke(tier: Tier) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "cachefs", "check", str(tier.path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""  # no progress bar without a terminal
    assert table_row_of(proc.stdout, tier.path)[1:4] == ["6", "6", "0"]


def test_a_tier_without_a_secret_is_reported_clearly(tier: Tier) -> None:
    (tier.path / "secret").unlink()
    result = run(tier.path)
    assert result.exit_code == 2
    assert f"{tier.path}: no secret file, so its chunk files cannot be verified" in result.stderr
    assert "the next mount drops its chunks" in result.stderr
    with pytest.raises(NoSecret):
        check_tier(tier.path)
    (tier.path / "secret").write_bytes(b"short")
    damaged = run(tier.path)
    assert damaged.exit_code == 2
    assert "secret is damaged (5 bytes, not 32)" in damaged.stderr


def test_chunks_this_tier_did_not_write_are_bad(tier: Tier) -> None:
    """Tagged with another tier's secret, swapped (digest field patched), old format."""
    foreign = tier.add("foreign", os.urandom(1000), None, secret=os.urandom(32))
    swapped = tier.chunks["raw0"]
    blob = bytearray(tier.chunks["raw1"].read_bytes())
    blob[32:48] = bytes.fromhex(swapped.name)  # claims the name it now has
    swapped.write_bytes(bytes(blob))
    old = tier.chunks["zstd0"]
    raw = b"old format chunk"
    old.write_bytes(
        chunkfile.SIGNED.pack(
            b"CFSC", 1, 0, 0, len(raw), len(raw), chunkfile.checksum(raw), bytes.fromhex(old.name)
        )
        + raw
    )
    report = check_tier(tier.path)
    reasons = {entry.path: entry.reason for entry in report.bad}
    assert reasons == {
        foreign: "bad tag: not written by this tier",
        swapped: "bad tag: not written by this tier",
        old: "old format version 1",
    }
    assert report.good == 4


def test_chunks_written_by_a_disk_tier_pass(tmp_path: Path) -> None:
    """The checker and the tier agree on the format, the tag and the secret."""
    tier = DiskTier(TierConfig("ssd", tmp_path, 1 << 20, "lru", 3600.0, 0), b"n" * 32, Stats())
    tier.open()
    tier.load_index()
    for i in range(3):
        key = ChunkKey(FileVersion(1, 30_000, 2, 3), 10_000, i)
        assert tier.put(key, (COMPRESSIBLE * 2)[:10_000] if i else os.urandom(10_000), 3)
    tier.close()
    report = check_tier(tmp_path)
    assert (report.good, report.bad, report.compressed) == (3, [], 2)


def test_the_list_of_chunks_to_verify_is_small_per_chunk(tmp_path: Path) -> None:
    """The check lists every chunk file before verifying it (for the progress bar):
    at a million chunks, what it keeps per file is most of its RSS. A path string
    each, nothing else (a Path object and a digest each took 3.7 times as much)."""
    from cachefs.app.check import TierReport, _scan_chunks

    chunks = tmp_path / "chunks"
    for i in range(300):
        name = f"{i:032x}"[::-1]
        (chunks / name[:2]).mkdir(parents=True, exist_ok=True)
        (chunks / name[:2] / name).touch()
    report = TierReport(tmp_path)
    candidates = _scan_chunks(chunks, report)
    assert len(candidates) == 300 and not report.bad
    assert all(type(c) is str and os.path.isfile(c) for c in candidates)
    held = sys.getsizeof(candidates) + sum(sys.getsizeof(c) for c in candidates)
    assert held / len(candidates) < 100 + len(candidates[0])
