"""``cachefs config show MOUNT``: the effective configuration of a running mount, as the
daemon publishes it in ``user.cachefs.config``, -o overrides included."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from cachefs.config import load_config

from .conftest import DEFAULT_TEST_OPTIONS, MountFactory, run_cachefs

OVERRIDES = ["tiers.ram.max_size=48MiB", "metadata.poll_budget=7", "mount.read_ahead=2MiB"]


def test_config_show_prints_the_running_mounts_overrides(
    tmp_path: Path, origin: Path, mount_factory: MountFactory
) -> None:
    (origin / "Movies").mkdir()
    (origin / "Movies" / "film.mkv").write_bytes(b"x" * 5000)
    options = [*DEFAULT_TEST_OPTIONS, *OVERRIDES]
    m = mount_factory(origin, options)

    result = run_cachefs("config", "show", str(m.mnt / "Movies"))  # any path on the mount
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert text.startswith(f"# of the running cachefs mount at {m.mnt}\n")
    assert '[tiers.ram]\nmax_size = "48MiB"\n' in text
    assert "poll_budget = 7\n" in text
    assert 'read_ahead = "2MiB"\n' in text
    assert 'backend = "embedded"\n' in text
    assert f'path = "{m.tier_dir("ssd")}"\n' in text

    # what it printed is the Config the daemon runs with, and a config file as it is
    saved = tmp_path / "running.toml"
    saved.write_text(text)
    overrides = dict(o.split("=", 1) for o in m.options)
    assert load_config(saved) == load_config(None, overrides)


def test_the_config_xattr_is_the_mount_roots_alone(
    origin: Path, mount_factory: MountFactory
) -> None:
    (origin / "a.txt").write_text("a")
    m = mount_factory(origin)
    assert os.getxattr(m.mnt, "user.cachefs.config").startswith(b"# cachefs effective")
    with pytest.raises(OSError) as caught:
        os.getxattr(m.mnt / "a.txt", "user.cachefs.config")
    assert caught.value.errno == errno.ENODATA
    assert "user.cachefs.config" not in os.listxattr(m.mnt)  # not copied by cp -a


def test_a_mount_with_overrides_on_the_command_line_is_a_usage_error(
    origin: Path, mount_factory: MountFactory
) -> None:
    m = mount_factory(origin)
    result = run_cachefs("config", "show", str(m.mnt), "-o", "tiers.ram.max_size=1GiB")
    assert result.returncode == 2
    assert "no --config, -o" in result.stderr


def test_a_path_on_no_cachefs_mount_is_named(tmp_path: Path) -> None:
    result = run_cachefs("config", "show", str(tmp_path))
    assert result.returncode == 1
    assert f"{tmp_path} is not on a cachefs mount" in result.stderr
