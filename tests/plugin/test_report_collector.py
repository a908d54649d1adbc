"""The controller-side collector: what it keeps per test (it must not grow with clean tests)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, Optional

from pytest_sandlock.report import Collector


def _report(nodeid: str, when: str, info: Optional[dict[str, Any]], outcome: str = "passed") -> Any:
    return SimpleNamespace(nodeid=nodeid, when=when, outcome=outcome, sandlock=info)


def _run(collector: Collector, nodeid: str, call_info: dict[str, Any]) -> None:
    collector.add(_report(nodeid, "setup", {"sandboxed": True}))
    collector.add(_report(nodeid, "call", {"sandboxed": True, **call_info}))
    collector.add(_report(nodeid, "teardown", {"sandboxed": True}))


def test_clean_tests_are_forgotten_without_a_json_report() -> None:
    collector = Collector("strict", None)
    for i in range(100):
        _run(collector, f"t.py::clean[{i}]", {"events": (), "denials": ()})
    _run(collector, "t.py::denied", {"events": [{"syscall": "connect"}], "denials": ["connect denied"]})
    assert list(collector.tests) == ["t.py::denied"]
    assert collector.tests["t.py::denied"]["denials"] == ["connect denied"]


def test_every_test_is_kept_for_the_json_report() -> None:
    collector = Collector("enforce", "/nonexistent/report.json")
    for i in range(3):
        _run(collector, f"t.py::clean[{i}]", {"events": (), "denials": ()})
    assert [t["nodeid"] for t in collector.json_data()["tests"]] == [f"t.py::clean[{i}]" for i in range(3)]


def test_audit_counts_forgotten_tests_once() -> None:
    collector = Collector("audit", None)
    empty = {"net": [], "programs": [], "files": []}
    _run(collector, "t.py::quiet", {"events": (), "denials": (), "audit": empty})
    _run(collector, "t.py::quiet", {"events": (), "denials": (), "audit": empty})  # a rerun
    loud = {**empty, "programs": ["/bin/true"]}
    _run(collector, "t.py::loud", {"events": (), "denials": (), "audit": loud})
    lines: list[str] = []
    terminal = SimpleNamespace(write_sep=lambda *a, **k: None, write_line=lines.append)
    collector.summary(terminal)
    assert lines == ["t.py::loud:", "    ran: /bin/true", "2 test(s) audited, 1 listed"]
