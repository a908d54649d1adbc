"""JSON report, xdist, marker registration, usage errors, header, -p no:sandlock, --pdb."""

from __future__ import annotations

import json
import os

import pytest

SUITE = """
import errno, pytest
from netclient import talk

@pytest.mark.sandbox(net=["127.0.0.1"])
def test_connects():
    assert talk("127.0.0.1", {ins}) == b"pong\\n"
    assert talk("127.0.0.2", {out}, b"denied\\n") == errno.EACCES

def test_plain():
    pass

@pytest.mark.sandbox
def test_skipped():
    pytest.skip("no")

@pytest.mark.sandbox
def test_fails():
    assert 0

@pytest.fixture
def broken():
    raise RuntimeError("setup")

@pytest.mark.sandbox
def test_error(broken):
    pass
"""


def _connects(entry):
    return [
        {k: e[k] for k in ("syscall", "category", "host", "port", "argv", "path", "denied")}
        for e in entry["events"]
        if e["syscall"] == "connect"
    ]


@pytest.mark.parametrize("xdist", [False, True], ids=["serial", "xdist"])
def test_json_report(pytester, client_module, inside, outside, xdist):
    pytester.makepyfile(test_inner=SUITE.format(ins=inside.port, out=outside.port))
    args = ["-p", "no:cacheprovider", "--sandlock-report=out/report.json"]
    if xdist:
        args += ["-n", "2"]
    result = pytester.runpytest_subprocess(*args)
    result.assert_outcomes(passed=2, failed=1, skipped=1, errors=1)
    data = json.loads((pytester.path / "out" / "report.json").read_text())
    assert data["version"] == 1 and data["mode"] == "enforce"
    tests = {t["nodeid"]: t for t in data["tests"]}
    assert len(data["tests"]) == len(tests) == 5  # each test exactly once
    assert {n: (t["outcome"], t["sandboxed"]) for n, t in tests.items()} == {
        "test_inner.py::test_connects": ("passed", True),
        "test_inner.py::test_plain": ("passed", False),
        "test_inner.py::test_skipped": ("skipped", True),
        "test_inner.py::test_fails": ("failed", True),
        "test_inner.py::test_error": ("error", True),
    }
    assert _connects(tests["test_inner.py::test_connects"]) == [
        {
            "syscall": "connect",
            "category": "network",
            "host": "127.0.0.1",
            "port": inside.port,
            "argv": None,
            "path": None,
            "denied": False,
        },
        {
            "syscall": "connect",
            "category": "network",
            "host": "127.0.0.2",
            "port": outside.port,
            "argv": None,
            "path": None,
            "denied": True,
        },
    ]
    for event in tests["test_inner.py::test_connects"]["events"]:
        assert set(event) == {
            "syscall",
            "category",
            "pid",
            "parent_pid",
            "host",
            "port",
            "argv",
            "path",
            "denied",
        }
        assert isinstance(event["pid"], int)
    assert tests["test_inner.py::test_plain"]["events"] == []
    assert inside.wait_received(1) == [b"hello\n"]
    assert outside.received == []


@pytest.mark.parametrize("mode", ["--sandlock-strict", "--sandlock-audit"])
def test_modes_under_xdist_match_serial(pytester, client_module, inside, outside, mode):
    pytester.makepyfile(test_inner=SUITE.format(ins=inside.port, out=outside.port))
    outcomes = []
    for extra in ([], ["-n", "2"]):
        result = pytester.runpytest_subprocess(
            "-p", "no:cacheprovider", mode, "--sandlock-report=r.json", *extra
        )
        outcomes.append(result.parseoutcomes())
        data = json.loads((pytester.path / "r.json").read_text())
        assert data["mode"] == mode[len("--sandlock-") :]
        assert sorted(t["nodeid"] for t in data["tests"]) == sorted(
            f"test_inner.py::{n}"
            for n in ("test_connects", "test_plain", "test_skipped", "test_fails", "test_error")
        )
        assert all(t["sandboxed"] for t in data["tests"])
    assert outcomes[0] == outcomes[1]


def test_xdist_descriptors_are_closed_in_the_child(pytester):
    fdfile = pytester.path / "fds.txt"
    pytester.makepyfile(
        test_inner=f"""
        import errno, os, pytest

        def test_worker_fds(request):
            fds = []
            for plugin in request.config.pluginmanager.get_plugins():
                gw_io = getattr(getattr(getattr(plugin, "channel", None), "gateway", None), "_io", None)
                if gw_io is not None:
                    fds += [gw_io.infile.fileno(), gw_io.outfile.fileno()]
            assert fds, "no xdist channel found"
            for fd in fds:
                os.fstat(fd)  # open in the worker
            with open("{fdfile}", "w") as f:
                f.write(" ".join(map(str, fds)))

        @pytest.mark.sandbox
        def test_child_fds():
            fds = [int(x) for x in open("{fdfile}").read().split()]
            for fd in fds:
                with pytest.raises(OSError) as info:
                    os.write(fd, b"garbage")
                assert info.value.errno == errno.EBADF
        """
    )
    # one worker, file order: the first test records the worker's channel descriptors
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-n", "1")
    result.assert_outcomes(passed=2)


