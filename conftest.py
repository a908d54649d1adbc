"""Root conftest of pytest-sandlock's own tests.

``pytester`` is enabled by ``-p pytester`` in pyproject's addopts; plugin tests run their inner pytest in a
subprocess (``runpytest_subprocess``) because confinement cannot be undone in the process that applied it.
"""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _pytester_terminal_width(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Inner pytest runs print at 80 columns whatever terminal CI has.

    A pytester subprocess inherits COLUMNS, and pytest fits its short summary lines to it: a wide CI
    terminal repeats a failure's message there, a narrow one cuts or wraps lines that tests match.
    """
    if "pytester" in request.fixturenames:
        monkeypatch.setenv("COLUMNS", "80")
