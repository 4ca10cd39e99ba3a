"""``cachefs simulate``: the trace reader, the replay against the real tier classes,
the whole stack, and the command's interface."""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from cachefs.app.cli import cli
from cachefs.config import EVICTION_POLICIES, TierConfig, default_config
from cachefs.data import simulate as sim
from cachefs.data.chunks import ChunkKey
from cachefs.data.tiers import chunkfile
from cachefs.data.tiers.disk import DiskTier, allocated
from cachefs.data.tiers.ram import RamTier
from cachefs.origin.access import FileVersion
from cachefs.stats.counters import Stats

NAMESPACE = b"n" * 32


def small_trace(n: int = 3000, seed: int = 5) -> sim.Trace:
    """Zipf-ish object ids with mixed sizes, a scan in the middle."""
    rng = random.Random(seed)
    trace = sim.Trace()
    for i in range(n):
        popular = min(int(rng.paretovariate(1.0)), 200)
        obj = 10_000 + i if n // 3 <= i < n // 3 + 300 else popular  # a one-time scan
        trace.append(i * 0.5, obj, 1000 + (obj % 5) * 700)
    return trace


# --------------------------------------------------------------------------- the reader


def test_the_reader_is_liberal() -> None:
    lines = [
        "timestamp,obj_id,size",  # a header
        "# a comment",
        "",
        "1,42,4096",
        "2, 43 ,100,extra,columns",
        "3 44 512",  # whitespace-separated
        "4,movie.mkv,2048",  # an id that is not a number
        "5,movie.mkv",  # no size: 1
        "6.5,42,4096",
    ]
    trace = sim.parse_trace(lines)
    assert trace.times == [1.0, 2.0, 3.0, 4.0, 5.0, 6.5]
    assert trace.objects[:3] == [42, 43, 44]
    assert trace.objects[3] == trace.objects[4] < 0  # mapped, never a numeric id
    assert trace.sizes == [4096, 100, 512, 2048, 1, 4096]
    assert trace.working_set() == 4096 + 100 + 512 + 1
    assert trace.working_set(objects=True) == 4


def test_the_reader_needs_no_header_and_names_a_bad_line() -> None:
    assert len(sim.parse_trace(["1,2,3", "2,3,4"])) == 2
    with pytest.raises(sim.TraceError, match="trace:3: not a timestamp"):
        sim.parse_trace(["1,2,3", "2,3,4", "x,1,1"])
    with pytest.raises(sim.TraceError, match="not a size"):
        sim.parse_trace(["1,2,big"])


# --------------------------------------------------------------------------- same hits as the tiers


@pytest.mark.parametrize("scan_resistant", [True, False])
def test_the_ram_replay_gives_exactly_the_hits_of_the_ram_tier(scan_resistant: bool) -> None:
    trace = small_trace()
    capacity = 40_000
    result = sim.simulate_tier(trace, capacity, tier="ram", scan_resistant=scan_resistant)
    now = [0.0]
    tier = RamTier(capacity, scan_resistant, clock=lambda: now[0])
    hits = 0
    for when, obj, size in zip(trace.times, trace.objects, trace.sizes, strict=True):
        now[0] = when
        key = ChunkKey(FileVersion(obj, 0, 0, 0), 0, 0)
        if tier.get(key) is not None:
            hits += 1
        else:
            tier.put(key, b"x" * size)
    assert result["requests"] == len(trace)
    assert result["miss_ratio"] == pytest.approx(1 - hits / len(trace), abs=0)


@pytest.mark.parametrize("eviction", EVICTION_POLICIES)
def test_the_disk_replay_gives_exactly_the_hits_of_a_disk_tier(
    tmp_path: Path, eviction: str
) -> None:
    """A real DiskTier (files and all) and the simulator's model, fed the same trace
    and the same keys (chunk digests), hit and miss on the same requests."""
    trace = small_trace(1500)
    capacity = 40 * 4096
    now = [1e6]
    real = DiskTier(
        TierConfig("ssd", tmp_path, capacity, eviction, 1e9, 0), NAMESPACE, Stats(), lambda: now[0]
    )
    real.open()
    real.load_index()
    model = sim.DiskModel(
        capacity, eviction, size_of=lambda n: allocated(chunkfile.HEADER_SIZE + n)
    )
    for when, obj, size in zip(trace.times, trace.objects, trace.sizes, strict=True):
        now[0] = 1e6 + when
        key = ChunkKey(FileVersion(obj, size, 0, 0), size, 0)
        digest = key.digest(NAMESPACE)
        real_hit = real.get(key) is not None
        if not real_hit:
            real.put(key, b"x" * size, None)
        assert model.access(digest, size, now[0]) == real_hit
    assert set(model.policy.keys()) == set(real.policy.keys())
    assert model.evictions > 0


