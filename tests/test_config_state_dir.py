"""state_dir: where pins.json, metadata.sqlite and the embedded stats live; unset = the SSD
tier's directory (where they always were), and state_directory() says which."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from cachefs.config import (
    TOP_LEVEL_KEYS,
    Config,
    ConfigError,
    config_to_toml,
    default_config,
    load_config,
    state_directory,
)

from .conftest import run_cachefs


def write(tmp_path: Path, text: str, name: str = "cachefs.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def load_error(tmp_path: Path, text: str) -> tuple[ConfigError, str]:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return info.value, str(path)


def test_unset_by_default_meaning_the_ssd_tier_directory() -> None:
    cfg = default_config()
    assert cfg.state_dir is None
    assert TOP_LEVEL_KEYS == ("state_dir",)
    assert state_directory(cfg) == Path("/var/cache/cachefs/ssd")
    moved = load_config(None, {"tiers.ssd.path": "/srv/fast/ssd"})
    assert moved.state_dir is None
    assert state_directory(moved) == Path("/srv/fast/ssd")  # follows the tier when unset


def test_from_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, 'state_dir = "/var/lib/cachefs"\n\n[tiers.ram]\nttl = "2h"\n')
    cfg = load_config(path)
    assert cfg.state_dir == Path("/var/lib/cachefs")
    assert state_directory(cfg) == Path("/var/lib/cachefs")
    assert cfg.tiers["ssd"].path == Path("/var/cache/cachefs/ssd")  # the tiers stay put
    assert cfg == dataclasses.replace(
        load_config(write(tmp_path, '[tiers.ram]\nttl = "2h"\n', "plain.toml")),
        state_dir=Path("/var/lib/cachefs"),
    )


def test_a_relative_path_is_next_to_the_file_and_tilde_expands(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    path = write(tmp_path, 'state_dir = "../state"\n', "etc/cachefs.toml")
    assert load_config(path).state_dir == tmp_path / "state"
    path = write(tmp_path, 'state_dir = "~/cachefs-state"\n')
    assert load_config(path).state_dir == Path(os.path.expanduser("~/cachefs-state"))


def test_from_an_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_config(None, {"state_dir": "/run/cachefs"}).state_dir == Path("/run/cachefs")
    path = write(tmp_path, 'state_dir = "/from/file"\n')
    assert load_config(path, {"state_dir": "/from/o"}).state_dir == Path("/from/o")
    monkeypatch.chdir(tmp_path)
    assert load_config(None, {"state_dir": "rel"}).state_dir == tmp_path / "rel"


@pytest.mark.parametrize(
    ("text", "line", "problem"),
    [
        ("state_dir = 5\n", 1, "expected a directory path string, got integer 5"),
        ("# state\n\nstate_dir = true\n", 3, "expected a directory path string, got boolean true"),
        ('state_dir = ""\n', 1, "expected a directory path, got an empty string"),
        ('state_dir = ["/a"]\n', 1, "expected a directory path string, got an array"),
        ("[state_dir]\npath = '/a'\n", 1, "expected a directory path string, got a table"),
    ],
)
def test_a_bad_value_names_the_key_and_line(
    tmp_path: Path, text: str, line: int, problem: str
) -> None:
    error, name = load_error(tmp_path, text)
    assert str(error) == f"{name}:{line}: state_dir: {problem}"
    assert (error.key, error.where) == ("state_dir", f"{name}:{line}")


def test_inside_a_table_it_is_a_top_level_key(tmp_path: Path) -> None:
    error, name = load_error(tmp_path, '[metadata]\npersist = true\nstate_dir = "/x"\n')
    assert str(error) == (
        f"{name}:3: metadata.state_dir: state_dir is a top-level key: "
        "write it before the first [table]"
    )


@pytest.mark.parametrize(
    ("value", "problem"),
    [("", "expected a directory path, got an empty string"), ("   ", "got an empty string")],
)
def test_a_bad_override_names_the_option(value: str, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, {"state_dir": value})
    assert str(info.value).startswith(f"-o state_dir={value}: state_dir: ")
    assert problem in str(info.value)
    assert info.value.key == "state_dir"


def test_round_trip(tmp_path: Path) -> None:
    for state_dir in (Path("/var/lib/cachefs"), Path('/srv/"odd" dir/\u00e9t\u00e9\\x')):
        cfg = dataclasses.replace(default_config(), state_dir=state_dir)
        text = config_to_toml(cfg)
        first_table = text.index("\n[")
        assert text.index("state_dir = ") < first_table  # before any table, as TOML needs
        assert load_config(write(tmp_path, text)) == cfg
        assert cfg != default_config()  # part of the value, unlike source


def test_unset_is_written_as_a_comment(tmp_path: Path) -> None:
    text = config_to_toml(default_config())
    assert "\n# state_dir unset: the ssd tier's directory (tiers.ssd.path)\n" in text
    assert "\nstate_dir =" not in text
    assert load_config(write(tmp_path, text)).state_dir is None


def test_config_is_built_with_it_or_without() -> None:
    base = default_config()
    fields = {f.name: getattr(base, f.name) for f in dataclasses.fields(Config)}
    del fields["state_dir"]
    assert Config(**fields).state_dir is None  # a keyword with a default: old callers work


def test_config_show_prints_it(tmp_path: Path) -> None:
    path = write(tmp_path, f'state_dir = "{tmp_path}/state"\n')
    result = run_cachefs("config", "show", "--config", str(path))
    assert result.returncode == 0, result.stderr
    assert f'\nstate_dir = "{tmp_path}/state"\n' in result.stdout


def test_a_bad_state_dir_stops_the_mount(tmp_path: Path, origin: Path) -> None:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    config = write(tmp_path, "\nstate_dir = 7\n", "cfg.toml")
    result = run_cachefs("mount", "-f", str(origin), str(mnt), "--config", str(config))
    assert result.returncode == 2, result.stderr
    assert f"{config}:2: state_dir: expected a directory path string" in result.stderr
    assert "nothing mounted" in result.stderr
    assert not os.path.ismount(mnt)
