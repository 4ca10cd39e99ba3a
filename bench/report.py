"""Turn a `bench/run.py` results file into markdown tables and a ratio chart.

    .venv/bin/python bench/report.py [RESULTS.jsonl | DIR] [--doc FILE] [--chart FILE.png]

RESULTS defaults to the newest ``*.jsonl`` in ``bench-results/``. The tables go
between ``<!-- bench:start -->`` and ``<!-- bench:end -->`` in the doc (the
section is appended, markers included, if the doc has none yet); everything
outside the markers is left alone. A full run goes to docs/benchmarks.md and
docs/bench-ratios.png; a --quick run, by default, beside its results file, so
a quick look never overwrites the published figures.
"""

# The doc is typeset: the prime, the multiplication sign and the like are meant, not typos.
# ruff: noqa: RUF001

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "docs" / "benchmarks.md"
CHART = REPO / "docs" / "bench-ratios.png"
START, END = "<!-- bench:start -->", "<!-- bench:end -->"
HEADING = "## cachefs vs rclone vs the origin — `make bench`"
SYSTEMS = ("origin", "rclone", "cachefs")
MiB = 1024 * 1024


@dataclass(frozen=True)
class Metric:
    workload: str
    key: str
    label: str
    higher_is_better: bool
    chart: bool = True  # part of the ratio chart


@dataclass(frozen=True)
class Table:
    title: str
    short: str  # chart label prefix
    what: str
    metrics: tuple[Metric, ...]


TABLES = (
    Table(
        "(a) cold sequential read",
        "(a) cold seq",
        "one media file front to back in 1 MiB `read()`s; every cache empty, kernel caches dropped",
        (Metric("a_cold_seq", "mb_s", "MB/s", True),),
    ),
    Table(
        "(b) warm re-read",
        "(b) warm re-read",
        "the same file again, right after (a): kernel page cache allowed",
        (Metric("b_warm_reread", "mb_s", "MB/s", True),),
    ),
    Table(
        "(b′) re-read after drop_caches",
        "(b′) re-read after drop",
        "the same file after `drop_caches`: served by the system's own cache (origin: the disk)",
        (Metric("b2_reread_after_drop", "mb_s", "MB/s", True),),
    ),
    Table(
        "(b″) re-read after a remount and drop_caches",
        "(b″) re-read after remount",
        "the same file after unmount, mount (cache kept) and `drop_caches`: served by the "
        "system's disk cache (cachefs: its HDD tier, the RAM tier is empty; origin: the disk)",
        (Metric("b3_reread_after_remount", "mb_s", "MB/s", True),),
    ),
    Table(
        "(c) 4 concurrent cold streams",
        "(c) 4 streams",
        "one thread per media file, all started together, 1 MiB `read()`s; caches empty",
        (
            Metric("c_streams", "aggregate_mb_s", "aggregate MB/s", True),
            Metric("c_streams", "slowest_mb_s", "slowest stream MB/s", True),
            Metric("c_streams", "max_gap_s", "longest gap between two reads (s)", False),
        ),
    ),
    Table(
        "(d′) random 4 KiB reads of the cached media file after drop_caches",
        "(d′) random 4 KiB",
        "single thread, `POSIX_FADV_RANDOM`, a fixed seeded list of offsets, "
        "at most 2000 reads or 5 s",
        (
            Metric("d2_random_4k", "iops", "IOPS", True),
            Metric("d2_random_4k", "p50_ms", "p50 ms", False),
            Metric("d2_random_4k", "p99_ms", "p99 ms", False),
        ),
    ),
    Table(
        "(e) media-library scan",
        "(e) scan",
        "walk the tree, `lstat` every entry, open and read the first 4 KiB of every file "
        "under 1 MiB",
        (
            Metric("e_scan_cold", "seconds", "cold (s)", False),
            Metric("e_scan_warm", "seconds", "warm, right after (s)", False),
            Metric("e_scan_after_drop", "seconds", "after drop_caches (s)", False),
        ),
    ),
    Table(
        "(f′) open + first 4 KiB of cached small files after drop_caches",
        "(f′) small-file heads",
        "a fixed seeded sample of the small files, read once by the scan (e), one after another",
        (
            Metric("f2_small_heads", "p50_ms", "p50 ms", False),
            Metric("f2_small_heads", "p99_ms", "p99 ms", False),
        ),
    ),
    Table(
        "Peak RSS",
        "RSS",
        "`VmHWM` of each daemon process just before its unmount, the largest of a repetition",
        (Metric("rss", "peak_rss_mib", "peak RSS (MiB)", False, chart=False),),
    ),
)


