"""Network syscalls performed by the supervisor on a duplicate of the child's socket.

The duplicate (``pidfd_getfd``) shares the child's open file description: connecting, binding or
sending on it acts on the child's socket, with the address bytes the supervisor checked.
"""

from __future__ import annotations

import errno
import fcntl
import ipaddress
import os
import socket
import struct
from typing import Any, Optional

from .childmem import MsgHdr, SockAddr
from .policy import IPAddress, PolicyContext
from .syscalls import bind_raw, connect_raw, getsockopt_int, pidfd_getfd, sendto_raw

SO_PROTOCOL = 38
SO_DOMAIN = 39
_CMSG_HDR = struct.Struct("=QiI")
SCM_RIGHTS = 1


def protocol_of(sock: int, family: int) -> str:
    """'tcp', 'udp', 'unix' or 'other': what a net rule's scheme is matched against."""
    if family in (socket.AF_INET, socket.AF_INET6):
        # One getsockopt: an IP address on a non-IP socket fails in the kernel anyway.
        try:
            proto = getsockopt_int(sock, socket.SOL_SOCKET, SO_PROTOCOL)
        except OSError:
            return "other"
        return "tcp" if proto == socket.IPPROTO_TCP else "udp" if proto == socket.IPPROTO_UDP else "other"
    try:
        domain = getsockopt_int(sock, socket.SOL_SOCKET, SO_DOMAIN)
    except OSError:
        return "other"
    if domain == socket.AF_UNIX:
        return "unix"
    if domain not in (socket.AF_INET, socket.AF_INET6):
        return "other"
    proto = getsockopt_int(sock, socket.SOL_SOCKET, SO_PROTOCOL)
    if proto == socket.IPPROTO_TCP:
        return "tcp"
    if proto == socket.IPPROTO_UDP:
        return "udp"
    return "other"


def is_blocking(sock: int) -> bool:
    return not fcntl.fcntl(sock, fcntl.F_GETFL) & os.O_NONBLOCK


def socket_error(sock: int) -> int:
    return getsockopt_int(sock, socket.SOL_SOCKET, socket.SO_ERROR)


def _unix_sockaddr(path: str) -> bytes:
    return struct.pack("=H", socket.AF_UNIX) + os.fsencode(path) + b"\0"


def _open_checked(path: str, flags: int) -> int:
    """``open(path, O_PATH | flags)``, refused with EACCES unless the inode opened is at ``path``.

    ``path`` is the resolved path the supervisor checked; if a racing process swapped one of its
    directories for a symlink in between, the descriptor's own path differs and nothing is done.
    """
    fd = os.open(path, os.O_PATH | os.O_CLOEXEC | flags)
    try:
        actual: Optional[str] = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        actual = None
    if actual != path:
        os.close(fd)
        raise PermissionError(errno.EACCES, f"{path} moved while being checked")
    return fd


def _via_opath(path: str) -> tuple[int, bytes]:
    """An O_PATH descriptor on ``path`` and a short address reaching exactly that inode."""
    fd = _open_checked(path, 0)
    return fd, _unix_sockaddr(f"/proc/self/fd/{fd}")


CONNECT_DONE, CONNECT_IN_PROGRESS, CONNECT_RETRY = 0, 1, 2


