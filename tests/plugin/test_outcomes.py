"""The call phase's outcome crosses back from the child intact."""

from __future__ import annotations

import json
import os
import re
from xml.etree import ElementTree

import pytest

OUTCOMES = """
import os, sys, warnings, logging, pytest

@pytest.mark.sandbox
def test_assert_rewriting():
    left = {"a": 1, "b": 2}
    assert left == {"a": 1, "b": 3}

@pytest.mark.sandbox
def test_skip_inside():
    pytest.skip("skipped in the child")

@pytest.mark.sandbox
def test_xfail_inside():
    pytest.xfail("xfailed in the child")

@pytest.mark.sandbox
@pytest.mark.xfail(raises=KeyError, strict=True)
def test_xfail_marker_raises():
    raise KeyError("k")

@pytest.mark.sandbox
@pytest.mark.xfail(raises=KeyError, strict=True)
def test_xfail_wrong_exception():
    raise ValueError("not a KeyError")

@pytest.mark.sandbox
def test_fail_inside():
    pytest.fail("explicit failure", pytrace=False)

class MyError(Exception):
    def __init__(self, a, b):
        super().__init__(a, b)

@pytest.mark.sandbox
def test_custom_exception():
    raise MyError("one", 2)

@pytest.mark.sandbox
def test_warning_inside():
    warnings.warn("warned in the child", UserWarning)

@pytest.mark.sandbox
def test_pid_differs():
    print("child pid", os.getpid())
"""


def test_outcomes_cross_back(pytester):
    pytester.makepyfile(test_inner=OUTCOMES)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rsxX")
    result.assert_outcomes(passed=2, failed=4, skipped=1, xfailed=2)
    result.stdout.fnmatch_lines(
        [
            "*def test_assert_rewriting():*",
            '>       assert left == {"a": 1, "b": 3}',
            "E       AssertionError: assert {'a': 1, 'b': 2} == {'a': 1, 'b': 3}",
            "*Differing items:*",
            "test_inner.py:6: AssertionError",
        ]
    )
    result.stdout.fnmatch_lines(["*explicit failure*"])
    result.stdout.fnmatch_lines(["E       test_inner.MyError: ('one', 2)"])
    result.stdout.fnmatch_lines(["E       ValueError: not a KeyError"])
    result.stdout.fnmatch_lines(["SKIPPED [1] test_inner.py:10: skipped in the child"])
    result.stdout.fnmatch_lines(["XFAIL test_inner.py::test_xfail_inside - xfailed in the child"])
    result.stdout.fnmatch_lines(
        ["*warnings summary*", "test_inner.py::test_warning_inside", "*UserWarning: warned in the child"]
    )
    assert "sandlock" not in "".join(line for line in result.stdout.lines if line.startswith("E "))


