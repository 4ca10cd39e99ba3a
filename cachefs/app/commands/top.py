"""``cachefs top MOUNT``: a live view of a mount: the hottest files, fills in flight,
the origin's state, tier fill and throughput, redrawn every second."""

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
from cachefs.app.commands.output import bar, console_out, duration, live_view, percent, size


@click.command("top", short_help="A live view: hottest files, fills in flight, origin, tiers.")
@click.argument("mount", type=UNSTATTED)
@click.option("--interval", type=click.FloatRange(min=0.1), default=1.0, show_default=True)
@click.option("--count", type=click.IntRange(min=1), help="Stop after COUNT views.")
@click.option("--json", "as_json", is_flag=True, help="One JSON line per view.")
@timeout_option()
def top_command(
    mount: str, interval: float, count: int | None, as_json: bool, timeout: float
) -> None:
    """What the cachefs mount holding MOUNT is doing now: the files read most lately
    (bytes per second, decayed over ~30 s), chunk fills in flight, the origin's
    state, each tier's fill and the read throughput since the last view.
    Ctrl-C stops it."""
    mountpoint = Resolver(timeout).target(mount).mount.mountpoint
    console = console_out()
    previous: tuple[float, dict[str, Any]] | None = None
    shown = 0
    with contextlib.suppress(KeyboardInterrupt), live_view(console, as_json) as live:
        while True:
            now, stats = time.monotonic(), read_stats(mountpoint, timeout)
            view = snapshot(mountpoint, stats, previous, now)
            previous = (now, stats)
            if as_json:
                click.echo(json.dumps(view, sort_keys=True))
            elif live is not None:
                live.update(render(view))
            else:
                console.print(render(view))
            shown += 1
            if count is not None and shown >= count:
                break
            time.sleep(interval)


def snapshot(
    mountpoint: str,
    stats: dict[str, Any],
    previous: tuple[float, dict[str, Any]] | None,
    now: float,
) -> dict[str, Any]:
    """What one view shows (``--json`` prints it)."""
    rate = None
    if previous is not None and now > previous[0]:
        served = stats.get("fuse_read_bytes_served", 0) - previous[1].get(
            "fuse_read_bytes_served", 0
        )
        rate = max(0.0, served / (now - previous[0]))
    return {
        "mountpoint": mountpoint,
        "origin_state": stats.get("origin_state"),
        "origin_offline_reason": stats.get("origin_offline_reason") or None,
        "uptime_seconds": metrics.uptime(stats),
        "hot_files": stats.get("hot_files", []),
        "fills_in_flight": int(stats.get("fills_in_flight", 0)),
        "prefetch_queued": int(stats.get("prefetch_queued", 0)),
        "read_bytes_per_second": None if rate is None else round(rate, 1),
        "hit_ratio": metrics.traffic(stats).get("hit_ratio"),
        "tiers": metrics.tier_fill(stats),
    }


def render(view: dict[str, Any]) -> RenderableType:
    state = view["origin_state"] or "unknown"
    head = Text.assemble(
        (f"{view['mountpoint']}  ", "bold"),
        ("origin ", ""),
        (state, "green" if state == "online" else "red"),
        (f"  up {duration(view['uptime_seconds'])}", ""),
        (f"  hit ratio {percent(view['hit_ratio'])}", ""),
        (f"  reading {size(view['read_bytes_per_second'])}/s", "")
        if view["read_bytes_per_second"] is not None
        else ("", ""),
        (f"  fills in flight {view['fills_in_flight']}", ""),
        (f"  prefetch queued {view['prefetch_queued']}", ""),
    )
    tiers = Table(box=box.SIMPLE_HEAD, show_edge=False, title="tiers", title_justify="left")
    for column in ("tier", "fill", "used", "max"):
        tiers.add_column(column)
    for name, tier in view["tiers"].items():
        tiers.add_row(name, bar(tier.get("fill")), size(tier.get("used")), size(tier.get("max")))
    hot = Table(box=box.SIMPLE_HEAD, show_edge=False, title="hottest files", title_justify="left")
    for column, justify in (("file", "left"), ("read lately", "right"), ("reads", "right")):
        hot.add_column(column, justify=justify)  # type: ignore[arg-type]
    for entry in view["hot_files"]:
        hot.add_row(entry["path"], f"{size(entry['bytes_per_second'])}/s", str(entry["reads"]))
    if not view["hot_files"]:
        hot.add_row("(nothing read lately)", "", "")
    return Group(head, tiers, hot)
