"""launcher: the child's confinement steps, their failures, and what the fork hands the child.

The steps run in a forked child (the engine's own fork): nothing here confines the test process."""

from __future__ import annotations

import errno
import gc
import os
import weakref
from typing import Any

import pytest

from pytest_sandlock.engine import channel, landlock, launcher, proctree, seccomp_filter
from pytest_sandlock.engine.errors import KernelFeatureError, SandboxError
from pytest_sandlock.engine.policy import Policy
from pytest_sandlock.engine.sandbox import Sandbox
from pytest_sandlock.engine.syscalls import NR_SECCOMP

CAPSET = 126


def _numbers(steps: tuple[launcher.Step, ...]) -> list[int]:
    return [step[0] for step in steps]


def test_steps_in_order_with_the_listener_last() -> None:
    sandbox = Sandbox(Policy(net=["127.0.0.1"]))
    assert sandbox.ruleset is not None
    drop = launcher.prepare_capability_drop()
    conf = launcher.Confinement(ruleset=sandbox.ruleset, compiled=sandbox.compiled, capability_drop=drop)
    numbers = _numbers(launcher.confinement_steps(conf))
    expected = [launcher.NR_PRCTL, landlock.SYS_LANDLOCK_RESTRICT_SELF, NR_SECCOMP]
    if drop is not None:  # run as root: capabilities go first, while capset is still allowed
        expected.insert(0, CAPSET)
    assert numbers == expected
    last = launcher.confinement_steps(conf)[-1]
    assert last[2] & seccomp_filter.FLAG_NEW_LISTENER
    assert last[3] == sandbox.compiled.fprog_address


def test_no_landlock_step_without_a_ruleset() -> None:
    conf = launcher.Confinement(ruleset=None, compiled=seccomp_filter.compiled_filter(False))
    assert landlock.SYS_LANDLOCK_RESTRICT_SELF not in _numbers(launcher.confinement_steps(conf))


def test_a_closed_ruleset_is_refused_before_the_fork(tmp_path) -> None:
    ruleset = landlock.build_ruleset(landlock.LandlockSpec(fs_write=(str(tmp_path),)))
    ruleset.close()
    conf = launcher.Confinement(ruleset=ruleset, compiled=seccomp_filter.compiled_filter(False))
    with pytest.raises(SandboxError, match="ruleset is closed"):
        launcher.confinement_steps(conf)


def _marker_target(path: str):
    def target(result_fd: int) -> None:
        with open(path, "w") as fh:
            fh.write("ran")
        os._exit(0)

    return target


def test_a_failing_step_is_reported_and_the_target_never_runs(tmp_path) -> None:
    """A seccomp program the kernel rejects (an invalid instruction): the child reports the step's
    errno, the parent raises, and the target was never called."""
    marker = tmp_path / "ran"
    bad = seccomp_filter.from_program(b"\xff\xff\x00\x00\x00\x00\x00\x00")
    conf = launcher.Confinement(ruleset=None, compiled=bad)
    with pytest.raises(KernelFeatureError) as info:
        launcher.launch(conf, _marker_target(str(marker)))
    assert "seccomp(SECCOMP_SET_MODE_FILTER)" in str(info.value)
    assert os.strerror(errno.EINVAL) in str(info.value)
    assert not marker.exists()


def test_step_errors_name_the_step() -> None:
    assert "capset" in str(launcher._step_error(launcher._STEP_CAPSET, errno.EPERM))
    assert "PR_SET_NO_NEW_PRIVS" in str(launcher._step_error(launcher._STEP_NO_NEW_PRIVS, errno.EINVAL))
    assert "PR_SET_PDEATHSIG" in str(launcher._step_error(launcher._STEP_PDEATHSIG, errno.EINVAL))
    assert isinstance(launcher._step_error(launcher._STEP_LANDLOCK, errno.ENOSYS), KernelFeatureError)


def _client_fds_here() -> object:
    return channel._client_fds


def test_the_child_inherits_its_client_descriptors_and_the_parent_keeps_none() -> None:
    before = channel._client_fds
    seen = Sandbox(Policy(net=["127.0.0.1"])).call(_client_fds_here).value
    assert isinstance(seen, tuple) and len(seen) == 2 and all(isinstance(fd, int) for fd in seen)
    assert channel._client_fds == before  # restored in the parent right after the fork


def test_a_listed_descriptor_that_is_not_open_never_closes_the_listener() -> None:
    """The child closes the descriptors it was given after creating its listener, which takes the
    lowest free number: one of them if the caller listed numbers that were not open."""
    probe = os.dup(0)
    os.close(probe)  # the lowest free descriptor now; the launcher's pipes and the listener follow it
    box = Sandbox(Policy(net=["127.0.0.1"]), close_fds=range(probe, probe + 64))
    assert box.call(int, "7").value == 7


