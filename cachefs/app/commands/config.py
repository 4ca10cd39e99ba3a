"""``cachefs config show MOUNT``: the effective configuration of a running mount.

The daemon answers ``user.cachefs.config`` on its mount root with the TOML of
the Config it runs with (file and ``-o`` overrides applied, fuse/xattrs.py);
asked, like the stats, by a child process that is abandoned if the daemon
does not answer in time (mounts.py).
"""

from __future__ import annotations

import errno

from cachefs.app.commands.mounts import Failure, Resolver, getxattr_timed

CONFIG = "user.cachefs.config"


def mount_config(mount: str, timeout: float) -> str:
    """The TOML the mount holding *mount* runs with, or Failure."""
    mountpoint = Resolver(timeout).target(mount).mount.mountpoint
    answer = getxattr_timed([mountpoint], CONFIG, timeout)[0]
    if answer.value is not None:
        text = answer.value.decode("utf-8", errors="surrogateescape")
        return f"# of the running cachefs mount at {mountpoint}\n{text}"
    if answer.error is not None and answer.error.errno == errno.ENODATA:
        raise Failure(
            f"cachefs mount {mountpoint}: its daemon does not publish its configuration "
            "(it predates cachefs config show MOUNT): remount it with this cachefs"
        )
    raise Failure(f"cachefs mount {mountpoint}: {answer.describe()}")
