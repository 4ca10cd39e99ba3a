"""``mount.cachefs``: the mount(8) helper.

mount(8) calls ``mount.<type> SPEC DIR [-sfnv] [-N ns] [-o options] [-t type]``.
We mount in the background like any filesystem and return 0 once it is up.
"""

from __future__ import annotations

import sys

from cachefs.app.cli import fail, run_mount

USAGE = "usage: mount.cachefs ORIGIN MOUNTPOINT [-sfnv] [-o options] [-t type]"


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    positional: list[str] = []
    options: list[str] = []
    fake = False
    while args:
        arg = args.pop(0)
        if arg in ("-o", "-t", "-N"):
            if not args:
                fail(f"{arg} needs a value\n{USAGE}", 1)
            value = args.pop(0)
            if arg == "-o":
                options.append(value)
        elif arg.startswith("-o") and len(arg) > 2:
            options.append(arg[2:])
        elif arg.startswith("-") and len(arg) > 1:
            fake = fake or "f" in arg[1:]  # -f is mount(8)'s "fake": do nothing
        else:
            positional.append(arg)
    if len(positional) != 2:
        fail(USAGE, 1)
    if fake:
        sys.exit(0)
    run_mount(positional[0], positional[1], options, None, foreground=False)


if __name__ == "__main__":
    main()
