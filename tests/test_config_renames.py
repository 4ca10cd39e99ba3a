"""Old key names and retired keys: old files keep loading, with a note; nothing writes them.

content_types.<type>.prefetch_threshold is now keep_weight and prediction.min_confidence
is now promote_threshold (what they do); tiers.ram.eviction and tiers.ram.min_free set
nothing (scan_resistant sets the RAM tier's policy, and it has no file system to keep free).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import pytest

from cachefs.config import (
    CONTENT_TYPES,
    ConfigError,
    config_to_toml,
    default_config,
    load_config,
)
from cachefs.config.schema import SCHEMA, Field, leaves

from .conftest import run_cachefs

OLD_CONFIG_SHOW = Path(__file__).parent / "data" / "config_show_old_names.toml"


def write(tmp_path: Path, text: str, name: str = "cachefs.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def notes(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "cachefs.config"]


# --------------------------------------------------------------------------- old names


@pytest.mark.parametrize("ctype", CONTENT_TYPES)
def test_prefetch_threshold_is_the_old_name_of_keep_weight(tmp_path: Path, ctype: str) -> None:
    old = load_config(write(tmp_path, f"[content_types.{ctype}]\nprefetch_threshold = 0.25\n"))
    new = load_config(write(tmp_path, f"[content_types.{ctype}]\nkeep_weight = 0.25\n", "n.toml"))
    assert old == new
    assert old.content_types[ctype].keep_weight == 0.25
    assert old.content_types[ctype].prefetch_threshold == 0.25  # the old attribute reads it


def test_min_confidence_is_the_old_name_of_promote_threshold(tmp_path: Path) -> None:
    old = load_config(write(tmp_path, "[prediction]\nmin_confidence = 0.3\n"))
    new = load_config(write(tmp_path, "[prediction]\npromote_threshold = 0.3\n", "n.toml"))
    assert old == new
    assert old.prediction.promote_threshold == 0.3
    assert old.prediction.min_confidence == 0.3


def test_old_names_work_as_overrides() -> None:
    old = load_config(
        None,
        {"content_types.media.prefetch_threshold": "0.1", "prediction.min_confidence": "0.2"},
    )
    new = load_config(
        None, {"content_types.media.keep_weight": "0.1", "prediction.promote_threshold": "0.2"}
    )
    assert old == new
    assert (old.content_types["media"].keep_weight, old.prediction.promote_threshold) == (0.1, 0.2)


def test_an_old_name_is_noted_with_its_line_and_new_name(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write(tmp_path, "[prediction]\nwindow_size = 10\nmin_confidence = 0.3\n")
    with caplog.at_level(logging.WARNING, logger="cachefs.config"):
        load_config(path, {"content_types.config.prefetch_threshold": "0.5"})
    assert notes(caplog) == [
        f"{path}:3: prediction.min_confidence: renamed prediction.promote_threshold "
        "(the same setting); the old name still works",
        "-o content_types.config.prefetch_threshold=0.5: content_types.config.prefetch_threshold: "
        "renamed content_types.config.keep_weight (the same setting); the old name still works",
    ]
    assert all(r.levelno == logging.WARNING for r in caplog.records)


def test_new_names_are_not_noted(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = write(tmp_path, "[prediction]\npromote_threshold = 0.3\n")
    with caplog.at_level(logging.DEBUG, logger="cachefs.config"):
        load_config(path, {"content_types.media.keep_weight": "0.5"})
        load_config(None)
    assert notes(caplog) == []


@pytest.mark.parametrize(
    ("text", "line", "key", "earlier"),
    [
        (
            "[content_types.media]\nkeep_weight = 0.5\nprefetch_threshold = 0.5\n",
            3,
            "prefetch_threshold",
            "keep_weight at {path}:2",
        ),
        (
            "[content_types.media]\nprefetch_threshold = 0.5\n\nkeep_weight = 0.4\n",
            4,
            "keep_weight",
            "prefetch_threshold at {path}:2",
        ),
    ],
)
def test_old_and_new_name_in_one_file_is_an_error(
    tmp_path: Path, text: str, line: int, key: str, earlier: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    earlier = earlier.format(path=path)
    assert str(info.value) == (
        f"{path}:{line}: content_types.media.{key}: content_types.media.prefetch_threshold "
        "is the old name of content_types.media.keep_weight, and both are set "
        f"(content_types.media.{earlier}); keep only keep_weight"
    )
    assert (info.value.key, info.value.where) == (f"content_types.media.{key}", f"{path}:{line}")


def test_old_and_new_name_as_overrides_is_an_error() -> None:
    overrides = {"prediction.promote_threshold": "0.5", "prediction.min_confidence": "0.4"}
    with pytest.raises(ConfigError) as info:
        load_config(None, overrides)
    assert str(info.value) == (
        "-o prediction.min_confidence=0.4: prediction.min_confidence: "
        "prediction.min_confidence is the old name of prediction.promote_threshold, and both "
        "are set (prediction.promote_threshold at -o prediction.promote_threshold=0.5); "
        "keep only promote_threshold"
    )
    assert info.value.key == "prediction.min_confidence"


def test_an_override_beats_the_file_whatever_name_either_uses(tmp_path: Path) -> None:
    path = write(tmp_path, "[prediction]\nmin_confidence = 0.3\n")
    cfg = load_config(path, {"prediction.promote_threshold": "0.9"})
    assert cfg.prediction.promote_threshold == 0.9
    path = write(tmp_path, "[prediction]\npromote_threshold = 0.3\n")
    cfg = load_config(path, {"prediction.min_confidence": "0.8"})
    assert cfg.prediction.promote_threshold == 0.8


def test_bad_values_under_the_old_names_name_the_old_key(tmp_path: Path) -> None:
    path = write(tmp_path, "[prediction]\nmin_confidence = 2\n")
    with pytest.raises(ConfigError, match=r":2: prediction\.min_confidence: must be between"):
        load_config(path)
    path = write(tmp_path, '[content_types.media]\nkeep_weight = "high"\n')
    with pytest.raises(ConfigError, match=r":2: content_types\.media\.keep_weight: expected a"):
        load_config(path)


# --------------------------------------------------------------------------- retired RAM keys


@pytest.mark.parametrize("text", ['min_free = "0"', "min_free = 0", 'eviction = "lru"'])
def test_retired_ram_keys_load_with_a_note(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, text: str
) -> None:
    path = write(tmp_path, f'[tiers.ram]\nmax_size = "1GiB"\n{text}\n')
    with caplog.at_level(logging.WARNING, logger="cachefs.config"):
        cfg = load_config(path)
    assert cfg.tiers["ram"] == dataclasses.replace(default_config().tiers["ram"], max_size=1 << 30)
    key = text.split(" ")[0]
    (note,) = notes(caplog)
    assert note.startswith(f"{path}:3: tiers.ram.{key}: ignored: the RAM tier ")
    assert note.endswith("; remove it")


def test_a_ram_reserve_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, '[tiers.ram]\nttl = "1h"\nmin_free = "64MiB"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == (
        f"{path}:3: tiers.ram.min_free: the RAM tier has no file system to keep free; "
        "remove it (min_free is for ssd and hdd)"
    )
    assert (info.value.key, info.value.where) == ("tiers.ram.min_free", f"{path}:3")
    with pytest.raises(ConfigError) as info:
        load_config(None, {"tiers.ram.min_free": "1"})
    assert str(info.value).startswith("-o tiers.ram.min_free=1: tiers.ram.min_free: the RAM tier")


def test_the_ram_tier_has_one_eviction_policy(tmp_path: Path) -> None:
    path = write(tmp_path, '[tiers.ram]\neviction = "lfu"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == (
        f"{path}:2: tiers.ram.eviction: invalid RAM tier eviction policy 'lfu' "
        "(expected one of: lru)"
    )
    assert load_config(None, {"tiers.ram.eviction": "lru"}) == default_config()


def test_hints_do_not_suggest_old_or_retired_keys(tmp_path: Path) -> None:
    path = write(tmp_path, "[tiers.ram]\nmin_fre = 0\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "expected one of: max_size, ttl, scan_resistant" in str(info.value)
    path = write(tmp_path, "[prediction]\nmin_confidenc = 0.5\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "min_confidence" not in str(info.value)


def test_disk_tiers_keep_their_eviction_and_min_free(tmp_path: Path) -> None:
    path = write(tmp_path, '[tiers.ssd]\neviction = "weight"\nmin_free = "2GiB"\n')
    ssd = load_config(path).tiers["ssd"]
    assert (ssd.eviction, ssd.min_free) == ("weight", 2 << 30)


# --------------------------------------------------------------------------- writing


def test_the_writer_uses_the_new_names_only() -> None:
    text = config_to_toml(default_config())
    assert "keep_weight = 0.7" in text
    assert "promote_threshold = 0.6" in text
    for gone in ("prefetch_threshold", "min_confidence"):
        assert gone not in text
    ram = text.split("[tiers.ram]\n", 1)[1].split("\n\n", 1)[0]
    assert ram == 'max_size = "512MiB"\nttl = "1h"\nscan_resistant = true'


def test_an_old_config_show_file_loads_to_the_defaults_and_is_rewritten(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="cachefs.config"):
        cfg = load_config(OLD_CONFIG_SHOW)
    # It writes the defaults of its day: ssd lfu, hdd weight (tinylfu since issue 13),
    # and a file's explicit choice is kept.
    defaults = default_config()
    tiers = dict(defaults.tiers)
    tiers["ssd"] = dataclasses.replace(tiers["ssd"], eviction="lfu")
    tiers["hdd"] = dataclasses.replace(tiers["hdd"], eviction="weight")
    assert cfg == dataclasses.replace(defaults, tiers=tiers, source=cfg.source)
    assert len(notes(caplog)) == 2 + len(CONTENT_TYPES) + 1  # ram x2, weights, threshold
    again = load_config(write(tmp_path, config_to_toml(cfg)))
    assert again == cfg


def test_config_show_prints_the_note_on_stderr_and_the_new_names(tmp_path: Path) -> None:
    path = write(tmp_path, "[prediction]\nmin_confidence = 0.4\n")
    result = run_cachefs("config", "show", "--config", str(path))
    assert result.returncode == 0, result.stderr
    assert "promote_threshold = 0.4" in result.stdout
    assert "min_confidence" not in result.stdout
    assert f"{path}:2: prediction.min_confidence: renamed prediction.promote_threshold" in (
        result.stderr
    )


# --------------------------------------------------------------------------- the schema


def test_every_old_name_points_at_a_key_of_its_table() -> None:
    def walk(node: dict, prefix: tuple[str, ...]) -> list[tuple[str, ...]]:
        found = []
        for key, spec in node.items():
            if isinstance(spec, Field):
                if spec.renamed_to is not None:
                    target = node[spec.renamed_to]
                    assert isinstance(target, Field) and target.current
                    assert (target.kind, target.check) == (spec.kind, spec.check)
                    found.append((*prefix, key))
            else:
                found += walk(spec, (*prefix, key))
        return found

    renamed = walk(SCHEMA, ())
    assert ("prediction", "min_confidence") in renamed
    assert ("content_types", "media", "prefetch_threshold") in renamed
    assert not any(path in renamed for path in leaves())
