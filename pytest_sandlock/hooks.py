"""pytest-sandlock's pytest hooks (the ``pytest11`` entry point ``sandlock``).

Tests that are not sandboxed pass through two stash look-ups and nothing else: no fork, no engine import.
"""

from __future__ import annotations

import functools
from typing import Any, Generator, Optional

import pytest

from pytest_sandlock import forkrun, hookspecs
from pytest_sandlock.fixture import sandlock_policy  # noqa: F401  (the plugin module provides the fixture)
from pytest_sandlock.markers import MARKER_LINE, MarkerError, SpecBuilder
from pytest_sandlock.options import Settings, add_options, read_settings
from pytest_sandlock.report import Collector, audit_digest, event_record

PLUGIN_NAME = "sandlock-session"
INVALID_KEY = pytest.StashKey[str]()


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    pluginmanager.add_hookspecs(hookspecs)


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", MARKER_LINE)
    config.pluginmanager.register(SandlockSession(config), PLUGIN_NAME)


def _capabilities() -> Any:
    from pytest_sandlock.engine.capabilities import probe

    return probe()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    forkrun.record_child_report(report)  # a subtest's report, in a sandboxed child; else nothing


class SandlockSession:
    """The per-session part of the plugin: collection, the call phase, reports, summary."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.settings: Settings = read_settings(config)
        self.is_worker = hasattr(config, "workerinput")
        self.runner = forkrun.Runner(config, self.settings)
        self.collector = Collector(self.settings.mode, self.settings.report_path)
        self._caps: Optional[Any] = None

    def capabilities(self) -> Any:
        if self._caps is None:
            self._caps = _capabilities()
        return self._caps

    # -- session ------------------------------------------------------------------------------------

    def pytest_report_header(self, config: pytest.Config) -> list[str]:
        lines = [str(self.capabilities().summary()), f"sandlock mode: {self.settings.mode}"]
        if self.settings.debugging:
            lines.append("sandlock: --pdb/--trace given: sandboxed tests run WITHOUT the sandbox")
        inside = self.runner.writable_root_of(str(config.rootpath))
        if inside is not None:
            # Landlock only adds access: a read-only tree inside a writable one cannot be carved out.
            lines.append(
                f"sandlock: WARNING: the rootdir is inside {inside}, which sandboxed tests may write: "
                "writes into the source tree cannot be denied (move the checkout, or TMPDIR)"
            )
        return lines

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionstart(self, session: pytest.Session) -> None:
        self.runner.snapshot_fds()
        if self.settings.strict and not self.settings.audit and not self.is_worker:
            caps = self.capabilities()
            missing = [*getattr(caps, "problems", ()), *getattr(caps, "warnings", ())]
            if missing:
                raise pytest.UsageError(
                    "--sandlock-strict: this kernel lacks what the sandbox needs: " + "; ".join(missing)
                )

    # -- collection -----------------------------------------------------------------------------------

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        builder = SpecBuilder(self.settings, str(self.config.rootpath))
        errors = []
        for item in session.items:
            try:
                spec = builder.spec_for(item)
            except MarkerError as exc:
                errors.append(str(exc))
                item.stash[INVALID_KEY] = str(exc)
                continue
            if spec is not None:
                item.stash[forkrun.SPEC_KEY] = spec
                if self.settings.debugging:
                    item.stash[forkrun.UNCONFINED_KEY] = True
        if errors and not self.is_worker:
            raise pytest.UsageError("pytest-sandlock:\n" + "\n".join(errors))
        # An xdist worker cannot stop the session with a usage error (the controller reports an internal
        # error): there each invalid test errors at setup with the same message instead.

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> None:
        invalid = item.stash.get(INVALID_KEY, None)
        if invalid is not None:
            pytest.fail(f"pytest-sandlock usage error: {invalid}", pytrace=False)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtestloop(self, session: pytest.Session) -> Generator[None, object, object]:
        try:
            return (yield)
        finally:
            self.runner.release()  # the last sandboxed test's descriptors (see Runner.release)

    # -- per test -------------------------------------------------------------------------------------

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_call(self, item: pytest.Item) -> Generator[None, None, None]:
        spec = item.stash.get(forkrun.SPEC_KEY, None)
        if spec is None or item.stash.get(forkrun.UNCONFINED_KEY, False):
            return (yield)
        had_own = "runtest" in item.__dict__
        original = item.runtest
        item.runtest = functools.partial(  # type: ignore[method-assign]
            forkrun.run_call, item, original, spec, self.runner
        )
        try:
            return (yield)
        finally:
            if had_own:
                item.runtest = original  # type: ignore[method-assign]
            else:
                del item.runtest

    @pytest.hookimpl(wrapper=True, trylast=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        if forkrun.SPEC_KEY not in item.stash:
            return (yield)
        record = item.stash.get(forkrun.RECORD_KEY, None)
        from_child = (
            call.when == "call"
            and record is not None
            and record.longrepr is not None
            and call.excinfo is not None
            and call.excinfo.value is record.exception
        )
        if from_child:
            # The child built the failure's representation from its own exception; the exception
            # raised here on its behalf may lack what the item's repr_failure reads (a doctest's
            # failure keeps its example, which does not cross back: an INTERNALERROR). So the
            # item answers with the child's, instead of describing the stand-in.
            child_longrepr = record.longrepr if record is not None else None
            item.repr_failure = lambda excinfo, *args, **kwargs: child_longrepr  # type: ignore[method-assign,assignment]
        try:
            report = yield
        finally:
            if from_child:
                del item.repr_failure
        if call.when == "teardown" and forkrun.RECORD_KEY in item.stash:
            del item.stash[forkrun.RECORD_KEY]  # the events live on in the call report only
        info: dict[str, Any] = {"sandboxed": not item.stash.get(forkrun.UNCONFINED_KEY, False)}
        if call.when == "call" and record is not None:
            if from_child:
                report.longrepr = record.longrepr  # also where an outer wrapper changed it
            if record.strict_denials and record.exception is not None:
                text = "\n".join(e.describe() for e in record.strict_denials)
                longrepr: Any = report.longrepr
                if hasattr(longrepr, "addsection"):
                    longrepr.addsection("sandlock strict: denied operations", text)
                else:
                    report.sections.append(("sandlock strict: denied operations", text))
            if record.threads_note and report.failed:
                report.sections.append(("sandlock: threads", record.threads_note))
            # Shared empty tuples for the common event-free test: nothing allocated per test.
            info["events"] = [event_record(e) for e in record.events] if record.events else ()
            info["denials"] = [e.describe() for e in record.events if e.denied] if record.events else ()
            if self.settings.audit:
                info["audit"] = audit_digest(record.events, self.runner.temp_roots())
        report.sandlock = info  # type: ignore[attr-defined]
        return report

    # -- controller side --------------------------------------------------------------------------------

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if not self.is_worker:
            self.collector.add(report)

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.is_worker:
            return
        self.collector.summary(terminalreporter)
        path = self.settings.report_path
        if path is not None:
            terminalreporter.write_line(f"sandlock report: {path}")

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if not self.is_worker:
            self.collector.write()
