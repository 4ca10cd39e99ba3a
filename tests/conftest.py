"""Fixtures that mount a real cachefs over a temporary origin."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis

MOUNT_TIMEOUT = 20.0


@dataclass
class Mounted:
    origin: Path
    mnt: Path
    proc: subprocess.Popen[bytes]
    log_path: Path
    options: list[str] = field(default_factory=list)

    def stats(self) -> dict:
        return json.loads(os.getxattr(self.mnt, "user.cachefs.stats"))

    def residency(self, relpath: str) -> dict:
        return json.loads(os.getxattr(self.mnt / relpath, "user.cachefs.residency"))

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def tier_dir(self, tier: str) -> Path:
        return tier_dir(self.options, tier)


def tier_dir(options: list[str], tier: str) -> Path:
    """The directory a disk tier was given with ``-o tiers.<tier>.path=...``."""
    prefix = f"tiers.{tier}.path="
    return Path(next(o for o in options if o.startswith(prefix)).removeprefix(prefix))


def cachefs_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "cachefs", *args]


def run_cachefs(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the cachefs command to completion, output captured as text."""
    return subprocess.run(cachefs_command(*args), capture_output=True, text=True, timeout=60)


def wait_for_mount(mnt: Path, proc: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + MOUNT_TIMEOUT
    while time.monotonic() < deadline:
        if os.path.ismount(mnt):
            return
        if proc.poll() is not None:
            raise RuntimeError(f"cachefs exited with {proc.returncode}:\n{log_path.read_text()}")
        time.sleep(0.02)
    raise RuntimeError(f"cachefs did not mount within {MOUNT_TIMEOUT}s:\n{log_path.read_text()}")


def mount_cachefs(origin: Path, mnt: Path, options: list[str], log_path: Path) -> Mounted:
    mnt.mkdir(parents=True, exist_ok=True)
    opts = ",".join(options)
    args = ["mount", "-f", str(origin), str(mnt)] + (["-o", opts] if opts else [])
    log_file = open(log_path, "ab")  # noqa: SIM115 - owned by the child process
    proc = subprocess.Popen(cachefs_command(*args), stdout=log_file, stderr=log_file)
    log_file.close()
    try:
        wait_for_mount(mnt, proc, log_path)
    except BaseException:
        unmount(mnt, proc)
        raise
    return Mounted(origin, mnt, proc, log_path, options)


def is_mounted(mnt: Path) -> bool:
    """From /proc: a mount whose daemon died (ENOTCONN) still counts, unlike ismount()."""
    target = os.fsencode(os.path.abspath(mnt)).replace(b" ", b"\\040")
    with open("/proc/self/mounts", "rb") as mounts:
        return any(line.split()[1] == target for line in mounts)


def unmount(mnt: Path, proc: subprocess.Popen[bytes] | None) -> None:
    """Unmount however it takes: politely, then lazily, then by killing the daemon."""
    if is_mounted(mnt):
        subprocess.run(["fusermount3", "-u", str(mnt)], capture_output=True)
    if proc is not None:
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if is_mounted(mnt):
        subprocess.run(["fusermount3", "-uz", str(mnt)], capture_output=True)


def wait_until_on_disk(mounted: Mounted, relpath: str, timeout: float = 15.0) -> dict:
    """Chunks reach their disk tier in the background: wait for all of them."""
    deadline = time.monotonic() + timeout
    while True:
        residency = mounted.residency(relpath)
        if residency["ssd"] + residency["hdd"] >= residency["chunks"]:
            return residency
        if time.monotonic() > deadline:
            raise AssertionError(f"{relpath} not on disk: {residency}")
        time.sleep(0.05)


def read_direct(path: Path) -> bytes:
    """Read bypassing the kernel page cache, so cachefs itself answers."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    try:
        size = os.fstat(fd).st_size
        return os.pread(fd, size, 0) if size else b""
    finally:
        os.close(fd)


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A small tmpfs at *path* (a full disk is easy to reach), unmounted afterwards."""
    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


class MountFactory:
    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.mounts: list[Mounted] = []
        self.count = 0

    def __call__(
        self, origin: Path, options: list[str] | None = None, mnt: Path | None = None
    ) -> Mounted:
        self.count += 1
        mnt = mnt or self.tmp_path / f"mnt{self.count}"
        log_path = self.tmp_path / f"cachefs{self.count}.log"
        options = list(DEFAULT_TEST_OPTIONS if options is None else options)
        for tier in ("ssd", "hdd"):  # never the system-wide default cache dirs
            if not any(o.startswith(f"tiers.{tier}.path=") for o in options):
                options.append(f"tiers.{tier}.path={self.tmp_path / 'cache' / tier}")
        mounted = mount_cachefs(origin, mnt, options, log_path)
        self.mounts.append(mounted)
        return mounted

    def unmount(self, mounted: Mounted) -> None:
        unmount(mounted.mnt, mounted.proc)
        if mounted in self.mounts:
            self.mounts.remove(mounted)

    def close(self) -> None:
        for mounted in reversed(self.mounts):
            unmount(mounted.mnt, mounted.proc)
        self.mounts.clear()


DEFAULT_TEST_OPTIONS = ["tiers.ram.max_size=64MiB", "stats.backend=embedded"]


@pytest.fixture
def origin(tmp_path: Path) -> Path:
    path = tmp_path / "origin"
    path.mkdir()
    return path


@pytest.fixture
def mount_factory(tmp_path: Path) -> Iterator[MountFactory]:
    factory = MountFactory(tmp_path)
    try:
        yield factory
    finally:
        factory.close()


@pytest.fixture
def mounted(origin: Path, mount_factory: MountFactory) -> Mounted:
    return mount_factory(origin)


# -- a real redis-server on a free port ---------------------------------------------------


@dataclass
class RedisServer:
    port: int
    proc: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, decode_responses=True)

    def start(self) -> None:
        self.proc = start_redis(self.port)

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_redis(port: int, password: str | None = None) -> subprocess.Popen[bytes]:
    auth = ["--requirepass", password] if password else []
    proc = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            *auth,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = redis.Redis(host="127.0.0.1", port=port, password=password)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            return proc
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                proc.kill()
                raise
            time.sleep(0.05)


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    port = free_port()
    server = RedisServer(port, start_redis(port))
    try:
        yield server
    finally:
        server.proc.kill()
        server.proc.wait()
