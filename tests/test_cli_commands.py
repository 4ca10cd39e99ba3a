"""The operator's commands on real mounts: their --json numbers against a known
workload and the stats xattr; warm, pin, unpin, evict and where against residency;
the help, --version and unknown-command paths."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

import cachefs
from cachefs.app.commands import warm as warm_module
from cachefs.app.commands.mounts import Resolver

from .conftest import (
    DEFAULT_TEST_OPTIONS,
    Mounted,
    MountFactory,
    cachefs_command,
    read_direct,
    run_cachefs,
    wait_until_on_disk,
)

KiB, MiB = 1024, 1024 * 1024
COMMANDS = (
    "check", "config", "evict", "forget", "mount", "pin", "simulate", "stats", "status", "top",
    "unpin", "warm", "where",
)  # fmt: skip


def library(origin: Path) -> dict[str, int]:
    """Files of two content types below a directory and at the top; their sizes."""
    rng = random.Random(14)
    files = {
        "Movies/film.mkv": 1 * MiB + 512 * KiB,
        "Movies/trailer.mkv": 600 * KiB + 3,
        "notes.bin": 300 * KiB,
    }
    for rel, length in files.items():
        (origin / rel).parent.mkdir(parents=True, exist_ok=True)
        (origin / rel).write_bytes(rng.randbytes(length))
    return files


def cli_json(*args: str) -> Any:
    result = run_cachefs(*args, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def read_all(m: Mounted, files: dict[str, int]) -> None:
    for rel in files:
        read_direct(m.mnt / rel)


def second_mount_options(tmp_path: Path) -> list[str]:
    cache = tmp_path / "cache2"
    return [*DEFAULT_TEST_OPTIONS, f"tiers.ssd.path={cache}/ssd", f"tiers.hdd.path={cache}/hdd"]


# -- the command line itself ---------------------------------------------------------------


def test_help_lists_every_command() -> None:
    result = run_cachefs("--help")
    assert result.returncode == 0, result.stderr
    listed = re.findall(r"^  (\w+)  ", result.stdout, re.MULTILINE)
    assert set(COMMANDS) <= set(listed)


def test_version_is_the_package_version() -> None:
    try:
        expected = metadata.version("cachefs")
    except metadata.PackageNotFoundError:
        expected = cachefs.__version__
    for flag in ("--version", "-V"):
        result = run_cachefs(flag)
        assert result.returncode == 0, result.stderr
        assert result.stdout == f"cachefs {expected}\n"


def test_bash_completion_is_clicks_own() -> None:
    env = os.environ | {"_CACHEFS_COMPLETE": "bash_source"}
    script = subprocess.run(cachefs_command(), env=env, capture_output=True, text=True, timeout=60)
    assert "complete -o nosort -F _cachefs_completion cachefs" in script.stdout
    env = os.environ | {"_CACHEFS_COMPLETE": "bash_complete", "COMP_WORDS": "cachefs st"}
    env["COMP_CWORD"] = "1"
    words = subprocess.run(cachefs_command(), env=env, capture_output=True, text=True, timeout=60)
    assert words.stdout.split() == ["plain,stats", "plain,status"]


def test_an_unknown_command_is_an_error_with_a_suggestion(tmp_path: Path) -> None:
    result = run_cachefs("stats2", str(tmp_path))
    assert result.returncode == 2
    assert "No such command 'stats2'. Did you mean 'stats'?" in result.stderr
    result = run_cachefs("config", "shwo")
    assert result.returncode == 2
    assert "Did you mean 'show'?" in result.stderr


def test_a_bare_word_is_never_taken_for_an_origin(tmp_path: Path) -> None:
    """`cachefs media MNT` used to mount ./media; a command word is never an origin."""
    (tmp_path / "media").mkdir()
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    result = run_cachefs("media", str(mnt))
    assert result.returncode == 2
    assert "No such command 'media'" in result.stderr
    assert "cachefs mount ORIGIN MOUNTPOINT" in result.stderr
    assert not os.path.ismount(mnt)


def test_stats_of_a_path_off_any_cachefs_mount_says_so(tmp_path: Path) -> None:
    result = run_cachefs("stats", str(tmp_path))
    assert result.returncode == 1
    assert f"{tmp_path} is not on a cachefs mount" in result.stderr


# -- status and stats after a known workload ----------------------------------------------


def test_status_lists_every_mount_with_the_workload_numbers(
    tmp_path: Path, origin: Path, mount_factory: MountFactory
) -> None:
    files = library(origin)
    total = sum(files.values())
    first = mount_factory(origin)
    other_origin = tmp_path / "origin2"
    other_origin.mkdir()
    second = mount_factory(other_origin, second_mount_options(tmp_path))
    read_all(first, files)  # cold: every byte from the origin
    read_all(first, files)  # warm: every byte from RAM
    for rel in files:
        wait_until_on_disk(first, rel)  # the disk tiers' fill stops moving
    before = first.stats()
    entries = {e["mountpoint"]: e for e in cli_json("status", str(tmp_path))}
    after = first.stats()
    for key in ("fuse_read_bytes_served", "origin_bytes_read", "tier_bytes", "tiers"):
        assert after[key] == before[key]  # nothing moved while status looked

    assert set(entries) == {str(first.mnt), str(second.mnt)}
    entry = entries[str(first.mnt)]
    assert entry["answering"] and entry["origin"] == str(origin)
    assert entry["origin_state"] == "online"
    assert entry["bytes_served"] == 2 * total == before["fuse_read_bytes_served"]
    assert entry["origin_bytes_read"] == total == before["origin_bytes_read"]
    assert entry["origin_bytes_saved"] == total
    assert entry["cache_bytes_served"] == sum(before["tier_bytes"].values()) >= total
    assert entry["hit_ratio"] == pytest.approx(entry["cache_bytes_served"] / (2 * total))
    for tier in ("ram", "ssd", "hdd"):
        fill = entry["tiers"][tier]
        assert fill["used"] == before["tiers"][tier]["bytes"]
        assert fill["max"] == before["tiers"][tier]["max_size"]
    assert entry["tiers"]["ram"]["used"] == total  # all of it, in 64 MiB of RAM
    assert entry["started_at"] == before["started_at"] and entry["uptime_seconds"] >= 0
    assert entries[str(second.mnt)]["bytes_served"] == 0


def test_status_shows_a_stopped_daemon_as_not_answering(
    tmp_path: Path, origin: Path, mount_factory: MountFactory
) -> None:
    m = mount_factory(origin)
    m.proc.send_signal(signal.SIGSTOP)
    try:
        entries = cli_json("status", "--timeout", "0.5", str(tmp_path))
    finally:
        m.proc.send_signal(signal.SIGCONT)
    assert [(e["mountpoint"], e["answering"]) for e in entries] == [(str(m.mnt), False)]
    assert "not answering" in entries[0]["error"]


def test_stats_tables_match_the_stats_xattr(origin: Path, mount_factory: MountFactory) -> None:
    files = library(origin)
    m = mount_factory(origin)
    read_all(m, files)
    read_all(m, files)
    stats = m.stats()
    report = cli_json("stats", str(m.mnt / "Movies"))  # any path on the mount will do
    assert report["mountpoint"] == str(m.mnt)
    rows = {f"{r['tier']}:{r['content_type']}": r for r in report["lookups"]}
    assert set(rows) == {*stats["tier_hits"], *stats["tier_misses"]}
    for key, row in rows.items():
        assert row["hits"] == stats["tier_hits"].get(key, 0)
        assert row["misses"] == stats["tier_misses"].get(key, 0)
        assert row["bytes_served"] == stats["tier_bytes"].get(key, 0)
    types = {os.getxattr(m.mnt / rel, "user.cachefs.content_type").decode() for rel in files}
    assert {r["content_type"] for r in report["lookups"]} == types
    # the second pass came from RAM: every one of its bytes is a RAM hit
    assert sum(r["bytes_served"] for r in report["lookups"] if r["tier"] == "ram") >= sum(
        files.values()
    )
    assert report["origin"]["origin_bytes_read"] == sum(files.values())
    assert report["origin"]["state"] == "online"
    for key in ("promotions", "demotions", "corrupt_chunks", "background_failures"):
        assert report[key] == stats[key]
    assert report["evictions"] == {t: stats["tiers"][t]["evictions"] for t in ("ram", "ssd", "hdd")}
    assert report["corrupt_chunks"] == report["background_failures"] == 0

    watched = run_cachefs("stats", str(m.mnt), "--json", "--watch", "0.1", "--count", "2")
    assert watched.returncode == 0, watched.stderr
    lines = [json.loads(line) for line in watched.stdout.splitlines()]
    assert len(lines) == 2 and all(line["lookups"] == report["lookups"] for line in lines)


# -- warm ---------------------------------------------------------------------------------


@pytest.mark.parametrize("tier", ["ram", "ssd", "hdd"])
def test_warm_fills_the_asked_tier_and_leaves_no_pin(
    origin: Path, mount_factory: MountFactory, tier: str
) -> None:
    files = library(origin)
    m = mount_factory(origin)
    result = run_cachefs("warm", "--tier", tier, "--json", str(m.mnt / "Movies"), str(m.mnt))
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    total = sum(files.values())
    assert (summary["files"], summary["files_done"]) == (len(files), len(files))
    assert (summary["bytes"], summary["bytes_done"], summary["percent"]) == (total, total, 100.0)
    assert summary["in_tier"]["in_tier"] == summary["in_tier"]["chunks"] > 0
    assert not summary["cancelled"] and not summary["errors"]
    # the progress bar, printed once at the end when stderr is not a terminal
    final = [line for line in result.stderr.splitlines() if line.startswith(f"warm -> {tier}")]
    assert final and "100%" in final[-1] and f"{len(files)}/{len(files)} files" in final[-1]
    for rel in files:
        residency = m.residency(rel)
        assert residency[tier] == residency["chunks"], (rel, residency)
        assert os.getxattr(m.mnt / rel, "user.cachefs.pin") == b"none"


def test_warm_keeps_an_existing_pin(origin: Path, mount_factory: MountFactory) -> None:
    files = library(origin)
    m = mount_factory(origin)
    assert run_cachefs("pin", "--tier", "hdd", str(m.mnt / "Movies")).returncode == 0
    summary = cli_json("warm", "--tier", "ssd", str(m.mnt / "Movies"))
    assert summary["kept_pins"] == {str(m.mnt / "Movies"): "hdd"}
    movies = [rel for rel in files if rel.startswith("Movies/")]
    assert sorted(summary["pinned_elsewhere"]) == sorted(str(m.mnt / rel) for rel in movies)
    for rel in movies:
        wait_until_on_disk(m, rel)
        residency = m.residency(rel)
        assert residency["hdd"] == residency["chunks"] and residency["ssd"] == 0
    assert os.getxattr(m.mnt / "Movies", "user.cachefs.pin") == b"hdd"


def test_warm_cancelled_removes_its_pins(
    origin: Path, mount_factory: MountFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C while the files are read: the temporary pin goes, the exit code is 130."""
    library(origin)
    m = mount_factory(origin)

    def interrupted(*args: object, **kwargs: object) -> None:
        assert os.getxattr(m.mnt / "Movies", "user.cachefs.pin") == b"ssd"  # pinned for now
        raise KeyboardInterrupt

    monkeypatch.setattr(warm_module, "wait", interrupted)
    target = Resolver().target(str(m.mnt / "Movies"))
    warm = warm_module.Warm([target], "ssd", jobs=1)
    assert warm.run() == warm_module.EXIT_CANCELLED
    assert warm.summary()["cancelled"]
    assert os.getxattr(m.mnt / "Movies", "user.cachefs.pin") == b"none"


