"""Third-party pytest plugins under ``--sandlock-strict``, serial and with ``-n 2``: pytest-cov,
pytest-timeout (signal and thread methods), pytest-asyncio."""

from __future__ import annotations

import os
import signal
import time

import pytest

MODES = {"serial": (), "xdist": ("-n", "2")}


@pytest.fixture(params=sorted(MODES))
def mode(request: pytest.FixtureRequest) -> tuple[str, ...]:
    return MODES[request.param]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for our purpose
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


# --------------------------------------------------------------------------------------------------------
# pytest-cov
# --------------------------------------------------------------------------------------------------------

COVERED_PKG = """
def in_test(x):
    if x > 0:
        return "positive"
    return "never"


def in_subprocess():
    return 42


def in_denied_write(path):
    try:
        open(path, "w")
    except OSError:
        return "denied"
    return "written"
"""

COV_TESTS = """
import subprocess, sys
from pkg import in_test, in_denied_write

def test_lines_in_the_child():
    assert in_test(1) == "positive"

def test_python_subprocess():
    out = subprocess.run(
        [sys.executable, "-c", "import pkg; print(pkg.in_subprocess())"], capture_output=True, text=True
    )
    assert out.stdout.strip() == "42", out.stderr

def test_denied_write(request):
    assert in_denied_write({path!r}) == "denied"
    if "sandlock_policy" in request.fixturenames:
        assert len(request.getfixturevalue("sandlock_policy").denials) == 1
"""


def _cov_project(pytester: pytest.Pytester, data_dir: str, denied_path: str) -> None:
    pytester.mkpydir("pkg").joinpath("__init__.py").write_text(COVERED_PKG)
    pytester.makepyfile(test_cov=COV_TESTS.format(path=denied_path))
    # The data file lives outside every directory the sandbox lets a test write (pytester's own directory
    # is under the system temp dir, which is writable): the child's data must still get there.
    # coverage >= 7.10 measures Python subprocesses with ``patch = subprocess`` (how pytest-cov 7 does it);
    # pytest-cov < 7 does it with its own .pth file and ignores that setting.
    pytester.path.joinpath(".coveragerc").write_text(
        f"[run]\nparallel = true\npatch = subprocess\ndata_file = {data_dir}/.coverage\n"
    )


# Line 5 ("never") is the only line no test runs, and 17 ("written"): line 9 runs only in the Python
# subprocess, lines 13-16 only in the child.
MISSING = "pkg/__init__.py * 2 * 5, 17"


def test_pytest_cov_counts_lines_of_sandboxed_tests_and_their_subprocesses(pytester, mode, outside_dir):
    pytest.importorskip("pytest_cov")
    _cov_project(pytester, outside_dir, f"{outside_dir}/denied.txt")
    pytester.makeconftest(
        "import pytest\n@pytest.fixture(autouse=True)\ndef _policy(sandlock_policy):\n    pass\n"
    )
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--sandlock-strict", "--cov=pkg", "--cov-report=term-missing", *mode
    )
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines([MISSING])
    assert "coverage data" not in result.stdout.str()  # no warning from the bridge
    assert sorted(os.listdir(outside_dir)) == [".coverage"]  # combined; the write was denied


def test_pytest_cov_positive_control_without_the_sandbox(pytester, outside_dir):
    """The same suite with nothing sandboxed reports the same lines."""
    pytest.importorskip("pytest_cov")
    _cov_project(pytester, outside_dir, "/nonexistent-dir/denied.txt")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--cov=pkg", "--cov-report=term-missing")
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines([MISSING])


# --------------------------------------------------------------------------------------------------------
# pytest-timeout
# --------------------------------------------------------------------------------------------------------

TIMEOUT_TESTS = """
import os, subprocess, time, pytest

def test_hangs(tmp_path):
    sleeper = subprocess.Popen(["sleep", "60"])
    with open({pidfile!r}, "w") as f:
        f.write(f"{{os.getpid()}} {{sleeper.pid}}")
    time.sleep(60)

def test_after():
    pass
"""


@pytest.mark.parametrize("method", ["signal", "thread"])
def test_pytest_timeout_kills_the_child_tree_and_fails_the_test(pytester, mode, method, tmp_path):
    pytest.importorskip("pytest_timeout")
    pidfile = str(tmp_path / "pids")
    pytester.makepyfile(test_hang=TIMEOUT_TESTS.format(pidfile=pidfile))
    started = time.monotonic()
    result = pytester.runpytest_subprocess(
        "-p",
        "no:cacheprovider",
        "--sandlock-strict",
        "--timeout=2",
        f"--timeout-method={method}",
        *mode,
        timeout=60,
    )
    elapsed = time.monotonic() - started
    result.assert_outcomes(failed=1, passed=1)
    result.stdout.fnmatch_lines(
        ["FAILED test_hang.py::test_hangs - Failed: Timeout (>2.0s) from pytest-timeout."]
    )
    assert "crashed" not in result.stdout.str()  # the thread method no longer ends the pytest process
    assert elapsed < 30
    with open(pidfile) as fh:
        child, sleeper = (int(x) for x in fh.read().split())
    deadline = time.monotonic() + 5
    while (_alive(child) or _alive(sleeper)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child) and not _alive(sleeper)


