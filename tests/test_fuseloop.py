"""The busy poll in pyfuse3's wait for requests: unit tests on a pipe, then a real mount."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pyfuse3
import pytest
import trio

from cachefs.fuse import loop as fuseloop
from cachefs.fuse.loop import BusyPoll

from .conftest import DEFAULT_TEST_OPTIONS, MountFactory, is_mounted


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    r, w = os.pipe()
    yield r, w
    os.close(r)
    os.close(w)


async def write_later(fd: int, delay: float) -> None:
    await trio.sleep(delay)
    os.write(fd, b"x")


def test_a_request_that_arrives_while_polling_needs_no_sleep(pipe: tuple[int, int]) -> None:
    r, w = pipe
    busy = BusyPoll(window=5.0)

    async def main() -> float:
        async with trio.open_nursery() as nursery:
            # The writer can only run if the polling loop yields to trio.
            nursery.start_soon(write_later, w, 0.05)
            started = trio.current_time()
            await busy.wait_readable(r)
            return trio.current_time() - started

    waited = trio.run(main)
    assert (busy.caught, busy.slept) == (1, 0)
    assert waited < 2.0  # woken by the write, long before the window ends


def test_after_the_window_the_wait_sleeps_in_epoll(pipe: tuple[int, int]) -> None:
    r, w = pipe
    busy = BusyPoll(window=0.001)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(write_later, w, 0.2)
            await busy.wait_readable(r)

    trio.run(main)
    assert (busy.caught, busy.slept) == (0, 1)


def test_a_readable_fd_returns_at_once(pipe: tuple[int, int]) -> None:
    r, w = pipe
    os.write(w, b"x")
    busy = BusyPoll(window=5.0)
    trio.run(busy.wait_readable, r)
    assert (busy.caught, busy.slept) == (1, 0)


@pytest.mark.parametrize("window", [5.0, 0.001], ids=["while polling", "while sleeping"])
def test_notify_closing_wakes_the_waiter(pipe: tuple[int, int], window: float) -> None:
    r, _ = pipe
    busy = BusyPoll(window)

    async def close_later() -> None:
        await trio.sleep(0.05)
        busy.notify_closing(r)

    async def main() -> None:
        with trio.fail_after(3):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(close_later)
                with pytest.raises(trio.ClosedResourceError):
                    await busy.wait_readable(r)

    trio.run(main)


def test_a_closed_session_is_not_waited_on_again(pipe: tuple[int, int]) -> None:
    r, _ = pipe
    busy = BusyPoll(window=5.0)

    async def main() -> None:
        busy.notify_closing(r)
        with pytest.raises(trio.ClosedResourceError):
            await busy.wait_readable(r)

    trio.run(main)


@pytest.mark.parametrize("window", [5.0, 0.001], ids=["while polling", "while sleeping"])
def test_cancellation_ends_the_wait(pipe: tuple[int, int], window: float) -> None:
    r, _ = pipe
    busy = BusyPoll(window)

    async def main() -> bool:
        with trio.move_on_after(0.05) as scope:
            await busy.wait_readable(r)
        return scope.cancelled_caught

    assert trio.run(main)


@pytest.fixture
def restore_pyfuse3() -> Iterator[None]:
    yield
    fuseloop.uninstall()


@pytest.mark.usefixtures("restore_pyfuse3")
def test_install_replaces_only_the_wait() -> None:
    busy = fuseloop.install(50e-6)
    if fuseloop.usable_cpus() < 2:
        assert busy is None
        return
    assert busy is not None
    assert pyfuse3.trio.lowlevel.wait_readable == busy.wait_readable  # type: ignore[attr-defined]
    assert pyfuse3.trio.lowlevel.notify_closing == busy.notify_closing  # type: ignore[attr-defined]
    # Everything else pyfuse3 takes from trio is trio's own.
    assert pyfuse3.trio.Lock is trio.Lock  # type: ignore[attr-defined]
    assert pyfuse3.trio.open_nursery is trio.open_nursery  # type: ignore[attr-defined]
    assert pyfuse3.trio.lowlevel.current_task is trio.lowlevel.current_task  # type: ignore[attr-defined]
    assert trio.lowlevel.wait_readable is not busy.wait_readable  # trio itself untouched
    again = fuseloop.install(50e-6)  # a second mount in the same process
    assert again is not None
    assert pyfuse3.trio.lowlevel.wait_readable == again.wait_readable  # type: ignore[attr-defined]
    assert pyfuse3.trio.Lock is trio.Lock  # type: ignore[attr-defined]
    fuseloop.uninstall()
    assert pyfuse3.trio is trio  # type: ignore[attr-defined]


@pytest.mark.usefixtures("restore_pyfuse3")
def test_install_is_off_for_zero_and_on_one_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    assert fuseloop.install(0) is None
    assert pyfuse3.trio is trio  # type: ignore[attr-defined]
    monkeypatch.setattr(fuseloop, "usable_cpus", lambda: 1)
    assert fuseloop.install(50e-6) is None
    assert pyfuse3.trio is trio  # type: ignore[attr-defined]


@pytest.mark.usefixtures("restore_pyfuse3")
def test_install_leaves_a_pyfuse3_without_the_hook_alone(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(fuseloop, "usable_cpus", lambda: 2)
    monkeypatch.delattr(pyfuse3, "trio")
    assert fuseloop.install(50e-6) is None
    assert not hasattr(pyfuse3, "trio")
    assert "busy_poll is off" in caplog.text


def scan(root: Path) -> int:
    """What a media server's scan does: walk, lstat, read the head of every file."""
    read = 0
    for dirpath, _, files in os.walk(root):
        for name in files:
            path = os.path.join(dirpath, name)
            os.lstat(path)
            with open(path, "rb") as f:
                read += len(f.read(4096))
    return read


