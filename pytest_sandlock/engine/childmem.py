"""Reading a notified process's memory and decoding what the supervisor needs from it.

Every value read here is a *copy*: decisions are taken on the copy, and network syscalls are then
performed by the supervisor with that same copy, so a second thread rewriting the child's memory
cannot change what was checked (KERNEL-NOTES trap 3). Callers must check ``NOTIF_ID_VALID`` after a
read and before acting on it (trap 4).
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from dataclasses import dataclass
from typing import Optional, Union

from .syscalls import read_memory, read_memory_spans

IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]

MAX_SOCKADDR = 128
PATH_MAX = 4096
MAX_ARGV = 4096
_PTR = struct.Struct("=Q")
# struct msghdr: name, namelen(+pad), iov, iovlen, control, controllen, flags(+pad)
MSGHDR = struct.Struct("=QI4xQQQQi4x")
# struct mmsghdr: msghdr + unsigned msg_len (+pad)
MMSGHDR_SIZE = MSGHDR.size + 8
IOVEC = struct.Struct("=QQ")


@dataclass(frozen=True)
class SockAddr:
    """A decoded socket address plus the raw bytes to hand to the kernel unchanged."""

    family: int
    raw: bytes
    host: Optional[IPAddress] = None
    port: Optional[int] = None
    unix_path: Optional[str] = None  # filesystem path as written by the caller
    abstract: Optional[bytes] = None  # abstract name without the leading NUL

    @property
    def is_ip(self) -> bool:
        return self.family in (socket.AF_INET, socket.AF_INET6)

    def display_unix(self) -> Optional[str]:
        if self.abstract is not None:
            return "@" + self.abstract.decode("utf-8", "backslashreplace")
        return self.unix_path


def parse_sockaddr(raw: bytes) -> SockAddr:
    if len(raw) < 2:
        return SockAddr(family=-1, raw=raw)
    (family,) = struct.unpack_from("=H", raw)
    if family == socket.AF_INET and len(raw) >= 8:
        port = struct.unpack_from("!H", raw, 2)[0]
        return SockAddr(family, raw, ipaddress.IPv4Address(raw[4:8]), port)
    if family == socket.AF_INET6 and len(raw) >= 24:
        port = struct.unpack_from("!H", raw, 2)[0]
        return SockAddr(family, raw, ipaddress.IPv6Address(raw[8:24]), port)
    if family == socket.AF_UNIX:
        body = raw[2:]
        if body[:1] == b"\0":
            return SockAddr(family, raw, abstract=body[1:])
        path = body.split(b"\0", 1)[0]
        return SockAddr(family, raw, unix_path=path.decode("utf-8", "surrogateescape") if path else None)
    return SockAddr(family, raw)


def read_sockaddr_bytes(pid: int, address: int, length: int) -> Optional[bytes]:
    if address == 0 or length <= 0:
        return None
    return read_memory(pid, address, min(length, MAX_SOCKADDR))


def read_sockaddr(pid: int, address: int, length: int) -> Optional[SockAddr]:
    raw = read_sockaddr_bytes(pid, address, length)
    return None if raw is None else parse_sockaddr(raw)


def read_cstring(pid: int, address: int, limit: int = PATH_MAX) -> Optional[bytes]:
    """A NUL-terminated string; read page by page so a short mapping does not fail the read."""
    if address == 0:
        return None
    out = bytearray()
    while len(out) < limit:
        chunk_len = min(4096 - (address % 4096), limit - len(out))
        chunk = read_memory(pid, address, chunk_len)
        nul = chunk.find(b"\0")
        if nul >= 0:
            out += chunk[:nul]
            return bytes(out)
        out += chunk
        address += chunk_len
        if len(chunk) < chunk_len:
            break
    return bytes(out)


def read_path(pid: int, address: int) -> Optional[str]:
    raw = read_cstring(pid, address)
    return None if raw is None else raw.decode("utf-8", "surrogateescape")


_FIRST_READ = 256  # bytes of each exec string fetched by the batched read; longer ones are finished after


def _to_page_end(address: int, limit: int) -> int:
    return min(4096 - (address % 4096), limit)


def _finish_cstring(pid: int, address: int, chunk: bytes, limit: int) -> bytes:
    """``chunk`` was read at ``address``: the string if it holds the NUL, else the rest read on."""
    nul = chunk.find(b"\0")
    if nul >= 0:
        return chunk[:nul]
    if not chunk:
        return read_cstring(pid, address, limit) or b""
    return chunk + (read_cstring(pid, address + len(chunk), limit - len(chunk)) or b"")


def read_exec_args(pid: int, path_address: int, argv_address: int) -> tuple[str, tuple[str, ...]]:
    """An ``execve``'s path and argv in two ``process_vm_readv`` calls (path and pointer array,
    then every argument's first bytes) instead of one read per string."""
    spans = []
    if path_address:
        spans.append((path_address, _to_page_end(path_address, _FIRST_READ)))
    if argv_address:
        spans.append((argv_address, max(8, _to_page_end(argv_address, 8 * 64)) // 8 * 8))
    chunks = read_memory_spans(pid, spans) if spans else []
    path = _finish_cstring(pid, path_address, chunks[0], PATH_MAX) if path_address else b""
    args: list[str] = []
    if argv_address:
        pointers: list[int] = []
        table, address = chunks[-1], argv_address
        while True:
            if not table:
                break
            for (ptr,) in _PTR.iter_unpack(table[: len(table) // 8 * 8]):
                if ptr == 0 or len(pointers) >= MAX_ARGV:
                    table = b""
                    break
                pointers.append(ptr)
            else:
                address += len(table) // 8 * 8
                table = read_memory(pid, address, max(8, 4096 - (address % 4096)) // 8 * 8)
                continue
            break
        firsts = read_memory_spans(pid, [(p, _to_page_end(p, _FIRST_READ)) for p in pointers])
        for ptr, first in zip(pointers, firsts):
            args.append(_finish_cstring(pid, ptr, first, 65536).decode("utf-8", "surrogateescape"))
    return path.decode("utf-8", "surrogateescape"), tuple(args)


@dataclass(frozen=True)
class MsgHdr:
    name: Optional[SockAddr]
    data: bytes
    control: bytes
    flags: int


def read_iovecs(pid: int, iov_addr: int, iov_count: int, limit: int) -> bytes:
    if iov_count <= 0 or iov_addr == 0:
        return b""
    raw = read_memory(pid, iov_addr, IOVEC.size * min(iov_count, 1024))
    parts: list[bytes] = []
    total = 0
    for base, length in IOVEC.iter_unpack(raw):
        take = min(length, limit - total)
        if take > 0 and base:
            parts.append(read_memory(pid, base, take))
            total += take
    return b"".join(parts)


def read_msghdr(pid: int, address: int, data_limit: int) -> MsgHdr:
    raw = read_memory(pid, address, MSGHDR.size)
    name, namelen, iov, iovlen, control, controllen, flags = MSGHDR.unpack(raw)
    return decode_msghdr(pid, (name, namelen, iov, iovlen, control, controllen, flags), data_limit)


def decode_msghdr(pid: int, fields: tuple[int, ...], data_limit: int) -> MsgHdr:
    name, namelen, iov, iovlen, control, controllen, flags = fields
    sockaddr = read_sockaddr(pid, name, namelen)
    data = read_iovecs(pid, iov, iovlen, data_limit)
    ctrl = read_memory(pid, control, min(controllen, 65536)) if control and controllen else b""
    return MsgHdr(sockaddr, data, ctrl, flags)


def read_memory_safe(pid: int, address: int, length: int) -> bytes:
    """Like read_memory, but an empty or NULL buffer is simply empty."""
    if address == 0 or length <= 0:
        return b""
    return read_memory(pid, address, length)


def write_msg_len(pid: int, mmsghdr_address: int, value: int) -> None:
    """Fill in ``msg_len`` of one ``struct mmsghdr`` after a sendmmsg performed on the child's behalf."""
    from .syscalls import write_memory

    try:
        write_memory(pid, mmsghdr_address + MSGHDR.size, struct.pack("=I", value))
    except OSError:
        pass
