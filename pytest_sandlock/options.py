"""Command-line options, ini keys and the per-session settings read from them."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

import pytest

GROUP = "sandlock"


def add_options(parser: pytest.Parser) -> None:
    group = parser.getgroup(GROUP, "sandbox tests with Landlock + seccomp (pytest-sandlock)")
    group.addoption(
        "--sandlock-strict",
        action="store_true",
        default=None,
        help="sandbox every test; a test that was denied anything fails even if its code caught the error; "
        "a missing kernel feature is an error (ini: sandlock_strict)",
    )
    group.addoption(
        "--sandlock-audit",
        action="store_true",
        default=None,
        help="run every test supervised but deny nothing; list per test the destinations beyond loopback, "
        "the programs run and the files written outside temp dirs (ini: sandlock_audit)",
    )
    group.addoption(
        "--sandlock-report",
        metavar="PATH",
        default=None,
        help="write a JSON report of every test's sandbox events to PATH (ini: sandlock_report)",
    )
    parser.addini("sandlock_strict", "default of --sandlock-strict", type="bool", default=False)
    parser.addini("sandlock_audit", "default of --sandlock-audit", type="bool", default=False)
    parser.addini("sandlock_report", "default of --sandlock-report (relative to the rootdir)", default="")
    parser.addini(
        "sandlock_net",
        "net rules of sandboxed tests whose marker omits net= (default: loopback only; 'none' = no network)",
        type="linelist",
        default=[],
    )
    parser.addini(
        "sandlock_fs_read",
        "readable paths of sandboxed tests whose marker omits fs_read= (default: the whole filesystem)",
        type="linelist",
        default=[],
    )
    parser.addini(
        "sandlock_fs_write",
        "writable paths (besides the temp dirs) of sandboxed tests whose marker omits fs_write=",
        type="linelist",
        default=[],
    )
    parser.addini(
        "sandlock_fs_deny",
        "paths neither readable nor writable for sandboxed tests whose marker omits fs_deny=",
        type="linelist",
        default=[],
    )


@dataclass(frozen=True)
class Settings:
    """What the options and ini keys say, resolved once per session."""

    strict: bool
    audit: bool
    report_path: Optional[str]
    net: Optional[tuple[str, ...]]  # None: the engine's loopback default
    fs_read: Optional[tuple[str, ...]]
    fs_write: tuple[str, ...]
    fs_deny: tuple[str, ...]
    debugging: bool  # --pdb / --trace: sandboxed tests run unconfined

    @property
    def mode(self) -> str:
        if self.audit:
            return "audit"
        return "strict" if self.strict else "enforce"

    @property
    def sandbox_everything(self) -> bool:
        return self.strict or self.audit


def _paths(config: pytest.Config, name: str) -> tuple[str, ...]:
    base = config.inipath.parent if config.inipath is not None else config.rootpath
    return tuple(os.path.join(base, os.path.expanduser(p)) for p in config.getini(name))


def read_settings(config: pytest.Config) -> Settings:
    strict = config.getoption("sandlock_strict")
    if strict is None:
        strict = bool(config.getini("sandlock_strict"))
    audit = config.getoption("sandlock_audit")
    if audit is None:
        audit = bool(config.getini("sandlock_audit"))
    report = config.getoption("sandlock_report")
    if report is None:
        ini_report = str(config.getini("sandlock_report") or "").strip()
        report = os.path.join(config.rootpath, ini_report) if ini_report else None
    else:
        report = os.path.abspath(report)
    net_lines = [str(line).strip() for line in config.getini("sandlock_net")]
    net: Optional[tuple[str, ...]]
    if not net_lines:
        net = None
    elif [line.lower() for line in net_lines] == ["none"]:
        net = ()
    else:
        net = tuple(net_lines)
    fs_read = _paths(config, "sandlock_fs_read") or None
    return Settings(
        strict=bool(strict),
        audit=bool(audit),
        report_path=report,
        net=net,
        fs_read=fs_read,
        fs_write=_paths(config, "sandlock_fs_write"),
        fs_deny=_paths(config, "sandlock_fs_deny"),
        debugging=bool(config.getoption("usepdb", False) or config.getoption("trace", False)),
    )
