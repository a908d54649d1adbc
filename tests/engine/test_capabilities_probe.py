"""The kernel probe: what it reports when something the supervisor needs is refused."""

from __future__ import annotations

import pytest

from pytest_sandlock.engine import capabilities


def test_this_machine_is_usable() -> None:
    caps = capabilities.probe()
    assert caps.usable, caps.problems


def test_unreadable_child_memory_is_a_clear_problem(monkeypatch: pytest.MonkeyPatch) -> None:
    """Yama's ptrace_scope 2 or 3 (not on this kernel) refuses process_vm_readv: simulated here.
    The probe must say so in words, instead of every supervised call failing later."""

    def refused(pid: int, spans: list[tuple[int, int]]) -> list[bytes]:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(capabilities, "_cached", None)  # restored after the test
    monkeypatch.setattr(capabilities, "read_memory_spans", refused)
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