@pytest.mark.parametrize("style", ["short", "line", "native", "no"])
def test_tb_styles_apply_to_child_failures(pytester, style):
    pytester.makepyfile(
        test_inner="""
        import pytest
        @pytest.mark.sandbox
        def test_f():
            x = 41
            assert x + 1 == 43
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", f"--tb={style}")
    result.assert_outcomes(failed=1)
    expected = {
        "short": ["*test_inner.py:5: in test_f*", "E   assert (41 + 1) == 43"],
        "line": ["*test_inner.py:5: assert (41 + 1) == 43"],
        "native": ["*File *test_inner.py*, line 5, in test_f*", "AssertionError: assert (41 + 1) == 43"],
        "no": ["FAILED test_inner.py::test_f - assert (41 + 1) == 43"],
    }[style]
    result.stdout.fnmatch_lines(expected)


@pytest.mark.parametrize("capture", ["fd", "sys", "tee-sys"])
def test_captured_output_crosses_back(pytester, capture):
    pytester.makepyfile(
        test_inner="""
        import os, sys, pytest

        @pytest.mark.sandbox
        def test_prints(capsys):
            print("read by capsys")
            assert capsys.readouterr().out == "read by capsys\\n"
            print("left for the report")
            sys.stderr.write("to stderr\\n")
            assert 0

        @pytest.mark.sandbox
        def test_global_capture():
            print("global capture")
            assert 0

        @pytest.mark.sandbox
        def test_capfd(capfd):
            os.write(1, b"fd level\\n")
            assert capfd.readouterr().out == "fd level\\n"
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", f"--capture={capture}")
    result.assert_outcomes(failed=2, passed=1)
    result.stdout.fnmatch_lines(
        [
            "*_ test_prints _*",
            "*Captured stdout call*",
            "left for the report",
            "*Captured stderr call*",
            "to stderr",
            "*_ test_global_capture _*",
            "*Captured stdout call*",
            "global capture",
        ]
    )
    assert "read by capsys" not in result.stdout.lines


def test_no_capture_output_reaches_terminal(pytester):
    pytester.makepyfile(
        test_inner="""
        import pytest
        @pytest.mark.sandbox
        def test_prints():
            print("straight to the terminal")
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-s")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*straight to the terminal*"])


def test_caplog_and_log_section(pytester):
    pytester.makepyfile(
        test_inner="""
        import logging, pytest
        @pytest.mark.sandbox
        def test_logs(caplog):
            logging.getLogger("inner").warning("logged in the child")
            assert [r.getMessage() for r in caplog.records] == ["logged in the child"]
            assert 0
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*Captured log call*", "WARNING  inner:test_inner.py:4 logged in the child"])


def test_crash_and_timeout_fail_the_test_and_the_run_continues(pytester):
    pytester.makepyfile(
        test_inner="""
        import os, signal, time, pytest

        @pytest.mark.sandbox
        def test_segfault():
            os.kill(os.getpid(), signal.SIGSEGV)

        @pytest.mark.sandbox(timeout=1)
        def test_timeout():
            time.sleep(30)

        @pytest.mark.sandbox
        def test_after():
            pass
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:faulthandler", timeout=60)
    result.assert_outcomes(failed=2, passed=1)
    result.stdout.fnmatch_lines(
        [
            "*test_inner.py::test_segfault did not finish: the child was killed by signal SIGSEGV*",
            "*test_inner.py::test_timeout did not finish: timeout after 1.0s*",
        ]
    )


def test_pytest_exit_inside_stops_the_session(pytester):
    pytester.makepyfile(
        test_inner="""
        import pytest
        @pytest.mark.sandbox
        def test_exit():
            pytest.exit("stop here", returncode=3)
        def test_never():
            pass
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    assert result.ret == 3
    result.stdout.fnmatch_lines(["*Exit: stop here*"])
    assert "test_never" not in result.stdout.str()


def test_fs_write_ceiling_with_positive_control(pytester, outside_dir):
    pytester.makepyfile(
        test_inner=f"""
        import errno, pytest

        @pytest.mark.sandbox
        def test_denied(tmp_path):
            (tmp_path / "ok.txt").write_text("tmp_path is writable")
            with pytest.raises(PermissionError) as info:
                open("{outside_dir}/denied.txt", "w")
            assert info.value.errno == errno.EACCES

        @pytest.mark.sandbox(fs_write=["{outside_dir}"])
        def test_allowed():
            with open("{outside_dir}/allowed.txt", "w") as f:
                f.write("control")
        """
    )
    pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=2)
    import os

    assert sorted(os.listdir(outside_dir)) == ["allowed.txt"]


UNCHECKED_CONFTEST = """
import os, resource
import pytest
from pytest_sandlock.engine import proctree

LIMITS = resource.getrlimit(resource.RLIMIT_NOFILE)


def no_more_descriptors(self):
    # Fault injection, in the pytest process, once the child runs: /proc can no longer be opened
    # (a real EMFILE from the kernel), as in a suite that leaked every descriptor it had.
    lowest_free = os.dup(0)
    os.close(lowest_free)
    resource.setrlimit(resource.RLIMIT_NOFILE, (lowest_free, LIMITS[1]))


proctree.ProcessTree.watch = no_more_descriptors


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    try:
        return (yield)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, LIMITS)
"""

UNCHECKED_TEST = """
import os, time, pytest

@pytest.mark.sandbox(fs_write=[os.environ["PID_DIR"]])
def test_leaves_a_process():
    pid = os.fork()
    if pid == 0:
        time.sleep(60)
        os._exit(0)
    with open(os.path.join(os.environ["PID_DIR"], "pid"), "w") as fh:
        fh.write(str(pid))

def test_unsandboxed():
    pass
"""


def test_an_end_that_cannot_be_checked_fails_the_test(pytester, monkeypatch, tmp_path) -> None:
    """The pytest process cannot list /proc when the sandboxed call ends: the test that passed in
    its child is failed, with the reason, instead of passing while its process may live on."""
    monkeypatch.setenv("PID_DIR", str(tmp_path))
    pytester.makeconftest(UNCHECKED_CONFTEST)
    pytester.makepyfile(test_inner=UNCHECKED_TEST)
    try:
        result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
        result.assert_outcomes(passed=1, failed=1)
        result.stdout.fnmatch_lines(
            [
                "*sandlock: test_inner.py::test_leaves_a_process: could not check that every process of "
                "the sandbox has ended: cannot read /proc/*: Too many open files*",
            ]
        )
    finally:
        _kill_leftover(tmp_path / "pid")


def test_an_end_that_cannot_be_checked_control(pytester, monkeypatch, tmp_path) -> None:
    """Without the injected EMFILE the same test passes and its process is gone with it."""
    monkeypatch.setenv("PID_DIR", str(tmp_path))
    pytester.makepyfile(test_inner=UNCHECKED_TEST)
    try:
        pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=2)
        assert not _kill_leftover(tmp_path / "pid")
    finally:
        _kill_leftover(tmp_path / "pid")


def _kill_leftover(pid_file) -> bool:
    """SIGKILL the inner test's process if it still runs; True if it did."""
    import signal

    pid = int(pid_file.read_text())
    try:
        with open(f"/proc/{pid}/stat") as fh:
            if fh.read().split(") ")[1][0] == "Z":
                return False
        os.kill(pid, signal.SIGKILL)
        return True
    except (FileNotFoundError, ProcessLookupError):
        return False


LOOKUP_FAILURES = """
import errno, os, pytest

OUTSIDE = os.environ["OUTSIDE_DIR"]

def test_probes_that_fail_anyway():
    # As libuuid does for /var/lib/libuuid/clock.txt: try, see ENOENT, carry on.
    with pytest.raises(FileNotFoundError):
        os.open(os.path.join(OUTSIDE, "no-such-dir", "clock.txt"), os.O_RDWR | os.O_CREAT)
    os.makedirs(OUTSIDE, exist_ok=True)

def test_control_a_real_denial_swallowed():
    try:
        os.open(os.path.join(OUTSIDE, "new-file"), os.O_WRONLY | os.O_CREAT)
    except OSError as exc:
        assert exc.errno == errno.EACCES
"""


def test_strict_mode_ignores_what_the_kernel_refuses_anyway(pytester, monkeypatch) -> None:
    """A probe outside the writable paths that fails in the kernel's path walk (ENOENT, EEXIST) is
    no denial, so strict mode passes the test; a swallowed real denial still fails it."""
    import shutil
    import tempfile

    outside = tempfile.mkdtemp(prefix="sandlock-outside-", dir="/var/tmp")
    try:
        monkeypatch.setenv("OUTSIDE_DIR", outside)
        pytester.makepyfile(test_inner=LOOKUP_FAILURES)
        result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--sandlock-strict")
        result.assert_outcomes(passed=1, failed=1)
        result.stdout.fnmatch_lines(["*FAILED test_inner.py::test_control_a_real_denial_swallowed*"])
        result.stdout.no_fnmatch_line("*no-such-dir*denied*")
        assert os.listdir(outside) == []
    finally:
        shutil.rmtree(outside, ignore_errors=True)


NESTED = """
import subprocess, sys

def test_runs_pytest_in_a_subprocess(tmp_path):
    # What pytester.runpytest_subprocess() does: a nested pytest, which loads pytest-sandlock too.
    (tmp_path / "test_innermost.py").write_text("def test_innermost():\\n    pass\\n")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path, capture_output=True, text=True,
    )
    print(proc.stdout)
    assert proc.returncode == 0, proc.stdout
"""


def test_a_nested_pytest_in_a_strict_test(pytester) -> None:
    """A pytest run inside a sandboxed test probes for a seccomp listener for its header; the
    kernel refuses a second one in the chain (EBUSY). That is no denial (found running anyio's
    suite, whose tests run pytester), and the nested header says why it cannot sandbox."""
    pytester.makepyfile(test_inner=NESTED)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--sandlock-strict", "-s")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*already runs under a seccomp notification listener*"])


