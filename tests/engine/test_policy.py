"""Tests of the policy model (pytest_sandlock.engine.policy)."""

from __future__ import annotations

import enum
import errno
import ipaddress
import json
import os
import pathlib
import pickle
from typing import Any

import pytest

from pytest_sandlock.engine.errors import PolicyError, PolicyFnError
from pytest_sandlock.engine.policy import (
    LOOPBACK_DEFAULT,
    LivePolicy,
    Policy,
    PolicyContext,
    SyscallCategory,
    SyscallEvent,
    Verdict,
    coerce_verdict,
    parse_size,
)

ip = ipaddress.ip_address
net = ipaddress.ip_network


# =========================================================================================================
# SyscallEvent
# =========================================================================================================


def exec_event() -> SyscallEvent:
    return SyscallEvent(
        syscall="execve",
        category=SyscallCategory.PROCESS,
        pid=1,
        parent_pid=0,
        argv=("python3", "-c", "print(1)"),
    )


def test_category_values() -> None:
    assert [c.value for c in SyscallCategory] == ["file", "network", "process", "memory"]


def test_event_argv_contains() -> None:
    event = exec_event()
    assert event.argv_contains("python3")
    assert event.argv_contains("-c")
    assert event.argv_contains("print")  # substring, as in the seed
    assert not event.argv_contains("ruby")
    assert event.category is SyscallCategory.PROCESS


def test_event_argv_contains_none() -> None:
    event = SyscallEvent("openat", SyscallCategory.FILE, 1)
    assert not event.argv_contains("anything")


def test_event_field_order() -> None:
    event = SyscallEvent("connect", SyscallCategory.NETWORK, 5, 4, ip("1.2.3.4"), 80, None, None, True)
    assert (event.parent_pid, event.host, event.port, event.denied) == (4, ip("1.2.3.4"), 80, True)


def test_event_is_frozen_and_hashable() -> None:
    event = exec_event()
    with pytest.raises(AttributeError):
        event.pid = 2  # type: ignore[misc]
    assert hash(event) == hash(exec_event())


def test_event_accepts_argv_list_and_host_string() -> None:
    event = SyscallEvent("x", SyscallCategory.PROCESS, 1, host="::1", argv=["a", "b"])  # type: ignore[arg-type]
    assert event.argv == ("a", "b")
    assert event.host == ip("::1")


def full_event() -> SyscallEvent:
    return SyscallEvent(
        syscall="connect",
        category=SyscallCategory.NETWORK,
        pid=123,
        parent_pid=100,
        host=ip("2001:db8::1"),
        port=443,
        size=None,
        argv=None,
        denied=True,
        path=None,
        errno=errno.EACCES,
        protocol="tcp",
        reason="not in net policy",
        unix_path=None,
    )


def test_event_to_dict_is_json_able() -> None:
    d = full_event().to_dict()
    assert json.loads(json.dumps(d)) == d
    assert d["category"] == "network"
    assert d["host"] == "2001:db8::1"
    assert set(d) == {
        "syscall", "category", "pid", "parent_pid", "host", "port", "size", "argv",
        "denied", "path", "errno", "protocol", "reason", "unix_path",
    }  # fmt: skip


@pytest.mark.parametrize(
    "event",
    [
        full_event(),
        exec_event(),
        SyscallEvent("openat", SyscallCategory.FILE, 7, path="/src/x.py", denied=True, errno=errno.EACCES),
        SyscallEvent("mmap", SyscallCategory.MEMORY, 3, size=4096),
        SyscallEvent("connect", SyscallCategory.NETWORK, 3, protocol="unix", unix_path="@abstract"),
    ],
)
def test_event_round_trip(event: SyscallEvent) -> None:
    d = event.to_dict()
    assert SyscallEvent.from_dict(json.loads(json.dumps(d))) == event
    if event.argv is not None:
        assert d["argv"] == list(event.argv)


