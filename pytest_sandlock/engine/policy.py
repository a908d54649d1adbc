"""The policy model: static ceilings (Policy), live policy (LivePolicy, PolicyContext), events and verdicts.

Modelled on sandlock's ``policy_fn`` module. The static :class:`Policy` is what Landlock and the seccomp
supervisor enforce as an upper bound; :class:`PolicyContext` is the mutable live layer a ``policy_fn`` or the
``sandlock_policy`` fixture may move *within* that bound. Every network decision is
``ceiling AND live AND per-pid override``, so no live operation can ever widen the static policy.

Pure standard library; imports nothing from pytest.
"""

from __future__ import annotations

import enum
import errno as errno_module
import functools
import ipaddress
import math
import os
import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Callable, ClassVar, Iterable, Mapping, Optional, Union

from .errors import PolicyError, PolicyFnError
from .netrules import (
    LOOPBACK_DEFAULT,
    IPAddress,
    IPNetwork,
    NetRule,
    UnixRule,
    normalize_ip,
    normalize_network,
    parse_net_rules,
    parse_unix_rules,
    tcp_ports_of,
)

__all__ = [
    "LOOPBACK_DEFAULT",
    "IPAddress",
    "IPNetwork",
    "LivePolicy",
    "NetRule",
    "Policy",
    "PolicyContext",
    "SyscallCategory",
    "SyscallEvent",
    "UnixRule",
    "Verdict",
    "coerce_verdict",
    "normalize_ip",
    "parse_net_rules",
    "parse_size",
    "tcp_ports_of",
]

PathArg = Union[str, "os.PathLike[str]"]


# =========================================================================================================
# Events
# =========================================================================================================


class SyscallCategory(enum.Enum):
    """High-level category of a syscall event."""

    FILE = "file"
    NETWORK = "network"
    PROCESS = "process"
    MEMORY = "memory"


@dataclass(frozen=True)
class SyscallEvent:
    """A syscall observed by the supervisor.

    ``path`` is informational only (read from child memory when notified, so racy); decisions on paths
    belong to Landlock. ``host``/``port`` are safe to decide on: the supervisor performs network syscalls
    on the child's behalf, so the kernel never re-reads them.
    """

    syscall: str
    category: SyscallCategory
    pid: int
    parent_pid: Optional[int] = None
    host: Optional[IPAddress] = None
    port: Optional[int] = None
    size: Optional[int] = None
    argv: Optional[tuple[str, ...]] = None
    denied: bool = False
    path: Optional[str] = None
    errno: Optional[int] = None
    protocol: Optional[str] = None
    reason: Optional[str] = None
    unix_path: Optional[str] = None

    def __post_init__(self) -> None:
        # Accept the convenient forms (argv list, host string) but store hashable, typed values.
        if self.argv is not None and not isinstance(self.argv, tuple):
            object.__setattr__(self, "argv", tuple(self.argv))
        if isinstance(self.host, str):
            object.__setattr__(self, "host", ipaddress.ip_address(self.host))
        if isinstance(self.category, str):
            object.__setattr__(self, "category", SyscallCategory(self.category))

    def argv_contains(self, s: str) -> bool:
        """True if any argv element contains ``s`` (only execve-like events have argv)."""
        return self.argv is not None and any(s in arg for arg in self.argv)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict of every field (category as its value, host as str, argv as list)."""
        return {
            "syscall": self.syscall,
            "category": self.category.value,
            "pid": self.pid,
            "parent_pid": self.parent_pid,
            "host": None if self.host is None else str(self.host),
            "port": self.port,
            "size": self.size,
            "argv": None if self.argv is None else list(self.argv),
            "denied": self.denied,
            "path": self.path,
            "errno": self.errno,
            "protocol": self.protocol,
            "reason": self.reason,
            "unix_path": self.unix_path,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SyscallEvent:
        """Inverse of :meth:`to_dict`; optional keys may be missing (e.g. from a JSON report)."""
        host = d.get("host")
        argv = d.get("argv")
        return cls(
            syscall=d["syscall"],
            category=SyscallCategory(d["category"]),
            pid=d["pid"],
            parent_pid=d.get("parent_pid"),
            host=None if host is None else ipaddress.ip_address(host),
            port=d.get("port"),
            size=d.get("size"),
            argv=None if argv is None else tuple(argv),
            denied=bool(d.get("denied", False)),
            path=d.get("path"),
            errno=d.get("errno"),
            protocol=d.get("protocol"),
            reason=d.get("reason"),
            unix_path=d.get("unix_path"),
        )

    def describe(self) -> str:
        """One line for humans.

        E.g. ``connect tcp 127.0.0.2:80 pid 123 denied (EACCES: not in net policy)``.
        """
        parts = [self.syscall]
        if self.protocol is not None:
            parts.append(self.protocol)
        target = self._target()
        if target:
            parts.append(target)
        parts.append(f"pid {self.pid}")
        if self.denied:
            parts.append(f"denied{self._denial_detail()}")
        return printable(" ".join(parts))

    def _target(self) -> str:
        if self.host is not None:
            host = f"[{self.host}]" if self.host.version == 6 else str(self.host)
            return host if self.port is None else f"{host}:{self.port}"
        if self.unix_path is not None:
            return self.unix_path
        if self.argv is not None:
            return repr(list(self.argv))
        if self.path is not None:
            return self.path
        if self.port is not None:
            return f"port {self.port}"
        if self.size is not None:
            return f"size {self.size}"
        return ""

    def _denial_detail(self) -> str:
        details = [errno_name(self.errno)] if self.errno is not None else []
        if self.reason:
            details.append(self.reason)
        return f" ({': '.join(details)})" if details else ""


def printable(text: str) -> str:
    """``text`` as valid UTF-8 for reports and terminals: a path or argument that was not UTF-8
    reaches Python with its bytes as lone surrogates (``os.fsdecode``), which neither UTF-8 nor
    pytest-xdist's channel can carry; they are shown as ``\\xNN`` escapes instead."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        pass
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate that no byte became: escaped as itself
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def errno_name(number: int) -> str:
    """Symbolic name of an errno (``EACCES``), or the number as text if unknown."""
    return errno_module.errorcode.get(number, str(number))