# -- pin, unpin, evict, where -------------------------------------------------------------


def test_pin_unpin_evict_and_where_change_and_report_residency(
    origin: Path, mount_factory: MountFactory
) -> None:
    files = library(origin)
    m = mount_factory(origin)
    read_all(m, files)
    for rel in files:
        wait_until_on_disk(m, rel)
    where = cli_json("where", str(m.mnt / "notes.bin"))
    [row] = where["files"]
    assert {k: row[k] for k in m.residency("notes.bin")} == m.residency("notes.bin")

    movies = str(m.mnt / "Movies")
    assert cli_json("pin", "--tier", "hdd", movies) == [{"path": movies, "pin": "hdd"}]
    for rel in ("Movies/film.mkv", "Movies/trailer.mkv"):
        residency = m.residency(rel)
        assert residency["hdd"] == residency["chunks"] and residency["ssd"] == 0
    film = str(m.mnt / "Movies/film.mkv")
    assert cli_json("unpin", film) == [{"path": film, "pin": "hdd", "inherited": True}]
    assert cli_json("unpin", movies) == [{"path": movies, "pin": "none", "inherited": False}]

    assert cli_json("evict", movies) == [{"path": movies, "kind": "directory"}]
    summary = cli_json("where", str(m.mnt))
    by_path = {d["path"]: d for d in summary["directories"]}
    assert by_path[movies]["files"] == 2
    assert by_path[movies]["uncached"] == by_path[movies]["chunks"] > 0
    assert by_path[str(m.mnt)]["files"] == len(files)
    assert by_path[str(m.mnt)]["chunks"] == sum(f["chunks"] for f in summary["files"])
    for file in summary["files"]:
        rel = os.path.relpath(file["path"], m.mnt)
        assert {k: file[k] for k in ("ram", "ssd", "hdd", "uncached")} == {
            k: m.residency(rel)[k] for k in ("ram", "ssd", "hdd", "uncached")
        }
    notes = m.residency("notes.bin")
    assert notes["uncached"] == 0  # evicting Movies left it alone