def test_event_from_report_dict_with_missing_optional_keys() -> None:
    report_entry = {
        "syscall": "connect",
        "category": "network",
        "pid": 9,
        "parent_pid": None,
        "host": "127.0.0.2",
        "port": 80,
        "argv": None,
        "path": None,
        "denied": False,
    }
    event = SyscallEvent.from_dict(report_entry)
    assert event.host == ip("127.0.0.2") and event.errno is None and event.category is SyscallCategory.NETWORK


def test_describe_network_denial() -> None:
    event = SyscallEvent(
        "connect",
        SyscallCategory.NETWORK,
        123,
        host=ip("127.0.0.2"),
        port=80,
        denied=True,
        errno=errno.EACCES,
        protocol="tcp",
        reason="not in net policy",
    )
    assert event.describe() == "connect tcp 127.0.0.2:80 pid 123 denied (EACCES: not in net policy)"


def test_describe_ipv6_is_bracketed() -> None:
    assert (
        full_event().describe() == "connect tcp [2001:db8::1]:443 pid 123 denied (EACCES: not in net policy)"
    )


def test_describe_exec() -> None:
    event = SyscallEvent("execve", SyscallCategory.PROCESS, 5, argv=("/bin/true",))
    assert event.describe() == "execve ['/bin/true'] pid 5"


def test_describe_file_denial() -> None:
    event = SyscallEvent("openat", SyscallCategory.FILE, 7, path="/src/x.py", denied=True, errno=errno.EACCES)
    assert event.describe() == "openat /src/x.py pid 7 denied (EACCES)"


def test_describe_unix_and_denied_without_errno() -> None:
    event = SyscallEvent("connect", SyscallCategory.NETWORK, 2, protocol="unix", unix_path="@x", denied=True)
    assert event.describe() == "connect unix @x pid 2 denied"


# =========================================================================================================
# Verdict
# =========================================================================================================


def test_verdict_constants() -> None:
    assert Verdict.ALLOW.kind == "allow" and not Verdict.ALLOW.is_deny
    assert Verdict.AUDIT.kind == "audit" and not Verdict.AUDIT.is_deny
    assert Verdict.DENY.is_deny and Verdict.DENY.errno == errno.EPERM
    assert Verdict.deny_with(errno.EPERM) == Verdict.DENY


def test_verdict_deny_with() -> None:
    verdict = Verdict.deny_with(errno.ECONNREFUSED)
    assert verdict.is_deny and verdict.errno == errno.ECONNREFUSED
    assert "ECONNREFUSED" in repr(verdict)


@pytest.mark.parametrize("bad", [0, -1, 4096, True, 1.0, "13"])
def test_verdict_deny_with_rejects_bad_errno(bad: object) -> None:
    with pytest.raises(PolicyError, match=repr(bad)):
        Verdict.deny_with(bad)  # type: ignore[arg-type]


def test_verdict_is_immutable_and_hashable() -> None:
    with pytest.raises(AttributeError):
        Verdict.ALLOW.kind = "deny"  # type: ignore[misc]
    assert len({Verdict.ALLOW, Verdict("allow"), Verdict.DENY}) == 2


def test_verdict_rejects_unknown_kind() -> None:
    with pytest.raises(PolicyError, match="'maybe'"):
        Verdict("maybe")


class Errno(enum.IntEnum):
    NOPE = errno.EACCES


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (Verdict.ALLOW, Verdict.ALLOW),
        (Verdict.AUDIT, Verdict.AUDIT),
        (Verdict.deny_with(5), Verdict.deny_with(5)),
        (None, Verdict.ALLOW),
        (0, Verdict.ALLOW),
        (False, Verdict.ALLOW),
        (True, Verdict.DENY),
        (errno.EACCES, Verdict.deny_with(errno.EACCES)),
        (1, Verdict.DENY),
        (4095, Verdict.deny_with(4095)),
        (Errno.NOPE, Verdict.deny_with(errno.EACCES)),
        ("allow", Verdict.ALLOW),
        ("AUDIT", Verdict.AUDIT),
        ("Deny", Verdict.DENY),
    ],
)
def test_coerce_verdict_valid(value: object, expected: Verdict) -> None:
    assert coerce_verdict(value) == (expected, None)


