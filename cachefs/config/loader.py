"""Loading: defaults, then a TOML file, then ``-o`` overrides, into a validated Config.

A bad value is reported as ``FILE:LINE: dotted.key: problem`` (or ``-o key=value:``
for an override), because an operator fixing an fstab mount has nothing else to go on.
"""

from __future__ import annotations

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


class ConfigError(Exception):
    """A configuration problem the operator must fix; the CLI exits with ``exit_code``."""

    exit_code = 2

    def __init__(self, message: str, *, key: str | None = None, where: str | None = None):
        super().__init__(message)
        self.key = key  # dotted key, when the problem belongs to one
        self.where = where  # "file:line" or "-o key=value"


class _Loader:
    """Merges a file and overrides over the defaults, remembering where each key was set."""

    def __init__(self) -> None:
        self.values: dict[KeyPath, Any] = {p: lookup(default_config(), p) for p in leaves()}
        self.origins: dict[KeyPath, str] = {}  # user-set key -> "file:line" or "-o k=v"
        self.rules: tuple[Rule, ...] = ()
        self.file = ""
        self.lines: dict[KeyPath, int] = {}

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
                try:
                    self.values[path] = coerce(spec, value, from_text=False, base_dir=base_dir)
                except Invalid as e:
                    raise self.error(path, str(e)) from None
                self.origins[path] = self.where(path)
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
        try:
            self.values[path] = coerce(node, raw, from_text=True, base_dir=os.getcwd())
        except Invalid as e:
            raise self.error(path, str(e), where) from None
        self.origins[path] = where

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
                    **({"path": None} if n == "ram" else {"scan_resistant": False}),
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
