"""Processes under ``Sandbox``: exec events, limits, timeouts, tree cleanup, ``run`` and ``call`` results."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from sandbox_helpers import TcpListener, only, pid_alive, tcp_send

from pytest_sandlock.engine.errors import ChildException, SandboxCrash
from pytest_sandlock.engine.policy import Policy, SyscallCategory
from pytest_sandlock.engine.sandbox import Sandbox

NET = ["127.0.0.1"]


# --------------------------------------------------------------------------------------------- exec events


def test_exec_argv_events_from_call() -> None:
    def body() -> list[object]:
        done = subprocess.run(["/bin/echo", "marker-one", "two words"], capture_output=True)
        return [os.getpid(), done.stdout.decode()]

    result = Sandbox(Policy(net=NET)).call(body)
    root, out = result.value
    assert out == "marker-one two words\n"
    event = only(result.events, syscall="execve")
    assert event.category is SyscallCategory.PROCESS
    assert event.argv == ("/bin/echo", "marker-one", "two words")
    assert event.argv_contains("marker-one") and event.argv_contains("two w")
    assert not event.argv_contains("absent")
    assert event.path == "/bin/echo"
    assert event.parent_pid == root and event.pid != root and event.denied is False
    # without a process limit, process creation is not supervised (a round trip per launch saved)
    assert not any(e.syscall in ("fork", "vfork", "clone") for e in result.events)


def test_exec_argv_read_exactly_whatever_its_size() -> None:
    """The supervisor reads argv in batches (first bytes of every string at once, then the rest of
    the long ones, pointer tables past their first page): long and numerous arguments must come out
    whole, in order."""
    args = ["/bin/true", "x" * 5000, "", *[f"arg-{i}-" + "y" * (i % 300) for i in range(200)], "é-ünï"]

    def body() -> int:
        subprocess.run(args, check=True)
        return os.getpid()

    result = Sandbox(Policy(net=NET)).call(body)
    event = only(result.events, syscall="execve")
    assert event.argv == tuple(args)
    assert (event.path, event.parent_pid) == ("/bin/true", result.value)


def test_exec_from_a_thread_is_recorded_with_the_process_ids() -> None:
    """An exec'ing thread's tid differs from its process id; the event carries the process's."""

    def body() -> list[int]:
        out: list[int] = []

        def run() -> None:
            out.append(subprocess.run(["/bin/true", "from-thread"]).returncode)

        worker = threading.Thread(target=run)
        worker.start()
        worker.join()
        return [os.getpid(), *out]

    result = Sandbox(Policy(net=NET)).call(body)
    root, code = result.value
    event = only(result.events, syscall="execve")
    assert code == 0 and event.argv == ("/bin/true", "from-thread")
    assert event.parent_pid == root and event.pid != root


def test_fork_family_events_recorded_under_a_process_limit() -> None:
    def body() -> int:
        subprocess.run(["/bin/true"], check=True)
        return os.getpid()

    result = Sandbox(Policy(net=NET, max_processes=50)).call(body)
    root = result.value
    assert any(
        e.category is SyscallCategory.PROCESS and e.syscall in ("fork", "vfork", "clone") and e.pid == root
        for e in result.events
    )


def test_run_returns_code_output_and_exec_events() -> None:
    result = Sandbox(Policy(net=NET)).run(
        ["/bin/sh", "-c", "echo out-text; echo err-text >&2; /bin/true exec-marker; exit 3"]
    )
    assert (result.returncode, result.stdout, result.stderr, result.timed_out) == (
        3,
        b"out-text\n",
        b"err-text\n",
        False,
    )
    argvs = [e.argv for e in result.events if e.syscall == "execve"]
    assert argvs[0] == ("/bin/sh", "-c", "echo out-text; echo err-text >&2; /bin/true exec-marker; exit 3")
    marker = [e for e in result.events if e.argv_contains("exec-marker")]
    assert len(marker) == 2  # the shell's own argv and /bin/true's
    true_exec = only(marker, path="/bin/true")
    assert true_exec.argv == ("/bin/true", "exec-marker")


