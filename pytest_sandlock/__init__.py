"""pytest-sandlock: run pytest tests under a kernel-enforced sandbox (Landlock + seccomp notification)."""

from pytest_sandlock.engine.errors import PolicyError, PolicyFnError
from pytest_sandlock.engine.policy import (
    LivePolicy,
    Policy,
    PolicyContext,
    SyscallCategory,
    SyscallEvent,
    Verdict,
)
from pytest_sandlock.engine.sandbox import Sandbox

__all__ = [
    "LivePolicy",
    "Policy",
    "PolicyContext",
    "PolicyError",
    "PolicyFnError",
    "Sandbox",
    "SyscallCategory",
    "SyscallEvent",
    "Verdict",
]
