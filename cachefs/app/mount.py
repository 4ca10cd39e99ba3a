"""Mounting: options, the FUSE session, daemonising and the trio main loop."""

from __future__ import annotations

import errno
import functools
import logging
import logging.handlers
import os
import re
import shlex
import signal
import stat
import sys
import threading
from dataclasses import dataclass, field

import pyfuse3
import trio

from cachefs.app import compose
from cachefs.config import Config, ConfigError, load_config
from cachefs.data.tiers.disk import TierInUse
from cachefs.fuse.loop import install as install_busy_poll
from cachefs.fuse.operations import CacheFS
from cachefs.meta.changes import WatchUnavailable
from cachefs.origin.access import Origin
from cachefs.stats.counters import StatsUnavailable, open_backend

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


NOTHING_MOUNTED = "(nothing mounted)"
# What stat() says of a FUSE mount whose daemon is gone (ECONNABORTED once aborted
# through /sys/fs/fuse/connections when the daemon asked for it).
DEAD_MOUNT_ERRNOS = frozenset({errno.ENOTCONN, errno.ECONNABORTED})
# How long a mounted mount point may take to answer stat() before it counts as hung.
PROBE_TIMEOUT = 2.0


def check_directories(origin: str, mountpoint: str) -> None:
    """Refuse an origin or mount point that cannot work, before anything is mounted.

    Whether something is mounted at the mount point comes from mountinfo, so
    that a mount there whose daemon is dead or stopped is reported, not waited on.
    """
    real_mountpoint = real_path_outside(mountpoint)
    if real_path_outside(origin) == real_mountpoint:
        raise MountError(
            f"origin and mount point are the same directory: {origin} {NOTHING_MOUNTED}"
        )
    check_mount_point_free(mountpoint, real_mountpoint)
    for role, path in (("origin", origin), ("mount point", mountpoint)):
        try:
            st = os.stat(path)
        except OSError as exc:
            raise MountError(f"{unusable_directory(role, path, exc)} {NOTHING_MOUNTED}") from None
        if not stat.S_ISDIR(st.st_mode):
            raise MountError(f"{role} {path}: not a directory {NOTHING_MOUNTED}")
    # Nothing is mounted at the mount point: realpath() no longer stats a mount there.
    real_origin, real_mountpoint = os.path.realpath(origin), os.path.realpath(mountpoint)
    if _within(real_mountpoint, real_origin):
        raise MountError(
            f"mount point {_shown(mountpoint, real_mountpoint)} is inside the origin "
            f"{_shown(origin, real_origin)}: the mount would appear inside itself and the "
            "daemon's lookups of it would enter its own mount and deadlock; choose a mount "
            f"point outside the origin {NOTHING_MOUNTED}"
        )
    if _within(real_origin, real_mountpoint):
        raise MountError(
            f"origin {_shown(origin, real_origin)} is inside the mount point "
            f"{_shown(mountpoint, real_mountpoint)}: once mounted, the mount would hide the "
            "origin and the daemon would reach the origin through its own mount; choose a "
            f"mount point that does not contain the origin {NOTHING_MOUNTED}"
        )


def check_tier_directories(cfg: Config, origin: str, mountpoint: str) -> None:
    """Refuse a disk tier directory inside the origin or the mount point.

    Runs before the tiers are opened (which creates their directories): a
    directory that does not exist yet is compared by the real path of its
    nearest existing parent, which os.path.realpath() gives.
    """
    real_origin, real_mountpoint = os.path.realpath(origin), os.path.realpath(mountpoint)
    for name, tier in cfg.tiers.items():
        if tier.path is None:  # the RAM tier
            continue
        key = f"tiers.{name}.path"
        real = os.path.realpath(tier.path)
        shown = f"{_shown(str(tier.path), real)} ({key})"
        if _within(real, real_origin):
            raise MountError(
                f"cache tier directory {shown} is inside the origin "
                f"{_shown(origin, real_origin)}: the mount would show its own cache files; "
                f"set {key} to a directory outside the origin {NOTHING_MOUNTED}"
            )
        if _within(real, real_mountpoint):
            raise MountError(
                f"cache tier directory {shown} is inside the mount point "
                f"{_shown(mountpoint, real_mountpoint)}: the mount would hide it and the "
                f"daemon would store its cache through its own mount; set {key} to a "
                f"directory outside the mount point {NOTHING_MOUNTED}"
            )


