"""Process ids of a notifying thread (``PIDFD_GET_INFO``, Linux 6.13+, and ``/proc`` as the fallback), and
the sandbox's process tree told apart from the supervising process's other children."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

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


def _leave_an_orphan(pid_file: str) -> None:
    """Double fork: the grandchild is re-parented to the supervising process (a subreaper)."""
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            with open(pid_file, "w") as fh:
                fh.write(str(os.getpid()))
            time.sleep(60)
        os._exit(0)
    deadline = time.monotonic() + 10
    while not (os.path.exists(pid_file) and Path(pid_file).read_text()) and time.monotonic() < deadline:
        time.sleep(0.01)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


def test_an_orphan_of_the_sandbox_dies_and_an_unrelated_child_lives(tmp_path) -> None:
    """The tree is told apart from the supervising process's other children (a server a fixture
    started, say): the sandbox's orphan is killed when the call ends, the other child is not."""
    from pytest_sandlock.engine.policy import Policy
    from pytest_sandlock.engine.sandbox import Sandbox

    unrelated = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    pid_file = tmp_path / "orphan.pid"
    try:
        Sandbox(Policy(net=["127.0.0.1"], fs_write=[str(tmp_path)])).call(_leave_an_orphan, str(pid_file))
        orphan = int(pid_file.read_text())
        deadline = time.monotonic() + 5
        while _alive(orphan) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not _alive(orphan)
        assert unrelated.poll() is None and _alive(unrelated.pid)
    finally:
        unrelated.kill()
        unrelated.wait()


def test_a_gone_process_has_no_children_and_is_no_error() -> None:
    """ENOENT ("gone") is the one failure that means "nothing to list"; see the EMFILE case in
    tests/security/test_process_lifetime.py for the others."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert proctree._children_of(child.pid) == []
    assert proctree.descendants([child.pid]) == [child.pid]
    assert proctree.seccomp_filter_count(child.pid) == -1


def test_children_of_a_live_process() -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", "import subprocess, time; subprocess.Popen(['sleep', '30']); time.sleep(30)"]
    )
    try:
        deadline = time.monotonic() + 10
        while not proctree._children_of(parent.pid) and time.monotonic() < deadline:
            time.sleep(0.01)
        kids = proctree._children_of(parent.pid)
        assert len(kids) == 1
        assert proctree.descendants([parent.pid]) == [parent.pid, kids[0]]
    finally:
        for pid in proctree.descendants([parent.pid])[::-1]:
            os.kill(pid, 9)
        parent.wait()


def _orphan_that_exits() -> list[object]:
    """Inside the sandbox: a child starts a sleeper and exits, so the sleeper is adopted by the
    supervising process (a subreaper); then the sleeper is killed. Without a sandbox init reaps
    it at once; here it must not stay a zombie until the test ends."""
    starter = "import subprocess as s; print(s.Popen(['sleep', '30'], stdout=s.DEVNULL).pid)"
    out = subprocess.check_output([sys.executable, "-c", starter])
    pid = int(out)
    os.kill(pid, 9)
    deadline = time.monotonic() + 5
    while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
        time.sleep(0.01)
    return [pid, os.path.exists(f"/proc/{pid}")]


def test_an_adopted_orphan_that_exits_is_reaped_during_the_test() -> None:
    """Found running psutil's suite (test_zombie_process, test_wait_non_children hung)."""
    from pytest_sandlock.engine.policy import Policy
    from pytest_sandlock.engine.sandbox import Sandbox

    result = Sandbox(Policy(net=["127.0.0.1"])).call(_orphan_that_exits)
    pid, still_there = result.value
    assert still_there is False, f"the orphan {pid} stayed a zombie of the supervising process"
