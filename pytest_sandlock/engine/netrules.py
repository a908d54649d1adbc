"""The network-rule grammar of the ``net`` policy argument.

A rule is ``[tcp://|udp://]HOST[:PORTS]``:

* HOST is an IPv4 address, an IPv6 address (in brackets when ports follow, bare otherwise), a CIDR network,
  a hostname (resolved once, when the policy is built, to every address it has) or ``*`` (any address).
* PORTS is ``N``, ``N-M``, a comma-separated list of those, or ``*``; omitted means every port.
* Without a scheme the rule covers both TCP and UDP.

A rule ``unix:PATH`` or ``unix:@NAME`` lets the test reach a unix socket the sandbox would otherwise keep it
from: one outside the writable paths (a database server's socket under ``/run``), or an abstract name bound
outside the sandbox (by a fixture in the pytest process). ``PATH`` is absolute; ending in ``/`` it covers
every socket below that directory. ``@NAME`` is one abstract name (a trailing ``*`` makes it a prefix).
Unix sockets in the writable paths, and abstract names bound inside the sandbox, need no rule.

Parsing is strict: every malformed rule raises :class:`PolicyError` quoting the rule, because a typo in a
sandbox policy silently widening (or narrowing) access is worse than a failed test run.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
from dataclasses import dataclass
from typing import Iterable, Optional, Union

from .errors import PolicyError

__all__ = [
    "UNIX_SCHEME",
    "UnixRule",
    "IPAddress",
    "IPNetwork",
    "LOOPBACK_DEFAULT",
    "NetRule",
    "PortRanges",
    "normalize_ip",
    "normalize_network",
    "parse_net_rules",
    "parse_unix_rules",
    "tcp_ports_of",
]

IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
IPNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]
PortRanges = tuple[tuple[int, int], ...]

#: The default ``sandlock_net``: loopback only.
LOOPBACK_DEFAULT: tuple[str, ...] = ("127.0.0.0/8", "::1")

_ALL_PROTOCOLS: frozenset[str] = frozenset({"tcp", "udp"})
_SCHEMES: dict[str, frozenset[str]] = {"tcp": frozenset({"tcp"}), "udp": frozenset({"udp"})}
_MAX_PORT = 65535
# The IPv4-mapped IPv6 block (::ffff:0:0/96); addresses in it are IPv4 addresses in disguise.
_MAPPED_PREFIX = ipaddress.IPv6Network("::ffff:0:0/96")
_HOSTNAME_RE = re.compile(
    r"^(?=.{1,253}\.?$)[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
    r"(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*\.?$"
)
_DOTTED_NUMBERS_RE = re.compile(r"^[0-9.]+$")


# ---------------------------------------------------------------------------------------------------------
# Address normalisation
# ---------------------------------------------------------------------------------------------------------


def normalize_ip(ip: Union[IPAddress, str]) -> IPAddress:
    """Return ``ip`` as an ipaddress object, with IPv4-mapped IPv6 addresses turned into IPv4.

    A dual-stack socket connecting to ``::ffff:127.0.0.2`` reaches 127.0.0.2, so rules must see it as that
    address; otherwise an IPv4 deny could be bypassed through an IPv6 socket.
    """
    if isinstance(ip, str):
        ip = ipaddress.ip_address(ip.strip("[]"))
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def normalize_network(network: IPNetwork) -> IPNetwork:
    """Return ``network`` with a network inside ``::ffff:0:0/96`` rewritten as the IPv4 network it maps."""
    if (
        isinstance(network, ipaddress.IPv6Network)
        and network.prefixlen >= _MAPPED_PREFIX.prefixlen
        and network.subnet_of(_MAPPED_PREFIX)
    ):
        mapped = network.network_address.ipv4_mapped
        assert mapped is not None  # guaranteed by subnet_of above
        return ipaddress.IPv4Network((mapped, network.prefixlen - _MAPPED_PREFIX.prefixlen))
    return network


def _network_contains(network: IPNetwork, ip: IPAddress) -> bool:
    # ``in`` between different IP versions is simply False, but being explicit keeps mypy and readers happy.
    return network.version == ip.version and ip in network


def _network_covers(outer: IPNetwork, inner: IPNetwork) -> bool:
    return outer.version == inner.version and inner.subnet_of(outer)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------------------
# NetRule
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NetRule:
    """One parsed network rule. A hostname rule becomes one NetRule per resolved address.

    ``network`` None means any address (v4 and v6); ``ports`` None means any port. ``ports`` holds sorted,
    merged inclusive ranges.
    """

    protocols: frozenset[str]
    network: Optional[IPNetwork]
    ports: Optional[PortRanges]
    source: str

    def host_matches(self, ip: Union[IPAddress, str]) -> bool:
        """True if the rule's host part covers ``ip`` (mapped IPv6 addresses compared as IPv4)."""
        if self.network is None:
            return True
        return _network_contains(self.network, normalize_ip(ip))

    def covers_network(self, network: IPNetwork) -> bool:
        """True if every address of ``network`` is covered by this rule's host part."""
        if self.network is None:
            return True
        return _network_covers(self.network, normalize_network(network))

    def port_matches(self, port: int) -> bool:
        if self.ports is None:
            return True
        return any(low <= port <= high for low, high in self.ports)

    def matches(self, protocol: str, ip: Union[IPAddress, str], port: int) -> bool:
        """True if a ``protocol`` ("tcp"/"udp") packet to ``ip``:``port`` is allowed by this rule."""
        return protocol.lower() in self.protocols and self.port_matches(port) and self.host_matches(ip)

    def __str__(self) -> str:
        return self.source


