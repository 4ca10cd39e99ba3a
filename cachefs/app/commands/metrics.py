"""The numbers ``status`` and ``stats`` derive from a mount's stats xattr.

All count since the mount started (the daemon's counters, not the stats
backend's totals), and only reads that reached cachefs: what the kernel's page
cache answered never does.

* **bytes served**: what reads through the mount got (``fuse_read_bytes_served``);
* **cache bytes served**: the part of it a tier (RAM, SSD or HDD) answered
  (the sum of ``tier_bytes``); a chunk that read-ahead fetched before the
  reader asked for it counts here, since the reader did not wait on the origin;
* **hit ratio**: cache bytes served / bytes served (a byte hit ratio);
* **origin bytes saved**: bytes served - ``origin_bytes_read``: what the origin
  would have sent without the cache, less what it did send. It is negative
  while the cache fetches more than is read (whole chunks for short reads,
  read-ahead a reader does not use).
"""

from __future__ import annotations

import time
from typing import Any

from cachefs.app.commands.output import TIERS, ratio


def tier_fill(stats: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per tier: ``used`` bytes (disk tiers: in whole 4 KiB blocks), ``max`` bytes,
    ``chunks``, ``fill`` (used / max) and, for a disk tier that has stopped
    caching (min_free), ``not_caching_reason``."""
    fills = {}
    tiers = stats.get("tiers", {})
    for name in [*[t for t in TIERS if t in tiers], *sorted(set(tiers) - set(TIERS))]:
        tier = tiers[name]
        used, most = int(tier.get("bytes", 0)), int(tier.get("max_size", 0))
        fills[name] = {
            "used": used,
            "max": most,
            "chunks": int(tier.get("chunks", 0)),
            "fill": ratio(used, most),
            "not_caching_reason": tier.get("not_caching_reason"),
        }
    return fills


def traffic(stats: dict[str, Any]) -> dict[str, Any]:
    """Bytes served, from the cache, from the origin; hit ratio; origin bytes saved."""
    served = stats.get("fuse_read_bytes_served")  # None from a daemon older than the key
    cached = sum(stats.get("tier_bytes", {}).values())
    origin = int(stats.get("origin_bytes_read", 0))
    return {
        "bytes_served": served,
        "cache_bytes_served": cached,
        "origin_bytes_read": origin,
        "origin_reads": int(stats.get("origin_reads", 0)),
        "hit_ratio": None if served is None else ratio(min(cached, served), served),
        "origin_bytes_saved": None if served is None else served - origin,
    }


def uptime(stats: dict[str, Any], now: float | None = None) -> float | None:
    started = stats.get("started_at")
    if started is None:
        return None
    return round(max(0.0, (time.time() if now is None else now) - float(started)), 3)


def lookups(stats: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per tier and content type: chunk lookups that hit, missed, the bytes
    the hits served, and that tier's hit ratio (hits / lookups it answered or not)."""
    hits, misses, served = (stats.get(k, {}) for k in ("tier_hits", "tier_misses", "tier_bytes"))
    rows = []
    for key in {*hits, *misses, *served}:
        tier, _, content_type = key.partition(":")
        h, m = int(hits.get(key, 0)), int(misses.get(key, 0))
        rows.append(
            {
                "tier": tier,
                "content_type": content_type,
                "hits": h,
                "misses": m,
                "bytes_served": int(served.get(key, 0)),
                "hit_ratio": ratio(h, h + m),
            }
        )
    order = {name: i for i, name in enumerate(TIERS)}
    rows.sort(key=lambda r: (order.get(r["tier"], len(order)), r["tier"], r["content_type"]))
    return rows