DYNAMIC_MARKS_CONFTEST = """
import json

def pytest_configure(config):
    config.addinivalue_line("markers", "custom: a mark with arguments")
    config.addinivalue_line("markers", "first: a mark inserted in front")

def pytest_runtest_teardown(item):
    # Runs in the pytest process: what the item's marks are there after the call.
    marks = [[m.name, repr(m.args), repr(sorted(m.kwargs.items()))] for m in item.own_markers]
    with open(item.config.rootpath / f"{item.name}.parent.json", "w") as fh:
        json.dump(marks, fh)
"""

DYNAMIC_MARKS = """
import json, threading, pytest

def seen_in_child(request):
    marks = [[m.name, repr(m.args), repr(sorted(m.kwargs.items()))] for m in request.node.own_markers]
    with open(request.config.rootpath / f"{request.node.name}.child.json", "w") as fh:
        json.dump(marks, fh)

def test_add_marker_xfail(request):
    request.node.add_marker(pytest.mark.xfail(reason="known bug"))
    assert False

def test_applymarker_xfail_raises(request):
    request.applymarker(pytest.mark.xfail(reason="applied", raises=ZeroDivisionError))
    1 / 0

def test_applymarker_xfail_wrong_exception(request):
    request.applymarker(pytest.mark.xfail(raises=KeyError))
    raise ValueError("not a KeyError")

def test_dynamic_xfail_that_passes(request):
    request.node.add_marker(pytest.mark.xfail(reason="maybe fixed"))

def test_dynamic_strict_xfail_that_passes(request):
    request.node.add_marker(pytest.mark.xfail(reason="must fail", strict=True))

@pytest.mark.custom("static", level=1)
def test_marks_keep_their_order(request):
    request.node.add_marker(pytest.mark.first(1, 2.5, None, key=("a", b"b")), append=False)
    request.node.add_marker(pytest.mark.first("in front of it"), append=False)
    request.node.add_marker(pytest.mark.custom("dynamic", raises=KeyError))
    seen_in_child(request)
"""


