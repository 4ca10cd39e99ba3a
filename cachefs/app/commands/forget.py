"""``cachefs forget PATH``: the ``user.cachefs.forget`` xattr."""

from __future__ import annotations

import os

import click

from cachefs.app.commands.mounts import FORGET, UNSTATTED, Failure, Resolver
from cachefs.app.commands.output import console_out, echo_json


@click.command("forget", short_help="Re-read metadata of files or directories at the origin.")
@click.argument("paths", nargs=-1, required=True, type=UNSTATTED, metavar="PATH...")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def forget_command(paths: tuple[str, ...], as_json: bool) -> None:
    """Make the mount ask the origin again about PATH and everything below it:
    attributes, listings and extended attributes it has cached are revalidated at
    their next use, and the kernel is told to drop its copies. For changes made on
    the origin that no watch reported (another machine writing to a NAS, say),
    without waiting for metadata.revalidate_after. Cached chunks stay: a file
    whose version changed is re-read anyway."""
    resolver = Resolver()
    results = []
    for target in [resolver.target(p) for p in paths]:
        try:
            os.setxattr(target.path, FORGET, b"1", follow_symlinks=False)
        except OSError as exc:
            raise Failure(f"{target.given}: cannot forget: {exc.strerror}") from None
        results.append({"path": target.path})
    if as_json:
        echo_json(results)
        return
    console = console_out()
    for result in results:
        console.print(f"{result['path']}: cached metadata will be re-read at the origin")
