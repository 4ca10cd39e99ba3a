"""Mounting: options, the FUSE session, daemonising and the trio main loop."""

from __future__ import annotations

import logging
import logging.handlers
import os
import re
import signal
import sys
from dataclasses import dataclass, field

import pyfuse3
import trio

from .background import Flusher, MetadataSaver, Migrator, janitor
from .changes import WatchUnavailable
from .config import Config, ConfigError, load_config
from .disktier import TierInUse
from .fs import CacheFS
from .fuseloop import install as install_busy_poll
from .origin import Origin
from .stats import StatsUnavailable, open_backend

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
        elif "=" in option and "." in option.partition("=")[0]:
            key, _, value = option.partition("=")
            opts.overrides[key] = value
        else:
            raise ConfigError(f"-o {option}: unknown mount option")
    return opts


def fuse_options(opts: MountOptions, origin: str) -> set[str]:
    options = set(opts.fuse) | {"default_permissions"}
    if not any(o.startswith("fsname=") for o in options):
        # libfuse splits options on commas; an origin path with one gets a plain name
        options.add(f"fsname={origin}" if "," not in origin else "fsname=cachefs")
    if not any(o.startswith("subtype=") for o in options):
        options.add("subtype=cachefs")
    return options


class MountError(Exception):
    exit_code = 1


def check_directories(origin: str, mountpoint: str) -> None:
    for role, path in (("origin", origin), ("mount point", mountpoint)):
        if not os.path.exists(path):
            raise MountError(f"{role} {path}: no such directory")
        if not os.path.isdir(path):
            raise MountError(f"{role} {path}: not a directory")
    if os.path.realpath(origin) == os.path.realpath(mountpoint):
        raise MountError(f"origin and mount point are the same directory: {origin}")


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


def _unescape_mountinfo(field: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def mount_device(mountpoint: str) -> str | None:
    """``major:minor`` of the filesystem mounted at *mountpoint*, from mountinfo.

    Read from /proc rather than by stat(), which would wait on our own daemon;
    *mountpoint* must already be a real path (realpath() would stat it too).
    """
    device = None
    with open("/proc/self/mountinfo") as mountinfo:
        for line in mountinfo:
            fields = line.split()
            if len(fields) > 4 and _unescape_mountinfo(fields[4]) == mountpoint:
                device = fields[2]  # the last match is the top of the stack
    return device


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


async def _tune_kernel(fs: CacheFS, mountpoint: str) -> None:
    # The kernel sets the mount's read-ahead while processing our INIT reply,
    # which is written right after Operations.init(); tune it after that.
    await fs.initialized.wait()
    await trio.sleep(0.05)
    await trio.to_thread.run_sync(set_read_ahead, mountpoint, fs.cfg.mount.read_ahead)


async def serve(fs: CacheFS, mountpoint: str) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_terminate_on_signal)
        nursery.start_soon(_tune_kernel, fs, mountpoint)
        await nursery.start(fs.run_background)
        nursery.start_soon(janitor, fs)
        flusher = Flusher(fs)
        nursery.start_soon(flusher.run)
        nursery.start_soon(Migrator(fs).run)
        saver = MetadataSaver(fs)
        nursery.start_soon(saver.run)
        fs.busy_poll = install_busy_poll(fs.cfg.mount.busy_poll)
        await pyfuse3.main(min_tasks=2, max_tasks=64)
        await fs.cache.drain(timeout=10)
        with trio.move_on_after(10):
            await flusher.flush_once()
            await saver.save_once()
        nursery.cancel_scope.cancel()


def mount(origin: str, mountpoint: str, opts: MountOptions, foreground: bool) -> int:
    """Mount and serve until unmounted; returns the process exit code."""
    cfg: Config = load_config(opts.config_path, opts.overrides)
    check_directories(origin, mountpoint)
    setup_logging(opts, foreground)
    os.umask(0)  # modes from the kernel already have the caller's umask applied
    mountpoint = os.path.realpath(mountpoint)  # before mounting: afterwards it stats the mount
    ssd_dir = cfg.tiers["ssd"].path
    assert ssd_dir is not None  # config gives every disk tier a path
    try:
        stats_backend = open_backend(
            cfg.stats.backend,
            cfg.stats.redis_url,
            cfg.monitoring.max_stats_age,
            mountpoint,
            ssd_dir,
            cfg.stats.redis_password_file,
        )
    except StatsUnavailable as exc:
        raise MountError(f"{exc} (nothing mounted)") from None
    source = Origin(origin)
    fs = CacheFS(source, cfg, stats_backend)
    try:
        fs.open_tiers()
    except (OSError, TierInUse) as exc:
        fs.close()
        raise MountError(f"cache tier: {exc} (nothing mounted)") from None
    try:
        fs.connect_origin()
    except WatchUnavailable as exc:
        fs.close()
        raise MountError(f"{exc} (nothing mounted)") from None
    except OSError as exc:
        fs.close()
        reason = exc.strerror or str(exc)
        raise MountError(
            f"origin {origin}: {reason}, and no cached metadata to serve it offline "
            "(nothing mounted)"
        ) from None
    if not fs.monitor.online:
        log.warning("origin %s does not answer: mounting offline from the cache", source.root)
    try:
        pyfuse3.init(fs, mountpoint, fuse_options(opts, source.root))
    except RuntimeError as exc:
        raise MountError(f"cannot mount {mountpoint}: {exc} (see the message above)") from None
    log.info("mounted %s on %s", source.root, mountpoint)
    if not foreground:
        daemonize()
        setup_logging(opts, foreground)
    clean = False
    try:
        trio.run(serve, fs, mountpoint)
        clean = True
    finally:
        pyfuse3.close(unmount=True)
        fs.close()
        source.close()
        log.info("unmounted %s (%s)", mountpoint, "clean" if clean else "after an error")
    return 0
