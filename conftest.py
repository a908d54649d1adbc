"""Root conftest of pytest-sandlock's own tests.

``pytester`` is enabled by ``-p pytester`` in pyproject's addopts; plugin tests run their inner pytest in a
subprocess (``runpytest_subprocess``) because confinement cannot be undone in the process that applied it.
"""
