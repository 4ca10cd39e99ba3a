"""Tests for cachefs.config: defaults, parsing, validation messages, overrides, round-trip."""

from __future__ import annotations

import dataclasses
import os
import pickle
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cachefs.config import (
    CONTENT_TYPES,
    EVICTION_POLICIES,
    TIER_NAMES,
    WATCH_MODES,
    Config,
    ConfigError,
    ContentTypeConfig,
    MetadataConfig,
    MonitoringConfig,
    MountConfig,
    OriginConfig,
    PredictionConfig,
    Rule,
    StatsConfig,
    TierConfig,
    config_to_toml,
    default_config,
    format_duration,
    format_size,
    load_config,
    parse_duration,
    parse_size,
)

KiB, MiB, GiB, TiB = 1024, 1024**2, 1024**3, 1024**4


def write(tmp_path: Path, text: str, name: str = "cachefs.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def load_error(tmp_path: Path, text: str) -> tuple[str, str]:
    """Load ``text`` expecting a ConfigError; returns (message, file name)."""
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return str(info.value), str(path)


# --------------------------------------------------------------------------- defaults


def test_constants() -> None:
    assert TIER_NAMES == ("ram", "ssd", "hdd")
    assert CONTENT_TYPES == ("media", "metadata", "thumbnail", "config", "user_data")
    assert EVICTION_POLICIES == ("lru", "lfu", "weight", "tinylfu")  # tinylfu: issue 13
    assert WATCH_MODES == ("auto", "inotify", "poll", "off")
    assert ConfigError.exit_code == 2


def test_default_tiers_match_design() -> None:
    tiers = default_config().tiers
    assert list(tiers) == list(TIER_NAMES)
    assert tiers["ram"] == TierConfig("ram", None, 512 * MiB, "lru", 3600.0, 0, True)
    # eviction: tinylfu, not DESIGN.md's lfu / weight (issue 13; docs/benchmarks.md)
    assert tiers["ssd"] == TierConfig(
        "ssd", Path("/var/cache/cachefs/ssd"), 5 * GiB, "tinylfu", 86400.0, GiB
    )
    assert tiers["hdd"] == TierConfig(
        "hdd", Path("/var/cache/cachefs/hdd"), 50 * GiB, "tinylfu", 7 * 86400.0, GiB
    )


def test_default_content_types_match_design() -> None:
    cts = default_config().content_types
    assert list(cts) == list(CONTENT_TYPES)
    expected = {
        "media": ("hdd", True, MiB, 0.7),
        "metadata": ("ram", True, 64 * KiB, 0.8),  # design: 1 KiB (sane minimum)
        "thumbnail": ("ssd", True, 128 * KiB, 0.6),  # design: 100 KiB (page multiple)
        "config": ("ram", False, 64 * KiB, 0.9),  # design: 4 KiB (sane minimum)
        "user_data": ("ssd", True, 512 * KiB, 0.75),
    }
    for name, (tier, compression, chunk, threshold) in expected.items():
        assert cts[name] == ContentTypeConfig(name, tier, compression, 3, chunk, threshold)


def test_default_other_sections() -> None:
    cfg = default_config()
    assert cfg.rules == ()
    assert cfg.prediction == PredictionConfig(100, 0.6, 100 * MiB)
    assert cfg.monitoring == MonitoringConfig(300.0, 3600.0, 86400.0)
    assert cfg.stats == StatsConfig("auto", "redis://localhost:6379/11")
    assert cfg.mount == MountConfig(1.0, 1.0, 16, MiB, 50e-6)
    assert cfg.metadata == MetadataConfig(1.0, "auto", 600.0, 5.0, 20, 500_000, True)
    assert cfg.origin == OriginConfig(5.0, 2.0)
    assert cfg.source is None


def test_load_none_is_defaults() -> None:
    assert load_config(None) == default_config()
    assert load_config(None).source is None


def test_config_is_immutable_hashable_and_picklable() -> None:
    cfg = default_config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.rules = ()  # type: ignore[misc]
    with pytest.raises(TypeError):
        cfg.tiers["ram"] = cfg.tiers["ssd"]  # type: ignore[index]
    assert hash(cfg) == hash(default_config())
    assert pickle.loads(pickle.dumps(cfg)) == cfg


def test_empty_file_is_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, "# nothing here\n")
    cfg = load_config(path)
    assert cfg == default_config()
    assert cfg.source == str(path)


