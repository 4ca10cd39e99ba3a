"""``cachefs simulate``: how big should a tier be? Replay a trace and see.

The replay runs through the same tier and policy code the mount uses
(cachefs.data.simulate), at the sizes given:

    cachefs simulate TRACE... --size N [--size M ...] [--objects] [--tier ram|ssd|hdd] --json
    cachefs simulate TRACE --ram 512MiB --ssd 5GiB --ssd 20GiB --hdd 50GiB
    cachefs simulate TRACE --size 1% --size 5% --size 10% --compare --plot curve.png

``--size`` simulates one tier per size with that tier's configured policy
(``tiers.<tier>.eviction``; for ram, ``tiers.ram.scan_resistant``), so
``--config`` and ``-o tiers.ssd.eviction=lru`` apply. A size is bytes
(``512MiB``, ``1000000``), objects with ``--objects`` (capacity counted in
objects, for traces without sizes), or ``N%`` of the trace's working set.
``--ram/--ssd/--hdd`` simulate the whole stack instead (each may be given
several times: every combination is run); new objects go to the home tier of
their content type, as the read path stores them: ``--type``'s, or, for the
mount's own access log (``stats.access_log``), each chunk's own.

``--compare`` runs libCacheSim's reference policies beside the replay. With
``--size``: each policy as one cache of that size. With the stack, twice: one
cache of the stack's total size (RAM + SSD + HDD) fed the whole trace, beside
the stack's miss ratios (what the same bytes would do as a single cache), and,
per tier, one cache of the tier's size fed the requests that reached that tier
in the replay, beside the tier's hit ratios (how its policy does in its place).

TRACE is a CSV file, or several read as one (``access.csv.1 access.csv``, an
access log and the part rotated before it). An access log also says where the
mount found each chunk: that is printed beside the replay (``recorded``).
"""

from __future__ import annotations

import itertools
import json
import sys
from collections.abc import Sequence
from typing import Any

import click

from cachefs.app.mount import parse_mount_options
from cachefs.config import (
    CONTENT_TYPES,
    TIER_NAMES,
    Config,
    ConfigError,
    format_size,
    load_config,
    parse_size,
)
from cachefs.data import simulate as sim


def _fail(message: str, code: int = 2) -> None:
    click.echo(f"cachefs: error: {message}", err=True)
    sys.exit(code)


def _sizes(values: Sequence[str], trace: sim.Trace, objects: bool, what: str) -> list[int]:
    out = []
    for value in values:
        try:
            size = sim.size_in_units(value, trace, objects, parse_size)
        except ValueError as exc:
            _fail(f"{what} {value!r}: {exc}")
        if size <= 0:
            _fail(f"{what} {value!r}: must be greater than 0")
        out.append(size)
    return out


def _shown(n: int, objects: bool) -> str:
    return f"{n} objects" if objects else format_size(n, exact=False)


