"""``cachefs warm PATH... [--tier ram|ssd|hdd]``: read files through the mount so
that they are cached, with a progress bar.

What a user asking for ``--tier ssd`` expects is that afterwards the files are
in the SSD tier, and that nothing else changed: no pin left behind. So:

1. each PATH with no pin (of its own or inherited) is pinned to the tier for
   the duration: cachefs moves the chunks it already holds there at once, and
   writes the ones read from now on there;
2. every regular file below is read, ``--jobs`` files at a time (2: a warm-up
   must not starve the people watching), with O_DIRECT so that the kernel's
   page cache does not answer instead of cachefs;
3. it waits until the tier holds every chunk (chunks reach a disk tier in the
   background), and gives up after ``SETTLE_SECONDS`` without progress (a tier
   too small for what was asked, say);
4. the pins it set are removed (also on Ctrl-C, or an error): the chunks stay
   in the tier and age there like any others.

A PATH that already has a pin keeps it and its files go to their pinned tier;
that is reported. ``kill -9`` of the command in step 2 or 3 leaves the
temporary pin in place: ``cachefs unpin PATH``. Without ``--tier`` the files are
only read: their chunks land where the content type's rules put them.
"""

from __future__ import annotations

import errno
import mmap
import os
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

import click
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from cachefs.app.commands.files import File, residency, walk
from cachefs.app.commands.mounts import PIN, UNSTATTED, Resolver, Target
from cachefs.app.commands.output import console_err, console_out, echo_json, percent, ratio, size
from cachefs.app.commands.pins import pin_of, set_pin
from cachefs.data.pins import PIN_TIERS

BLOCK = 1 << 20  # bytes per read
SETTLE_SECONDS = 10.0  # how long to wait for the tier without a chunk arriving
EXIT_CANCELLED = 130


class Cancelled(Exception):
    pass