class BadRepr:
    def __repr__(self) -> str:
        raise RuntimeError("boom")


@pytest.mark.parametrize(
    "value",
    [-1, 4096, 1.0, 0.0, "", "permit", "denied", b"deny", [], object(), Verdict, BadRepr(), "x" * 1000],
)
def test_coerce_verdict_invalid_fails_closed(value: object) -> None:
    verdict, problem = coerce_verdict(value)
    assert verdict == Verdict.DENY
    assert problem is not None and problem.startswith("policy_fn returned invalid verdict")
    assert len(problem) < 300


def test_coerce_verdict_names_the_value() -> None:
    assert coerce_verdict(-1)[1] == "policy_fn returned invalid verdict -1"
    assert coerce_verdict("permit")[1] == "policy_fn returned invalid verdict 'permit'"


# =========================================================================================================
# parse_size
# =========================================================================================================


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        (0, 0),
        (1024, 1024),
        (2.0, 2),
        ("1024", 1024),
        ("512k", 512 * 1024),
        ("512K", 512 * 1024),
        ("256M", 256 * 1024**2),
        ("256MB", 256 * 1024**2),
        ("256MiB", 256 * 1024**2),
        ("1G", 1024**3),
        ("1.5G", 3 * 1024**3 // 2),
        ("2T", 2 * 1024**4),
        (" 64 m ", 64 * 1024**2),
        ("100B", 100),
        (".5K", 512),
    ],
)
def test_parse_size(value: object, expected: object) -> None:
    assert parse_size(value) == expected


@pytest.mark.parametrize(
    "value",
    [True, False, -1, -1.0, 1.5, float("inf"), "", "-1M", "1X", "M", "1 2", "1e9", "iB", "1KiBB", [1], b"1M"],
)
def test_parse_size_rejects(value: object) -> None:
    with pytest.raises(PolicyError, match="invalid size") as info:
        parse_size(value)
    assert repr(value) in str(info.value)


# =========================================================================================================
# Policy
# =========================================================================================================


def test_policy_defaults() -> None:
    policy = Policy()
    assert policy.net is None and policy.net_source is None
    assert policy.fs_read is None and policy.fs_write == () and policy.fs_deny == ()
    assert policy.max_processes is None and policy.max_memory is None and policy.timeout is None


def test_policy_normalises(tmp_path: pathlib.Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    link = tmp_path / "link"
    link.symlink_to(real)
    policy = Policy(
        net=["127.0.0.1:80"],
        fs_read=[str(tmp_path)],
        fs_write=[link, str(real / ".." / "real")],
        fs_deny=[tmp_path / "missing"],
        max_processes=4,
        max_memory="1G",
        timeout=5,
    )
    assert policy.net_source == ("127.0.0.1:80",)
    assert policy.net is not None and policy.net[0].ports == ((80, 80),)
    assert policy.fs_read == (os.path.realpath(tmp_path),)
    assert policy.fs_write == (os.path.realpath(real),)  # symlink resolved, duplicates removed
    assert policy.fs_deny == (os.path.join(os.path.realpath(tmp_path), "missing"),)
    assert policy.max_memory == 1024**3
    assert policy.timeout == 5.0 and isinstance(policy.timeout, float)


def test_policy_relative_paths_become_absolute() -> None:
    assert Policy(fs_write=["."]).fs_write == (os.path.realpath(os.getcwd()),)


def test_policy_empty_lists() -> None:
    policy = Policy(net=[], fs_read=[])
    assert policy.net == () and policy.net_source == () and policy.fs_read == ()


@pytest.mark.parametrize("field", ["fs_read", "fs_write", "fs_deny"])
def test_policy_single_path_string_is_an_error(field: str) -> None:
    kwargs: dict[str, Any] = {field: "/tmp"}
    with pytest.raises(PolicyError, match=rf"{field} must be a list.*'/tmp'"):
        Policy(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"net": "127.0.0.1"}, "'127.0.0.1'"),
        ({"net": 5}, "5"),
        ({"fs_write": [5]}, "5"),
        ({"fs_write": [""]}, "empty path"),
        ({"fs_write": [b"/tmp"]}, "b'/tmp'"),
        ({"max_processes": 0}, "max_processes.*0"),
        ({"max_processes": True}, "True"),
        ({"max_processes": 1.5}, "1.5"),
        ({"max_memory": "lots"}, "'lots'"),
        ({"timeout": 0}, "timeout.*0"),
        ({"timeout": -1.0}, "-1.0"),
        ({"timeout": float("nan")}, "nan"),
        ({"timeout": "5"}, "'5'"),
    ],
)
def test_policy_rejects_bad_arguments(kwargs: dict[str, object], needle: str) -> None:
    with pytest.raises(PolicyError, match=needle):
        Policy(**kwargs)  # type: ignore[arg-type]


