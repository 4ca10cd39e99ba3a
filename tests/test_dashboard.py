"""mount/grafana-cachefs.json: its queries parse, name only metrics the endpoint serves,
and evaluate (bench/promql.py, what draws docs/dashboard.png) as PromQL would."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

from bench import promql
from cachefs.stats.histogram import Histogram
from cachefs.stats.prometheus import convert

DASHBOARD = Path(__file__).parent.parent / "mount" / "grafana-cachefs.json"
PROCESS_METRICS = {"process_cpu_seconds_total", "process_resident_memory_bytes"}


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def queries() -> list[str]:
    return [t["expr"] for p in dashboard()["panels"] for t in p["targets"]]


def served_names() -> set[str]:
    """Every sample name the endpoint serves for a report with every part filled in."""
    report = {
        "tier_hits": {"ram:media": 1},
        "tier_misses": {"ram:media": 1},
        "tier_bytes": {"ram:media": 1},
        "tiers": {"ram": {"bytes": 1, "max_size": 2}, "ssd": {"bytes": 1, "caching": True}},
        "read_seconds": Histogram().snapshot(),
    }
    return {s.name for family in convert(report) for s in family.samples} | PROCESS_METRICS


def test_the_panels_fit_the_grid_and_have_their_own_ids() -> None:
    panels = dashboard()["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    for panel in panels:
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        assert panel["targets"], panel["title"]
        assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}"


@pytest.mark.parametrize("expr", queries())
def test_every_query_parses_and_names_served_metrics(expr: str) -> None:
    promql.Parser(expr, 10.0).parse()
    names = set(re.findall(r"\b((?:cachefs|process)_[a-z_]+)", expr))
    assert names and names <= served_names(), names - served_names()
    assert 'instance=~"$instance"' in expr  # the mount picker applies to every query


def scrapes_of(*values: tuple[float, dict[tuple[str, promql.Labels], float]]) -> list:
    return list(values)


def lab(**kv: str) -> promql.Labels:
    return frozenset(kv.items())


def test_rate_sum_by_and_division() -> None:
    scrapes = [
        (0.0, {("hits", lab(tier="ram", t="a")): 0.0, ("hits", lab(tier="ram", t="b")): 0.0}),
        (10.0, {("hits", lab(tier="ram", t="a")): 30.0, ("hits", lab(tier="ram", t="b")): 10.0}),
    ]
    got = promql.evaluate("sum by (tier) (rate(hits[1m]))", scrapes, 10.0)
    assert math.isnan(got[lab(tier="ram")][0])  # one sample: no rate
    assert got[lab(tier="ram")][1] == pytest.approx(4.0)
    ratio = promql.evaluate("sum(increase(hits[1m])) / 80", scrapes, 10.0)
    assert ratio[frozenset()][1] == pytest.approx(0.5)
    clamped = promql.evaluate("clamp_max(sum(rate(hits[1m])) / 2, 1)", scrapes, 10.0)
    assert clamped[frozenset()][1] == 1


def test_histogram_quantile_interpolates_as_prometheus() -> None:
    buckets = [(0.1, 50.0), (0.2, 90.0), (math.inf, 100.0)]
    assert promql.histogram_quantile(0.5, list(buckets)) == pytest.approx(0.1)
    assert promql.histogram_quantile(0.7, list(buckets)) == pytest.approx(0.15)
    assert promql.histogram_quantile(0.99, list(buckets)) == pytest.approx(0.2)  # +Inf bucket
    assert math.isnan(promql.histogram_quantile(0.5, [(0.1, 0.0), (math.inf, 0.0)]))


def test_an_unsupported_query_is_refused() -> None:
    with pytest.raises(ValueError):
        promql.Parser("avg_over_time(x[5m])", 10.0).parse()