# --------------------------------------------------------------------------- sizes


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("512MiB", 512 * MiB),
        ("5GiB", 5 * GiB),
        ("1KiB", KiB),
        ("100KB", 100_000),
        ("4096", 4096),
        (4096, 4096),
        (0, 0),
        ("1.5GiB", 3 * GiB // 2),
        ("1k", KiB),
        ("1K", KiB),
        ("2m", 2 * MiB),
        ("3G", 3 * GiB),
        ("1T", TiB),
        ("1tib", TiB),
        ("2TB", 2 * 10**12),
        ("1mb", 10**6),
        ("1gb", 10**9),
        ("10B", 10),
        ("512 MiB", 512 * MiB),
        (" 64KiB ", 64 * KiB),
    ],
)
def test_parse_size_good(text: str | int, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize(
    "text", ["lots", "", "MiB", "-1", -1, "1.5", "1 2", "1XiB", "1e3", "0x10", True, 1.5, None]
)
def test_parse_size_bad(text: object) -> None:
    with pytest.raises(ValueError):
        parse_size(text)  # type: ignore[arg-type]


@given(st.integers(min_value=0, max_value=2**70))
def test_format_size_round_trips(n: int) -> None:
    assert parse_size(format_size(n)) == n


@pytest.mark.parametrize(
    ("n", "text"),
    [(512 * MiB, "512MiB"), (5 * GiB, "5GiB"), (100_000, "100KB"), (4097, "4097"), (0, "0")],
)
def test_format_size_is_readable(n: int, text: str) -> None:
    assert format_size(n) == text


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (0, "0B"),
        (512, "512B"),
        (1023, "1023B"),
        (KiB, "1KiB"),
        (1536, "1.5KiB"),
        (512 * MiB, "512MiB"),
        (GiB, "1GiB"),
        (3 * GiB // 2, "1.5GiB"),
        (123_456_789, "117.7MiB"),
        (100_000, "97.7KiB"),  # binary units only, for people
        (MiB - 1, "1.0MiB"),  # rounds to 1024.0KiB: one unit up
        (2048 * TiB + 1, "2048.0TiB"),
        (1.5 * MiB, "1.5MiB"),  # a float (free space) is fine
    ],
)
def test_format_size_for_people(n: int | float, text: str) -> None:
    assert format_size(n, exact=False) == text


@given(st.integers(min_value=0, max_value=2**60))
def test_format_size_for_people_reads_back_close(n: int) -> None:
    assert abs(parse_size(format_size(n, exact=False)) - n) <= n * 0.05


@given(st.integers(min_value=1, max_value=1023), st.sampled_from([KiB, MiB, GiB, TiB]))
def test_format_size_agrees_on_whole_binary_units(count: int, unit: int) -> None:
    n = count * unit
    assert format_size(n, exact=False) == format_size(n)


@pytest.mark.parametrize("n", [-1, 1.5, float("inf"), float("nan")])
def test_format_size_refuses_what_is_not_a_size(n: float) -> None:
    with pytest.raises(ValueError):
        format_size(n)


# --------------------------------------------------------------------------- durations


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1h", 3600.0),
        ("1d", 86400.0),
        ("7d", 604800.0),
        ("5m", 300.0),
        ("30s", 30.0),
        ("250ms", 0.25),
        ("1w", 604800.0),
        (300, 300.0),
        (0.5, 0.5),
        ("300", 300.0),
        ("1.5", 1.5),
        ("1h30m", 5400.0),
        ("1h 30m", 5400.0),
        ("1.5h", 5400.0),
        ("1H", 3600.0),
        ("0s", 0.0),
        ("1d2h3m4s5ms", 93784.005),
        ("50us", 50e-6),
        ("50µs", 50e-6),
        ("1ms500US", 0.0015),
    ],
)
def test_parse_duration_good(text: str | float, expected: float) -> None:
    assert parse_duration(text) == expected
    assert isinstance(parse_duration(text), float)


