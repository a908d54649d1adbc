"""pyseccomp's import without its ``ldconfig`` subprocesses, and the same libraries found."""

from __future__ import annotations

import ctypes.util
import subprocess
import sys

import pytest

from pytest_sandlock.engine import seccomp_lib

COUNT_SUBPROCESSES = """
import subprocess, sys
started = []
original = subprocess.Popen.__init__
def counting(self, args, *rest, **kwargs):
    started.append(args)
    original(self, args, *rest, **kwargs)
subprocess.Popen.__init__ = counting
import {module}
print(len(started))
"""


def _subprocesses_started_by_importing(module: str) -> int:
    code = COUNT_SUBPROCESSES.format(module=module)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(proc.stdout)


def test_the_import_starts_no_subprocess_and_plain_pyseccomp_does() -> None:
    assert _subprocesses_started_by_importing("pytest_sandlock.engine.seccomp_lib") == 0
    assert _subprocesses_started_by_importing("pyseccomp") >= 2  # the control: ldconfig, twice


def test_the_answers_are_ldconfigs_and_find_library_is_restored() -> None:
    assert ctypes.util.find_library is seccomp_lib._find_library
    for name in ("c", "seccomp", "m"):  # "m" is not in the table: the real look-up answers
        assert seccomp_lib._soname_first(name) == ctypes.util.find_library(name)


def test_a_soname_that_does_not_load_gets_the_real_look_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(seccomp_lib._SONAMES, "seccomp", "libsandlock-absent.so.9")
    assert seccomp_lib._soname_first("seccomp") == ctypes.util.find_library("seccomp") == "libseccomp.so.2"
