"""The mount command: bad input fails clearly, mounts nothing; good input mounts."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import (
    DEFAULT_TEST_OPTIONS,
    Mounted,
    MountFactory,
    cachefs_command,
    is_mounted,
    run_cachefs,
    unmount,
)


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
    helper = [sys.executable, "-m", "cachefs.app.mount_helper"]
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


# -- mount points and origins that cannot work -------------------------------------------


def second_tiers(tmp_path: Path) -> str:
    """Tier directories of a second mount, so that a tier in use is not what refuses it."""
    second = tmp_path / "second"
    return f"stats.backend=embedded,tiers.ssd.path={second}/ssd,tiers.hdd.path={second}/hdd"


def mounts_at(mnt: Path) -> int:
    """How many mounts are stacked at *mnt*, from /proc (stat() would ask the top one)."""
    target = os.fsencode(os.path.abspath(mnt)).replace(b" ", b"\\040")
    with open("/proc/self/mountinfo", "rb") as mountinfo:
        return sum(line.split()[4] == target for line in mountinfo)


def lazy_unmount_all(mnt: Path) -> None:
    mnt = Path(os.path.realpath(mnt))
    for _ in range(5):
        if not is_mounted(mnt):
            return
        subprocess.run(["fusermount3", "-uz", str(mnt)], capture_output=True)


def kill_and_wait_until_dead(mounted: Mounted) -> None:
    """SIGKILL the daemon: its mount point is left answering ENOTCONN."""
    mounted.proc.kill()
    mounted.proc.wait()
    deadline = time.monotonic() + 5  # the kernel may answer from its attribute cache a while
    while True:
        try:
            os.stat(mounted.mnt)
        except OSError as exc:
            assert exc.errno == errno.ENOTCONN, exc
            return
        assert time.monotonic() < deadline, "the dead mount still answers stat()"
        time.sleep(0.05)


def assert_refused(result: subprocess.CompletedProcess[str], *expected: str) -> None:
    assert result.returncode == 1, result.stderr
    for text in expected:
        assert text in result.stderr
    assert result.stderr.startswith("cachefs: error: ")
    assert result.stderr.rstrip().endswith("(nothing mounted)")


def test_mounting_over_a_cachefs_mount_is_refused(
    tmp_path: Path, origin: Path, mount_factory: MountFactory
) -> None:
    (origin / "f").write_bytes(b"data")
    first = mount_factory(origin)
    try:
        result = run_cachefs("mount", str(origin), str(first.mnt), "-o", second_tiers(tmp_path))
        stacked = mounts_at(first.mnt)
    finally:
        while mounts_at(first.mnt) > 1:  # a second mount on top, from the code before the fix
            subprocess.run(["fusermount3", "-u", str(first.mnt)], capture_output=True)
    assert stacked == 1
    assert_refused(
        result,
        f"mount point {first.mnt} is already mounted (fuse.cachefs from {origin})",
        f"`fusermount3 -u {first.mnt}`",
    )
    assert not (tmp_path / "second").exists()  # no tier directory created either
    assert (first.mnt / "f").read_bytes() == b"data"  # the first mount is left alone


def test_mounting_over_another_file_system_is_refused(tmp_path: Path, origin: Path) -> None:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "scratch", str(mnt)], check=True)
    try:
        result = run_cachefs("mount", str(origin), str(mnt), "-o", second_tiers(tmp_path))
        stacked = mounts_at(mnt)
    finally:
        for _ in range(3):  # cachefs on top (from the code before the fix), then the tmpfs
            if mounts_at(mnt):
                subprocess.run(["umount", "-l", str(mnt)], capture_output=True)
    assert stacked == 1
    assert_refused(result, f"{mnt} is already mounted (tmpfs from scratch)", f"`umount {mnt}`")


def test_a_stopped_mount_point_is_refused_without_waiting_on_it(
    tmp_path: Path, origin: Path, mount_factory: MountFactory
) -> None:
    # attr_timeout=0: the kernel asks the (stopped) daemon at every stat(), none is cached
    first = mount_factory(origin, [*DEFAULT_TEST_OPTIONS, "mount.attr_timeout=0s"])
    command = cachefs_command("mount", str(origin), str(first.mnt), "-o", second_tiers(tmp_path))
    os.kill(first.proc.pid, signal.SIGSTOP)
    try:
        start = time.monotonic()
        result = subprocess.run(command, capture_output=True, text=True, timeout=10)
        took = time.monotonic() - start
    finally:
        os.kill(first.proc.pid, signal.SIGCONT)
    assert_refused(
        result,
        f"mount point {first.mnt} is already mounted (fuse.cachefs from {origin}), "
        "and it does not answer",
        f"`fusermount3 -u {first.mnt}`",
    )
    assert took < 8
    assert mounts_at(first.mnt) == 1


def test_a_dead_mount_point_is_named_with_its_fix(
    tmp_path: Path, origin: Path, mount_factory: MountFactory
) -> None:
    dead = mount_factory(origin)
    try:
        kill_and_wait_until_dead(dead)
        result = run_cachefs("mount", str(origin), str(dead.mnt), "-o", second_tiers(tmp_path))
        stacked = mounts_at(dead.mnt)
    finally:
        lazy_unmount_all(dead.mnt)
    assert stacked == 1
    assert_refused(
        result,
        f"mount point {dead.mnt} is a dead FUSE mount (fuse.cachefs from {origin}; "
        "its daemon is gone): unmount it with "
        f"`fusermount3 -u {dead.mnt}` (or `umount -l {dead.mnt}`), then mount again",
    )
    assert not (tmp_path / "second").exists()


def test_a_dead_origin_is_named_with_its_fix(
    tmp_path: Path, origin: Path, mount_factory: MountFactory
) -> None:
    """The stand-in NAS is a cachefs mount whose daemon is killed: its path answers ENOTCONN."""
    (origin / "sub").mkdir()
    nas = mount_factory(origin)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    try:
        kill_and_wait_until_dead(nas)
        at_root = run_cachefs("mount", str(nas.mnt), str(mnt), "-o", second_tiers(tmp_path))
        below = run_cachefs("mount", str(nas.mnt / "sub"), str(mnt), "-o", second_tiers(tmp_path))
    finally:
        lazy_unmount_all(mnt)
        lazy_unmount_all(nas.mnt)
    fix = f"`fusermount3 -u {nas.mnt}` (or `umount -l {nas.mnt}`)"
    assert_refused(
        at_root,
        f"origin {nas.mnt} is a dead FUSE mount (fuse.cachefs from {origin}; its daemon is gone)",
        fix,
    )
    assert_refused(below, f"origin {nas.mnt / 'sub'} is on a dead FUSE mount at {nas.mnt}", fix)
    assert not (tmp_path / "second").exists()


def test_a_dead_origin_the_kernel_still_stats_is_named_when_it_cannot_go_offline(
    tmp_path: Path, origin: Path, mount_factory: MountFactory
) -> None:
    """stat() of the origin answers from the kernel's attribute cache (60 s here), so it
    is opening the origin that fails: no cached metadata, so no offline mount either."""
    slow_expiry = ["mount.attr_timeout=60s", "metadata.revalidate_after=60s"]
    nas = mount_factory(origin, [*DEFAULT_TEST_OPTIONS, *slow_expiry])
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    try:
        os.stat(nas.mnt)
        nas.proc.kill()
        nas.proc.wait()
        os.stat(nas.mnt)  # still answered from the cache
        result = run_cachefs("mount", str(nas.mnt), str(mnt), "-o", second_tiers(tmp_path))
    finally:
        lazy_unmount_all(mnt)
        lazy_unmount_all(nas.mnt)
    assert_refused(
        result,
        f"origin {nas.mnt} is a dead FUSE mount (fuse.cachefs from {origin}; its daemon is "
        "gone), and no cached metadata to serve it offline: unmount it with "
        f"`fusermount3 -u {nas.mnt}` (or `umount -l {nas.mnt}`)",
    )
    assert not is_mounted(mnt)


def overlap_case(case: str, tmp_path: Path, origin: Path) -> tuple[Path, Path, str, str]:
    """(origin, mount point, -o options, expected message) of one overlap to refuse."""
    mnt = tmp_path / "mnt"
    ssd, hdd = tmp_path / "cache/ssd", tmp_path / "cache/hdd"
    if case == "mount point in origin":
        mnt = origin / "mnt"
        expected = f"mount point {mnt} is inside the origin {origin}"
    elif case == "mount point in origin, through a symlink":
        (origin / "deep").mkdir()
        mnt = tmp_path / "link"
        mnt.symlink_to(origin / "deep")
        expected = f"mount point {mnt} (really {origin / 'deep'}) is inside the origin {origin}"
    elif case == "origin in mount point":
        origin = mnt / "nas"
        origin.mkdir(parents=True)
        expected = f"origin {origin} is inside the mount point {mnt}"
    elif case == "ssd tier in origin":
        ssd = origin / ".cache/ssd"  # not there yet: mounting would create it
        expected = f"cache tier directory {ssd} (tiers.ssd.path) is inside the origin {origin}"
    elif case == "hdd tier in origin, through a symlink":
        (tmp_path / "alias").symlink_to(origin)
        hdd = tmp_path / "alias/cache/hdd"
        expected = (
            f"cache tier directory {hdd} (really {origin / 'cache/hdd'}) (tiers.hdd.path) "
            f"is inside the origin {origin}: the mount would show its own cache files; "
            "set tiers.hdd.path to a directory outside the origin"
        )
    else:
        assert case == "hdd tier in mount point"
        hdd = mnt / "hdd"
        expected = f"cache tier directory {hdd} (tiers.hdd.path) is inside the mount point {mnt}"
    mnt.mkdir(exist_ok=True)
    options = f"stats.backend=embedded,tiers.ssd.path={ssd},tiers.hdd.path={hdd}"
    return origin, mnt, options, expected


@pytest.mark.parametrize(
    "case",
    [
        "mount point in origin",
        "mount point in origin, through a symlink",
        "origin in mount point",
        "ssd tier in origin",
        "hdd tier in origin, through a symlink",
        "hdd tier in mount point",
    ],
)
def test_overlapping_origin_mount_point_and_tiers_are_refused(
    tmp_path: Path, origin: Path, case: str
) -> None:
    origin, mnt, options, expected = overlap_case(case, tmp_path, origin)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    try:
        result = run_cachefs("mount", str(origin), str(mnt), "-o", options)
    finally:
        lazy_unmount_all(mnt)  # mounted by the code before the fix
    assert_refused(result, expected)
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # no tier directory made


def test_state_dir_holds_pins_metadata_and_stats(
    tmp_path: Path, origin: Path, mount_factory: MountFactory
) -> None:
    state = tmp_path / "state"
    name = "episode.mkv"
    (origin / name).write_bytes(os.urandom(300_000))
    options = [*DEFAULT_TEST_OPTIONS, "stats.backend=embedded", f"state_dir={state}"]
    mounted = mount_factory(origin, options)
    (mounted.mnt / name).read_bytes()
    os.setxattr(mounted.mnt / name, "user.cachefs.pin", b"ssd")
    mount_factory.unmount(mounted)
    assert {"pins.json", "metadata.sqlite", "stats.json"} <= {p.name for p in state.iterdir()}
    assert state.stat().st_mode & 0o777 == 0o700
    for held in ("pins.json", "metadata.sqlite", "stats.json"):
        assert (state / held).stat().st_mode & 0o777 == 0o600, held
        assert not (tmp_path / "cache" / "ssd" / held).exists(), held  # not in the tier
    again = mount_factory(origin, options)
    assert os.getxattr(again.mnt / name, "user.cachefs.pin") == b"ssd"


@pytest.mark.parametrize("case", ["inside the origin", "writable by others"])
def test_an_unusable_state_dir_is_refused(tmp_path: Path, origin: Path, case: str) -> None:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if case == "inside the origin":
        state, expected = origin / "state", "state directory"
    else:
        state, expected = tmp_path / "shared", "bad ownership or modes"
        state.mkdir()
        state.chmod(0o777)
    result = run_cachefs(
        "mount", str(origin), str(mnt), "-o", f"{tier_options(tmp_path)},state_dir={state}"
    )
    assert result.returncode == 1, result.stderr
    assert expected in result.stderr and "state_dir" in result.stderr
    assert "nothing mounted" in result.stderr
    assert not os.path.ismount(mnt)
    assert not (state / "pins.json").exists()
