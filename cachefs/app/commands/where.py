"""``cachefs where PATH``: which tiers hold a file's chunks, and a summary per directory."""

from __future__ import annotations

import os
from typing import Any

import click
from rich import box
from rich.table import Table

from cachefs.app.commands.files import RESIDENCY_KEYS, residency, walk
from cachefs.app.commands.mounts import UNSTATTED, Failure, Resolver
from cachefs.app.commands.output import TIERS, console_out, echo_json, percent, ratio, size


@click.command("where", short_help="Which tiers hold the chunks of files, per file and directory.")
@click.argument("paths", nargs=-1, required=True, type=UNSTATTED, metavar="PATH...")
@click.option("--files", "list_files", is_flag=True, help="List every file below a directory.")
@click.option(
    "--depth",
    type=click.IntRange(min=0),
    default=1,
    show_default=True,
    help="Directory levels summarized below each PATH.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON (every file and directory).")
def where_command(paths: tuple[str, ...], list_files: bool, depth: int, as_json: bool) -> None:
    """Where the chunks of each file are: how many of them RAM, the SSD and the HDD
    hold, and how many no tier does (a chunk may be in RAM and on a disk at once).

    A directory gets a summary (its files, chunks, and the share of them each tier
    holds) for itself and its subdirectories down to --depth; --files lists its files.
    """
    resolver = Resolver()
    targets = [resolver.target(p) for p in paths]
    walked = walk(targets)
    files = []
    errors = list(walked.errors)
    for file in walked.files:
        try:
            found = residency(file.path)
        except OSError as exc:
            errors.append(f"{file.path}: {exc.strerror}")
            continue
        files.append(
            {"path": file.path, "size": file.size, "top": file.top.path}
            | {k: int(found.get(k, 0)) for k in (*RESIDENCY_KEYS, "chunk_size")}
        )
    directories = summarize_directories(files, [t.path for t in targets])
    if as_json:
        echo_json({"files": files, "directories": directories, "errors": errors})
    else:
        console = console_out()
        shown = [f for f in files if list_files or f["path"] == f["top"]]
        if shown:
            console.print(_table("file", shown))
        tops = {t.path: t.path.count("/") for t in targets}
        dirs = [d for d in directories if d["path"] in tops or _depth(d, tops) <= depth]
        if dirs:
            console.print(_table("directory", dirs))
        for error in errors:
            click.echo(f"cachefs: {error}", err=True)
    if errors:
        raise SystemExit(1)
    if not files and not directories:
        raise Failure(f"no regular files at {', '.join(paths)}")


def summarize_directories(files: list[dict[str, Any]], tops: list[str]) -> list[dict[str, Any]]:
    """One row per directory at or below a top that is a directory: its files
    (all levels below it) and their chunks per tier."""
    rows: dict[str, dict[str, Any]] = {}
    for file in files:
        top = file["top"]
        if file["path"] == top:
            continue  # a file named on its own has no directory to summarize
        directory = os.path.dirname(file["path"])
        while True:
            row = rows.setdefault(directory, _empty_row(directory, top))
            row["files"] += 1
            row["size"] += file["size"]
            for key in RESIDENCY_KEYS:
                row[key] += file[key]
            if directory == top or directory == "/":
                break
            directory = os.path.dirname(directory)
    for top in tops:  # an empty directory, or one with no regular files, still gets its row
        if top not in rows and os.path.isdir(top):
            rows[top] = _empty_row(top, top)
    return [rows[k] for k in sorted(rows)]


def _empty_row(path: str, top: str) -> dict[str, Any]:
    return {"path": path, "top": top, "files": 0, "size": 0} | dict.fromkeys(RESIDENCY_KEYS, 0)


def _depth(row: dict[str, Any], tops: dict[str, int]) -> int:
    return row["path"].count("/") - tops.get(row["top"], row["top"].count("/"))


def _table(kind: str, rows: list[dict[str, Any]]) -> Table:
    table = Table(box=box.SIMPLE_HEAD, show_edge=False)
    table.add_column(kind, overflow="fold")
    if kind == "directory":
        table.add_column("files", justify="right")
    for column in ("size", "chunks", *TIERS, "cached"):
        table.add_column(column, justify="right", no_wrap=True)
    for row in rows:
        chunks = row["chunks"]
        cells = [row["path"]]
        if kind == "directory":
            cells.append(str(row["files"]))
        cells += [size(row["size"]), str(chunks)]
        cells += [percent(ratio(row[tier], chunks)) for tier in TIERS]
        cells.append(percent(ratio(chunks - row["uncached"], chunks)))
        table.add_row(*cells)
    return table
