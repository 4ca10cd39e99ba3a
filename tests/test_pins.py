"""Pins through a real mount: a pinned file stays in its tier under pressure."""

from __future__ import annotations

import os
import random
from pathlib import Path

from .conftest import MountFactory, read_direct, wait_until_on_disk

MiB = 1024 * 1024


def fill(origin: Path, names: list[str], size: int) -> None:
    rng = random.Random(len(names))
    for name in names:
        (origin / name).parent.mkdir(parents=True, exist_ok=True)
        (origin / name).write_bytes(rng.randbytes(size))


def test_a_pinned_file_stays_in_the_ssd_tier(origin: Path, mount_factory: MountFactory) -> None:
    others = [f"other/{i}.bin" for i in range(10)]
    fill(origin, ["keep.bin", *others], MiB)  # user_data: SSD tier
    mounted = mount_factory(
        origin, ["tiers.ram.max_size=1MiB", "tiers.ssd.max_size=3MiB", "stats.backend=embedded"]
    )
    read_direct(mounted.mnt / "keep.bin")
    wait_until_on_disk(mounted, "keep.bin")
    os.setxattr(mounted.mnt / "keep.bin", "user.cachefs.pin", b"ssd")
    assert os.getxattr(mounted.mnt / "keep.bin", "user.cachefs.pin") == b"ssd"
    for _ in range(2):
        for name in others:  # 10 MiB through a 3 MiB tier
            assert read_direct(mounted.mnt / name) == (origin / name).read_bytes()
    assert mounted.stats()["tiers"]["ssd"]["evictions"] > 0
    assert mounted.residency("keep.bin")["ssd"] == 2
    assert mounted.residency("other/0.bin")["ssd"] == 0


def test_pinning_moves_chunks_into_the_pinned_tier(
    origin: Path, mount_factory: MountFactory
) -> None:
    fill(origin, ["Movies/film.mkv"], 3 * MiB)  # media: HDD tier
    mounted = mount_factory(origin)
    read_direct(mounted.mnt / "Movies/film.mkv")
    assert wait_until_on_disk(mounted, "Movies/film.mkv")["hdd"] == 3
    os.setxattr(mounted.mnt / "Movies", "user.cachefs.pin", b"ssd")  # a directory pin
    assert os.getxattr(mounted.mnt / "Movies/film.mkv", "user.cachefs.pin") == b"ssd"
    residency = mounted.residency("Movies/film.mkv")
    assert (residency["ssd"], residency["hdd"]) == (3, 0)
    os.setxattr(mounted.mnt / "Movies", "user.cachefs.pin", b"none")
    assert os.getxattr(mounted.mnt / "Movies/film.mkv", "user.cachefs.pin") == b"none"


def test_a_ram_pin_survives_pressure(origin: Path, mount_factory: MountFactory) -> None:
    others = [f"other/{i}.mkv" for i in range(6)]
    fill(origin, others, MiB)
    (origin / "hot.nfo").write_bytes(b"<nfo>" * 1000)
    mounted = mount_factory(origin, ["tiers.ram.max_size=2MiB", "stats.backend=embedded"])
    os.setxattr(mounted.mnt / "hot.nfo", "user.cachefs.pin", b"ram")
    read_direct(mounted.mnt / "hot.nfo")
    for name in others:
        read_direct(mounted.mnt / name)
    assert mounted.residency("hot.nfo")["ram"] == 1
    assert mounted.stats()["tiers"]["ram"]["evictions"] > 0


def test_bad_pin_values_are_refused(origin: Path, mount_factory: MountFactory) -> None:
    (origin / "f").write_bytes(b"x")
    mounted = mount_factory(origin)
    try:
        os.setxattr(mounted.mnt / "f", "user.cachefs.pin", b"nvme")
        raise AssertionError("accepted a bad tier")
    except OSError as exc:
        assert exc.errno == 22  # EINVAL


def test_pins_survive_a_remount(origin: Path, mount_factory: MountFactory) -> None:
    fill(origin, ["keep.bin"], MiB)
    first = mount_factory(origin)
    os.setxattr(first.mnt / "keep.bin", "user.cachefs.pin", b"hdd")
    options = first.options
    mount_factory.unmount(first)
    second = mount_factory(origin, options)
    assert os.getxattr(second.mnt / "keep.bin", "user.cachefs.pin") == b"hdd"
    read_direct(second.mnt / "keep.bin")
    assert wait_until_on_disk(second, "keep.bin")["hdd"] == 2  # its pin decides its home
