"""Live "outside" listeners for the escape tests, in the pytest process.

``outside`` yields :class:`security_helpers.Outside`; its teardown drains every listener without blocking and
fails the test if anything arrived that the test did not drain itself (positive controls drain and assert
what they expect before teardown).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from security_helpers import Inside, Outside


@pytest.fixture
def outside() -> Iterator[Outside]:
    listeners = Outside()
    yield listeners
    try:
        leaked = listeners.drain()
        assert leaked == [], f"something reached the outside: {leaked}"
    finally:
        listeners.close()


@pytest.fixture
def inside() -> Iterator[Inside]:
    listeners = Inside()
    yield listeners
    listeners.close()


@pytest.fixture
def is_root() -> bool:
    return os.geteuid() == 0
