"""DESIGN.md rule 9: nothing cachefs keeps is another user's to change.

Through real mounts (and a real unprivileged user where it matters): the modes
of everything cachefs creates, the refusal of tier directories others could
change, and chunk files that cachefs did not write itself (forged, swapped,
copied from another tier) never being served.
"""

from __future__ import annotations

import os
import random
import shutil
import stat
import struct
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import xxhash

from cachefs.common.private import UnsafePath, check_private_dir
from cachefs.config import TierConfig
from cachefs.data.chunks import ChunkKey
from cachefs.data.tiers.disk import DiskTier
from cachefs.origin.access import FileVersion
from cachefs.stats.counters import Stats

from .conftest import (
    DEFAULT_TEST_OPTIONS,
    MountFactory,
    is_mounted,
    read_direct,
    wait_until_on_disk,
)

MiB = 1024 * 1024
pytestmark = pytest.mark.timeout(60)

# The format-1 header: what an attacker without any secret can build.
V1_HEADER = struct.Struct("<4sBBHII16s16s")


def forged_v1_chunk(name: str, raw: bytes) -> bytes:
    """A well-formed format-1 chunk file for the file name *name*, holding *raw*:
    right magic, digest and lengths, and the xxh3-128 of the forged bytes."""
    digest = bytes.fromhex(name)
    check = xxhash.xxh3_128_digest(raw)
    return V1_HEADER.pack(b"CFSC", 1, 0, 0, len(raw), len(raw), check, digest) + raw


def raw_length(chunk_file: Path) -> int:
    """The raw length a chunk file's header gives (offset 8 in every format)."""
    return struct.unpack_from("<I", chunk_file.read_bytes(), 8)[0]


def chunk_files(tier: Path) -> list[Path]:
    return sorted(tier.glob("chunks/*/*"))


def failed_mount(mount_factory: MountFactory, origin: Path, options: list[str]) -> str:
    """Mount, expecting a refusal: the daemon's message; asserts nothing got mounted."""
    with pytest.raises(RuntimeError, match=r"cachefs exited with [1-9]") as failed:
        mount_factory(origin, options)
    assert not is_mounted(mount_factory.tmp_path / f"mnt{mount_factory.count}")
    message = str(failed.value)
    assert "(nothing mounted)" in message
    return message


# -- modes -------------------------------------------------------------------------------


def not_private(top: Path) -> list[str]:
    """Everything under *top* (itself included) that is not a 0700 dir or a 0600 file."""
    wrong = []
    for path in [top, *top.rglob("*")]:
        st = path.lstat()
        mode = stat.S_IMODE(st.st_mode)
        expected = 0o700 if stat.S_ISDIR(st.st_mode) else 0o600
        if mode != expected or not (stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode)):
            wrong.append(f"{path}: {mode:04o}")
    return wrong


def test_everything_cachefs_creates_is_private(
    origin: Path, mount_factory: MountFactory, tmp_path: Path
) -> None:
    base = tmp_path / "missing" / "parents"  # neither exists: cachefs creates them
    ssd, hdd = base / "ssd", base / "hdd"
    rng = random.Random(1)
    files = {
        "Movies/film.mkv": rng.randbytes(2 * MiB + 5),  # media: hdd
        "docs/report.bin": rng.randbytes(MiB + 7),  # user_data: ssd
        "Movies/film.nfo": b"<movie>" * 500,  # metadata: kept on ssd
    }
    for rel, data in files.items():
        (origin / rel).parent.mkdir(parents=True, exist_ok=True)
        (origin / rel).write_bytes(data)
    mounted = mount_factory(
        origin, [*DEFAULT_TEST_OPTIONS, f"tiers.ssd.path={ssd}", f"tiers.hdd.path={hdd}"]
    )
    for rel, data in files.items():
        assert read_direct(mounted.mnt / rel) == data
        wait_until_on_disk(mounted, rel)
    os.setxattr(mounted.mnt / "docs/report.bin", "user.cachefs.pin", b"ssd")
    state = ("pins.json", "metadata.sqlite", "metadata.sqlite-wal", "metadata.sqlite-shm")
    live = {ssd / name for name in (".lock", "secret", "format", *state)}
    live |= {hdd / name for name in (".lock", "secret", "format")}
    assert chunk_files(ssd) and chunk_files(hdd)
    assert not_private(tmp_path / "missing") == []
    assert {p for p in live if not p.exists()} == set()

    mount_factory.unmount(mounted)  # writes the index snapshots and the last stats
    assert (ssd / "index").exists() and (hdd / "index").exists()
    assert (ssd / "stats.json").exists()
    assert not_private(tmp_path / "missing") == []


# -- refused directories -------------------------------------------------------------------

OTHER_UID = 4242  # nobody's: a directory owned by another user


def damage_owner(ssd: Path) -> Path:
    os.chown(ssd, OTHER_UID, OTHER_UID)
    return ssd


def damage_group_writable(ssd: Path) -> Path:
    ssd.chmod(0o770)
    return ssd