def test_policy_unknown_keyword_is_type_error() -> None:
    with pytest.raises(TypeError):
        Policy(network=[])  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        Policy("127.0.0.1")  # type: ignore[call-arg]


def test_policy_generator_net_keeps_its_source() -> None:
    policy = Policy(net=(r for r in ["127.0.0.1", "::1"]))
    assert policy.net_source == ("127.0.0.1", "::1")
    assert policy.net is not None and len(policy.net) == 2


def test_policy_eq_and_hash() -> None:
    a = Policy(net=list(LOOPBACK_DEFAULT), fs_write=["/tmp"], max_memory="256M")
    b = Policy(net=("127.0.0.0/8", "::1"), fs_write=("/tmp/../tmp",), max_memory=256 * 1024**2)
    c = Policy(net=["127.0.0.0/8"], fs_write=["/tmp"], max_memory="256M")
    assert a == b and hash(a) == hash(b)
    assert a != c
    assert len({a, b, c}) == 2
    assert a != "not a policy"


def test_policy_is_immutable() -> None:
    policy = Policy()
    with pytest.raises(AttributeError):
        policy.timeout = 5
    with pytest.raises(AttributeError):
        del policy.timeout


def test_policy_repr_and_to_dict() -> None:
    policy = Policy(net=["127.0.0.1:80"], max_memory="1M")
    d = policy.to_dict()
    assert json.loads(json.dumps(d)) == d
    assert d["net"] == ["127.0.0.1:80"] and d["max_memory"] == 1024**2 and d["fs_read"] is None
    assert repr(policy).startswith("Policy(net=['127.0.0.1:80']")


def test_policy_replace() -> None:
    policy = Policy(net=["127.0.0.1"], fs_write=["/tmp"], max_memory="1M")
    changed = policy.replace(max_memory="2M", timeout=3)
    assert changed.max_memory == 2 * 1024**2 and changed.timeout == 3.0
    assert changed.net == policy.net and changed.fs_write == policy.fs_write
    assert policy.max_memory == 1024**2  # the original is untouched
    assert policy.replace() == policy
    assert policy.replace(net=None).net is None
    assert policy.replace(net=[]).net_source == ()
    with pytest.raises(PolicyError):
        policy.replace(max_memory="x")
    with pytest.raises(TypeError):
        policy.replace(bogus=1)


def test_policy_pickles() -> None:
    policy = Policy(net=["127.0.0.1:80"], fs_deny=["/etc/shadow"], max_processes=3)
    assert pickle.loads(pickle.dumps(policy)) == policy