UNIX_SCHEME = "unix:"


@dataclass(frozen=True)
class UnixRule:
    """One ``unix:`` rule: a socket path (or every socket below a directory), or an abstract name
    (or every abstract name with a prefix). Paths are absolute and symlink-resolved, as the supervisor
    compares them with the resolved path of each connect."""

    path: Optional[str]
    below: bool  # path: every socket below the directory; name: every name starting with it
    abstract: Optional[bytes]
    source: str

    def matches_path(self, real: str) -> bool:
        if self.path is None:
            return False
        if self.below:
            return real.startswith(self.path.rstrip("/") + "/")
        return real == self.path

    def matches_abstract(self, name: bytes) -> bool:
        if self.abstract is None:
            return False
        return name.startswith(self.abstract) if self.below else name == self.abstract

    def __str__(self) -> str:
        return self.source


# ---------------------------------------------------------------------------------------------------------
# Parsing
# ---------------------------------------------------------------------------------------------------------


def _is_unix_rule(rule: object) -> bool:
    return isinstance(rule, str) and rule.strip().startswith(UNIX_SCHEME)


def parse_unix_rules(rules: Optional[Iterable[str]]) -> tuple[UnixRule, ...]:
    """The ``unix:`` rules of the ``net`` argument (the others are :func:`parse_net_rules`'s)."""
    if rules is None:
        return ()
    return tuple(parse_unix_rule(rule) for rule in rules if _is_unix_rule(rule))


def parse_unix_rule(rule: str) -> UnixRule:
    text = rule.strip()[len(UNIX_SCHEME) :]
    if text.startswith("@"):
        name = text[1:]
        below = name.endswith("*")
        name = name[:-1] if below else name
        if not name or "*" in name or "\0" in name:
            raise PolicyError(
                f"net rule {rule!r}: an abstract name is unix:@NAME, or unix:@PREFIX* (not empty, one "
                "trailing * at most)"
            )
        return UnixRule(None, below, name.encode("utf-8", "surrogateescape"), rule)
    if not text.startswith("/") or "\0" in text:
        raise PolicyError(f"net rule {rule!r}: a unix socket rule is unix:/ABSOLUTE/PATH or unix:@NAME")
    below = text.endswith("/")
    real = os.path.realpath(text)
    return UnixRule(real, below or real == "/", None, rule)


def parse_net_rules(rules: Optional[Iterable[str]]) -> Optional[tuple[NetRule, ...]]:
    """Parse the ``net`` argument: None -> None (unrestricted), [] -> () (no network at all)."""
    if rules is None:
        return None
    if isinstance(rules, (str, bytes)):
        # net="127.0.0.1" would otherwise iterate over characters; fail with a hint instead.
        raise PolicyError(f"net must be a list of rules, not a single string: use net=[{rules!r}]")
    try:
        items = list(rules)
    except TypeError:
        raise PolicyError(f"net must be a list of rule strings, got {rules!r}") from None
    parsed: list[NetRule] = []
    for rule in items:
        if not _is_unix_rule(rule):  # unix: rules are parse_unix_rules'
            parsed.extend(parse_net_rule(rule))
    return tuple(parsed)


def parse_net_rule(rule: object) -> tuple[NetRule, ...]:
    """Parse one rule string; a hostname expands to several rules, one per address."""
    if not isinstance(rule, str):
        raise PolicyError(f"net rule {rule!r} is not a string")
    text = rule.strip()
    if not text:
        raise PolicyError(f"net rule {rule!r} is empty")
    protocols, rest = _split_scheme(rule, text)
    host, port_text = _split_host_port(rule, rest)
    ports = None if port_text is None else _parse_ports(rule, port_text)
    return tuple(NetRule(protocols, network, ports, rule) for network in _parse_host(rule, host))


def _split_scheme(rule: str, text: str) -> tuple[frozenset[str], str]:
    if "://" not in text:
        return _ALL_PROTOCOLS, text
    scheme, rest = text.split("://", 1)
    protocols = _SCHEMES.get(scheme.lower())
    if protocols is None:
        raise PolicyError(f"net rule {rule!r}: unknown scheme {scheme + '://'!r} (use tcp:// or udp://)")
    if not rest:
        raise PolicyError(f"net rule {rule!r}: missing host after {scheme + '://'!r}")
    return protocols, rest