@pytest.mark.parametrize(
    "text",
    ["soon", "", "h", "-5m", -1, -0.5, "1y", "5 minutes", "1h-30m", "1hh", float("inf"), True],
)
def test_parse_duration_bad(text: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (3600.0, "1h"),
        (604800.0, "7d"),
        (5400.0, "1h30m"),
        (0.25, "250ms"),
        (50e-6, "50us"),
        (1.0015, "1s1ms500us"),
        (0.0, "0s"),
    ],
)
def test_format_duration_is_readable(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@given(st.integers(min_value=0, max_value=10**12))
def test_format_duration_round_trips_milliseconds(ms: int) -> None:
    seconds = ms / 1000
    assert parse_duration(format_duration(seconds)) == seconds


@given(st.integers(min_value=0, max_value=10**12))
def test_format_duration_round_trips_microseconds(us: int) -> None:
    seconds = us / 1_000_000
    assert parse_duration(format_duration(seconds)) == seconds


@given(st.floats(min_value=0, max_value=1e15, allow_nan=False, allow_infinity=False))
def test_format_duration_round_trips_any_float(seconds: float) -> None:
    assert parse_duration(format_duration(seconds)) == seconds


# --------------------------------------------------------------------------- files


def test_partial_file_merges_over_defaults(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[tiers.ram]
max_size = "1GiB"

[tiers.ssd]
path = "/mnt/fast/cache"
eviction = "lru"

[content_types.media]
chunk_size = "4MiB"
compression = false

[prediction]
min_confidence = 0.5

[stats]
backend = "embedded"
""",
    )
    cfg = load_config(path)
    defaults = default_config()
    assert cfg.tiers["ram"] == dataclasses.replace(defaults.tiers["ram"], max_size=GiB)
    assert cfg.tiers["ssd"] == dataclasses.replace(
        defaults.tiers["ssd"], path=Path("/mnt/fast/cache"), eviction="lru"
    )
    assert cfg.tiers["hdd"] == defaults.tiers["hdd"]
    assert cfg.content_types["media"] == dataclasses.replace(
        defaults.content_types["media"], chunk_size=4 * MiB, compression=False
    )
    assert cfg.content_types["metadata"] == defaults.content_types["metadata"]
    assert cfg.prediction == PredictionConfig(100, 0.5, 100 * MiB)
    assert cfg.stats.backend == "embedded"
    assert cfg.mount == defaults.mount


def test_schema_example_from_operators_contract(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[tiers.hdd]
path = "/var/cache/cachefs/hdd"
max_size = "50GiB"
eviction = "weight"
ttl = "7d"
[content_types.media]          # also metadata, thumbnail, config, user_data
default_tier = "hdd"
compression = true
compression_level = 3
chunk_size = "1MiB"
prefetch_threshold = 0.7
[[rules]]                      # ordered; first match wins
glob = "Movies/**/*.nfo"
type = "metadata"
[[rules]]
glob = "Photos/**"
type = "user_data"
[monitoring]
stats_interval = "5m"
[mount]
attr_timeout = "1s"
entry_timeout = 2
max_threads = 16
busy_poll = "20us"
""",
    )
    cfg = load_config(path)
    assert cfg.rules == (Rule("Movies/**/*.nfo", "metadata"), Rule("Photos/**", "user_data"))
    assert cfg.mount == MountConfig(1.0, 2.0, 16, MiB, 20e-6)
    # the example names DESIGN.md's hdd policy, weight; the default is tinylfu now
    tiers = dict(default_config().tiers)
    tiers["hdd"] = dataclasses.replace(tiers["hdd"], eviction="weight")
    assert cfg.tiers == tiers


def test_sizes_and_durations_accept_plain_numbers(tmp_path: Path) -> None:
    path = write(tmp_path, "[tiers.ram]\nmax_size = 1048576\nttl = 90\n")
    ram = load_config(path).tiers["ram"]
    assert (ram.max_size, ram.ttl) == (MiB, 90.0)


def test_dotted_keys_and_inline_tables(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        'tiers.ram.max_size = "2GiB"\n'
        'content_types = { media = { chunk_size = "2MiB" } }\n'
        'rules = [ { glob = "*.iso", type = "media" } ]\n',
    )
    cfg = load_config(path)
    assert cfg.tiers["ram"].max_size == 2 * GiB
    assert cfg.content_types["media"].chunk_size == 2 * MiB
    assert cfg.rules == (Rule("*.iso", "media"),)


def test_metadata_and_origin_sections(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[metadata]
revalidate_after = "250ms"
watch = "poll"
poll_window = "1h"
poll_interval = "30s"
poll_budget = 5
max_entries = 1000
persist = false

[origin]
timeout = 10
probe_interval = "500ms"
""",
    )
    cfg = load_config(path)
    assert cfg.metadata == MetadataConfig(0.25, "poll", 3600.0, 30.0, 5, 1000, False)
    assert cfg.origin == OriginConfig(10.0, 0.5)
    assert cfg.mount == default_config().mount


@pytest.mark.parametrize("mode", WATCH_MODES)
def test_every_watch_mode_is_accepted(tmp_path: Path, mode: str) -> None:
    path = write(tmp_path, f'[metadata]\nwatch = "{mode}"\n')
    assert load_config(path).metadata.watch == mode


def test_revalidate_after_zero_means_always_ask(tmp_path: Path) -> None:
    path = write(tmp_path, '[metadata]\nrevalidate_after = "0s"\n')
    assert load_config(path).metadata.revalidate_after == 0.0
    assert load_config(None, {"metadata.revalidate_after": "0"}).metadata.revalidate_after == 0.0


def test_relative_tier_path_resolves_next_to_config(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    path = write(tmp_path, '[tiers.ssd]\npath = "../cache/ssd"\n', "etc/cachefs.toml")
    assert load_config(path).tiers["ssd"].path == tmp_path / "cache" / "ssd"


# --------------------------------------------------------------------------- file errors


def test_unknown_top_level_key(tmp_path: Path) -> None:
    msg, name = load_error(tmp_path, "# header\n\nverbose = true\n")
    assert f"{name}:3: verbose: unknown key 'verbose'" in msg


def test_unknown_nested_key_suggests(tmp_path: Path) -> None:
    msg, name = load_error(tmp_path, '[tiers.ram]\nttl = "1h"\nmax_sise = "1GiB"\n')
    assert f"{name}:3: tiers.ram.max_sise: unknown key 'max_sise'" in msg
    assert "did you mean 'max_size'?" in msg


def test_unknown_tier(tmp_path: Path) -> None:
    msg, name = load_error(tmp_path, "[tiers]\n\n[tiers.nvme]\nmax_size = 1\n")
    assert f"{name}:3: tiers.nvme: unknown tier 'nvme'" in msg


def test_unknown_content_type_table(tmp_path: Path) -> None:
    msg, name = load_error(tmp_path, "[content_types.video]\ncompression = true\n")
    assert f"{name}:1: content_types.video: unknown content type 'video'" in msg


def test_ram_tier_takes_no_path(tmp_path: Path) -> None:
    msg, name = load_error(tmp_path, '[tiers.ram]\npath = "/dev/shm/x"\n')
    assert f"{name}:2: tiers.ram.path:" in msg
    assert "no path" in msg


def test_bad_size_message(tmp_path: Path) -> None:
    text = "# cachefs\n" + "\n" * 9 + '[tiers.ram]\nmax_size = "lots"\n'
    msg, name = load_error(tmp_path, text)
    assert msg == (
        f"{name}:12: tiers.ram.max_size: invalid size 'lots' "
        '(expected e.g. "512MiB", "5GiB", "4096")'
    )


def test_zero_max_size(tmp_path: Path) -> None:
    msg, name = load_error(tmp_path, "[tiers.hdd]\nmax_size = 0\n")
    assert f"{name}:2: tiers.hdd.max_size: must be greater than 0" in msg


def test_bad_duration(tmp_path: Path) -> None:
    msg, name = load_error(tmp_path, '[tiers.ssd]\nttl = "forever"\n')
    assert f"{name}:2: tiers.ssd.ttl: invalid duration 'forever'" in msg


def test_bad_tier_name_in_default_tier(tmp_path: Path) -> None:
    msg, name = load_error(tmp_path, '[content_types.media]\ndefault_tier = "nvme"\n')
    assert f"{name}:2: content_types.media.default_tier: invalid tier name 'nvme'" in msg
    assert "ram, ssd, hdd" in msg


def test_bad_eviction(tmp_path: Path) -> None:
    msg, name = load_error(tmp_path, '[tiers.ssd]\npath = "/x"\neviction = "fifo"\n')
    assert f"{name}:3: tiers.ssd.eviction: invalid eviction policy 'fifo'" in msg


def test_threshold_out_of_range(tmp_path: Path) -> None:
    msg, name = load_error(tmp_path, "[content_types.thumbnail]\nprefetch_threshold = 1.5\n")
    assert f"{name}:2: content_types.thumbnail.prefetch_threshold: must be between" in msg


def test_min_confidence_out_of_range(tmp_path: Path) -> None:
    msg, name = load_error(tmp_path, "[prediction]\nmin_confidence = -0.1\n")
    assert f"{name}:2: prediction.min_confidence: must be between" in msg


@pytest.mark.parametrize(
    ("key", "value", "problem"),
    [
        ("promote_move_cost", "0", "must be greater than 0.0, got 0.0"),
        ("promote_move_cost", "-2.5", "must be greater than 0.0, got -2.5"),
        ("promote_rewrites_per_day", "-1", "must be at least 0.0, got -1.0"),
        ("promote_rewrites_per_day", '"daily"', "expected a number, got string 'daily'"),
    ],
)
def test_promotion_costs_out_of_range(tmp_path: Path, key: str, value: str, problem: str) -> None:
    msg, name = load_error(tmp_path, f"[prediction]\nwindow_size = 5\n{key} = {value}\n")
    assert f"{name}:3: prediction.{key}: {problem}" in msg


def test_promotion_costs_load(tmp_path: Path) -> None:
    path = write(tmp_path, "[prediction]\npromote_move_cost = 1.5\npromote_rewrites_per_day = 0\n")
    prediction = load_config(path).prediction
    assert (prediction.promote_move_cost, prediction.promote_rewrites_per_day) == (1.5, 0.0)
    assert default_config().prediction.promote_move_cost == 2.0
    assert default_config().prediction.promote_rewrites_per_day == 1.0


def test_wrong_type_string_for_int(tmp_path: Path) -> None:
    msg, name = load_error(tmp_path, '[prediction]\nwindow_size = "100"\n')
    assert f"{name}:2: prediction.window_size: expected an integer, got string '100'" in msg


def test_wrong_type_bool(tmp_path: Path) -> None:
    msg, name = load_error(tmp_path, '[content_types.config]\ncompression = "no"\n')
    assert f"{name}:2: content_types.config.compression: expected true or false" in msg


def test_wrong_type_section_not_table(tmp_path: Path) -> None:
    msg, name = load_error(tmp_path, "\nmount = 5\n")
    assert f"{name}:2: mount: expected a table, got integer 5" in msg


@pytest.mark.parametrize(
    ("size", "problem"),
    [("5000", "multiple of 4096"), ("2KiB", "between 4KiB and 64MiB"), ("128MiB", "between")],
)
def test_bad_chunk_size(tmp_path: Path, size: str, problem: str) -> None:
    msg, name = load_error(tmp_path, f'[content_types.media]\nchunk_size = "{size}"\n')
    assert f"{name}:2: content_types.media.chunk_size:" in msg
    assert problem in msg


def test_bad_compression_level(tmp_path: Path) -> None:
    msg, name = load_error(tmp_path, "[content_types.media]\ncompression_level = 99\n")
    assert f"{name}:2: content_types.media.compression_level: must be between 1 and 22" in msg


def test_stats_interval_minimum(tmp_path: Path) -> None:
    msg, name = load_error(tmp_path, '[monitoring]\nstats_interval = "500ms"\n')
    assert f"{name}:2: monitoring.stats_interval: must be at least 1s" in msg


def test_bad_stats_backend_and_redis_url(tmp_path: Path) -> None:
    msg, name = load_error(tmp_path, '[stats]\nbackend = "memcached"\n')
    assert f"{name}:2: stats.backend: invalid stats backend 'memcached'" in msg
    msg, name = load_error(tmp_path, '[stats]\nredis_url = "http://localhost"\n')
    assert f"{name}:2: stats.redis_url: invalid Redis URL" in msg


def test_bad_watch_mode(tmp_path: Path) -> None:
    msg, name = load_error(tmp_path, '[metadata]\npersist = true\nwatch = "fanotify"\n')
    assert msg == (
        f"{name}:3: metadata.watch: invalid watch mode 'fanotify' "
        "(expected one of: auto, inotify, poll, off)"
    )


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("revalidate_after = -1", "metadata.revalidate_after: invalid duration -1"),
        ('revalidate_after = "-1s"', "metadata.revalidate_after: invalid duration '-1s'"),
        ("revalidate_after = true", "metadata.revalidate_after: expected a duration"),
        ('poll_window = "0s"', "metadata.poll_window: must be greater than 0"),
        ('poll_interval = "0s"', "metadata.poll_interval: must be greater than 0"),
        ("poll_budget = 0", "metadata.poll_budget: must be at least 1, got 0"),
        ('poll_budget = "20"', "metadata.poll_budget: expected an integer, got string '20'"),
        ("max_entries = 999", "metadata.max_entries: must be at least 1000, got 999"),
        ('persist = "yes"', "metadata.persist: expected true or false"),
        ("timeout = 0", "origin.timeout: must be greater than 0"),
        ('timeout = "0ms"', "origin.timeout: must be greater than 0"),
        ('timeout = "slow"', "origin.timeout: invalid duration 'slow'"),
        ("probe_interval = 0", "origin.probe_interval: must be greater than 0"),
        ("probe_interval = -2", "origin.probe_interval: invalid duration -2"),
        ('busy_poll = "20ms"', "mount.busy_poll: must be at most 10ms, got 20ms"),
        ('writeback_cache = "yes"', "mount.writeback_cache: expected true or false"),
        ('busy_poll = "-5us"', "mount.busy_poll: invalid duration '-5us'"),
        ('busy_poll = "50ns"', "mount.busy_poll: invalid duration '50ns'"),
    ],
)
def test_bad_values_name_key_and_line(tmp_path: Path, line: str, problem: str) -> None:
    section = problem.split(".", 1)[0]
    msg, name = load_error(tmp_path, f"# a comment\n[{section}]\n{line}\n")
    assert msg.startswith(f"{name}:3: {problem}")


def test_unknown_metadata_key_suggests(tmp_path: Path) -> None:
    msg, name = load_error(tmp_path, "[metadata]\nrevalidate = 1\n")
    assert f"{name}:2: metadata.revalidate: unknown key 'revalidate'" in msg
    assert "did you mean 'revalidate_after'?" in msg


@pytest.mark.parametrize("url", ["redis://h:1/0", "rediss://h/1", "unix:///run/redis.sock"])
def test_good_redis_urls(tmp_path: Path, url: str) -> None:
    path = write(tmp_path, f'[stats]\nredis_url = "{url}"\n')
    assert load_config(path).stats.redis_url == url


def test_overlapping_tier_paths(tmp_path: Path) -> None:
    msg, name = load_error(tmp_path, '[tiers.hdd]\n\npath = "/var/cache/cachefs/ssd/big"\n')
    assert f"{name}:3: tiers.hdd.path:" in msg
    assert "overlaps tiers.ssd.path" in msg


def test_error_on_dotted_key_line(tmp_path: Path) -> None:
    msg, name = load_error(tmp_path, "[tiers]\nram.max_size = true\n")
    assert f"{name}:2: tiers.ram.max_size: expected a size" in msg


def test_error_inside_inline_table(tmp_path: Path) -> None:
    msg, name = load_error(tmp_path, '\n\ntiers = { ram = { ttl = "1h" }, hdd = { ttl = "x" } }\n')
    assert f"{name}:3: tiers.hdd.ttl: invalid duration 'x'" in msg


def test_strings_and_comments_do_not_confuse_line_index(tmp_path: Path) -> None:
    text = (
        "# [tiers.ram]\n"
        '[[rules]]\nglob = """\n[tiers.ram]\nmax_size = 1\n"""\ntype = "media"\n'
        "[tiers.ram]  # max_size = 3\n"
        'eviction = "lru"\n'
        "max_size = -3\n"
    )
    msg, name = load_error(tmp_path, text)
    assert f"{name}:10: tiers.ram.max_size:" in msg


def test_rule_errors_name_the_array_index(tmp_path: Path) -> None:
    rules = '[[rules]]\nglob = "a/*"\ntype = "media"\n\n[[rules]]\nglob = "b/*"\ntype = "video"\n'
    msg, name = load_error(tmp_path, rules)
    assert f"{name}:7: rules[1].type: unknown content type 'video'" in msg
    msg, name = load_error(tmp_path, '[[rules]]\nglob = "a/*"\n')
    assert f"{name}:1: rules[0]: missing required key 'type'" in msg
    msg, name = load_error(tmp_path, '[[rules]]\nglob = "a"\ntype = "media"\npriority = 1\n')
    assert f"{name}:4: rules[0].priority: unknown key 'priority'" in msg
    msg, name = load_error(tmp_path, '[[rules]]\nglob = "/abs/*"\ntype = "media"\n')
    assert f"{name}:2: rules[0].glob: invalid glob '/abs/*'" in msg
    msg, name = load_error(tmp_path, "rules = [\n  { glob = 'a', type = 'media' },\n  3,\n]\n")
    assert f"{name}:3: rules[1]: expected a table" in msg


def test_syntax_error_names_file_and_position(tmp_path: Path) -> None:
    msg, name = load_error(tmp_path, "[stats]\nbackend = \n")
    assert msg.startswith(f"{name}:2: invalid TOML:")
    assert "line 2, column" in msg


def test_syntax_error_at_end_of_document(tmp_path: Path) -> None:
    msg, name = load_error(tmp_path, "[mount]\nmax_threads = 1\nmax_threads = 2\n")
    assert msg.startswith(f"{name}:")
    assert "invalid TOML" in msg


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"{path}: cannot read config file: No such file or directory"


def test_unreadable_file_is_a_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path)
    assert str(info.value).startswith(f"{tmp_path}: cannot read config file:")
    assert "Is a directory" in str(info.value)


def test_unreadable_file_under_non_directory(tmp_path: Path) -> None:
    path = write(tmp_path, "") / "cachefs.toml"
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"{path}: cannot read config file: Not a directory"


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_bytes(b"[mount]\nmax_threads = 1 # \xff\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}:2: ")


def test_config_error_carries_key_and_where(tmp_path: Path) -> None:
    path = write(tmp_path, '[tiers.ram]\nttl = "x"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.key == "tiers.ram.ttl"
    assert info.value.where == f"{path}:2"


# --------------------------------------------------------------------------- overrides


def test_overrides_coerce_and_beat_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, '[tiers.ram]\nmax_size = "256MiB"\n[stats]\nbackend = "redis"\n')
    cfg = load_config(
        path,
        {
            "tiers.ram.max_size": "1GiB",
            "stats.backend": "embedded",
            "content_types.media.compression": "false",
            "content_types.config.compression": "on",
            "prediction.min_confidence": "0.5",
            "prediction.window_size": "50",
            "monitoring.stats_interval": "30s",
            "mount.max_threads": "8",
        },
    )
    assert cfg.tiers["ram"].max_size == GiB
    assert cfg.stats.backend == "embedded"
    assert cfg.content_types["media"].compression is False
    assert cfg.content_types["config"].compression is True
    assert cfg.prediction == PredictionConfig(50, 0.5, 100 * MiB)
    assert cfg.monitoring.stats_interval == 30.0
    assert cfg.mount.max_threads == 8


def test_overrides_of_metadata_and_origin(tmp_path: Path) -> None:
    path = write(tmp_path, '[metadata]\nwatch = "inotify"\n[origin]\ntimeout = "30s"\n')
    cfg = load_config(
        path,
        {
            "metadata.watch": "poll",
            "metadata.revalidate_after": "2.5s",
            "metadata.poll_window": "1h30m",
            "metadata.poll_interval": "2s",
            "metadata.poll_budget": "100",
            "metadata.max_entries": "2000000",
            "metadata.persist": "no",
            "origin.timeout": "250ms",
            "origin.probe_interval": "10",
        },
    )
    assert cfg.metadata == MetadataConfig(2.5, "poll", 5400.0, 2.0, 100, 2_000_000, False)
    assert cfg.origin == OriginConfig(0.25, 10.0)


@pytest.mark.parametrize(
    ("word", "value"),
    [
        ("true", True),
        ("YES", True),
        ("1", True),
        ("on", True),
        ("false", False),
        ("no", False),
        ("0", False),
        ("Off", False),
    ],
)
def test_override_booleans(word: str, value: bool) -> None:
    cfg = load_config(None, {"content_types.media.compression": word})
    assert cfg.content_types["media"].compression is value


def test_override_relative_path_uses_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = load_config(None, {"tiers.hdd.path": "big/cache"})
    assert cfg.tiers["hdd"].path == tmp_path / "big" / "cache"


@pytest.mark.parametrize(
    ("key", "value", "problem"),
    [
        ("tiers.ram.max_size", "lots", "tiers.ram.max_size: invalid size 'lots'"),
        ("prediction.min_confidence", "1.5", "prediction.min_confidence: must be between"),
        ("prediction.min_confidence", "high", "prediction.min_confidence: invalid number"),
        ("mount.max_threads", "many", "mount.max_threads: invalid integer 'many'"),
        ("content_types.media.compression", "maybe", "invalid boolean 'maybe'"),
        ("content_types.media.default_tier", "nvme", "invalid tier name 'nvme'"),
        ("tiers.ssd.eviction", "fifo", "invalid eviction policy 'fifo'"),
        ("metadata.watch", "fanotify", "metadata.watch: invalid watch mode 'fanotify'"),
        ("metadata.revalidate_after", "-1s", "metadata.revalidate_after: invalid duration"),
        ("metadata.max_entries", "10", "metadata.max_entries: must be at least 1000"),
        ("metadata.poll_budget", "lots", "metadata.poll_budget: invalid integer 'lots'"),
        ("origin.timeout", "0", "origin.timeout: must be greater than 0"),
        ("origin.probe_interval", "0ms", "origin.probe_interval: must be greater than 0"),
        ("origin.retries", "3", "origin.retries: unknown key 'retries'"),
        ("origin", "5s", "is a table"),
        ("tiers.ram.max_sise", "1GiB", "tiers.ram.max_sise: unknown key 'max_sise'"),
        ("tiers.nvme.max_size", "1GiB", "tiers.nvme: unknown tier 'nvme'"),
        ("verbose", "1", "verbose: unknown key 'verbose'"),
        ("tiers.ram.path", "/x", "no path"),
        ("tiers.ram", "1GiB", "is a table"),
        ("tiers.ram.max_size.x", "1", "is a value, not a table"),
        ("rules", "x", "rules cannot be set with -o"),
        ("rules.0.glob", "x", "rules cannot be set with -o"),
    ],
)
def test_override_errors(key: str, value: str, problem: str, tmp_path: Path) -> None:
    path = write(tmp_path, "[tiers.ram]\nmax_size = '1GiB'\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, {key: value})
    msg = str(info.value)
    assert msg.startswith(f"-o {key}={value}: ")
    assert problem in msg
    assert str(path) not in msg


def test_override_can_fix_the_file_only_if_file_is_valid(tmp_path: Path) -> None:
    # The file is validated on its own: a bad file value is reported even if -o sets it.
    path = write(tmp_path, "[tiers.ram]\nmax_size = 'lots'\n")
    with pytest.raises(ConfigError, match=r":2: tiers\.ram\.max_size"):
        load_config(path, {"tiers.ram.max_size": "1GiB"})


# --------------------------------------------------------------------------- round-trip


def test_round_trip_default(tmp_path: Path) -> None:
    text = config_to_toml(default_config())
    assert 'max_size = "512MiB"' in text
    assert 'ttl = "1h"' in text
    assert 'ttl = "7d"' in text
    assert '[metadata]\nrevalidate_after = "1s"\nwatch = "auto"\npoll_window = "10m"\n' in text
    assert 'poll_interval = "5s"\npoll_budget = 20\n' in text
    assert "poll_budget = 20\nmax_entries = 500000\npersist = true\n" in text
    assert '[origin]\ntimeout = "5s"\nprobe_interval = "2s"\n' in text
    cfg = load_config(write(tmp_path, text))
    assert cfg == default_config()


def test_round_trip_customised(tmp_path: Path) -> None:
    custom = Config(
        tiers={
            "ram": TierConfig("ram", None, 3 * GiB // 2, "lru", 5400.0, 0, False),
            "ssd": TierConfig(
                "ssd", Path("/mnt/ssd cache/\u00e9t\u00e9"), 100_000, "weight", 0.25, 0
            ),
            "hdd": TierConfig("hdd", Path('/mnt/"hdd"\\x'), 4097, "lru", 1e-4, 123),
        },
        content_types={
            name: dataclasses.replace(ct, compression=not ct.compression, compression_level=19)
            for name, ct in default_config().content_types.items()
        },
        rules=(
            Rule("Movies/**/*.nfo", "metadata"),
            Rule('we"ird\\/[!a]?\t*.\u2603', "thumbnail"),
            Rule("**", "user_data"),
        ),
        prediction=PredictionConfig(7, 1e-05, 0),
        monitoring=MonitoringConfig(1.0, 93784.005, 1.5),
        stats=StatsConfig("redis", "rediss://user:p#ss@host:6380/2"),
        mount=MountConfig(0.0, 0.1, 1, 0, 0.0, True),
        metadata=MetadataConfig(0.0, "off", 0.001, 0.5, 1, 1000, False),
        origin=OriginConfig(1e-4, 93784.005),
    )
    text = config_to_toml(custom)
    cfg = load_config(write(tmp_path, text))
    assert cfg == custom
    assert config_to_toml(dataclasses.replace(cfg, source=None)) == text


def test_round_trip_of_loaded_file_with_overrides(tmp_path: Path) -> None:
    path = write(
        tmp_path, '[tiers.ssd]\npath = "rel/ssd"\n[[rules]]\nglob = "a/**"\ntype = "media"\n'
    )
    cfg = load_config(
        path,
        {
            "mount.attr_timeout": "2.5s",
            "tiers.ram.ttl": "90m",
            "metadata.watch": "inotify",
            "origin.timeout": "250ms",
        },
    )
    again = load_config(write(tmp_path, config_to_toml(cfg), "effective.toml"))
    assert again == cfg
    assert again.source != cfg.source  # where it came from is not part of equality


def test_dumped_toml_is_commented_with_source(tmp_path: Path) -> None:
    path = write(tmp_path, "")
    assert f"# loaded from '{path}'" in config_to_toml(load_config(path))
    assert os.fspath(path) not in config_to_toml(default_config())