# =========================================================================================================
# Verdicts
# =========================================================================================================

_VERDICT_KINDS = ("allow", "audit", "deny")
_MAX_ERRNO = 4096  # the kernel's MAX_ERRNO; larger values are not errors but pointers


@dataclass(frozen=True)
class Verdict:
    """What to do with one syscall: allow, allow and flag (audit), or deny with an errno."""

    kind: str
    errno: int = 0

    ALLOW: ClassVar[Verdict]
    AUDIT: ClassVar[Verdict]
    DENY: ClassVar[Verdict]

    def __post_init__(self) -> None:
        if self.kind not in _VERDICT_KINDS:
            raise PolicyError(f"verdict kind must be one of {_VERDICT_KINDS}, got {self.kind!r}")
        if self.kind == "deny":
            _check_errno(self.errno)
        elif self.errno != 0:
            raise PolicyError(f"only a deny verdict carries an errno, got {self.kind!r} with {self.errno!r}")

    @classmethod
    def deny_with(cls, errno: int) -> Verdict:
        """Deny with a specific errno (0 < errno < 4096)."""
        return cls("deny", errno)

    @property
    def is_deny(self) -> bool:
        return self.kind == "deny"

    @property
    def is_allow(self) -> bool:
        """True for ALLOW and AUDIT: the syscall proceeds."""
        return self.kind != "deny"

    @property
    def is_audit(self) -> bool:
        return self.kind == "audit"

    def __repr__(self) -> str:
        if self.kind == "deny" and self.errno != errno_module.EPERM:
            return f"Verdict.deny_with({errno_name(self.errno)})"
        return f"Verdict.{self.kind.upper()}"


