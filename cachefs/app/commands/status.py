"""``cachefs status``: every cachefs mount on the machine, at a glance."""

from __future__ import annotations

import os
import time
from typing import Any

import click
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from cachefs.app.commands import metrics
from cachefs.app.commands.mounts import (
    STATS,
    UNSTATTED,
    cachefs_mounts,
    getxattr_timed,
    parse_stats,
    timeout_option,
)
from cachefs.app.commands.output import bar, console_out, duration, echo_json, percent, size


@click.command("status", short_help="Every cachefs mount: state, tier fill, hit ratio, uptime.")
@click.argument("paths", nargs=-1, type=UNSTATTED, metavar="[PATH...]")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (a list, one entry per mount).")
@timeout_option("Seconds a mount has to answer before it is shown as not answering.")
def status_command(paths: tuple[str, ...], as_json: bool, timeout: float) -> None:
    """Every cachefs mount (or those at or below PATH...): origin, state, tier fill,
    hit ratio, origin bytes saved, uptime.

    Mounts are found in /proc/self/mountinfo; a mount whose daemon does not
    answer within --timeout is shown as not answering instead of hanging.
    """
    below = [os.path.abspath(p) for p in paths] if paths else None
    mounts = cachefs_mounts(below)
    answers = getxattr_timed([m.mountpoint for m in mounts], STATS, timeout)
    now = time.time()
    entries = []
    for mount, answer in zip(mounts, answers, strict=True):
        stats = parse_stats(answer)
        entry: dict[str, Any] = {
            "mountpoint": mount.mountpoint,
            "source": mount.source,
            "origin": mount.source,
            "answering": stats is not None,
            "error": None if stats is not None else answer.describe(),
        }
        if stats is not None:
            entry |= {
                "origin": stats.get("origin", mount.source),
                "origin_state": stats.get("origin_state"),
                "origin_state_since": stats.get("origin_state_since"),
                "origin_offline_reason": stats.get("origin_offline_reason") or None,
                "tiers": metrics.tier_fill(stats),
                **metrics.traffic(stats),
                "started_at": stats.get("started_at"),
                "uptime_seconds": metrics.uptime(stats, now),
            }
        entries.append(entry)
    if as_json:
        echo_json(entries)
        return
    console = console_out()
    if not entries:
        where = f" at or below {', '.join(paths)}" if paths else ""
        console.print(f"no cachefs mounts{where}")
        return
    for i, entry in enumerate(entries):
        if i:
            console.print()
        console.print(render(entry))


def render(entry: dict[str, Any]) -> RenderableType:
    title = Text.assemble(
        (entry["mountpoint"], "bold"), " <- ", entry["origin"], "  ", _state(entry)
    )
    if not entry["answering"]:
        return title
    table = Table.grid(padding=(0, 2))
    table.add_column(style="dim")
    table.add_column()
    table.add_column()
    for name, tier in entry["tiers"].items():
        note = f"  not caching: {tier['not_caching_reason']}" if tier["not_caching_reason"] else ""
        table.add_row(
            name,
            bar(tier["fill"]),
            f"{size(tier['used'])} / {size(tier['max'])} ({percent(tier['fill'])}){note}",
        )
    served = entry["bytes_served"]
    table.add_row(
        "hit ratio",
        percent(entry["hit_ratio"]),
        f"{size(entry['cache_bytes_served'])} of {size(served)} served came from the cache",
    )
    table.add_row(
        "origin",
        f"{size(entry['origin_bytes_saved'])} saved",
        f"{size(entry['origin_bytes_read'])} read from it ({entry['origin_reads']} fetches)",
    )
    return Group(title, table)


def _state(entry: dict[str, Any]) -> Text:
    if not entry["answering"]:
        return Text(entry["error"], style="bold red")
    state = entry["origin_state"] or "unknown"
    text = Text(state, style="green" if state == "online" else "bold red")
    if state != "online" and entry.get("origin_offline_reason"):
        text.append(f" ({entry['origin_offline_reason']})")
    text.append(f", up {duration(entry['uptime_seconds'])}")
    return text
