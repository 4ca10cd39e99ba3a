"""Finding cachefs mounts, and asking them things without hanging on a stopped one.

A FUSE request to a daemon that is stopped (SIGSTOP, a debugger) or hung
waits until it answers; if the daemon had already taken the request, not even
SIGKILL ends the wait. So nothing here stat()s a mount point before knowing
its daemon answers: mounts are found in ``/proc/self/mountinfo``
(``mounttable.py``), and the first question, the stats xattr of the mount
root, is asked by a child process that is abandoned if it takes longer than
``timeout``. Only then do the commands touch paths below it themselves.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any

import click
from click.shell_completion import CompletionItem

from cachefs.app.mounttable import MountEntry, mount_holding, read_mountinfo, within

FSTYPE = "fuse.cachefs"
STATS = "user.cachefs.stats"
RESIDENCY = "user.cachefs.residency"
PIN = "user.cachefs.pin"
EVICT = "user.cachefs.evict"
FORGET = "user.cachefs.forget"
PROBE_TIMEOUT = 2.0  # seconds a daemon has to answer the stats xattr


def timeout_option(help: str = "Seconds the mount has to answer.") -> Any:
    """The ``--timeout`` of the commands that ask a mount for its stats."""
    return click.option(
        "--timeout",
        type=click.FloatRange(min=0.1),
        default=PROBE_TIMEOUT,
        show_default=True,
        help=help,
    )


class UnstattedPath(click.ParamType):
    """The type of every PATH argument: a string, completed as a file name by the
    shell. click.Path stat()s its value, which would wait on a stopped daemon
    before the probe could report it."""

    name = "path"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        return os.fsdecode(value)

    def shell_complete(
        self, ctx: click.Context, param: click.Parameter, incomplete: str
    ) -> list[CompletionItem]:
        return [CompletionItem(incomplete, type="file")]


UNSTATTED = UnstattedPath()

# Run by the child: one getxattr, the value on stdout, "errno strerror" on stderr.
_GETXATTR = """\
import os, sys
try:
    value = os.getxattr(sys.argv[1], sys.argv[2])
except OSError as exc:
    sys.stderr.write(f"{exc.errno} {exc.strerror}")
    sys.exit(3)
sys.stdout.buffer.write(value)
"""


class Failure(click.ClickException):
    """A command could not do what it was asked: ``cachefs: error: ...``, exit 1."""

    def show(self, file: Any = None) -> None:
        click.echo(f"cachefs: error: {self.format_message()}", err=True)


@dataclass
class Answer:
    """What a mount said to a timed question: a value, an error, or nothing in time."""

    value: bytes | None = None
    error: OSError | None = None
    hung: bool = False

    def describe(self) -> str:
        """Why there is no value, for a person."""
        if self.hung:
            return "not answering (its daemon is stopped or hung)"
        assert self.error is not None
        if self.error.errno == errno.ENOTCONN:
            return "daemon gone (Transport endpoint is not connected): fusermount3 -u it"
        return f"error: {self.error.strerror or self.error}"


def cachefs_mounts(below: list[str] | None = None) -> list[MountEntry]:
    """Every cachefs mount in the mount table, in mount order; with *below*
    (absolute paths), only those at or below one of them."""
    found: dict[str, MountEntry] = {}
    for entry in read_mountinfo():
        if entry.mountpoint in found and entry.fstype != FSTYPE:
            del found[entry.mountpoint]  # something else stacked on top hides it
        if entry.fstype == FSTYPE:
            found[entry.mountpoint] = entry
    mounts = list(found.values())
    if below is not None:
        mounts = [m for m in mounts if any(within(m.mountpoint, top) for top in below)]
    return mounts


def getxattr_timed(paths: list[str], name: str, timeout: float) -> list[Answer]:
    """getxattr(*name*) of each path, asked in parallel by child processes;
    a child that has not answered within *timeout* seconds is abandoned."""
    children = [
        subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", _GETXATTR, path, name],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for path in paths
    ]
    deadline = time.monotonic() + timeout
    answers = []
    for child in children:
        try:
            out, err = child.communicate(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _abandon(child)
            answers.append(Answer(hung=True))
            continue
        if child.returncode == 0:
            answers.append(Answer(value=out))
        else:
            code, _, text = err.decode(errors="replace").partition(" ")
            number = int(code) if code.isdigit() else errno.EIO
            answers.append(Answer(error=OSError(number, text or f"exit {child.returncode}")))
    return answers


def _abandon(child: subprocess.Popen[bytes]) -> None:
    """Kill a child stuck in a FUSE request; it may not die (the daemon holds the
    request): then it is left behind, and init reaps it once the daemon answers."""
    child.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        child.wait(timeout=0.2)
    for pipe in (child.stdout, child.stderr):
        if pipe is not None:
            pipe.close()


def parse_stats(answer: Answer) -> dict[str, Any] | None:
    if answer.value is None:
        return None
    try:
        stats = json.loads(answer.value)
    except ValueError:
        answer.error = OSError(errno.EBADMSG, "the stats xattr is not JSON")
        return None
    return stats if isinstance(stats, dict) else None


def read_stats(mountpoint: str, timeout: float = PROBE_TIMEOUT) -> dict[str, Any]:
    """The stats xattr of a mount root, or Failure if its daemon does not answer."""
    answer = getxattr_timed([mountpoint], STATS, timeout)[0]
    stats = parse_stats(answer)
    if stats is None:
        raise Failure(f"cachefs mount {mountpoint}: {answer.describe()}")
    return stats


@dataclass(frozen=True)
class Target:
    """A path the user named, on a cachefs mount whose daemon answered."""

    given: str  # as typed
    path: str  # absolute, symlinks resolved
    mount: MountEntry

    def relative(self) -> str:
        """The path inside the mount ("." for its root)."""
        return os.path.relpath(self.path, self.mount.mountpoint)


class Resolver:
    """Turns the paths a user names into Targets, probing each mount once."""

    def __init__(self, timeout: float = PROBE_TIMEOUT) -> None:
        self.timeout = timeout
        self._answered: dict[str, dict[str, Any]] = {}

    def stats(self, mount: MountEntry) -> dict[str, Any]:
        """The mount's stats, read once (Failure if it does not answer)."""
        if mount.mountpoint not in self._answered:
            self._answered[mount.mountpoint] = read_stats(mount.mountpoint, self.timeout)
        return self._answered[mount.mountpoint]

    def target(self, given: str) -> Target:
        """*given* on a cachefs mount, or Failure.

        The path is first placed by its absolute spelling, without a stat; the
        mount is probed; only then are symlinks resolved (which stats each
        component). A path that is not plainly on a cachefs mount has its
        symlinks resolved first, which may wait on a mount it leads into.
        """
        absolute = os.path.abspath(given)
        mount = _cachefs_mount_holding(absolute)
        if mount is not None:
            self.stats(mount)
        real = os.path.realpath(absolute)
        resolved = _cachefs_mount_holding(real)
        if resolved is None:
            where = "" if real == absolute else f" (it leads to {real})"
            raise Failure(f"{given} is not on a cachefs mount{where}")
        self.stats(resolved)
        return Target(given, real, resolved)


def _cachefs_mount_holding(path: str) -> MountEntry | None:
    entry = mount_holding(path)
    return entry if entry is not None and entry.fstype == FSTYPE else None
