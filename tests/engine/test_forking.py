"""forking.fork: the raw fork for single-threaded processes keeps os.fork()'s observable behaviour.

Each case runs in a fresh interpreter (os.register_at_fork handlers cannot be unregistered, and the
suite's own process may have threads under xdist)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from typing import Any

import pytest

PRELUDE = """
import gc, json, os, random, sys, threading, time
from pytest_sandlock.engine import forking
calls = []
os.register_at_fork(before=lambda: calls.append("before-1"), after_in_parent=lambda: calls.append("parent-1"),
                    after_in_child=lambda: calls.append("child-1"))
os.register_at_fork(before=lambda: calls.append("before-2"), after_in_parent=lambda: calls.append("parent-2"),
                    after_in_child=lambda: calls.append("child-2"))
r, w = os.pipe()
def report_from_child(handlers):
    os.close(r)
    out = {"calls_at_start": list(calls), "handlers_ran": handlers is None,
           "handlers": [getattr(h, "__qualname__", repr(h)) for h in handlers or []]}
    before_seed = random.getstate()
    forking.run_child_handlers(handlers or [])
    out["calls_after"] = list(calls)
    out["reseeded"] = random.getstate() != before_seed
    out["threads"] = forking.thread_count()
    out["freeze_count"] = gc.get_freeze_count()
    os.write(w, json.dumps(out).encode())
    os._exit(0)
def collect(pid, parent_extra):
    os.close(w)
    data = b""
    while chunk := os.read(r, 65536):
        data += chunk
    os.waitpid(pid, 0)
    out = json.loads(data)
    out.update(parent_extra)
    print(json.dumps(out))
"""


def _run_script(script: str, env: dict[str, str] | None = None) -> tuple[Any, str]:
    """Run ``script`` in a fresh interpreter; returns (its last stdout line as JSON, its stderr)."""
    proc = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr


def _run(body: str, env: dict[str, str] | None = None) -> dict:
    return _run_script(PRELUDE + textwrap.dedent(body), env)[0]


FORK_ONCE = """
random.random()
pid, handlers = forking.fork()
if pid == 0:
    report_from_child(handlers)
collect(pid, {"parent_calls": list(calls), "parent_freeze_count": gc.get_freeze_count(),
              "raw": forking._registries is not None})
"""


def test_single_threaded_fork_defers_child_handlers_and_keeps_cpython_order() -> None:
    out = _run(FORK_ONCE)
    assert out["raw"] is True
    assert out["handlers_ran"] is False
    # before handlers in reverse registration order, then the parent's in order: as os.fork() does
    assert out["parent_calls"] == ["before-2", "before-1", "parent-1", "parent-2"]
    # the child's are handed back, not run yet, in registration order...
    assert out["calls_at_start"] == ["before-2", "before-1"]
    assert out["calls_after"] == ["before-2", "before-1", "child-1", "child-2"]
    # ...random's reseed among them; the thread-repair ones (nothing to repair) are not
    assert "Random.seed" in out["handlers"]
    assert "_after_fork" not in out["handlers"]
    assert out["reseeded"] is True
    assert out["threads"] == 1
    assert out["freeze_count"] > 0 and out["parent_freeze_count"] == 0


def test_a_second_thread_means_os_fork_and_its_handlers_already_ran() -> None:
    out = _run(
        """
        stop = threading.Event()
        t = threading.Thread(target=stop.wait)
        t.start()
        pid, handlers = forking.fork()
        if pid == 0:
            report_from_child(handlers)
        stop.set()
        t.join()
        collect(pid, {"parent_calls": list(calls)})
        """
    )
    assert out["handlers_ran"] is True
    assert out["calls_at_start"] == ["before-2", "before-1", "child-1", "child-2"]
    assert out["parent_calls"] == ["before-2", "before-1", "parent-1", "parent-2"]


def test_environment_variable_forces_os_fork() -> None:
    out = _run(FORK_ONCE, env={"PYTEST_SANDLOCK_OS_FORK": "1"})
    assert out["raw"] is False
    assert out["handlers_ran"] is True
    assert out["calls_at_start"] == ["before-2", "before-1", "child-1", "child-2"]


@pytest.mark.parametrize("os_fork", ["0", "1"])
def test_handler_exceptions_are_reported_and_the_next_handler_runs(os_fork: str) -> None:
    failing = "calls = []\nos.register_at_fork(after_in_child=lambda: 1 / 0)"
    script = PRELUDE.replace("calls = []", failing) + FORK_ONCE
    out, stderr = _run_script(script, {"PYTEST_SANDLOCK_OS_FORK": os_fork})
    assert out["calls_after"][-2:] == ["child-1", "child-2"]
    assert "ZeroDivisionError" in stderr


CONFINED_HANDLER = """
import json, os, sys
from pytest_sandlock.engine.policy import Policy
from pytest_sandlock.engine.sandbox import Sandbox

