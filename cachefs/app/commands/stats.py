"""``cachefs stats MOUNT``: a mount's counters as tables, once or every few seconds."""

from __future__ import annotations

import contextlib
import json
import time
from typing import Any

import click
from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from cachefs.app.commands import metrics
from cachefs.app.commands.mounts import UNSTATTED, Resolver, read_stats, timeout_option
from cachefs.app.commands.output import console_out, echo_json, live_view, percent, size


@click.command("stats", short_help="A mount's counters, per tier and content type.")
@click.argument("mount", type=UNSTATTED)
@click.option("--json", "as_json", is_flag=True, help="Print JSON (with --watch: one line each).")
@click.option(
    "--watch",
    type=click.FloatRange(min=0.1),
    metavar="SECONDS",
    help="Print again every SECONDS until Ctrl-C.",
)
@click.option("--count", type=click.IntRange(min=1), help="With --watch: stop after COUNT.")
@timeout_option()
def stats_command(
    mount: str, as_json: bool, watch: float | None, count: int | None, timeout: float
) -> None:
    """Counters of the cachefs mount holding MOUNT, since it was mounted: per tier and
    content type hits, misses, bytes served and hit ratio; origin traffic; tier fill,
    promotions, demotions, evictions; corrupt chunks; background failures."""
    mountpoint = Resolver(timeout).target(mount).mount.mountpoint
    if watch is None:
        report = summarize(mountpoint, read_stats(mountpoint, timeout))
        if as_json:
            echo_json(report)
        else:
            console_out().print(render(report))
        return
    console = console_out()
    shown = 0
    with contextlib.suppress(KeyboardInterrupt), live_view(console, as_json) as live:
        while True:
            report = summarize(mountpoint, read_stats(mountpoint, timeout))
            if as_json:
                click.echo(json.dumps(report, sort_keys=True))
            elif live is not None:
                live.update(render(report, stamp=True))
            else:
                if shown:
                    console.print()
                console.print(render(report, stamp=True))
            shown += 1
            if count is not None and shown >= count:
                break
            time.sleep(watch)


def summarize(mountpoint: str, stats: dict[str, Any]) -> dict[str, Any]:
    """What ``stats --json`` prints (see metrics.py for the derived numbers)."""
    tiers = metrics.tier_fill(stats)
    for name, tier in tiers.items():
        raw = stats.get("tiers", {}).get(name, {})
        tier |= {k: int(raw.get(k, 0)) for k in ("hits", "misses", "evictions")}
    return {
        "mountpoint": mountpoint,
        "time": round(time.time(), 3),
        "uptime_seconds": metrics.uptime(stats),
        "lookups": metrics.lookups(stats),
        "tiers": tiers,
        "origin": {
            "state": stats.get("origin_state"),
            "offline_reason": stats.get("origin_offline_reason") or None,
            "outages": int(stats.get("origin_outages", 0)),
            **metrics.traffic(stats),
        },
        "promotions": int(stats.get("promotions", 0)),
        "demotions": int(stats.get("demotions", 0)),
        "evictions": {name: tier["evictions"] for name, tier in tiers.items()},
        "corrupt_chunks": int(stats.get("corrupt_chunks", 0)),
        "background_failures": int(stats.get("background_failures", 0)),
        "store_skipped": int(stats.get("store_skipped", 0)),
        "origin_changed_during_read": int(stats.get("origin_changed_during_read", 0)),
    }


def _table(title: str, *columns: str) -> Table:
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, show_edge=False)
    for i, column in enumerate(columns):
        table.add_column(column, justify="left" if i < 2 else "right", no_wrap=True)
    return table


def render(report: dict[str, Any], stamp: bool = False) -> RenderableType:
    parts: list[RenderableType] = []
    if stamp:
        clock = time.strftime("%H:%M:%S", time.localtime(report["time"]))
        parts.append(Text(f"{report['mountpoint']} at {clock}", style="bold"))
    parts += [lookups_table(report), tiers_table(report), traffic_table(report)]
    return Group(*parts)


def lookups_table(report: dict[str, Any]) -> Table:
    lookups = _table(
        "Chunk lookups", "tier", "content type", "hits", "misses", "bytes served", "hit ratio"
    )
    for row in report["lookups"]:
        lookups.add_row(
            row["tier"],
            row["content_type"],
            str(row["hits"]),
            str(row["misses"]),
            size(row["bytes_served"]),
            percent(row["hit_ratio"]),
        )
    if not report["lookups"]:
        lookups.add_row("-", "nothing read yet", "", "", "", "")
    return lookups


def tiers_table(report: dict[str, Any]) -> Table:
    tiers = _table("Tiers", "tier", "", "chunks", "used", "max", "fill", "evictions")
    for name, tier in report["tiers"].items():
        tiers.add_row(
            name,
            "not caching" if tier["not_caching_reason"] else "",
            str(tier["chunks"]),
            size(tier["used"]),
            size(tier["max"]),
            percent(tier["fill"]),
            str(tier["evictions"]),
        )
    return tiers


def traffic_table(report: dict[str, Any]) -> Table:
    origin = report["origin"]
    traffic = _table("Traffic", "", "counter", "value")
    state = origin["state"] or "unknown"
    if origin["offline_reason"]:
        state += f" ({origin['offline_reason']})"
    rows = [
        ("origin", "state", state),
        ("origin", "outages", str(origin["outages"])),
        ("origin", "reads", str(origin["origin_reads"])),
        ("origin", "bytes read", size(origin["origin_bytes_read"])),
        ("reads", "bytes served", size(origin["bytes_served"])),
        ("reads", "from the cache", size(origin["cache_bytes_served"])),
        ("reads", "hit ratio", percent(origin["hit_ratio"])),
        ("reads", "origin bytes saved", size(origin["origin_bytes_saved"])),
        ("tiers", "promotions (hdd -> ssd)", str(report["promotions"])),
        ("tiers", "demotions (ssd -> hdd)", str(report["demotions"])),
        ("tiers", "chunks not stored (disk busy)", str(report["store_skipped"])),
        ("health", "corrupt chunks", str(report["corrupt_chunks"])),
        ("health", "background failures", str(report["background_failures"])),
        ("health", "changed during a read", str(report["origin_changed_during_read"])),
    ]
    for row in rows:
        traffic.add_row(*row)
    return traffic