def test_marks_added_during_the_call_reach_pytest(pytester):
    """A dynamic xfail (add_marker, applymarker) decides the outcome as in plain pytest, and every
    mark the test added is on the pytest process's item, in the child's order."""
    pytester.makeconftest(DYNAMIC_MARKS_CONFTEST)
    pytester.makepyfile(test_inner=DYNAMIC_MARKS)
    outcomes = {"passed": 1, "failed": 2, "xfailed": 2, "xpassed": 1}
    plain = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rxX")
    plain.assert_outcomes(**outcomes)  # the control: plain pytest
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rxX", "--sandlock-strict")
    result.assert_outcomes(**outcomes)
    result.stdout.fnmatch_lines(
        [
            "XFAIL test_inner.py::test_add_marker_xfail - known bug",
            "XFAIL test_inner.py::test_applymarker_xfail_raises - applied",
            "XPASS test_inner.py::test_dynamic_xfail_that_passes - maybe fixed",
        ]
    )
    result.stdout.fnmatch_lines(["*test_dynamic_strict_xfail_that_passes*", "[[]XPASS(strict)] must fail"])
    result.stdout.fnmatch_lines(["*ValueError: not a KeyError*"])
    result.stdout.no_fnmatch_line("*sandlock: the marker*")
    child = json.loads((pytester.path / "test_marks_keep_their_order.child.json").read_text())
    parent = json.loads((pytester.path / "test_marks_keep_their_order.parent.json").read_text())
    assert [m[0] for m in child] == ["first", "first", "custom", "custom"]
    assert parent == child


UNCARRIED_MARKS = """
import threading, pytest

class Opaque:
    pass

def test_mark_that_does_not_pickle(request):
    request.node.add_marker(pytest.mark.custom(threading.Lock()))
    request.node.add_marker(pytest.mark.xfail(reason="still applied"))
    assert False

def test_mark_that_is_not_plain_data(request):
    request.node.add_marker(pytest.mark.custom(Opaque()))
"""


def test_marks_that_cannot_cross_back_are_reported(pytester):
    """A mark whose arguments do not pickle, or are not plain data the pytest process may restore,
    is not applied and said so (an internal warning); the test's other marks still apply."""
    pytester.makeconftest(DYNAMIC_MARKS_CONFTEST)
    pytester.makepyfile(test_inner=UNCARRIED_MARKS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--sandlock-strict")
    result.assert_outcomes(passed=1, xfailed=1, warnings=2)
    result.stdout.fnmatch_lines(
        [
            "*sandlock: the marker 'custom' that test_inner.py::test_mark_that_does_not_pickle added "
            "during the call could not be carried back to the pytest process*",
        ]
    )
    result.stdout.fnmatch_lines(
        [
            "*sandlock: the marker 'custom' that test_inner.py::test_mark_that_is_not_plain_data added "
            "during the call was not applied*",
        ]
    )


USER_PROPERTIES = """
import pytest

class Opaque:
    def __str__(self):
        return "opaque as text"

def test_records(record_property):
    record_property("answer", 42)
    record_property("object", Opaque())

def test_records_then_fails(record_property, request):
    record_property("before", "failing")
    request.node.user_properties.append(("appended", [1, 2]))
    assert False
"""


@pytest.mark.parametrize("mode", [(), ("-n", "2")], ids=["serial", "xdist"])
def test_recorded_properties_reach_junitxml(pytester, mode):
    """record_property (and user_properties appended directly) made in the sandbox reach the
    pytest process's report, so --junitxml lists them; a value the pytest process cannot restore
    as itself is carried as its text, which is what junitxml writes anyway."""
    pytester.makepyfile(test_inner=USER_PROPERTIES)
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--sandlock-strict", "--junitxml=out.xml", *mode
    )
    result.assert_outcomes(passed=1, failed=1)
    root = ElementTree.parse(pytester.path / "out.xml").getroot()
    properties = {
        case.get("name"): [(p.get("name"), p.get("value")) for p in case.iter("property")]
        for case in root.iter("testcase")
    }
    assert properties == {
        "test_records": [("answer", "42"), ("object", "opaque as text")],
        "test_records_then_fails": [("before", "failing"), ("appended", "[1, 2]")],
    }


