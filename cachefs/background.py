"""Periodic background tasks that run in the trio nursery beside pyfuse3.main."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import redis
import trio

if TYPE_CHECKING:
    from .fs import CacheFS

log = logging.getLogger(__name__)


async def janitor(fs: CacheFS) -> None:
    """Every cleanup_interval: expire chunks past their tier's TTL, persist indexes."""
    while True:
        await trio.sleep(fs.cfg.monitoring.cleanup_interval)
        await clean_once(fs)


async def clean_once(fs: CacheFS) -> None:
    expired = fs.ram.expire(time.monotonic() - fs.cfg.tiers["ram"].ttl)
    for tier in fs.disks.values():
        if not tier.ready.is_set():
            continue
        expired += await trio.to_thread.run_sync(tier.sweep_expired)
        await trio.to_thread.run_sync(tier.save_index)
    if expired:
        log.info("janitor: %d chunks expired", expired)


class Flusher:
    """Hands the stats deltas to the backend every stats_interval.

    A failing backend (Redis gone) never blocks anything: the batch goes back,
    the outage is logged once, and flushes are retried with a growing delay
    (1 s, 2 s, ... up to the interval) until one succeeds.
    """

    def __init__(self, fs: CacheFS) -> None:
        self.fs = fs
        self.failing = False

    async def run(self) -> None:
        interval = self.fs.cfg.monitoring.stats_interval
        delay = interval
        while True:
            await trio.sleep(delay)
            if await self.flush_once():
                delay = interval
            else:
                delay = min(interval, 1.0 if delay >= interval else delay * 2)

    async def flush_once(self) -> bool:
        stats, backend = self.fs.stats, self.fs.stats_backend
        batch = stats.take_batch()
        if not batch:
            return True
        try:
            await trio.to_thread.run_sync(backend.flush, batch)
        except (redis.RedisError, OSError) as exc:
            stats.give_back(batch)
            if not self.failing:
                log.warning("stats: %s backend unavailable, keeping counts: %s", backend.name, exc)
            self.failing = True
            return False
        if self.failing:
            log.warning("stats: %s backend is back; pending counts flushed", backend.name)
        self.failing = False
        return True
