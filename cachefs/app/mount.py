"""Mounting: options, the FUSE session, daemonising and the trio main loop.

The checks before mounting are in preflight.py, the mount table in mounttable.py."""

from __future__ import annotations

import functools
import logging
import logging.handlers
import os
import signal
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pyfuse3
import trio

from cachefs.app import compose, sdnotify
from cachefs.app.mounttable import mount_device
from cachefs.app.preflight import (
    DEAD_MOUNT_ERRNOS,
    NOTHING_MOUNTED,
    MountError,
    check_directories,
    check_tier_directories,
    dead_mount,
)
from cachefs.config import TOP_LEVEL_KEYS, Config, ConfigError, load_config, state_directory
from cachefs.data.tiers.disk import TierInUse
from cachefs.fuse.loop import install as install_busy_poll
from cachefs.fuse.operations import CacheFS
from cachefs.meta.changes import WatchUnavailable
from cachefs.origin.access import Origin
from cachefs.stats.counters import StatsUnavailable, open_backend

if TYPE_CHECKING:
    from cachefs.app.exporter import MetricsServer

log = logging.getLogger(__name__)

# mount(8) / fstab / systemd options that concern mount(8) itself, not us.
IGNORED_OPTIONS = frozenset(
    {
        "_netdev",
        "nofail",
        "auto",
        "noauto",
        "user",
        "users",
        "nouser",
        "owner",
        "group",
        "defaults",
        "rw",
        "relatime",
        "strictatime",
        "lazytime",
        "nolazytime",
        "loud",
        "silent",
    }
)
IGNORED_PREFIXES = ("x-", "comment=", "_")
# Options handed to the kernel / libfuse as they are.
FUSE_FLAGS = frozenset(
    {
        "allow_other",
        "allow_root",
        "auto_unmount",
        "ro",
        "nosuid",
        "suid",
        "nodev",
        "dev",
        "noexec",
        "exec",
        "noatime",
        "atime",
        "sync",
        "async",
        "dirsync",
    }
)
FUSE_VALUED = ("fsname=", "subtype=", "max_read=")


@dataclass
class MountOptions:
    fuse: set[str] = field(default_factory=set)
    config_path: str | None = None
    overrides: dict[str, str] = field(default_factory=dict)
    debug: bool = False
    log_file: str | None = None


def parse_mount_options(option_strings: list[str], config_path: str | None = None) -> MountOptions:
    """Sort ``-o`` options into FUSE options, config overrides and our own switches."""
    opts = MountOptions(config_path=config_path)
    for option in (o.strip() for s in option_strings for o in s.split(",")):
        if not option or option in IGNORED_OPTIONS or option.startswith(IGNORED_PREFIXES):
            continue
        if option in FUSE_FLAGS or option.startswith(FUSE_VALUED):
            opts.fuse.add(option)
        elif option == "default_permissions":
            continue  # always on
        elif option == "debug":
            opts.debug = True
        elif option.startswith("config="):
            opts.config_path = option.partition("=")[2]
        elif option.startswith("log="):
            opts.log_file = option.partition("=")[2]
        elif "=" in option and _is_config_key(option.partition("=")[0]):
            key, _, value = option.partition("=")
            opts.overrides[key] = value
        else:
            raise ConfigError(f"-o {option}: unknown mount option")
    return opts


def _is_config_key(key: str) -> bool:
    """A cachefs setting (``tiers.ram.max_size``, ``state_dir``), not a mount(8) option."""
    return "." in key or key in TOP_LEVEL_KEYS


def fuse_options(opts: MountOptions, origin: str) -> set[str]:
    options = set(opts.fuse) | {"default_permissions"}
    if not any(o.startswith("fsname=") for o in options):
        # libfuse splits options on commas; an origin path with one gets a plain name
        options.add(f"fsname={origin}" if "," not in origin else "fsname=cachefs")
    if not any(o.startswith("subtype=") for o in options):
        options.add("subtype=cachefs")
    return options