seen = {}

def record_seccomp_mode():
    with open("/proc/self/status") as fh:
        seen["mode"] = next(line.split()[1] for line in fh if line.startswith("Seccomp:"))

os.register_at_fork(after_in_child=record_seccomp_mode)
print(json.dumps(Sandbox(Policy(net=["127.0.0.1"])).call(lambda: seen.get("mode")).value))
"""


@pytest.mark.parametrize(("os_fork", "mode"), [("0", "2"), ("1", "0")])
def test_sandboxed_child_runs_at_fork_handlers_confined(os_fork: str, mode: str) -> None:
    """The fast fork runs a sandbox child's at-fork handlers under its seccomp filter (mode 2);
    after os.fork() they ran before it (mode 0), which is what the control shows."""
    assert _run_script(CONFINED_HANDLER, {"PYTEST_SANDLOCK_OS_FORK": os_fork})[0] == mode


def test_a_before_handler_that_starts_a_thread_means_os_fork() -> None:
    """A raw fork is only safe with one thread: if a ``before`` handler starts one, the fork falls
    back to os.fork() (the parent handlers undo the first round of ``before`` handlers)."""
    out = _run(
        """
        stop = threading.Event()
        def start_thread():
            if not calls.count("started"):
                calls.append("started")
                threading.Thread(target=stop.wait).start()
        os.register_at_fork(before=start_thread)
        pid, handlers = forking.fork()
        if pid == 0:
            report_from_child(handlers)
        stop.set()
        collect(pid, {"parent_calls": list(calls)})
        """
    )
    assert out["handlers_ran"] is True  # os.fork(): CPython ran the child's handlers
    assert out["calls_at_start"][-2:] == ["child-1", "child-2"]
    parent = out["parent_calls"]
    assert parent[0] == "started" and parent.count("parent-1") == 2  # undone once, then os.fork's


KEEP_RANDOM = """
random.seed(1234)
expected = random.Random(1234).random()
pid, handlers = forking.fork(keep_random_state=KEEP)
if pid == 0:
    forking.run_child_handlers(handlers or [])
    os.close(r)
    names = [getattr(h, "__qualname__", "") for h in handlers or []]
    os.write(w, json.dumps({"value": random.random(), "handlers": names}).encode())
    os._exit(0)
collect(pid, {"expected": expected, "parent_next": random.random()})
"""


@pytest.mark.parametrize("os_fork", ["0", "1"], ids=["fast-fork", "os-fork"])
@pytest.mark.parametrize("keep", [True, False], ids=["kept", "reseeded"])
def test_keep_random_state_continues_the_seeded_sequence_in_the_child(os_fork: str, keep: bool) -> None:
    """With keep_random_state the child draws what this process would have drawn next (a seed a
    fixture set reaches the test), on both fork paths: the fast fork leaves random's at-fork reseed
    out, after os.fork() the state is put back. Without it (the control), the child is reseeded."""
    out = _run(KEEP_RANDOM.replace("KEEP", str(keep)), env={"PYTEST_SANDLOCK_OS_FORK": os_fork})
    assert out["parent_next"] == out["expected"]  # the parent's own sequence is untouched
    if keep:
        assert out["value"] == out["expected"]
        assert "Random.seed" not in out["handlers"]
    else:
        assert out["value"] != out["expected"]


def test_keep_random_state_holds_when_a_before_handler_forces_os_fork() -> None:
    """A before handler that starts a thread makes the raw fork unsafe, so os.fork() is used after
    all, and it reseeds the child: the state is put back there too."""
    out = _run(
        """
        stop = threading.Event()
        os.register_at_fork(before=lambda: threading.Thread(target=stop.wait, daemon=True).start())
        random.seed(1234)
        expected = random.Random(1234).random()
        pid, handlers = forking.fork(keep_random_state=True)
        if pid == 0:
            os.close(r)
            os.write(w, json.dumps({"value": random.random(), "os_fork": handlers is None}).encode())
            os._exit(0)
        stop.set()
        collect(pid, {"expected": expected})
        """
    )
    assert out["os_fork"] is True
    assert out["value"] == out["expected"]
