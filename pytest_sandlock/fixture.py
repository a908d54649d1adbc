"""The ``sandlock_policy`` fixture: the live policy of the test's own sandbox, used from the test body."""

from __future__ import annotations

from typing import Any, Iterable, Optional

import pytest

from pytest_sandlock.engine import channel
from pytest_sandlock.engine.policy import LivePolicy, SyscallEvent

FIXTURE_KEY = pytest.StashKey["LivePolicyHandle"]()


def _ips(ips: Any) -> Any:
    # Lists cross the process boundary; a generator would not. A bare string stays one value.
    return [ips] if isinstance(ips, str) else list(ips)


class LivePolicyHandle:
    """What ``sandlock_policy`` gives a test.

    Inside the sandboxed call phase every method is a synchronous request to the supervisor in the pytest
    process (so ``events`` includes what subprocesses did a moment ago). After the call phase (in fixture
    teardown) ``events``/``denials`` return what the call phase recorded; policy operations then raise
    ``RuntimeError``, as they do during setup, when no sandbox exists yet.
    """

    def __init__(self, nodeid: str, sandboxed: bool) -> None:
        self._nodeid = nodeid
        self._sandboxed = sandboxed
        self._final_events: Optional[list[SyscallEvent]] = None
        self.denials_read = False

    def __repr__(self) -> str:
        return f"<sandlock_policy of {self._nodeid}>"

    def _client(self) -> Any:
        client = channel.client()
        if client is None:
            if not self._sandboxed:
                raise RuntimeError(
                    f"sandlock_policy: {self._nodeid} is not running in a sandbox (--pdb/--trace given)"
                )
            raise RuntimeError(
                "sandlock_policy: the live policy exists only while the test body runs (call phase), "
                "not in fixture setup or teardown"
            )
        return client

    def _finished(self) -> Optional[list[SyscallEvent]]:
        if channel.client() is not None:
            return None
        if self._final_events is not None:
            return list(self._final_events)
        if not self._sandboxed:
            return []
        return None

    def _set_final_events(self, events: list[SyscallEvent]) -> None:
        self._final_events = list(events)

    @property
    def events(self) -> list[SyscallEvent]:
        """Every event of this test so far (subprocesses included)."""
        done = self._finished()
        return done if done is not None else list(self._client().events())

    @property
    def denials(self) -> list[SyscallEvent]:
        """The denied events so far. Reading this tells ``--sandlock-strict`` the denials are expected."""
        self.denials_read = True
        done = self._finished()
        if done is not None:
            return [e for e in done if e.denied]
        return list(self._client().denials())

    def current(self) -> LivePolicy:
        return self._client().current()

    def ceiling(self) -> LivePolicy:
        return self._client().ceiling()

    def grant_network(self, ips: Iterable[Any]) -> None:
        self._client().grant_network(_ips(ips))

    def restrict_network(self, ips: Iterable[Any]) -> None:
        self._client().restrict_network(_ips(ips))

    def grant_max_memory(self, n: Any) -> None:
        self._client().grant_max_memory(n)

    def restrict_max_memory(self, n: Any) -> None:
        self._client().restrict_max_memory(n)

    def grant_max_processes(self, n: Optional[int]) -> None:
        self._client().grant_max_processes(n)

    def restrict_max_processes(self, n: int) -> None:
        self._client().restrict_max_processes(n)

    def restrict_pid_network(self, pid: int, ips: Iterable[Any]) -> None:
        self._client().restrict_pid_network(pid, _ips(ips))

    def clear_pid_override(self, pid: int) -> None:
        self._client().clear_pid_override(pid)

    def deny_path(self, path: Any) -> None:
        self._client().deny_path(path)

    def allow_path(self, path: Any) -> None:
        self._client().allow_path(path)


@pytest.fixture
def sandlock_policy(request: pytest.FixtureRequest) -> LivePolicyHandle:
    """The live sandbox policy of this test; requesting it sandboxes the test (pytest-sandlock)."""
    from pytest_sandlock.forkrun import SPEC_KEY, UNCONFINED_KEY

    item = request.node
    if SPEC_KEY not in item.stash:
        pytest.fail(
            f"{item.nodeid} requests sandlock_policy but is marked sandbox(enabled=False)", pytrace=False
        )
    handle = LivePolicyHandle(item.nodeid, sandboxed=not item.stash.get(UNCONFINED_KEY, False))
    item.stash[FIXTURE_KEY] = handle
    return handle