def damage_other_writable(ssd: Path) -> Path:
    ssd.chmod(0o707)
    return ssd


def damage_parent_world_writable(ssd: Path) -> Path:
    ssd.parent.chmod(0o777)
    return ssd.parent


def damage_parent_owned_by_other(ssd: Path) -> Path:
    os.chown(ssd.parent, OTHER_UID, OTHER_UID)
    return ssd.parent


@pytest.mark.parametrize(
    "damage",
    [
        damage_owner,
        damage_group_writable,
        damage_other_writable,
        damage_parent_world_writable,
        damage_parent_owned_by_other,
    ],
)
@pytest.mark.parametrize("tier", ["ssd", "hdd"])
def test_a_tier_directory_others_could_change_is_refused(
    origin: Path, mount_factory: MountFactory, tmp_path: Path, damage, tier: str
) -> None:
    parent = tmp_path / "cache"
    dirs = {"ssd": parent / "ssd", "hdd": tmp_path / "cache2" / "hdd"}
    for path in dirs.values():
        path.mkdir(parents=True, mode=0o700)
    culprit = damage(dirs[tier])
    options = [*DEFAULT_TEST_OPTIONS, *(f"tiers.{t}.path={p}" for t, p in dirs.items())]
    message = failed_mount(mount_factory, origin, options)
    assert f"bad ownership or modes for directory {culprit}" in message
    assert "fix" in message or "chown" in message


def test_a_sticky_world_writable_parent_is_accepted(
    origin: Path, mount_factory: MountFactory, tmp_path: Path
) -> None:
    """Like /tmp: others may create entries there, but never rename ours."""
    parent = tmp_path / "shared"
    parent.mkdir()
    parent.chmod(0o1777)
    (origin / "f").write_bytes(b"hello")
    mounted = mount_factory(origin, [*DEFAULT_TEST_OPTIONS, f"tiers.ssd.path={parent / 'ssd'}"])
    assert read_direct(mounted.mnt / "f") == b"hello"


# -- a real other user -----------------------------------------------------------------------