def connect(sock: int, addr: SockAddr, unix_target: Optional[str]) -> tuple[int, int]:
    """(result, state). A blocking socket's connect is made non-blocking so that no destination
    can stall the supervisor: CONNECT_IN_PROGRESS means "answer when writable" (TCP handshake),
    CONNECT_RETRY "try again shortly" (a unix listener whose backlog is full)."""
    raw = addr.raw
    opath = -1
    if unix_target is not None:
        try:
            opath, raw = _via_opath(unix_target)
        except OSError as exc:
            return -(exc.errno or errno.ENOENT), CONNECT_DONE
    try:
        flags = fcntl.fcntl(sock, fcntl.F_GETFL)
        if flags & os.O_NONBLOCK:
            return connect_raw(sock, raw), CONNECT_DONE
        fcntl.fcntl(sock, fcntl.F_SETFL, flags | os.O_NONBLOCK)
        try:
            result = connect_raw(sock, raw)
            if result == -errno.EINPROGRESS:
                # Loopback handshakes usually finish within the call: ask once more before
                # deferring (EISCONN: it completed; EALREADY: still going).
                again = connect_raw(sock, raw)
                if again == -errno.EALREADY:
                    return 0, CONNECT_IN_PROGRESS
                result = 0 if again in (0, -errno.EISCONN) else again
        finally:
            fcntl.fcntl(sock, fcntl.F_SETFL, flags)
        if result == -errno.EAGAIN and addr.family == socket.AF_UNIX:
            return result, CONNECT_RETRY
        return result, CONNECT_DONE
    finally:
        if opath >= 0:
            os.close(opath)


def bind(sock: int, addr: SockAddr) -> int:
    return bind_raw(sock, addr.raw)


def bind_unix_path(sock: int, path: str) -> int:
    """Bind inside the directory the supervisor checked, whatever the child's cwd or path length.

    ``path``'s directory must be the resolved one the supervisor checked (no symlinks).
    """
    parent, name = os.path.split(path)
    try:
        dfd = _open_checked(parent or "/", os.O_DIRECTORY)
    except OSError as exc:
        return -(exc.errno or errno.ENOENT)
    try:
        return bind_raw(sock, _unix_sockaddr(f"/proc/self/fd/{dfd}/{name}"))
    finally:
        os.close(dfd)


def abstract_name_exists(name: bytes) -> bool:
    """Whether a unix socket of this network namespace is bound to the abstract ``name`` (listed
    in /proc/net/unix as '@' and the name, NULs shown as '@'). True when that cannot be read: the
    caller then refuses as for a socket that exists."""
    shown = b" @" + name.replace(b"\0", b"@")
    try:
        with open("/proc/net/unix", "rb") as fh:
            return any(line.rstrip(b"\n").endswith(shown) for line in fh)
    except OSError:
        return True


_LOOPBACK_V4 = ipaddress.IPv4Address("127.0.0.1")
_LOOPBACK_V6 = ipaddress.IPv6Address("::1")
_MAPPED_LOOPBACK = ipaddress.IPv6Address("::ffff:127.0.0.1")


def reached_host(host: IPAddress) -> IPAddress:
    """The host a connect or send to ``host`` reaches. Linux takes the unspecified address for
    loopback (0.0.0.0 and ::ffff:0.0.0.0 reach 127.0.0.1, :: reaches ::1); glibc's getaddrinfo
    connects UDP sockets to both when it sorts the answers of a passive lookup (host None), and
    asyncio's start_server(host=None) does one. Decided as loopback, as the kernel routes them."""
    if host.is_unspecified:
        return _LOOPBACK_V4 if host.version == 4 else _LOOPBACK_V6
    if (
        isinstance(host, ipaddress.IPv6Address)
        and host.ipv4_mapped is not None
        and host.ipv4_mapped.is_unspecified
    ):
        return _MAPPED_LOOPBACK
    return host


_IP_FREEBIND = 15
_IPV6_FREEBIND = 78


def nonlocal_bind_errno(sock: int, addr: SockAddr) -> int:
    """EADDRNOTAVAIL when the kernel would refuse to bind ``sock`` to ``addr`` because no interface
    has that address (checked with a throwaway socket on port 0), else 0. Not when the socket may
    bind a non-local address anyway (IP_FREEBIND, the ip_nonlocal_bind sysctls): then 0."""
    assert addr.host is not None
    family = socket.AF_INET if addr.host.version == 4 else socket.AF_INET6
    try:
        level, option = (
            (socket.IPPROTO_IP, _IP_FREEBIND) if family == socket.AF_INET else (41, _IPV6_FREEBIND)
        )
        if getsockopt_int(sock, level, option):
            return 0
        for sysctl in ("/proc/sys/net/ipv4/ip_nonlocal_bind", "/proc/sys/net/ipv6/ip_nonlocal_bind"):
            with open(sysctl, "rb") as fh:
                if fh.read().strip() != b"0":
                    return 0
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.bind((str(addr.host), 0))
    except OSError as exc:
        return errno.EADDRNOTAVAIL if exc.errno == errno.EADDRNOTAVAIL else 0
    return 0


