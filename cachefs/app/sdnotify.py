"""systemd readiness and stop notifications, for a ``Type=notify`` unit.

When systemd starts a ``Type=notify`` service it sets ``NOTIFY_SOCKET`` to a
Unix datagram socket and waits for ``READY=1`` on it (sd_notify(3)); this is
that protocol, without the systemd bindings: one datagram of newline-separated
``KEY=value`` assignments per notification, to a path, or to an abstract
socket when the name starts with ``@``. Without ``NOTIFY_SOCKET`` nothing is sent.

A mount announces ``READY=1`` once it answers: after FUSE INIT, and after a
stat of the mount point has gone round through the kernel and back. It then
keeps a one-line ``STATUS=`` (origin state, tier fill, hit ratio; what
``systemctl status`` shows) every :data:`STATUS_INTERVAL`, and says
``STOPPING=1`` when it starts unmounting.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable, Mapping
from typing import Any

import trio

from cachefs.common.supervise import Task
from cachefs.config import format_size

log = logging.getLogger(__name__)

STATUS_INTERVAL = 5.0  # seconds between two STATUS= updates


class Notifier:
    def __init__(self, address: str | None) -> None:
        self.address = address
        self._stopping = False
        self._failed = False

    @classmethod
    def from_environment(cls) -> Notifier:
        address = os.environ.get("NOTIFY_SOCKET") or None
        if address is not None and not address.startswith(("/", "@")):
            log.warning("NOTIFY_SOCKET=%s: not a Unix socket; systemd is not notified", address)
            address = None
        return cls(address)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *assignments: str) -> bool:
        """One notification; False if it could not be sent (logged once, never raised:
        a service manager gone away must not stop the mount)."""
        if self.address is None:
            return False
        target = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        message = "\n".join(assignments).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto(message, socket.MSG_DONTWAIT, target)
        except OSError as exc:
            if not self._failed:
                log.warning("systemd notification to %s failed: %s", self.address, exc)
            self._failed = True
            return False
        self._failed = False
        return True

    def ready(self, status: str, daemonized: bool = False) -> None:
        # A daemonized mount is not the process systemd started: name the one to watch.
        extra = (f"MAINPID={os.getpid()}",) if daemonized else ()
        self.send("READY=1", f"STATUS={status}", *extra)

    def status(self, status: str) -> None:
        self.send(f"STATUS={status}")

    def stopping(self) -> None:
        """Once, however many paths lead to the unmount."""
        if not self._stopping:
            self._stopping = True
            self.send("STOPPING=1", "STATUS=unmounting")


def tasks(
    notifier: Notifier,
    initialized: trio.Event,
    mountpoint: str,
    report: Callable[[], Mapping[str, Any]],
    daemonized: bool,
) -> list[Task]:
    """The Engine task that announces readiness and keeps the status; none without systemd."""
    if not notifier.enabled:
        return []

    async def announce() -> None:
        await initialized.wait()
        # The kernel queues requests until our INIT reply is processed: once this
        # stat is answered, anyone's is.
        await trio.to_thread.run_sync(os.stat, mountpoint)
        notifier.ready(status_line(report()), daemonized)
        log.info("systemd: ready")
        while True:
            await trio.sleep(STATUS_INTERVAL)
            notifier.status(status_line(report()))

    return [Task("systemd notify", announce)]


def status_line(report: Mapping[str, Any]) -> str:
    """``origin online; ram 24MiB/512MiB (5%), ssd ...; hit ratio 49%``, from the stats."""
    state = str(report.get("origin_state", "unknown"))
    if state != "online" and report.get("origin_offline_reason"):
        state += f" ({report['origin_offline_reason']})"
    fills = []
    for name, tier in report.get("tiers", {}).items():
        used, most = int(tier.get("bytes", 0)), int(tier.get("max_size", 0))
        percent = f" ({100 * used // most}%)" if most else ""
        fills.append(
            f"{name} {format_size(used, exact=False)}/{format_size(most, exact=False)}{percent}"
        )
    parts = [f"origin {state}", ", ".join(fills)]
    served = int(report.get("fuse_read_bytes_served", 0))
    if served:
        cached = min(served, sum(report.get("tier_bytes", {}).values()))
        parts.append(f"hit ratio {100 * cached // served}%")
    return "; ".join(p for p in parts if p)
