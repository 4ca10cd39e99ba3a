"""The operator's commands: ``status``, ``stats``, ``warm``, ``pin``, ``unpin``,
``evict``, ``where``.

Each lives in its own module and is registered in ``cli.py`` (imported only
when run). They act through the control xattrs a mount answers
(``fuse/xattrs.py``), never through a daemon API of their own: what they can
do, ``getfattr`` and ``setfattr`` can do too. Before touching a path they find
its mount in the mount table and check, in a child process with a timeout,
that its daemon answers (``mounts.py``), so that a stopped daemon is reported
instead of hanging the command.
"""
