"""Network policy through the marker, strict mode and audit mode, against live loopback listeners."""

from __future__ import annotations

import os
import time

import pytest


def _settle(listener, n):  # the count must stay at n: a denied connection must never show up late
    got = listener.wait_received(n)
    time.sleep(0.1)
    return list(listener.received) if len(got) == n else got


def test_marker_allows_inside_denies_outside_with_positive_control(pytester, client_module, inside, outside):
    pytester.makepyfile(
        test_inner=f"""
        import errno, os, pytest
        from netclient import talk

        @pytest.mark.sandbox
        def test_inside():
            assert talk("127.0.0.1", {inside.port}) == b"pong\\n"

        @pytest.mark.sandbox(net=["127.0.0.1"])
        def test_outside_denied():
            assert talk("127.0.0.2", {outside.port}, b"denied\\n") == errno.EACCES

        @pytest.mark.sandbox(net=["127.0.0.2:{outside.port}"])
        def test_outside_allowed_when_listed():
            assert talk("127.0.0.2", {outside.port}, b"control\\n") == b"pong\\n"

        @pytest.mark.sandbox(net=[])
        def test_no_network_at_all():
            assert talk("127.0.0.1", {inside.port}, b"none\\n") == errno.EACCES
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=4)
    assert _settle(inside, 1) == [b"hello\n"]
    assert _settle(outside, 1) == [b"control\n"]


def test_ini_sandlock_net_is_the_default_of_unmarked_tests(pytester, client_module, inside, outside):
    pytester.makeini("[pytest]\nsandlock_net =\n    127.0.0.1\n")
    pytester.makepyfile(
        test_inner=f"""
        import errno
        from netclient import talk

        def test_fixture_sandboxes(sandlock_policy):
            assert talk("127.0.0.2", {outside.port}, b"x\\n") == errno.EACCES
            assert talk("127.0.0.1", {inside.port}) == b"pong\\n"
        """
    )
    pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=1)
    assert _settle(inside, 1) == [b"hello\n"]
    assert _settle(outside, 0) == []


STRICT_SUITE = """
import errno, pytest
from netclient import talk

def test_unmarked_swallows_denial():
    talk("127.0.0.2", {out}, b"swallowed\\n")  # the error is ignored: strict must still fail the test

def test_unmarked_allowed():
    assert talk("127.0.0.1", {ins}) == b"pong\\n"

def test_expected_denial(sandlock_policy):
    assert talk("127.0.0.2", {out}, b"expected\\n") == errno.EACCES
    assert [(str(e.host), e.port) for e in sandlock_policy.denials] == [("127.0.0.2", {out})]

@pytest.mark.sandbox(enabled=False)
def test_opted_out():
    assert talk("127.0.0.2", {out}, b"optout\\n") == b"pong\\n"
"""


def test_strict_fails_swallowed_denial_and_names_it(pytester, client_module, inside, outside):
    pytester.makeini("[pytest]\nsandlock_net = 127.0.0.1\n")
    pytester.makepyfile(test_inner=STRICT_SUITE.format(out=outside.port, ins=inside.port))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--sandlock-strict", "-rf")
    result.assert_outcomes(passed=3, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*sandlock strict: the test was denied 1 operation(s):*",
            f"*connect tcp 127.0.0.2:{outside.port} pid * denied (EACCES*",
            "FAILED test_inner.py::test_unmarked_swallows_denial*",
        ]
    )
    assert _settle(inside, 1) == [b"hello\n"]
    assert _settle(outside, 1) == [b"optout\n"]


def test_without_strict_the_same_suite_passes(pytester, client_module, inside, outside):
    pytester.makeini("[pytest]\nsandlock_net = 127.0.0.1\n")
    pytester.makepyfile(test_inner=STRICT_SUITE.format(out=outside.port, ins=inside.port))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=4)
    # Unmarked tests are not sandboxed without strict/audit: the swallowed connection reached the listener.
    assert sorted(_settle(outside, 2)) == [b"optout\n", b"swallowed\n"]


def test_strict_ini_twin(pytester, client_module, inside, outside):
    pytester.makeini("[pytest]\nsandlock_strict = true\nsandlock_net = 127.0.0.1\n")
    pytester.makepyfile(test_inner=STRICT_SUITE.format(out=outside.port, ins=inside.port))
    pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=3, failed=1)


def test_audit_denies_nothing_and_lists_destinations_programs_files(
    pytester, client_module, inside, outside, local_ip_listener, outside_dir
):
    far = local_ip_listener
    pytester.makepyfile(
        test_inner=f"""
        import subprocess, pytest
        from netclient import talk

        @pytest.mark.sandbox(net=["127.0.0.1"])
        def test_would_be_denied():
            assert talk("127.0.0.2", {outside.port}, b"audited\\n") == b"pong\\n"

        def test_beyond_loopback():
            assert talk("{far.host}", {far.port}, b"far\\n") == b"pong\\n"

        def test_runs_program_and_writes(tmp_path):
            assert subprocess.run(["/bin/echo", "audit-me"], capture_output=True).stdout == b"audit-me\\n"
            (tmp_path / "temp-is-not-listed").write_text("x")
            with open("{outside_dir}/written-outside.txt", "w") as f:
                f.write("x")

        def test_quiet():
            assert talk("127.0.0.1", {inside.port}) == b"pong\\n"
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--sandlock-audit")
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines(
        [
            "*= sandlock audit =*",
            "test_inner.py::test_beyond_loopback:",
            f"    reached: {far.host}:{far.port} (tcp)",
            "test_inner.py::test_runs_program_and_writes:",
            "    ran: /bin/echo audit-me",
            f"    wrote: {outside_dir}/written-outside.txt*",
            "4 test(s) audited, 2 listed",
        ]
    )
    out = result.stdout.str()
    assert "temp-is-not-listed" not in out
    assert "test_quiet:" not in out and "test_would_be_denied:" not in out
    assert _settle(outside, 1) == [b"audited\n"]
    assert _settle(far, 1) == [b"far\n"]
    assert os.path.exists(f"{outside_dir}/written-outside.txt")


@pytest.mark.parametrize("flag", ["--sandlock-strict", "--sandlock-audit"])
def test_unsandboxed_tests_do_not_fork_and_sandboxed_do(pytester, flag):
    pytester.makeconftest(
        """
        import os, pytest
        @pytest.fixture(scope="session")
        def session_pid():
            return os.getpid()
        """
    )
    pytester.makepyfile(
        test_inner="""
        import os, pytest

        def test_plain(session_pid):
            assert os.getpid() == session_pid

        @pytest.mark.sandbox
        def test_marked(session_pid):
            assert os.getpid() != session_pid

        @pytest.mark.sandbox(enabled=False)
        def test_disabled(session_pid):
            assert os.getpid() == session_pid
        """
    )
    pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=3)
    # Under strict/audit every test is sandboxed except the opted-out one.
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", flag)
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(["FAILED test_inner.py::test_plain*"])


