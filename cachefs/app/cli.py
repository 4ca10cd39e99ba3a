"""The ``cachefs`` command."""

from __future__ import annotations

import os
import sys

import click

from cachefs.app.mount import MountError, mount, parse_mount_options
from cachefs.app.simulate import simulate_command
from cachefs.config import ConfigError, config_to_toml, load_config


def fail(message: str, code: int) -> None:
    click.echo(f"cachefs: error: {message}", err=True)
    sys.exit(code)


class MountDirectory(click.Path):
    """ORIGIN or MOUNTPOINT, not stat()ed by click: mount() checks them itself.

    click.Path stat()s its value, which waits forever on a mount point whose
    FUSE daemon is stopped; mount() looks in /proc/self/mountinfo first.
    """

    def __init__(self) -> None:
        super().__init__(file_okay=False)

    def convert(
        self,
        value: str | os.PathLike[str],
        param: click.Parameter | None,
        ctx: click.Context | None,
    ) -> str:
        return os.fsdecode(value)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="cachefs")
def cli() -> None:
    """cachefs: a tiered caching filesystem for slow origins."""


@cli.command("mount")
@click.argument("origin", type=MountDirectory())
@click.argument("mountpoint", type=MountDirectory())
@click.option(
    "-o",
    "options",
    multiple=True,
    metavar="OPT[,OPT...]",
    help="Mount options and config overrides (dotted.key=value).",
)
@click.option("--config", "config_path", type=click.Path(), help="TOML config file.")
@click.option("-f", "--foreground", is_flag=True, help="Stay in the foreground.")
@click.option("--debug", is_flag=True, help="Log debug messages.")
def mount_command(
    origin: str,
    mountpoint: str,
    options: tuple[str, ...],
    config_path: str | None,
    foreground: bool,
    debug: bool,
) -> None:
    """Mount ORIGIN at MOUNTPOINT through the cache."""
    run_mount(origin, mountpoint, list(options), config_path, foreground, debug)


def run_mount(
    origin: str,
    mountpoint: str,
    options: list[str],
    config_path: str | None,
    foreground: bool,
    debug: bool = False,
) -> None:
    try:
        opts = parse_mount_options(options, config_path)
        opts.debug = opts.debug or debug
        sys.exit(mount(origin, mountpoint, opts, foreground))
    except ConfigError as exc:
        fail(f"{exc} (nothing mounted)", exc.exit_code)
    except MountError as exc:
        fail(str(exc), exc.exit_code)


@cli.group("config")
def config_group() -> None:
    """Inspect configuration."""


@config_group.command("show")
@click.option("--config", "config_path", type=click.Path(), help="TOML config file.")
@click.option("-o", "options", multiple=True, help="Overrides as dotted.key=value.")
def config_show(config_path: str | None, options: tuple[str, ...]) -> None:
    """Print the effective configuration as TOML."""
    try:
        opts = parse_mount_options(list(options), config_path)
        cfg = load_config(opts.config_path, opts.overrides)
    except ConfigError as exc:
        fail(str(exc), exc.exit_code)
    click.echo(config_to_toml(cfg), nl=False)


@cli.command("check")
@click.argument("dirs", nargs=-1, required=True, metavar="CACHE_DIR...", type=click.Path())
@click.option("--repair", is_flag=True, help="Delete bad chunk files and leftover temp files.")
@click.option("-v", "--verbose", is_flag=True, help="List each bad file and why it is bad.")
def check_command(dirs: tuple[str, ...], repair: bool, verbose: bool) -> None:
    """Verify the chunk files of disk cache tier directories (ssd/hdd tier paths).

    Exit status: 0 all good (or repaired), 1 problems found, 2 usage error.
    """
    # Imported here so that mounting does not pay for rich and the checker.
    from cachefs.app.check import run_check

    sys.exit(run_check(dirs, repair, verbose))


cli.add_command(simulate_command)


def main() -> None:
    # mount.fuse(8) runs "cachefs ORIGIN MOUNTPOINT -o opts" for fstab type fuse.cachefs.
    args = sys.argv[1:]
    if args and not args[0].startswith("-") and args[0] not in cli.commands:
        args = ["mount", *args]
    cli.main(args=args, prog_name="cachefs")


if __name__ == "__main__":
    main()
