"""A suite run as root: the sandboxed test loses the capabilities that reach past the supervisor."""

from __future__ import annotations

import errno
import os
import socket

import pytest

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="capabilities only matter when run as root")

CAP_NET_RAW = 13
CAP_SYS_RESOURCE = 24
CAP_DAC_OVERRIDE = 1


def _effective() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    return 0


def _raw_socket_errno(family: int, kind: int, proto: int) -> int:
    try:
        socket.socket(family, kind, proto).close()
    except OSError as exc:
        return exc.errno or -1
    return 0


@pytest.mark.sandbox(enabled=False)
def test_control_root_has_raw_sockets() -> None:
    if not _effective() & (1 << CAP_NET_RAW):
        pytest.skip("this root has no CAP_NET_RAW to lose")
    assert _raw_socket_errno(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) == 0
    assert _raw_socket_errno(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003)) == 0


@pytest.mark.sandbox(net=["127.0.0.1"])
def test_raw_and_packet_sockets_refused() -> None:
    caps = _effective()
    assert not caps & (1 << CAP_NET_RAW)
    assert not caps & (1 << CAP_SYS_RESOURCE)
    assert _raw_socket_errno(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) == errno.EPERM
    assert _raw_socket_errno(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003)) == errno.EPERM


@pytest.mark.sandbox(net=["127.0.0.1"])
def test_file_permission_capabilities_kept() -> None:
    """A root-run suite keeps root's file access (Landlock, not DAC, is what confines files)."""
    assert _effective() & (1 << CAP_DAC_OVERRIDE)