def _check_errno(value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < _MAX_ERRNO:
        raise PolicyError(f"errno must be an int with 0 < errno < {_MAX_ERRNO}, got {value!r}")


Verdict.ALLOW = Verdict("allow")
Verdict.AUDIT = Verdict("audit")
Verdict.DENY = Verdict("deny", errno_module.EPERM)


def coerce_verdict(value: object) -> tuple[Verdict, Optional[str]]:
    """Turn a policy_fn return value into a Verdict, failing closed.

    Returns ``(verdict, problem)``; ``problem`` is None for a valid value, otherwise a message to report on
    the test while the syscall is denied. Accepts Verdict and the sandlock-SDK forms: None/0/False allow,
    True deny, a positive int denies with that errno, "allow"/"audit"/"deny".
    """
    if isinstance(value, Verdict):
        return value, None
    if value is None:
        return Verdict.ALLOW, None
    # bool before int: True is an int (1 == EPERM by luck), but it must mean "deny" explicitly.
    if isinstance(value, bool):
        return (Verdict.DENY if value else Verdict.ALLOW), None
    if isinstance(value, int):
        if value == 0:
            return Verdict.ALLOW, None
        if 0 < value < _MAX_ERRNO:
            return Verdict.deny_with(int(value)), None
    elif isinstance(value, str):
        kind = value.strip().lower()
        if kind in _VERDICT_KINDS:
            return {"allow": Verdict.ALLOW, "audit": Verdict.AUDIT, "deny": Verdict.DENY}[kind], None
    return Verdict.DENY, f"policy_fn returned invalid verdict {_safe_repr(value)}"


def _safe_repr(value: object, limit: int = 200) -> str:
    # The value comes from user code: its __repr__ may raise or return something huge.
    try:
        text = repr(value)
    except Exception as exc:  # any failure of a user __repr__ must not escape
        text = f"<{type(value).__name__} object (repr raised {type(exc).__name__})>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


# =========================================================================================================
# Argument normalisation
# =========================================================================================================

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(?:([kmgt])(?:i?b)?|b)?\s*$", re.IGNORECASE)
_SIZE_FACTORS = {None: 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(value: object) -> Optional[int]:
    """Bytes from an int or a string like "256M", "1.5G", "512k", "1024", "2GiB" (base 1024)."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise PolicyError(f"invalid size {value!r}: expected bytes or a string like '256M'")
    if isinstance(value, int):
        if value < 0:
            raise PolicyError(f"invalid size {value!r}: must not be negative")
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value) or value < 0 or not value.is_integer():
            raise PolicyError(f"invalid size {value!r}: expected a whole, non-negative number of bytes")
        return int(value)
    if isinstance(value, str):
        match = _SIZE_RE.match(value)
        if match is None:
            raise PolicyError(f"invalid size {value!r}: expected bytes or a string like '256M', '1.5G'")
        number, unit = match.groups()
        # Fraction, not float: "1.1T" must not pick up binary rounding noise.
        return int(Fraction(number) * _SIZE_FACTORS[unit.lower() if unit else None])
    raise PolicyError(f"invalid size {value!r}: expected bytes or a string like '256M'")


def normalize_path(path: object, what: str = "path") -> str:
    """Absolute, symlink-resolved form of ``path`` (which need not exist)."""
    if not isinstance(path, (str, os.PathLike)):
        raise PolicyError(f"{what}: {path!r} is not a path (expected str or os.PathLike)")
    text = os.fspath(path)
    if not isinstance(text, str):
        raise PolicyError(f"{what}: {path!r} is not a text path")
    if not text:
        raise PolicyError(f"{what}: empty path")
    if "\0" in text:
        raise PolicyError(f"{what}: {path!r} contains a NUL byte")
    return os.path.realpath(os.path.abspath(text))


def _normalize_paths(paths: object, what: str) -> tuple[str, ...]:
    if isinstance(paths, (str, bytes, os.PathLike)):
        raise PolicyError(f"{what} must be a list of paths, not a single path: use {what}=[{paths!r}]")
    if not isinstance(paths, Iterable):
        raise PolicyError(f"{what} must be a list of paths, got {paths!r}")
    unique = {normalize_path(path, what): None for path in paths}
    return tuple(unique)


def _directories_named(paths: object) -> tuple[str, ...]:
    """The paths (already validated) written as directories, "build/": made when missing."""
    if paths is None or isinstance(paths, (str, bytes, os.PathLike)) or not isinstance(paths, Iterable):
        return ()
    return tuple(normalize_path(p) for p in paths if isinstance(p, str) and p.endswith(("/", os.sep)))


def _normalize_optional_paths(paths: object, what: str) -> Optional[tuple[str, ...]]:
    return None if paths is None else _normalize_paths(paths, what)


def _check_count(value: object, what: str, minimum: int) -> Optional[int]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise PolicyError(f"{what} must be an int >= {minimum} or None, got {value!r}")
    return int(value)


def _check_timeout(value: object) -> Optional[float]:
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value <= 0
    ):
        raise PolicyError(f"timeout must be a number of seconds > 0 or None, got {value!r}")
    return float(value)


def _net_source(net: object) -> Optional[tuple[str, ...]]:
    """The rule strings as a tuple, read once (net may be a generator)."""
    if net is None:
        return None
    if isinstance(net, (str, bytes)):
        # net="127.0.0.1" would otherwise be read as a list of one-character rules.
        raise PolicyError(f"net must be a list of rules, not a single string: use net=[{net!r}]")
    if not isinstance(net, Iterable):
        raise PolicyError(f"net must be a list of rule strings, got {net!r}")
    return tuple(net)


def is_path_within(path: str, root: str) -> bool:
    """True if normalised absolute ``path`` is ``root`` or below it, comparing whole components."""
    if path == root:
        return True
    prefix = root if root.endswith(os.sep) else root + os.sep
    return path.startswith(prefix)


# =========================================================================================================
# Policy (static ceilings)
# =========================================================================================================

_POLICY_FIELDS = ("net", "fs_read", "fs_write", "fs_deny", "max_processes", "max_memory", "timeout")


class Policy:
    """The static sandbox policy: immutable, hashable (Landlock rulesets are cached by it).

    Arguments take the marker's raw forms; attributes hold normalised values: ``net`` parsed rules (None
    unrestricted, () no network), paths absolute and symlink-resolved, ``max_memory`` in bytes.
    """

    __slots__ = (
        "net",
        "net_unix",
        "net_source",
        "fs_read",
        "fs_write",
        "fs_write_dirs",
        "fs_deny",
        "max_processes",
        "max_memory",
        "timeout",
        "_hash",
    )

    net: Optional[tuple[NetRule, ...]]
    net_unix: tuple[UnixRule, ...]
    net_source: Optional[tuple[str, ...]]
    _hash: int  # set on first hash (the policy is immutable)
    fs_read: Optional[tuple[str, ...]]
    fs_write: tuple[str, ...]
    fs_write_dirs: tuple[str, ...]  # those of fs_write given as "dir/": made if missing
    fs_deny: tuple[str, ...]
    max_processes: Optional[int]
    max_memory: Optional[int]
    timeout: Optional[float]

    def __init__(
        self,
        *,
        net: Optional[Iterable[str]] = None,
        fs_read: Optional[Iterable[PathArg]] = None,
        fs_write: Optional[Iterable[PathArg]] = (),
        fs_deny: Optional[Iterable[PathArg]] = (),
        max_processes: Optional[int] = None,
        max_memory: Union[int, str, None] = None,
        timeout: Optional[float] = None,
    ) -> None:
        self._set_net(net)
        self._set("fs_read", _normalize_optional_paths(fs_read, "fs_read"))
        if isinstance(fs_write, Iterable) and not isinstance(fs_write, (str, bytes, os.PathLike)):
            fs_write = list(fs_write)  # read twice below: it may be a generator
        self._set("fs_write", _normalize_optional_paths(fs_write, "fs_write") or ())
        self._set("fs_write_dirs", _directories_named(fs_write))
        self._set("fs_deny", _normalize_optional_paths(fs_deny, "fs_deny") or ())
        self._set("max_processes", _check_count(max_processes, "max_processes", 1))
        self._set("max_memory", parse_size(max_memory))
        self._set("timeout", _check_timeout(timeout))

    def _set(self, name: str, value: object) -> None:
        object.__setattr__(self, name, value)

    def _set_net(self, net: object) -> None:
        source = _net_source(net)
        self._set("net", parse_net_rules(source))
        self._set("net_unix", parse_unix_rules(source))
        self._set("net_source", source)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"Policy is immutable; use policy.replace({name}=...)")

    def __delattr__(self, name: str) -> None:
        raise AttributeError("Policy is immutable")

    def _key(self) -> tuple[object, ...]:
        return (*(getattr(self, name) for name in _POLICY_FIELDS), self.net_unix, self.fs_write_dirs)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Policy):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        # Immutable, and hashed on every sandboxed test (the Sandbox cache): computed once.
        try:
            return self._hash
        except AttributeError:
            value = hash(self._key())
            self._set("_hash", value)
            return value

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={value!r}" for name, value in self.to_dict().items())
        return f"Policy({shown})"

    def __reduce__(self) -> tuple[Any, ...]:
        # __slots__ + a raising __setattr__ defeat default pickling; rebuild from the (already normal) args.
        return (_rebuild_policy, (self._raw_arguments(),))

    def _raw_arguments(self) -> dict[str, Any]:
        return {
            "net": self.net_source,
            "fs_read": self.fs_read,
            "fs_write": tuple(p + "/" if p in self.fs_write_dirs else p for p in self.fs_write),
            "fs_deny": self.fs_deny,
            "max_processes": self.max_processes,
            "max_memory": self.max_memory,
            "timeout": self.timeout,
        }

    def replace(self, **changes: Any) -> Policy:
        """A new Policy with some arguments changed (same raw forms as the constructor)."""
        unknown = set(changes) - set(_POLICY_FIELDS)
        if unknown:
            raise TypeError(f"Policy.replace() got unexpected keyword argument(s): {sorted(unknown)}")
        new = Policy.__new__(Policy)
        # Unchanged fields are copied, not re-parsed: hostnames in net rules are not resolved again.
        for name in (*_POLICY_FIELDS, "net_unix", "net_source", "fs_write_dirs"):
            object.__setattr__(new, name, getattr(self, name))
        if "net" in changes:
            new._set_net(changes.pop("net"))
        if changes:
            fresh = Policy(**changes)  # validates and normalises the changed fields only
            for name in (*changes, *(("fs_write_dirs",) if "fs_write" in changes else ())):
                object.__setattr__(new, name, getattr(fresh, name))
        return new

    def allows_network(self, protocol: str, ip: Union[IPAddress, str], port: int) -> bool:
        """True if the static rules allow ``protocol`` to ``ip``:``port`` (mapped IPv6 seen as IPv4)."""
        if self.net is None:
            return True
        address = normalize_ip(ip)
        return any(rule.matches(protocol, address, port) for rule in self.net)

    def allows_unix_path(self, real: str) -> bool:
        """True if a ``unix:`` rule lets the test reach the socket at resolved path ``real``."""
        return any(rule.matches_path(real) for rule in self.net_unix)

    def allows_abstract(self, name: bytes) -> bool:
        """True if a ``unix:@`` rule lets the test reach the abstract name ``name``."""
        return any(rule.matches_abstract(name) for rule in self.net_unix)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary for display."""
        return {
            "net": None if self.net_source is None else list(self.net_source),
            "fs_read": None if self.fs_read is None else list(self.fs_read),
            "fs_write": list(self.fs_write),
            "fs_deny": list(self.fs_deny),
            "max_processes": self.max_processes,
            "max_memory": self.max_memory,
            "timeout": self.timeout,
        }


def _rebuild_policy(arguments: dict[str, Any]) -> Policy:
    return Policy(**arguments)


# =========================================================================================================
# Live policy
# =========================================================================================================


@dataclass(frozen=True)
class LivePolicy:
    """The runtime-adjustable part of a policy.

    ``allowed_ips``: None means "whatever the static net rules allow", frozenset() means nothing.
    ``max_memory`` (bytes) and ``max_processes``: None means unlimited.
    """

    allowed_ips: Optional[frozenset[IPNetwork]]
    max_memory: Optional[int]
    max_processes: Optional[int]


_ALLOWED_IPS = "allowed_ips"
_MAX_MEMORY = "max_memory"
_MAX_PROCESSES = "max_processes"
# Not LivePolicy fields, but reported through on_change too so the supervisor can drop caches.
PID_NETWORK = "pid_network"
DENIED_PATHS = "denied_paths"


def _parse_ip_set(ips: object, what: str) -> frozenset[IPNetwork]:
    """Networks from an iterable of addresses/CIDR strings or ipaddress objects."""
    if isinstance(ips, (str, bytes)):
        raise PolicyError(f"{what} takes a list of addresses, not a single string: use [{ips!r}]")
    if not isinstance(ips, Iterable):
        raise PolicyError(f"{what} takes a list of addresses, got {ips!r}")
    return frozenset(_parse_ip_item(item, what) for item in ips)


def _parse_ip_item(item: object, what: str) -> IPNetwork:
    if isinstance(item, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
        return normalize_network(ipaddress.ip_network(item))
    if isinstance(item, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
        return normalize_network(item)
    if isinstance(item, str):
        try:
            return normalize_network(ipaddress.ip_network(item.strip().strip("[]"), strict=False))
        except ValueError as exc:
            raise PolicyError(f"{what}: invalid address or network {item!r}: {exc}") from None
    raise PolicyError(f"{what}: {item!r} is not an IP address or network")


def _ip_in(ip: IPAddress, networks: Iterable[IPNetwork]) -> bool:
    return any(network.version == ip.version and ip in network for network in networks)


def _cap(value: Optional[int], ceiling: Optional[int]) -> Optional[int]:
    """``value`` limited to ``ceiling``; None means unlimited on either side."""
    if ceiling is None:
        return value
    if value is None:
        return ceiling
    return min(value, ceiling)


class PolicyContext:
    """Live policy of one sandbox, as seen by ``policy_fn`` and the ``sandlock_policy`` fixture.

    Grants move a field up to the static ceiling; restricts are permanent (a later grant of the same field
    raises PolicyFnError). Not thread-safe: the supervisor is single-threaded.
    """

    def __init__(self, policy: Policy, on_change: Optional[Callable[[str], None]] = None) -> None:
        self._policy = policy
        self._on_change = on_change
        self._ceiling = _ceiling_of(policy)
        # The live policy starts at the ceiling; allowed_ips None = exactly what the net rules allow.
        self._live = LivePolicy(
            allowed_ips=None, max_memory=policy.max_memory, max_processes=policy.max_processes
        )
        self._restricted: set[str] = set()
        self._pid_overrides: dict[int, frozenset[IPNetwork]] = {}
        self._denied_paths: set[str] = set()
        # Process creation is supervised only when the static policy sets max_processes (see
        # seccomp_filter.PROCESS_CREATION); a live limit without it could not be enforced.
        self.process_limit_supervised = True

    def set_on_change(self, on_change: Optional[Callable[[str], None]]) -> None:
        """Replace the change callback (None detaches it, e.g. when the sandbox run is over)."""
        self._on_change = on_change

    @property
    def policy(self) -> Policy:
        """The static policy this context is bounded by."""
        return self._policy

    def current(self) -> LivePolicy:
        """Snapshot of the live policy."""
        return self._live

    def ceiling(self) -> LivePolicy:
        """The static upper bound, as a LivePolicy."""
        return self._ceiling

    def restricted_fields(self) -> frozenset[str]:
        """Names of LivePolicy fields that were permanently restricted."""
        return frozenset(self._restricted)

    # ---- grant (expand within the ceiling) ----

    def grant_network(self, ips: Iterable[Union[str, IPAddress, IPNetwork]]) -> None:
        """Allow more destinations, within the ceiling; those outside it are ignored."""
        self._check_not_restricted(_ALLOWED_IPS)
        networks = _parse_ip_set(ips, "grant_network")
        live_ips = self._live.allowed_ips
        if live_ips is None:
            return  # the live policy already allows the whole ceiling
        granted = {network for network in networks if self._within_net_ceiling(network)}
        self._update(_ALLOWED_IPS, allowed_ips=live_ips | granted)

    def grant_max_memory(self, n: Union[int, str, None]) -> None:
        """Raise the memory limit, capped at the ceiling. None = as much as the ceiling allows."""
        self._check_not_restricted(_MAX_MEMORY)
        self._update(_MAX_MEMORY, max_memory=_cap(parse_size(n), self._ceiling.max_memory))

    def grant_max_processes(self, n: Optional[int]) -> None:
        """Raise the process limit, capped at the ceiling. None = as much as the ceiling allows."""
        self._check_process_limit_supervised()
        self._check_not_restricted(_MAX_PROCESSES)
        count = _check_count(n, "max_processes", 0)
        self._update(_MAX_PROCESSES, max_processes=_cap(count, self._ceiling.max_processes))

    # ---- restrict (permanent) ----

    def restrict_network(self, ips: Iterable[Union[str, IPAddress, IPNetwork]]) -> None:
        """Permanently allow only ``ips`` (still within the ceiling); ``[]`` means no network at all."""
        networks = _parse_ip_set(ips, "restrict_network")
        self._restricted.add(_ALLOWED_IPS)
        self._update(_ALLOWED_IPS, allowed_ips=networks)

    def restrict_max_memory(self, n: Union[int, str]) -> None:
        """Permanently set the memory limit (never above the ceiling)."""
        size = parse_size(n)
        self._restricted.add(_MAX_MEMORY)
        self._update(_MAX_MEMORY, max_memory=_cap(size, self._ceiling.max_memory))

    def restrict_max_processes(self, n: int) -> None:
        """Permanently set the process limit (never above the ceiling)."""
        self._check_process_limit_supervised()
        count = _check_count(n, "max_processes", 0)
        self._restricted.add(_MAX_PROCESSES)
        self._update(_MAX_PROCESSES, max_processes=_cap(count, self._ceiling.max_processes))

    # ---- per-pid overrides ----

    def restrict_pid_network(self, pid: int, ips: Iterable[Union[str, IPAddress, IPNetwork]]) -> None:
        """Limit ``pid`` to ``ips`` on top of the global live policy ([] = no network for it)."""
        _check_count(pid, "pid", 0)
        self._pid_overrides[pid] = _parse_ip_set(ips, "restrict_pid_network")
        self._notify(PID_NETWORK)

    def clear_pid_override(self, pid: int) -> None:
        """Drop ``pid``'s override; it falls back to the global live policy."""
        if self._pid_overrides.pop(pid, None) is not None:
            self._notify(PID_NETWORK)

    def pid_override(self, pid: int) -> Optional[frozenset[IPNetwork]]:
        return self._pid_overrides.get(pid)

    # ---- paths ----

    def deny_path(self, path: PathArg) -> None:
        """Deny ``path`` and everything below it from now on."""
        normal = normalize_path(path, "deny_path")
        if normal not in self._denied_paths:
            self._denied_paths.add(normal)
            self._notify(DENIED_PATHS)

    def allow_path(self, path: PathArg) -> None:
        """Undo a :meth:`deny_path`; a static ``fs_deny`` can never be undone."""
        normal = normalize_path(path, "allow_path")
        if normal in self._denied_paths:
            self._denied_paths.discard(normal)
            self._notify(DENIED_PATHS)

    def has_path_denials(self) -> bool:
        """True if any path is denied, statically (fs_deny) or live: the supervisor's fast check."""
        return bool(self._policy.fs_deny or self._denied_paths)

    def denied_paths(self) -> frozenset[str]:
        """Paths denied dynamically with :meth:`deny_path` (static fs_deny not included)."""
        return frozenset(self._denied_paths)

    # ---- decisions for the supervisor ----

    def network_allowed(
        self, pid: int, protocol: str, ip: Union[IPAddress, str], port: int
    ) -> tuple[bool, str]:
        """Decide an IP network syscall: ceiling AND live AND per-pid override.

        Returns ``(True, "")`` or ``(False, reason)``.
        """
        address = normalize_ip(ip)
        if not self._policy.allows_network(protocol, address, port):
            return False, "not in net policy"
        live_ips = self._live.allowed_ips
        if live_ips is not None and not _ip_in(address, live_ips):
            return False, "restricted by live policy"
        override = self._pid_overrides.get(pid)
        if override is not None and not _ip_in(address, override):
            return False, f"restricted for pid {pid}"
        return True, ""

    def path_denied(self, path: PathArg) -> bool:
        """True if ``path`` is, or is below, a static fs_deny or a dynamically denied path."""
        normal = normalize_path(path, "path")
        roots = (*self._policy.fs_deny, *self._denied_paths)
        return any(is_path_within(normal, root) for root in roots)

    # ---- internal ----

    def _within_net_ceiling(self, network: IPNetwork) -> bool:
        rules = self._policy.net
        return rules is None or any(rule.covers_network(network) for rule in rules)

    def _check_process_limit_supervised(self) -> None:
        if not self.process_limit_supervised:
            raise PolicyFnError(
                "max_processes can only be changed live when the sandbox has a static max_processes "
                "(process creation is not supervised otherwise)"
            )

    def _check_not_restricted(self, field: str) -> None:
        if field in self._restricted:
            raise PolicyFnError(f"cannot grant restricted field: {field}")

    def _update(self, field: str, **values: Any) -> None:
        old = self._live
        new = LivePolicy(
            allowed_ips=values.get(_ALLOWED_IPS, old.allowed_ips),
            max_memory=values.get(_MAX_MEMORY, old.max_memory),
            max_processes=values.get(_MAX_PROCESSES, old.max_processes),
        )
        self._live = new
        if new != old:
            self._notify(field)

    def _notify(self, field: str) -> None:
        if self._on_change is not None:
            self._on_change(field)


@functools.lru_cache(maxsize=128)
def _ceiling_of(policy: Policy) -> LivePolicy:
    """The static policy as a LivePolicy; allowed_ips None when any address may be reached."""
    rules = policy.net
    if rules is None or any(rule.network is None for rule in rules):
        allowed: Optional[frozenset[IPNetwork]] = None
    else:
        allowed = frozenset(rule.network for rule in rules if rule.network is not None)
    return LivePolicy(allowed_ips=allowed, max_memory=policy.max_memory, max_processes=policy.max_processes)
