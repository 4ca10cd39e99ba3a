"""systemd notifications: the sd_notify datagram protocol against real Unix sockets, and a
real mount started with NOTIFY_SOCKET set (READY=1 once it answers, STATUS=, STOPPING=1)."""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from cachefs.app.sdnotify import Notifier, status_line

from .conftest import MountFactory, is_mounted

RECEIVE_TIMEOUT = 30.0  # seconds: generous, a bound on a hang, not a measure


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A datagram socket as systemd binds it for NOTIFY_SOCKET, and its path."""
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(RECEIVE_TIMEOUT)
    try:
        yield sock, path
    finally:
        sock.close()


def fields(datagram: bytes) -> dict[str, str]:
    return dict(line.split("=", 1) for line in datagram.decode().split("\n") if line)


def test_a_notification_is_one_datagram_of_assignments(
    listener: tuple[socket.socket, str],
) -> None:
    sock, path = listener
    notifier = Notifier(path)
    assert notifier.send("READY=1", "STATUS=origin online")
    assert sock.recv(4096) == b"READY=1\nSTATUS=origin online"


def test_an_abstract_socket_is_named_with_an_at_sign() -> None:
    name = f"cachefs-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(RECEIVE_TIMEOUT)
        Notifier("@" + name).stopping()
        assert fields(sock.recv(4096)) == {"STOPPING": "1", "STATUS": "unmounting"}


def test_without_notify_socket_nothing_is_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    notifier = Notifier.from_environment()
    assert not notifier.enabled
    assert not notifier.send("READY=1")


def test_a_listener_gone_away_is_not_an_error(tmp_path: Path) -> None:
    assert not Notifier(str(tmp_path / "nobody")).send("STATUS=x")


def test_stopping_is_said_once(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    notifier = Notifier(path)
    notifier.stopping()
    notifier.stopping()
    notifier.status("after")
    assert fields(sock.recv(4096))["STOPPING"] == "1"
    assert sock.recv(4096) == b"STATUS=after"


def test_the_status_line() -> None:
    report = {
        "origin_state": "offline",
        "origin_offline_reason": "no answer within 5s",
        "tiers": {
            "ram": {"bytes": 32 << 20, "max_size": 512 << 20},
            "ssd": {"bytes": 0, "max_size": 5 << 30},
        },
        "fuse_read_bytes_served": 1000,
        "tier_bytes": {"ram:media": 250},
    }
    assert status_line(report) == (
        "origin offline (no answer within 5s); ram 32MiB/512MiB (6%), ssd 0B/5GiB (0%); "
        "hit ratio 25%"
    )


def test_a_mount_says_ready_once_it_answers_and_stopping_at_unmount(
    origin: Path,
    mount_factory: MountFactory,
    listener: tuple[socket.socket, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sock, path = listener
    (origin / "hello.txt").write_text("hello\n")
    monkeypatch.setenv("NOTIFY_SOCKET", path)  # the daemon inherits it, as from systemd
    m = mount_factory(origin)

    ready = fields(sock.recv(4096))
    assert ready["READY"] == "1"
    # READY=1 means: a request sent now is answered
    assert is_mounted(m.mnt)
    assert (m.mnt / "hello.txt").read_text() == "hello\n"
    assert "MAINPID" not in ready  # -f: the process systemd started is the daemon
    assert ready["STATUS"].startswith("origin online; ram ")
    assert "ssd " in ready["STATUS"] and "hdd " in ready["STATUS"]
    assert m.stats()["origin_state"] == "online"

    subprocess.run(["fusermount3", "-u", str(m.mnt)], check=True)
    while True:  # STATUS= updates may come first
        message = fields(sock.recv(4096))
        if "STOPPING" in message:
            break
        assert set(message) == {"STATUS"}, message
    assert message == {"STOPPING": "1", "STATUS": "unmounting"}
    assert m.proc.wait(timeout=RECEIVE_TIMEOUT) == 0
    assert "systemd: ready" in m.log()
