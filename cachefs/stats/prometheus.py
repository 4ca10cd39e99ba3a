"""The stats xattr's report as Prometheus metrics, for the endpoint of ``metrics.listen``.

:class:`ReportCollector` converts the report last published into a
:class:`~cachefs.stats.snapshot.LatestReport` (a copy the trio side makes
every second): the HTTP server's threads never see the live counters, tiers
or caches. Every ``*_total`` counts since the mount started (Prometheus takes
the restart of a mount as a counter reset).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.utils import floatToGoString

from cachefs.stats.snapshot import LatestReport

# (metric, report key, help): one unlabelled counter each.
COUNTERS = (
    ("cachefs_origin_read_bytes", "origin_bytes_read", "Bytes read from the origin."),
    ("cachefs_origin_reads", "origin_reads", "Chunk reads from the origin."),
    ("cachefs_origin_outages", "origin_outages", "Times the origin went offline."),
    ("cachefs_fuse_reads", "fuse_reads", "Read requests from the kernel."),
    ("cachefs_fuse_read_bytes", "fuse_read_bytes_served", "Bytes the kernel's reads got."),
    ("cachefs_background_failures", "background_failures", "Background task failures."),
    ("cachefs_prefetch_bytes", "prefetch_bytes", "Bytes the prefetcher fetched ahead."),
    ("cachefs_prefetch_used_bytes", "prefetch_used_bytes", "Prefetched bytes later read."),
    (
        "cachefs_prefetch_kernel_bytes",
        "prefetch_kernel_bytes",
        "Prefetched bytes stored in the kernel's page cache.",
    ),
    ("cachefs_promotions", "promotions", "Chunks promoted from the HDD to the SSD tier."),
    ("cachefs_demotions", "demotions", "Chunks demoted from the SSD to the HDD tier."),
    ("cachefs_corrupt_chunks", "corrupt_chunks", "Tier chunks found corrupt and dropped."),
    ("cachefs_store_skipped", "store_skipped", "Chunks not stored in a disk tier (busy)."),
    ("cachefs_compressed_bytes_saved", "compressed_bytes_saved", "Bytes compression saved."),
    ("cachefs_metadata_hits", "metadata_hits", "Attribute lookups the metadata cache answered."),
    ("cachefs_metadata_listings", "metadata_listings", "Directories listed at the origin."),
    (
        "cachefs_walk_ahead_listings",
        "walk_ahead_listings",
        "Directories listed ahead of a client walking a tree.",
    ),
    (
        "cachefs_walk_ahead_used",
        "walk_ahead_used",
        "Walk-ahead listings a client then asked for.",
    ),
    (
        "cachefs_walk_ahead_files",
        "walk_ahead_files",
        "Files of one chunk fetched ahead of a client walking a tree.",
    ),
    ("cachefs_access_log_records", "access_log_records", "Accesses written to stats.access_log."),
    (
        "cachefs_access_log_dropped_records",
        "access_log_dropped",
        "Access log records dropped: the writer fell behind or could not write.",
    ),
    (
        "cachefs_access_log_rotations",
        "access_log_rotations",
        "Times the access log reached access_log_max_size and became PATH.1.",
    ),
)
# (metric, report key, help): one unlabelled gauge each.
GAUGES = (
    ("cachefs_open_files", "open_files", "Files open through the mount."),
    ("cachefs_metadata_entries", "metadata_entries", "Attributes in the metadata cache."),
    ("cachefs_start_time_seconds", "started_at", "When the mount started (Unix time)."),
)
# (metric, report key, help): counters labelled tier and content type ("ram:media").
PER_TIER_AND_TYPE = (
    ("cachefs_hits", "tier_hits", "Chunk lookups a tier answered."),
    ("cachefs_misses", "tier_misses", "Chunk lookups a tier could not answer."),
    ("cachefs_served_bytes", "tier_bytes", "Bytes a tier served to reads."),
)


class ReportCollector:
    """A prometheus_client collector converting the last published report."""

    def __init__(self, latest: LatestReport) -> None:
        self.latest = latest

    def collect(self) -> Iterator[Metric]:
        report = self.latest.get()
        if report is None:
            return  # not published yet: the first comes as the mount is served
        yield from convert(report)


def convert(report: Mapping[str, Any]) -> Iterator[Metric]:
    """Every cachefs metric of one report."""
    yield InfoMetricFamily(
        "cachefs",
        "What the mount serves and how.",
        value={
            "origin": str(report.get("origin", "")),
            "stats_backend": str(report.get("stats_backend", "")),
            "change_detection": str(report.get("change_detection", "")),
        },
    )
    for name, key, doc in COUNTERS:
        yield CounterMetricFamily(name, doc, value=_number(report.get(key)))
    for name, key, doc in GAUGES:
        yield GaugeMetricFamily(name, doc, value=_number(report.get(key)))
    yield GaugeMetricFamily(
        "cachefs_origin_up",
        "1 while the origin answers, 0 while the mount serves from the cache alone.",
        value=1 if report.get("origin_state") == "online" else 0,
    )
    for name, key, doc in PER_TIER_AND_TYPE:
        family = CounterMetricFamily(name, doc, labels=["tier", "content_type"])
        for combined, value in sorted(report.get(key, {}).items()):
            tier, _, content_type = combined.partition(":")
            family.add_metric([tier, content_type], _number(value))
        yield family
    yield from _tiers(report.get("tiers", {}))
    histogram = report.get("read_seconds")
    if histogram:
        yield _histogram(
            "cachefs_read_seconds", "Time cachefs took to answer a read request.", histogram
        )


def _tiers(tiers: Mapping[str, Mapping[str, Any]]) -> Iterator[Metric]:
    used = GaugeMetricFamily("cachefs_tier_used_bytes", "Bytes a tier holds.", labels=["tier"])
    most = GaugeMetricFamily("cachefs_tier_max_bytes", "A tier's max_size.", labels=["tier"])
    chunks = GaugeMetricFamily("cachefs_tier_chunks", "Chunks a tier holds.", labels=["tier"])
    evictions = CounterMetricFamily(
        "cachefs_tier_evictions", "Chunks a tier evicted.", labels=["tier"]
    )
    caching = GaugeMetricFamily(
        "cachefs_tier_caching",
        "0 while a disk tier stores nothing (its min_free reserve is reached).",
        labels=["tier"],
    )
    for name, tier in tiers.items():
        used.add_metric([name], _number(tier.get("bytes")))
        most.add_metric([name], _number(tier.get("max_size")))
        chunks.add_metric([name], _number(tier.get("chunks")))
        evictions.add_metric([name], _number(tier.get("evictions")))
        if "caching" in tier:  # disk tiers only
            caching.add_metric([name], 1 if tier["caching"] else 0)
    yield from (used, most, chunks, evictions, caching)


def _histogram(name: str, doc: str, snapshot: Mapping[str, Any]) -> Metric:
    """From cachefs.stats.histogram's snapshot: cumulative buckets, "+Inf" last."""
    buckets = [(floatToGoString(bound), float(count)) for bound, count in snapshot["buckets"]]
    return HistogramMetricFamily(name, doc, buckets=buckets, sum_value=float(snapshot["sum"]))


def _number(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0