def test_unreadable_capabilities_fail_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    """If capget fails, nothing says which capabilities to drop: the sandbox refuses to run rather
    than running a root test with all of them (an error path, simulated; no kernel claim here)."""

    def refused(*args: int) -> int:
        raise OSError(errno.EFAULT, "Bad address")

    monkeypatch.setattr(launcher, "raw_syscall", refused)
    with pytest.raises(SandboxError, match="cannot read this process's capabilities"):
        launcher.prepare_capability_drop()
    with pytest.raises(SandboxError, match="cannot read this process's capabilities"):
        Sandbox(Policy(net=["127.0.0.1"])).call(int)


class _Thing:
    """A plain object the collector tracks (instances of a Python class with a __dict__)."""


_MODULE_THING = _Thing()  # made long before any fork; referred to by this module's globals


@pytest.mark.parametrize("os_fork", ["0", "1"])
def test_the_target_runs_with_an_unfrozen_collector(monkeypatch: pytest.MonkeyPatch, os_fork: str) -> None:
    """forking.fork freezes the heap around the fork (both the raw fork and the os.fork() fallback);
    the child unfreezes before the target, which then sees objects made before the fork as plain
    pytest would: gc.get_referrers finds their referrers and gc.collect frees their cycles."""
    monkeypatch.setenv("PYTEST_SANDLOCK_OS_FORK", os_fork)
    cycle = _Thing()
    cycle.self = cycle  # type: ignore[attr-defined]
    ref = weakref.ref(cycle)
    holder = [cycle]
    del cycle
    assert gc.get_referrers(_MODULE_THING)  # the control: found here, in the pytest process

    def in_child() -> dict[str, Any]:
        holder.clear()  # now only the cycle keeps the object alive, in this process
        # Read before collecting: CPython 3.12 reports a few hundred frozen objects after any
        # collection that follows a freeze and unfreeze, with no fork at all.
        frozen = gc.get_freeze_count()
        gc.collect()
        return {
            "freeze_count": frozen,
            "referrers_found": bool(gc.get_referrers(_MODULE_THING)),
            "cycle_freed": ref() is None,
        }

    seen = Sandbox(Policy(net=["127.0.0.1"])).call(in_child).value
    assert seen == {"freeze_count": 0, "referrers_found": True, "cycle_freed": True}
    assert ref() is not None and holder  # the parent's own copy is untouched
    assert gc.get_freeze_count() == 0


CHILD_DIES_EARLY = """
import os, sys
from pytest_sandlock.engine import launcher, seccomp_filter
from pytest_sandlock.engine.errors import SandboxError

# os.fork() (PYTEST_SANDLOCK_OS_FORK=1) runs the at-fork child handlers right after the fork:
# this one ends the child before it has confined itself or reported anything.
os.register_at_fork(after_in_child=lambda: os._exit(3))
conf = launcher.Confinement(ruleset=None, compiled=seccomp_filter.compiled_filter(False))
try:
    launcher.launch(conf, lambda fd: os._exit(0))
except SandboxError as exc:
    print(exc)
    sys.exit(0)
sys.exit("launched")
"""


def test_a_child_dying_before_it_reports_is_seen_at_once(tmp_path) -> None:
    """The parent's copy of the child's sync end is closed before it waits: the child's death reads as
    EOF, not as a silence that lasts the hand-off timeout (30 s; the run below gets 20)."""
    import subprocess
    import sys

    env = dict(os.environ, PYTEST_SANDLOCK_OS_FORK="1")
    proc = subprocess.run(
        [sys.executable, "-c", CHILD_DIES_EARLY],
        env=env,
        capture_output=True,
        text=True,
        timeout=launcher.HANDOFF_TIMEOUT - 10,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip() == "the confined child died before it was confined"


def _listeners_held() -> list[int]:
    """This process's descriptors that are seccomp listeners."""
    held = []
    for name in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{name}") == "anon_inode:seccomp notify":
                held.append(int(name))
        except OSError:
            pass
    return held


def test_retired_descriptors_are_closed_by_the_next_run_and_never_reach_its_child() -> None:
    """Sandbox(retire_fds=True) leaves a finished run's descriptors to the next launch. The next
    child, which inherits them at the fork, closes its copies before it runs its target: it holds no
    seccomp listener at all (neither its own nor the previous run's)."""
    launcher.close_retired()
    box = Sandbox(Policy(), retire_fds=True)
    assert box.call(int).value == 0
    first = list(launcher._retired)
    assert len(first) == 5  # pidfd, result pipe, listener, the two live-policy pipes
    # Control: the pytest-side copy of the first run's listener is still open when the next child forks.
    assert [fd for fd in _listeners_held() if fd in first]
    assert box.call(_listeners_held).value == []
    assert not set(first) & set(launcher._retired)  # closed by the second launch
    assert not [fd for fd in _listeners_held() if fd in first]
    launcher.close_retired()
    assert launcher._retired == [] and not _listeners_held()


def test_without_retiring_a_run_closes_its_descriptors_at_its_end() -> None:
    launcher.close_retired()
    before = set(os.listdir("/proc/self/fd"))
    assert Sandbox(Policy()).call(int).value == 0
    assert launcher._retired == []
    assert not _listeners_held()
    assert set(os.listdir("/proc/self/fd")) - before <= {  # cached per process: ruleset, children file
        str(fd) for fd in (*landlock.cached_fds(), *proctree.kept_fds())
    }