@dataclass
class Counts:
    """Progress, shared by the reading threads (under the lock)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    bytes_done: int = 0
    files_done: int = 0
    errors: list[str] = field(default_factory=list)

    def add(self, nbytes: int) -> None:
        with self.lock:
            self.bytes_done += nbytes


@click.command("warm", short_help="Read files into the cache (into one tier with --tier).")
@click.argument("paths", nargs=-1, required=True, type=UNSTATTED, metavar="PATH...")
@click.option("--tier", type=click.Choice(PIN_TIERS), help="Leave the files in this tier.")
@click.option(
    "-j",
    "--jobs",
    type=click.IntRange(1, 16),
    default=2,
    show_default=True,
    help="Files read at once.",
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary.")
def warm_command(paths: tuple[str, ...], tier: str | None, jobs: int, as_json: bool) -> None:
    """Read PATH (files, or every file below directories) through the mount so that
    it is cached; with --tier, until the tier holds all of it. Ctrl-C stops.

    Files already pinned keep their pin; a temporary pin is set (and removed at
    the end) on the others so that their chunks go to --tier.
    """
    resolver = Resolver()
    targets = [resolver.target(p) for p in paths]
    warm = Warm(targets, tier, jobs)
    code = warm.run()
    summary = warm.summary()
    if as_json:
        echo_json(summary)
    else:
        _print_summary(summary)
    for error in summary["errors"]:
        click.echo(f"cachefs: {error}", err=True)
    raise SystemExit(code)


class Warm:
    def __init__(self, targets: list[Target], tier: str | None, jobs: int) -> None:
        self.targets, self.tier, self.jobs = targets, tier, jobs
        self.files: list[File] = []
        self.counts = Counts()
        self.cancel = threading.Event()
        self.cancelled = False
        self.pinned_by_us: list[Target] = []
        self.kept_pins: dict[str, str] = {}  # path -> its own tier, for PATHs pinned elsewhere
        self.in_tier: dict[str, int] | None = None  # measured once the files are read
        self.elsewhere: list[str] = []  # files whose pin sends them to another tier
        self.started = time.monotonic()
        self.finished = self.started

    # -- the steps ---------------------------------------------------------------------

    def run(self) -> int:
        try:
            self._pin_targets()
            walked = walk(self.targets)
            self.files = walked.files
            self.counts.errors.extend(walked.errors)
            self._note_pinned_elsewhere()
            with _progress() as progress:
                self._read_all(progress)
                if self.tier is not None:
                    self._settle(progress)
        except KeyboardInterrupt:
            self.cancel.set()
            self.cancelled = True
        finally:
            # a second Ctrl-C must not leave a temporary pin behind
            previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
            try:
                self._unpin_targets()
            finally:
                signal.signal(signal.SIGINT, previous)
            self.finished = time.monotonic()
        if self.cancelled:
            return EXIT_CANCELLED
        incomplete = self.in_tier is not None and self.in_tier["in_tier"] < self.in_tier["chunks"]
        return 1 if self.counts.errors or incomplete else 0

    def _pin_targets(self) -> None:
        if self.tier is None:
            return
        for target in self.targets:
            current = pin_of(target)
            if current == "none":
                set_pin(target, self.tier)
                self.pinned_by_us.append(target)
            elif current != self.tier:
                self.kept_pins[target.path] = current

    def _unpin_targets(self) -> None:
        while self.pinned_by_us:
            set_pin(self.pinned_by_us.pop(), "none")

    def _note_pinned_elsewhere(self) -> None:
        """Files below a PATH with pins of their own to another tier."""
        if self.tier is None:
            return
        for file in self.files:
            try:
                pin = os.getxattr(file.path, PIN, follow_symlinks=False).decode()
            except OSError:
                continue
            if pin != self.tier:
                self.elsewhere.append(file.path)

    def _read_all(self, progress: Progress) -> None:
        total = sum(f.size for f in self.files)
        label = f"warm -> {self.tier}" if self.tier else "warm"
        task = progress.add_task(label, total=total, files=len(self.files), files_done=0)

        def show(final: bool = False) -> None:
            with self.counts.lock:
                done, files_done = self.counts.bytes_done, self.counts.files_done
                failed = bool(self.counts.errors)
            # a file may have grown or shrunk since it was listed: end at what was read
            complete = final and files_done == len(self.files) and not failed
            total_now = done if complete else total
            progress.update(task, total=total_now, completed=done, files_done=files_done)

        try:
            with ThreadPoolExecutor(self.jobs, thread_name_prefix="warm") as pool:
                pending: set[Future[None]] = {pool.submit(self._read_one, f) for f in self.files}
                try:
                    while pending:
                        _, pending = wait(pending, timeout=0.1, return_when=FIRST_COMPLETED)
                        show()
                except KeyboardInterrupt:
                    self.cancel.set()  # each reader stops after its current block
                    for future in pending:
                        future.cancel()
                    raise
        finally:
            show(final=True)

    def _read_one(self, file: File) -> None:
        if self.cancel.is_set():
            return
        try:
            read_through(file.path, self.counts.add, self.cancel.is_set)
        except Cancelled:
            return
        except OSError as exc:
            with self.counts.lock:
                self.counts.errors.append(f"{file.path}: {exc.strerror}")
                self.counts.files_done += 1
            return
        with self.counts.lock:
            self.counts.files_done += 1

    def _settle(self, progress: Progress) -> None:
        """Wait until the tier holds every chunk of the files read (or no more arrive)."""
        assert self.tier is not None
        watched = [f for f in self.files if f.path not in set(self.elsewhere)]
        task = progress.add_task(
            f"in {self.tier}", total=None, files=len(watched), files_done=0, unit="chunks"
        )
        last_change, last_count = time.monotonic(), -1
        while True:
            chunks = in_tier = complete = 0
            for file in watched:
                try:
                    found = residency(file.path)
                except OSError:
                    continue
                chunks += int(found.get("chunks", 0))
                held = min(int(found.get(self.tier, 0)), int(found.get("chunks", 0)))
                in_tier += held
                complete += held == int(found.get("chunks", 0))
            self.in_tier = {"chunks": chunks, "in_tier": in_tier}
            progress.update(task, total=max(chunks, 1), completed=in_tier, files_done=complete)
            if in_tier >= chunks:
                progress.update(task, total=max(chunks, 1), completed=max(chunks, 1))
                return
            now = time.monotonic()
            if in_tier != last_count:
                last_change, last_count = now, in_tier
            elif now - last_change > SETTLE_SECONDS:
                return
            time.sleep(0.1)

    # -- the report --------------------------------------------------------------------

    def summary(self) -> dict[str, Any]:
        total = sum(f.size for f in self.files)
        with self.counts.lock:
            done, files_done = self.counts.bytes_done, self.counts.files_done
            errors = list(self.counts.errors)
        complete = not self.cancelled and files_done == len(self.files)
        return {
            "tier": self.tier,
            "files": len(self.files),
            "files_done": files_done,
            "bytes": total,
            "bytes_done": done,
            "percent": 100.0 if complete else round(100 * (ratio(done, total) or 0), 1),
            "seconds": round(self.finished - self.started, 3),
            "cancelled": self.cancelled,
            "in_tier": self.in_tier,
            "kept_pins": self.kept_pins,
            "pinned_elsewhere": self.elsewhere,
            "errors": errors,
        }


def read_through(path: str, progress: Callable[[int], None], stop: Callable[[], bool]) -> None:
    """Read a file to its end, bypassing the kernel's page cache (O_DIRECT into an
    aligned buffer; where O_DIRECT is refused, the file's cached pages are
    dropped first). Raises Cancelled when *stop* says so."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECT | os.O_NOFOLLOW)
    except OSError as exc:
        if exc.errno != errno.EINVAL:
            raise
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    try:
        with mmap.mmap(-1, BLOCK) as buffer:
            offset = 0
            while True:
                if stop():
                    raise Cancelled
                n = os.preadv(fd, [buffer], offset)
                if n <= 0:
                    return
                offset += n
                progress(n)
    finally:
        os.close(fd)


