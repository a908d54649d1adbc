"""Forking a confined child and handing its seccomp listener to the supervising parent.

Child, before any code it was asked to run:
  1. parent-death signal (SIGKILL), so the child never outlives a killed pytest; refuses to go on
     if it has a second thread (one would escape: seccomp and Landlock confine the calling thread);
  2. RLIMIT_AS when a memory limit is set;
  3. the capability drop (run as root), no_new_privs, then the cached Landlock ruleset (skipped in
     audit mode: nothing is denied);
  4. the precompiled seccomp program with a notification listener;
  5. tells the parent the listener's fd number; the parent copies it with ``pidfd_getfd`` (SCM_RIGHTS
     would deadlock once sendmsg is supervised) and acknowledges; the child closes its own copy, so
     that if the supervisor dies, supervised syscalls fail with ENOSYS instead of blocking forever;
  6. closes the descriptors it was told to close (the parent's pipe ends, pytest's, the cached
     Landlock rulesets and /proc files) while the parent copies the listener; once acknowledged,
     runs the at-fork handlers the fast fork left to it (see ``forking``), unfreezes the heap that
     ``forking.fork`` froze, then the target.
Steps 1-4 are one loop over syscalls prepared in the parent (``confinement_steps``).
Any failure in 1-5 is reported to the parent and the target never runs: confinement is never skipped.
"""

from __future__ import annotations

import atexit
import ctypes
import gc
import os
import resource
import select
import shutil
import signal
import struct
import sys
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Optional

from . import channel, forking, landlock, seccomp_filter
from .channel import ChannelServer
from .errors import KernelFeatureError, SandboxError
from .notify import Listener
from .proctree import ProcessTree
from .syscalls import (
    NR_PRCTL,
    NR_SECCOMP,
    PR_SET_NO_NEW_PRIVS,
    PR_SET_PDEATHSIG,
    last_errno,
    pidfd_getfd,
    raw_syscall,
    syscall6,
)

_SYNC = struct.Struct("=iQ")
_SIGKILL = int(signal.SIGKILL)  # a plain int: the child touches no enum object for it
HANDOFF_TIMEOUT = 30.0
HANDOFF_SPIN = 0.001  # seconds the parent polls for the listener before sleeping

# The child calls getppid() right after the fork, and nothing in this process may have called it yet:
# the dynamic linker would then resolve the symbol (lazy binding) in every child, about ten page
# faults on the way to its confinement. Called once here, the child inherits the resolved entry.
os.getppid()


@dataclass
class Confinement:
    """Everything the child applies to itself, prepared in the parent (cheap to fork with)."""

    ruleset: Optional[landlock.Ruleset]
    compiled: seccomp_filter.CompiledFilter
    max_memory: Optional[int] = None
    close_fds: tuple[int, ...] = ()
    wait_killable: bool = True
    capability_drop: Optional[CapabilityDrop] = None
    inherits_memory: bool = True  # False when the target execs a program at once
    keep_random_state: bool = False  # see forking.fork


@dataclass
class Launched:
    pid: int
    pidfd: int
    listener: Listener
    result_fd: int
    channel: ChannelServer
    output_fds: tuple[int, ...]
    memory_base: int
    tree: ProcessTree


