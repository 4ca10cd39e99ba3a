"""``cachefs evict PATH``: the ``user.cachefs.evict`` xattr."""

from __future__ import annotations

import os
import stat

import click

from cachefs.app.commands.mounts import EVICT, UNSTATTED, Failure, Resolver
from cachefs.app.commands.output import console_out, echo_json


@click.command("evict", short_help="Drop the cached chunks of files or directories.")
@click.argument("paths", nargs=-1, required=True, type=UNSTATTED, metavar="PATH...")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def evict_command(paths: tuple[str, ...], as_json: bool) -> None:
    """Drop the cached chunks of PATH from every tier: a file's, or those of every
    file below a directory that the mount knows. Pins stay (the next read fills
    the pinned tier again)."""
    resolver = Resolver()
    targets = [resolver.target(p) for p in paths]
    results = []
    for target in targets:
        try:
            kind = "directory" if stat.S_ISDIR(os.lstat(target.path).st_mode) else "file"
            os.setxattr(target.path, EVICT, b"1", follow_symlinks=False)
        except OSError as exc:
            raise Failure(f"{target.given}: cannot evict: {exc.strerror}") from None
        results.append({"path": target.path, "kind": kind})
    if as_json:
        echo_json(results)
        return
    console = console_out()
    for result in results:
        below = ", every file below it" if result["kind"] == "directory" else ""
        console.print(f"{result['path']}: evicted{below} (from every tier)")
