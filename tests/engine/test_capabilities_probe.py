"""The kernel probe: what it reports when something the supervisor needs is refused."""

from __future__ import annotations

import errno
import json
import subprocess
import sys

import pytest

from pytest_sandlock.engine import capabilities


def test_this_machine_is_usable() -> None:
    caps = capabilities.probe()
    assert caps.usable, caps.problems


def _refused(*args: object) -> bytes:
    raise PermissionError(errno.EPERM, "Operation not permitted")


def test_unreadable_child_memory_is_a_clear_problem(monkeypatch: pytest.MonkeyPatch) -> None:
    """Yama's ptrace_scope 2 or 3 (not on this kernel) refuses process_vm_readv: simulated here,
    for the quick probe's spawned child and the forked one. The probe must say so in words,
    instead of every supervised call failing later."""
    monkeypatch.setattr(capabilities, "_cached", None)  # restored after the test
    monkeypatch.setattr(capabilities, "read_memory_vm", _refused)
    monkeypatch.setattr(capabilities, "read_memory_spans", _refused)
    caps = capabilities.probe(refresh=True)
    assert not caps.usable
    assert any("cannot read a child process's memory" in p for p in caps.problems), caps.problems
    assert "UNAVAILABLE" in caps.summary()


def test_a_sandbox_refuses_to_run_on_an_unusable_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    from pytest_sandlock.engine.errors import KernelFeatureError
    from pytest_sandlock.engine.policy import Policy
    from pytest_sandlock.engine.sandbox import Sandbox

    box = Sandbox(Policy())
    monkeypatch.setattr(box.capabilities, "problems", ["cannot read a child process's memory (simulated)"])
    with pytest.raises(KernelFeatureError, match="cannot read a child process's memory"):
        box.call(int)


def _counting_forked_probe(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, bool]]:
    calls: list[dict[str, bool]] = []
    forked = capabilities._probe_in_a_forked_child

    def counting() -> dict[str, bool]:
        calls.append(forked())
        return calls[-1]

    monkeypatch.setattr(capabilities, "_cached", None)
    monkeypatch.setattr(capabilities, "_probe_in_a_forked_child", counting)
    return calls


def test_the_probe_forks_nothing_where_everything_works(monkeypatch: pytest.MonkeyPatch) -> None:
    """The seccomp flags come from a throwaway thread and child-memory access from a spawned
    child (real kernel, both): the forked probe, and its 2 ms fork of a pytest process, is not run.
    Its answer is the forked probe's."""
    calls = _counting_forked_probe(monkeypatch)
    caps = capabilities.probe(refresh=True)
    assert calls == []
    assert caps.usable and caps.seccomp_listener and caps.wait_killable_recv and caps.sync_wakeup
    assert caps.child_memory
    assert capabilities._probe_seccomp() == capabilities._probe_in_a_forked_child()
    assert len(calls) == 1  # only the explicit call above


def test_a_refusal_of_the_quick_probe_is_checked_in_a_forked_child(monkeypatch: pytest.MonkeyPatch) -> None:
    """The spawned child's memory refused (simulated): the forked probe decides, and here it reads
    the memory, so the sandbox stays usable. A refusal is never reported from the quick probe alone
    (an exec'd child can differ from a forked one: a binary the user may run but not read)."""
    calls = _counting_forked_probe(monkeypatch)
    monkeypatch.setattr(capabilities, "read_memory_vm", _refused)
    assert capabilities._spawned_child_memory_readable() is False
    caps = capabilities.probe(refresh=True)
    assert len(calls) == 1 and calls[0]["memory"] is True
    assert caps.usable and caps.child_memory


def test_the_access_check_comes_before_the_read(monkeypatch: pytest.MonkeyPatch) -> None:
    """Read before the exec has set the stack address (0 here, unmapped): EFAULT, which the kernel
    returns only after its ptrace access check allowed the read, so it counts as readable."""
    monkeypatch.setattr(capabilities, "_start_stack", lambda pid: 0)
    assert capabilities._spawned_child_memory_readable() is True


PROBE_AND_SHOW_THREADS = """
import glob, json, threading
from pytest_sandlock.engine import capabilities

def tasks():
    found = {}
    for path in glob.glob("/proc/self/task/*/status"):
        fields = dict(line.split(":", 1) for line in open(path) if ":" in line)
        keys = ("Seccomp", "Seccomp_filters", "NoNewPrivs")
        found[path.split("/")[4]] = {k: fields[k].strip() for k in keys}
    return found

before = tasks()
caps = capabilities.probe()
shown = {"before": before, "after": tasks(), "threads": threading.active_count(), "usable": caps.usable}
print(json.dumps(shown))
"""


def test_the_probe_leaves_no_filter_and_no_no_new_privs_on_any_thread() -> None:
    """The probe's filter and no_new_privs were the throwaway thread's: afterwards every thread of
    the process (here a fresh interpreter's) is as it was, and the probe's thread is gone."""
    proc = subprocess.run([sys.executable, "-c", PROBE_AND_SHOW_THREADS], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    shown = json.loads(proc.stdout)
    assert shown["usable"] and shown["threads"] == 1
    assert shown["after"] == shown["before"]
    assert all(task["Seccomp"] == "0" and task["Seccomp_filters"] == "0" for task in shown["after"].values())
    # Control, in another fresh interpreter: the same flags tried on the main thread do show.
    on_main = PROBE_AND_SHOW_THREADS.replace(
        "caps = capabilities.probe()",
        "capabilities._try_listener_flags(dict.fromkeys(capabilities._SECCOMP_KEYS, False))\n"
        "caps = capabilities.probe()",
    )
    proc = subprocess.run([sys.executable, "-c", on_main], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    confined = json.loads(proc.stdout)["after"]
    shown_confined = [(t["Seccomp"], t["Seccomp_filters"], t["NoNewPrivs"]) for t in confined.values()]
    assert shown_confined == [("2", "1", "1")]


PROBE_WITH_ITS_CHILDREN_REAPED_ELSEWHERE = """
import os
from pytest_sandlock.engine import capabilities

real_waitpid = os.waitpid

def reaped_elsewhere(pid, options):
    real_waitpid(pid, options)  # what a plugin's SIGCHLD handler calling waitpid(-1) did first
    raise ChildProcessError(10, "No child processes")

os.waitpid = reaped_elsewhere
print(capabilities._probe_seccomp()["memory"], capabilities._probe_in_a_forked_child()["memory"])
"""


def test_children_reaped_by_someone_else_do_not_break_the_probe() -> None:
    """A plugin's SIGCHLD handler may reap the probe's children before the probe does
    (``waitpid(-1)``): the probe still answers. Simulated in a fresh interpreter, whose waitpid
    finds every child reaped already."""
    proc = subprocess.run(
        [sys.executable, "-c", PROBE_WITH_ITS_CHILDREN_REAPED_ELSEWHERE],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["True", "True"]