UNPICKLABLE_EXCEPTIONS = """
import threading
import pytest

class NoArgError(AttributeError):
    def __init__(self):
        super().__init__("can't set attribute")

class KwOnlyError(ValueError):
    def __init__(self, *, code):
        super().__init__(f"code {code}")
        self.code = code

class LockedError(ValueError):
    def __init__(self, msg):
        super().__init__(msg)
        self.lock = threading.Lock()  # does not pickle
        self.detail = "kept"

class NeedsTwo(ValueError):
    def __new__(cls, code, detail):  # a __new__ that wants other arguments than its args
        self = super().__new__(cls, f"{code}: {detail}")
        self.code = code
        return self

    def __init__(self, code, detail):
        super().__init__(f"{code}: {detail}")

@pytest.mark.xfail(raises=NeedsTwo, strict=True)
def test_new_with_arguments():
    raise NeedsTwo(1, "x")

@pytest.mark.xfail(raises=NoArgError, strict=True)
def test_no_arg_init():
    raise NoArgError()

@pytest.mark.xfail(raises=KwOnlyError, strict=True)
def test_keyword_only_init():
    raise KwOnlyError(code=3)

@pytest.mark.xfail(raises=LockedError, strict=True)
def test_attribute_that_does_not_pickle():
    raise LockedError("x")

@pytest.mark.xfail(raises=ValueError, strict=True)
def test_subclass_of_raises():
    raise KwOnlyError(code=4)

@pytest.mark.xfail(raises=KeyError, strict=True)
def test_other_class_still_fails():
    raise KwOnlyError(code=5)

def test_fails_with_its_class():
    raise LockedError("shown as itself")
"""


def test_exceptions_that_do_not_pickle_back_keep_their_class(pytester):
    """An exception whose __init__ takes other arguments than its args, or with an attribute that does
    not pickle, is raised in the pytest process as one of its own class (made without its __init__),
    with its args and plain attributes: xfail(raises=...) matches it as without the sandbox (attrs'
    FrozenAttributeError was reported as a failure)."""
    pytester.makeconftest(
        """
        def pytest_exception_interact(node, call, report):
            exc = call.excinfo.value
            print(f"INTERACT {type(exc).__name__} {exc.args!r} {getattr(exc, 'detail', None)}")
        """
    )
    pytester.makepyfile(test_inner=UNPICKLABLE_EXCEPTIONS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--sandlock-strict", "-s")
    control = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:sandlock", "-s")
    for run in (result, control):
        run.assert_outcomes(xfailed=5, failed=2)
    interact = re.findall(r"INTERACT [^\n]*", result.stdout.str())
    assert interact == re.findall(r"INTERACT [^\n]*", control.stdout.str())
    assert "INTERACT LockedError ('shown as itself',) kept" in interact
    result.stdout.fnmatch_lines(["E   *LockedError: shown as itself"])


UNCAUGHT = """
import threading

class Finalized:
    def __del__(self):
        raise RuntimeError("boom in __del__")

def test_raises_in_a_finalizer():
    obj = Finalized()
    del obj

def test_raises_in_a_thread():
    thread = threading.Thread(target=lambda: 1 / 0)
    thread.start()
    thread.join()
"""


@pytest.mark.parametrize("as_errors", [False, True], ids=["warned", "as-errors"])
def test_exceptions_nothing_can_catch_are_reported_as_without_the_sandbox(pytester, as_errors):
    """An exception raised in a finalizer or in a thread the test started ends in pytest's queues (the
    unraisable and thread exception hooks), which pytest turns into warnings after the phase. In the
    sandbox they reached only the child's copies and were lost (found in httpx's suite): they are
    carried back, warned about, and fail the test under -W error, as in a run without the plugin."""
    pytester.makepyfile(test_inner=UNCAUGHT)
    args = ["-p", "no:cacheprovider", "-p", "no:randomly", "-rA"]
    if as_errors:
        args += ["-W", "error::pytest.PytestUnraisableExceptionWarning"]
        args += ["-W", "error::pytest.PytestUnhandledThreadExceptionWarning"]
    result = pytester.runpytest_subprocess(*args, "--sandlock-strict")
    control = pytester.runpytest_subprocess(*args, "-p", "no:sandlock")
    expected = {"failed": 2} if as_errors else {"passed": 2, "warnings": 2}
    for run in (result, control):
        run.assert_outcomes(**expected)
        text = run.stdout.str()
        assert "RuntimeError: boom in __del__" in text
        assert "ZeroDivisionError: division by zero" in text
        assert ("PytestUnraisableExceptionWarning" in text) and (
            "PytestUnhandledThreadExceptionWarning" in text
        )


SUITE_PROPERTIES = """
import pytest

def test_records_for_the_suite(record_testsuite_property):
    record_testsuite_property("ARCH", "x86_64")
    record_testsuite_property("count", 3)

def test_records_then_fails(record_testsuite_property):
    record_testsuite_property("escaped", "a < b & \\x07")
    assert False
"""


def test_suite_properties_reach_junitxml(pytester):
    """record_testsuite_property in a sandboxed test writes to the child's copy of the --junit-xml
    writer: what it recorded is carried back, and the XML lists the same properties, in the same
    order, as a run without the sandbox (the control)."""
    pytester.makepyfile(test_inner=SUITE_PROPERTIES)

    def suite_properties(*args: str) -> list[tuple[str, str]]:
        xml = pytester.path / "out.xml"
        result = pytester.runpytest_subprocess("-p", "no:cacheprovider", f"--junitxml={xml}", *args)
        result.assert_outcomes(passed=1, failed=1)
        root = ElementTree.parse(xml).getroot()
        suite = root if root.tag == "testsuite" else root.find("testsuite")
        assert suite is not None
        found = suite.find("properties")
        return [(p.get("name"), p.get("value")) for p in found.iter("property")] if found is not None else []

    sandboxed = suite_properties("--sandlock-strict")
    control = suite_properties("-p", "no:sandlock")
    assert sandboxed == control
    assert [name for name, _ in control] == ["ARCH", "count", "escaped"]


REPORT_SECTIONS = """
import pytest

@pytest.mark.sandbox
def test_adds_a_section_and_fails(request):
    request.node.add_report_section("call", "custom", "made in the child")
    assert False

@pytest.mark.sandbox
def test_adds_a_section_and_passes(request):
    request.node.add_report_section("call", "other", "shown with -rA")
"""


def test_report_sections_added_during_the_call_are_shown(pytester) -> None:
    """item.add_report_section in the sandbox reaches the pytest process's report (a plugin or a
    test adding its own section, as the capture plugins do), as without the sandbox."""
    pytester.makepyfile(test_inner=REPORT_SECTIONS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rA")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*- Captured custom call -*", "made in the child"])
    result.stdout.fnmatch_lines(["*- Captured other call -*", "shown with -rA"])