class _Amount(ProgressColumn):
    """``1.5MiB/3GiB`` for the reading task, ``7/12 chunks`` for the waiting one."""

    def render(self, task: Task) -> Text:
        if task.fields.get("unit") == "chunks":
            total = "?" if task.total is None else str(int(task.total))
            return Text(f"{int(task.completed)}/{total} chunks")
        return Text(f"{size(task.completed)}/{size(task.total)}")


class _Speed(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        if task.fields.get("unit") == "chunks" or speed is None:
            return Text("")
        return Text(f"{size(speed)}/s")


def _progress() -> Progress:
    """On stderr; on a terminal it is redrawn, elsewhere printed once at the end."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        _Amount(),
        TextColumn("{task.fields[files_done]}/{task.fields[files]} files"),
        _Speed(),
        TimeRemainingColumn(),
        console=console_err(),
    )


def _print_summary(summary: dict[str, Any]) -> None:
    console = console_out()
    verb = "cancelled after reading" if summary["cancelled"] else "read"
    console.print(
        f"{verb} {summary['files_done']} of {summary['files']} files, "
        f"{size(summary['bytes_done'])} of {size(summary['bytes'])} "
        f"({summary['percent']:.1f} %) in {summary['seconds']:.1f} s"
    )
    in_tier = summary["in_tier"]
    if in_tier is not None:
        share = ratio(in_tier["in_tier"], in_tier["chunks"])
        console.print(
            f"{summary['tier']} holds {in_tier['in_tier']} of {in_tier['chunks']} chunks "
            f"({percent(1.0 if share is None else share)})"
        )
    for path, tier in summary["kept_pins"].items():
        console.print(f"{path}: pinned to {tier}, so its files stay there")
    if summary["pinned_elsewhere"]:
        console.print(
            f"{len(summary['pinned_elsewhere'])} files are pinned to another tier and stay there"
        )