@pytest.fixture
def library(origin: Path) -> Path:
    for d in range(20):
        (origin / f"show{d}").mkdir()
        for f in range(10):
            (origin / f"show{d}" / f"ep{f}.nfo").write_bytes(b"<episode/>" * (d + f + 1))
    return origin


@pytest.mark.skipif(fuseloop.usable_cpus() < 2, reason="busy polling is off on one CPU")
def test_a_mount_polls_for_requests_and_answers_them(
    library: Path, mount_factory: MountFactory
) -> None:
    mounted = mount_factory(library)
    expected = sum(len(p.read_bytes()[:4096]) for p in library.rglob("*.nfo"))
    assert scan(mounted.mnt) == expected
    stats = mounted.stats()
    assert stats["fuse_busy_poll"] == "50us"
    # ~800 round trips: a scanner asks again within 50 µs often enough.
    assert stats["fuse_busy_poll_caught"] > 0
    assert stats["fuse_busy_poll_slept"] > 0  # the daemon idles between the test's steps


def test_busy_poll_off(library: Path, mount_factory: MountFactory) -> None:
    mounted = mount_factory(library, [*DEFAULT_TEST_OPTIONS, "mount.busy_poll=0"])
    expected = sum(len(p.read_bytes()[:4096]) for p in library.rglob("*.nfo"))
    assert scan(mounted.mnt) == expected
    stats = mounted.stats()
    assert stats["fuse_busy_poll"] == "off"
    assert (stats["fuse_busy_poll_caught"], stats["fuse_busy_poll_slept"]) == (0, 0)


def test_sigterm_unmounts_cleanly(library: Path, mount_factory: MountFactory) -> None:
    # pyfuse3.terminate() wakes its workers through the busy poll's notify_closing.
    mounted = mount_factory(library)
    scan(mounted.mnt)
    mounted.proc.send_signal(signal.SIGTERM)
    try:
        assert mounted.proc.wait(timeout=30) == 0
    except subprocess.TimeoutExpired:
        pytest.fail("the daemon did not exit after SIGTERM")
    assert not is_mounted(mounted.mnt)
    assert "unmounted" in mounted.log() and "clean" in mounted.log()