UNITTEST_OUTCOMES = """
import unittest


class Outcomes(unittest.TestCase):
    def test_fail(self):
        self.assertEqual(1, 2)

    def test_error(self):
        raise RuntimeError("boom")

    def test_skiptest(self):
        self.skipTest("skipped at run time")

    @unittest.skip("decorator skip")
    def test_skip_decorator(self):
        pass

    @unittest.expectedFailure
    def test_expected_failure(self):
        self.assertEqual(1, 2)

    @unittest.expectedFailure
    def test_unexpected_success(self):
        pass

    def test_pass(self):
        pass


class AsyncOutcomes(unittest.IsolatedAsyncioTestCase):
    async def test_async_fail(self):
        self.assertTrue(False, "async failure")
"""


@pytest.mark.parametrize("mode", [("-p", "no:sandlock"), ("--sandlock-strict",)], ids=["control", "strict"])
def test_unittest_outcomes_cross_back(pytester, mode) -> None:
    """unittest hands its outcomes to the item (addFailure, addSkip...) instead of raising them:
    a sandboxed TestCase that failed used to pass (found running websockets' suite)."""
    pytester.makepyfile(test_inner=UNITTEST_OUTCOMES)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rA", *mode)
    result.assert_outcomes(failed=4, passed=1, skipped=2, xfailed=1)
    result.stdout.fnmatch_lines_random(
        [
            "FAILED test_inner.py::Outcomes::test_fail - AssertionError: 1 != 2",
            "FAILED test_inner.py::Outcomes::test_error - RuntimeError: boom",
            "FAILED test_inner.py::Outcomes::test_unexpected_success*",
            "FAILED test_inner.py::AsyncOutcomes::test_async_fail*",
            "SKIPPED * skipped at run time",
            "XFAIL test_inner.py::Outcomes::test_expected_failure",
        ]
    )


SUBTESTS = """
import unittest


def test_fixture_subtests(subtests):
    for i in range(3):
        with subtests.test(i=i):
            assert i != 1


class Sub(unittest.TestCase):
    def test_subtests(self):
        for i in range(3):
            with self.subTest(i=i):
                self.assertNotEqual(i, 2)

    def test_odd_parameters(self):
        # Parameters neither pickle nor a restricted unpickler take (websockets' suite has both).
        for value in (memoryview(b"ab"), ValueError("an exception")):
            with self.subTest(value=value):
                self.assertIsInstance(value, int)
"""


def _summary_lines(result) -> list[str]:
    """The short test summary's lines of the tests with ordinary parameters. (Those of
    test_odd_parameters differ: plain pytest 9.0 shows them unquoted serially and cannot send them
    under xdist at all; sandboxed they show as their repr in quotes.)"""
    prefixes = ("SUBFAILED", "FAILED", "SUBPASSED", "PASSED")
    return sorted(
        line for line in result.stdout.lines if line.startswith(prefixes) and "odd_parameters" not in line
    )


