"""Periodic background tasks that run in the trio nursery beside pyfuse3.main."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

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
