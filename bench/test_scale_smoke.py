"""Smoke test of bench/scale.py: every part on tiny sizes, in a throw-away data directory.

Needs root and /dev/fuse (skipped otherwise); no drop_caches (the figures are
not the point, and dropping the machine's caches would slow everyone else)::

    sudo .venv/bin/pytest bench/test_scale_smoke.py -v
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not os.path.exists("/dev/fuse"),
    reason="needs root and /dev/fuse",
)


def run_scale(data: Path, out: Path) -> dict[str, object]:
    run = subprocess.run(
        [
            sys.executable, str(HERE / "scale.py"), "--entries", "200,600", "--chunks", "300",
            "--reps", "1", "--data", str(data), "--out", str(out), "--no-drop-caches",
        ],
        env={**os.environ, "PYTHONPATH": str(HERE.parent)},
        capture_output=True,
        text=True,
        timeout=240,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    return json.loads(Path(run.stdout.strip().splitlines()[-1]).read_text())  # type: ignore[no-any-return]


def test_scale_tiny(tmp_path: Path) -> None:
    data = tmp_path / "data"
    result = run_scale(data, tmp_path / "out")
    libraries = result["libraries"]
    for n in (200, 600):
        info = libraries[str(n)]
        assert info["files"] + info["dirs"] == n
        assert info["media_files"] >= 2
        walked = sum(len(dirs) + len(files) for _, dirs, files in os.walk(data / f"origin-{n}"))
        assert walked == n
    assert result["tier"]["chunks"] == 300
    assert len(list((data / "tier-300" / "ssd" / "chunks").rglob("*"))) >= 300
    start = result["start"]
    assert 0 < start["clean_answers_s"] <= start["clean_index_ready_s"]
    for scan in result["scan"]:
        assert scan["complete"] is True
        assert scan["first"]["entries"] == scan["entries"]
        assert scan["metadata_entries"] >= scan["entries"]
        assert scan["rss"]["VmRSS"] > 0
    assert [e["entries"] for e in result["eviction"]] == [300]
    check = result["check"]
    assert check["exit_code"] == 0 and check["peak_rss"] > 0
    # nothing left mounted, and the run's temporary directories are gone
    with open("/proc/self/mountinfo") as info:
        assert str(tmp_path) not in info.read()
    assert not list(data.glob("run-*"))

    again = run_scale(data, tmp_path / "out")  # the data sets are reused, not rebuilt
    assert again["libraries"] == libraries
    assert again["tier"] == result["tier"]