@pytest.mark.parametrize("xdist", [(), ("-n", "2")], ids=["serial", "xdist"])
def test_subtest_reports_cross_back(pytester, xdist) -> None:
    """Subtests log their own reports during the call, i.e. in the sandboxed child: they are
    carried back and logged in the pytest process, and a test with a failed subtest fails, exactly
    as without the sandbox (it used to pass, its subtests unseen: found running websockets' suite).
    Compared line by line with the same run without the plugin: pytest 9.0 and 9.2 show the
    parameters differently, and 9.2 quotes them again under xdist (its own serialization)."""
    if not hasattr(pytest, "Subtests"):
        pytest.skip("pytest < 9 has no subtests of its own")
    pytester.makepyfile(test_inner=SUBTESTS)
    control = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rA", "-p", "no:sandlock", *xdist)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rA", "--sandlock-strict", *xdist)
    result.stdout.fnmatch_lines_random(
        [
            "SUBFAILED(i=*1*) test_inner.py::test_fixture_subtests - assert 1 != 1",
            "FAILED test_inner.py::test_fixture_subtests - contains 1 failed subtest",
            "SUBFAILED(i=*2*) test_inner.py::Sub::test_subtests - AssertionError: 2 == 2",
            "SUBFAILED(value=*<memory at *>*) test_inner.py::Sub::test_odd_parameters*",
            "SUBFAILED(value=*ValueError('an exception')*) test_inner.py::Sub::test_odd_parameters*",
            "*5 failed, 2 passed*",
        ]
    )
    assert result.ret == control.ret == 1
    assert _summary_lines(result) == _summary_lines(control)