# The daemon's CPU time per unit of work (bench/run.py's cpu_per_unit and idle).
CPU_SYSTEMS = ("rclone", "cachefs", "cachefs-nopoll")  # the systems with a daemon
PER_FILES = "cpu_s_per_1000_files"
CPU_METRICS = (
    Metric("a_cold_seq", "cpu_s_per_gib", "(a) cold read from the origin, CPU s/GiB", False),
    Metric("b_warm_reread", "cpu_s_per_gib", "(b) warm re-read, CPU s/GiB", False),
    Metric("b2_reread_after_drop", "cpu_s_per_gib", "(b′) re-read after drop, CPU s/GiB", False),
    Metric("b3_reread_after_remount", "cpu_s_per_gib", "(b″) after remount, CPU s/GiB", False),
    Metric("e_scan_cold", PER_FILES, "(e) cold scan, CPU s/1,000 files", False),
    Metric("e_scan_warm", PER_FILES, "(e) warm scan, CPU s/1,000 files", False),
    Metric("e_scan_after_drop", PER_FILES, "(e′) after drop, CPU s/1,000 files", False),
    Metric("f2_small_heads", PER_FILES, "(f′) small heads, CPU s/1,000 files", False),
    Metric("idle_after_mount", "cpu_pct", "at rest right after mount, CPU %", False),
    Metric("idle_after_load", "cpu_pct", "at rest right after the reads, CPU %", False),
)


# -- loading -----------------------------------------------------------------------


class Results:
    """One results file: its meta line and every measurement, by system / workload / key."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.meta: dict[str, Any] = {}
        self.end: dict[str, Any] | None = None
        self.runs: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
        for line in path.read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            if record["type"] == "meta":
                self.meta = record
            elif record["type"] == "end":
                self.end = record
            else:
                self.runs[record["system"], record["workload"]].append(record["metrics"])

    def values(self, system: str, workload: str, key: str) -> list[float]:
        """Every repetition's value that did not fail."""
        runs = self.runs.get((system, workload), [])
        return [m[key] for m in runs if "error" not in m and key in m]

    def median(self, system: str, workload: str, key: str) -> float | None:
        values = self.values(system, workload, key)
        return statistics.median(values) if values else None

    def errors(self, system: str, workload: str) -> list[str]:
        return [m["error"] for m in self.runs.get((system, workload), []) if "error" in m]

    def incomplete(self, system: str, workload: str) -> int:
        return sum(1 for m in self.runs.get((system, workload), []) if m.get("complete") is False)


def newest(directory: Path) -> Path:
    files = sorted(directory.glob("*.jsonl"), key=lambda p: p.stat().st_mtime)
    if not files:
        raise SystemExit(f"no *.jsonl results in {directory}; run bench/run.py first")
    return files[-1]


# -- formatting --------------------------------------------------------------------


def num(value: float | None) -> str:
    """Three significant figures, thin-space thousands, like the rest of the doc."""
    if value is None or math.isnan(value):
        return "—"
    if abs(value) >= 100:
        return f"{value:,.0f}".replace(",", " ")
    if abs(value) >= 10:
        return f"{value:.1f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def cell(results: Results, system: str, metric: Metric) -> str:
    values = results.values(system, metric.workload, metric.key)
    errors = results.errors(system, metric.workload)
    if not values:
        return f"error: {errors[0][:60]}" if errors else "—"
    text = num(statistics.median(values))
    if len(values) > 1:
        text += f" ({num(min(values))}..{num(max(values))})"
    if results.incomplete(system, metric.workload):
        text += " †"  # stopped at its time limit
    if errors:
        text += f" ({len(errors)} failed)"
    return text


