"""The ``sandbox`` marker: which tests are sandboxed, and with which policy."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Optional

import pytest

from pytest_sandlock.engine.errors import PolicyError
from pytest_sandlock.engine.policy import LOOPBACK_DEFAULT, Policy
from pytest_sandlock.options import Settings

MARKER = "sandbox"
FIXTURE = "sandlock_policy"

MARKER_LINE = (
    "sandbox(net=None, fs_read=None, fs_write=None, fs_deny=None, max_processes=None, max_memory=None, "
    "timeout=None, policy_fn=None, enabled=True): run this test's call phase in a forked child confined by "
    "Landlock and a seccomp supervisor (pytest-sandlock). net: rules '[tcp://|udp://]HOST[:PORTS]' ([] = no "
    "network; default: ini sandlock_net, loopback only); fs_read/fs_write/fs_deny: paths; max_memory: bytes "
    "or '256M'; timeout: seconds; policy_fn(event, ctx) -> verdict; enabled=False: never sandboxed."
)

POLICY_ARGS = ("net", "fs_read", "fs_write", "fs_deny", "max_processes", "max_memory", "timeout")
MARKER_ARGS = (*POLICY_ARGS, "policy_fn", "enabled")
_PATH_ARGS = ("fs_read", "fs_write", "fs_deny")


class MarkerError(Exception):
    """An invalid ``sandbox`` marker, ini value or hook result; the message names the test and the value."""


@dataclass(frozen=True)
class SandboxSpec:
    """How one test is sandboxed (None in the item's stash means: not sandboxed)."""

    policy: Policy
    policy_fn: Optional[Callable[..., Any]]
    marked: bool


def _merged_kwargs(item: pytest.Item) -> Optional[dict[str, Any]]:
    markers = list(item.iter_markers(MARKER))
    if not markers:
        return None
    merged: dict[str, Any] = {}
    for mark in reversed(markers):  # farthest first, so the closest marker wins per argument
        if mark.args:
            raise MarkerError(
                f"{item.nodeid}: @pytest.mark.sandbox takes keyword arguments only, got positional "
                f"{mark.args!r}"
            )
        unknown = sorted(set(mark.kwargs) - set(MARKER_ARGS))
        if unknown:
            raise MarkerError(
                f"{item.nodeid}: @pytest.mark.sandbox got unknown argument(s) {', '.join(unknown)}; "
                f"valid: {', '.join(MARKER_ARGS)}"
            )
        merged.update(mark.kwargs)
    return merged


def _absolute(paths: Any, base: str) -> Any:
    if paths is None or isinstance(paths, (str, bytes, os.PathLike)):
        return paths  # let Policy reject a bare string with its own message
    try:
        items = list(paths)
    except TypeError:
        return paths
    return [os.path.join(base, os.fspath(p)) if isinstance(p, (str, os.PathLike)) else p for p in items]


class SpecBuilder:
    """Builds (and caches) the SandboxSpec of each collected item."""

    def __init__(self, settings: Settings, rootpath: str) -> None:
        self.settings = settings
        self.rootpath = rootpath
        self._cache: dict[str, Policy] = {}

    def spec_for(self, item: pytest.Item) -> Optional[SandboxSpec]:
        kwargs = _merged_kwargs(item)
        marked = kwargs is not None
        if kwargs is not None:
            enabled = kwargs.pop("enabled", True)
            if not isinstance(enabled, bool):
                raise MarkerError(
                    f"{item.nodeid}: sandbox(enabled=...) must be True or False, got {enabled!r}"
                )
            if not enabled:
                return None
        elif not (self.settings.sandbox_everything or FIXTURE in getattr(item, "fixturenames", ())):
            return None
        kwargs = kwargs or {}
        policy_fn = kwargs.pop("policy_fn", None)
        if policy_fn is not None and not callable(policy_fn):
            raise MarkerError(
                f"{item.nodeid}: sandbox(policy_fn=...) must be a callable(event, ctx), got {policy_fn!r}"
            )
        return SandboxSpec(policy=self.policy_for(item, kwargs), policy_fn=policy_fn, marked=marked)

    def policy_for(self, item: pytest.Item, kwargs: dict[str, Any]) -> Policy:
        s = self.settings
        args: dict[str, Any] = {
            "net": s.net if s.net is not None else list(LOOPBACK_DEFAULT),
            "fs_read": s.fs_read,
            "fs_write": s.fs_write,
            "fs_deny": s.fs_deny,
        }
        for name, value in kwargs.items():
            args[name] = _absolute(value, self.rootpath) if name in _PATH_ARGS else value
        try:
            key = repr(sorted(args.items()))
        except Exception:  # an exotic value whose repr fails: just do not cache
            key = ""
        cached = self._cache.get(key) if key else None
        if cached is not None:
            return cached
        try:
            policy = Policy(**args)
        except (PolicyError, ValueError, TypeError) as exc:
            origin = "@pytest.mark.sandbox" if kwargs else "the sandlock_* ini options"
            raise MarkerError(f"{item.nodeid}: invalid sandbox policy from {origin}: {exc}") from None
        if key:
            self._cache[key] = policy
        return policy