def check_mount_point_free(mountpoint: str, real_mountpoint: str) -> None:
    """Refuse to stack a mount on top of one that is already at the mount point."""
    entry = mounted_at(real_mountpoint)
    if entry is None:
        return
    answer = stat_within(real_mountpoint, PROBE_TIMEOUT)
    if isinstance(answer, OSError) and answer.errno in DEAD_MOUNT_ERRNOS:
        problem, fix = dead_mount("mount point", mountpoint, real_mountpoint, entry)
        raise MountError(f"{problem}: {fix}, then mount again {NOTHING_MOUNTED}")
    where = shlex.quote(entry.mountpoint)
    if answer is None:
        state = f", and it does not answer (stat() waited {PROBE_TIMEOUT:g} s)"
        fix = f"`fusermount3 -u {where}` (or `umount -l {where}`)"
        if not entry.is_fuse:
            fix = f"`umount -l {where}`"
    else:
        state = ""
        fix = f"`fusermount3 -u {where}`" if entry.is_fuse else f"`umount {where}`"
    raise MountError(
        f"mount point {mountpoint} is already mounted ({entry.describe()}){state}: "
        f"unmount it first with {fix}, or choose another mount point {NOTHING_MOUNTED}"
    )


def unusable_directory(role: str, path: str, exc: OSError) -> str:
    """Why stat() of the origin or mount point failed, and the fix where there is one."""
    if exc.errno in DEAD_MOUNT_ERRNOS:
        problem, fix = dead_mount(role, path, os.path.realpath(path))
        again = "mount the origin again, then mount cachefs" if role == "origin" else "mount again"
        return f"{problem}: {fix}, then {again}"
    if exc.errno in (errno.ENOENT, errno.ENOTDIR):
        return f"{role} {path}: no such directory"
    return f"{role} {path}: {exc.strerror or exc}"


def dead_mount(role: str, path: str, real: str, entry: MountEntry | None = None) -> tuple[str, str]:
    """("ROLE PATH is a dead FUSE mount (...)", "unmount it with ...") for an ENOTCONN path."""
    entry = entry or mount_holding(real)
    if entry is None:  # ENOTCONN comes from a mount; this is not expected
        return f"{role} {path}: {os.strerror(errno.ENOTCONN)}", "unmount what is mounted there"
    where = shlex.quote(entry.mountpoint)
    if entry.is_fuse:
        kind, gone = "dead FUSE mount", "its daemon is gone"
        fix = f"`fusermount3 -u {where}` (or `umount -l {where}`)"
    else:
        kind, gone = "dead mount", "it no longer answers"
        fix = f"`umount -l {where}`"
    if entry.mountpoint == real:
        return f"{role} {path} is a {kind} ({entry.describe()}; {gone})", f"unmount it with {fix}"
    return (
        f"{role} {path} is on a {kind} at {entry.mountpoint} ({entry.describe()}; {gone})",
        f"unmount that with {fix}",
    )


def real_path_outside(path: str, depth: int = 0) -> str:
    """os.path.realpath(*path*) without stat()ing *path* itself.

    realpath() lstat()s every component, the last one included; lstat() of a
    mount point asks the file system mounted there, which fails if its daemon
    died and waits forever if it is stopped. Here the parent goes through
    realpath() and the last component through readlink(), which the kernel
    answers without asking a file system mounted there.
    """
    stripped = path.rstrip("/")
    if not stripped:
        return "/"
    head, name = os.path.split(stripped)
    head = head or os.getcwd()
    if name == ".":
        return real_path_outside(head, depth)
    if name == "..":
        return os.path.dirname(real_path_outside(head, depth))
    joined = os.path.join(os.path.realpath(head), name)
    try:
        target = os.readlink(joined)
    except OSError:  # not a symlink (or not there): joined is the real path
        return joined
    if depth >= 40:  # a symlink loop: let realpath() deal with it
        return os.path.realpath(joined)
    return real_path_outside(os.path.join(os.path.dirname(joined), target), depth + 1)


def stat_within(path: str, timeout: float) -> os.stat_result | OSError | None:
    """stat(*path*) in a helper thread: its result or error, None if it did not answer.

    For a path with something mounted on it, which may be a stopped daemon's;
    a thread still waiting does not keep the process from exiting.
    """
    answer: list[os.stat_result | OSError] = []

    def probe() -> None:
        try:
            answer.append(os.stat(path))
        except OSError as exc:
            answer.append(exc)

    thread = threading.Thread(target=probe, name="cachefs-mount-probe", daemon=True)
    thread.start()
    thread.join(timeout)
    return answer[0] if answer else None


def _within(path: str, directory: str) -> bool:
    """*path* is *directory* or below it (both real paths)."""
    return path == directory or path.startswith(directory.rstrip("/") + "/")


def _shown(path: str, real: str) -> str:
    """*path* as given, with its real path when a symlink or relative path hides it."""
    return path if os.path.abspath(path) == real else f"{path} (really {real})"


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


