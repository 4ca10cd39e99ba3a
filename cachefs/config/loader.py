"""Loading: defaults, then a TOML file, then ``-o`` overrides, into a validated Config.

A bad value is reported as ``FILE:LINE: dotted.key: problem`` (or ``-o key=value:``
for an override), because an operator fixing an fstab mount has nothing else to go on.
An old key name or a retired key is logged as a warning in the same form (the
``cachefs.config`` logger; printed on stderr when nothing configured logging yet).
"""

from __future__ import annotations

import logging
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import fields
from typing import Any

from cachefs.config.keys import KeyPath, dotted
from cachefs.config.model import (
    CONTENT_TYPES,
    TIER_NAMES,
    Config,
    ContentTypeConfig,
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
    lookup,
)
from cachefs.config.positions import LineIndexer
from cachefs.config.schema import (
    RULE_KEYS,
    SCHEMA,
    Field,
    Invalid,
    Node,
    coerce,
    describe,
    leaves,
    unknown_key,
)

log = logging.getLogger("cachefs.config")


class ConfigError(Exception):
    """A configuration problem the operator must fix; the CLI exits with ``exit_code``."""

    exit_code = 2

    def __init__(self, message: str, *, key: str | None = None, where: str | None = None):
        super().__init__(message)
        self.key = key  # dotted key, when the problem belongs to one
        self.where = where  # "file:line" or "-o key=value"


# What the RAM tier's TierConfig always holds: it lives in memory, is an LRU and
# keeps nothing free (tiers.ram.eviction and .min_free are retired keys).
_RAM_FIXED: dict[str, Any] = {"path": None, "eviction": "lru", "min_free": 0}