def test_allows_network() -> None:
    assert Policy().allows_network("tcp", ip("8.8.8.8"), 53)
    assert not Policy(net=[]).allows_network("tcp", ip("127.0.0.1"), 80)
    policy = Policy(net=["tcp://127.0.0.0/8:80", "udp://[::1]:53"])
    assert policy.allows_network("tcp", ip("127.0.0.5"), 80)
    assert policy.allows_network("tcp", ip("::ffff:127.0.0.5"), 80)
    assert not policy.allows_network("udp", ip("127.0.0.5"), 80)
    assert policy.allows_network("udp", ip("::1"), 53)
    assert not policy.allows_network("tcp", ip("::1"), 53)


# =========================================================================================================
# PolicyContext (the seed's tests, translated, and more)
# =========================================================================================================

SEED_POLICY = Policy(net=["127.0.0.1", "10.0.0.1"], max_memory=1024**3, max_processes=64)


def test_ceiling_and_initial_current() -> None:
    ctx = PolicyContext(SEED_POLICY)
    assert ctx.ceiling() == LivePolicy(
        allowed_ips=frozenset({net("127.0.0.1/32"), net("10.0.0.1/32")}),
        max_memory=1024**3,
        max_processes=64,
    )
    assert ctx.current() == LivePolicy(allowed_ips=None, max_memory=1024**3, max_processes=64)
    assert ctx.restricted_fields() == frozenset()


def test_ceiling_is_unrestricted_for_star_or_none() -> None:
    assert PolicyContext(Policy()).ceiling().allowed_ips is None
    assert PolicyContext(Policy(net=["127.0.0.1", "*:443"])).ceiling().allowed_ips is None
    assert PolicyContext(Policy(net=[])).ceiling().allowed_ips == frozenset()


def test_grant_within_ceiling() -> None:
    ctx = PolicyContext(SEED_POLICY)
    ctx.restrict_max_processes(1)  # unrelated field: network grants still work
    live_start = frozenset({net("10.0.0.1/32")})
    ctx._live = LivePolicy(live_start, None, None)  # start below the ceiling, as in the seed test
    ctx.grant_network(["127.0.0.1"])
    current = ctx.current().allowed_ips
    assert current is not None and net("127.0.0.1/32") in current


def test_grant_capped_to_ceiling() -> None:
    ctx = PolicyContext(SEED_POLICY)
    ctx._live = LivePolicy(frozenset(), None, None)
    ctx.grant_network([ip("8.8.8.8"), "10.0.0.0/8", "127.0.0.1"])  # only 127.0.0.1 is within
    assert ctx.current().allowed_ips == frozenset({net("127.0.0.1/32")})


def test_grant_network_when_live_is_whole_ceiling_changes_nothing() -> None:
    changes: list[str] = []
    ctx = PolicyContext(SEED_POLICY, on_change=changes.append)
    ctx.grant_network(["127.0.0.1"])
    assert ctx.current().allowed_ips is None and changes == []


def test_grant_within_cidr_ceiling_and_unrestricted() -> None:
    ctx = PolicyContext(Policy(net=["10.0.0.0/8:80"]))
    ctx._live = LivePolicy(frozenset(), None, None)
    ctx.grant_network(["10.1.0.0/16", "11.0.0.1"])
    assert ctx.current().allowed_ips == frozenset({net("10.1.0.0/16")})
    ctx = PolicyContext(Policy())
    ctx._live = LivePolicy(frozenset(), None, None)
    ctx.grant_network(["8.8.8.8"])
    assert ctx.current().allowed_ips == frozenset({net("8.8.8.8/32")})


def test_restrict_then_grant_fails() -> None:
    ctx = PolicyContext(SEED_POLICY)
    ctx.restrict_network([])
    with pytest.raises(PolicyFnError, match="allowed_ips"):
        ctx.grant_network([ip("127.0.0.1")])
    assert ctx.restricted_fields() == frozenset({"allowed_ips"})


