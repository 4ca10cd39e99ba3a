"""The inode table: paths through renames, hard links, forget."""

from __future__ import annotations

import stat

from cachefs.fuse.inodes import ROOT_INODE, InodeTable

DIR, REG = stat.S_IFDIR, stat.S_IFREG


def table() -> InodeTable:
    return InodeTable(origin_root_ino=2)


def test_root_and_inode_one_swap_places() -> None:
    t = table()
    assert t.fuse_ino(2) == ROOT_INODE
    assert t.fuse_ino(ROOT_INODE) == 2
    assert t.fuse_ino(77) == 77


def test_renaming_a_directory_moves_everything_below() -> None:
    t = table()
    t.remember(ROOT_INODE, b"a", 10, DIR)
    t.remember(10, b"b", 11, DIR)
    t.remember(11, b"f", 12, REG)
    assert t.path(12) == b"a/b/f"
    t.renamed((ROOT_INODE, b"a"), (ROOT_INODE, b"z"))
    assert t.path(12) == b"z/b/f"


def test_rename_over_existing_and_exchange() -> None:
    t = table()
    t.remember(ROOT_INODE, b"x", 20, REG)
    t.remember(ROOT_INODE, b"y", 21, REG)
    t.renamed((ROOT_INODE, b"x"), (ROOT_INODE, b"y"), exchange=True)
    assert t.path(20) == b"y"
    assert t.path(21) == b"x"
    t.renamed((ROOT_INODE, b"x"), (ROOT_INODE, b"y"))
    assert t.path(21) == b"y"
    assert t.child(ROOT_INODE, b"x") is None


def test_hard_links_share_an_inode_and_survive_unlink_of_one() -> None:
    t = table()
    t.remember(ROOT_INODE, b"one", 30, REG)
    t.remember(ROOT_INODE, b"two", 30, REG)
    t.unlinked(ROOT_INODE, b"two")
    assert t.path(30) == b"one"


def test_forget_collects_entries_and_keeps_parents_of_known_children() -> None:
    t = table()
    t.remember(ROOT_INODE, b"dir", 40, DIR)
    t.remember(40, b"file", 41, REG)
    t.forget(40, 1)
    assert t.known(40)  # still the parent of a known inode
    assert t.path(41) == b"dir/file"
    t.forget(41, 1)
    assert not t.known(41)
    assert not t.known(40)


def test_open_handles_keep_an_unlinked_inode() -> None:
    t = table()
    t.remember(ROOT_INODE, b"f", 50, REG)
    t.opened(50)
    t.unlinked(ROOT_INODE, b"f")
    t.forget(50, 1)
    assert t.known(50)
    t.closed(50)
    assert not t.known(50)


def test_a_reused_inode_number_gets_a_new_generation() -> None:
    t = table()
    assert not t.remember(ROOT_INODE, b"old", 60, DIR)
    t.unlinked(ROOT_INODE, b"old")  # removed through the mount, kernel not yet forgotten
    assert t.remember(ROOT_INODE, b"new", 60, DIR)
    assert t.generation(60) == 1
    assert t.path(60) == b"new"
    assert t.remember(ROOT_INODE, b"new", 60, REG)  # the type changed: another file
    assert t.generation(60) == 2


def test_a_second_hard_link_is_not_a_reuse() -> None:
    t = table()
    t.remember(ROOT_INODE, b"a", 70, REG)
    assert not t.remember(ROOT_INODE, b"b", 70, REG)
    assert t.generation(70) == 0


def test_a_scanned_library_costs_few_hundred_bytes_an_inode() -> None:
    """After a library scan the kernel holds an inode per entry: a million of them.
    Each costs its entry, one link and the two dict slots, not a dict of links and an
    instance dict besides (bench/scale.py measures the whole mount)."""
    import tracemalloc

    names = [f"IMG_{i:06d}.jpg".encode() for i in range(20_000)]
    tracemalloc.start()
    try:
        t = table()
        before = tracemalloc.get_traced_memory()[0]
        for i, name in enumerate(names):
            if i % 20 == 0:
                directory = 100 + i
                t.remember(ROOT_INODE, b"d%d" % i, directory, DIR)
            t.remember(directory, name, 1_000_000 + i, REG)
        per_inode = (tracemalloc.get_traced_memory()[0] - before) / t.count()
    finally:
        tracemalloc.stop()
    assert t.path(1_000_000 + 41) == b"d40/" + names[41]
    assert per_inode < 350, per_inode  # 274 on CPython 3.11; 498 before