@click.command("simulate")
@click.argument(
    "trace_paths",
    metavar="TRACE...",
    nargs=-1,
    required=True,
    type=click.Path(exists=True, dir_okay=False),
)
@click.option("--size", "sizes", multiple=True, metavar="N", help="A tier size (repeatable).")
@click.option("--objects", is_flag=True, help="Capacity counted in objects, not bytes.")
@click.option(
    "--tier", type=click.Choice(TIER_NAMES), default="ssd", show_default=True, help="With --size."
)
@click.option("--ram", "ram", multiple=True, metavar="SIZE", help="Whole stack: the RAM tier.")
@click.option("--ssd", "ssd", multiple=True, metavar="SIZE", help="Whole stack: the SSD tier.")
@click.option("--hdd", "hdd", multiple=True, metavar="SIZE", help="Whole stack: the HDD tier.")
@click.option(
    "--type",
    "content_type",
    type=click.Choice(CONTENT_TYPES),
    default=None,
    help=(
        "Whole stack: the objects' content type (its home tier and keep_weight); "
        "default: an access log's content_type column, else user_data."
    ),
)
@click.option(
    "--compare",
    is_flag=True,
    help=(
        "Also run libCacheSim's reference policies: with --size, one cache of each size; "
        "with the stack, one cache of its total size (RAM+SSD+HDD) on the whole trace, "
        "and one of each tier's size on the requests that reached that tier: the bars "
        "for the stack's misses and for each tier's policy in its place."
    ),
)
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), help="Miss-ratio curve PNG.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--config", "config_path", type=click.Path(), help="TOML config file.")
@click.option("-o", "options", multiple=True, help="Config overrides as dotted.key=value.")
def simulate_command(
    trace_paths: tuple[str, ...],
    sizes: tuple[str, ...],
    objects: bool,
    tier: str,
    ram: tuple[str, ...],
    ssd: tuple[str, ...],
    hdd: tuple[str, ...],
    content_type: str | None,
    compare: bool,
    plot_path: str | None,
    as_json: bool,
    config_path: str | None,
    options: tuple[str, ...],
) -> None:
    """Replay an access trace (CSV timestamp,obj_id,size, or a mount's stats.access_log)
    through cachefs's tiers.

    Prints per size: requests, miss ratio and byte miss ratio.
    """
    stack = bool(ram or ssd or hdd)
    if stack == bool(sizes):
        _fail("give --size (one tier) or --ram/--ssd/--hdd (the whole stack), not both")
    try:
        opts = parse_mount_options(list(options), config_path)
        cfg = load_config(opts.config_path, opts.overrides)
    except ConfigError as exc:
        _fail(str(exc), exc.exit_code)
    if compare:
        try:
            sim.libcachesim()
        except sim.ReferencesUnavailable as exc:
            _fail(f"--compare: {exc}", 1)
    if plot_path is not None:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            _fail("--plot needs matplotlib: pip install matplotlib (or -e '.[bench]')", 1)
    try:
        trace = sim.read_trace(*trace_paths)
    except (OSError, sim.TraceError) as exc:
        _fail(str(exc), 1)
    trace_path = " ".join(trace_paths)
    if not len(trace):
        _fail(f"{trace_path}: no requests", 1)

    if stack:
        results = _run_stack(trace, cfg, ram, ssd, hdd, content_type, objects, compare)
    else:
        results = _run_tier(trace, cfg, tier, _sizes(sizes, trace, objects, "--size"), objects)
        if compare:
            for result in results:
                result["reference"] = {
                    name: _brief(sim.simulate_reference(trace, result["size"], name, objects))
                    for name in sim.REFERENCES
                }
    for result in results:
        result.pop("cpu_us_per_request", None)  # machine-dependent: bench/policies.py reports it
    if plot_path is not None:
        _plot(plot_path, results, objects, stack, trace_path)
    recorded = _recorded(trace)
    if as_json:
        click.echo(json.dumps({"results": results} | recorded, indent=1))
    else:
        if recorded:
            _print_recorded(recorded["recorded"])
        _print_table(results, objects, stack)


def _recorded(trace: sim.Trace) -> dict[str, Any]:
    """What an access log says the mount did (its tier column), beside the replay."""
    if not trace.served:
        return {}
    total = sum(trace.served.values())
    return {
        "recorded": {
            "requests": total,
            "served": dict(sorted(trace.served.items())),
            "miss_ratio": trace.served.get("origin", 0) / total,
        }
    }


def _print_recorded(recorded: dict[str, Any]) -> None:
    total = recorded["requests"]
    shares = "  ".join(
        f"{name} {count / total:.1%}"
        for name in (*TIER_NAMES, "origin")
        if (count := recorded["served"].get(name))
    )
    click.echo(
        f"recorded by the mount: {total} requests, miss ratio {recorded['miss_ratio']:.4f}"
        f"  ({shares})"
    )


def _brief(result: dict[str, Any]) -> dict[str, float]:
    return {"miss_ratio": result["miss_ratio"], "byte_miss_ratio": result["byte_miss_ratio"]}


def _run_tier(
    trace: sim.Trace, cfg: Config, tier: str, sizes: list[int], objects: bool
) -> list[dict[str, Any]]:
    tier_cfg = cfg.tiers[tier]
    return [
        sim.simulate_tier(
            trace,
            size,
            tier=tier,
            eviction=tier_cfg.eviction,
            scan_resistant=cfg.tiers["ram"].scan_resistant,
            objects=objects,
        )
        for size in sizes
    ]