def test_marker_registered_and_documented(pytester):
    pytester.makepyfile(
        test_inner="""
        import pytest
        @pytest.mark.sandbox(timeout=10)
        def test_x():
            pass
        """
    )
    pytester.runpytest_subprocess("-p", "no:cacheprovider", "--strict-markers").assert_outcomes(passed=1)
    result = pytester.runpytest_subprocess("--markers")
    result.stdout.fnmatch_lines(["@pytest.mark.sandbox(net=None, fs_read=None, *enabled=True): *"])


def test_invalid_marker_is_a_usage_error_naming_test_and_value(pytester):
    pytester.makepyfile(
        test_inner="""
        import pytest
        @pytest.mark.sandbox(net=["127.0.0.1:99999"])
        def test_bad_port():
            pass

        @pytest.mark.sandbox(max_memory="lots")
        def test_bad_memory():
            pass

        @pytest.mark.sandbox(colour="red")
        def test_unknown():
            pass

        @pytest.mark.sandbox(net=["unix:relative.sock"])
        def test_bad_unix_rule():
            pass

        def test_fine():
            pass
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "ERROR: pytest-sandlock:",
            "test_inner.py::test_bad_port: invalid sandbox policy from @pytest.mark.sandbox: *99999*",
            "test_inner.py::test_bad_memory: invalid sandbox policy from @pytest.mark.sandbox: *lots*",
            "test_inner.py::test_unknown: @pytest.mark.sandbox got unknown argument(s) colour*",
            "test_inner.py::test_bad_unix_rule: invalid sandbox policy from @pytest.mark.sandbox: net rule"
            " 'unix:relative.sock': a unix socket rule is unix:/ABSOLUTE/PATH or unix:@NAME",
        ]
    )
    assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()
    # Under xdist the same tests error at setup with the same message, and the others still run.
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-n", "2")
    result.assert_outcomes(passed=1, errors=4)
    result.stdout.fnmatch_lines(["*pytest-sandlock usage error: test_inner.py::test_bad_port: *99999*"])
    assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()


def test_invalid_ini_is_a_usage_error(pytester):
    pytester.makeini("[pytest]\nsandlock_net = not-a-valid-rule:x\n")
    pytester.makepyfile(test_inner="def test_x(sandlock_policy):\n    pass\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*test_inner.py::test_x: invalid sandbox policy from the sandlock_* ini options*"]
    )


def test_header_and_disable(pytester):
    pytester.makeconftest(
        """
        import os, pytest
        @pytest.fixture(scope="session")
        def session_pid():
            return os.getpid()
        """
    )
    pytester.makepyfile(
        test_inner="""
        import os, pytest
        @pytest.mark.sandbox
        def test_x(session_pid):
            print("forked", os.getpid() != session_pid)
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-s")
    result.stdout.fnmatch_lines(["sandlock: *", "sandlock mode: enforce", "*forked True*"])
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-s", "-p", "no:sandlock")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*forked False*"])
    assert "sandlock mode" not in result.stdout.str()


def test_header_warns_when_the_source_tree_is_writable(pytester):
    """A checkout inside the system temp dir (always writable for sandboxed tests) cannot be made
    read-only: Landlock only adds access. The header says so instead of letting a strict run
    claim what it cannot check (trio's suite, unpacked under /tmp, wrote its mypy cache there)."""
    import shutil
    import tempfile

    pytester.makepyfile(test_inner="def test_x():\n    pass\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")  # pytester's dir is under /tmp
    result.stdout.fnmatch_lines(
        ["sandlock: WARNING: the rootdir is inside *, which sandboxed tests may write: writes into*"]
    )
    outside = tempfile.mkdtemp(prefix="sandlock-rootdir-", dir="/var/tmp")
    try:  # control: a rootdir outside every writable path
        result = pytester.runpytest_subprocess("-p", "no:cacheprovider", f"--rootdir={outside}")
        result.assert_outcomes(passed=1)
        result.stdout.no_fnmatch_line("*rootdir is inside*")
    finally:
        shutil.rmtree(outside, ignore_errors=True)