def _split_host_port(rule: str, text: str) -> tuple[str, Optional[str]]:
    """Split ``text`` into host and port text (None when no ports are given)."""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise PolicyError(f"net rule {rule!r}: missing ']' after the IPv6 address")
        host, after = text[1:end], text[end + 1 :]
        if not host:
            raise PolicyError(f"net rule {rule!r}: empty address in brackets")
        if ":" not in host:
            raise PolicyError(f"net rule {rule!r}: brackets are only for IPv6 addresses, got {host!r}")
        if not after:
            return host, None
        if not after.startswith(":"):
            raise PolicyError(f"net rule {rule!r}: expected ':PORTS' after ']', got {after!r}")
        return host, after[1:]
    colons = text.count(":")
    if colons >= 2:
        # A bare IPv6 address: its colons are not a port separator. Ports need brackets.
        return text, None
    if colons == 1:
        host, ports = text.split(":", 1)
        if not host:
            raise PolicyError(f"net rule {rule!r}: missing host before ':' (use '*:{ports}' for any host)")
        return host, ports
    return text, None


def _parse_host(rule: str, host: str) -> tuple[Optional[IPNetwork], ...]:
    """Return the networks a host part stands for; (None,) means any address."""
    if host == "*":
        return (None,)
    if "/" in host:
        try:
            return (normalize_network(ipaddress.ip_network(host, strict=False)),)
        except ValueError as exc:
            raise PolicyError(f"net rule {rule!r}: invalid network {host!r}: {exc}") from None
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        return (normalize_network(ipaddress.ip_network(address)),)
    if ":" in host or _DOTTED_NUMBERS_RE.match(host):
        raise PolicyError(f"net rule {rule!r}: invalid IP address {host!r}")
    return tuple(ipaddress.ip_network(address) for address in _resolve_hostname(rule, host))


def _resolve_hostname(rule: str, host: str) -> tuple[IPAddress, ...]:
    """Resolve ``host`` to all of its addresses, in resolver order without duplicates."""
    if not _HOSTNAME_RE.match(host):
        raise PolicyError(f"net rule {rule!r}: {host!r} is not a valid host, address or network")
    try:
        infos = socket.getaddrinfo(host, None)
    except (OSError, UnicodeError) as exc:
        raise PolicyError(f"net rule {rule!r}: cannot resolve host {host!r}: {exc}") from None
    addresses: dict[IPAddress, None] = {}
    for family, _type, _proto, _canon, sockaddr in infos:
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        # Link-local IPv6 results carry a "%scope" suffix that ipaddress rejects on Python < 3.9.
        text = str(sockaddr[0]).split("%", 1)[0]
        addresses[normalize_ip(ipaddress.ip_address(text))] = None
    if not addresses:
        raise PolicyError(f"net rule {rule!r}: host {host!r} has no IP address")
    return tuple(addresses)


def _parse_ports(rule: str, text: str) -> Optional[PortRanges]:
    """Parse PORTS into sorted merged ranges; ``*`` gives None (any port)."""
    if text.strip() == "*":
        return None
    if not text.strip():
        raise PolicyError(f"net rule {rule!r}: missing ports after ':' (use '*' for any port)")
    ranges = [_parse_port_item(rule, item.strip()) for item in text.split(",")]
    return _merge_ranges(ranges)


def _parse_port_item(rule: str, item: str) -> tuple[int, int]:
    if item == "*":
        raise PolicyError(f"net rule {rule!r}: '*' cannot be combined with other ports")
    if "-" in item:
        low_text, high_text = item.split("-", 1)
        low, high = _parse_port(rule, low_text.strip()), _parse_port(rule, high_text.strip())
        if low > high:
            raise PolicyError(f"net rule {rule!r}: port range {item!r} is reversed")
        return low, high
    port = _parse_port(rule, item)
    return port, port


def _parse_port(rule: str, text: str) -> int:
    # isdecimal() and not int(): int() would accept "+80", " 80" and "8_0".
    if not text.isascii() or not text.isdecimal():
        raise PolicyError(f"net rule {rule!r}: invalid port {text!r}")
    port = int(text)
    if port > _MAX_PORT:
        raise PolicyError(f"net rule {rule!r}: port {text} is out of range 0-{_MAX_PORT}")
    return port


def _merge_ranges(ranges: Iterable[tuple[int, int]]) -> PortRanges:
    """Sort and merge overlapping or adjacent ranges, so equal port sets compare equal."""
    merged: list[tuple[int, int]] = []
    for low, high in sorted(ranges):
        if merged and low <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], high))
        else:
            merged.append((low, high))
    return tuple(merged)


# ---------------------------------------------------------------------------------------------------------
# Queries over a rule set
# ---------------------------------------------------------------------------------------------------------


def tcp_ports_of(rules: Optional[Iterable[NetRule]]) -> Optional[frozenset[int]]:
    """The TCP ports the rules allow to any host, or None if some TCP rule allows every port.

    Used for Landlock's port-based second layer, which knows ports but not addresses; None (unrestricted
    rules) also yields None.
    """
    if rules is None:
        return None
    ports: set[int] = set()
    for rule in rules:
        if "tcp" not in rule.protocols:
            continue
        if rule.ports is None:
            return None
        for low, high in rule.ports:
            ports.update(range(low, high + 1))
    return frozenset(ports)
