"""``--sandlock-strict``: which denials fail a test, and how they are shown."""

from __future__ import annotations

import re
from typing import Iterable

from pytest_sandlock.engine.policy import SyscallEvent

# Python writes bytecode caches next to the sources; the child turns that off, but a Python subprocess of
# the test may still try, and a denied cache write is noise, not a finding.
_BYTECODE = re.compile(r"/__pycache__/[^/]+\.pyc(\.\d+)?$")


def _is_bytecode_write(event: SyscallEvent) -> bool:
    return event.path is not None and _BYTECODE.search(event.path) is not None


def unexpected_denials(events: Iterable[SyscallEvent]) -> list[SyscallEvent]:
    """Denied events that fail a test in strict mode."""
    return [e for e in events if e.denied and not _is_bytecode_write(e)]


def failure_message(denials: list[SyscallEvent]) -> str:
    lines = [f"sandlock strict: the test was denied {len(denials)} operation(s):"]
    lines.extend(f"  {e.describe()}" for e in denials)
    lines.append("(read sandlock_policy.denials in the test to mark denials as expected)")
    return "\n".join(lines)


def format_denials(events: Iterable[SyscallEvent]) -> str:
    """Text appended to a crash message: the denied events, if any."""
    denied = [e for e in events if e.denied]
    if not denied:
        return ""
    return "\n" + "\n".join(["denied before the end:"] + [f"  {e.describe()}" for e in denied])
