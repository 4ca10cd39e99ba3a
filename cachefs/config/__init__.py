"""Configuration: a TOML file plus ``-o`` overrides, validated into frozen dataclasses.

The public face of the package; import from here. The parts, one concept each:

* ``units``     sizes and durations, parsed and formatted;
* ``model``     the frozen dataclasses and the defaults;
* ``schema``    every settable key, its checks and value conversion;
* ``keys``      key paths and their TOML spelling;
* ``address``   the HOST:PORT of ``metrics.listen``;
* ``positions`` the scanner that finds the line each key is written on;
* ``loader``    load_config: defaults, file, overrides; ConfigError;
* ``writer``    config_to_toml.
"""

from __future__ import annotations

from cachefs.config.address import parse_listen
from cachefs.config.loader import ConfigError, load_config
from cachefs.config.model import (
    CONTENT_TYPES,
    EVICTION_POLICIES,
    STATS_BACKENDS,
    TIER_NAMES,
    WATCH_MODES,
    Config,
    ContentTypeConfig,
    FrozenMap,
    MetadataConfig,
    MetricsConfig,
    MonitoringConfig,
    MountConfig,
    OriginConfig,
    PredictionConfig,
    Rule,
    StatsConfig,
    TierConfig,
    default_config,
    state_directory,
)
from cachefs.config.schema import TOP_LEVEL_KEYS
from cachefs.config.units import (
    format_duration,
    format_size,
    parse_duration,
    parse_size,
)
from cachefs.config.writer import config_to_toml

__all__ = [
    "CONTENT_TYPES",
    "EVICTION_POLICIES",
    "STATS_BACKENDS",
    "TIER_NAMES",
    "TOP_LEVEL_KEYS",
    "WATCH_MODES",
    "Config",
    "ConfigError",
    "ContentTypeConfig",
    "FrozenMap",
    "MetadataConfig",
    "MetricsConfig",
    "MonitoringConfig",
    "MountConfig",
    "OriginConfig",
    "PredictionConfig",
    "Rule",
    "StatsConfig",
    "TierConfig",
    "config_to_toml",
    "default_config",
    "format_duration",
    "format_size",
    "load_config",
    "parse_duration",
    "parse_listen",
    "parse_size",
    "state_directory",
]