def test_pytest_timeout_in_fixture_setup_is_pytest_timeouts_own(pytester):
    """Only the call phase is sandboxed: a timeout in setup is handled by pytest-timeout as usual."""
    pytest.importorskip("pytest_timeout")
    pytester.makepyfile(
        test_setup="""
        import time, pytest

        @pytest.fixture
        def slow():
            time.sleep(30)

        def test_slow_setup(slow):
            pass

        def test_after():
            pass
        """
    )
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--sandlock-strict", "--timeout=1", timeout=60
    )
    result.assert_outcomes(errors=1, passed=1)
    result.stdout.fnmatch_lines(["*Failed: Timeout (>1.0s) from pytest-timeout.*"])


def test_sigint_during_a_sandboxed_call_kills_the_child_tree(pytester, tmp_path):
    pidfile = tmp_path / "pids"
    pytester.makepyfile(test_int=TIMEOUT_TESTS.format(pidfile=str(pidfile)))
    proc = pytester.popen(
        [*pytester._getpytestargs(), "-p", "no:cacheprovider", "--sandlock-strict", "-q"],
        stdout=-1,
        stderr=-2,
        # A run started in the background inherits an ignored SIGINT; Python then installs no handler.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 30
    while not (pidfile.exists() and pidfile.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    child, sleeper = (int(x) for x in pidfile.read_text().split())
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=30)
    out = proc.stdout.read()
    assert b"KeyboardInterrupt" in out
    assert proc.returncode == 2
    deadline = time.monotonic() + 5
    while (_alive(child) or _alive(sleeper)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child) and not _alive(sleeper)  # the grandchild too: it has no parent-death signal


# --------------------------------------------------------------------------------------------------------
# pytest-asyncio
# --------------------------------------------------------------------------------------------------------


def test_async_tests_run_sandboxed(pytester, mode, inside, outside):
    pytest.importorskip("pytest_asyncio")
    pytester.makeini(
        "[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n"
        "sandlock_net = 127.0.0.1\n"
    )
    pytester.makepyfile(
        test_async=f"""
        import asyncio, errno, os, pytest

        PARENT = os.getpid()

        @pytest.fixture
        async def echo_server():
            async def handle(reader, writer):
                writer.write(b"echo:" + await reader.readline())
                await writer.drain()
                writer.close()
            server = await asyncio.start_server(handle, "127.0.0.1", 0)
            yield server.sockets[0].getsockname()[1]
            server.close()

        async def talk(host, port):
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(b"hello\\n")
            await writer.drain()
            data = await reader.readline()
            writer.close()
            return data

        async def test_loopback_listener():
            assert os.getpid() != PARENT  # the coroutine runs in the sandboxed child
            assert await talk("127.0.0.1", {inside.port}) == b"pong\\n"

        async def test_server_from_async_fixture(echo_server):
            assert await talk("127.0.0.1", echo_server) == b"echo:hello\\n"

        async def test_outside_fails_strict():
            with pytest.raises(PermissionError):
                await talk("127.0.0.2", {outside.port})

        async def test_gather():
            results = await asyncio.gather(*(asyncio.sleep(0.01, i) for i in range(5)))
            assert results == list(range(5))
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--sandlock-strict", *mode)
    result.assert_outcomes(passed=3, failed=1)
    result.stdout.fnmatch_lines(
        ["*sandlock strict: the test was denied 1 operation(s):*", f"*127.0.0.2:{outside.port}*"]
    )
    assert inside.wait_received(1) == [b"hello\n"]
    time.sleep(0.1)
    assert outside.received == []


def test_a_uvloop_loop_made_by_a_fixture_fails_its_test_and_the_session_goes_on(pytester):
    """libuv (under uvloop) keeps an io_uring ring in each loop, memory the kernel shares with every
    fork. A sandboxed test using a loop a fixture made had io_uring refused after libuv had written
    its submission into the shared ring: the child aborted, and so did the pytest process when the
    fixture closed the loop; the whole session died (aiohttp's suite). Now the child's copy of the
    ring is its own: that test fails, saying why, and the session goes on; a loop made in the test
    works."""
    pytest.importorskip("uvloop")
    pytester.makepyfile(
        """
        import asyncio
        import pytest
        import uvloop

        @pytest.fixture
        def fixture_loop():
            loop = uvloop.new_event_loop()
            yield loop
            loop.call_soon(loop.stop)
            loop.run_forever()  # the pytest process's loop still works after the test
            loop.close()

        def test_fixture_loop(fixture_loop):
            fixture_loop.run_until_complete(asyncio.sleep(0.01))

        def test_own_loop():
            loop = uvloop.new_event_loop()
            loop.run_until_complete(asyncio.sleep(0.01))
            loop.close()

        def test_after():
            pass
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--sandlock-strict", "-p", "no:randomly")
    assert result.ret == pytest.ExitCode.TESTS_FAILED, result.stderr.str()
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*test_fixture_loop did not finish: the child was killed by signal SIGABRT",
            "*holds io_uring rings*",
        ]
    )
