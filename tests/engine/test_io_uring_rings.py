"""Finding the io_uring rings a process inherited (the end-to-end case is in test_compat_plugins.py)."""

from __future__ import annotations

from pathlib import Path

from pytest_sandlock.engine.io_uring_rings import ring_mappings

MAPS = """\
55d0c0a00000-55d0c0a21000 rw-p 00000000 00:00 0                          [heap]
7f5b5c838000-7f5b5c83c000 rw-s 10000000 00:10 16072698                   anon_inode:[io_uring]
7f5b5d3ba000-7f5b5d3bd000 rw-s 00000000 00:10 16072698                   anon_inode:[io_uring]
7f5b5d3bd000-7f5b5d3be000 rw-s 00000000 00:10 16072699                   anon_inode:[eventfd]
7ffd1d0a3000-7ffd1d0c4000 rw-p 00000000 00:00 0                          [stack]
"""


def test_only_the_rings_are_found(tmp_path: Path) -> None:
    maps = tmp_path / "maps"
    maps.write_text(MAPS)
    assert ring_mappings(str(maps)) == [(0x7F5B5C838000, 0x4000), (0x7F5B5D3BA000, 0x3000)]


def test_this_process_has_no_ring() -> None:
    assert ring_mappings() == []  # the test process runs no uvloop loop
