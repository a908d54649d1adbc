"""The pytest process keeps its Landlock rulesets open to confine later tests, and the kernel lets
whoever holds a ruleset descriptor add rules to it: a test holding one could widen every later test's
ceiling. No sandboxed process may hold one, whichever rulesets are cached (several policies, an audit
sandbox that applies none)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

from pytest_sandlock.engine import landlock
from pytest_sandlock.engine.policy import Policy
from pytest_sandlock.engine.sandbox import Sandbox


def ruleset_fds_here() -> list[int]:
    found = []
    for name in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{name}") == "anon_inode:[landlock-ruleset]":
                found.append(int(name))
        except OSError:
            continue
    return found


def in_plain_fork(fn: Callable[[], list[Any]]) -> list[Any]:
    """``fn()`` in a forked child with no sandbox at all: what the controls compare with."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.write(w, json.dumps(fn()).encode())
        os._exit(0)
    os.close(w)
    seen = os.read(r, 4096)
    os.close(r)
    os.waitpid(pid, 0)
    return list(json.loads(seen))


def test_no_cached_ruleset_reaches_a_sandbox(tmp_path) -> None:
    strict = Sandbox(Policy(net=["127.0.0.1"]))
    other = Sandbox(Policy(net=["127.0.0.1"], fs_write=[str(tmp_path)]))
    audit = Sandbox(Policy(net=["127.0.0.1"]), audit=True)
    assert len(landlock.cached_fds()) >= 2
    for sandbox in (strict, other, audit):
        assert sandbox.call(ruleset_fds_here).value == []


def test_ruleset_descriptors_control() -> None:
    """Without the sandbox, a forked child does hold them: the assertion above can fail."""
    Sandbox(Policy(net=["127.0.0.1"]))
    cached = set(landlock.cached_fds())
    seen = in_plain_fork(ruleset_fds_here)
    assert cached and cached <= set(seen)


def children_files_here() -> list[str]:
    found = []
    for name in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            continue
        if target.endswith("/children"):
            found.append(target)
    return found


def test_no_kept_children_file_reaches_a_sandbox() -> None:
    """The process tree keeps /proc children files open between runs (this process's, each
    root's while it runs); none may reach a sandboxed process, from the first run on."""
    for _ in range(2):
        assert Sandbox(Policy(net=["127.0.0.1"])).call(children_files_here).value == []


def test_kept_children_file_control() -> None:
    """Without the sandbox, a forked child does hold the pytest process's children file."""
    from pytest_sandlock.engine import proctree

    kept = proctree.kept_fds()
    own = f"/proc/{os.getpid()}/task/{os.getpid()}/children"
    seen = in_plain_fork(children_files_here)
    assert kept and own in seen