class _Loader:
    """Merges a file and overrides over the defaults, remembering where each key was set."""

    def __init__(self) -> None:
        self.values: dict[KeyPath, Any] = {p: lookup(default_config(), p) for p in leaves()}
        self.origins: dict[KeyPath, str] = {}  # user-set key -> "file:line" or "-o k=v"
        self.rules: tuple[Rule, ...] = ()
        self.file = ""
        self.lines: dict[KeyPath, int] = {}
        # (key, "file" or "-o") -> (the name it was set under, where): an old and a
        # new name of one key both set in one place is an error
        self.set_as: dict[tuple[KeyPath, str], tuple[KeyPath, str]] = {}

    def error(self, path: KeyPath, problem: str, where: str | None = None) -> ConfigError:
        where = where or self.where(path)
        key = dotted(path)
        return ConfigError(f"{where}: {key}: {problem}", key=key, where=where)

    def where(self, path: KeyPath) -> str:
        # A key we cannot place falls back to its table's header, then line 1.
        for end in range(len(path), 0, -1):
            if path[:end] in self.lines:
                return f"{self.file}:{self.lines[path[:end]]}"
        return f"{self.file}:1"

    # -- file

    def load_file(self, path: str) -> None:
        self.file = path
        text = _read_text(path)
        data = _parse_toml(path, text)
        self.lines = LineIndexer(text).build()
        base_dir = os.path.dirname(os.path.abspath(path))
        self.apply_table(data, SCHEMA, (), base_dir)

    def apply_table(
        self, data: Mapping[str, Any], node: Mapping[str, Node], prefix: KeyPath, base_dir: str
    ) -> None:
        for key, value in data.items():
            path = (*prefix, key)
            spec = node.get(key)
            if spec is None:
                raise self.error(path, unknown_key(path, node))
            if isinstance(spec, Field) and spec.kind == "rules":
                self.rules = self.parse_rules(value)
            elif isinstance(spec, Field):
                self.assign(path, spec, value, self.where(path), "file", base_dir)
            elif isinstance(value, dict):
                self.apply_table(value, spec, path, base_dir)
            else:
                raise self.error(path, f"expected a table, got {describe(value)}")

    def parse_rules(self, value: Any) -> tuple[Rule, ...]:
        if not isinstance(value, list):
            raise self.error(("rules",), f"expected [[rules]] tables, got {describe(value)}")
        return tuple(self.parse_rule(("rules", i), item) for i, item in enumerate(value))

    def parse_rule(self, path: KeyPath, item: Any) -> Rule:
        if not isinstance(item, dict):
            raise self.error(path, f"expected a table with glob and type, got {describe(item)}")
        for key in item:
            if key not in RULE_KEYS:
                raise self.error((*path, key), unknown_key((*path, key), dict.fromkeys(RULE_KEYS)))
        for key in RULE_KEYS:
            if key not in item:
                raise self.error(path, f"missing required key {key!r}")
            if not isinstance(item[key], str):
                raise self.error((*path, key), f"expected a string, got {describe(item[key])}")
        glob, ctype = item["glob"], item["type"]
        if not glob or glob.startswith("/"):
            problem = "must be a non-empty glob relative to the origin root (no leading '/')"
            raise self.error((*path, "glob"), f"invalid glob {glob!r}: {problem}")
        if ctype not in CONTENT_TYPES:
            expected = ", ".join(CONTENT_TYPES)
            problem = f"unknown content type {ctype!r} (expected one of: {expected})"
            raise self.error((*path, "type"), problem)
        return Rule(glob, ctype)

    # -- overrides

    def apply_override(self, key: str, raw: str) -> None:
        where = f"-o {key}={raw}"
        path = tuple(key.split("."))
        node: Node = SCHEMA
        for i, part in enumerate(path):
            if isinstance(node, Field):
                if node.kind == "rules":
                    break
                raise self.error(path, f"{dotted(path[:i])} is a value, not a table", where)
            if part not in node:
                raise self.error(path[: i + 1], unknown_key(path[: i + 1], node), where)
            node = node[part]
        if isinstance(node, Field) and node.kind == "rules":
            problem = "rules cannot be set with -o; write [[rules]] tables in the config file"
            raise self.error(path, problem, where)
        if not isinstance(node, Field):
            example = f"{key}.{next(iter(node))}"
            raise self.error(path, f"is a table; set one of its keys, e.g. -o {example}=...", where)
        self.assign(path, node, raw, where, "-o", os.getcwd())

    # -- one value

    def assign(
        self, path: KeyPath, spec: Field, value: Any, where: str, source: str, base_dir: str
    ) -> None:
        """Check and set one key: under an old name, the key it was renamed to; a
        retired key sets nothing. Both are noted in the log."""
        try:
            result = coerce(spec, value, from_text=source == "-o", base_dir=base_dir)
        except Invalid as e:
            raise self.error(path, str(e), where) from None
        if spec.retired is not None:
            log.warning("%s: %s: ignored: %s", where, dotted(path), spec.retired)
            return
        target = path if spec.renamed_to is None else (*path[:-1], spec.renamed_to)
        earlier = self.set_as.get((target, source))
        if earlier is not None and earlier[0] != path:
            old = path if spec.renamed_to is not None else earlier[0]
            problem = (
                f"{dotted(old)} is the old name of {dotted(target)}, and both are set "
                f"({dotted(earlier[0])} at {earlier[1]}); keep only {target[-1]}"
            )
            raise self.error(path, problem, where)
        self.set_as[(target, source)] = (path, where)
        if spec.renamed_to is not None:
            log.warning(
                "%s: %s: renamed %s (the same setting); the old name still works",
                where,
                dotted(path),
                dotted(target),
            )
        self.values[target] = result
        self.origins[target] = where

    # -- result

    def build(self, source: str | None) -> Config:
        v = self.values

        def section(cls: type[Any], prefix: KeyPath, **fixed: Any) -> Any:
            names = [f.name for f in fields(cls) if f.name not in fixed]
            return cls(**fixed, **{n: v[(*prefix, n)] for n in names})

        cfg = Config(
            tiers={
                n: section(
                    TierConfig,
                    ("tiers", n),
                    name=n,
                    **(_RAM_FIXED if n == "ram" else {"scan_resistant": False}),
                )
                for n in TIER_NAMES
            },
            content_types={
                n: section(ContentTypeConfig, ("content_types", n), name=n) for n in CONTENT_TYPES
            },
            rules=self.rules,
            prediction=section(PredictionConfig, ("prediction",)),
            monitoring=section(MonitoringConfig, ("monitoring",)),
            stats=section(StatsConfig, ("stats",)),
            mount=section(MountConfig, ("mount",)),
            metadata=section(MetadataConfig, ("metadata",)),
            origin=section(OriginConfig, ("origin",)),
            metrics=section(MetricsConfig, ("metrics",)),
            state_dir=v[("state_dir",)],
            source=source,
        )
        self.check_tier_paths(cfg)
        return cfg

    def check_tier_paths(self, cfg: Config) -> None:
        """Two disk tiers sharing a directory would evict each other's chunks."""
        ssd, hdd = cfg.tiers["ssd"].path, cfg.tiers["hdd"].path
        assert ssd is not None and hdd is not None
        if ssd == hdd or ssd in hdd.parents or hdd in ssd.parents:
            keys = {"ssd": ("tiers", "ssd", "path"), "hdd": ("tiers", "hdd", "path")}
            name = "hdd" if keys["hdd"] in self.origins else "ssd"
            other = "ssd" if name == "hdd" else "hdd"
            other_path = cfg.tiers[other].path
            problem = (
                f"{cfg.tiers[name].path} overlaps {dotted(keys[other])} ({other_path}); "
                "each disk tier needs its own directory"
            )
            raise self.error(keys[name], problem, self.origins.get(keys[name]))


def _read_text(path: str) -> str:
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        reason = e.strerror or str(e)
        raise ConfigError(f"{path}: cannot read config file: {reason}", where=path) from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        where = f"{path}:{line}"
        raise ConfigError(f"{where}: config file is not valid UTF-8", where=where) from None


_TOML_POSITION = re.compile(r"\(at line (\d+), column \d+\)")


def _parse_toml(path: str, text: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        m = _TOML_POSITION.search(str(e))
        line = int(m.group(1)) if m else text.count("\n") + 1  # "at end of document"
        where = f"{path}:{line}"
        raise ConfigError(f"{where}: invalid TOML: {e}", where=where) from None


def load_config(
    path: str | os.PathLike[str] | None, overrides: Mapping[str, str] | None = None
) -> Config:
    """Defaults, then the TOML file at ``path`` (if any), then ``-o`` overrides.

    Raises ConfigError naming the key and where it was written on any problem.
    """
    loader = _Loader()
    source = None if path is None else os.fsdecode(path)
    if source is not None:
        loader.load_file(source)
    for key, raw in (overrides or {}).items():
        loader.apply_override(key, raw)
    return loader.build(source)
