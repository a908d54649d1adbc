"""Cut a forked child off the io_uring rings it inherited, so that it cannot corrupt its parent's.

A ring is memory the kernel shares between the process that made it and every fork of it
(``MAP_SHARED`` of the ring's descriptor). The sandbox refuses io_uring (its operations would pass
the supervisor), but a library in the child that inherited a ring (libuv, under uvloop, keeps one for
``epoll_ctl`` batching in every loop) first writes its submission into the shared ring and only then
calls ``io_uring_enter``. Refused, it aborts; and the submission it left in the ring reaches the kernel
with the parent's next ``io_uring_enter``, whose unexpected completion aborts the pytest process: the
whole session dies (found running aiohttp's suite with a loop made by a fixture).

:func:`detach_rings` replaces each io_uring mapping of the calling process with private zeroed
memory at the same address. The child's writes then stay its own; its io_uring calls still fail, so
a test that uses such a loop fails (the child aborts), and the pytest process and its loop are
unharmed. It reads ``/proc/self/maps`` (about 0.1 ms), so callers run it only where a ring is likely.
"""

from __future__ import annotations

import ctypes
import mmap

_libc = ctypes.CDLL(None, use_errno=True)
_mmap = _libc.mmap
_mmap.restype = ctypes.c_void_p
_mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
_MAP_FIXED = 0x10
_MAP_FAILED = ctypes.c_void_p(-1).value

MAPS = "/proc/self/maps"
RING_NAME = b"anon_inode:[io_uring]"


def ring_mappings(maps: str = MAPS) -> list[tuple[int, int]]:
    """(start, length) of every io_uring mapping in ``maps``."""
    found = []
    with open(maps, "rb") as fh:
        for line in fh:
            if line.rstrip().endswith(RING_NAME):
                start, end = (int(part, 16) for part in line.split(None, 1)[0].split(b"-"))
                found.append((start, end - start))
    return found


def detach_rings() -> list[str]:
    """Replace this process's io_uring mappings with private memory; returns the problems met."""
    problems = []
    try:
        rings = ring_mappings()
    except (OSError, ValueError) as exc:
        return [f"cannot list io_uring mappings: {exc}"]
    flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | _MAP_FIXED
    for start, length in rings:
        got = _mmap(start, length, mmap.PROT_READ | mmap.PROT_WRITE, flags, -1, 0)
        if got in (None, _MAP_FAILED) or got != start:
            problems.append(f"cannot detach the io_uring ring at {start:#x}: errno {ctypes.get_errno()}")
    return problems