def test_restrict_network_empty_denies_everything() -> None:
    ctx = PolicyContext(Policy(net=["*"]))
    assert ctx.network_allowed(1, "tcp", ip("127.0.0.1"), 80) == (True, "")
    ctx.restrict_network([])
    assert ctx.current().allowed_ips == frozenset()
    assert ctx.network_allowed(1, "tcp", ip("127.0.0.1"), 80) == (False, "restricted by live policy")
    assert ctx.network_allowed(1, "udp", ip("::1"), 53)[0] is False


def test_restrict_network_to_a_subset() -> None:
    ctx = PolicyContext(Policy(net=["127.0.0.0/8"]))
    ctx.restrict_network(["127.0.0.2", ip("127.0.0.3")])
    assert ctx.network_allowed(1, "tcp", ip("127.0.0.2"), 80) == (True, "")
    assert ctx.network_allowed(1, "tcp", ip("::ffff:127.0.0.3"), 80) == (True, "")
    assert ctx.network_allowed(1, "tcp", ip("127.0.0.4"), 80) == (False, "restricted by live policy")


def test_restrict_network_cannot_widen_the_ceiling() -> None:
    ctx = PolicyContext(Policy(net=["127.0.0.1"]))
    ctx.restrict_network(["8.8.8.8"])
    assert ctx.network_allowed(1, "tcp", ip("8.8.8.8"), 53) == (False, "not in net policy")


def test_network_allowed_uses_static_rules_with_ports() -> None:
    ctx = PolicyContext(Policy(net=["tcp://127.0.0.1:80"]))
    assert ctx.network_allowed(1, "tcp", ip("127.0.0.1"), 80) == (True, "")
    assert ctx.network_allowed(1, "tcp", "127.0.0.1", 81) == (False, "not in net policy")
    assert ctx.network_allowed(1, "udp", ip("127.0.0.1"), 80) == (False, "not in net policy")


def test_restrict_max_memory() -> None:
    ctx = PolicyContext(SEED_POLICY)
    ctx.restrict_max_memory(256 * 1024 * 1024)
    assert ctx.current().max_memory == 256 * 1024 * 1024
    ctx.restrict_max_memory("128M")
    assert ctx.current().max_memory == 128 * 1024 * 1024
    with pytest.raises(PolicyFnError, match="max_memory"):
        ctx.grant_max_memory("512M")


def test_restrict_never_exceeds_ceiling() -> None:
    ctx = PolicyContext(SEED_POLICY)
    ctx.restrict_max_memory("4G")
    ctx.restrict_max_processes(1000)
    assert ctx.current().max_memory == 1024**3 and ctx.current().max_processes == 64


def test_grant_memory_and_processes_capped_at_ceiling() -> None:
    ctx = PolicyContext(SEED_POLICY)
    ctx.grant_max_memory("4G")
    assert ctx.current().max_memory == 1024**3
    ctx.grant_max_memory("1M")
    assert ctx.current().max_memory == 1024**2
    ctx.grant_max_processes(1000)
    assert ctx.current().max_processes == 64
    ctx.grant_max_processes(2)
    assert ctx.current().max_processes == 2


def test_grant_uncapped_when_ceiling_is_none() -> None:
    ctx = PolicyContext(Policy())
    ctx.grant_max_memory("8G")
    ctx.grant_max_processes(10_000)
    assert ctx.current() == LivePolicy(None, 8 * 1024**3, 10_000)


def test_restrict_then_grant_processes_fails() -> None:
    ctx = PolicyContext(SEED_POLICY)
    ctx.restrict_max_processes(0)
    assert ctx.current().max_processes == 0
    with pytest.raises(PolicyFnError, match="max_processes"):
        ctx.grant_max_processes(5)
    assert ctx.restricted_fields() == frozenset({"max_processes"})