def test_a_unix_rule_opens_a_fixtures_abstract_socket(pytester):
    """A session fixture's abstract-socket server (bound in the pytest process, outside every sandbox)
    is out of reach of a strict test, unless its marker (or ini sandlock_net) names it with a unix:@
    rule. The server thread records what it received, and the last test checks it in the pytest process
    (found running anyio's suite, whose fixtures serve on abstract names)."""
    name = f"sandlock-plugin-{os.getpid()}-{os.urandom(4).hex()}"
    pytester.makeconftest(
        f"""
        import socket, threading, pytest

        RECEIVED = []

        @pytest.fixture(scope="session")
        def server():
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.bind("\\0{name}")
            sock.listen(8)

            def serve():
                while True:
                    try:
                        conn, _ = sock.accept()
                    except OSError:
                        return
                    with conn:
                        RECEIVED.append(conn.recv(100))
                        conn.sendall(b"pong")

            threading.Thread(target=serve, daemon=True).start()
            yield "\\0{name}"
            sock.close()
        """
    )
    pytester.makepyfile(
        test_inner="""
        import socket, time, pytest
        import conftest

        def talk(address, payload):
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.connect(address)
                sock.sendall(payload)
                return sock.recv(100)

        @pytest.mark.sandbox(net=["127.0.0.1", "unix:@NAME"])
        def test_named(server):
            assert talk(server, b"named") == b"pong"

        def test_not_named(server):
            try:
                talk(server, b"not named")
            except PermissionError:
                pass  # swallowed: strict mode still fails the test

        def test_what_the_server_got():
            time.sleep(0.2)
            assert conftest.RECEIVED == [b"named"]
        """.replace("NAME", name)
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--sandlock-strict")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*test_not_named*",
            "sandlock strict: the test was denied 1 operation(s):",
            "  connect unix @sandlock-plugin-* denied"
            " (EACCES: abstract unix socket not created in this sandbox)",
        ]
    )
