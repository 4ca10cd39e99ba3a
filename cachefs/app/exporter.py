"""The Prometheus endpoint of ``metrics.listen``: an HTTP server in threads of its own.

It is bound in :func:`bind`, before anything is mounted, so a taken port
refuses the mount; its thread starts in :meth:`MetricsServer.start`, after
the daemon has detached (a fork keeps the socket, not the threads). What it
serves is converted from the report the trio side publishes every second
(``Mount.publish_reports``), never read from the live mount
(cachefs.stats.snapshot).

Imported only by a mount with ``metrics.listen`` set: prometheus_client takes
a noticeable part of a second to import.
"""

from __future__ import annotations

import logging
import socket
import socketserver
import threading
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from prometheus_client import CollectorRegistry, ProcessCollector, make_wsgi_app

from cachefs.config import parse_listen
from cachefs.stats.prometheus import ReportCollector
from cachefs.stats.snapshot import LatestReport

log = logging.getLogger(__name__)


class _Server(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a scrape in progress never holds up the unmount

    def server_bind(self) -> None:
        # HTTPServer.server_bind looks up the host's FQDN, which can wait on a
        # resolver for seconds: the bound address is name enough.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)
        self.setup_environ()


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """One line on stderr per scrape is noise; the mount's log has what matters."""


class MetricsServer:
    def __init__(self, server: _Server, listen: str) -> None:
        self._server, self.listen = server, listen
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="metrics", daemon=True
        )
        self._thread.start()
        log.info("metrics: serving http://%s/metrics", self.listen)

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
        self._server.server_close()


def bind(listen: str, latest: LatestReport) -> MetricsServer:
    """A server bound to *listen* (``HOST:PORT``), serving *latest*; OSError if it
    cannot be bound (the port is taken, the address is not this machine's)."""
    parsed = parse_listen(listen)
    assert parsed is not None, "only called with metrics.listen set"
    host, port = parsed
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ReportCollector(latest))
    ProcessCollector(registry=registry)  # the daemon's CPU, memory, open files
    server_class = type("_Bound", (_Server,), {"address_family": _family(host, port)})
    server = server_class((host, port), _QuietHandler, bind_and_activate=True)
    server.set_app(make_wsgi_app(registry))
    return MetricsServer(server, listen)


def _family(host: str, port: int) -> socket.AddressFamily:
    if not host:
        return socket.AF_INET  # ":9567": every IPv4 interface
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    return infos[0][0]