# --------------------------------------------------------------------------- the stack


def test_the_stack_promotes_what_earns_it_and_serves_it_from_the_ssd() -> None:
    trace = sim.Trace()
    t = 0.0
    for _ in range(4):  # four watches of a small "movie", an hour apart
        for chunk in range(20):
            trace.append(t, chunk, 1 << 20)
            t += 1.0
        t += 3600
    cfg = sim.StackConfig(ssd=1 << 30, hdd=4 << 30, home="hdd", weight=0.7)  # 42 MiB/h
    result = sim.simulate_stack(trace, cfg)
    # first watch from the origin; second and third from the HDD (the third earns
    # the move); the fourth from the SSD.
    assert result["promotions"] == 20
    assert result["tiers"]["hdd"]["hits"] == 40
    assert result["tiers"]["ssd"]["hits"] == 20
    assert result["miss_ratio"] == pytest.approx(0.25)


def test_a_rewatch_does_not_promote() -> None:
    trace = sim.Trace()
    for watch in range(2):
        for chunk in range(20):
            trace.append(watch * 7200 + chunk, chunk, 1 << 20)
    cfg = sim.StackConfig(ssd=1 << 30, hdd=4 << 30, home="hdd", weight=0.7)
    assert sim.simulate_stack(trace, cfg)["promotions"] == 0


def four_watches() -> sim.Trace:
    """A small "movie" (20 chunks of 1 MiB) watched four times, an hour apart."""
    trace = sim.Trace()
    t = 0.0
    for _ in range(4):
        for chunk in range(20):
            trace.append(t, chunk, 1 << 20)
            t += 1.0
        t += 3600
    return trace


def test_the_stack_takes_the_promotion_costs() -> None:
    base = sim.StackConfig(ssd=1 << 30, hdd=4 << 30, home="hdd", weight=0.7)
    no_budget = dataclasses.replace(base, promote_rewrites_per_day=0.0)
    assert sim.simulate_stack(four_watches(), no_budget)["promotions"] == 0
    # a move as dear as one read: the second watch (one re-read, 0.7 >= 0.6) earns it
    cheap = dataclasses.replace(base, promote_move_cost=1.0)
    result = sim.simulate_stack(four_watches(), cheap)
    assert result["promotions"] == 20
    assert result["tiers"]["ssd"]["hits"] == 40 and result["tiers"]["hdd"]["hits"] == 20


def test_each_tier_stream_is_what_reached_that_tier() -> None:
    """RAM sees every request; the SSD exactly those the RAM tier missed (the stack's
    RAM behaves as a RAM tier alone: nothing below changes what it holds); the HDD
    what the SSD missed of those."""
    trace = small_trace()
    streams: dict[str, sim.Trace] = {}
    cfg = sim.StackConfig(ram=10_000, ssd=30_000, hdd=100_000)
    result = sim.simulate_stack(trace, cfg, streams)
    assert set(streams) == {"ram", "ssd", "hdd"}
    assert streams["ram"].objects == trace.objects and streams["ram"].sizes == trace.sizes
    ram = sim.RamModel(10_000)
    missed = [
        (when, obj)
        for when, obj, size in zip(trace.times, trace.objects, trace.sizes, strict=True)
        if not ram.access(obj, size, when)
    ]
    assert list(zip(streams["ssd"].times, streams["ssd"].objects, strict=True)) == missed
    for name, stream in streams.items():
        assert len(stream) == result["tiers"][name]["requests"]
    assert len(streams["hdd"]) == len(streams["ssd"]) - result["tiers"]["ssd"]["hits"]
    plain = sim.simulate_stack(trace, cfg)  # keeping the streams changes nothing
    for r in (plain, result):
        r.pop("cpu_us_per_request")
    assert plain == result


# --------------------------------------------------------------------------- the command


def write_trace(path: Path, trace: sim.Trace) -> Path:
    rows = zip(trace.times, trace.objects, trace.sizes, strict=True)
    path.write_text("".join(f"{t},{o},{s}\n" for t, o, s in rows))
    return path


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["simulate", *args])
    return result.exit_code, result.stdout, result.stderr


