"""The live-policy channel between a confined child and its supervisor.

The child asks, the supervisor answers: JSON lines over two pipes (``read``/``write`` are not
supervised syscalls). JSON, never pickle: the child is untrusted, and unpickling its bytes in the
pytest process would hand it code execution outside the sandbox.
"""

from __future__ import annotations

import errno
import ipaddress
import json
import os
from typing import TYPE_CHECKING, Any, Optional

from .errors import PolicyError, PolicyFnError, SandboxError
from .policy import LivePolicy, SyscallEvent

if TYPE_CHECKING:
    from .supervisor import Supervisor

MAX_REQUEST = 1 << 20

_OPS = {
    "grant_network",
    "restrict_network",
    "grant_max_memory",
    "restrict_max_memory",
    "grant_max_processes",
    "restrict_max_processes",
    "restrict_pid_network",
    "clear_pid_override",
    "deny_path",
    "allow_path",
}


def _live_to_json(live: LivePolicy) -> dict[str, Any]:
    ips = None if live.allowed_ips is None else sorted(str(n) for n in live.allowed_ips)
    return {"allowed_ips": ips, "max_memory": live.max_memory, "max_processes": live.max_processes}


def _live_from_json(data: dict[str, Any]) -> LivePolicy:
    ips = data.get("allowed_ips")
    nets = None if ips is None else frozenset(ipaddress.ip_network(x) for x in ips)
    return LivePolicy(
        allowed_ips=nets, max_memory=data.get("max_memory"), max_processes=data.get("max_processes")
    )


class ChannelServer:
    """Supervisor side: owns the request read end and the response write end."""

    def __init__(self, request_fd: int, response_fd: int) -> None:
        self.request_fd = request_fd
        self.response_fd = response_fd
        os.set_blocking(request_fd, False)
        self._inbuf = bytearray()
        self._supervisor: Optional[Supervisor] = None

    def bind(self, supervisor: Optional[Supervisor]) -> None:
        self._supervisor = supervisor

    def serve(self) -> bool:
        """Handle every complete request available; False once the child closed its end."""
        try:
            data = os.read(self.request_fd, 65536)
        except BlockingIOError:
            return True
        except OSError:
            return False
        if not data:
            return False
        self._inbuf += data
        if len(self._inbuf) > MAX_REQUEST:
            self._inbuf.clear()
            return False
        while b"\n" in self._inbuf:
            line, _, rest = bytes(self._inbuf).partition(b"\n")
            self._inbuf = bytearray(rest)
            self._respond(self._handle(line))
        return True

    def _handle(self, line: bytes) -> dict[str, Any]:
        sup = self._supervisor
        if sup is None:
            return {"error": ["SandboxError", "no supervisor"]}
        try:
            request = json.loads(line)
            op, args = request["op"], request.get("args", [])
            if not isinstance(args, list):
                raise PolicyError(f"bad arguments {args!r}")
            if op == "current":
                return {"ok": _live_to_json(sup.ctx.current())}
            if op == "ceiling":
                return {"ok": _live_to_json(sup.ctx.ceiling())}
            if op == "events":
                return {"ok": [e.to_dict() for e in sup.events]}
            if op in _OPS:
                getattr(sup.ctx, op)(*args)
                return {"ok": None}
            raise PolicyError(f"unknown live-policy operation {op!r}")
        except PolicyFnError as exc:
            return {"error": ["PolicyFnError", str(exc)]}
        except (PolicyError, ValueError, TypeError, KeyError) as exc:
            return {"error": ["PolicyError", f"{type(exc).__name__}: {exc}"]}
        except Exception as exc:  # the child's request must never break the supervisor loop
            return {"error": ["PolicyError", f"live-policy request failed: {type(exc).__name__}: {exc}"]}

    def _respond(self, reply: dict[str, Any]) -> None:
        payload = json.dumps(reply).encode() + b"\n"
        view = memoryview(payload)
        while view:
            try:
                written = os.write(self.response_fd, view)
            except OSError as exc:
                if exc.errno == errno.EPIPE:
                    return
                raise
            view = view[written:]

    def close(self) -> None:
        for fd in (self.request_fd, self.response_fd):
            try:
                os.close(fd)
            except OSError:
                pass


class LivePolicyClient:
    """Child side: the live policy of the sandbox this process runs in."""

    def __init__(self, request_fd: int, response_fd: int) -> None:
        self._req = request_fd
        self._resp = response_fd
        self._buf = bytearray()

    def _call(self, op: str, *args: Any) -> Any:
        line = json.dumps({"op": op, "args": list(args)}, default=str).encode() + b"\n"
        os.write(self._req, line)
        while b"\n" not in self._buf:
            chunk = os.read(self._resp, 1 << 16)
            if not chunk:
                raise SandboxError("the supervisor closed the live-policy channel")
            self._buf += chunk
        raw, _, rest = bytes(self._buf).partition(b"\n")
        self._buf = bytearray(rest)
        reply = json.loads(raw)
        if "error" in reply:
            kind, message = reply["error"]
            raise (PolicyFnError if kind == "PolicyFnError" else PolicyError)(message)
        return reply["ok"]

    def current(self) -> LivePolicy:
        return _live_from_json(self._call("current"))

    def ceiling(self) -> LivePolicy:
        return _live_from_json(self._call("ceiling"))

    def events(self) -> list[SyscallEvent]:
        return [SyscallEvent.from_dict(d) for d in self._call("events")]

    def denials(self) -> list[SyscallEvent]:
        return [e for e in self.events() if e.denied]

    def grant_network(self, ips: Any) -> None:
        self._call("grant_network", [str(i) for i in ips])

    def restrict_network(self, ips: Any) -> None:
        self._call("restrict_network", [str(i) for i in ips])

    def grant_max_memory(self, n: Any) -> None:
        self._call("grant_max_memory", n)

    def restrict_max_memory(self, n: Any) -> None:
        self._call("restrict_max_memory", n)

    def grant_max_processes(self, n: Any) -> None:
        self._call("grant_max_processes", n)

    def restrict_max_processes(self, n: Any) -> None:
        self._call("restrict_max_processes", n)

    def restrict_pid_network(self, pid: int, ips: Any) -> None:
        self._call("restrict_pid_network", pid, [str(i) for i in ips])

    def clear_pid_override(self, pid: int) -> None:
        self._call("clear_pid_override", pid)

    def deny_path(self, path: Any) -> None:
        self._call("deny_path", os.fspath(path))

    def allow_path(self, path: Any) -> None:
        self._call("allow_path", os.fspath(path))


_client: Optional[LivePolicyClient] = None
_client_fds: Optional[tuple[int, int]] = None  # inherited by the confined child; the client is built on use


def client() -> Optional[LivePolicyClient]:
    """The live policy of the sandbox this process runs in, or None outside any sandbox."""
    global _client, _client_fds
    if _client_fds is not None:
        _client, _client_fds = LivePolicyClient(*_client_fds), None
    return _client


def set_client_fds(fds: Optional[tuple[int, int]]) -> Optional[tuple[int, int]]:
    """Set the descriptors the next ``client()`` talks through; returns the previous ones.

    The launcher sets them in the parent just before the fork and restores them just after, so
    that the child inherits them without writing anything (every page written in a just-forked
    child is a copy-on-write fault, and most sandboxed tests never use the client)."""
    global _client_fds
    previous, _client_fds = _client_fds, fds
    return previous