def bind_allowed(ctx: PolicyContext, pid: int, protocol: str, addr: SockAddr) -> tuple[bool, str]:
    """A bind is allowed on an address the policy lets the test reach (wildcards count as loopback)."""
    assert addr.host is not None and addr.port is not None
    net = ctx.policy.net
    if net is None:
        return True, ""
    host = reached_host(addr.host)
    if addr.port == 0:
        if any(rule.host_matches(host) and protocol in rule.protocols for rule in net):
            return True, ""
        return False, "not in net policy"
    return ctx.network_allowed(pid, protocol, host, addr.port)


def sendto(sock: int, data: bytes, flags: int, addr: SockAddr, unix_target: Optional[str]) -> int:
    blocking_flag = socket.MSG_DONTWAIT if is_blocking(sock) else 0
    if unix_target is not None:
        try:
            opath, raw = _via_opath(unix_target)
        except OSError as exc:
            return -(exc.errno or errno.ENOENT)
        try:
            return sendto_raw(sock, data, flags | blocking_flag, raw)
        finally:
            os.close(opath)
    return sendto_raw(sock, data, flags | blocking_flag, addr.raw)


def _translate_rights(control: bytes, pidfd: int) -> tuple[list[tuple[int, int, bytes]], list[int]]:
    """Parse cmsgs; SCM_RIGHTS descriptors are the child's numbers, so fetch each one here."""
    ancillary: list[tuple[int, int, bytes]] = []
    grabbed: list[int] = []
    offset = 0
    while offset + _CMSG_HDR.size <= len(control):
        length, level, kind = _CMSG_HDR.unpack_from(control, offset)
        if length < _CMSG_HDR.size:
            break
        data = control[offset + _CMSG_HDR.size : offset + length]
        if level == socket.SOL_SOCKET and kind == SCM_RIGHTS:
            fds = [
                pidfd_getfd(pidfd, fd)
                for fd in struct.unpack(f"={len(data) // 4}i", data[: len(data) // 4 * 4])
            ]
            grabbed.extend(fds)
            data = struct.pack(f"={len(fds)}i", *fds)
        ancillary.append((level, kind, data))
        offset += (length + 7) & ~7
    return ancillary, grabbed


def sendmsg(sock: int, msg: MsgHdr, flags: int, pidfd: int, unix_target: Optional[str]) -> int:
    """sendmsg on the duplicate with the copied payload, destination and ancillary data."""
    blocking_flag = socket.MSG_DONTWAIT if is_blocking(sock) else 0
    grabbed: list[int] = []
    opath = -1
    pysock = socket.socket(fileno=os.dup(sock))
    try:
        ancillary, grabbed = _translate_rights(msg.control, pidfd)
        address: Any = None
        if msg.name is not None:
            if msg.name.is_ip:
                address = (str(msg.name.host), msg.name.port)
                if pysock.family == socket.AF_INET6 and msg.name.family == socket.AF_INET:
                    address = (f"::ffff:{msg.name.host}", msg.name.port)
            elif unix_target is not None:
                opath, raw = _via_opath(unix_target)
                address = f"/proc/self/fd/{opath}"
            elif msg.name.abstract is not None:
                address = b"\0" + msg.name.abstract
            else:
                return -errno.EAFNOSUPPORT
        if address is None:
            return pysock.sendmsg([msg.data], ancillary, flags | blocking_flag)
        return pysock.sendmsg([msg.data], ancillary, flags | blocking_flag, address)
    except OSError as exc:
        return -(exc.errno or errno.EIO)
    finally:
        pysock.close()
        for fd in grabbed:
            os.close(fd)
        if opath >= 0:
            os.close(opath)