def test_run_cwd_env_and_denied_connect(
    tcp_inside: TcpListener, tcp_outside: TcpListener, tmp_path: Path
) -> None:
    code = (
        "import os, socket, sys\n"
        "print(os.getcwd(), os.environ['PROBE'])\n"
        "for port, host in ((int(sys.argv[1]), '127.0.0.1'), (int(sys.argv[2]), '127.0.0.2')):\n"
        "    s = socket.socket()\n"
        "    try:\n"
        "        s.connect((host, port)); s.sendall(b'run'); print('ok')\n"
        "    except OSError as e:\n"
        "        print(e.errno)\n"
    )
    env = {"PROBE": "env-value", "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    result = Sandbox(Policy(net=NET)).run(
        [sys.executable, "-c", code, str(tcp_inside.port), str(tcp_outside.port)], cwd=str(tmp_path), env=env
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode().split("\n") == [f"{tmp_path} env-value", "ok", str(errno.EACCES), ""]
    assert tcp_inside.received() == [b"run"]
    assert tcp_outside.received() == []
    assert [(e.port, e.denied) for e in result.events if e.protocol == "tcp"] == [
        (tcp_inside.port, False),
        (tcp_outside.port, True),
    ]


def test_run_missing_program() -> None:
    result = Sandbox(Policy(net=NET)).run(["/nonexistent/program-xyz"])
    assert result.returncode == 127
    assert b"cannot execute /nonexistent/program-xyz" in result.stderr


# --------------------------------------------------------------------------------------------- max_processes


def _fork_until_refused(count: int) -> list[object]:
    """Fork ``count`` children that wait on a pipe; the result of each fork, then release them."""
    r, w = os.pipe()
    results: list[object] = []
    kids = []
    for _ in range(count):
        try:
            pid = os.fork()
        except OSError as exc:
            results.append(exc.errno)
            continue
        if pid == 0:
            os.close(w)
            os.read(r, 1)
            os._exit(0)
        kids.append(pid)
        results.append("forked")
    os.close(w)
    for pid in kids:
        os.waitpid(pid, 0)
    return results


def test_max_processes_eagain_beyond_limit() -> None:
    result = Sandbox(Policy(net=NET, max_processes=3)).call(_fork_until_refused, 3)
    # the root counts: root + 2 children, the third fork is refused
    assert result.value == ["forked", "forked", errno.EAGAIN]
    denied = only(result.events, denied=True)
    assert denied.category is SyscallCategory.PROCESS
    assert denied.syscall in ("clone", "fork", "vfork")
    assert (denied.errno, denied.reason) == (errno.EAGAIN, "max_processes=3 reached")
    # positive control: without the limit all three forks succeed
    assert Sandbox(Policy(net=NET)).call(_fork_until_refused, 3).value == ["forked"] * 3


def test_max_processes_counts_live_processes_only() -> None:
    def body() -> list[object]:
        out = []
        for _ in range(4):  # sequential: each child is reaped before the next fork
            pid = os.fork()
            if pid == 0:
                os._exit(0)
            out.append(os.waitpid(pid, 0)[1])
        return out

    assert Sandbox(Policy(net=NET, max_processes=2)).call(body).value == [0, 0, 0, 0]


def test_subprocess_refused_beyond_limit() -> None:
    def body() -> object:
        try:
            subprocess.run(["/bin/true"])
            return "ran"
        except OSError as exc:
            return exc.errno

    assert Sandbox(Policy(net=NET, max_processes=1)).call(body).value == errno.EAGAIN
    assert Sandbox(Policy(net=NET, max_processes=2)).call(body).value == "ran"


def test_threads_are_not_processes() -> None:
    def body() -> int:
        threads = [threading.Thread(target=time.sleep, args=(0.01,)) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return len(threads)

    result = Sandbox(Policy(net=NET, max_processes=1)).call(body)
    assert result.value == 4
    assert result.denials == []


def test_multiprocessing_works_inside() -> None:
    def body() -> list[object]:
        import multiprocessing

        queue: multiprocessing.Queue = multiprocessing.Queue()
        proc = multiprocessing.Process(target=queue.put, args=("from mp child",))
        proc.start()
        value = queue.get(timeout=10)
        proc.join(10)
        return [value, proc.exitcode]

    result = Sandbox(Policy(net=NET)).call(body)
    assert result.value == ["from mp child", 0]
    assert result.denials == []


# --------------------------------------------------------------------------------------------- max_memory


def test_max_memory_limits_allocations() -> None:
    def allocate(mib: int) -> object:
        try:
            block = bytearray(mib << 20)
            return len(block) >> 20
        except MemoryError:
            return "MemoryError"

    box = Sandbox(Policy(net=NET, max_memory="64M"))
    assert box.call(allocate, 16).value == 16
    assert box.call(allocate, 256).value == "MemoryError"
    # positive control: the same allocation without a limit
    assert Sandbox(Policy(net=NET)).call(allocate, 256).value == 256


def test_max_memory_applies_to_executed_programs() -> None:
    code = (
        "import sys\n"
        "try:\n"
        "    b = bytearray(int(sys.argv[1]) << 20); print('ok')\n"
        "except MemoryError:\n"
        "    print('MemoryError')"
    )
    box = Sandbox(Policy(net=NET, max_memory="128M"))
    small = box.run([sys.executable, "-c", code, "8"])
    big = box.run([sys.executable, "-c", code, "512"])
    assert (small.returncode, small.stdout) == (0, b"ok\n")
    assert (big.returncode, big.stdout) == (0, b"MemoryError\n")


# ------------------------------------------------------------------------------------ timeouts, cleanup


def _spawn_detached_grandchild(pid_file: str) -> None:
    """setsid + double fork: a grandchild in its own session, re-parented away from the root."""
    pid = os.fork()
    if pid == 0:
        os.setsid()
        if os.fork() == 0:
            with open(pid_file + ".tmp", "w") as fh:
                fh.write(str(os.getpid()))
            os.rename(pid_file + ".tmp", pid_file)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            while True:
                time.sleep(1)
        os._exit(0)
    os.waitpid(pid, 0)
    while not os.path.exists(pid_file):
        time.sleep(0.01)


@pytest.mark.slow
def test_timeout_kills_detached_grandchild(tmp_path: Path) -> None:
    pid_file = str(tmp_path / "grandchild.pid")

    def body() -> None:
        _spawn_detached_grandchild(pid_file)
        time.sleep(60)

    start = time.monotonic()
    with pytest.raises(SandboxCrash, match="timeout") as info:
        Sandbox(Policy(net=NET, timeout=1)).call(body)
    assert time.monotonic() - start < 5
    assert "timeout" in info.value.reason
    grandchild = int(Path(pid_file).read_text())
    assert grandchild != os.getpid()
    assert not pid_alive(grandchild)
    assert not os.path.exists(f"/proc/{grandchild}")  # killed and reaped, not a zombie


def test_grandchild_left_running_is_killed(tmp_path: Path) -> None:
    pid_file = str(tmp_path / "leftover.pid")

    def body() -> list[object]:
        _spawn_detached_grandchild(pid_file)
        sleeper = subprocess.Popen(["sleep", "60"], start_new_session=True)
        gc = int(Path(pid_file).read_text())
        return [gc, sleeper.pid, pid_alive(gc), pid_alive(sleeper.pid)]

    start = time.monotonic()
    gc, sleeper, gc_was_alive, sleeper_was_alive = Sandbox(Policy(net=NET)).call(body).value
    assert time.monotonic() - start < 5
    assert gc_was_alive and sleeper_was_alive  # positive control: they were running
    for pid in (gc, sleeper):
        assert not os.path.exists(f"/proc/{pid}"), f"process {pid} outlived its sandbox"


def test_run_timeout(tmp_path: Path) -> None:
    start = time.monotonic()
    result = Sandbox(Policy(net=NET)).run(["/bin/sh", "-c", "echo started; exec sleep 60"], timeout=0.5)
    assert time.monotonic() - start < 4
    assert result.timed_out is True
    assert result.returncode == -signal.SIGKILL
    assert result.stdout == b"started\n"


def test_fixture_children_of_the_parent_are_not_killed() -> None:
    """A process the pytest process started (a fixture's server) is not part of the sandbox tree."""
    server = subprocess.Popen(["sleep", "30"])
    try:
        Sandbox(Policy(net=NET)).call(_fork_until_refused, 1)
        assert server.poll() is None
    finally:
        server.kill()
        server.wait()


# --------------------------------------------------------------------------------------------- call results


def test_call_exception_comes_back_with_traceback() -> None:
    def body() -> None:
        raise KeyError("missing-key")

    with pytest.raises(ChildException) as info:
        Sandbox(Policy(net=NET)).call(body)
    assert info.value.exc_type == "KeyError"
    assert "missing-key" in info.value.message
    assert "raise KeyError" in info.value.traceback_text


def test_call_kwargs_and_plain_data() -> None:
    def body(a: int, *, b: str) -> dict[str, object]:
        return {"a": a, "b": b, "t": (1, 2.5, None, True), "s": {1}, "bytes": b"\x00"}

    assert Sandbox(Policy(net=NET)).call(body, 1, b="x").value == {
        "a": 1,
        "b": "x",
        "t": (1, 2.5, None, True),
        "s": {1},
        "bytes": b"\x00",
    }


def test_call_non_plain_return_value_refused() -> None:
    with pytest.raises(Exception, match="only plain data"):
        Sandbox(Policy(net=NET)).call(lambda: Path("/"))


def test_call_child_killed_by_signal() -> None:
    with pytest.raises(SandboxCrash, match="SIGKILL"):
        Sandbox(Policy(net=NET)).call(lambda: os.kill(os.getpid(), signal.SIGKILL))


def test_call_child_exits_without_result() -> None:
    with pytest.raises(SandboxCrash, match="status 5"):
        Sandbox(Policy(net=NET)).call(lambda: os._exit(5))


# --------------------------------------------------------------------------------------------- escapes


def test_escape_syscalls_denied() -> None:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)

    def body() -> dict[str, int]:
        out = {}
        for name, nr, args in (("io_uring_setup", 425, (8, 0)), ("ptrace", 101, (16, os.getppid(), 0, 0))):
            ctypes.set_errno(0)
            rc = libc.syscall(nr, *[ctypes.c_long(a) for a in args])
            out[name] = ctypes.get_errno() if rc < 0 else 0
        return out

    assert Sandbox(Policy(net=NET)).call(body).value == {"io_uring_setup": errno.EPERM, "ptrace": errno.EPERM}


def test_sandbox_is_reusable_and_isolated(tcp_inside: TcpListener) -> None:
    box = Sandbox(Policy(net=NET))
    values = [box.call(tcp_send, *tcp_inside.addr, f"n{i}".encode()).value for i in range(3)]
    assert values == ["ok"] * 3
    assert tcp_inside.received() == [b"n0", b"n1", b"n2"]
