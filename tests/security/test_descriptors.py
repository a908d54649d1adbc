"""Descriptors inherited from pytest and pytest-xdist: the worker's channel to the controller must be closed
in the sandbox (writing to it fails with EBADF), while an unsandboxed test of the same worker has it open.
Landlock governs new opens only, so an inherited writable descriptor would otherwise bypass the ceiling."""

from __future__ import annotations

import pytest

pytest.importorskip("xdist")

INNER = """
import errno, os, fcntl, pytest

def channel_fds(config):
    fds = set()
    for plugin in config.pluginmanager.get_plugins():
        io = getattr(getattr(getattr(plugin, "channel", None), "gateway", None), "_io", None)
        for name in ("infile", "outfile"):
            f = getattr(io, name, None)
            if f is not None:
                fds.add(f.fileno())
    return sorted(fds)

@pytest.mark.sandbox(net=["127.0.0.1"])
def test_channel_closed_in_sandbox(request):
    fds = channel_fds(request.config)
    assert len(fds) == 2, fds
    for fd in fds:
        with pytest.raises(OSError) as info:
            os.write(fd, b"garbage for the controller")
        assert info.value.errno == errno.EBADF
    # and no other descriptor inherited from the worker is a writable file outside the temp dirs
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        target = os.readlink(f"/proc/self/fd/{fd}") if os.path.exists(f"/proc/self/fd/{fd}") else ""
        if target.startswith("/") and not target.startswith(("/dev/", "/tmp/", "/var/tmp/", "/proc/")):
            mode = fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE
            assert mode == os.O_RDONLY, (fd, target)

@pytest.mark.sandbox(enabled=False)
def test_channel_open_without_sandbox(request):
    fds = channel_fds(request.config)
    assert len(fds) == 2, fds
    modes = sorted(fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE for fd in fds)
    assert modes == [os.O_RDONLY, os.O_WRONLY]  # the worker's outfile: writable, were it inherited
"""


def test_xdist_channel_is_closed_in_the_sandbox(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_inner=INNER)
    result = pytester.runpytest_subprocess("-n", "2", "-p", "no:cacheprovider", "-p", "no:randomly")
    result.assert_outcomes(passed=2)
