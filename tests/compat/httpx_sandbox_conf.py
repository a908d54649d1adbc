"""Loaded with ``-p httpx_sandbox_conf`` by run_httpx_suite.py: sandbox settings for httpx's suite.

What a user of pytest-sandlock would put in httpx's conftest.py: one test writes a file into the current
directory (``SSLKEYLOGFILE=test`` makes the ssl module open ``./test`` for appending), which the sandbox
keeps read-only. That test, and only it, may write in the directory it runs in.
"""

from __future__ import annotations

import os

import pytest

WRITES_IN_CWD = ("tests/test_config.py::test_load_ssl_with_keylog",)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.nodeid.split("[")[0] in WRITES_IN_CWD:
            item.add_marker(pytest.mark.sandbox(fs_write=[os.getcwd()]))
