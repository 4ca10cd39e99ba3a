"""docs/dashboard.png: the panels of mount/grafana-cachefs.json, drawn with matplotlib from
real scrapes of a running mount.

No Grafana or Prometheus is needed (neither installs from this machine's
package sources): a mount is started with ``metrics.listen``, a media-server
workload reads through it for about a minute (a library scan, a binge of
episodes in order, re-watching, random seeks in films), the endpoint is
scraped every second, and each panel's query is evaluated over those scrapes
by bench/promql.py. The layout is the dashboard's grid; ``$__rate_interval``
is RATE_INTERVAL. The origin is a local directory, not a slow NAS.

    .venv/bin/python bench/dashboard.py [--out docs/dashboard.png] [--scrapes FILE]

``--scrapes`` keeps the raw scrapes (JSON); ``--from-scrapes FILE`` redraws from them.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import promql  # beside this script, as bench/run.py imports its siblings
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parent.parent
DASHBOARD = REPO / "mount" / "grafana-cachefs.json"
RATE_INTERVAL = 8.0  # seconds: what $__rate_interval stands for at a 1 s scrape
MiB = 1024 * 1024


# -- the mount and its workload -----------------------------------------------------------


def build_origin(root: Path) -> None:
    rng = random.Random(14)
    show = root / "Shows" / "Open Movie Show" / "Season 01"
    show.mkdir(parents=True)
    for episode in range(1, 9):
        (show / f"S01E{episode:02d}.mkv").write_bytes(rng.randbytes(12 * MiB))
        (show / f"S01E{episode:02d}.nfo").write_text(f"<episode>{episode}</episode>\n" * 200)
    for title in ("Sintel (2010)", "Big Buck Bunny (2008)", "Tears of Steel (2012)"):
        film = root / "Movies" / title
        film.mkdir(parents=True)
        (film / "movie.mkv").write_bytes(rng.randbytes(24 * MiB))
        (film / "poster.jpg").write_bytes(rng.randbytes(150_000))
        (film / "movie.nfo").write_text(f"<movie><title>{title}</title></movie>\n" * 300)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def mount(work: Path, port: int) -> subprocess.Popen[bytes]:
    mnt = work / "mnt"
    mnt.mkdir()
    options = [
        f"tiers.ssd.path={work / 'ssd'}",
        f"tiers.hdd.path={work / 'hdd'}",
        "tiers.ssd.min_free=0",
        "tiers.hdd.min_free=0",
        "tiers.ram.max_size=40MiB",  # small: the RAM tier evicts, the disk tiers serve
        "tiers.ssd.max_size=48MiB",
        "stats.backend=embedded",
        f"metrics.listen=127.0.0.1:{port}",
        f"log={work / 'cachefs.log'}",
    ]
    command = [sys.executable, "-m", "cachefs", "mount", "-f", str(work / "origin"), str(mnt)]
    proc = subprocess.Popen([*command, "-o", ",".join(options)])
    deadline = time.monotonic() + 30
    while not os.path.ismount(mnt):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"cachefs did not mount; see {work / 'cachefs.log'}")
        time.sleep(0.05)
    return proc


def read(path: Path, rate: float, rng: random.Random | None = None, pieces: int = 0) -> None:
    """Read *path* with O_DIRECT at about *rate* bytes/s, 1 MiB at a time: sequentially,
    or *pieces* random 1 MiB pieces with *rng*."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    try:
        size = os.fstat(fd).st_size
        offsets = (
            [rng.randrange(0, size - MiB) for _ in range(pieces)]
            if rng is not None
            else list(range(0, size, MiB))
        )
        for offset in offsets:
            started = time.monotonic()
            os.pread(fd, MiB, offset)
            time.sleep(max(0.0, MiB / rate - (time.monotonic() - started)))
    finally:
        os.close(fd)


def workload(mnt: Path) -> None:
    time.sleep(4)  # idle first: the panels start flat
    for path in sorted(mnt.rglob("*")):  # a library scan: listings, sidecars, artwork
        if path.suffix in (".nfo", ".jpg"):
            path.read_bytes()
    season = mnt / "Shows" / "Open Movie Show" / "Season 01"
    for episode in range(1, 6):  # a binge, in order: the next episode is prefetched
        read(season / f"S01E{episode:02d}.mkv", rate=3 * MiB)
    for episode in (1, 2, 3):  # watched again
        read(season / f"S01E{episode:02d}.mkv", rate=6 * MiB)
    rng = random.Random(5)
    films = sorted(mnt.glob("Movies/*/movie.mkv"))
    for film in films:  # seeking around in films, twice
        read(film, rate=4 * MiB, rng=rng, pieces=10)
    for film in films:
        read(film, rate=4 * MiB, rng=rng, pieces=10)
    time.sleep(4)


# -- scraping -----------------------------------------------------------------------------


