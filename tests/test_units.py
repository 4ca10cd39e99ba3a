"""The example systemd units in mount/ pass ``systemd-analyze verify``.

Verified against a scratch root holding the system's own unit files (so
``After=network-online.target`` and the like resolve) and a stand-in for
/usr/local/bin/cachefs (verify checks that ExecStart= is executable; `make
install-helper` puts the real one there). No running systemd is needed.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

MOUNT_DIR = Path(__file__).parent.parent / "mount"
UNITS = ("srv-media.service", "srv-media.mount", "srv-media.automount")
SYSTEM_UNITS = Path("/usr/lib/systemd/system")

pytestmark = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None or not SYSTEM_UNITS.is_dir(),
    reason="systemd-analyze and the system's unit files are needed",
)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    shutil.copytree(SYSTEM_UNITS, root / "usr/lib/systemd/system", symlinks=True)
    (root / "etc/systemd/system").mkdir(parents=True)
    for unit in UNITS:
        shutil.copy(MOUNT_DIR / unit, root / "etc/systemd/system" / unit)
    stand_in = root / "usr/local/bin/cachefs"
    stand_in.parent.mkdir(parents=True)
    stand_in.write_text("#!/bin/sh\n")
    stand_in.chmod(0o755)
    return root


def verify(root: Path, *units: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["systemd-analyze", "verify", "--man=no", f"--root={root}", *units],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_example_units_verify_without_a_warning(root: Path) -> None:
    result = verify(root, *UNITS)
    assert result.returncode == 0, result.stderr
    assert result.stderr == "" and result.stdout == ""


def test_the_service_is_type_notify_and_stays_in_the_foreground() -> None:
    text = (MOUNT_DIR / "srv-media.service").read_text()
    assert "\nType=notify\n" in text
    (exec_start,) = [line for line in text.splitlines() if line.startswith("ExecStart=")]
    assert " mount -f " in exec_start  # the notifying process is the one systemd started


def test_verify_does_catch_a_mistake(root: Path) -> None:
    """The check is real: a unit verify must reject is rejected."""
    unit = root / "etc/systemd/system/srv-media.service"
    unit.write_text(unit.read_text().replace("Type=notify", "Type=notfy"))
    result = verify(root, "srv-media.service")
    assert "Failed to parse service type" in result.stderr