@pytest.fixture
def stranger() -> Iterator[str]:
    """A throwaway unprivileged user, deleted afterwards."""
    name = f"cfs-{uuid.uuid4().hex[:10]}"
    subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
        check=True,
        capture_output=True,
    )
    try:
        yield name
    finally:
        subprocess.run(["userdel", name], capture_output=True)


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory the stranger can reach (pytest's tmp_path is 0700 root)."""
    path = Path(tempfile.mkdtemp(prefix="cachefs-security-", dir="/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def as_user(user: str, *command: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["runuser", "-u", user, "--", *map(str, command)],
        capture_output=True,
        text=True,
        timeout=10,
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"},
    )


def test_another_user_can_neither_swap_nor_plant_and_a_writable_parent_is_refused(
    origin: Path, mount_factory: MountFactory, stranger: str, shared_dir: Path
) -> None:
    cache = shared_dir / "cache"  # created by cachefs
    ssd = cache / "ssd"
    options = [*DEFAULT_TEST_OPTIONS, f"tiers.ssd.path={ssd}", f"tiers.hdd.path={cache / 'hdd'}"]
    data = random.Random(2).randbytes(MiB)
    (origin / "report.bin").write_bytes(data)
    mounted = mount_factory(origin, options)
    assert read_direct(mounted.mnt / "report.bin") == data
    wait_until_on_disk(mounted, "report.bin")
    victim = chunk_files(ssd)[0]
    forged = shared_dir / "forged"  # root's, readable by all: the stranger copies it
    forged.write_bytes(forged_v1_chunk(victim.name, b"X" * raw_length(victim)))
    forged.chmod(0o644)
    before = victim.read_bytes()

    for attempt in (
        ["mv", ssd, cache / "ssd.old"],  # the swap
        ["mkdir", cache / "planted"],
        ["cp", forged, victim],  # the plant
        ["ls", ssd],
    ):
        result = as_user(stranger, *attempt)
        assert result.returncode != 0, attempt
        assert "Permission denied" in result.stderr, (attempt, result.stderr)
    assert victim.read_bytes() == before

    # An admin opens up the parent: the swap now succeeds ...
    cache.chmod(0o777)
    assert as_user(stranger, "mv", ssd, cache / "ssd.old").returncode == 0
    planted = ssd / victim.relative_to(ssd)
    assert as_user(stranger, "mkdir", "-p", planted.parent).returncode == 0
    assert as_user(stranger, "cp", forged, planted).returncode == 0
    assert planted.stat().st_uid != 0
    # ... the live mount still never serves the planted bytes ...
    assert read_direct(mounted.mnt / "report.bin") == data
    mount_factory.unmount(mounted)
    # ... and the next mount refuses, naming what is wrong
    message = failed_mount(mount_factory, origin, options)
    assert f"bad ownership or modes for directory {cache}" in message
    # The admin closes the parent again: the planted directory itself is refused.
    cache.chmod(0o755)
    message = failed_mount(mount_factory, origin, options)
    assert f"bad ownership or modes for directory {ssd}: owned by uid" in message
    assert f"({stranger})" in message and "it may have been planted" in message


# -- chunk files cachefs did not write -------------------------------------------------------


def test_a_forged_chunk_planted_in_a_live_tier_is_never_served(
    origin: Path, mount_factory: MountFactory
) -> None:
    data = random.Random(3).randbytes(4 * MiB)  # user_data: 8 chunks on the ssd tier
    (origin / "report.bin").write_bytes(data)
    mounted = mount_factory(origin, ["tiers.ram.max_size=1MiB", "stats.backend=embedded"])
    assert read_direct(mounted.mnt / "report.bin") == data
    wait_until_on_disk(mounted, "report.bin")
    files = chunk_files(mounted.tier_dir("ssd"))
    assert len(files) == 8
    for path in files:  # root plants them: permissions do not stop root
        path.write_bytes(forged_v1_chunk(path.name, b"forged!!" * (raw_length(path) // 8)))
    in_ram = mounted.residency("report.bin")["ram"]
    assert in_ram < len(files)

    assert read_direct(mounted.mnt / "report.bin") == data
    assert mounted.stats()["corrupt_chunks"] >= len(files) - in_ram


NAMESPACE = b"n" * 32


def open_tier(path: Path, name: str = "ssd") -> DiskTier:
    tier = DiskTier(TierConfig(name, path, 16 * MiB, "lru", 3600.0, 0), NAMESPACE, Stats())
    tier.open()
    tier.load_index()
    return tier


def key(index: int, size: int = 10_000) -> ChunkKey:
    return ChunkKey(FileVersion(42, size, 7, 7), 1000, index)


def test_swapped_chunk_files_never_verify(tmp_path: Path) -> None:
    """Swapped, even with each header's digest field patched to its new name."""
    tier = open_tier(tmp_path / "ssd")
    first, second = key(1), key(2)
    assert tier.put(first, b"1" * 1000, level=None)
    assert tier.put(second, b"2" * 1000, level=None)
    paths = [tier.chunk_path(k.digest(NAMESPACE)) for k in (first, second)]
    blobs = [bytearray(p.read_bytes()) for p in paths]
    for path, blob in zip(paths, reversed(blobs), strict=True):
        blob[32:48] = bytes.fromhex(path.name)
        path.write_bytes(bytes(blob))
    assert tier.get(first) is None and tier.get(second) is None
    assert tier.stats.get("corrupt_chunks") == 2
    tier.close()


def test_a_chunk_copied_from_the_hdd_tier_never_verifies_in_the_ssd_tier(tmp_path: Path) -> None:
    hdd = open_tier(tmp_path / "hdd", "hdd")
    ssd = open_tier(tmp_path / "ssd")
    k = key(3)
    assert hdd.put(k, b"h" * 1000, level=None)
    source = hdd.chunk_path(k.digest(NAMESPACE))
    copy = ssd.chunk_path(k.digest(NAMESPACE))
    copy.parent.mkdir(mode=0o700, exist_ok=True)
    shutil.copyfile(source, copy)
    ssd.close()
    ssd = open_tier(tmp_path / "ssd")  # the scan indexes the copy
    assert ssd.contains(k)
    assert ssd.get(k) is None
    assert ssd.stats.get("corrupt_chunks") == 1
    assert hdd.get(k) == b"h" * 1000  # still good where it was written
    hdd.close()
    ssd.close()


# -- the directory check itself: symlinks on the way -----------------------------------------


def test_symlinks_on_the_way_are_followed_and_checked(tmp_path: Path) -> None:
    real = tmp_path / "real"
    (real / "ssd").mkdir(parents=True, mode=0o700)
    safe_link = tmp_path / "link"
    safe_link.symlink_to(real)
    check_private_dir(safe_link / "ssd")  # root's symlink to a safe place: fine
    check_private_dir(tmp_path / "real" / ".." / "link" / "ssd")

    open_dir = tmp_path / "open"  # a symlink in a directory anyone may write to ...
    open_dir.mkdir()
    (open_dir / "link").symlink_to(real)
    open_dir.chmod(0o777)
    with pytest.raises(UnsafePath, match=f"for directory {open_dir} \\(on the way to"):
        check_private_dir(open_dir / "link" / "ssd")

    sticky = tmp_path / "sticky"  # ... or one another user owns, in a sticky directory
    sticky.mkdir()
    sticky.chmod(0o1777)
    theirs = sticky / "theirs"
    theirs.symlink_to(real)
    os.lchown(theirs, OTHER_UID, OTHER_UID)
    with pytest.raises(UnsafePath, match=f"for symlink {theirs} \\(on the way to"):
        check_private_dir(theirs / "ssd")

    behind = tmp_path / "behind"  # the target's own parents count, not just the link's
    (behind / "ssd").mkdir(parents=True, mode=0o700)
    behind.chmod(0o777)
    (tmp_path / "to-behind").symlink_to(behind / "ssd")
    with pytest.raises(UnsafePath, match=f"for directory {behind} \\(on the way to"):
        check_private_dir(tmp_path / "to-behind")