def test_pdb_runs_sandboxed_tests_unconfined_with_a_message(pytester):
    pytester.makepyfile(
        test_inner="""
        import pytest
        @pytest.mark.sandbox
        def test_ok():
            pass

        def test_fixture(sandlock_policy):
            assert sandlock_policy.events == []
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--pdb", timeout=60)
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["sandlock: --pdb/--trace given: sandboxed tests run WITHOUT the sandbox"])


def test_a_basetemp_pytest_cannot_make_fails_only_the_tests_that_need_it(pytester):
    """When pytest cannot make its basetemp (a shared /tmp where pytest-of-<user> belongs to someone
    else, a file in the way of --basetemp), only the tests asking for tmp_path fail, at their setup.
    The plugin asked for the basetemp in its header and for every sandboxed test, and so ended the
    session with an INTERNALERROR, or failed every test under --sandlock-strict (found running
    tornado's suite as another user). The control is the same run without the plugin."""
    pytester.makepyfile(
        test_inner="""
        def test_no_tmp_path():
            pass

        def test_tmp_path(tmp_path):
            pass
        """
    )
    in_the_way = pytester.path / "a-file"
    in_the_way.write_text("")
    basetemp = f"--basetemp={in_the_way / 'basetemp'}"
    for plugin in (["-p", "no:sandlock"], [], ["--sandlock-strict"]):
        result = pytester.runpytest_subprocess("-p", "no:cacheprovider", basetemp, *plugin)
        result.assert_outcomes(passed=1, errors=1)
        assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()
        result.stdout.fnmatch_lines(["*ERROR at setup of test_tmp_path*"])


def test_the_default_basetemp_is_made_only_when_a_test_asks_for_it(pytester, monkeypatch):
    """pytest's default basetemp lies in the system temp dir, which sandboxed tests may write
    already: the plugin leaves it for pytest to make when a test first asks for ``tmp_path``, as
    without the plugin (making it cost every sandboxed run a directory and, at exit, pytest's clean-up
    of old ones). A test asking for ``tmp_path`` in its signature or inside its call still writes
    there; a basetemp outside the temp dir gets a rule of its own (without it the write is denied).
    Run without pytester's ``--basetemp``, which would make it a given one."""
    import getpass
    import sys

    user = getpass.getuser()
    pytester.makepyfile(
        test_none="""
        def test_nothing():
            pass
        """,
        test_writes="""
        def test_inside_the_call(request):
            path = request.getfixturevalue("tmp_path")
            (path / "made").write_text("x")

        def test_signature(tmp_path):
            (tmp_path / "made").write_text("x")
        """,
    )
    command = (sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--sandlock-strict")
    inside = pytester.path / "inside"
    inside.mkdir()
    monkeypatch.setenv("PYTEST_DEBUG_TEMPROOT", str(inside))
    result = pytester.run(*command, "test_none.py")
    result.assert_outcomes(passed=1)
    assert list(inside.iterdir()) == []  # nothing made: no test asked
    result = pytester.run(*command, "test_writes.py")
    result.assert_outcomes(passed=2)
    # One basetemp, made by the pytest process (in the first test's child it would be the child's).
    made = sorted(str(p.relative_to(inside)) for p in inside.glob("pytest-of-*/pytest-[0-9]*/test_*0/made"))
    names = ("inside_the_call", "signature")
    assert made == [f"pytest-of-{user}/pytest-0/test_{name}0/made" for name in names]

    # The temp dir elsewhere: the default basetemp is not under it, so it needs (and gets) a rule.
    temp, outside = pytester.path / "temp", pytester.path / "outside"
    temp.mkdir()
    outside.mkdir()
    monkeypatch.setenv("TMPDIR", str(temp))
    monkeypatch.setenv("PYTEST_DEBUG_TEMPROOT", str(outside))
    result = pytester.run(*command, "test_writes.py")
    result.assert_outcomes(passed=2)
    assert len(list(outside.glob("pytest-of-*/pytest-0/test_*0/made"))) == 2


def test_paths_and_arguments_that_are_not_utf8_cross_xdist(pytester):
    """A file name or a program argument that is not UTF-8 reaches Python as lone surrogates. In a
    sandboxed test's events and denial text they crashed the pytest-xdist worker (execnet refuses
    them: INTERNALERROR, the rest of its tests never ran; found with click's suite). Reports show
    such bytes as \\xNN escapes."""
    import shutil
    import tempfile

    outside = tempfile.mkdtemp(prefix="sandlock-not-utf8-", dir="/var/tmp")
    try:
        pytester.makepyfile(
            test_inner=f"""
            import subprocess

            def test_file_name(tmp_path):
                (tmp_path / "made-\\udcff").touch()

            def test_argument():
                subprocess.run(["/bin/true", "arg-\\udcfe"], check=True)

            def test_denied_write_swallowed():
                try:
                    open("{outside}/bad-\\udcfd.txt", "w")
                except PermissionError:
                    pass

            def test_after():
                pass
            """
        )
        result = pytester.runpytest_subprocess(
            "-p", "no:cacheprovider", "--sandlock-strict", "-n", "1", "--sandlock-report=report.json"
        )
        result.assert_outcomes(passed=3, failed=1)
        assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()
        result.stdout.fnmatch_lines([f"*{outside}/bad-\\xfd.txt pid * denied (EACCES*"])
        events = [
            e for t in json.loads((pytester.path / "report.json").read_text())["tests"] for e in t["events"]
        ]
        paths = {e["path"] for e in events if e["path"]}
        assert any(p.endswith("made-\\xff") for p in paths)
        assert f"{outside}/bad-\\xfd.txt" in paths
        assert ["/bin/true", "arg-\\xfe"] in [e["argv"] for e in events]
        assert not os.listdir(outside)  # and the denial was real
    finally:
        shutil.rmtree(outside, ignore_errors=True)
