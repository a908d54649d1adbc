"""A thread started by an ``os.register_at_fork(after_in_child=...)`` handler must not run unconfined.

Seccomp and Landlock confine the thread that installs them. The fast fork (a single-threaded pytest)
runs the child's at-fork handlers only once the child is confined, so such a thread is confined; after
``os.fork()`` (a threaded pytest, or ``PYTEST_SANDLOCK_OS_FORK=1``) the interpreter has run them before
confinement, and the child refuses to run the test. Each case runs in a fresh interpreter: at-fork
handlers cannot be unregistered.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import textwrap

from security_helpers import OUTSIDE, Outside

SCRIPT = """
import json, os, socket, sys, threading
from pytest_sandlock.engine.errors import SandboxError
from pytest_sandlock.engine.policy import Policy
from pytest_sandlock.engine.sandbox import Sandbox

host, port, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
state = {}

def start_worker():
    # A library's worker thread, restarted in every child; the test hands it work.
    go = threading.Event()
    def worker():
        go.wait()
        s = socket.socket()
        try:
            s.connect((host, port))
            s.sendall(b"from the at-fork thread")
            state["outcome"] = "connected"
        except OSError as exc:
            state["outcome"] = exc.errno
        finally:
            s.close()
    t = threading.Thread(target=worker)
    t.start()
    state["go"], state["thread"] = go, t

os.register_at_fork(after_in_child=start_worker)

def test_body():
    state["go"].set()
    state["thread"].join()
    return state["outcome"]

if mode == "unconfined":
    pid = os.fork()  # the positive control: the same worker, no sandbox
    if pid == 0:
        os._exit(0 if test_body() == "connected" else 1)
    code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    print(json.dumps({"value": "connected" if code == 0 else "failed"}))
    sys.exit()
sandbox = Sandbox(Policy(net=["127.0.0.1"]))
try:
    result = sandbox.call(test_body)
except SandboxError as exc:
    print(json.dumps({"refused": str(exc)}))
else:
    print(json.dumps({"value": result.value, "events": [e.to_dict() for e in result.events]}))
"""


def _run(outside: Outside, mode: str, os_fork: bool = False) -> dict:
    env = {**os.environ, "PYTEST_SANDLOCK_OS_FORK": "1" if os_fork else "0"}
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(SCRIPT), OUTSIDE, str(outside.tcp_port), mode],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_atfork_thread_is_confined(outside: Outside) -> None:
    out = _run(outside, "sandboxed")
    assert out["value"] == errno.EACCES
    denied = [(e["syscall"], e["host"], e["denied"]) for e in out["events"] if e["syscall"] == "connect"]
    assert denied == [("connect", OUTSIDE, True)]
    assert outside.drain() == []  # and nothing reached the outside listener


def test_atfork_thread_after_os_fork_is_refused(outside: Outside) -> None:
    out = _run(outside, "sandboxed", os_fork=True)
    assert "more than one thread" in out["refused"]


def test_atfork_thread_control(outside: Outside) -> None:
    out = _run(outside, "unconfined")
    assert out["value"] == "connected"
    assert outside.drain() == [("tcp", b"from the at-fork thread")]
