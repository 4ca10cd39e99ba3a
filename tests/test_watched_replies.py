"""The timeouts each reply gives the kernel, and what the kernel is told, handlers called
in-process over a real origin with a real inotify watch (as in test_operations).

Entries confirmed under a watch that is read as it reports get
``mount.watched_timeout``; everything else the short timeouts. Every change the
watch reports, and every way a watch stops vouching (a queue overflow, a failed
reader, the origin back online), reaches the kernel as invalidations.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyfuse3
import pytest
import trio

from cachefs.app import compose
from cachefs.common import supervise
from cachefs.fuse.inodes import ROOT_INODE
from cachefs.meta.inotify import IN_Q_OVERFLOW, WatchEvent

from . import test_operations
from .test_operations import CTX, Build, lookup_path, serving

build = test_operations.build  # the fixture: the mount built in-process over `origin`

LONG = 3600.0  # mount.watched_timeout's default
SHORT = 1.0  # mount.attr_timeout / entry_timeout, metadata.revalidate_after
WAIT = 5.0


@pytest.fixture
def origin(tmp_path: Path) -> Path:
    root = tmp_path / "origin"
    (root / "Show" / "Season 1").mkdir(parents=True)
    for name in ("a.nfo", "b.nfo", "c.nfo", "d.nfo", "e.nfo"):
        (root / "Show" / name).write_bytes(name.encode() * 10)
    (root / "Show" / "Season 1" / "e01.mkv").write_bytes(b"x" * 5000)
    (root / "notes.txt").write_bytes(b"hello\n")
    return root


@dataclass
class Kernel:
    """The kernel side: readdir replies with their attributes, invalidations received."""

    replies: list[tuple[bytes, Any]] = field(default_factory=list)
    entries: list[tuple[int, bytes]] = field(default_factory=list)
    inodes: list[tuple[int, bool]] = field(default_factory=list)  # (inode, attr_only)


@dataclass
class Token:
    room: int = 1000  # entries the reply buffer takes


@pytest.fixture
def kernel(monkeypatch: pytest.MonkeyPatch) -> Kernel:
    seen = Kernel()

    def readdir_reply(token: Token, name: bytes, attrs: Any, next_id: int) -> bool:
        if token.room <= 0:
            return False
        token.room -= 1
        seen.replies.append((name, attrs))
        return True

    def invalidate_inode(inode: int, attr_only: bool = False) -> None:
        seen.inodes.append((inode, attr_only))

    monkeypatch.setattr(pyfuse3, "readdir_reply", readdir_reply)
    monkeypatch.setattr(pyfuse3, "invalidate_entry", lambda p, n, *a: seen.entries.append((p, n)))
    monkeypatch.setattr(pyfuse3, "invalidate_inode", invalidate_inode)
    return seen


def timeouts(attrs: Any) -> tuple[float, float]:
    return attrs.entry_timeout, attrs.attr_timeout


async def until(condition: Callable[[], bool]) -> None:
    with trio.fail_after(WAIT):
        while not condition():
            await trio.sleep(0.01)


async def reporting(parts: compose.Mount) -> None:
    await until(lambda: parts.detector.reporting)


async def lookup(parts: compose.Mount, path: str) -> Any:
    parent, _, name = path.rpartition("/")
    inode = await lookup_path(parts, parent) if parent else ROOT_INODE
    return await parts.fs.lookup(inode, name.encode(), CTX)


async def list_all(parts: compose.Mount, path: str, kernel: Kernel) -> dict[bytes, Any]:
    fs = parts.fs
    fh = await fs.opendir(await lookup_path(parts, path), CTX)
    kernel.replies.clear()
    await fs.readdir(fh, 0, Token())
    await fs.releasedir(fh)
    return dict(kernel.replies)


def revalidations(parts: compose.Mount) -> int:
    return int(parts.report()["metadata_revalidations"])


def test_entries_under_a_watch_get_the_long_timeouts(build: Build, kernel: Kernel) -> None:
    parts = build()

    async def main() -> None:
        async with serving(parts):
            await reporting(parts)
            listed = await list_all(parts, "Show", kernel)
            assert {timeouts(a) for a in listed.values()} == {(LONG, LONG)}
            nfo = await lookup(parts, "Show/a.nfo")
            assert timeouts(nfo) == (LONG, LONG)
            assert timeouts(await parts.fs.getattr(nfo.st_ino, CTX)) == (LONG, LONG)
            assert timeouts(await lookup(parts, "Show/Season 1")) == (LONG, LONG)
            # The root lies in no watched directory.
            assert timeouts(await parts.fs.getattr(ROOT_INODE, CTX)) == (SHORT, SHORT)

    trio.run(main)


@pytest.mark.parametrize(
    "options",
    [{"metadata.watch": "off"}, {"metadata.watch": "poll"}, {"mount.watched_timeout": "0"}],
    ids=["watch-off", "poll", "watched_timeout-0"],
)
def test_without_a_watch_replies_keep_the_short_timeouts(
    build: Build, kernel: Kernel, options: dict[str, str]
) -> None:
    parts = build(**options)

    async def main() -> None:
        async with serving(parts):
            await trio.sleep(0.05)  # the tasks there are have started
            listed = await list_all(parts, "Show", kernel)
            assert {timeouts(a) for a in listed.values()} == {(SHORT, SHORT)}
            nfo = await lookup(parts, "Show/a.nfo")
            assert timeouts(nfo) == (SHORT, SHORT)
            assert timeouts(await parts.fs.getattr(nfo.st_ino, CTX)) == (SHORT, SHORT)

    trio.run(main)


def test_a_hard_linked_file_keeps_the_short_timeouts(
    build: Build, kernel: Kernel, origin: Path
) -> None:
    """A change through its other name would reach no watch of this directory."""
    os.link(origin / "Show" / "a.nfo", origin / "a-link.nfo")
    parts = build()

    async def main() -> None:
        async with serving(parts):
            await reporting(parts)
            assert timeouts(await lookup(parts, "Show/a.nfo")) == (SHORT, SHORT)
            assert timeouts(await lookup(parts, "Show/b.nfo")) == (LONG, LONG)

    trio.run(main)


def test_a_reported_change_reaches_the_kernel_and_is_revalidated(
    build: Build, kernel: Kernel, origin: Path
) -> None:
    parts = build()

    async def main() -> None:
        async with serving(parts):
            await reporting(parts)
            show = await lookup(parts, "Show")
            nfo = await lookup(parts, "Show/a.nfo")
            (origin / "Show" / "new.nfo").write_bytes(b"new")  # a name comes
            os.chmod(origin / "Show" / "a.nfo", 0o600)  # what a name holds changes
            await until(lambda: (nfo.st_ino, True) in kernel.inodes)
            await until(lambda: (show.st_ino, b"new.nfo") in kernel.entries)
            # The directory's own mtime and link count are kept long too.
            assert (show.st_ino, True) in kernel.inodes
            # A chmod moves no name: the kernel keeps the entry (and those below it).
            assert (show.st_ino, b"a.nfo") not in kernel.entries
            before = revalidations(parts)
            again = await lookup(parts, "Show/a.nfo")
            assert again.st_mode & 0o777 == 0o600
            assert revalidations(parts) > before  # asked the origin, not the stale entry
            assert timeouts(again) == (LONG, LONG)  # confirmed under the watch again

    trio.run(main)


def test_a_directory_chmod_leaves_its_subtree_watched(
    build: Build, kernel: Kernel, origin: Path
) -> None:
    parts = build()

    async def main() -> None:
        async with serving(parts):
            await reporting(parts)
            show = await lookup(parts, "Show")
            await list_all(parts, "Show", kernel)
            os.chmod(origin / "Show", 0o700)
            await until(lambda: (show.st_ino, True) in kernel.inodes)
            await lookup(parts, "Show")  # its own entry is revalidated
            before = revalidations(parts)
            nfo = await parts.fs.lookup(show.st_ino, b"b.nfo", CTX)
            assert timeouts(nfo) == (LONG, LONG)
            assert revalidations(parts) == before  # still true under the watch
            assert parts.meta.watched(b"Show/b.nfo")

    trio.run(main)


def test_a_readdir_going_on_with_an_older_listing_replies_short(
    build: Build, kernel: Kernel, origin: Path
) -> None:
    """The listing a handle holds predates a change confirmed since: its attributes
    of the changed entry must not be kept long by the kernel."""
    parts = build()

    async def main() -> None:
        async with serving(parts):
            await reporting(parts)
            fs = parts.fs
            fh = await fs.opendir(await lookup_path(parts, "Show"), CTX)
            await fs.readdir(fh, 0, Token(room=1))  # one entry; the rest comes later
            names = [name for name, _ in parts.meta.listing(b"Show") or []]
            later = names[-1].decode()
            entry = await lookup(parts, f"Show/{later}")
            os.chmod(origin / "Show" / later, 0o600)
            await until(lambda: (entry.st_ino, True) in kernel.inodes)
            assert (await lookup(parts, f"Show/{later}")).st_mode & 0o777 == 0o600
            kernel.replies.clear()
            await fs.readdir(fh, 1, Token())
            await fs.releasedir(fh)
            replies = dict(kernel.replies)
            assert timeouts(replies[later.encode()]) == (SHORT, SHORT)
            others = [a for n, a in replies.items() if n != later.encode()]
            assert others and {timeouts(a) for a in others} == {(LONG, LONG)}

    trio.run(main)


def known_to_kernel(parts: compose.Mount) -> tuple[set[tuple[int, bytes]], set[int]]:
    links, inodes = parts.fs.inodes.names_in([b""])
    return set(links), inodes


def test_a_queue_overflow_drops_every_kernel_copy(build: Build, kernel: Kernel) -> None:
    parts = build()

    async def main() -> None:
        async with serving(parts):
            await reporting(parts)
            await list_all(parts, "Show", kernel)
            await lookup(parts, "Show/Season 1/e01.mkv")
            await lookup(parts, "notes.txt")
            links, inodes = known_to_kernel(parts)
            assert len(links) >= 8
            parts.detector._apply([WatchEvent(None, b"", IN_Q_OVERFLOW)])
            await until(lambda: links <= set(kernel.entries))
            await until(lambda: inodes <= {i for i, attr_only in kernel.inodes if attr_only})
            before = revalidations(parts)
            await lookup(parts, "Show/Season 1/e01.mkv")
            assert revalidations(parts) >= before + 1  # nothing known is trusted unasked

    trio.run(main)


def test_the_origin_back_online_drops_every_kernel_copy(build: Build, kernel: Kernel) -> None:
    parts = build()

    async def main() -> None:
        async with serving(parts):
            await reporting(parts)
            await list_all(parts, "Show", kernel)
            links, inodes = known_to_kernel(parts)
            parts.fs.back_online()
            await until(lambda: links <= set(kernel.entries))
            await until(lambda: inodes <= {i for i, attr_only in kernel.inodes if attr_only})
            before = revalidations(parts)
            await lookup(parts, "Show/c.nfo")
            assert revalidations(parts) >= before + 2  # Show and c.nfo: nothing trusted

    trio.run(main)


def test_a_failed_reader_gives_short_timeouts_until_it_reads_again(
    build: Build, kernel: Kernel, origin: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(supervise, "FIRST_RESTART", 0.3)
    parts = build()
    detector, fs = parts.detector, parts.fs
    real_tell = fs.tell_kernel
    failures = [RuntimeError("a bug in applying events")]

    def tell_kernel(*args: Any) -> None:
        if failures:
            raise failures.pop()
        real_tell(*args)

    async def main() -> None:
        async with serving(parts):
            await reporting(parts)
            await list_all(parts, "Show", kernel)
            links, _ = known_to_kernel(parts)
            monkeypatch.setattr(fs, "tell_kernel", tell_kernel)
            (origin / "Show" / "a.nfo").write_bytes(b"changed")  # its events are lost
            await until(lambda: not detector.reporting)
            assert timeouts(await lookup(parts, "Show/b.nfo")) == (SHORT, SHORT)
            await until(lambda: links <= set(kernel.entries))
            assert (await lookup(parts, "Show/a.nfo")).st_size == len(b"changed")
            await reporting(parts)  # restarted
            assert timeouts(await lookup(parts, "Show/c.nfo")) == (LONG, LONG)

    trio.run(main)


def test_an_origin_change_right_after_our_own_still_reaches_the_kernel(
    build: Build, kernel: Kernel, origin: Path
) -> None:
    """Our own change's event needs no notice; someone else's in the same moment does,
    and with long timeouts the kernel would keep the old name for an hour."""
    parts = build()

    async def main() -> None:
        async with serving(parts):
            await reporting(parts)
            show = await lookup(parts, "Show")
            await lookup(parts, "Show/a.nfo")  # Show is watched from here on
            info, _attrs = await parts.fs.create(show.st_ino, b"ours.txt", 0o644, os.O_RDWR, CTX)
            await parts.fs.release(info.fh)
            await trio.sleep(0.2)  # our own change's events (some came before we noted it)
            kernel.entries.clear()
            os.rename(origin / "Show" / "ours.txt", origin / "Show" / "theirs.txt")
            await until(lambda: (show.st_ino, b"ours.txt") in kernel.entries)

    trio.run(main)
