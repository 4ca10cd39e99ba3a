"""The C library, loaded once, for the calls Python's os module lacks
(inotify, statfs f_type, renameat2)."""

import ctypes
import ctypes.util

libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