# -- top --------------------------------------------------------------------------------


def test_top_shows_the_file_being_read_first(origin: Path, mount_factory: MountFactory) -> None:
    files = library(origin)
    m = mount_factory(origin)
    for _ in range(3):
        read_direct(m.mnt / "Movies/film.mkv")  # the hottest by far
    read_direct(m.mnt / "notes.bin")
    result = run_cachefs("top", str(m.mnt), "--json", "--count", "2", "--interval", "0.2")
    assert result.returncode == 0, result.stderr
    first, second = (json.loads(line) for line in result.stdout.splitlines())
    hot = [entry["path"] for entry in second["hot_files"]]
    assert hot[:2] == ["Movies/film.mkv", "notes.bin"]
    assert second["hot_files"][0]["reads"] >= 3
    assert second["origin_state"] == "online" and second["mountpoint"] == str(m.mnt)
    assert set(second["tiers"]) == {"ram", "ssd", "hdd"}
    assert first["read_bytes_per_second"] is None and second["read_bytes_per_second"] == 0
    assert files  # the library the workload read


def test_top_draws_its_tables(origin: Path, mount_factory: MountFactory) -> None:
    library(origin)
    m = mount_factory(origin)
    read_direct(m.mnt / "notes.bin")
    result = run_cachefs("top", str(m.mnt), "--count", "1")
    assert result.returncode == 0, result.stderr
    assert "hottest files" in result.stdout and "notes.bin" in result.stdout
    assert "origin online" in result.stdout