def test_a_writable_directory_in_the_marker_is_made_when_written_as_one(pytester):
    """fs_write=["build/"] (the README's own example) makes build/ when it is missing, so the test can
    write there; a missing path written without the slash fails the test with the reason, not with a
    bare EACCES. Both outside the temp dir (which is writable anyway)."""
    import shutil
    import tempfile

    base = tempfile.mkdtemp(prefix="sandlock-fs-write-", dir="/var/tmp")
    try:
        pytester.makepyfile(
            test_inner=f"""
            import os, pytest

            @pytest.mark.sandbox(fs_write=["{base}/build/"])
            def test_build():
                os.makedirs("{base}/build/out", exist_ok=True)
                with open("{base}/build/out/x.txt", "w") as fh:
                    fh.write("x")

            @pytest.mark.sandbox(fs_write=["{base}/out"])
            def test_missing():
                pass
            """
        )
        result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--sandlock-strict")
        result.assert_outcomes(passed=1, failed=1)
        with open(f"{base}/build/out/x.txt") as written:
            assert written.read() == "x"
        result.stdout.fnmatch_lines(
            ["*could not sandbox test_inner.py::test_missing: PolicyError: fs_write */out: does not exist*"]
        )
        assert not os.path.exists(f"{base}/out")
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_how_the_call_runs_is_pytests(pytester):
    """The child calls the test as pytest would. A plain test function goes through the
    pytest_pyfunc_call hook (a conftest wrapper sees it, in the child); an item class with a runtest of
    its own (here a Function subclass, like unittest's) has that runtest called."""
    pytester.makeconftest(
        """
        import os, pytest

        @pytest.hookimpl(wrapper=True)
        def pytest_pyfunc_call(pyfuncitem):
            pyfuncitem.add_report_section("call", "wrapper", f"wrapped in {os.getpid()}")
            return (yield)

        class OwnRuntest(pytest.Function):
            def runtest(self):
                self.add_report_section("call", "own", f"own runtest in {os.getpid()}")
                super().runtest()

        def pytest_pycollect_makeitem(collector, name, obj):
            if name == "test_own":
                return [OwnRuntest.from_parent(collector, name=name, callobj=obj)]
        """
    )
    pytester.makepyfile(
        """
        import os, pytest

        @pytest.mark.sandbox
        def test_plain():
            assert False, f"plain in {os.getpid()}"

        @pytest.mark.sandbox
        def test_own():
            assert False, f"own in {os.getpid()}"
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(failed=2)
    out = result.stdout.str()
    # Only the traceback's "E" lines: the short summary repeats the message when the terminal is wide.
    pids = {name: re.findall(rf"^E +AssertionError: {name} in (\d+)", out, re.M) for name in ("plain", "own")}
    assert len(pids["plain"]) == 1 and len(pids["own"]) == 1, pids
    plain, own = pids["plain"][0], pids["own"][0]
    assert plain != own and str(os.getpid()) not in (plain, own)  # two children, neither this process
    # The hook wrapper ran in each child; the item's own runtest in its child, once.
    assert sorted(re.findall(r"wrapped in (\d+)", out)) == sorted([plain, own])
    assert re.findall(r"own runtest in (\d+)", out) == [own]


def test_random_seeded_by_a_fixture_reaches_the_test_and_tests_do_not_repeat_numbers(pytester):
    """The child's random continues from the pytest process's state: a seed a fixture (or
    pytest-randomly) set decides what the test draws. It was reseeded from the system in each child
    (CPython's at-fork handler), so seeded tests were not reproducible. Unseeded tests still draw
    different numbers from one another."""
    pytester.makepyfile(
        """
        import random
        import pytest

        @pytest.fixture
        def seeded():
            random.seed(1234)

        def test_seeded(seeded):
            assert random.random() == random.Random(1234).random()

        @pytest.mark.parametrize("i", range(3))
        def test_draws(i):
            print(f"DRAW {random.random()!r}")
        """
    )
    for args in (("--sandlock-strict",), ("-p", "no:sandlock")):
        result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-s", *args)
        result.assert_outcomes(passed=4)
        draws = re.findall(r"DRAW (\S+)", result.stdout.str())
        assert len(draws) == 3 and len(set(draws)) == 3, draws


def test_garbage_the_pytest_process_holds_is_freed_once_not_in_every_test(pytester):
    """Cyclic garbage in the pytest process (here made at import; in click's suite, thousands of
    deselected items) is inherited by every child, and each test's gc.collect() freed it again, with
    its finalizers, at the cost of copying the heap. Once a child's collections free that much, the
    pytest process collects itself: later tests find none, as without the sandbox."""
    pytester.makepyfile(
        """
        import gc
        import pytest

        gc.disable()  # no automatic collection frees it first: only the tests' own calls

        class Node:
            def __init__(self):
                self.me = self  # a cycle: only a collection frees it

        _keep = [Node() for _ in range(20000)]
        del _keep

        @pytest.mark.parametrize("i", range(3))
        def test_collects(i):
            print(f"FREED {i} {gc.collect()}")
        """
    )
    for args in (("--sandlock-strict",), ("-p", "no:sandlock")):
        result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:randomly", "-s", *args)
        result.assert_outcomes(passed=3)
        freed = {int(i): int(n) for i, n in re.findall(r"FREED (\d) (\d+)", result.stdout.str())}
        assert freed[0] > 5000 and freed[1] < 1000 and freed[2] < 1000, (args, freed)


def test_a_failed_test_says_which_threads_of_the_pytest_process_its_child_lacks(pytester):
    """A fork copies only the calling thread: a fixture's worker thread (anyio's blocking portal behind
    starlette's TestClient, here a queue worker) is not in the sandboxed child, so a test that hands it
    work fails or waits forever (found in starlette's and fastapi's suites). The failure says which
    threads those are and what to do; a passing test says nothing."""
    pytester.makepyfile(
        """
        import queue, threading
        import pytest

        @pytest.fixture(scope="session")
        def worker():
            jobs, done = queue.Queue(), queue.Queue()

            def run():
                while (job := jobs.get()) is not None:
                    done.put(job * 2)

            thread = threading.Thread(target=run, name="fixture-worker", daemon=True)
            thread.start()
            yield jobs, done
            jobs.put(None)

        def test_hands_work_to_the_fixture_thread(worker):
            jobs, done = worker
            jobs.put(21)
            assert done.get(timeout=2) == 42

        def test_passes(worker):
            pass
        """
    )
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-p", "no:randomly", "--sandlock-strict", "-rA"
    )
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*sandlock: threads*",
            "*other threads, which this test's sandboxed child does not have: fixture-worker.*"
            "or mark the test sandbox(enabled=False).",
        ]
    )
    assert result.stdout.str().count("which this test's sandboxed child does not have") == 1
    control = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-p", "no:randomly", "-p", "no:sandlock"
    )
    control.assert_outcomes(passed=2)


@pytest.mark.parametrize("mode", ["serial", "xdist"])
def test_failing_doctests_are_reported_as_without_the_sandbox(pytester, mode):
    """A doctest that failed in a sandboxed run (an unexpected exception, or other output than
    expected) was an INTERNALERROR: the exception raised in the pytest process on the child's behalf
    lacks the doctest's example, which pytest's repr_failure reads (found running joblib's suite).
    The report carries the child's representation; its lines and the short summary are those of a
    run without the plugin."""
    pytester.makepyfile(
        mod='''
        def f():
            """
            >>> 1 / 0
            1
            """

        def g():
            """
            >>> 1 + 1
            3
            """
        '''
    )
    args = ["-p", "no:cacheprovider", "--doctest-modules", "-rf", *(["-n", "2"] if mode == "xdist" else [])]
    control = pytester.runpytest_subprocess(*args, "-p", "no:sandlock")
    result = pytester.runpytest_subprocess(*args, "--sandlock-strict")
    control.assert_outcomes(failed=2)
    result.assert_outcomes(failed=2)
    assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()
    shown = ("FAILED", "UNEXPECTED EXCEPTION", "ZeroDivisionError", "Expected:", "Got:", "    2", "    3")

    def lines(run: pytest.RunResult) -> list[str]:
        return sorted(line for line in run.stdout.lines if line.startswith(shown))

    assert lines(result) == lines(control)
    assert any(line.startswith("UNEXPECTED EXCEPTION: ZeroDivisionError") for line in lines(result))
