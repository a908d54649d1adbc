"""Hooks pytest-sandlock offers to ``conftest.py`` files and other plugins."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

import pytest

if TYPE_CHECKING:
    from pytest_sandlock.engine.policy import Policy, PolicyContext, SyscallEvent


@pytest.hookspec
def pytest_sandlock_policy(item: pytest.Item, policy: Policy) -> Optional[Policy]:
    """Adjust the policy of a sandboxed test before its call phase is confined.

    Runs in the pytest process. Return a new :class:`~pytest_sandlock.Policy` (e.g. ``policy.replace(...)``)
    or ``None`` to keep it. Implementations are chained: each one receives the policy returned by the one
    called before it (pluggy's call order: later-registered and ``tryfirst`` implementations first).
    """


@pytest.hookspec(firstresult=True)
def pytest_sandlock_event(item: pytest.Item, event: SyscallEvent, ctx: PolicyContext) -> Any:
    """Decide on one supervised syscall of a sandboxed test; the first non-``None`` result wins.

    Runs in the pytest process while the test's child waits. Return a ``Verdict`` (or a sandlock-SDK value:
    ``False``/``0`` allow, ``True`` deny, a positive errno, ``"audit"``) or ``None`` for no opinion. A verdict
    can only tighten the static policy, never widen it; an invalid value or an exception denies the syscall.
    The marker's ``policy_fn`` is consulted first; the most restrictive answer wins.
    """