@pytest.mark.parametrize("bad", [-1, True, 1.5, "many"])
def test_process_counts_are_validated(bad: object) -> None:
    ctx = PolicyContext(SEED_POLICY)
    with pytest.raises(PolicyError, match=repr(bad)):
        ctx.grant_max_processes(bad)  # type: ignore[arg-type]
    with pytest.raises(PolicyError, match=repr(bad)):
        ctx.restrict_max_processes(bad)  # type: ignore[arg-type]


def test_memory_is_validated() -> None:
    ctx = PolicyContext(SEED_POLICY)
    with pytest.raises(PolicyError, match="'much'"):
        ctx.grant_max_memory("much")
    with pytest.raises(PolicyError, match="-5"):
        ctx.restrict_max_memory(-5)
    assert ctx.restricted_fields() == frozenset()  # a rejected restrict does not count


def test_ip_lists_are_validated() -> None:
    ctx = PolicyContext(SEED_POLICY)
    with pytest.raises(PolicyError, match="single string"):
        ctx.restrict_network("127.0.0.1")
    with pytest.raises(PolicyError, match="'nope'"):
        ctx.grant_network(["nope"])
    with pytest.raises(PolicyError, match="42"):
        ctx.restrict_pid_network(1, [42])  # type: ignore[list-item]
    assert ctx.restricted_fields() == frozenset()


def test_on_change_reports_changed_fields() -> None:
    changes: list[str] = []
    ctx = PolicyContext(SEED_POLICY, on_change=changes.append)
    ctx.grant_max_memory("1G")  # same as the current value: no change
    ctx.restrict_max_memory("256M")
    ctx.grant_max_processes(3)
    ctx.restrict_network(["127.0.0.1"])
    assert changes == ["max_memory", "max_processes", "allowed_ips"]


def test_pid_override() -> None:
    ctx = PolicyContext(SEED_POLICY)
    ctx.restrict_pid_network(1234, [ip("127.0.0.1")])
    assert ctx.pid_override(1234) == frozenset({net("127.0.0.1/32")})
    assert ctx.network_allowed(1234, "tcp", ip("127.0.0.1"), 80) == (True, "")
    assert ctx.network_allowed(1234, "tcp", ip("10.0.0.1"), 80) == (False, "restricted for pid 1234")
    assert ctx.network_allowed(99, "tcp", ip("10.0.0.1"), 80) == (True, "")  # other pids unaffected


def test_pid_override_cannot_widen() -> None:
    ctx = PolicyContext(SEED_POLICY)
    ctx.restrict_pid_network(7, ["8.8.8.8"])
    assert ctx.network_allowed(7, "tcp", ip("8.8.8.8"), 53) == (False, "not in net policy")
    ctx.restrict_network(["127.0.0.1"])
    ctx.restrict_pid_network(8, ["10.0.0.1"])
    assert ctx.network_allowed(8, "tcp", ip("10.0.0.1"), 53) == (False, "restricted by live policy")


def test_clear_pid_override() -> None:
    ctx = PolicyContext(SEED_POLICY)
    ctx.restrict_pid_network(1234, [ip("127.0.0.1")])
    ctx.clear_pid_override(1234)
    assert ctx.pid_override(1234) is None
    assert ctx.network_allowed(1234, "tcp", ip("10.0.0.1"), 80) == (True, "")
    ctx.clear_pid_override(4321)  # clearing a pid without override is fine


def test_deny_and_allow_path(tmp_path: pathlib.Path) -> None:
    ctx = PolicyContext(Policy())
    secret = tmp_path / "secret"
    assert not ctx.path_denied(str(secret / "key"))
    ctx.deny_path(secret)
    assert ctx.path_denied(str(secret))
    assert ctx.path_denied(str(secret / "key"))
    assert ctx.path_denied(str(tmp_path / "x" / ".." / "secret" / "key"))
    assert not ctx.path_denied(str(tmp_path / "secretive"))  # components, not string prefixes
    assert not ctx.path_denied(str(tmp_path))
    assert ctx.denied_paths() == frozenset({os.path.realpath(secret)})
    ctx.allow_path(str(secret))
    assert not ctx.path_denied(str(secret / "key"))


