"""Exceptions raised by the sandbox engine."""

from __future__ import annotations


class SandboxError(Exception):
    """Base class of every error the engine raises on purpose."""


class PolicyError(SandboxError, ValueError):
    """A policy argument is invalid; the message names the offending value."""


class PolicyFnError(SandboxError):
    """A live-policy operation is not allowed (e.g. a grant after a restrict of that field)."""


class KernelFeatureError(SandboxError):
    """The kernel lacks a feature the sandbox needs."""


class SandboxCrash(SandboxError):
    """The confined child ended without delivering a result (signal, timeout, exit)."""

    def __init__(self, reason: str, events: list | None = None, returncode: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.events = events or []
        self.returncode = returncode


class ChildException(SandboxError):
    """The callable run by ``Sandbox.call`` raised; carries the child's traceback text."""

    def __init__(self, exc_type: str, message: str, traceback_text: str, events: list | None = None) -> None:
        super().__init__(f"{exc_type}: {message}\n--- child traceback ---\n{traceback_text}")
        self.exc_type = exc_type
        self.message = message
        self.traceback_text = traceback_text
        self.events = events or []


class TreeUnreadable(SandboxError):
    """/proc could not be read for a process of a sandbox's tree (a reason other than the process
    being gone: EMFILE, ENOMEM, EACCES...), so nobody can say which processes are still running.

    ``found`` holds the processes that were listed before the failure: a caller that must kill the
    tree kills those, then says the tree could not be checked (it never takes "unreadable" for
    "empty")."""

    def __init__(self, message: str, found: list[int] | None = None) -> None:
        super().__init__(message)
        self.found = list(found or [])
