"""The sandlock_policy fixture, the marker's policy_fn and the plugin's two hooks."""

from __future__ import annotations

import time


def _settle(listener, n):
    got = listener.wait_received(n)
    time.sleep(0.1)
    return list(listener.received) if len(got) == n else got


def test_fixture_live_policy(pytester, client_module, inside, outside):
    pytester.makepyfile(
        test_inner=f"""
        import errno, subprocess, sys, pytest
        from pytest_sandlock import PolicyFnError, SyscallCategory
        from netclient import talk

        def test_events_and_denials(sandlock_policy):
            assert talk("127.0.0.1", {inside.port}) == b"pong\\n"
            connects = [e for e in sandlock_policy.events if e.syscall == "connect"]
            assert [(str(e.host), e.port, e.denied, e.category) for e in connects] == [
                ("127.0.0.1", {inside.port}, False, SyscallCategory.NETWORK)
            ]
            assert sandlock_policy.denials == []

        def test_subprocess_events_are_live(sandlock_policy):
            subprocess.run(["/bin/true"], check=True)
            assert any(e.argv_contains("/bin/true") for e in sandlock_policy.events)

        def test_restrict_network_then_grant_raises(sandlock_policy):
            sandlock_policy.restrict_network(["127.0.0.2"])
            assert talk("127.0.0.1", {inside.port}, b"restricted\\n") in (errno.EACCES, errno.EPERM)
            assert talk("127.0.0.2", {outside.port}, b"still allowed\\n") == b"pong\\n"
            assert len(sandlock_policy.denials) == 1
            with pytest.raises(PolicyFnError):
                sandlock_policy.grant_network(["127.0.0.1"])

        def test_restrict_network_to_nothing(sandlock_policy):
            sandlock_policy.restrict_network([])
            assert talk("127.0.0.2", {outside.port}, b"nothing\\n") in (errno.EACCES, errno.EPERM)
            assert sandlock_policy.current().allowed_ips == frozenset()
            assert [e.port for e in sandlock_policy.denials] == [{outside.port}]

        @pytest.fixture
        def after_call(sandlock_policy):
            yield
            # After the call phase the fixture still answers with what the call phase recorded.
            assert any(e.syscall == "connect" for e in sandlock_policy.events)

        def test_events_visible_in_teardown(after_call):
            assert talk("127.0.0.1", {inside.port}, b"teardown\\n") == b"pong\\n"
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--sandlock-strict")
    result.assert_outcomes(passed=5)
    assert sorted(_settle(inside, 2)) == [b"hello\n", b"teardown\n"]
    assert _settle(outside, 1) == [b"still allowed\n"]


def test_policy_fn_and_hooks(pytester, client_module, inside, outside):
    pytester.makeconftest(
        f"""
        import errno
        from pytest_sandlock import Verdict

        def pytest_sandlock_policy(item, policy):
            if "widened" in item.name:
                return policy.replace(net=["127.0.0.1", "127.0.0.2:{outside.port}"])
            return None

        def pytest_sandlock_event(item, event, ctx):
            if "refused" in item.name and event.port == {inside.port}:
                return Verdict.deny_with(errno.ECONNREFUSED)
            return None
        """
    )
    pytester.makepyfile(
        test_inner=f"""
        import errno, pytest
        from netclient import talk

        @pytest.mark.sandbox(net=["127.0.0.1"])
        def test_widened_by_hook():
            assert talk("127.0.0.2", {outside.port}, b"widened\\n") == b"pong\\n"

        @pytest.mark.sandbox(net=["127.0.0.1"])
        def test_narrow_unchanged():
            assert talk("127.0.0.2", {outside.port}, b"not widened\\n") == errno.EACCES

        @pytest.mark.sandbox
        def test_refused_by_hook():
            assert talk("127.0.0.1", {inside.port}, b"refused\\n") == errno.ECONNREFUSED

        def deny_inside(event, ctx):
            return event.port == {inside.port}

        @pytest.mark.sandbox(policy_fn=deny_inside)
        def test_denied_by_policy_fn():
            assert talk("127.0.0.1", {inside.port}, b"policy_fn\\n") == errno.EPERM
            assert talk("127.0.0.2", {outside.port}, b"policy_fn control\\n") == b"pong\\n"

        def broken(event, ctx):
            raise RuntimeError("callback bug")

        @pytest.mark.sandbox(policy_fn=broken)
        def test_raising_policy_fn_denies():
            assert talk("127.0.0.1", {inside.port}, b"broken\\n") == errno.EPERM

        @pytest.mark.sandbox(net=["127.0.0.1"], policy_fn=lambda event, ctx: None)
        def test_callback_cannot_widen():
            assert talk("127.0.0.2", {outside.port}, b"callback\\n") == errno.EACCES

        @pytest.mark.sandbox
        def test_control():
            assert talk("127.0.0.1", {inside.port}) == b"pong\\n"
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=7)
    result.stdout.fnmatch_lines(["*PytestWarning: sandlock: policy_fn raised RuntimeError: callback bug*"])
    assert _settle(inside, 1) == [b"hello\n"]
    assert sorted(_settle(outside, 2)) == [b"policy_fn control\n", b"widened\n"]