def _run_stack(
    trace: sim.Trace,
    cfg: Config,
    ram: tuple[str, ...],
    ssd: tuple[str, ...],
    hdd: tuple[str, ...],
    content_type: str | None,
    objects: bool,
    compare: bool = False,
) -> list[dict[str, Any]]:
    def home_of(name: str) -> str:  # ChunkCache.home_tier: a "ram" type lives on the SSD
        tier = cfg.content_types[name].default_tier
        return "ssd" if tier == "ram" else tier

    policy = cfg.content_types[content_type or "user_data"]
    home = home_of(policy.name)
    # Each chunk's own type, from an access log, unless --type says otherwise.
    types = (
        {name: (home_of(name), cfg.content_types[name].keep_weight) for name in CONTENT_TYPES}
        if content_type is None and trace.has_types()
        else {}
    )
    combos = itertools.product(
        _sizes(ram, trace, objects, "--ram") or [0],
        _sizes(ssd, trace, objects, "--ssd") or [0],
        _sizes(hdd, trace, objects, "--hdd") or [0],
    )
    results = []
    for r, s, h in combos:
        stack_cfg = sim.StackConfig(
            ram=r,
            ssd=s,
            hdd=h,
            scan_resistant=cfg.tiers["ram"].scan_resistant,
            ssd_eviction=cfg.tiers["ssd"].eviction,
            hdd_eviction=cfg.tiers["hdd"].eviction,
            home=home,
            weight=policy.keep_weight,
            promote_threshold=cfg.prediction.promote_threshold,
            promote_move_cost=cfg.prediction.promote_move_cost,
            promote_rewrites_per_day=cfg.prediction.promote_rewrites_per_day,
            objects=objects,
            types=types,
        )
        run = sim.compare_stack if compare else sim.simulate_stack
        results.append(run(trace, stack_cfg))
    return results


def _print_table(results: list[dict[str, Any]], objects: bool, stack: bool) -> None:
    for r in results:
        if stack:
            where = ", ".join(
                f"{name} {_shown(r[name], objects)}" for name in TIER_NAMES if r[name]
            )
            tiers = "  ".join(f"{name} hits {t['hit_ratio']:.1%}" for name, t in r["tiers"].items())
            click.echo(
                f"{where}: {r['requests']} requests, miss ratio {r['miss_ratio']:.4f}, "
                f"byte miss ratio {r['byte_miss_ratio']:.4f}  ({tiers}; "
                f"{r['promotions']} promotions, {r['demotions']} demotions)"
            )
            if "reference" in r:
                _print_stack_references(r, objects)
            continue
        line = (
            f"{_shown(r['size'], objects):>14}: {r['requests']} requests, "
            f"miss ratio {r['miss_ratio']:.4f}, byte miss ratio {r['byte_miss_ratio']:.4f}"
        )
        refs = r.get("reference")
        if refs:
            shown = (f"{name} {ref['miss_ratio']:.4f}" for name, ref in refs.items())
            line += "  | " + " ".join(shown)
        click.echo(line)


def _print_stack_references(r: dict[str, Any], objects: bool) -> None:
    """Under a stack's line: the one-cache references, then each tier's."""
    shown = " ".join(f"{name} {ref['miss_ratio']:.4f}" for name, ref in r["reference"].items())
    click.echo(f"  one cache of {_shown(r['reference_size'], objects)}: miss ratio {shown}")
    for name, t in r["tiers"].items():
        refs = " ".join(f"{p} {ref['hit_ratio']:.1%}" for p, ref in t["reference"].items())
        size = _shown(r[name], objects)
        click.echo(f"  {name} {size}, its requests: hits {t['hit_ratio']:.1%} | {refs or '-'}")


def _plot(path: str, results: list[dict[str, Any]], objects: bool, stack: bool, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    if stack:
        varying = [n for n in TIER_NAMES if len({r[n] for r in results}) > 1] or ["ssd"]
        axis = varying[0]
        xs = [r[axis] for r in results]
        ax.plot(xs, [r["miss_ratio"] for r in results], marker="o", label="cachefs (stack)")
        for name in results[0].get("reference", {}):  # one cache of the stack's total
            ys = [r["reference"][name]["miss_ratio"] for r in results]
            ax.plot(xs, ys, marker=".", lw=1, label=f"{name} (one cache, stack's total)")
        ax.set_xlabel(f"{axis} tier size ({'objects' if objects else 'bytes'})")
    else:
        xs = [r["size"] for r in results]
        ax.plot(xs, [r["miss_ratio"] for r in results], marker="o", lw=2, label="cachefs")
        for name in results[0].get("reference", {}):
            ys = [r["reference"][name]["miss_ratio"] for r in results]
            ax.plot(xs, ys, marker=".", lw=1, label=name)
        ax.set_xlabel(f"tier size ({'objects' if objects else 'bytes'})")
    ax.set_ylabel("miss ratio")
    ax.set_xscale("log")
    ax.set_title(f"miss-ratio curve: {title}", fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
