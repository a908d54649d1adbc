"""Process ids of a notifying thread: ``PIDFD_GET_INFO`` (Linux 6.13+), and ``/proc`` as the fallback."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest

from pytest_sandlock.engine import proctree


@pytest.fixture(params=["pidfd", "proc"])
def lookup(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    if request.param == "proc":
        monkeypatch.setattr(proctree, "_pidfd_info_works", False)
    yield request.param


def test_a_child_process(lookup: str) -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert proctree.read_ids(child.pid) == (child.pid, os.getpid())
    finally:
        child.kill()
        child.wait()


def test_a_thread_gives_its_process(lookup: str) -> None:
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait)
    thread.start()
    try:
        assert thread.native_id is not None and thread.native_id != os.getpid()
        assert proctree.read_ids(thread.native_id) == (os.getpid(), os.getppid())
    finally:
        stop.set()
        thread.join()


def test_a_gone_process(lookup: str) -> None:
    child = subprocess.Popen(["/bin/true"])
    child.wait()
    assert proctree.read_ids(child.pid) == (child.pid, 0)


def test_the_pidfd_path_is_taken_on_this_kernel() -> None:
    """The fast path is what the benchmarks measure: make sure it is not silently falling back."""
    major, minor = (int(part) for part in os.uname().release.split(".")[:2])
    if (major, minor) < (6, 13):
        pytest.skip("PIDFD_GET_INFO needs Linux 6.13+")
    proctree.read_ids(os.getpid())
    assert proctree._pidfd_info_works