def test_the_command_prints_the_documented_json(tmp_path: Path) -> None:
    path = write_trace(tmp_path / "t.csv", small_trace())
    code, out, _ = run(str(path), "--size", "20000", "--size", "5%", "--tier", "ssd", "--json")
    assert code == 0
    results = json.loads(out)["results"]
    five = sim.size_in_units("5%", small_trace(), False, int)
    assert [r["size"] for r in results] == [20000, five]
    for r in results:
        assert set(r) == {"size", "requests", "miss_ratio", "byte_miss_ratio"}
        assert r["requests"] == 3000
        assert 0 <= r["miss_ratio"] <= 1 and 0 <= r["byte_miss_ratio"] <= 1
    eviction = default_config().tiers["ssd"].eviction
    expect = sim.simulate_tier(small_trace(), 20000, tier="ssd", eviction=eviction)
    assert results[0]["miss_ratio"] == expect["miss_ratio"]


def test_the_command_uses_the_configured_policy_and_counts_objects(tmp_path: Path) -> None:
    path = write_trace(tmp_path / "t.csv", small_trace())
    code, out, _ = run(
        str(path), "--size", "30", "--objects", "-o", "tiers.hdd.eviction=lru", "--tier", "hdd"
    )
    assert code == 0, out
    expect = sim.simulate_tier(small_trace(), 30, tier="hdd", eviction="lru", objects=True)
    assert f"miss ratio {expect['miss_ratio']:.4f}" in out
    assert "30 objects" in out


def test_the_command_simulates_the_stack(tmp_path: Path) -> None:
    path = write_trace(tmp_path / "t.csv", small_trace())
    code, out, _ = run(str(path), "--ram", "10000", "--ssd", "30000", "--ssd", "60000", "--json")
    assert code == 0
    results = json.loads(out)["results"]
    assert [(r["ram"], r["ssd"], r["hdd"]) for r in results] == [
        (10000, 30000, 0),
        (10000, 60000, 0),
    ]
    assert set(results[0]["tiers"]) == {"ram", "ssd"}
    assert results[1]["miss_ratio"] <= results[0]["miss_ratio"]


def test_the_command_refuses_mixed_or_missing_sizes(tmp_path: Path) -> None:
    path = write_trace(tmp_path / "t.csv", small_trace(100))
    assert run(str(path))[0] == 2
    code, _, err = run(str(path), "--size", "1000", "--ssd", "1000")
    assert code == 2 and "not both" in err
    code, _, err = run(str(path), "--size", "-5")
    assert code == 2


@pytest.mark.parametrize("sizes", [("--size", "1000"), ("--ram", "1000", "--ssd", "2000")])
def test_compare_says_clearly_when_libcachesim_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sizes: tuple[str, ...]
) -> None:
    def missing() -> None:
        raise sim.ReferencesUnavailable("the reference policies need libCacheSim's bindings")

    monkeypatch.setattr(sim, "libcachesim", missing)
    path = write_trace(tmp_path / "t.csv", small_trace(100))
    code, out, err = run(str(path), *sizes, "--compare")
    assert code == 1
    assert "--compare: the reference policies need libCacheSim" in err
    assert out == ""


def test_compare_runs_the_references_beside_it(tmp_path: Path) -> None:
    pytest.importorskip("libcachesim")
    path = write_trace(tmp_path / "t.csv", small_trace())
    code, out, _ = run(str(path), "--size", "10%", "--compare", "--json")
    assert code == 0
    (result,) = json.loads(out)["results"]
    assert set(result["reference"]) == set(sim.REFERENCES)
    lru = result["reference"]["LRU"]
    assert 0 < lru["miss_ratio"] < 1