# -- forget -----------------------------------------------------------------------------


def test_forget_makes_a_long_revalidate_after_see_an_unwatched_change(
    origin: Path, mount_factory: MountFactory
) -> None:
    """No watch, an hour of trust: a change at the origin is invisible until forget."""
    (origin / "Show").mkdir()
    (origin / "Show" / "e1.mkv").write_bytes(b"one")
    m = mount_factory(
        origin,
        [*DEFAULT_TEST_OPTIONS, "metadata.revalidate_after=1h", "metadata.watch=off",
         "mount.attr_timeout=0", "mount.entry_timeout=0"],
    )  # fmt: skip
    assert sorted(os.listdir(m.mnt / "Show")) == ["e1.mkv"]
    (origin / "Show" / "e2.mkv").write_bytes(b"two")
    (origin / "Show" / "e1.mkv").write_bytes(b"one, longer now")
    assert sorted(os.listdir(m.mnt / "Show")) == ["e1.mkv"]  # trusted for an hour
    assert cli_json("forget", str(m.mnt / "Show")) == [{"path": str(m.mnt / "Show")}]
    assert sorted(os.listdir(m.mnt / "Show")) == ["e1.mkv", "e2.mkv"]
    assert (m.mnt / "Show" / "e1.mkv").stat().st_size == len(b"one, longer now")
    assert read_direct(m.mnt / "Show" / "e1.mkv") == b"one, longer now"
