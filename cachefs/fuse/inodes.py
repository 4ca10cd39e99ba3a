"""The inode table: which origin paths the kernel currently knows, and how often.

FUSE inode numbers are the origin's ``st_ino`` (so hard links share one inode
and ``ls -i`` stays meaningful). Each inode keeps its *links*: the
``(parent inode, name)`` directory entries it was found under. A path is built
by walking links up to the root, so renaming a directory updates one entry,
not every path below it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import pyfuse3

ROOT_INODE: int = pyfuse3.ROOT_INODE

Link = tuple[int, bytes]


@dataclass(slots=True)
class InodeEntry:
    lookups: int = 0
    # The (parent, name) entries it was seen under: *link* the newest, the one paths
    # are built from, and *older* the others, oldest first. After a library scan the
    # kernel holds an inode per entry (a million of them) and nearly every file has
    # one link: so slots, and no container for that one link (a one-key dict and an
    # instance __dict__ tripled their memory; a 1-tuple was 48 bytes more).
    link: Link | None = None
    older: tuple[Link, ...] = ()
    children: int = 0  # known entries whose link names this inode as parent
    open_handles: int = 0
    # The origin reuses inode numbers of deleted files. A new generation tells
    # the kernel "same number, different file", so it drops the old inode.
    generation: int = 0
    kind: int = 0  # S_IFMT bits of the file this entry stands for
    # The version of the attributes last given to the kernel (the caller's mark of
    # it, 0: none). Here, not in a dict of its own: one slot, not a key and a slot.
    kernel_mark: int = 0

    @property
    def links(self) -> tuple[Link, ...]:
        """Every link, oldest first."""
        return self.older if self.link is None else (*self.older, self.link)


class InodeTable:
    def __init__(self, origin_root_ino: int) -> None:
        self.root_ino = origin_root_ino  # set again once an offline origin answers
        self._entries: dict[int, InodeEntry] = {ROOT_INODE: InodeEntry(lookups=1)}
        self._dentries: dict[Link, int] = {}

    # -- numbering ----------------------------------------------------------

    def fuse_ino(self, st_ino: int) -> int:
        """Map an origin st_ino to a FUSE inode (a bijection swapping root and 1)."""
        if st_ino == self.root_ino:
            return ROOT_INODE
        if st_ino == ROOT_INODE:
            return self.root_ino
        return st_ino

    # -- paths --------------------------------------------------------------

    def path(self, inode: int) -> bytes:
        """Relative origin path of a known inode; KeyError if it has no link left."""
        parts: list[bytes] = []
        seen = 0
        while inode != ROOT_INODE:
            link = self._entries[inode].link
            if link is None:
                raise KeyError(inode)
            parent, name = link
            parts.append(name)
            inode = parent
            seen += 1
            if seen > 4096:  # a cycle would be a bug; never loop forever
                raise KeyError(inode)
        return b"/".join(reversed(parts))

    def paths(self, inode: int) -> list[bytes]:
        """Every known path of *inode* (hard links have several)."""
        entry = self._entries.get(inode)
        if entry is None or inode == ROOT_INODE:
            return [b""] if inode == ROOT_INODE else []
        found = []
        for parent, name in entry.links:
            try:
                found.append(self.child_path(parent, name))
            except KeyError:
                continue
        return found

    def child_path(self, parent: int, name: bytes) -> bytes:
        base = self.path(parent)
        return base + b"/" + name if base else name

    def count(self) -> int:
        return len(self._entries)

    def known(self, inode: int) -> bool:
        return inode in self._entries

    def child(self, parent: int, name: bytes) -> int | None:
        return self._dentries.get((parent, name))

    def find(self, path: bytes) -> int | None:
        """The inode the kernel knows under relative *path*, if any."""
        inode: int | None = ROOT_INODE
        for name in path.split(b"/") if path else []:
            inode = self._dentries.get((inode, name))  # type: ignore[arg-type]
            if inode is None:
                return None
        return inode

    def names_in(self, paths: Iterable[bytes]) -> tuple[list[Link], set[int]]:
        """What the kernel may hold at and below the directories *paths* (b"": all):
        the names below them, as (parent, name), and the inodes (theirs included).

        One pass over every name known, however many *paths*: for the rare moments
        a watch stops vouching for a subtree, not for the request path.
        """
        roots = {inode for inode in map(self.find, paths) if inode is not None}
        if ROOT_INODE in roots:
            return list(self._dentries), set(self._entries)
        below: dict[int, list[Link]] = {}
        for link in self._dentries:
            below.setdefault(link[0], []).append(link)
        links: list[Link] = []
        inodes = set(roots)
        pending = list(roots)
        while pending:
            for link in below.get(pending.pop(), ()):
                links.append(link)
                child = self._dentries[link]
                if child not in inodes:
                    inodes.add(child)
                    pending.append(child)
        return links, inodes

    def parent_of(self, inode: int) -> int:
        entry = self._entries.get(inode)
        if inode == ROOT_INODE or entry is None or entry.link is None:
            return ROOT_INODE
        return entry.link[0]

    # -- lookup counting ----------------------------------------------------

    def remember(self, parent: int, name: bytes, inode: int, kind: int) -> bool:
        """Count one kernel lookup of ``parent/name`` resolving to *inode*.

        Returns True when the number now stands for a different file than
        before (the origin reused it): the entry then has a new generation.
        """
        entry = self._entry(inode)
        reused = self._is_reuse(entry, (parent, name), kind)
        if reused:
            entry.generation += 1
        entry.kind = kind
        entry.lookups += 1
        self._set_link(parent, name, inode)
        return reused

    def kernel_mark(self, inode: int) -> int:
        entry = self._entries.get(inode)
        return entry.kernel_mark if entry is not None else 0

    def set_kernel_mark(self, inode: int, mark: int) -> None:
        """Only for an inode the table knows: one it does not is not kept for it."""
        entry = self._entries.get(inode)
        if entry is not None:
            entry.kernel_mark = mark

    def generation(self, inode: int) -> int:
        entry = self._entries.get(inode)
        return entry.generation if entry is not None else 0

    @staticmethod
    def _is_reuse(entry: InodeEntry, link: Link, kind: int) -> bool:
        if not entry.kind:
            return False  # a fresh entry
        if entry.kind != kind:
            return True
        # Every name the old file had is gone, yet the number turns up again.
        return entry.link is None

    def forget(self, inode: int, count: int) -> None:
        entry = self._entries.get(inode)
        if entry is None or inode == ROOT_INODE:
            return
        entry.lookups = max(0, entry.lookups - count)
        self._collect(inode)

    def opened(self, inode: int) -> None:
        self._entry(inode).open_handles += 1

    def closed(self, inode: int) -> None:
        entry = self._entries.get(inode)
        if entry is not None:
            entry.open_handles = max(0, entry.open_handles - 1)
            self._collect(inode)

    # -- namespace changes --------------------------------------------------

    def unlinked(self, parent: int, name: bytes) -> None:
        inode = self._dentries.pop((parent, name), None)
        if inode is None:
            return
        self._drop_link(inode, (parent, name))

    def renamed(self, old: Link, new: Link, exchange: bool = False) -> None:
        src = self._dentries.pop(old, None)
        dst = self._dentries.pop(new, None)
        if dst is not None:
            self._drop_link(dst, new)
        if src is not None:
            self._drop_link(src, old)
            self._set_link(new[0], new[1], src)
        if exchange and dst is not None:
            self._set_link(old[0], old[1], dst)

    # -- internals ----------------------------------------------------------

    def _entry(self, inode: int) -> InodeEntry:
        entry = self._entries.get(inode)
        if entry is None:
            entry = self._entries[inode] = InodeEntry()
        return entry

    def _set_link(self, parent: int, name: bytes, inode: int) -> None:
        link = (parent, name)
        previous = self._dentries.get(link)
        if previous == inode:
            return
        if previous is not None:  # the name now points at another file
            self._drop_link(previous, link)
        self._dentries[link] = inode
        entry = self._entry(inode)
        if link != entry.link and link not in entry.older:
            if entry.link is not None:
                entry.older += (entry.link,)
            entry.link = link
        self._entry(parent).children += 1

    def _drop_link(self, inode: int, link: Link) -> None:
        entry = self._entries.get(inode)
        if entry is not None and link in entry.links:
            if link == entry.link:  # the newest of the others builds the paths now
                entry.link = entry.older[-1] if entry.older else None
                entry.older = entry.older[:-1]
            else:
                entry.older = tuple(other for other in entry.older if other != link)
            parent = self._entries.get(link[0])
            if parent is not None:
                parent.children -= 1
                self._collect(link[0])
            self._collect(inode)

    def _collect(self, inode: int) -> None:
        """Drop an entry nobody refers to any more (kernel, handles, children)."""
        entry = self._entries.get(inode)
        if entry is None or inode == ROOT_INODE:
            return
        if entry.lookups or entry.children or entry.open_handles:
            return
        del self._entries[inode]
        for link in entry.links:
            self._dentries.pop(link, None)
            parent = self._entries.get(link[0])
            if parent is not None:
                parent.children -= 1
                self._collect(link[0])
