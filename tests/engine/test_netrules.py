"""Tests of the net-rule grammar (pytest_sandlock.engine.netrules)."""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

import pytest

from pytest_sandlock.engine.errors import PolicyError
from pytest_sandlock.engine.netrules import (
    LOOPBACK_DEFAULT,
    NetRule,
    normalize_ip,
    normalize_network,
    parse_net_rules,
    parse_unix_rules,
    tcp_ports_of,
)

ip = ipaddress.ip_address
BOTH = frozenset({"tcp", "udp"})


def one(rule: str) -> NetRule:
    rules = parse_net_rules([rule])
    assert rules is not None and len(rules) == 1
    return rules[0]


# ---- top level -------------------------------------------------------------------------------------------


def test_none_means_unrestricted() -> None:
    assert parse_net_rules(None) is None


def test_empty_list_means_no_network() -> None:
    assert parse_net_rules([]) == ()


def test_generator_accepted() -> None:
    rules = parse_net_rules(r for r in ["127.0.0.1", "::1"])
    assert rules is not None and len(rules) == 2


def test_single_string_is_an_error() -> None:
    with pytest.raises(PolicyError, match=r"single string.*'127\.0\.0\.1'"):
        parse_net_rules("127.0.0.1")


def test_non_iterable_is_an_error() -> None:
    with pytest.raises(PolicyError, match="42"):
        parse_net_rules(42)  # type: ignore[arg-type]


def test_non_string_rule_is_an_error() -> None:
    with pytest.raises(PolicyError, match="80"):
        parse_net_rules([80])  # type: ignore[list-item]


def test_loopback_default_parses() -> None:
    rules = parse_net_rules(LOOPBACK_DEFAULT)
    assert rules is not None
    assert [str(r.network) for r in rules] == ["127.0.0.0/8", "::1/128"]


# ---- hosts -----------------------------------------------------------------------------------------------


def test_ipv4_without_ports() -> None:
    rule = one("127.0.0.1")
    assert rule == NetRule(BOTH, ipaddress.ip_network("127.0.0.1/32"), None, "127.0.0.1")


def test_ipv4_with_port() -> None:
    rule = one("10.1.2.3:80")
    assert rule.network == ipaddress.ip_network("10.1.2.3/32")
    assert rule.ports == ((80, 80),)


def test_bare_ipv6() -> None:
    rule = one("::1")
    assert rule.network == ipaddress.ip_network("::1/128")
    assert rule.ports is None


def test_bracketed_ipv6_with_ports() -> None:
    rule = one("[::1]:80")
    assert rule.network == ipaddress.ip_network("::1/128")
    assert rule.ports == ((80, 80),)


def test_bracketed_ipv6_without_ports() -> None:
    assert one("[2001:db8::1]").network == ipaddress.ip_network("2001:db8::1/128")


def test_ipv4_cidr() -> None:
    rule = one("127.0.0.0/8")
    assert rule.network == ipaddress.ip_network("127.0.0.0/8")


def test_cidr_with_host_bits_is_widened_to_its_network() -> None:
    assert one("10.1.2.3/8").network == ipaddress.ip_network("10.0.0.0/8")


def test_ipv6_cidr_in_brackets_with_ports() -> None:
    rule = one("[fd00::/8]:443")
    assert rule.network == ipaddress.ip_network("fd00::/8")
    assert rule.ports == ((443, 443),)


def test_bare_ipv6_cidr() -> None:
    assert one("fd00::/8").network == ipaddress.ip_network("fd00::/8")


def test_star_host() -> None:
    rule = one("*")
    assert rule.network is None and rule.ports is None
    assert rule.host_matches(ip("8.8.8.8")) and rule.host_matches(ip("2001:db8::1"))


def test_star_host_with_ports() -> None:
    rule = one("*:53")
    assert rule.network is None and rule.ports == ((53, 53),)


def test_mapped_ipv6_rule_becomes_ipv4() -> None:
    assert one("[::ffff:127.0.0.1]:5").network == ipaddress.ip_network("127.0.0.1/32")
    assert one("::ffff:10.0.0.0/104").network == ipaddress.ip_network("10.0.0.0/8")


def test_localhost_resolves_to_its_addresses() -> None:
    expected = {
        normalize_ip(str(info[4][0]).split("%")[0])
        for info in socket.getaddrinfo("localhost", None)
        if info[0] in (socket.AF_INET, socket.AF_INET6)
    }
    rules = parse_net_rules(["tcp://localhost:8080"])
    assert rules is not None
    assert {r.network.network_address for r in rules if r.network is not None} == expected
    assert ipaddress.ip_address("127.0.0.1") in expected
    assert all(r.source == "tcp://localhost:8080" for r in rules)
    assert all(r.protocols == frozenset({"tcp"}) and r.ports == ((8080, 8080),) for r in rules)


