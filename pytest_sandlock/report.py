"""Per-test sandbox data on reports, the ``--sandlock-report`` JSON file and the terminal summary.

The worker (or the serial pytest process) attaches a plain-data ``sandlock`` attribute to each phase report
of a sandboxed test; pytest's report serialisation (which pytest-xdist uses) carries it to the controller,
which alone collects, prints and writes.
"""

from __future__ import annotations

import json
import os
from typing import Any, Iterable, Optional

import pytest

from pytest_sandlock.engine.policy import SyscallCategory, SyscallEvent, is_path_within, printable

REPORT_VERSION = 1
_TEMP_EXTRA = ("/dev", "/proc/self", "/dev/shm")


REPORT_EVENT_FIELDS = ("syscall", "category", "pid", "parent_pid", "host", "port", "argv", "path", "denied")


def event_record(event: SyscallEvent) -> dict[str, Any]:
    """One event in the report schema: the documented subset of ``SyscallEvent.to_dict()``."""
    full = event.to_dict()
    record = {key: full[key] for key in REPORT_EVENT_FIELDS}
    if isinstance(record["path"], str):
        record["path"] = printable(record["path"])
    if isinstance(record["argv"], list):
        record["argv"] = [printable(a) if isinstance(a, str) else a for a in record["argv"]]
    return record


def _is_loopback(host: Any) -> bool:
    mapped = getattr(host, "ipv4_mapped", None)
    return bool((mapped or host).is_loopback)


def audit_digest(events: Iterable[SyscallEvent], temp_roots: Iterable[str]) -> dict[str, list[str]]:
    """Destinations beyond loopback, programs run, files written outside temp dirs."""
    roots = [*temp_roots, *_TEMP_EXTRA]
    net: dict[str, None] = {}
    programs: dict[str, None] = {}
    files: dict[str, None] = {}
    for e in events:
        if e.category is SyscallCategory.NETWORK and e.host is not None and not _is_loopback(e.host):
            host = f"[{e.host}]" if e.host.version == 6 else str(e.host)
            where = host if e.port is None else f"{host}:{e.port}"
            net[f"{where} ({e.protocol or e.syscall})" + (" denied" if e.denied else "")] = None
        elif e.argv is not None:
            programs[printable(" ".join(e.argv))] = None
        elif e.category is SyscallCategory.FILE and e.path and not _in_any(e.path, roots):
            files[printable(f"{e.path} ({e.syscall})") + (" denied" if e.denied else "")] = None
    return {"net": list(net), "programs": list(programs), "files": list(files)}


def _outcome(phases: dict[str, str]) -> str:
    if phases.get("setup") == "failed":
        return "error"
    if phases.get("setup") == "skipped":
        return "skipped"
    call = phases.get("call")
    if call == "failed":
        return "failed"
    if phases.get("teardown") == "failed":
        return "error"
    return call or "passed"


class Collector:
    """Gathers reports in the controller (or the serial process): JSON report and summary lines."""

    def __init__(self, mode: str, report_path: Optional[str]) -> None:
        self.mode = mode
        self.report_path = report_path
        self.tests: dict[str, dict[str, Any]] = {}
        # Without a JSON report, a test with nothing to show is forgotten after its teardown, so that
        # the pytest process does not grow with the number of tests; audit mode counts them.
        self._clean_audited: set[str] = set()

    def add(self, report: pytest.TestReport) -> None:
        info = getattr(report, "sandlock", None)
        if info is None and self.report_path is None:
            return  # an unsandboxed test and no JSON report: nothing to keep
        entry = self.tests.get(report.nodeid)
        if entry is None or report.when == "setup":  # a rerun of the same test replaces the earlier run
            entry = {"phases": {}, "sandboxed": False, "events": [], "denials": [], "audit": None}
            self.tests[report.nodeid] = entry
        entry["phases"][report.when] = report.outcome
        if info:
            entry["sandboxed"] = bool(info.get("sandboxed"))
            if self.report_path is not None:  # events are kept only for the JSON report
                entry["events"].extend(info.get("events", ()))
            entry["denials"].extend(info.get("denials", ()))
            if info.get("audit") is not None:
                entry["audit"] = info["audit"]
        if report.when == "teardown" and self.report_path is None and not _worth_keeping(entry):
            del self.tests[report.nodeid]
            if self.mode == "audit" and entry["sandboxed"]:
                self._clean_audited.add(report.nodeid)

    def json_data(self) -> dict[str, Any]:
        return {
            "version": REPORT_VERSION,
            "mode": self.mode,
            "tests": [
                {
                    "nodeid": nodeid,
                    "outcome": _outcome(entry["phases"]),
                    "sandboxed": entry["sandboxed"],
                    "events": entry["events"],
                }
                for nodeid, entry in self.tests.items()
            ],
        }

    def write(self) -> Optional[str]:
        if self.report_path is None:
            return None
        directory = os.path.dirname(self.report_path) or "."
        os.makedirs(directory, exist_ok=True)
        tmp = f"{self.report_path}.{os.getpid()}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(self.json_data(), f, indent=1)
            f.write("\n")
        os.replace(tmp, self.report_path)
        return self.report_path

    def summary(self, terminal: Any) -> None:
        if self.mode == "audit":
            self._audit_summary(terminal)
        denied = [(nodeid, e["denials"]) for nodeid, e in self.tests.items() if e["denials"]]
        if denied and self.mode != "audit":
            terminal.write_sep("=", "sandlock denials")
            for nodeid, lines in denied:
                terminal.write_line(f"{nodeid}:")
                for line in lines:
                    terminal.write_line(f"    {line}")

    def _audit_summary(self, terminal: Any) -> None:
        terminal.write_sep("=", "sandlock audit")
        shown = 0
        for nodeid, entry in self.tests.items():
            digest = entry["audit"]
            if not digest or not any(digest.values()):
                continue
            shown += 1
            terminal.write_line(f"{nodeid}:")
            for key, label in (("net", "reached"), ("programs", "ran"), ("files", "wrote")):
                for value in digest[key]:
                    terminal.write_line(f"    {label}: {value}")
        audited = sum(1 for e in self.tests.values() if e["sandboxed"]) + len(
            self._clean_audited - self.tests.keys()
        )
        terminal.write_line(f"{audited} test(s) audited, {shown} listed")


def _worth_keeping(entry: dict[str, Any]) -> bool:
    audit = entry["audit"]
    return bool(entry["denials"]) or bool(audit and any(audit.values()))


def _in_any(path: str, roots: Iterable[str]) -> bool:
    return any(is_path_within(path, root) for root in roots)