@dataclass(frozen=True)
class MountEntry:
    """One line of /proc/self/mountinfo."""

    mountpoint: str
    device: str  # major:minor
    fstype: str  # "ext4", "fuse.sshfs", ...
    source: str  # "/dev/sda1", "nas:/media", or a FUSE file system's fsname

    @property
    def is_fuse(self) -> bool:
        return self.fstype.partition(".")[0] in ("fuse", "fuseblk")

    def describe(self) -> str:
        return f"{self.fstype} from {self.source}"


def _unescape_mountinfo(field: bytes) -> str:
    """A mountinfo path field (space, tab, newline and backslash octal-escaped) as a str."""
    return os.fsdecode(re.sub(rb"\\([0-7]{3})", lambda m: bytes([int(m.group(1), 8)]), field))


def read_mountinfo() -> list[MountEntry]:
    """Every mount this process sees, in mountinfo order (the top of a stack comes last).

    Read from /proc rather than by stat(), which would wait on the daemon of a
    mount (our own, or a stopped one).
    """
    entries = []
    with open("/proc/self/mountinfo", "rb") as mountinfo:
        for line in mountinfo:
            fields = line.split()
            # ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER
            try:
                dash = fields.index(b"-", 6)
            except ValueError:
                continue
            if len(fields) < dash + 3:
                continue
            entries.append(
                MountEntry(
                    mountpoint=_unescape_mountinfo(fields[4]),
                    device=fields[2].decode(),
                    fstype=_unescape_mountinfo(fields[dash + 1]),
                    source=_unescape_mountinfo(fields[dash + 2]),
                )
            )
    return entries


def mounted_at(mountpoint: str) -> MountEntry | None:
    """The top mount at *mountpoint*, which must be a real path (see real_path_outside)."""
    found = None
    for entry in read_mountinfo():
        if entry.mountpoint == mountpoint:
            found = entry  # the last match is the top of the stack
    return found


def mount_holding(path: str) -> MountEntry | None:
    """The mount that *path* (a real path) is on: the nearest mount point at or above it."""
    found = None
    for entry in read_mountinfo():
        if _within(path, entry.mountpoint) and (
            found is None or len(entry.mountpoint) >= len(found.mountpoint)
        ):
            found = entry
    return found


def mount_device(mountpoint: str) -> str | None:
    """``major:minor`` of the filesystem mounted at *mountpoint*, from mountinfo.

    *mountpoint* must already be a real path (realpath() would stat it).
    """
    entry = mounted_at(mountpoint)
    return entry.device if entry is not None else None


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


async def serve(parts: compose.Mount, mountpoint: str) -> None:
    """Serve FUSE requests beside the Engine's tasks until unmounted; then stop in order."""
    engine = parts.engine
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_terminate_on_signal)
        await nursery.start(engine.run, parts.tasks())
        engine.spawn("kernel tuning", _tune_kernel, parts.fs, parts.cfg, mountpoint)
        parts.busy_poll = install_busy_poll(parts.cfg.mount.busy_poll)
        await pyfuse3.main(min_tasks=2, max_tasks=64)
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
            compose.state_directory(cfg),
            cfg.stats.redis_password_file,
        ),
    )
    try:
        parts.open()
    except StatsUnavailable as exc:
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
    if not parts.monitor.online:
        log.warning("origin %s does not answer: mounting offline from the cache", source.root)
    try:
        pyfuse3.init(parts.fs, mountpoint, fuse_options(opts, source.root))
    except RuntimeError as exc:
        raise MountError(f"cannot mount {mountpoint}: {exc} (see the message above)") from None
    log.info("mounted %s on %s", source.root, mountpoint)
    if not foreground:
        daemonize()
        setup_logging(opts, foreground)
    clean = False
    fatal: Exception | None = None
    try:
        trio.run(serve, parts, mountpoint)
        clean = True
    except Exception as exc:
        # In the background stderr is /dev/null: the log is the only trace of this.
        log.critical("stopped by an unexpected error, unmounting %s", mountpoint, exc_info=True)
        fatal = exc
    finally:
        pyfuse3.close(unmount=True)
        parts.close()
        source.close()
        log.info("unmounted %s (%s)", mountpoint, "clean" if clean else "after an error")
    if fatal is not None:
        raise MountError(
            f"{mountpoint}: stopped by an unexpected error ({_innermost(fatal)}) and "
            "unmounted; the log has the traceback"
        )
    return 0


def _innermost(exc: BaseException) -> str:
    """``Type: message`` of the first error inside (nested) exception groups."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}"
