"""The mount command: bad input fails clearly, mounts nothing; good input mounts."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import Mounted, MountFactory, run_cachefs, unmount


def tier_options(tmp_path: Path) -> str:
    cache = tmp_path / "cache"
    return f"stats.backend=embedded,tiers.ssd.path={cache}/ssd,tiers.hdd.path={cache}/hdd"


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ('[tiers.ram]\nmax_size = "512MiB"\nbogus = 1\n', "cfg.toml:3: tiers.ram.bogus"),
        ('[tiers.ssd]\n\nmax_size = "five gigs"\n', "cfg.toml:3: tiers.ssd.max_size"),
        ('[tiers.nvme]\nmax_size = "1GiB"\n', "cfg.toml:1: tiers.nvme"),
        (
            '[content_types.media]\ndefault_tier = "nvme"\n',
            "cfg.toml:2: content_types.media.default_tier",
        ),
        ("[stats\n", "cfg.toml"),
    ],
)
def test_bad_config_exits_2_and_mounts_nothing(
    tmp_path: Path, origin: Path, content: str, expected: str
) -> None:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    config = write(tmp_path / "cfg.toml", content)
    result = run_cachefs("mount", "-f", str(origin), str(mnt), "--config", config)
    assert result.returncode == 2, result.stderr
    assert expected in result.stderr
    assert "nothing mounted" in result.stderr
    assert not os.path.ismount(mnt)


def test_unreadable_config_names_the_file(tmp_path: Path, origin: Path) -> None:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    missing = tmp_path / "nope.toml"
    result = run_cachefs("mount", str(origin), str(mnt), "-o", f"config={missing}")
    assert result.returncode == 2
    assert str(missing) in result.stderr
    assert not os.path.ismount(mnt)


def test_bad_override_and_unknown_option(tmp_path: Path, origin: Path) -> None:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    result = run_cachefs("mount", str(origin), str(mnt), "-o", "tiers.ram.max_size=huge")
    assert result.returncode == 2
    assert "tiers.ram.max_size" in result.stderr
    result = run_cachefs("mount", str(origin), str(mnt), "-o", "allow_othr")
    assert result.returncode == 2
    assert "allow_othr" in result.stderr
    assert not os.path.ismount(mnt)


def test_missing_origin_fails_with_reason(tmp_path: Path) -> None:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    result = run_cachefs("mount", str(tmp_path / "absent"), str(mnt))
    assert result.returncode == 1
    assert "absent" in result.stderr and "no such directory" in result.stderr


def test_config_show_prints_effective_config(tmp_path: Path) -> None:
    config = write(tmp_path / "c.toml", '[tiers.ram]\nmax_size = "1GiB"\n')
    result = run_cachefs("config", "show", "--config", config, "-o", "stats.backend=embedded")
    assert result.returncode == 0, result.stderr
    assert 'max_size = "1GiB"' in result.stdout
    assert 'backend = "embedded"' in result.stdout


def test_background_mount_returns_zero_once_mounted(tmp_path: Path, origin: Path) -> None:
    (origin / "f").write_bytes(b"data")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    result = run_cachefs("mount", str(origin), str(mnt), "-o", tier_options(tmp_path))
    try:
        assert result.returncode == 0, result.stderr
        assert os.path.ismount(mnt)
        assert (mnt / "f").read_bytes() == b"data"
    finally:
        unmount(mnt, None)
    assert not os.path.ismount(mnt)


def test_mount_helper_takes_fstab_options(tmp_path: Path, origin: Path) -> None:
    (origin / "f").write_bytes(b"data")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    helper = [sys.executable, "-m", "cachefs.mount_helper"]
    opts = "rw,_netdev,nofail,noauto,x-systemd.automount,ro," + tier_options(tmp_path)
    result = subprocess.run(
        [*helper, str(origin), str(mnt), "-n", "-o", opts, "-t", "fuse.cachefs"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    try:
        assert result.returncode == 0, result.stderr
        assert (mnt / "f").read_bytes() == b"data"
        with pytest.raises(OSError):  # ro is honoured
            (mnt / "g").write_bytes(b"x")
    finally:
        unmount(mnt, None)
    fake = subprocess.run([*helper, str(origin), str(mnt), "-f"], capture_output=True, timeout=60)
    assert fake.returncode == 0
    assert not os.path.ismount(mnt)


def test_ram_tier_never_exceeds_max_size(origin: Path, mount_factory: MountFactory) -> None:
    mounted: Mounted = mount_factory(origin, ["tiers.ram.max_size=4MiB", "stats.backend=embedded"])
    for i in range(6):
        (origin / f"f{i}.mkv").write_bytes(os.urandom(3 * 1024 * 1024 + i))
    for _ in range(2):
        for i in range(6):
            assert (mounted.mnt / f"f{i}.mkv").read_bytes() == (origin / f"f{i}.mkv").read_bytes()
            ram = mounted.stats()["tiers"]["ram"]
            assert 0 < ram["bytes"] <= 4 * 1024 * 1024
    assert mounted.stats()["tiers"]["ram"]["evictions"] > 0


def test_sigterm_unmounts_cleanly(origin: Path, mount_factory: MountFactory) -> None:
    mounted = mount_factory(origin)
    mounted.proc.terminate()
    assert mounted.proc.wait(timeout=15) == 0
    deadline = time.monotonic() + 5
    while os.path.ismount(mounted.mnt) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not os.path.ismount(mounted.mnt)


def test_kernel_read_ahead_is_raised_for_large_fuse_reads(
    origin: Path, mount_factory: MountFactory
) -> None:
    mounted = mount_factory(origin, ["mount.read_ahead=2MiB", "stats.backend=embedded"])
    device = os.stat(mounted.mnt).st_dev
    path = Path(f"/sys/class/bdi/{os.major(device)}:{os.minor(device)}/read_ahead_kb")
    deadline = time.monotonic() + 5
    while path.read_text().strip() != "2048" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert path.read_text().strip() == "2048"


def test_unusable_tier_directory_fails_the_mount(tmp_path: Path, origin: Path) -> None:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    (tmp_path / "file").write_text("not a directory")
    bad = f"tiers.ssd.path={tmp_path / 'file' / 'ssd'},tiers.hdd.path={tmp_path / 'hdd'}"
    result = run_cachefs("mount", str(origin), str(mnt), "-o", bad)
    assert result.returncode == 1
    assert "ssd" in result.stderr and "nothing mounted" in result.stderr
    assert not os.path.ismount(mnt)


def test_a_tier_directory_serves_one_mount_at_a_time(
    tmp_path: Path, origin: Path, mount_factory: MountFactory
) -> None:
    first = mount_factory(origin)
    ssd = next(o for o in first.options if o.startswith("tiers.ssd.path="))
    mnt = tmp_path / "second"
    mnt.mkdir()
    result = run_cachefs(
        "mount", str(origin), str(mnt), "-o", f"{ssd},tiers.hdd.path={tmp_path}/h2"
    )
    assert result.returncode == 1
    assert "another cachefs mount" in result.stderr
    assert not os.path.ismount(mnt)
