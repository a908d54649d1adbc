"""Descriptors in the sandboxed child: pytest's and pre-session ones are closed, a fixture's are kept."""

from __future__ import annotations

import pytest

CONFTEST = """
import os
import pytest

def pytest_configure(config):
    # opened before the session starts, like pytest's and its plugins' own files
    path = os.path.join(str(config.rootpath), "early.txt")
    config.early_fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)

@pytest.fixture(scope="session")
def late_fd(pytestconfig):
    # a fixture hands the test a descriptor on a file outside the writable set: the fixture's choice
    fd = os.open(os.path.join(str(pytestconfig.rootpath), "late.txt"), os.O_WRONLY | os.O_CREAT, 0o644)
    yield fd
    os.close(fd)
"""

TESTS = """
import errno, os
import pytest

@pytest.mark.sandbox
def test_descriptors(pytestconfig, late_fd):
    with pytest.raises(OSError) as info:
        os.write(pytestconfig.early_fd, b"escape")
    assert info.value.errno == errno.EBADF
    assert os.write(late_fd, b"fixture-handed") == 14

@pytest.mark.sandbox(enabled=False)
def test_control(pytestconfig):
    assert os.write(pytestconfig.early_fd, b"control") == 7
"""


def test_pre_session_descriptors_closed_fixture_ones_kept(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_fds=TESTS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--log-file=run.log")
    result.assert_outcomes(passed=2)
    assert (pytester.path / "early.txt").read_bytes() == b"control"
    assert (pytester.path / "late.txt").read_bytes() == b"fixture-handed"


def test_no_seccomp_listener_reaches_a_test_or_outlives_the_run(pytester: pytest.Pytester) -> None:
    """Each sandboxed test's run leaves its descriptors to the next one (closed while that child
    confines itself): no test, sandboxed or not, sees a listener, and none is left once the tests ran."""
    pytester.makeconftest(
        """
        import os

        def listeners():
            held = []
            for name in os.listdir("/proc/self/fd"):
                try:
                    if os.readlink(f"/proc/self/fd/{name}") == "anon_inode:seccomp notify":
                        held.append(name)
                except OSError:
                    pass
            return held

        def pytest_sessionfinish(session):
            print(f"listeners at the end: {listeners()}")
        """
    )
    pytester.makepyfile(
        """
        import pytest
        from conftest import listeners

        @pytest.mark.sandbox
        @pytest.mark.parametrize("i", range(3))
        def test_sandboxed(i):
            assert listeners() == []

        def test_plain_after_a_sandboxed_one():
            assert len(listeners()) == 1  # the last sandboxed run's, closed by the next launch or at the end
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-s", "-p", "no:randomly")
    result.assert_outcomes(passed=4)
    assert "listeners at the end: []" in result.stdout.str()
