"""Prometheus metrics: the metrics.listen key, the read latency histogram, and the
endpoint of a real mount scraped over HTTP against its stats xattr."""

from __future__ import annotations

import json
import random
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from cachefs.config import ConfigError, config_to_toml, default_config, load_config, parse_listen
from cachefs.stats.histogram import Histogram
from cachefs.stats.prometheus import ReportCollector
from cachefs.stats.snapshot import LatestReport

from .conftest import (
    DEFAULT_TEST_OPTIONS,
    MountFactory,
    free_port,
    is_mounted,
    read_direct,
    run_cachefs,
    wait_until_on_disk,
)

KiB, MiB = 1024, 1024 * 1024


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", None),
        ("127.0.0.1:9567", ("127.0.0.1", 9567)),
        ("[::1]:9100", ("::1", 9100)),
        (":9567", ("", 9567)),
        ("localhost:1", ("localhost", 1)),
    ],
)
def test_listen_addresses(text: str, expected: tuple[str, int] | None) -> None:
    assert parse_listen(text) == expected


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("9567", "expected HOST:PORT"),
        ("127.0.0.1:0", "expected 1-65535"),
        ("127.0.0.1:65536", "expected 1-65535"),
        ("::1:9567", "IPv6 address in brackets"),
        ("host:http", "invalid port 'http'"),
    ],
)
def test_a_bad_listen_address_names_the_key(text: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(None, {"metrics.listen": text})
    assert caught.value.key == "metrics.listen"
    assert problem in str(caught.value)


def test_metrics_are_off_by_default_and_round_trip(tmp_path: Path) -> None:
    assert default_config().metrics.listen == ""
    cfg = load_config(None, {"metrics.listen": "[::1]:9567"})
    text = config_to_toml(cfg)
    assert '[metrics]\nlisten = "[::1]:9567"\n' in text
    path = tmp_path / "c.toml"
    path.write_text(text)
    assert load_config(path) == cfg


# --------------------------------------------------------------------------- histogram


def test_histogram_buckets_are_cumulative_and_a_bound_counts_in_its_bucket() -> None:
    histogram = Histogram((0.001, 0.01, 0.1))
    for seconds in (0.0005, 0.001, 0.002, 0.05, 3.0):
        histogram.observe(seconds)
    snap = histogram.snapshot()
    assert snap["buckets"] == [[0.001, 2], [0.01, 3], [0.1, 4], ["+Inf", 5]]
    assert snap["count"] == 5
    assert snap["sum"] == pytest.approx(3.0535)
    json.dumps(snap)  # it travels in the stats xattr


def test_histogram_counts_every_observation_from_many_threads() -> None:
    histogram = Histogram()

    def observe() -> None:
        for i in range(2000):
            histogram.observe(i * 1e-5)

    threads = [threading.Thread(target=observe) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert histogram.snapshot()["count"] == 8000
    assert histogram.snapshot()["buckets"][-1] == ["+Inf", 8000]


# --------------------------------------------------------------------------- conversion


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a Prometheus text exposition, by name and labels."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def exposition(report: dict[str, Any] | None) -> str:
    latest = LatestReport()
    if report is not None:
        latest.publish(report)
    registry = CollectorRegistry()
    registry.register(ReportCollector(latest))
    return generate_latest(registry).decode()


def labels(**kv: str) -> frozenset[tuple[str, str]]:
    return frozenset(kv.items())


def test_a_report_converts_to_conventional_names_and_labels() -> None:
    histogram = Histogram((0.001, 1.0))
    histogram.observe(0.0002)
    histogram.observe(0.5)
    report = {
        "origin": "/srv/nas",
        "origin_state": "offline",
        "origin_bytes_read": 4096,
        "origin_reads": 1,
        "background_failures": 2,
        "prefetch_bytes": 10,
        "prefetch_used_bytes": 7,
        "prefetch_kernel_bytes": 5,
        "access_log_records": 1200,
        "access_log_dropped": 3,
        "access_log_rotations": 2,
        "metadata_listings": 9,
        "walk_ahead_listings": 5,
        "walk_ahead_used": 4,
        "walk_ahead_files": 6,
        "tier_hits": {"ram:media": 3, "ssd:thumbnail": 1},
        "tier_misses": {"hdd:media": 5},
        "tier_bytes": {"ram:media": 3 << 20},
        "tiers": {
            "ram": {"bytes": 100, "max_size": 1000, "chunks": 1, "evictions": 4},
            "ssd": {"bytes": 8192, "max_size": 5000, "chunks": 2, "caching": False},
        },
        "read_seconds": histogram.snapshot(),
    }
    got = samples(exposition(report))
    assert got[("cachefs_hits_total", labels(tier="ram", content_type="media"))] == 3
    assert got[("cachefs_hits_total", labels(tier="ssd", content_type="thumbnail"))] == 1
    assert got[("cachefs_misses_total", labels(tier="hdd", content_type="media"))] == 5
    assert got[("cachefs_served_bytes_total", labels(tier="ram", content_type="media"))] == 3 << 20
    assert got[("cachefs_origin_read_bytes_total", labels())] == 4096
    assert got[("cachefs_origin_reads_total", labels())] == 1
    assert got[("cachefs_origin_up", labels())] == 0
    assert got[("cachefs_background_failures_total", labels())] == 2
    assert got[("cachefs_prefetch_bytes_total", labels())] == 10
    assert got[("cachefs_prefetch_used_bytes_total", labels())] == 7
    assert got[("cachefs_prefetch_kernel_bytes_total", labels())] == 5
    assert got[("cachefs_access_log_records_total", labels())] == 1200
    assert got[("cachefs_access_log_dropped_records_total", labels())] == 3
    assert got[("cachefs_access_log_rotations_total", labels())] == 2
    assert got[("cachefs_metadata_listings_total", labels())] == 9
    assert got[("cachefs_walk_ahead_listings_total", labels())] == 5
    assert got[("cachefs_walk_ahead_used_total", labels())] == 4
    assert got[("cachefs_walk_ahead_files_total", labels())] == 6
    assert got[("cachefs_tier_used_bytes", labels(tier="ssd"))] == 8192
    assert got[("cachefs_tier_max_bytes", labels(tier="ram"))] == 1000
    assert got[("cachefs_tier_evictions_total", labels(tier="ram"))] == 4
    assert got[("cachefs_tier_caching", labels(tier="ssd"))] == 0
    assert ("cachefs_tier_caching", labels(tier="ram")) not in got  # disk tiers only
    assert got[("cachefs_read_seconds_bucket", labels(le="0.001"))] == 1
    assert got[("cachefs_read_seconds_bucket", labels(le="1.0"))] == 2
    assert got[("cachefs_read_seconds_bucket", labels(le="+Inf"))] == 2
    assert got[("cachefs_read_seconds_count", labels())] == 2
    assert got[("cachefs_read_seconds_sum", labels())] == pytest.approx(0.5002)
    info = labels(origin="/srv/nas", stats_backend="", change_detection="")
    assert got[("cachefs_info", info)] == 1


def test_nothing_is_served_before_the_first_report() -> None:
    assert samples(exposition(None)) == {}


def test_the_cli_does_not_import_prometheus_client() -> None:
    code = "import sys, cachefs.app.cli; assert 'prometheus_client' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# --------------------------------------------------------------------------- a real mount


def scrape(port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        assert answer.status == 200
        return samples(answer.read().decode())


def expected_from(stats: dict[str, Any]) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """The samples the endpoint must show for one stats xattr answer."""
    want: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for metric, key in (
        ("cachefs_hits_total", "tier_hits"),
        ("cachefs_misses_total", "tier_misses"),
        ("cachefs_served_bytes_total", "tier_bytes"),
    ):
        for combined, value in stats[key].items():
            tier, content_type = combined.split(":")
            want[(metric, labels(tier=tier, content_type=content_type))] = value
    for tier, fill in stats["tiers"].items():
        want[("cachefs_tier_used_bytes", labels(tier=tier))] = fill["bytes"]
        want[("cachefs_tier_max_bytes", labels(tier=tier))] = fill["max_size"]
    for metric, key in (
        ("cachefs_origin_read_bytes_total", "origin_bytes_read"),
        ("cachefs_origin_reads_total", "origin_reads"),
        ("cachefs_background_failures_total", "background_failures"),
        ("cachefs_prefetch_bytes_total", "prefetch_bytes"),
        ("cachefs_prefetch_used_bytes_total", "prefetch_used_bytes"),
        ("cachefs_prefetch_kernel_bytes_total", "prefetch_kernel_bytes"),
        ("cachefs_fuse_read_bytes_total", "fuse_read_bytes_served"),
        ("cachefs_read_seconds_count", "fuse_reads"),  # every read is timed
        ("cachefs_access_log_records_total", "access_log_records"),
        ("cachefs_access_log_dropped_records_total", "access_log_dropped"),
        ("cachefs_access_log_rotations_total", "access_log_rotations"),
        ("cachefs_metadata_listings_total", "metadata_listings"),
        ("cachefs_walk_ahead_listings_total", "walk_ahead_listings"),
        ("cachefs_walk_ahead_used_total", "walk_ahead_used"),
        ("cachefs_walk_ahead_files_total", "walk_ahead_files"),
    ):
        want[(metric, labels())] = stats[key]
    want[("cachefs_origin_up", labels())] = 1 if stats["origin_state"] == "online" else 0
    for bound, count in stats["read_seconds"]["buckets"]:
        le = "+Inf" if bound == "+Inf" else repr(float(bound))
        want[("cachefs_read_seconds_bucket", labels(le=le))] = count
    return want


def scrape_settled(m: Any, port: int) -> tuple[dict[str, Any], dict[Any, float]]:
    """The stats xattr and a scrape that shows exactly it (the endpoint serves the
    report of up to a second ago, and background writers count meanwhile: retry)."""
    deadline = time.monotonic() + 30
    while True:
        before = m.stats()
        scraped = scrape(port)
        after = m.stats()
        want = expected_from(after)
        shown = {k: scraped.get(k) for k in want}
        if expected_from(before) == want and shown == want:
            return after, scraped
        assert time.monotonic() < deadline, {
            k: (v, want[k]) for k, v in shown.items() if v != want[k]
        }
        time.sleep(0.2)


def test_metrics_scraped_over_http_equal_the_stats_xattr(
    origin: Path, mount_factory: MountFactory
) -> None:
    rng = random.Random(9567)
    files = {"Movies/film.mkv": 3 * MiB + 5, "Movies/film.nfo": 20 * KiB, "notes.bin": 700 * KiB}
    for rel, length in files.items():
        (origin / rel).parent.mkdir(parents=True, exist_ok=True)
        (origin / rel).write_bytes(rng.randbytes(length))
    port = free_port()
    m = mount_factory(
        origin,
        [
            *DEFAULT_TEST_OPTIONS,
            f"metrics.listen=127.0.0.1:{port}",
            "prediction.max_prefetch_size=0",
        ],
    )
    for _ in range(2):  # cold, then from the cache
        for rel in files:
            assert len(read_direct(m.mnt / rel)) == files[rel]
    for rel in files:
        wait_until_on_disk(m, rel)
    total = sum(files.values())
    _, scraped = scrape_settled(m, port)

    # and those are the workload's numbers
    assert scraped[("cachefs_fuse_read_bytes_total", labels())] == 2 * total
    assert scraped[("cachefs_origin_read_bytes_total", labels())] == total
    served = sum(v for (name, _), v in scraped.items() if name == "cachefs_served_bytes_total")
    assert served >= total  # the second pass came from the tiers
    assert scraped[("cachefs_hits_total", labels(tier="ram", content_type="media"))] > 0
    assert scraped[("cachefs_origin_up", labels())] == 1
    assert scraped[("cachefs_read_seconds_count", labels())] > 0
    assert ("process_resident_memory_bytes", labels()) in scraped


def test_access_log_metrics_scraped_equal_the_stats_xattr(
    tmp_path: Path, origin: Path, mount_factory: MountFactory
) -> None:
    """With stats.access_log set (and a 4 KiB max, so it rotates): records written
    and rotations are scraped as the xattr counts them, and are what the log holds."""
    rng = random.Random(13)
    names = [f"small{i}.bin" for i in range(40)]
    for i, name in enumerate(names):
        (origin / name).write_bytes(rng.randbytes(1000 + i))
    log_path = tmp_path / "access.csv"
    port = free_port()
    m = mount_factory(
        origin,
        [
            *DEFAULT_TEST_OPTIONS,
            f"metrics.listen=127.0.0.1:{port}",
            "prediction.max_prefetch_size=0",
            f"stats.access_log={log_path}",
            "stats.access_log_max_size=4KiB",
        ],
    )
    passes = 5  # 200 lines of ~60 bytes: three 4 KiB files at least, so two rotations
    for _ in range(passes):
        for name in names:
            read_direct(m.mnt / name)
    deadline = time.monotonic() + 30
    while m.stats()["access_log_records"] < passes * len(names):  # written about once a second
        assert time.monotonic() < deadline, m.stats()
        time.sleep(0.2)
    stats, scraped = scrape_settled(m, port)
    assert scraped[("cachefs_access_log_records_total", labels())] == passes * len(names)
    assert scraped[("cachefs_access_log_dropped_records_total", labels())] == 0
    rotations = scraped[("cachefs_access_log_rotations_total", labels())]
    assert rotations == stats["access_log_rotations"] >= 2
    kept = sum(len(p.read_text().splitlines()) - 1 for p in (log_path, tmp_path / "access.csv.1"))
    assert kept < passes * len(names)  # the file rotated out of PATH.1 is gone


def test_a_taken_port_refuses_the_mount_naming_metrics_listen(tmp_path: Path, origin: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        mnt = tmp_path / "mnt"
        mnt.mkdir()
        options = [
            *DEFAULT_TEST_OPTIONS,
            f"tiers.ssd.path={tmp_path / 'ssd'}",
            f"tiers.hdd.path={tmp_path / 'hdd'}",
            f"metrics.listen=127.0.0.1:{port}",
        ]
        result = run_cachefs("mount", "-f", str(origin), str(mnt), "-o", ",".join(options))
    assert result.returncode == 1
    assert f'metrics.listen = "127.0.0.1:{port}": cannot listen there' in result.stderr
    assert "Address already in use" in result.stderr
    assert "(nothing mounted)" in result.stderr
    assert not is_mounted(mnt)
