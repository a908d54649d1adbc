"""pytest's own features with sandboxed tests, under ``--sandlock-strict``, serial and with ``-n 2``:
capsys, capfd, caplog, monkeypatch, tmp_path, recwarn; ``-x``, ``--lf``, ``-k``; ``--pdb``; at-fork handlers
and the garbage collector in the child."""

from __future__ import annotations

import pytest

MODES = {"serial": (), "xdist": ("-n", "2")}


@pytest.fixture(params=sorted(MODES))
def mode(request: pytest.FixtureRequest) -> tuple[str, ...]:
    return MODES[request.param]


BUILTIN_FIXTURES = """
import logging, os, sys, warnings, pytest

PARENT = os.getpid()

def test_capsys(capsys):
    assert os.getpid() != PARENT
    print("to stdout")
    sys.stderr.write("to stderr\\n")
    assert capsys.readouterr() == ("to stdout\\n", "to stderr\\n")

def test_capfd(capfd):
    os.write(1, b"fd one\\n")
    os.write(2, b"fd two\\n")
    assert capfd.readouterr() == ("fd one\\n", "fd two\\n")

def test_caplog(caplog):
    with caplog.at_level(logging.INFO):
        logging.getLogger("inner").info("info line")
    assert caplog.messages == ["info line"]

def test_monkeypatch(monkeypatch):
    monkeypatch.setenv("SANDLOCK_COMPAT", "set")
    monkeypatch.setattr(os, "sep", "!")
    assert os.environ["SANDLOCK_COMPAT"] == "set" and os.sep == "!"

def test_monkeypatch_did_not_leak():
    assert "SANDLOCK_COMPAT" not in os.environ and os.sep == "/"

def test_tmp_path(tmp_path):
    (tmp_path / "f.txt").write_text("written in the sandbox")
    assert (tmp_path / "f.txt").read_text() == "written in the sandbox"

def test_recwarn(recwarn):
    warnings.warn("recorded", DeprecationWarning)
    assert [str(w.message) for w in recwarn] == ["recorded"]

def test_pytest_warns():
    with pytest.warns(UserWarning, match="expected"):
        warnings.warn("expected", UserWarning)

def test_failure_keeps_its_captures(capsys, caplog):
    print("shown in the report")
    logging.getLogger("inner").warning("logged before failing")
    assert 1 == 2
"""


def test_builtin_fixtures_in_strict_mode(pytester, mode):
    pytester.makepyfile(test_builtin=BUILTIN_FIXTURES)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--sandlock-strict", *mode)
    result.assert_outcomes(passed=8, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*Captured stdout call*",
            "shown in the report",
            "*Captured log call*",
            "WARNING  inner:test_builtin.py:* logged before failing",
        ]
    )
    assert "sandlock denials" not in result.stdout.str()


SELECTION = """
import pytest

def test_one():
    pass

def test_two_fails():
    assert False, "two"

def test_three():
    pass

def test_four_fails():
    assert False, "four"
"""


def test_exitfirst_stops_after_the_first_sandboxed_failure(pytester):
    pytester.makepyfile(test_sel=SELECTION)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--sandlock-strict", "-x")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*stopping after 1 failures*"])


def test_exitfirst_with_xdist(pytester):
    pytester.makepyfile(test_sel=SELECTION)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--sandlock-strict", "-x", "-n", "2")
    plain = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-x", "-n", "2")
    outcomes = result.parseoutcomes()
    assert outcomes.get("failed", 0) >= 1  # xdist stops after the first failure, workers finish their test
    assert outcomes.get("failed", 0) + outcomes.get("passed", 0) <= 4
    result.stdout.fnmatch_lines(["*stopping after 1 failures*"])
    assert result.ret == plain.ret  # xdist says "Interrupted" (2) with or without the sandbox


def test_keyword_selection(pytester, mode):
    pytester.makepyfile(test_sel=SELECTION)
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--sandlock-strict", "-k", "fails", *mode
    )
    # xdist's controller does not count the deselected tests (its workers deselect them).
    result.assert_outcomes(failed=2, deselected=0 if mode else 2)


def test_last_failed_reruns_only_the_sandboxed_failures(pytester, mode):
    pytester.makepyfile(test_sel=SELECTION)
    first = pytester.runpytest_subprocess("--sandlock-strict", *mode)
    first.assert_outcomes(passed=2, failed=2)
    again = pytester.runpytest_subprocess("--sandlock-strict", "--lf", *mode)
    again.assert_outcomes(failed=2)
    again.stdout.fnmatch_lines(
        ["2 workers [2 items]"] if mode else ["*run-last-failure: rerun previous 2 failures*"]
    )


def test_pdb_with_strict_runs_unconfined_and_says_so(pytester, client_module, outside):
    """--pdb cannot work across the fork (the debugger would need the terminal in the child): sandboxed
    tests run unconfined instead, and the header says so (documented fallback)."""
    pytester.makepyfile(
        test_pdb=f"""
        from netclient import talk

        def test_unconfined():
            assert talk("127.0.0.2", {outside.port}, b"pdb\\n") == b"pong\\n"
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--sandlock-strict", "--pdb", timeout=60)
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["sandlock: --pdb/--trace given: sandboxed tests run WITHOUT the sandbox"])
    assert outside.wait_received(1) == [b"pdb\n"]


AT_FORK_CONFTEST = """
import os

IN_CHILD = []
os.register_at_fork(after_in_child=lambda: IN_CHILD.append(os.getpid()))
"""

AT_FORK_TESTS = """
import os, random
from conftest import IN_CHILD

def test_first(tmp_path):
    assert IN_CHILD == [os.getpid()]  # the conftest's at-fork handler ran in this test's child
    (tmp_path / "draw.txt").write_text(repr(random.random()))

def test_second(tmp_path):
    assert IN_CHILD == [os.getpid()]
    (tmp_path / "draw.txt").write_text(repr(random.random()))
"""


def test_at_fork_handlers_run_in_the_child_and_random_is_reseeded(pytester, mode):
    """Whichever fork starts the child (the fast one when pytest has one thread, os.fork() under xdist),
    at-fork handlers run in it, and each test gets a fresh random state as after os.fork()."""
    pytester.makeconftest(AT_FORK_CONFTEST)
    pytester.makepyfile(test_atfork=AT_FORK_TESTS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--sandlock-strict", *mode)
    result.assert_outcomes(passed=2)
    draws = [p.read_text() for p in pytester.path.rglob("draw.txt")]
    assert len(draws) == 2 and draws[0] != draws[1], draws


GC_TESTS = """
import gc, weakref, pytest

class Thing:
    pass

THING = Thing()

def test_module_global_has_a_referrer():
    assert gc.get_referrers(THING), f"no referrers; gc.get_freeze_count()={gc.get_freeze_count()}"

@pytest.fixture
def cycle():
    a = Thing()
    a.self = a
    return [a]

def test_cycle_from_fixture_is_collected(cycle):
    ref = weakref.ref(cycle.pop())
    gc.collect()
    assert ref() is None
"""


def test_the_collector_sees_objects_made_before_the_fork(pytester, mode):
    """A sandboxed test's collector is not left frozen by the fork: gc.get_referrers finds a module
    global's referrers (hypothesis' register_random relies on it) and gc.collect frees a cycle a
    fixture made, as in plain pytest."""
    pytester.makepyfile(test_gc=GC_TESTS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--sandlock-strict", *mode)
    result.assert_outcomes(passed=2)
