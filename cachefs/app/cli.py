"""The ``cachefs`` command."""

from __future__ import annotations

import difflib
import importlib
import os
import sys
from importlib import metadata

import click

from cachefs.app.mount import MountError, mount, parse_mount_options
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


def package_version() -> str:
    """The installed distribution's version; the package's own when not installed."""
    try:
        return metadata.version("cachefs")
    except metadata.PackageNotFoundError:
        import cachefs

        return cachefs.__version__


# The operator's commands, each in its own module, imported only when run (or
# listed by --help): mounting pays for neither rich nor them.
LAZY_COMMANDS = {
    "status": "cachefs.app.commands.status:status_command",
    "stats": "cachefs.app.commands.stats:stats_command",
    "warm": "cachefs.app.commands.warm:warm_command",
    "pin": "cachefs.app.commands.pins:pin_command",
    "unpin": "cachefs.app.commands.pins:unpin_command",
    "evict": "cachefs.app.commands.evict:evict_command",
    "where": "cachefs.app.commands.where:where_command",
    "top": "cachefs.app.commands.top:top_command",
    "forget": "cachefs.app.commands.forget:forget_command",
    "simulate": "cachefs.app.simulate:simulate_command",
}


class SuggestingGroup(click.Group):
    """An unknown subcommand is a usage error (exit 2) naming the closest command."""

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        name = args[0]
        if (
            not name.startswith("-")
            and not ctx.resilient_parsing
            and self.get_command(ctx, name) is None
        ):
            close = difflib.get_close_matches(name, self.list_commands(ctx), n=1, cutoff=0.6)
            if close:
                ctx.fail(f"No such command {name!r}. Did you mean {close[0]!r}?")
            ctx.fail(
                f"No such command {name!r}. To mount a directory: "
                f"{ctx.command_path} mount ORIGIN MOUNTPOINT."
            )
        return super().resolve_command(ctx, args)


class CachefsGroup(SuggestingGroup):
    """The top-level group: LAZY_COMMANDS are imported when asked for."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *LAZY_COMMANDS})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = LAZY_COMMANDS.get(name)
        if target is None:
            return super().get_command(ctx, name)
        module, _, attr = target.partition(":")
        command: click.Command = getattr(importlib.import_module(module), attr)
        return command


def print_version(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        click.echo(f"cachefs {package_version()}")
        ctx.exit()


@click.group(cls=CachefsGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "-V",
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=print_version,
    help="Show the version and exit.",
)
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


@cli.group("config", cls=SuggestingGroup)
def config_group() -> None:
    """Inspect configuration."""


@config_group.command("show")
@click.argument("mount", required=False, metavar="[MOUNT]", type=MountDirectory())
@click.option("--config", "config_path", type=click.Path(), help="TOML config file.")
@click.option("-o", "options", multiple=True, help="Overrides as dotted.key=value.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0.1),
    default=2.0,
    show_default=True,
    help="With MOUNT: seconds the mount has to answer.",
)
def config_show(
    mount: str | None, config_path: str | None, options: tuple[str, ...], timeout: float
) -> None:
    """Print the effective configuration as TOML: the one a mount with --config and -o
    would use, or, given MOUNT, the one the running cachefs mount holding MOUNT uses
    (its -o overrides included)."""
    if mount is not None:
        if config_path is not None or options:
            raise click.UsageError("MOUNT shows a running mount's configuration: no --config, -o")
        from cachefs.app.commands.config import mount_config  # lazily, like the commands

        click.echo(mount_config(mount, timeout), nl=False)
        return
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


def is_implicit_mount(args: list[str]) -> bool:
    """``cachefs ORIGIN MOUNTPOINT ...``, as mount.fuse(8) runs it for fstab type
    fuse.cachefs: only when the first word is a path (it has a ``/``). A bare
    word is a command name, or a usage error: ``cachefs stats /srv/media`` must
    never mount an origin ``./stats``."""
    return bool(args) and "/" in args[0] and not args[0].startswith("-")


def main() -> None:
    args = sys.argv[1:]
    if is_implicit_mount(args):
        args = ["mount", *args]
    cli.main(args=args, prog_name="cachefs")


if __name__ == "__main__":
    main()