def _vm_size() -> int:
    with open("/proc/self/status", "rb") as fh:
        for line in fh:
            if line.startswith(b"VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


# Capabilities a test run as root must not keep: raw and packet sockets (frames past the
# supervisor), raising its own limits, namespaces/mounts/modules/ptrace/bpf (also refused by seccomp),
# device nodes, the clock. File-permission capabilities stay, so a root-run suite keeps its file access
# (Landlock, which capabilities do not bypass, is what confines files).
DROPPED_CAPABILITIES = (
    9,  # LINUX_IMMUTABLE
    12,  # NET_ADMIN
    13,  # NET_RAW
    16,  # SYS_MODULE
    17,  # SYS_RAWIO
    19,  # SYS_PTRACE
    21,  # SYS_ADMIN
    22,  # SYS_BOOT
    24,  # SYS_RESOURCE
    25,  # SYS_TIME
    27,  # MKNOD
    30,  # AUDIT_CONTROL
    32,  # MAC_OVERRIDE
    33,  # MAC_ADMIN
    34,  # SYSLOG
    38,  # PERFMON
    39,  # BPF
    40,  # CHECKPOINT_RESTORE
    8,  # SETPCAP
)
_CAP_VERSION_3 = 0x20080522
_NR_CAPGET = 125
_NR_CAPSET = 126


@dataclass
class CapabilityDrop:
    """A ready ``capset()`` argument: this process's capabilities minus DROPPED_CAPABILITIES.

    The addresses are computed here so that the child's single call touches nothing else."""

    header: ctypes.Array[ctypes.c_uint32]
    data: ctypes.Array[ctypes.c_uint32]
    header_address: int = 0
    data_address: int = 0

    def __post_init__(self) -> None:
        self.header_address = ctypes.addressof(self.header)
        self.data_address = ctypes.addressof(self.data)


_DROP_MASKS = tuple(
    sum(1 << (cap - 32 * word) for cap in DROPPED_CAPABILITIES if cap // 32 == word) for word in (0, 1)
)
_cap_header = (ctypes.c_uint32 * 2)(_CAP_VERSION_3, 0)
_cap_data = (ctypes.c_uint32 * 6)()
_cap_drops: dict[tuple[int, ...], Optional[CapabilityDrop]] = {}
_CAP_HEADER_ADDRESS = ctypes.addressof(_cap_header)
_CAP_DATA_ADDRESS = ctypes.addressof(_cap_data)


def prepare_capability_drop() -> Optional[CapabilityDrop]:
    """Computed in the parent (the child inherits the same credentials), so that the child only
    makes one syscall; None when there is nothing to drop (an ordinary user). One capget per
    call; the result is cached per distinct capability state. If the capabilities cannot be read,
    nobody can say none need dropping: SandboxError (the test fails, it never runs with them)."""
    _cap_header[1] = 0
    try:
        raw_syscall(_NR_CAPGET, _CAP_HEADER_ADDRESS, _CAP_DATA_ADDRESS)
    except OSError as exc:
        raise SandboxError(f"cannot read this process's capabilities (capget: {exc.strerror})") from None
    current = tuple(_cap_data)
    if current in _cap_drops:
        return _cap_drops[current]
    header = (ctypes.c_uint32 * 2)(_CAP_VERSION_3, 0)
    data = (ctypes.c_uint32 * 6)(*current)
    for word in (0, 1):  # effective, permitted, inheritable of each 32-bit half
        for base in (0, 1, 2):
            data[word * 3 + base] &= ~_DROP_MASKS[word] & 0xFFFFFFFF
    drop = None if tuple(data) == current else CapabilityDrop(header, data)
    _cap_drops[current] = drop
    return drop


# The child's confinement as a flat list of syscalls, built in the parent: (number, four arguments,
# step). The child runs them in one loop through one ctypes function: every Python function called
# and every object touched in a just-forked child is a copy-on-write page fault (~2.3 us here).
_STEP_PDEATHSIG, _STEP_CAPSET, _STEP_NO_NEW_PRIVS, _STEP_LANDLOCK, _STEP_SECCOMP = range(5)
Step = tuple[int, int, int, int, int, int]


def confinement_steps(conf: Confinement) -> tuple[Step, ...]:
    """The syscalls that confine the child, in order: capset (when capabilities are dropped),
    no_new_privs, Landlock (unless audit), seccomp with a listener (its result is the listener)."""
    steps: list[Step] = []
    drop = conf.capability_drop
    if drop is not None:
        steps.append((_NR_CAPSET, drop.header_address, drop.data_address, 0, 0, _STEP_CAPSET))
    steps.append((NR_PRCTL, PR_SET_NO_NEW_PRIVS, 1, 0, 0, _STEP_NO_NEW_PRIVS))
    if conf.ruleset is not None:
        if conf.ruleset.closed:
            raise SandboxError("restrict_self: the Landlock ruleset is closed")
        steps.append((landlock.SYS_LANDLOCK_RESTRICT_SELF, conf.ruleset.fd, 0, 0, 0, _STEP_LANDLOCK))
    flags = seccomp_filter.FLAG_NEW_LISTENER
    if conf.wait_killable:
        flags |= seccomp_filter.FLAG_WAIT_KILLABLE_RECV
    address = conf.compiled.fprog_address
    steps.append((NR_SECCOMP, seccomp_filter.SECCOMP_SET_MODE_FILTER, flags, address, 0, _STEP_SECCOMP))
    return tuple(steps)


def _step_error(step: int, err: int) -> Exception:
    """What a failed confinement step raises (the child reports it to the parent as text)."""
    failure = OSError(err, os.strerror(err))
    if step == _STEP_PDEATHSIG:
        return OSError(err, f"prctl(PR_SET_PDEATHSIG): {failure.strerror}")
    if step == _STEP_CAPSET:
        return OSError(err, "capset failed while dropping capabilities")
    if step == _STEP_NO_NEW_PRIVS:
        return OSError(err, f"prctl(PR_SET_NO_NEW_PRIVS): {failure.strerror}")
    if step == _STEP_LANDLOCK:
        return landlock.restrict_error(failure)
    return OSError(err, f"seccomp(SECCOMP_SET_MODE_FILTER): {failure.strerror}")


def _child_confine(
    conf: Confinement, steps: tuple[Step, ...], parent: int, sync_w: int, handlers_ran: bool
) -> int:
    """Confine this (child) process; returns the listener fd, reported to the parent but still open."""
    if syscall6(NR_PRCTL, PR_SET_PDEATHSIG, _SIGKILL, 0, 0, 0) < 0:
        raise _step_error(_STEP_PDEATHSIG, last_errno())
    if os.getppid() != parent:  # the parent died between fork and prctl
        os._exit(1)
    if handlers_ran:  # os.fork() ran the at-fork handlers already
        _refuse_threads()
    base = 0
    if conf.max_memory is not None:
        # A forked Python target may use max_memory beyond the address space it inherited; a
        # program about to be executed starts from nothing, so it gets max_memory itself (the
        # inherited size of a pytest worker, hundreds of MiB with its thread stacks, would
        # otherwise stretch the limit).
        base = _vm_size() if conf.inherits_memory else 0
        limit = base + conf.max_memory
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    listener = -1
    for number, a, b, c, d, step in steps:
        listener = syscall6(number, a, b, c, d, 0)
        if listener < 0:
            raise _step_error(step, last_errno())
    os.write(sync_w, b"L" + _SYNC.pack(listener, base))
    return listener


def _refuse_threads() -> None:
    """Seccomp and Landlock confine the calling thread only. After os.fork() the interpreter has
    run the os.register_at_fork handlers already: a thread one of them started would run
    unconfined. (The fast fork runs them after confinement instead.)"""
    threads = forking.thread_count()
    if threads < 0:
        raise SandboxError("cannot count the child's threads (/proc/self/task): refusing to confine")
    if threads != 1:
        raise SandboxError(
            "the child has more than one thread before confinement (started by an "
            "os.register_at_fork handler?): it would run unconfined"
        )


def launch(
    conf: Confinement,
    target: Callable[[int], None],
    *,
    capture_output: bool = False,
    stdin_devnull: bool = False,
    runs_python: bool = True,
) -> Launched:
    """Fork; the child confines itself and calls ``target(result_fd)``, which must not return normally.

    ``target`` writes its result to ``result_fd`` and ends the process (os._exit / exec). Returns
    as soon as the parent holds the listener: the child is then running the target, so the caller
    must kill the tree (``launched.tree``) if anything it does next fails. Between the fork and the
    hand-off the parent only prepares the process tree (children snapshot, subreaper) while the
    child confines itself (about 0.2 ms), then waits for the listener. ``runs_python=False`` (the
    target execs at once) skips the interpreter's at-fork child handlers, as ``subprocess`` does.
    """
    tree = ProcessTree()  # may raise TreeUnreadable: before any descriptor is opened
    sync_r, sync_w = os.pipe2(os.O_CLOEXEC)
    os.set_blocking(sync_r, False)  # read by _read_soon
    ack_r, ack_w = os.pipe2(os.O_CLOEXEC)
    result_r, result_w = os.pipe2(os.O_CLOEXEC)
    req_r, req_w = os.pipe2(os.O_CLOEXEC)
    resp_r, resp_w = os.pipe2(os.O_CLOEXEC)
    out_pipes = [os.pipe2(os.O_CLOEXEC) for _ in range(2)] if capture_output else []
    parent_only = [sync_r, ack_w, result_r, req_r, resp_w] + [r for r, _ in out_pipes]
    child_only = [sync_w, ack_r, result_w, req_w, resp_r] + [w for _, w in out_pipes]
    parent = os.getpid()
    # The child closes the parent's ends, its sync end once the listener is reported, and what it
    # was told to close; it keeps its own ends, the output pipes (dup2'd first) and 0-2.
    keep = {result_w, req_w, resp_r, ack_r, 0, 1, 2, *(w for _, w in out_pipes)}
    retired = tuple(_retired)  # the child closes its copies; this process, once the child runs
    to_close = (*parent_only, sync_w, *retired, *(fd for fd in conf.close_fds if fd not in keep))
    try:
        steps = confinement_steps(conf)
    except BaseException:
        for fd in parent_only + child_only:
            os.close(fd)
        raise
    sys.stdout.flush()
    sys.stderr.flush()
    # The child's live-policy client learns its descriptors from the fork itself: set here, undone
    # in the parent right after (set in the child, it would be one more page fault before the test).
    client_fds = channel.set_client_fds((req_w, resp_r))
    try:
        pid, child_handlers = forking.fork(conf.keep_random_state)
    except BaseException:
        channel.set_client_fds(client_fds)
        for fd in parent_only + child_only:
            os.close(fd)
        raise
    if pid == 0:  # ---------------------------------------------------------------- child
        # Inline on purpose, no helpers: see confinement_steps.
        try:
            try:
                child_listener = _child_confine(conf, steps, parent, sync_w, child_handlers is None)
            except BaseException as exc:  # noqa: BLE001 - report anything, then die
                message = f"{type(exc).__name__}: {exc}"
                os.write(sync_w, b"E" + message.encode("utf-8", "replace")[:4000])
                os._exit(70)
            # Trusted housekeeping overlaps with the parent fetching the listener (which may have
            # taken the number of a descriptor the caller listed but that was not open).
            for fd in to_close:
                if fd != child_listener:
                    try:
                        os.close(fd)
                    except OSError:
                        pass
            if out_pipes:
                os.dup2(out_pipes[0][1], 1)
                os.dup2(out_pipes[1][1], 2)
                for _, w in out_pipes:
                    os.close(w)
            if stdin_devnull:
                devnull = os.open(os.devnull, os.O_RDONLY)
                os.dup2(devnull, 0)
                os.close(devnull)
            # Wait until the parent holds the listener, then drop ours: no code we did not write
            # runs while this process could answer its own notifications (KERNEL-NOTES trap 11).
            if os.read(ack_r, 1) != b"k":
                os._exit(1)
            os.close(child_listener)
            os.close(ack_r)
            if runs_python:
                if child_handlers:  # confined by now: a thread they start is confined too
                    forking.run_child_handlers(child_handlers)
                # forking.fork froze the heap; the target must see an ordinary collector: its
                # gc.get_referrers()/get_objects() find objects made before the fork, and its
                # gc.collect() frees cycles made before it. Unfrozen objects join the oldest
                # generation, so young collections still skip the inherited heap (a list splice).
                # An exec target (runs_python=False) drops the heap anyway.
                gc.unfreeze()
            target(result_w)
        except BaseException:  # noqa: BLE001
            try:
                traceback.print_exc()
            finally:
                os._exit(71)
        os._exit(72)
    # ------------------------------------------------------------------------------------ parent
    # Only what must precede the acknowledgement comes before it: the child waits for it. Our copy
    # of its sync end goes first, so that a child dying before it reports reads as EOF.
    os.close(sync_w)
    pidfd = -1
    try:
        tree.start(root=pid)
        pidfd = os.pidfd_open(pid)
        listener_fd, base = _receive_listener(sync_r, pidfd)
        grabbed = pidfd_getfd(pidfd, listener_fd)
        os.write(ack_w, b"k")
        listener = Listener(grabbed)
    except BaseException:
        _abort_child(pid, pidfd, tree)
        for fd in parent_only:
            if fd not in (sync_r, ack_w):  # closed below in any case
                os.close(fd)
        raise
    finally:
        channel.set_client_fds(client_fds)
        for fd in child_only:
            if fd != sync_w:
                os.close(fd)
        os.close(sync_r)
        os.close(ack_w)
        if retired:
            close_retired(retired)
    return Launched(
        pid=pid,
        pidfd=pidfd,
        listener=listener,
        result_fd=result_r,
        channel=ChannelServer(req_r, resp_w),
        output_fds=tuple(r for r, _ in out_pipes),
        memory_base=base,
        tree=tree,
    )


def _receive_listener(sync_r: int, pidfd: int) -> tuple[int, int]:
    data = _read_soon(sync_r)
    if data is None:
        poller = select.poll()
        poller.register(sync_r, select.POLLIN)
        if not poller.poll(int(HANDOFF_TIMEOUT * 1000)):
            raise SandboxError("the confined child did not report its seccomp listener in time")
        data = os.read(sync_r, 8192)
    if data[:1] == b"L" and len(data) >= 1 + _SYNC.size:
        listener_fd, base = _SYNC.unpack_from(data, 1)
        return listener_fd, base
    if data[:1] == b"E":
        message = data[1:].decode("utf-8", "replace")
        if message.startswith("SandboxError: "):  # our own refusal, not a missing kernel feature
            raise SandboxError(f"could not confine the child: {message[len('SandboxError: ') :]}")
        raise KernelFeatureError(f"could not confine the child: {message}")
    raise SandboxError("the confined child died before it was confined")


def _read_soon(fd: int) -> Optional[bytes]:
    """Poll ``fd`` (non-blocking) for up to HANDOFF_SPIN seconds, yielding the CPU between tries.

    The child needs about 0.2 ms to confine itself. Sleeping in poll() until then costs a wake-up
    on top, which on a virtual machine is tens of microseconds on the way to every test."""
    deadline = time.perf_counter() + HANDOFF_SPIN
    while True:
        try:
            return os.read(fd, 8192)
        except BlockingIOError:
            if time.perf_counter() > deadline:
                return None
            os.sched_yield()


def _abort_child(pid: int, pidfd: int, tree: ProcessTree) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    tree.reap_root()
    tree.kill_all()  # past the acknowledgement the target may have started processes
    if pidfd >= 0:
        os.close(pidfd)
    tree.stop()


# Descriptors of finished runs, retired instead of closed (see close_launched): the next launch closes
# them while its child confines itself.
_retired: list[int] = []


def close_launched(launched: Launched, retire: bool = False) -> None:
    """Release a finished run's descriptors and process-tree state.

    With ``retire`` the descriptors (pidfd, result and output pipes, seccomp listener, live-policy
    channel) are closed by the next ``launch`` instead of now, in the window where the parent waits
    for its child to confine itself; or by ``close_retired``. The last close of a seccomp listener
    alone costs ~20 us on the project's VM, and a run ends on the way to the test's report. Everything
    of that run is dead by then; the next child closes its inherited copies with its other
    descriptors, before it runs anything it was asked to (a copy's close is cheap: it is not the last).
    """
    if retire:
        _retired.extend((launched.pidfd, launched.result_fd, *launched.output_fds, launched.listener.fd))
        _retired.extend((launched.channel.request_fd, launched.channel.response_fd))
        launched.listener.fd = -1  # its close() is a no-op now: the descriptor is the next launch's
    else:
        _close_all((launched.pidfd, launched.result_fd, *launched.output_fds))
        launched.listener.close()
        launched.channel.close()
    launched.tree.stop()


def close_retired(fds: Optional[Iterable[int]] = None) -> None:
    """Close retired descriptors: ``fds`` (those a launch handed its child to close), else all."""
    for fd in list(_retired) if fds is None else fds:
        try:
            _retired.remove(fd)
        except ValueError:
            continue  # closed already
        _close_all((fd,))


def _close_all(fds: Iterable[int]) -> None:
    for fd in fds:
        if fd >= 0:
            try:
                os.close(fd)
            except OSError:
                pass


atexit.register(close_retired)


def exec_target(
    argv: Iterable[str], cwd: Optional[str], env: Optional[dict[str, str]]
) -> Callable[[int], None]:
    args = list(argv)
    # Resolve the program here, once: execvp would try every PATH entry, one execve event each.
    search_path = (env or os.environ).get("PATH", os.defpath)
    program = args[0] if "/" in args[0] else (shutil.which(args[0], path=search_path) or args[0])

    def run(result_fd: int) -> None:
        try:
            if cwd is not None:
                os.chdir(cwd)
            os.execve(program, args, os.environ if env is None else env)
        except OSError as exc:
            os.write(result_fd, f"{exc.strerror} (errno {exc.errno})".encode())
            os._exit(127)

    return run
