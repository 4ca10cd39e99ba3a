"""Printing for the operator's commands: JSON, rich consoles, sizes, ratios, durations."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from typing import Any

import click
from rich.console import Console, RenderableType
from rich.live import Live
from rich.text import Text

from cachefs.config import format_size

TIERS = ("ram", "ssd", "hdd")


def echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=True))


def console_out() -> Console:
    # Piped output keeps whole rows instead of wrapping at rich's default 80 columns.
    return Console(width=None if sys.stdout.isatty() else 120, highlight=False)


def console_err() -> Console:
    return Console(stderr=True, width=None if sys.stderr.isatty() else 120, highlight=False)


def size(n: int | float | None) -> str:
    """Bytes as ``1.5GiB``; negative as ``-1.5GiB``; None as ``?``."""
    if n is None:
        return "?"
    return ("-" if n < 0 else "") + format_size(abs(n), exact=False)


def ratio(part: int | float, whole: int | float) -> float | None:
    """part / whole, None when there is no whole (nothing to divide)."""
    return part / whole if whole else None


def percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f} %"


def duration(seconds: float | None) -> str:
    """``3d 4h``, ``2h 5m``, ``4m 10s``, ``12s``."""
    if seconds is None:
        return "unknown"
    total = max(0, int(seconds))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {secs}s"
    return f"{secs}s"


def bar(fraction: float | None, width: int = 24) -> Text:
    """A fill bar that reads the same on a terminal and in a pipe (no colours needed)."""
    filled = round(width * min(max(fraction or 0.0, 0.0), 1.0))
    if fraction and not filled:
        filled = 1  # something is there: show it
    return Text.assemble(("█" * filled, "cyan"), ("░" * (width - filled), "dim"))


@contextlib.contextmanager
def live_view(console: Console, as_json: bool) -> Iterator[Refreshing | None]:
    """A redrawn screen on a terminal (None elsewhere, or for JSON: the caller prints)."""
    if as_json or not console.is_terminal:
        yield None
        return
    with Live(console=console, auto_refresh=False, screen=False) as live:
        yield Refreshing(live)


class Refreshing:
    def __init__(self, live: Live) -> None:
        self.live = live

    def update(self, renderable: RenderableType) -> None:
        self.live.update(renderable, refresh=True)
