"""coverage.py (pytest-cov) across the fork of a sandboxed test.

The child ends with ``os._exit``, so coverage's atexit save never runs there. The child saves its
collector's data explicitly, into a staging directory under the system temp dir (which the sandbox
always lets it write); the pytest process then moves each staged data file next to the configured data
file (the rootdir, read-only inside the sandbox), named as a parallel data file, so that pytest-cov's
(or ``coverage combine``'s) combine step picks it up. Python subprocesses of the test that start
coverage themselves (pytest-cov < 7: ``COV_CORE_DATAFILE``; coverage's ``[run] patch = subprocess``:
``COVERAGE_PROCESS_CONFIG``) are pointed at the same staging directory.
"""

from __future__ import annotations

import os
import shutil
import sys
from typing import TYPE_CHECKING, Any, Optional

if TYPE_CHECKING:
    from pytest_sandlock.forkrun import Runner


def _active_coverage() -> Any:
    """The running ``coverage.Coverage`` (pytest-cov's or ``coverage run``'s), without importing coverage."""
    module = sys.modules.get("coverage")
    current = getattr(getattr(module, "Coverage", None), "current", None)
    if current is None:
        return None
    try:
        return current()
    except Exception:
        return None


class CoverageBridge:
    """Gets the coverage data measured in the sandboxed child (and its Python subprocesses) to the data file.

    Why a staging directory: coverage writes parallel data files (``.coverage.<host>.pid<N>.X<rand>x``) next
    to its data file, normally the rootdir, which the sandbox makes read-only. Making that directory writable
    for the child would open the whole source tree to the test (Landlock grants directories, not file name
    patterns), so the child writes into a private directory under the system temp dir instead, and the
    pytest process, unconfined, moves what appeared there into the data file's directory after the call.
    pytest-cov's combine step at the end of the session (or ``coverage combine``) then merges them.

    The child's data file is chosen by coverage itself on its first save after the fork (coverage notices the
    new pid and picks a fresh parallel name); the bridge only changes the directory of that name. The parent's
    collector, its data file and its contexts (``--cov-context=test``) are untouched.
    """

    def __init__(self, cov: Any, staging: str) -> None:
        self.staging = staging
        data = getattr(cov, "_data", None)
        basename = getattr(data, "_basename", None)
        if not isinstance(basename, str):
            basename = os.path.abspath(str(getattr(getattr(cov, "config", None), "data_file", ".coverage")))
        self.target_dir, self.basename = os.path.split(basename)

    @classmethod
    def for_call(cls, runner: Runner) -> Optional[CoverageBridge]:
        cov = _active_coverage()
        return None if cov is None else cls(cov, runner.coverage_staging())

    # -- in the child ---------------------------------------------------------------------------------

    def redirect_in_child(self) -> Optional[str]:
        """Before the test: send this process's and its Python subprocesses' coverage data to staging."""
        staged = os.path.join(self.staging, self.basename)
        os.environ["COV_CORE_DATAFILE"] = staged  # pytest-cov < 7: its .pth starts coverage in subprocesses
        problem = None
        config_env = os.environ.get("COVERAGE_PROCESS_CONFIG")
        if config_env:  # coverage >= 7.10 ``[run] patch = subprocess`` (the pytest-cov 7 way)
            try:
                from coverage.config import CoverageConfig

                config = CoverageConfig.deserialize(config_env)
                config.data_file = os.path.join(self.staging, os.path.basename(config.data_file))
                os.environ["COVERAGE_PROCESS_CONFIG"] = config.serialize()
            except Exception as exc:
                problem = f"subprocess coverage not redirected: {type(exc).__name__}: {exc}"
        cov = _active_coverage()
        data = getattr(cov, "_data", None)
        if data is None or not hasattr(data, "_basename"):
            return problem or "coverage is active but its data object is not the one expected"
        data._basename = staged
        return problem

    def save_in_child(self) -> Optional[str]:
        """After the test: write what the child measured (``os._exit`` skips coverage's atexit save)."""
        cov = _active_coverage()
        if cov is None:
            return None
        try:
            cov.save()
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}"
        return None

    # -- in the pytest process ------------------------------------------------------------------------

    def collect(self) -> list[str]:
        """Move the staged data files next to the data file; returns the problems met."""
        problems: list[str] = []
        try:
            names = os.listdir(self.staging)
        except OSError as exc:
            return [f"cannot list {self.staging}: {exc}"]
        for name in names:
            if name != self.basename and not name.startswith(self.basename + "."):
                continue
            if name.endswith("-journal"):
                continue
            target = name
            if name == self.basename:  # a subprocess that was not in parallel mode: give it a parallel name
                target = f"{name}.{_parallel_suffix()}"
            try:
                shutil.move(os.path.join(self.staging, name), os.path.join(self.target_dir, target))
            except OSError as exc:
                problems.append(f"cannot move coverage data {name} to {self.target_dir}: {exc}")
        return problems


def _parallel_suffix() -> str:
    try:
        from coverage.sqldata import filename_suffix

        suffix = filename_suffix(True)
        if isinstance(suffix, str):
            return suffix
    except Exception:
        pass
    import random
    import socket
    import string

    rand = "".join(random.choice(string.ascii_letters) for _ in range(6))
    return f"{socket.gethostname().replace('.', '_')}.pid{os.getpid()}.X{rand}x"
