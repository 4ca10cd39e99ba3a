"""Prometheus metrics: the metrics.listen key, the read latency histogram, and the
endpoint of a real mount scraped over HTTP against its stats xattr."""

from __future__ import annotations

import pytest

from cachefs.config import ConfigError, config_to_toml, default_config, load_config, parse_listen


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", None),
        ("127.0.0.1:9567", ("127.0.0.1", 9567)),
        ("[::1]:9100", ("::1", 9100)),
        (":9567", ("", 9567)),
        ("localhost:1", ("localhost", 1)),
    ],
)
def test_listen_addresses(text: str, expected: tuple[str, int] | None) -> None:
    assert parse_listen(text) == expected


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("9567", "expected HOST:PORT"),
        ("127.0.0.1:0", "expected 1-65535"),
        ("127.0.0.1:65536", "expected 1-65535"),
        ("::1:9567", "IPv6 address in brackets"),
        ("host:http", "invalid port 'http'"),
    ],
)
def test_a_bad_listen_address_names_the_key(text: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(None, {"metrics.listen": text})
    assert caught.value.key == "metrics.listen"
    assert problem in str(caught.value)


def test_metrics_are_off_by_default_and_round_trip(tmp_path) -> None:
    assert default_config().metrics.listen == ""
    cfg = load_config(None, {"metrics.listen": "[::1]:9567"})
    text = config_to_toml(cfg)
    assert '[metrics]\nlisten = "[::1]:9567"\n' in text
    path = tmp_path / "c.toml"
    path.write_text(text)
    assert load_config(path) == cfg
