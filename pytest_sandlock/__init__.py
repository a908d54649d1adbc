"""pytest-sandlock: run pytest tests under a kernel-enforced sandbox (Landlock + seccomp notification)."""

from typing import TYPE_CHECKING, Any

from pytest_sandlock.engine.errors import PolicyError, PolicyFnError
from pytest_sandlock.engine.policy import (
    LivePolicy,
    Policy,
    PolicyContext,
    SyscallCategory,
    SyscallEvent,
    Verdict,
)

if TYPE_CHECKING:
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


def __getattr__(name: str) -> Any:
    # The engine's launcher and supervisor load on first use: a run whose tests are not
    # sandboxed (the plugin merely installed) does not import them.
    if name == "Sandbox":
        from pytest_sandlock.engine.sandbox import Sandbox

        return Sandbox
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
