"""The seccomp program every sandboxed process runs under.

Built once per process with pyseccomp (libseccomp) and exported as classic BPF; the forked child installs
it with a single raw ``seccomp()`` call, so the per-test cost is one syscall, not a compilation.

What the filter does, and why:

* **Notify** (the supervisor in the pytest process decides): ``connect``, ``bind``, ``sendmsg``,
  ``sendmmsg`` (destinations live in memory BPF cannot read), ``sendto`` only when it carries a
  destination (``socket.send()`` is ``sendto(fd, buf, len, flags, NULL, 0)``: notifying it would make
  every send 10x slower), ``execve``/``execveat`` (recorded, then continued; Landlock's execute right is
  what enforces), the process-creating calls (``fork``, ``vfork``, ``clone`` without ``CLONE_THREAD``)
  for process events and ``max_processes``, opens that can write and the other path-mutating calls (so
  a denied write is an observable event), and ``seccomp()`` asking for a second listener (the kernel
  allows one per filter chain: the supervisor answers with a clear event instead of a mystery EBUSY).
* **ENOSYS**: ``clone3`` (BPF cannot read its flags; glibc falls back to ``clone``, whose flags it can)
  and ``openat2`` (its flags live in memory; libc falls back to ``openat``).
* **EPERM**, the escape list: ``io_uring_*`` (performs connects and opens without any of the syscalls
  above), ``ptrace`` and ``process_vm_writev`` (rewrite another process's memory or registers after the
  supervisor checked them), ``userfaultfd`` (stretches kernel race windows), ``bpf``/``perf_event_open``
  (kernel attack surface and side channels), namespaces and mounts (``unshare``, ``setns``, ``mount``,
  the new mount API, ``pivot_root``, ``chroot``), kernel modules and ``kexec``, the kernel keyring
  (not namespaced), ``open_by_handle_at`` (the classic container escape), ``acct``, ``swapon``,
  ``reboot``, clock setting, ``iopl``/``ioperm``; and the ioctls that type into a terminal
  (``TIOCSTI``, ``TIOCLINUX``), which would let a test run a command in the user's shell.
* Any other syscall ABI (32-bit ``int 0x80`` and its ``socketcall``, x32) kills the process: a hand
  written prefix checks the architecture and the x32 bit before libseccomp's program runs.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct
import tempfile
import termios
from dataclasses import dataclass

from .seccomp_lib import pyseccomp as sc

SECCOMP_SET_MODE_FILTER = 1
SECCOMP_GET_NOTIF_SIZES = 3
FLAG_NEW_LISTENER = 1 << 3
FLAG_WAIT_KILLABLE_RECV = 1 << 5

SECCOMP_RET_KILL_PROCESS = 0x80000000
SECCOMP_RET_ALLOW = 0x7FFF0000
AUDIT_ARCH_X86_64 = 0xC000003E
X32_SYSCALL_BIT = 0x40000000

CLONE_THREAD = 0x00010000
AF_PACKET = 17
O_WRITE_FLAGS = (os.O_CREAT, os.O_TRUNC)  # checked as single bits; access mode checked separately

# Calls that mutate the filesystem by path: notified so a denial is an event (Landlock enforces).
PATH_MUTATING = (
    "creat", "truncate", "unlink", "unlinkat", "rename", "renameat", "renameat2", "mkdir", "mkdirat",
    "rmdir", "symlink", "symlinkat", "link", "linkat", "mknod", "mknodat", "chmod", "fchmodat",
    "fchmodat2", "chown", "lchown", "fchownat", "utimes", "utimensat", "futimesat",
)  # fmt: skip

NOTIFIED_ALWAYS = ("connect", "bind", "sendmsg", "sendmmsg", "execve", "execveat")
# Process creation is notified only when a process limit is set: a round trip per fork costs about
# 0.1 ms per subprocess launch, a quarter of a /bin/true, for events nobody asked for.
PROCESS_CREATION = ("fork", "vfork")

ESCAPES = (
    "io_uring_setup", "io_uring_enter", "io_uring_register", "ptrace", "process_vm_writev",
    "userfaultfd", "bpf", "perf_event_open", "unshare", "setns", "mount", "umount2", "pivot_root",
    "chroot", "fsopen", "fsconfig", "fsmount", "fspick", "move_mount", "open_tree", "mount_setattr",
    "init_module", "finit_module", "delete_module", "kexec_load", "kexec_file_load", "add_key",
    "request_key", "keyctl", "open_by_handle_at", "acct", "swapon", "swapoff", "reboot",
    "settimeofday", "clock_settime", "clock_adjtime", "adjtimex", "iopl", "ioperm",
)  # fmt: skip

ENOSYS_CALLS = ("clone3", "openat2")

# Typing into a terminal: TIOCSTI pushes bytes into a tty's input queue, so a test could type a
# command into the shell that started pytest (it runs once pytest exits, unconfined); TIOCLINUX's
# paste does the same on a virtual console. An ioctl's command is an unsigned int: only the low 32
# bits are compared, so high bits set in the register cannot slip past.
TIOCLINUX = 0x541C
TERMINAL_INJECTION = (termios.TIOCSTI, TIOCLINUX)


def _build(notify_process_creation: bool) -> sc.SyscallFilter:
    flt = sc.SyscallFilter(sc.ALLOW)
    flt.set_attr(sc.Attr.ACT_BADARCH, sc.KILL_PROCESS)
    # Binary-tree dispatch: the kernel emulates the filter for every syscall number when it is
    # installed (to build its allow cache), so a linear chain makes every fork pay ~0.1 ms.
    flt.set_attr(sc.Attr.CTL_OPTIMIZE, 2)
    for name in NOTIFIED_ALWAYS + PATH_MUTATING:
        flt.add_rule(sc.NOTIFY, name)
    flt.add_rule(sc.NOTIFY, "sendto", sc.Arg(4, sc.NE, 0))
    if notify_process_creation:
        for name in PROCESS_CREATION:
            flt.add_rule(sc.NOTIFY, name)
        flt.add_rule(sc.NOTIFY, "clone", sc.Arg(0, sc.MASKED_EQ, CLONE_THREAD, 0))
    for name, flags_arg in (("open", 1), ("openat", 2)):
        flt.add_rule(sc.NOTIFY, name, sc.Arg(flags_arg, sc.MASKED_EQ, os.O_ACCMODE, os.O_WRONLY))
        flt.add_rule(sc.NOTIFY, name, sc.Arg(flags_arg, sc.MASKED_EQ, os.O_ACCMODE, os.O_RDWR))
        for bit in O_WRITE_FLAGS:
            flt.add_rule(sc.NOTIFY, name, sc.Arg(flags_arg, sc.MASKED_EQ, bit, bit))
    flt.add_rule(sc.NOTIFY, "seccomp", sc.Arg(1, sc.MASKED_EQ, FLAG_NEW_LISTENER, FLAG_NEW_LISTENER))
    # Packet sockets write raw frames to an interface, past every check above (root only; the
    # child also drops CAP_NET_RAW, see launcher.py).
    flt.add_rule(sc.ERRNO(errno.EPERM), "socket", sc.Arg(0, sc.EQ, AF_PACKET))
    for name in ENOSYS_CALLS:
        flt.add_rule(sc.ERRNO(errno.ENOSYS), name)
    for name in ESCAPES:
        flt.add_rule(sc.ERRNO(errno.EPERM), name)
    for command in TERMINAL_INJECTION:
        flt.add_rule(sc.ERRNO(errno.EPERM), "ioctl", sc.Arg(1, sc.MASKED_EQ, 0xFFFFFFFF, command))
    return flt


def _bpf_insn(code: int, jt: int, jf: int, k: int) -> bytes:
    return struct.pack("=HBBI", code, jt, jf, k)


_BPF_LD_W_ABS = 0x20
_BPF_JEQ_K = 0x15
_BPF_JGE_K = 0x35
_BPF_RET_K = 0x06


def _arch_prefix() -> bytes:
    """Kill any syscall that is not native x86-64 (i386 entry, x32 numbers) before anything else runs."""
    return b"".join(
        (
            _bpf_insn(_BPF_LD_W_ABS, 0, 0, 4),  # seccomp_data.arch
            _bpf_insn(_BPF_JEQ_K, 1, 0, AUDIT_ARCH_X86_64),
            _bpf_insn(_BPF_RET_K, 0, 0, SECCOMP_RET_KILL_PROCESS),
            _bpf_insn(_BPF_LD_W_ABS, 0, 0, 0),  # seccomp_data.nr
            _bpf_insn(_BPF_JGE_K, 0, 1, X32_SYSCALL_BIT),
            _bpf_insn(_BPF_RET_K, 0, 0, SECCOMP_RET_KILL_PROCESS),
        )
    )


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


@dataclass
class CompiledFilter:
    """A ready-to-install program; ``fprog_address`` stays valid while this object lives."""

    program: bytes
    buffer: ctypes.Array[ctypes.c_char]
    fprog: _SockFprog

    @property
    def instructions(self) -> int:
        return len(self.program) // 8

    @property
    def fprog_address(self) -> int:
        return ctypes.addressof(self.fprog)


_compiled: dict[bool, CompiledFilter] = {}


def compiled_filter(notify_process_creation: bool = True) -> CompiledFilter:
    """The program, compiled on first use and cached for the life of the process (two variants:
    with and without process-creation notifications)."""
    compiled = _compiled.get(notify_process_creation)
    if compiled is None:
        with tempfile.TemporaryFile() as out:
            _build(notify_process_creation).export_bpf(out)
            out.seek(0)
            program = _arch_prefix() + out.read()
        compiled = _compiled[notify_process_creation] = from_program(program)
    return compiled


def from_program(program: bytes) -> CompiledFilter:
    """A classic BPF program (8-byte instructions) ready for ``seccomp()``."""
    buffer = ctypes.create_string_buffer(program, len(program))
    return CompiledFilter(program, buffer, _SockFprog(len(program) // 8, ctypes.addressof(buffer)))


def allow_all() -> CompiledFilter:
    """One instruction, "allow": what the capability probe installs to see which flags work."""
    return from_program(_bpf_insn(_BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW))