def ratio(results: Results, metric: Metric, other: str) -> float | None:
    mine = results.median("cachefs", metric.workload, metric.key)
    theirs = results.median(other, metric.workload, metric.key)
    if mine is None or not theirs:
        return None
    return mine / theirs


def ratio_cell(results: Results, metric: Metric, other: str) -> str:
    value = ratio(results, metric, other)
    return "—" if value is None else f"{value:.2f}×"


def table_markdown(results: Results, table: Table) -> str:
    systems = [s for s in SYSTEMS if s in results.meta.get("systems", SYSTEMS)]
    metrics = [m for m in table.metrics if any(results.runs.get((s, m.workload)) for s in systems)]
    if not metrics:
        return ""
    head = ["metric", *systems, "cachefs ÷ rclone", "cachefs ÷ origin"]
    lines = [
        f"#### {table.title}",
        "",
        f"{table.what}.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + " --- |" * len(head),
    ]
    for metric in metrics:
        better = "higher is better" if metric.higher_is_better else "lower is better"
        row = [f"{metric.label} ({better})"]
        row += [cell(results, s, metric) for s in systems]
        row += [ratio_cell(results, metric, "rclone"), ratio_cell(results, metric, "origin")]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def cpu_markdown(results: Results) -> str:
    """The daemon's CPU per GiB, per 1,000 files and at rest, per system with a daemon."""
    systems = [s for s in CPU_SYSTEMS if s in results.meta.get("systems", ())]
    metrics = [m for m in CPU_METRICS if any(results.values(s, m.workload, m.key) for s in systems)]
    if not metrics:
        return ""
    head = ["workload", *systems]
    if {"cachefs", "rclone"} <= set(systems):
        head.append("cachefs ÷ rclone")
    lines = [
        "#### CPU per unit of work",
        "",
        "The daemon's CPU time (user + system, every thread: its CPU-time clock; reaped "
        "children from `/proc/PID/stat`) over each workload, per GiB read or per 1,000 files; "
        "at rest: CPU % over 5 s with nothing reading. The origin has no daemon; "
        "`cachefs-nopoll` is cachefs with `mount.busy_poll=0`. Lower is better.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + " --- |" * len(head),
    ]
    for metric in metrics:
        row = [metric.label, *(cell(results, s, metric) for s in systems)]
        if "cachefs ÷ rclone" in head:
            row.append(ratio_cell(results, metric, "rclone"))
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


# -- targets -----------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    measured: str
    met: bool | None  # None: not measured


