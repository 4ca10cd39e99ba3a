"""Writing: the effective configuration as TOML that load_config reads back equal."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cachefs.config.keys import KeyPath, dotted, toml_string
from cachefs.config.model import Config, Rule, lookup
from cachefs.config.schema import SCHEMA, Field, Node
from cachefs.config.units import format_duration, format_size


def _toml_value(spec: Field, value: Any) -> str:
    if spec.kind == "size":
        return toml_string(format_size(value))
    if spec.kind == "duration":
        return toml_string(format_duration(value))
    if spec.kind == "bool":
        return "true" if value else "false"
    if spec.kind in ("int", "float"):
        return repr(value)
    return toml_string(str(value))


def _emit(cfg: Config, node: Mapping[str, Node], prefix: KeyPath, out: list[str]) -> None:
    # Old names and retired keys are read, never written.
    leaves = [
        (k, s) for k, s in node.items() if isinstance(s, Field) and s.kind != "rules" and s.current
    ]
    if leaves and prefix:
        out += ["", f"[{dotted(prefix)}]"]
    for key, field in leaves:
        value = lookup(cfg, (*prefix, key))
        if value is None:  # unset (state_dir): TOML has no null, so say what that means
            out.append(f"# {key} unset: {field.unset}")
        else:
            out.append(f"{key} = {_toml_value(field, value)}")
    for key, spec in node.items():
        if isinstance(spec, Field) and spec.kind == "rules":
            _emit_rules(cfg.rules, out)
        elif not isinstance(spec, Field):
            _emit(cfg, spec, (*prefix, key), out)


def _emit_rules(rules: tuple[Rule, ...], out: list[str]) -> None:
    if not rules:
        out += ["", "# no [[rules]]: extension defaults only"]
    for rule in rules:
        out += ["", "[[rules]]", f"glob = {toml_string(rule.glob)}"]
        out += [f"type = {toml_string(rule.type)}"]


def config_to_toml(cfg: Config) -> str:
    """The effective config as TOML that load_config reads back into an equal Config."""
    out = ["# cachefs effective configuration"]
    if cfg.source:
        out.append(f"# loaded from {cfg.source!r}")
    _emit(cfg, SCHEMA, (), out)
    return "\n".join(out) + "\n"
