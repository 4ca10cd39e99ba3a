"""``cachefs pin PATH --tier T`` and ``cachefs unpin PATH``: the ``user.cachefs.pin`` xattr."""

from __future__ import annotations

import os

import click

from cachefs.app.commands.mounts import PIN, UNSTATTED, Failure, Resolver, Target
from cachefs.app.commands.output import console_out, echo_json
from cachefs.data.pins import PIN_TIERS


def set_pin(target: Target, tier: str) -> None:
    """Pin *target* to *tier* ("none": remove its own pin). Returns once the mount
    has moved its cached chunks (setxattr waits for that)."""
    try:
        os.setxattr(target.path, PIN, tier.encode(), follow_symlinks=False)
    except OSError as exc:
        raise Failure(f"{target.given}: cannot set its pin: {exc.strerror}") from None


def pin_of(target: Target) -> str:
    """The pin that applies to *target*: its own or its nearest directory's, or "none"."""
    try:
        return os.getxattr(target.path, PIN, follow_symlinks=False).decode()
    except OSError as exc:
        raise Failure(f"{target.given}: cannot read its pin: {exc.strerror}") from None


@click.command("pin", short_help="Keep files or directories in a tier.")
@click.argument("paths", nargs=-1, required=True, type=UNSTATTED, metavar="PATH...")
@click.option("--tier", required=True, type=click.Choice(PIN_TIERS), help="The tier to keep it in.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def pin_command(paths: tuple[str, ...], tier: str, as_json: bool) -> None:
    """Keep PATH (a file, or every file below a directory) in a tier.

    Its cached chunks move there now, the rest go there when read (`cachefs warm`
    reads them), and none is evicted from it. Pinning fetches nothing.
    """
    resolver = Resolver()
    targets = [resolver.target(p) for p in paths]
    results = []
    for target in targets:
        set_pin(target, tier)
        results.append({"path": target.path, "pin": pin_of(target)})
    if as_json:
        echo_json(results)
        return
    console = console_out()
    for result in results:
        console.print(f"{result['path']}: pinned to {result['pin']}")


@click.command("unpin", short_help="Remove pins.")
@click.argument("paths", nargs=-1, required=True, type=UNSTATTED, metavar="PATH...")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def unpin_command(paths: tuple[str, ...], as_json: bool) -> None:
    """Remove the pin of PATH (its chunks stay cached, and may now be evicted).

    A path below a pinned directory keeps that directory's pin: unpin the
    directory to remove it.
    """
    resolver = Resolver()
    targets = [resolver.target(p) for p in paths]
    results = []
    for target in targets:
        set_pin(target, "none")
        left = pin_of(target)
        results.append({"path": target.path, "pin": left, "inherited": left != "none"})
    if as_json:
        echo_json(results)
        return
    console = console_out()
    for result in results:
        if result["inherited"]:
            console.print(
                f"{result['path']}: no pin of its own, but still pinned to {result['pin']} "
                "by a directory above it (unpin that directory)"
            )
        else:
            console.print(f"{result['path']}: not pinned")