def times(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


def at_least(
    results: Results, workload: str, key: str, other: str, factor: float, unit: str
) -> Verdict:
    mine, theirs = results.median("cachefs", workload, key), results.median(other, workload, key)
    r = times(mine, theirs)
    if r is None:
        return Verdict("not measured", None)
    return Verdict(f"{r:.2f}× ({num(mine)} vs {num(theirs)} {unit})", r >= factor)


def target_streams(results: Results) -> Verdict:
    gaps = results.values("cachefs", "c_streams", "max_gap_s")
    agg = at_least(results, "c_streams", "aggregate_mb_s", "origin", 0.95, "MB/s")
    if not gaps or agg.met is None:
        return Verdict("not measured", None)
    worst = max(gaps)
    return Verdict(
        f"longest gap {num(worst)} s (worst of {len(gaps)}); aggregate {agg.measured}",
        worst <= 0.5 and agg.met,
    )


def target_random(results: Results) -> Verdict:
    iops = at_least(results, "d2_random_4k", "iops", "rclone", 1.0, "IOPS")
    p99 = results.median("cachefs", "d2_random_4k", "p99_ms")
    their_p99 = results.median("rclone", "d2_random_4k", "p99_ms")
    if iops.met is None or p99 is None or their_p99 is None:
        return Verdict("not measured", None)
    return Verdict(
        f"IOPS {iops.measured}; p99 {num(p99)} vs {num(their_p99)} ms",
        iops.met and p99 <= their_p99,
    )


def at_most(results: Results, workload: str, key: str, limit: float, unit: str) -> Verdict:
    value = results.median("cachefs", workload, key)
    if value is None:
        return Verdict("not measured", None)
    return Verdict(f"{num(value)} {unit}", value <= limit)


def target_rss(results: Results) -> Verdict:
    peaks = results.values("cachefs", "rss", "peak_rss_mib")
    ram = [m.get("ram_tier_mib") for m in results.runs.get(("cachefs", "rss"), [])]
    ram_mib = next((r for r in ram if r), None)
    if not peaks or ram_mib is None:
        return Verdict("not measured", None)
    limit = ram_mib + 150
    return Verdict(
        f"{num(max(peaks))} MiB peak (limit {num(limit)} MiB = RAM tier {num(ram_mib)} + 150)",
        max(peaks) <= limit,
    )


TARGETS: tuple[tuple[str, Callable[[Results], Verdict]], ...] = (
    (
        "(a) cold sequential ≥ 0.95× origin",
        lambda r: at_least(r, "a_cold_seq", "mb_s", "origin", 0.95, "MB/s"),
    ),
    (
        "(b′) re-read after drop_caches ≥ 1.5× rclone",
        lambda r: at_least(r, "b2_reread_after_drop", "mb_s", "rclone", 1.5, "MB/s"),
    ),
    (
        "(b) warm re-read ≥ 2× rclone",
        lambda r: at_least(r, "b_warm_reread", "mb_s", "rclone", 2.0, "MB/s"),
    ),
    ("(c) no gap over 0.5 s, aggregate ≥ 0.95× origin", target_streams),
    ("(d′) IOPS ≥ rclone's, p99 ≤ rclone's", target_random),
    (
        "(e) scan after drop_caches ≤ 1 s",
        lambda r: at_most(r, "e_scan_after_drop", "seconds", 1.0, "s"),
    ),
    ("(f′) p50 ≤ 0.3 ms", lambda r: at_most(r, "f2_small_heads", "p50_ms", 0.3, "ms")),
    ("peak RSS ≤ RAM tier + 150 MiB", target_rss),
)


def targets_markdown(results: Results) -> str:
    lines = ["| target | cachefs (median) | met |", "| --- | --- | --- |"]
    for name, judge in TARGETS:
        verdict = judge(results)
        met = {True: "yes", False: "**no**", None: "—"}[verdict.met]
        lines.append(f"| {name} | {verdict.measured} | {met} |")
    return "\n".join(lines) + "\n"


# -- the header ------------------------------------------------------------------


def load(record: dict[str, Any] | None) -> str:
    """The 1-minute load average: other work on the machine skews the figures."""
    return f"{record['loadavg'][0]:.1f}" if record and "loadavg" in record else "?"


def shown_path(path: Path) -> str:
    resolved = path.resolve()
    return str(resolved.relative_to(REPO)) if resolved.is_relative_to(REPO) else str(path)


def reads_in(results: Results) -> bool:
    return any(w in READ_WORKLOADS for w in results.meta.get("workloads", READ_WORKLOADS))


def context_markdown(results: Results, chart_link: str | None) -> str:
    meta, end = results.meta, results.end
    m, v, check = meta["machine"], meta["versions"], meta["origin_check"]
    settings = meta.get("system_settings", {})
    elapsed = f"{end['elapsed_s'] / 60:.1f} min" if end else "interrupted (no end line)"
    media_mib = meta["media_size"] // MiB
    if not reads_in(results):  # a write-only run: no slow read origin, no read targets
        lines = [
            f"Generated by `bench/report.py` from `{shown_path(results.path)}`.",
            "",
            f"* **Run**: {meta['date']}, {meta['reps']} repetition(s), medians with "
            f"min..max; `bench/run.py` took {elapsed}; load average {load(meta)} at the "
            f"start, {load(end)} at the end (the machine is shared).",
            f"* **Machine**: {m['cpu']}, {m['cores']} cores, {m['ram_bytes'] / 2**30:.1f} GiB "
            f"RAM, kernel {m['kernel']} ({m['arch']}), {m.get('distro', '')}.",
            "* **Versions**: " + ", ".join(f"{k} {ver}" for k, ver in v.items()) + ".",
            "",
        ]
        return "\n".join(lines)
    lines = [
        f"Generated by `bench/report.py` from `{shown_path(results.path)}`; rerun `make bench` "
        "to refresh (this block is rewritten, the text around it is not).",
        "",
        f"* **Run**: {meta['date']}, {meta['reps']} repetition(s), medians with min..max; "
        f"data set `{meta['profile']}`; `bench/run.py` took {elapsed}; load average "
        f"{load(meta)} at the start, {load(end)} at the end (the machine is shared).",
        f"* **Machine**: {m['cpu']}, {m['cores']} cores, {m['ram_bytes'] / 2**30:.1f} GiB RAM, "
        f"kernel {m['kernel']} ({m['arch']}), {m.get('distro', '')}; tier and cache "
        f"directories on {meta.get('cache_fs', '?')}.",
        "* **Versions**: "
        + ", ".join(f"{name} {version}" for name, version in v.items() if name != "rclone")
        + (f", {v['rclone']}" if "rclone" in v else "")
        + ".",
        f"* **Slow origin** (`bench/slow_origin.py`): {check['latency_ms']:g} ms per "
        f"non-sequential request, {check['mbps']:g} MB/s, one request at a time. "
        f"Measured by `check`: random 4 KiB {check['rand4k_direct_median_ms']} ms median, "
        f"{check['rand4k_after_drop_caches_median_ms']} ms after drop_caches; sequential "
        f"{check['seq_mb_s']} MB/s; {check['parallel_readers']} parallel readers "
        f"{check['parallel_total_iops']} IOPS vs {check['single_reader_iops']} for one "
        f"(serialised: {str(check['parallel_serialised']).lower()}).",
        "* **Systems**: `origin` — the slow origin read directly; "
        f"`rclone` — `rclone mount {settings.get('rclone', {}).get('flags', '')} "
        "--cache-dir <fresh dir>` of the origin directory; "
        f"`cachefs` — defaults plus `-o {settings.get('cachefs', {}).get('options', '')}`, "
        "fresh tier directories.",
        f"* **Method**: the media file is `{meta['media_file']}` ({media_mib} MiB). *Cold* = "
        "the system's own cache emptied (unmount, delete its cache directory, mount again) "
        "and `echo 3 > /proc/sys/vm/drop_caches`. Each workload has a time limit; a figure "
        "marked † stopped at it. Only one system is mounted at a time. Ratios are of medians; "
        "for a time or latency a ratio below 1 is in cachefs's favour.",
        "",
        "#### Targets",
        "",
        targets_markdown(results),
    ]
    if chart_link:
        lines += [
            f"![cachefs's advantage over rclone and the origin, per workload]({chart_link})",
            "",
            "The chart shows each ratio as an advantage: > 1 means cachefs is better "
            "(faster, or lower latency / time), on a log scale.",
            "",
        ]
    return "\n".join(lines)


def section_markdown(results: Results, chart_link: str | None) -> str:
    tables = [table_markdown(results, t) for t in TABLES]
    tables.append(cpu_markdown(results))
    text = context_markdown(results, chart_link) + "\n" + "\n".join(t for t in tables if t)
    return text + writes_markdown(results)


# -- writes ----------------------------------------------------------------------

READ_WORKLOADS = ("a", "b", "b2", "b3", "c", "d2", "e", "f2")
WRITE_SYSTEMS = ("origin", "cachefs-base", "cachefs", "cachefs-wb")
WRITE_ORIGINS = {"slow": "slow origin", "local": "local origin"}


@dataclass(frozen=True)
class WriteMetric:
    prefix: str  # the workload name before "_<origin>"
    label: str
    key: str
    unit: str


WRITE_METRICS = (
    WriteMetric("ws_seq_write", "1 MiB sequential write", "mib_s", "MiB/s"),
    WriteMetric("wr_rand_4k_write", "4 KiB random writes", "iops", "IOPS"),
    WriteMetric("wr3_rand_3000_write", "3000-byte random writes", "iops", "IOPS"),
)


def write_systems(results: Results) -> list[str]:
    present = {system for system, _ in results.runs}
    return [s for s in WRITE_SYSTEMS if s in results.meta.get("write_systems", ()) and s in present]


def write_ratio(results: Results, system: str, workload: str, key: str) -> float | None:
    return times(results.median(system, workload, key), results.median("origin", workload, key))


def verified_cell(results: Results, system: str, workload: str) -> str:
    runs = [m for m in results.runs.get((system, workload), []) if "error" not in m]
    if not runs:
        return "—"
    bad = sum(1 for m in runs if m.get("verified") is False)
    unchecked = sum(1 for m in runs if m.get("verified") is None)
    if bad:
        return f"**no** ({bad} of {len(runs)})"
    return f"yes ({unchecked} not checked)" if unchecked else "yes"


def writes_table(results: Results, origin: str) -> str:
    systems = write_systems(results)
    others = [s for s in systems if s != "origin"]
    head = ["workload", *systems, *(f"{s} ÷ origin" for s in others), "read back as written"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for metric in WRITE_METRICS:
        workload = f"{metric.prefix}_{origin}"
        if not any(results.runs.get((s, workload)) for s in systems):
            continue
        row = [f"{metric.label}, {metric.unit} (higher is better)"]
        row += [cell(results, s, Metric(workload, metric.key, "", True)) for s in systems]
        for system in others:
            r = write_ratio(results, system, workload, metric.key)
            row.append("—" if r is None else f"{num(r)}×")
        row.append(", ".join(f"{s}: {verified_cell(results, s, workload)}" for s in others))
        lines.append("| " + " | ".join(row) + " |")
    rss = [
        f"{s} {num(max(vals))} MiB"
        for s in others
        if (vals := results.values(s, f"w_rss_{origin}", "peak_rss_mib"))
    ]
    if rss:
        lines += ["", f"Peak RSS (largest of the repetitions): {', '.join(rss)}."]
    return "\n".join(lines) + "\n"


def write_targets(results: Results) -> list[tuple[str, Callable[[str], Verdict]]]:
    def ratio_at_least(workload: str, key: str, unit: str, factor: float):
        def judge(system: str) -> Verdict:
            mine = results.median(system, workload, key)
            theirs = results.median("origin", workload, key)
            r = times(mine, theirs)
            if r is None:
                return Verdict("not measured", None)
            return Verdict(f"{r:.2f}× ({num(mine)} vs {num(theirs)} {unit})", r >= factor)

        return judge

    def value_at_least(workload: str, key: str, unit: str, floor: float):
        def judge(system: str) -> Verdict:
            value = results.median(system, workload, key)
            if value is None:
                return Verdict("not measured", None)
            return Verdict(f"{num(value)} {unit}", value >= floor)

        return judge

    def rss(system: str) -> Verdict:
        found = []
        for origin in WRITE_ORIGINS:
            runs = results.runs.get((system, f"w_rss_{origin}"), [])
            found += [(m["peak_rss_mib"], m.get("ram_tier_mib")) for m in runs if "error" not in m]
        if not found or any(ram is None for _, ram in found):
            return Verdict("not measured", None)
        peak, ram = max(found)
        return Verdict(f"{num(peak)} MiB (RAM tier {num(ram)} MiB)", peak <= ram + 150)

    def verified(system: str) -> Verdict:
        runs = [
            m
            for (s, w), ms in results.runs.items()
            if s == system and w.startswith(("ws_", "wr"))
            for m in ms
            if "error" not in m
        ]
        if not runs:
            return Verdict("not measured", None)
        bad = sum(1 for m in runs if m.get("verified") is False)
        checked = sum(1 for m in runs if m.get("verified") is not None)
        return Verdict(f"{checked - bad} of {checked} files checked", not bad)

    return [
        (
            "slow origin, 1 MiB sequential ≥ 0.9× origin",
            ratio_at_least("ws_seq_write_slow", "mib_s", "MiB/s", 0.9),
        ),
        (
            "slow origin, 4 KiB random ≥ 0.9× origin",
            ratio_at_least("wr_rand_4k_write_slow", "iops", "IOPS", 0.9),
        ),
        (
            "slow origin, 3000-byte random ≥ 0.9× origin",
            ratio_at_least("wr3_rand_3000_write_slow", "iops", "IOPS", 0.9),
        ),
        (
            "local origin, 1 MiB sequential ≥ 500 MiB/s",
            value_at_least("ws_seq_write_local", "mib_s", "MiB/s", 500),
        ),
        (
            "local origin, 4 KiB random ≥ 10,000 IOPS",
            value_at_least("wr_rand_4k_write_local", "iops", "IOPS", 10_000),
        ),
        ("peak RSS ≤ RAM tier + 150 MiB", rss),
        ("every file read back as written, through the mount and at the origin", verified),
    ]


def write_targets_markdown(results: Results) -> str:
    systems = [s for s in write_systems(results) if s != "origin"]
    lines = [
        "| target | " + " | ".join(systems) + " |",
        "|" + " --- |" * (len(systems) + 1),
    ]
    for name, judge in write_targets(results):
        cells = []
        for system in systems:
            verdict = judge(system)
            met = {True: "yes", False: "**no**", None: "—"}[verdict.met]
            cells.append(f"{verdict.measured}: {met}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def writes_markdown(results: Results) -> str:
    meta = results.meta
    if not meta.get("write_workloads") or not write_systems(results):
        return ""
    origins = meta.get("write_origins", {})
    settings = meta.get("write_settings", {})
    described = []
    if "slow" in origins:
        slow = origins["slow"]
        described.append(
            f"`slow` — `bench/write_origin.py`: the slow disk model ({slow.get('latency_ms')} ms "
            f"per non-sequential request, {slow.get('mbps')} MB/s, one request at a time) under "
            f"an empty ext4, read-write ({slow.get('fs')})"
        )
    if "local" in origins:
        described.append(f"`local` — {origins['local'].get('fs')} at `{origins['local']['path']}`")
    variants = "; ".join(
        f"`{name}` — `-o {opts.get('options', '')}`"
        + (f" from `{opts['tree']}`" if opts.get("tree") else "")
        for name, opts in settings.items()
        if name != "origin"
    )
    lines = [
        "",
        "#### Writes",
        "",
        f"{meta.get('write_mib')} MiB per file, written by one thread; fsync and close are "
        "part of every timing (fio's `fsync_on_close=1`). A random-write file is laid out "
        "first (untimed, through the same system), then every block is written once in a "
        "seeded random order. Each file is then read back through the system and from the "
        "origin and compared with what was written. `origin` is the origin written directly.",
        "",
        "* **Origins**: " + "; ".join(described) + ".",
        f"* **Systems**: {variants}.",
        "",
        write_targets_markdown(results),
    ]
    for origin, title in WRITE_ORIGINS.items():
        if origin in origins:
            lines += [f"##### {title}", "", writes_table(results, origin)]
    return "\n".join(lines)


# -- chart -----------------------------------------------------------------------


def advantages(results: Results) -> list[tuple[str, list[float | None]]]:
    """(label, [vs rclone, vs origin]); > 1 is in cachefs's favour for every metric."""
    rows = []
    for table in TABLES:
        for metric in table.metrics:
            if not metric.chart or not results.runs.get(("cachefs", metric.workload)):
                continue
            pair: list[float | None] = []
            for other in ("rclone", "origin"):
                r = ratio(results, metric, other)
                pair.append(None if not r else (r if metric.higher_is_better else 1 / r))
            if pair != [None, None]:
                rows.append((f"{table.short}: {metric.label}", pair))
    for metric in WRITE_METRICS:
        for origin in WRITE_ORIGINS:
            r = write_ratio(results, "cachefs", f"{metric.prefix}_{origin}", metric.key)
            if r:
                rows.append((f"(w) {origin}: {metric.label}", [None, r]))
    return rows


def draw_chart(results: Results, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display: render straight to a file
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    rows = advantages(results)
    fig, ax = plt.subplots(figsize=(9, 0.5 * len(rows) + 1.8), dpi=110)
    height = 0.38
    series = ((0, -1, "cachefs vs rclone", "#4c72b0"), (1, 1, "cachefs vs origin", "#dd8452"))
    for index, side, name, colour in series:
        ys = [i + side * height / 2 for i in range(len(rows))]
        values = [pair[index] or math.nan for _, pair in rows]
        # Bars grow from 1x: to the right where cachefs is better, to the left where worse.
        ax.barh(ys, [v - 1 for v in values], height, left=1, label=name, color=colour)
        for y, value in zip(ys, values, strict=True):
            if not math.isnan(value):
                ax.annotate(
                    f"{value:.2f}×",
                    (value, y),
                    xytext=(3 if value >= 1 else -3, 0),
                    textcoords="offset points",
                    ha="left" if value >= 1 else "right",
                    va="center",
                    fontsize=7,
                )
    ax.set_xscale("log")
    known = [r for _, pair in rows for r in pair if r] + [1.0]
    low, high = min(known), max(known)
    ax.set_xlim(low / 2.5, high * 2.5)  # room for the labels
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}×"))
    ax.axvline(1, color="black", linewidth=0.8)
    ax.set_yticks(range(len(rows)), [label for label, _ in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("cachefs's advantage (log scale): > 1× cachefs better, < 1× worse")
    ax.set_title(f"cachefs vs rclone and vs the slow origin (medians, {results.meta['date'][:10]})")
    ax.grid(axis="x", which="major", alpha=0.3)
    fig.legend(loc="lower center", ncol=2, fontsize=9, frameon=False)
    fig.tight_layout(rect=(0, 0.06, 1, 1))  # leave the bottom strip to the legend
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


# -- the doc ---------------------------------------------------------------------


def update_doc(doc: Path, body: str) -> None:
    """Replace the text between the markers; add heading and markers once if missing."""
    text = doc.read_text(encoding="utf-8") if doc.exists() else ""
    block = f"{START}\n{body.rstrip()}\n{END}"
    if START in text and END in text:
        before, rest = text.split(START, 1)
        after = rest.split(END, 1)[1]
        text = before + block + after
    else:
        text = text.rstrip() + ("\n\n" if text else "") + f"{HEADING}\n\n{block}\n"
    doc.write_text(text, encoding="utf-8")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", nargs="?", type=Path, default=Path("bench-results"))
    parser.add_argument("--doc", type=Path, help="markdown file to update")
    parser.add_argument("--chart", type=Path, help="PNG to write")
    parser.add_argument("--no-chart", action="store_true")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    path = newest(args.results) if args.results.is_dir() else args.results
    results = Results(path)
    quick = results.meta.get("quick", False)
    doc = args.doc or (path.with_suffix(".md") if quick else DOC)
    chart = args.chart or (path.with_suffix(".png") if quick else CHART)
    link = None
    if not args.no_chart:
        draw_chart(results, chart)
        link = os.path.relpath(chart, doc.resolve().parent)
    update_doc(doc, section_markdown(results, link))
    print(f"report: {doc}" + ("" if args.no_chart else f", chart {chart}"), file=sys.stderr)
    if reads_in(results):
        print(targets_markdown(results))
    if results.meta.get("write_workloads"):
        print(write_targets_markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
