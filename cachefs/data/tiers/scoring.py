"""DESIGN.md's keep score, defined once: reads x recency x the content type's weight.

The eviction policies (policies.py, tinylfu.py) rank by it or report it, and
the disk tiers promote and demote by ``promotion_score``. Pure functions of
caller-supplied times (float seconds): no clock here.
"""

from __future__ import annotations

__all__ = ["SECONDS_PER_HOUR", "gdsf_score", "keep_score", "promotion_score", "recency_factor"]

SECONDS_PER_HOUR = 3600.0


def recency_factor(last_access: float, now: float) -> float:
    """DESIGN.md's recency factor: 1 / (1 + hours since the last access).

    A last access in the future (clock skew, a restored index) counts as now,
    so the factor stays within (0, 1].
    """
    hours = max(0.0, now - last_access) / SECONDS_PER_HOUR
    return 1.0 / (1.0 + hours)


def keep_score(reads: float, last_access: float, weight: float, now: float) -> float:
    """DESIGN.md's score, the one definition: reads x recency factor x the type's weight."""
    return reads * recency_factor(last_access, now) * weight


def gdsf_score(count: int, last_access: float, weight: float, size: int, now: float) -> float:
    """keep_score per byte, counting every access (the add too): what a byte of this
    chunk is worth keeping (``WeightPolicy.score``).

    Dividing by size makes one big chunk pay for the many small ones it would
    displace; a zero size counts as one byte so an empty chunk is not infinitely
    valuable. Counting the add lets weight and size order chunks read only once.
    """
    return keep_score(count, last_access, weight, now) / max(size, 1)


def promotion_score(count: int, last_access: float, weight: float, now: float) -> float:
    """keep_score of the reads after the first, for promotion and demotion between tiers.

    *count* is a policy's access count, which includes the add: the read that
    brought the chunk in does not count, or every chunk ever read once would
    qualify (1 x 1 x 0.7 > 0.6, media's weight over the default threshold).
    """
    return keep_score(max(0, count - 1), last_access, weight, now)
