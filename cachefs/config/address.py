"""``metrics.listen``: where the Prometheus endpoint listens, as ``HOST:PORT``."""

from __future__ import annotations


def parse_listen(text: str) -> tuple[str, int] | None:
    """None for "" (off), else ``(host, port)``; ValueError naming the problem.

    ``127.0.0.1:9567``, ``[::1]:9567`` (IPv6 in brackets), ``:9567`` (every
    IPv4 interface: host ""). A host name is kept as written: it is resolved
    when the mount binds, not when the config is read.
    """
    text = text.strip()
    if not text:
        return None
    host, sep, port_text = text.rpartition(":")
    if not sep:
        raise ValueError(f"invalid address {text!r} (expected HOST:PORT, e.g. 127.0.0.1:9567)")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        if not host:
            raise ValueError(f"invalid address {text!r}: empty IPv6 address in brackets")
    elif ":" in host:
        raise ValueError(f"invalid address {text!r}: write an IPv6 address in brackets, [::1]:9567")
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"invalid port {port_text!r} in {text!r} (expected 1-65535)")
    return host, int(port_text)