def scrape(port: int) -> dict[str, list[tuple[dict[str, str], float]]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return out


def record(port: int, mnt: Path) -> list[dict[str, Any]]:
    """Scrape every second while the workload runs in a thread; the raw scrapes."""
    done = threading.Event()
    failure: list[BaseException] = []

    def run() -> None:
        try:
            workload(mnt)
        except BaseException as exc:
            failure.append(exc)
        finally:
            done.set()

    thread = threading.Thread(target=run)
    thread.start()
    scrapes = []
    while True:
        t = time.time()
        scrapes.append({"t": round(t, 3), "samples": scrape(port)})
        if done.is_set():
            break
        time.sleep(max(0.0, 1.0 - (time.time() - t)))
    thread.join()
    if failure:
        raise failure[0]
    return scrapes


def as_promql(scrapes: list[dict[str, Any]]) -> list[promql.Scrape]:
    return [
        (
            s["t"],
            {
                (name, frozenset(labels.items())): value
                for name, samples in s["samples"].items()
                for labels, value in samples
            },
        )
        for s in scrapes
    ]


# -- drawing ------------------------------------------------------------------------------

DARK, PANEL, TEXT, GRID = "#111217", "#181b1f", "#ccccdc", "#2c3235"
PALETTE = ["#73bf69", "#f2cc0c", "#5794f2", "#ff9830", "#f2495c", "#b877d9", "#8ab8ff"]
# one colour per tier (and the origin) in every panel, as Grafana overrides would give
NAMED = {"ram": "#f2cc0c", "ssd": "#5794f2", "hdd": "#73bf69", "origin": "#f2495c"}


def colour(name: str, i: int) -> str:
    first = name.split(" ")[0]
    if first in NAMED:
        return NAMED[first] if "miss" not in name and "evict" not in name else _dim(NAMED[first])
    return PALETTE[i % len(PALETTE)]


def _dim(hex_colour: str) -> str:
    r, g, b = (int(hex_colour[i : i + 2], 16) for i in (1, 3, 5))
    return f"#{r // 2:02x}{g // 2:02x}{b // 2:02x}"


def legend(fmt: str, labels: promql.Labels) -> str:
    text = fmt
    for key, value in labels:
        text = text.replace("{{" + key + "}}", value)
    return text or ", ".join(f"{k}={v}" for k, v in sorted(labels)) or "value"


def unit_scale(unit: str, values: list[float]) -> tuple[float, str]:
    finite = [abs(v) for v in values if not math.isnan(v)]
    top = max(finite, default=0.0)
    if unit in ("bytes", "Bps"):
        for div, name in ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
            if top >= div:
                return div, name + ("/s" if unit == "Bps" else "")
        return 1, "B" + ("/s" if unit == "Bps" else "")
    if unit == "s":
        return (1e-3, "ms") if top < 1 else (1, "s")
    if unit == "percentunit":
        return 0.01, "%"
    if unit == "ops":
        return 1, "/s"
    return 1, ""


def draw_timeseries(ax: Any, panel: dict[str, Any], times: list[float], data: list) -> None:
    unit = panel["fieldConfig"]["defaults"].get("unit", "")
    overrides = {
        o["matcher"]["options"]: {p["id"]: p["value"] for p in o["properties"]}
        for o in panel["fieldConfig"].get("overrides", [])
    }
    right = None
    left_values = [v for name, values in data if name not in overrides for v in values]
    scale, suffix = unit_scale(unit, left_values)
    for i, (name, values) in enumerate(data):
        color = colour(name, i)
        target, s = ax, scale
        if name in overrides:
            right = right or ax.twinx()
            target = right
            s, right_suffix = unit_scale(overrides[name].get("unit", unit), values)
            right.set_ylabel(right_suffix, color=TEXT, fontsize=7)
            right.tick_params(colors=TEXT, labelsize=7)
        dashed = "miss" in name or "evict" in name
        target.plot(
            times,
            [v / s for v in values],
            color=color,
            linewidth=1.2,
            linestyle="--" if dashed else "-",
            label=name,
        )
    ax.set_ylabel(suffix, color=TEXT, fontsize=7)
    ax.grid(color=GRID, linewidth=0.5)
    handles = [h for a in (ax, right) if a is not None for h in a.get_legend_handles_labels()[0]]
    if handles:
        ax.legend(
            handles=handles,
            loc="upper left",
            fontsize=6.5,
            frameon=False,
            labelcolor=TEXT,
            ncol=min(4, len(handles)),
        )
    ax.set_xlim(times[0], times[-1])
    ax.set_ylim(bottom=0)


def draw_stat(ax: Any, panel: dict[str, Any], value: float) -> None:
    defaults = panel["fieldConfig"]["defaults"]
    unit = defaults.get("unit", "")
    text, color = format_value(unit, value, defaults), "#3274d9"
    for mapping in defaults.get("mappings", []):
        hit = mapping["options"].get(str(int(value))) if not math.isnan(value) else None
        if hit:
            text, color = hit["text"], {"green": "#56a64b", "red": "#e02f44"}[hit["color"]]
    steps = defaults.get("thresholds", {}).get("steps")
    if steps and not defaults.get("mappings") and not math.isnan(value):
        for step in steps:
            if step["value"] is None or value >= step["value"]:
                color = {"green": "#56a64b", "red": "#e02f44", "orange": "#ff780a"}[step["color"]]
    ax.set_facecolor(color)
    ax.text(0.5, 0.42, text, ha="center", va="center", fontsize=17, color="white", weight="bold")


def format_value(unit: str, value: float, defaults: dict[str, Any]) -> str:
    if math.isnan(value):
        return "No data"
    if unit == "percentunit":
        return f"{value * 100:.{defaults.get('decimals', 1)}f}%"
    if unit == "bytes":
        scale, suffix = unit_scale("bytes", [value])
        return f"{value / scale:.1f} {suffix}"
    if unit == "s":
        return f"{value:.0f} s" if value < 120 else f"{value / 60:.1f} min"
    return f"{value:.0f}"


def draw_bargauge(ax: Any, data: list) -> None:
    names = [name for name, _ in data]
    values = [next((v for v in reversed(vals) if not math.isnan(v)), 0.0) for _, vals in data]
    colors = ["#56a64b" if v < 0.7 else "#ff780a" if v < 0.9 else "#e02f44" for v in values]
    ax.barh(names, [1.0] * len(names), color=GRID)
    ax.barh(names, values, color=colors)
    for i, v in enumerate(values):
        ax.text(1.0, i, f" {v * 100:.1f}%", va="center", ha="left", color=TEXT, fontsize=8)
    ax.set_xlim(0, 1.18)
    ax.invert_yaxis()
    ax.set_xticks([])


def render(dashboard: dict[str, Any], scrapes: list[promql.Scrape], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in dashboard["panels"])
    times = [t - scrapes[0][0] for t, _ in scrapes]  # seconds into the workload
    fig = plt.figure(figsize=(16, rows * 0.5 + 0.8), facecolor=DARK)
    grid = fig.add_gridspec(
        rows, 24, left=0.03, right=0.97, top=0.95, bottom=0.04, hspace=1.9, wspace=0.9
    )
    fig.suptitle(
        "cachefs  (mount/grafana-cachefs.json, drawn with matplotlib from "
        f"{len(scrapes)} scrapes of a running mount, {times[-1]:.0f} s)",
        color=TEXT,
        fontsize=11,
        x=0.03,
        ha="left",
    )
    for panel in dashboard["panels"]:
        pos = panel["gridPos"]
        ax = fig.add_subplot(
            grid[pos["y"] : pos["y"] + pos["h"], pos["x"] : pos["x"] + pos["w"]],
            facecolor=PANEL,
        )
        ax.set_title(panel["title"], color=TEXT, fontsize=9, loc="left")
        ax.tick_params(colors=TEXT, labelsize=7)
        for spine in ax.spines.values():
            spine.set_color(GRID)
        data = []
        for target in panel["targets"]:
            series = promql.evaluate(target["expr"], scrapes, RATE_INTERVAL)
            for labels, values in sorted(series.items(), key=lambda kv: sorted(kv[0])):
                data.append((legend(target["legendFormat"], labels), values))
        if panel["type"] == "timeseries":
            draw_timeseries(ax, panel, times, data)
            if pos["y"] + pos["h"] == rows:
                ax.set_xlabel("seconds into the workload", color=TEXT, fontsize=7)
        elif panel["type"] == "stat":
            ax.set_xticks([])
            ax.set_yticks([])
            value = data[0][1][-1] if data else math.nan
            draw_stat(ax, panel, value)
        elif panel["type"] == "bargauge":
            draw_bargauge(ax, data)
        else:
            raise ValueError(f"panel type {panel['type']} is not drawn")
    fig.savefig(out, dpi=110, facecolor=DARK)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "dashboard.png")
    parser.add_argument("--scrapes", type=Path, help="also write the raw scrapes here (JSON)")
    parser.add_argument("--from-scrapes", type=Path, help="draw from saved scrapes")
    args = parser.parse_args()
    dashboard = json.loads(DASHBOARD.read_text())
    if args.from_scrapes:
        raw = json.loads(args.from_scrapes.read_text())
    else:
        with tempfile.TemporaryDirectory(prefix="cachefs-dashboard-") as tmp:
            work = Path(tmp)
            build_origin(work / "origin")
            port = free_port()
            proc = mount(work, port)
            try:
                raw = record(port, work / "mnt")
            finally:
                subprocess.run(["fusermount3", "-u", str(work / "mnt")], check=False)
                proc.wait(timeout=60)
    if args.scrapes:
        args.scrapes.write_text(json.dumps(raw))
    render(dashboard, as_promql(raw), args.out)
    print(f"{args.out}: {len(dashboard['panels'])} panels from {len(raw)} scrapes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