def test_hostname_resolution_dedupes_addresses(monkeypatch: pytest.MonkeyPatch) -> None:
    def fake(host: str, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
        assert host == "db.example"
        tcp = (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.5", 0))
        udp = (socket.AF_INET, socket.SOCK_DGRAM, 17, "", ("10.0.0.5", 0))
        v6 = (socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("fe80::1%eth0", 0, 0, 2))
        return [tcp, udp, v6]

    monkeypatch.setattr(socket, "getaddrinfo", fake)
    rules = parse_net_rules(["db.example:5432"])
    assert rules is not None
    assert [str(r.network) for r in rules] == ["10.0.0.5/32", "fe80::1/128"]


def test_unresolvable_host_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: Any, **kwargs: Any) -> Any:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", fail)
    with pytest.raises(PolicyError, match=r"cannot resolve host 'nosuch\.invalid'"):
        parse_net_rules(["nosuch.invalid:80"])


@pytest.mark.parametrize(
    ("rule", "problem"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("ftp://1.2.3.4", "unknown scheme"),
        ("tcp://", "missing host"),
        (":80", "missing host"),
        ("[::1", r"missing '\]'"),
        ("[]:80", "empty address"),
        ("[127.0.0.1]:80", "only for IPv6"),
        ("[::1]80", "expected ':PORTS'"),
        ("1.2.3.999", "invalid IP address"),
        ("1.2.3.4/33", "invalid network"),
        ("fd00::/200", "invalid network"),
        ("::g", "invalid IP address"),
        ("bad host!", "not a valid host"),
        ("-leading-dash", "not a valid host"),
        ("1.2.3.4:", "missing ports"),
        ("1.2.3.4:http", "invalid port 'http'"),
        ("1.2.3.4:+80", "invalid port"),
        ("1.2.3.4:-5", "invalid port"),
        ("1.2.3.4:65536", "out of range"),
        ("1.2.3.4:90-80", "reversed"),
        ("1.2.3.4:80,", "invalid port ''"),
        ("1.2.3.4:80,*", r"'\*' cannot be combined"),
        ("1.2.3.4:1-2-3", "invalid port"),
    ],
)
def test_errors_quote_the_rule_and_say_what_is_wrong(rule: str, problem: str) -> None:
    with pytest.raises(PolicyError, match=problem) as info:
        parse_net_rules([rule])
    assert repr(rule) in str(info.value)


def test_policy_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        parse_net_rules(["nope:nope"])


# ---- schemes and ports -----------------------------------------------------------------------------------


def test_no_scheme_means_tcp_and_udp() -> None:
    assert one("1.2.3.4").protocols == BOTH


@pytest.mark.parametrize(
    ("scheme", "expected"), [("tcp://", {"tcp"}), ("udp://", {"udp"}), ("TCP://", {"tcp"})]
)
def test_schemes(scheme: str, expected: set[str]) -> None:
    assert one(scheme + "1.2.3.4:80").protocols == frozenset(expected)


@pytest.mark.parametrize(
    ("ports", "expected"),
    [
        ("80", ((80, 80),)),
        ("80,443", ((80, 80), (443, 443))),
        ("8000-8100", ((8000, 8100),)),
        ("443,80,8000-8100", ((80, 80), (443, 443), (8000, 8100))),
        ("0", ((0, 0),)),
        ("0-65535", ((0, 65535),)),
        ("80-90,85-100,101", ((80, 101),)),
        (" 80 , 443 ", ((80, 80), (443, 443))),
        ("*", None),
    ],
)
def test_port_forms(ports: str, expected: object) -> None:
    assert one(f"1.2.3.4:{ports}").ports == expected


def test_source_is_kept_verbatim() -> None:
    assert one("tcp://[::1]:80").source == "tcp://[::1]:80"
    assert str(one("tcp://[::1]:80")) == "tcp://[::1]:80"


# ---- matching --------------------------------------------------------------------------------------------


def test_matches_protocol_host_and_port() -> None:
    rule = one("tcp://127.0.0.0/8:80,8000-8100")
    assert rule.matches("tcp", ip("127.0.0.2"), 80)
    assert rule.matches("TCP", ip("127.1.2.3"), 8050)
    assert not rule.matches("udp", ip("127.0.0.2"), 80)
    assert not rule.matches("tcp", ip("128.0.0.1"), 80)
    assert not rule.matches("tcp", ip("127.0.0.1"), 81)
    assert not rule.matches("unix", ip("127.0.0.1"), 80)


def test_mapped_ipv6_is_matched_as_ipv4() -> None:
    rule = one("127.0.0.0/8:80")
    assert rule.matches("tcp", ip("::ffff:127.0.0.2"), 80)
    assert rule.host_matches(ip("::ffff:127.0.0.2"))
    assert not rule.host_matches(ip("::ffff:10.0.0.1"))


def test_ipv6_rule_does_not_match_ipv4() -> None:
    rule = one("::/0")
    assert rule.host_matches(ip("::1"))
    assert not rule.host_matches(ip("127.0.0.1"))


def test_host_matches_accepts_strings() -> None:
    assert one("10.0.0.0/8").host_matches("10.2.3.4")


def test_covers_network() -> None:
    rule = one("10.0.0.0/8")
    assert rule.covers_network(ipaddress.ip_network("10.1.0.0/16"))
    assert not rule.covers_network(ipaddress.ip_network("0.0.0.0/0"))
    assert not rule.covers_network(ipaddress.ip_network("::1/128"))
    assert one("*").covers_network(ipaddress.ip_network("::/0"))


def test_normalize_ip() -> None:
    assert normalize_ip(ip("::ffff:1.2.3.4")) == ip("1.2.3.4")
    assert normalize_ip(ip("::1")) == ip("::1")
    assert normalize_ip(ip("1.2.3.4")) == ip("1.2.3.4")
    assert normalize_ip("[::ffff:1.2.3.4]") == ip("1.2.3.4")


def test_normalize_network_leaves_short_prefixes_alone() -> None:
    wide = ipaddress.ip_network("::/64")
    assert normalize_network(wide) == wide


# ---- tcp_ports_of ----------------------------------------------------------------------------------------


def test_tcp_ports_of_union() -> None:
    rules = parse_net_rules(["tcp://1.2.3.4:80", "5.6.7.8:443,8000-8002", "udp://*:53"])
    assert tcp_ports_of(rules) == frozenset({80, 443, 8000, 8001, 8002})


def test_tcp_ports_of_any_port() -> None:
    assert tcp_ports_of(parse_net_rules(["tcp://1.2.3.4:80", "127.0.0.1"])) is None


def test_tcp_ports_of_udp_only_any_port_is_ignored() -> None:
    assert tcp_ports_of(parse_net_rules(["udp://*", "tcp://1.2.3.4:22"])) == frozenset({22})


def test_tcp_ports_of_no_network_and_unrestricted() -> None:
    assert tcp_ports_of(()) == frozenset()
    assert tcp_ports_of(None) is None


# ---- unix: rules -----------------------------------------------------------------------------------------


def test_unix_rules_parse_apart_from_the_ip_rules(tmp_path) -> None:
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "real", target_is_directory=True)
    source = ["127.0.0.1", "unix:@name", "unix:@pre*", f"unix:{link}/db.sock", f"unix:{tmp_path}/dir/"]
    assert parse_net_rules(source) == (one("127.0.0.1"),)  # the IP rules alone
    name, prefix, path, below = parse_unix_rules(source)
    assert (name.abstract, name.below, name.path) == (b"name", False, None)
    assert name.matches_abstract(b"name") and not name.matches_abstract(b"name2")
    assert prefix.matches_abstract(b"pre") and prefix.matches_abstract(b"prefix")
    assert not prefix.matches_abstract(b"pr")
    assert path.path == str(tmp_path / "real" / "db.sock")  # compared with resolved paths
    assert path.matches_path(str(tmp_path / "real" / "db.sock")) and not path.matches_path(str(tmp_path))
    assert below.matches_path(f"{tmp_path}/dir/a.sock") and below.matches_path(f"{tmp_path}/dir/x/b.sock")
    assert not below.matches_path(f"{tmp_path}/dir") and not below.matches_path(f"{tmp_path}/dirt/a.sock")
    assert [str(rule) for rule in (name, prefix)] == ["unix:@name", "unix:@pre*"]
    assert parse_unix_rules(None) == () and parse_unix_rules(["127.0.0.1"]) == ()
    assert tcp_ports_of(parse_net_rules(["unix:@name"])) == frozenset()  # no IP rule: no port


@pytest.mark.parametrize(
    "rule", ["unix:", "unix:relative.sock", "unix:@", "unix:@a*b", "unix:@*", "unix:/a\0b"]
)
def test_bad_unix_rules_are_errors_quoting_the_rule(rule: str) -> None:
    with pytest.raises(PolicyError, match="net rule") as info:
        parse_unix_rules([rule])
    assert repr(rule) in str(info.value)