def setup_logging(opts: MountOptions, foreground: bool) -> None:
    level = logging.DEBUG if opts.debug else logging.INFO
    handler: logging.Handler
    if opts.log_file:
        handler = logging.FileHandler(opts.log_file)
    elif foreground:
        handler = logging.StreamHandler(sys.stderr)
    elif os.path.exists("/dev/log"):
        handler = logging.handlers.SysLogHandler(address="/dev/log")
    else:
        handler = logging.NullHandler()
    handler.setFormatter(
        logging.Formatter("%(asctime)s cachefs[%(process)d] %(levelname)s %(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def set_read_ahead(mountpoint: str, size: int) -> None:
    """Larger kernel read-ahead means fewer, larger FUSE read requests."""
    if size <= 0:
        return
    device = mount_device(mountpoint)
    try:
        if device is None:
            raise OSError("mount not found in /proc/self/mountinfo")
        with open(f"/sys/class/bdi/{device}/read_ahead_kb", "w") as f:
            f.write(str(max(1, size // 1024)))
    except OSError as exc:
        log.info("kernel read-ahead left at its default: %s", exc)


# With mount.writeback_cache the kernel holds a mount's dirty pages up to its
# per-device share of the dirty limit: 1 % for FUSE (~50 MB here), so a file
# written at random is sent to the origin a few pages at a time long before
# fsync. 10 % (of vm.dirty_ratio's limit) lets such a file wait for fsync in
# one piece and stays bounded.
WRITEBACK_MAX_RATIO = 10


def set_dirty_share(mountpoint: str, percent: int) -> None:
    """Let the mount hold *percent* of the dirty page limit (writeback cache)."""
    device = mount_device(mountpoint)
    try:
        if device is None:
            raise OSError("mount not found in /proc/self/mountinfo")
        with open(f"/sys/class/bdi/{device}/max_ratio", "w") as f:
            f.write(str(percent))
    except OSError as exc:
        log.info("dirty page share of the mount left at its default: %s", exc)


def daemonize() -> None:
    """Detach once the mount is up: the parent returns 0 to the shell / mount(8)."""
    if os.fork() > 0:
        os._exit(0)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    os.chdir("/")
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)


async def _terminate_on_signal() -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        async for signum in signals:
            log.info("signal %d: unmounting", signum)
            pyfuse3.terminate()
            return


async def _tune_kernel(fs: CacheFS, cfg: Config, mountpoint: str) -> None:
    # The kernel sets the mount's read-ahead while processing our INIT reply,
    # which is written right after Operations.init(); tune it after that.
    await fs.initialized.wait()
    await trio.sleep(0.05)
    await trio.to_thread.run_sync(set_read_ahead, mountpoint, cfg.mount.read_ahead)
    if cfg.mount.writeback_cache:
        await trio.to_thread.run_sync(set_dirty_share, mountpoint, WRITEBACK_MAX_RATIO)


async def serve(
    parts: compose.Mount,
    mountpoint: str,
    notifier: sdnotify.Notifier | None = None,
    daemonized: bool = False,
) -> None:
    """Serve FUSE requests beside the Engine's tasks until unmounted; then stop in order.
    With *notifier* (systemd's NOTIFY_SOCKET), readiness, status and the stop are told."""
    engine = parts.engine
    notifier = notifier or sdnotify.Notifier(None)
    systemd = sdnotify.tasks(
        notifier, parts.fs.initialized, mountpoint, parts.report, daemonized=daemonized
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_terminate_on_signal)
        await nursery.start(engine.run, [*parts.tasks(), *systemd])
        engine.spawn("kernel tuning", _tune_kernel, parts.fs, parts.cfg, mountpoint)
        parts.busy_poll = install_busy_poll(parts.cfg.mount.busy_poll)
        await pyfuse3.main(min_tasks=2, max_tasks=64)
        notifier.stopping()  # before the shutdown steps, which may take seconds
        await engine.stop(parts.shutdown_steps())
        nursery.cancel_scope.cancel()


def mount(origin: str, mountpoint: str, opts: MountOptions, foreground: bool) -> int:
    """Mount and serve until unmounted; returns the process exit code."""
    cfg: Config = load_config(opts.config_path, opts.overrides)
    check_directories(origin, mountpoint)
    check_tier_directories(cfg, origin, mountpoint)
    setup_logging(opts, foreground)
    os.umask(0)  # modes from the kernel already have the caller's umask applied
    mountpoint = os.path.realpath(mountpoint)  # before mounting: afterwards it stats the mount
    source = Origin(origin)
    parts = compose.build(
        source,
        cfg,
        functools.partial(
            open_backend,
            cfg.stats.backend,
            cfg.stats.redis_url,
            cfg.monitoring.max_stats_age,
            mountpoint,
            state_directory(cfg),
            cfg.stats.redis_password_file,
        ),
    )
    try:
        parts.open()
    except StatsUnavailable as exc:
        parts.close()
        raise MountError(f"{exc} (nothing mounted)") from None
    except compose.StateUnusable as exc:
        parts.close()
        raise MountError(f"state directory (state_dir): {exc} (nothing mounted)") from None
    except compose.AccessLogUnusable as exc:
        parts.close()
        raise MountError(f"{exc} (nothing mounted)") from None
    except (OSError, TierInUse) as exc:
        parts.close()
        raise MountError(f"cache tier: {exc} (nothing mounted)") from None
    try:
        parts.connect()
    except WatchUnavailable as exc:
        parts.close()
        raise MountError(f"{exc} (nothing mounted)") from None
    except OSError as exc:
        parts.close()
        if exc.errno in DEAD_MOUNT_ERRNOS:
            problem, fix = dead_mount("origin", origin, os.path.realpath(origin))
            raise MountError(
                f"{problem}, and no cached metadata to serve it offline: {fix}, then mount "
                f"the origin again and mount cachefs {NOTHING_MOUNTED}"
            ) from None
        reason = exc.strerror or str(exc)
        raise MountError(
            f"origin {origin}: {reason}, and no cached metadata to serve it offline "
            "(nothing mounted)"
        ) from None
    try:
        metrics = bind_metrics(cfg, parts)
    except MountError:
        parts.close()
        raise
    if not parts.monitor.online:
        log.warning("origin %s does not answer: mounting offline from the cache", source.root)
    try:
        pyfuse3.init(parts.fs, mountpoint, fuse_options(opts, source.root))
    except RuntimeError as exc:
        if metrics is not None:
            metrics.stop()
        raise MountError(f"cannot mount {mountpoint}: {exc} (see the message above)") from None
    log.info("mounted %s on %s", source.root, mountpoint)
    if not foreground:
        daemonize()
        setup_logging(opts, foreground)
    if metrics is not None:
        metrics.start()  # after the fork: threads do not survive it, the bound socket does
    notifier = sdnotify.Notifier.from_environment()
    clean = False
    fatal: Exception | None = None
    try:
        trio.run(serve, parts, mountpoint, notifier, not foreground)
        clean = True
    except Exception as exc:
        # In the background stderr is /dev/null: the log is the only trace of this.
        log.critical("stopped by an unexpected error, unmounting %s", mountpoint, exc_info=True)
        fatal = exc
    finally:
        notifier.stopping()  # after an unexpected error too
        pyfuse3.close(unmount=True)
        if metrics is not None:
            metrics.stop()
        parts.close()
        source.close()
        log.info("unmounted %s (%s)", mountpoint, "clean" if clean else "after an error")
    if fatal is not None:
        raise MountError(
            f"{mountpoint}: stopped by an unexpected error ({_innermost(fatal)}) and "
            "unmounted; the log has the traceback"
        )
    return 0


def bind_metrics(cfg: Config, parts: compose.Mount) -> MetricsServer | None:
    """The Prometheus endpoint, bound (not yet serving); None without metrics.listen.
    A port that cannot be had refuses the mount, before anything is mounted."""
    if not cfg.metrics.listen:
        return None
    from cachefs.app import exporter  # prometheus_client: only for a mount that serves metrics

    try:
        return exporter.bind(cfg.metrics.listen, parts.latest)
    except OSError as exc:
        raise MountError(
            f'metrics.listen = "{cfg.metrics.listen}": cannot listen there: '
            f"{exc.strerror or exc} {NOTHING_MOUNTED}"
        ) from None


def _innermost(exc: BaseException) -> str:
    """``Type: message`` of the first error inside (nested) exception groups."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}"