def test_deny_path_through_symlink(tmp_path: pathlib.Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    ctx = PolicyContext(Policy())
    ctx.deny_path(tmp_path / "link")
    assert ctx.path_denied(str(real / "file"))


def test_static_fs_deny_cannot_be_undone(tmp_path: pathlib.Path) -> None:
    ctx = PolicyContext(Policy(fs_deny=[tmp_path / "a" / "b"]))
    assert ctx.path_denied(str(tmp_path / "a" / "b" / "c"))
    assert not ctx.path_denied(str(tmp_path / "a" / "bc"))
    ctx.allow_path(tmp_path / "a" / "b")
    assert ctx.path_denied(str(tmp_path / "a" / "b" / "c"))
    ctx.deny_path(tmp_path / "a" / "b")
    ctx.allow_path(tmp_path / "a" / "b")
    assert ctx.path_denied(str(tmp_path / "a" / "b"))


def test_deny_root_denies_everything() -> None:
    ctx = PolicyContext(Policy())
    ctx.deny_path("/")
    assert ctx.path_denied("/etc/passwd") and ctx.path_denied("/")


def test_path_changes_are_reported() -> None:
    changes: list[str] = []
    ctx = PolicyContext(Policy(), on_change=changes.append)
    ctx.deny_path("/nonexistent/x")
    ctx.deny_path("/nonexistent/x")
    ctx.allow_path("/nonexistent/x")
    ctx.allow_path("/nonexistent/x")
    ctx.restrict_pid_network(1, [])
    ctx.clear_pid_override(1)
    assert changes == ["denied_paths", "denied_paths", "pid_network", "pid_network"]


def test_context_keeps_its_policy() -> None:
    assert PolicyContext(SEED_POLICY).policy is SEED_POLICY


def test_unix_rules_are_part_of_the_policy() -> None:
    """unix: rules live beside the IP rules: they make policies differ (the Sandbox and ruleset caches
    are keyed by the policy), survive replace() and pickling, and leave the IP rules alone."""
    a, b = Policy(net=["127.0.0.1", "unix:@a"]), Policy(net=["127.0.0.1", "unix:@b"])
    assert a != b and a.net == b.net
    assert a.allows_abstract(b"a") and not a.allows_abstract(b"b")
    assert Policy(net=["unix:/run/x.sock"]).net == ()  # no IP rule: no IP network
    assert Policy(net=["unix:/run/x.sock"]).allows_unix_path(os.path.realpath("/run/x.sock"))
    assert a.replace(timeout=3).allows_abstract(b"a")
    assert not a.replace(net=["127.0.0.1"]).allows_abstract(b"a")
    assert pickle.loads(pickle.dumps(a)) == a
    assert a.to_dict()["net"] == ["127.0.0.1", "unix:@a"]


def test_writable_paths_written_as_directories_are_remembered(tmp_path: pathlib.Path) -> None:
    """fs_write "build/" (a string ending in /) is a directory the sandbox makes when missing; the
    mark survives replace() and pickling, and makes the policy differ from plain "build"."""
    as_dir = Policy(fs_write=[f"{tmp_path}/build/", tmp_path / "file"])
    plain = Policy(fs_write=[f"{tmp_path}/build", tmp_path / "file"])
    assert as_dir.fs_write == plain.fs_write
    assert as_dir.fs_write_dirs == (str(tmp_path / "build"),) and plain.fs_write_dirs == ()
    assert as_dir != plain
    assert pickle.loads(pickle.dumps(as_dir)) == as_dir
    assert as_dir.replace(timeout=1).fs_write_dirs == as_dir.fs_write_dirs
    assert as_dir.replace(fs_write=[tmp_path]).fs_write_dirs == ()
    assert Policy(fs_write=(p for p in [f"{tmp_path}/gen/"])).fs_write_dirs == (str(tmp_path / "gen"),)