def test_stack_compare_feeds_each_reference_its_trace_and_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Which requests and capacity each reference gets, without libCacheSim (a
    stand-in that reports them back as its ratios): the whole trace at the stack's
    total size, and each tier's own requests at the tier's size."""
    trace = small_trace()
    monkeypatch.setattr(sim, "libcachesim", lambda: None)

    def reference(t: sim.Trace, capacity: int, policy: str, objects: bool) -> dict[str, Any]:
        assert objects is False
        share = sum(t.sizes) / sum(trace.sizes)
        return {"miss_ratio": capacity / 1e6, "byte_miss_ratio": share, "policy": policy}

    monkeypatch.setattr(sim, "simulate_reference", reference)
    path = write_trace(tmp_path / "t.csv", trace)
    code, out, _ = run(str(path), "--ram", "10000", "--ssd", "30000", "--compare", "--json")
    assert code == 0, out
    (result,) = json.loads(out)["results"]
    streams: dict[str, sim.Trace] = {}
    sim.simulate_stack(trace, sim.StackConfig(ram=10_000, ssd=30_000), streams)
    assert result["reference_size"] == 40_000
    assert result["reference"] == {
        name: {"miss_ratio": 0.04, "byte_miss_ratio": 1.0} for name in sim.REFERENCES
    }
    for tier, size in (("ram", 10_000), ("ssd", 30_000)):
        share = sum(streams[tier].sizes) / sum(trace.sizes)
        assert result["tiers"][tier]["reference"] == {
            name: {"hit_ratio": pytest.approx(1 - size / 1e6), "byte_hit_ratio": 1 - share}
            for name in sim.REFERENCES
        }
    assert 0 < sum(streams["ssd"].sizes) < sum(trace.sizes)  # the SSD saw RAM's misses only
    code, text, _ = run(str(path), "--ram", "10000", "--ssd", "30000", "--compare")
    assert code == 0
    assert "  one cache of 39.1KiB: miss ratio LRU 0.0400" in text
    assert "  ssd 29.3KiB, its requests: hits " in text


def test_stack_compare_runs_the_references_beside_it(tmp_path: Path) -> None:
    pytest.importorskip("libcachesim")
    trace = small_trace()
    path = write_trace(tmp_path / "t.csv", trace)
    code, out, _ = run(str(path), "--ram", "20000", "--ssd", "60000", "--compare", "--json")
    assert code == 0
    (result,) = json.loads(out)["results"]
    assert set(result["reference"]) == set(sim.REFERENCES)
    one_cache = sim.simulate_reference(trace, 80_000, "LRU")
    assert result["reference"]["LRU"]["miss_ratio"] == one_cache["miss_ratio"]
    in_ram = sim.simulate_reference(trace, 20_000, "ARC")  # RAM's stream: the whole trace
    assert result["tiers"]["ram"]["reference"]["ARC"]["hit_ratio"] == 1 - in_ram["miss_ratio"]
    assert 0 < result["tiers"]["ssd"]["reference"]["LRU"]["hit_ratio"] < 1


def test_the_command_takes_the_promotion_costs(tmp_path: Path) -> None:
    path = write_trace(tmp_path / "t.csv", four_watches())
    stack = ("--ssd", "1GiB", "--hdd", "4GiB", "--type", "media", "--json")

    def promotions(*options: str) -> int:
        code, out, _ = run(str(path), *stack, *options)
        assert code == 0, out
        return int(json.loads(out)["results"][0]["promotions"])

    assert promotions() == 20
    assert promotions("-o", "prediction.promote_rewrites_per_day=0") == 0
    assert promotions("-o", "prediction.promote_move_cost=10") == 0


def test_plot_writes_a_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    path = write_trace(tmp_path / "t.csv", small_trace())
    png = tmp_path / "curve.png"
    code, _, _ = run(str(path), "--size", "5%", "--size", "20%", "--plot", str(png))
    assert code == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_of_a_stack_compare_writes_a_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    pytest.importorskip("libcachesim")
    path = write_trace(tmp_path / "t.csv", small_trace())
    png = tmp_path / "curve.png"
    sizes = ("--ram", "10000", "--ssd", "30000", "--ssd", "60000")
    code, _, _ = run(str(path), *sizes, "--compare", "--plot", str(png))
    assert code == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_an_access_log_puts_each_chunk_in_its_types_home_tier(tmp_path: Path) -> None:
    """The mount's access log names each chunk's content type: the stack stores it in
    that type's home tier (media: the HDD), unless --type says otherwise."""
    path = tmp_path / "access.csv"
    rows = [f"{t},{t % 10},1048576,media,origin" for t in range(20)]
    path.write_text("timestamp,obj_id,size,content_type,tier\n" + "\n".join(rows) + "\n")
    trace = sim.read_trace(path)
    assert trace.has_types() and trace.served == {"origin": 20}
    code, out, _ = run(str(path), "--ssd", "1GiB", "--hdd", "1GiB", "--json")
    assert code == 0
    report = json.loads(out)
    (result,) = report["results"]
    assert result["tiers"]["hdd"]["hits"] == 10 and result["tiers"]["ssd"]["hits"] == 0
    assert report["recorded"] == {"requests": 20, "served": {"origin": 20}, "miss_ratio": 1.0}
    code, out, _ = run(str(path), "--ssd", "1GiB", "--hdd", "1GiB", "--type", "user_data", "--json")
    (result,) = json.loads(out)["results"]
    assert result["tiers"]["ssd"]["hits"] == 10
    code, out, _ = run(str(path), "--size", "1GiB")
    assert code == 0 and out.startswith("recorded by the mount: 20 requests, miss ratio 1.0000")


def test_a_plain_trace_has_no_types_and_no_record() -> None:
    trace = sim.parse_trace(["timestamp,obj_id,size,tier", "1,2,3,ram"])
    assert not trace.has_types() and trace.served == {"ram": 1}
    trace = sim.parse_trace(["1,2,3,media,ram"])  # no header: extra columns mean nothing
    assert not trace.has_types() and trace.served == {}
