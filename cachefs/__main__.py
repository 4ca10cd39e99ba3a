"""``python -m cachefs``: the command line (the same as the ``cachefs`` script)."""

from cachefs.app.cli import main

main()
