"""Plugin benchmarks: whole pytest runs, plain vs sandboxed, measured side by side in one run.

    python benchmarks/bench_plugin.py [--rounds 5] [--tests 200] [--forked-python PYTHON]

Generates a throwaway suite in a temp dir and runs pytest on it in subprocesses, alternating the
plain and sandboxed variants round by round (these machines are noisy), then prints medians and,
for ratios, the median of the per-round ratios with their range:

1. N trivial tests, plain vs --sandlock-strict: per-test extra cost, against a bare fork()+waitpid()
   of the same pytest process (measured inside that process by a session fixture), three ways: by
   whole-run wall time (which also spreads a run's one-off costs over its N tests), by the marginal
   cost (runs of 2N tests against runs of N: the one-off costs cancel) and timed inside pytest;
   next to two floors any fork-per-test design pays here: a fork+waitpid in each test's call
   phase, and each call run in a bare forked child (no confinement, no supervisor); with
   ``--forked-python`` (an interpreter that has pytest-forked next to this pytest, see run_all.py)
   also ``--forked``, the fork-per-test plugin users already run for isolation, as a reference;
2. 300 connects to a loopback listener from one test, sandboxed vs not;
3. subprocess.run(["/bin/true"]) x50 from one test, sandboxed vs not;
4. 1,000 file writes into tmp_path from one test, sandboxed vs not;
5. pytest process memory (RSS) and open fds before/after 1,000 sandboxed tests;
6. the N trivial tests under -n 2, plain vs --sandlock-strict.
Never part of the test run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time

# Times each test's runtest protocol (shared with ab_commits.py).
PROTOCOL_TIMER = """
_protocol = []

@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_protocol(item, nextitem):
    start = time.perf_counter()
    yield
    _protocol.append(time.perf_counter() - start)
"""

CONFTEST = """
import json, os, socket, statistics, threading, time
import pytest

OUT = os.environ["BENCH_OUT"]

def _record(key, value):
    with open(os.path.join(OUT, key), "a") as fh:
        fh.write(json.dumps(value) + "\\n")

def _fds():
    return len(os.listdir("/proc/self/fd"))

def _rss():
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0

def pytest_sessionstart(session):
    session.config._bench_start = (_rss(), _fds())

def pytest_sessionfinish(session):
    if hasattr(session.config, "workerinput"):
        return
    start = session.config._bench_start
    _record("memory", {"rss_kb": [start[0], _rss()], "fds": [start[1], _fds()]})

# Reference floors (BENCH_FLOOR), to show what any fork-per-test design pays on this machine:
# "fork" forks and reaps a child in each test's call phase, the test itself staying in pytest;
# "naive" runs the test's call in a forked child (no confinement, no supervisor) and only
# waits for a one-byte verdict, as the sandbox waits for its result.
_deferred = []

@pytest.hookimpl(tryfirst=True)
def pytest_runtest_call(item):
    floor = os.environ.get("BENCH_FLOOR")
    if floor == "fork":
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
    elif floor == "naive":
        for done in [p for p in _deferred if os.waitpid(p, os.WNOHANG)[0]]:
            _deferred.remove(done)
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                item.runtest()
                os.write(w, b"1")
            finally:
                os._exit(0)
        os.close(w)
        ok = os.read(r, 1) == b"1"
        os.close(r)
        os.kill(pid, 9)
        _deferred.append(pid)
        if not ok:
            pytest.fail("the forked test failed")
        item.runtest = lambda: None

{protocol_timer}
def pytest_unconfigure(config):
    if (os.environ.get("BENCH_FORK") or os.environ.get("BENCH_PROTOCOL")) and _protocol:
        _record("protocol", statistics.median(_protocol[20:] or _protocol))

@pytest.fixture(scope="session", autouse=True)
def bare_fork_cost():
    if os.environ.get("BENCH_FORK"):
        samples = []
        for _ in range(50):
            t = time.perf_counter()
            pid = os.fork()
            if pid == 0:
                os._exit(0)
            os.waitpid(pid, 0)
            samples.append(time.perf_counter() - t)
        _record("fork", statistics.median(samples))
    yield

@pytest.fixture(scope="session")
def listener():
    srv = socket.create_server(("127.0.0.1", 0), backlog=1024)
    def run():
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            conn.close()
    threading.Thread(target=run, daemon=True).start()
    yield srv.getsockname()[1]
    srv.close()
"""

CONFTEST = CONFTEST.replace("{protocol_timer}", PROTOCOL_TIMER)

TRIVIAL = """
import pytest

@pytest.mark.parametrize("i", range({n}))
def test_trivial(i):
    assert i >= 0
"""

WORK = """
import os, socket, subprocess, time
import pytest
from conftest import _record

def test_connects(listener):
    t = time.perf_counter()
    for _ in range(300):
        s = socket.socket()
        s.connect(("127.0.0.1", listener))
        s.close()
    _record("connect", (time.perf_counter() - t) / 300)

def test_true(listener):
    t = time.perf_counter()
    for _ in range(50):
        subprocess.run(["/bin/true"], check=True)
    _record("true", (time.perf_counter() - t) / 50)

def test_writes(tmp_path):
    t = time.perf_counter()
    for i in range(1000):
        with open(tmp_path / f"f{i % 50}", "w") as fh:
            fh.write("x")
    _record("writes", (time.perf_counter() - t) / 1000)
"""


def _write_suite(root: str, n: int) -> None:
    with open(os.path.join(root, "conftest.py"), "w") as fh:
        fh.write(textwrap.dedent(CONFTEST))
    with open(os.path.join(root, "test_trivial.py"), "w") as fh:
        fh.write(TRIVIAL.format(n=n))
    with open(os.path.join(root, "test_work.py"), "w") as fh:
        fh.write(WORK)
    with open(os.path.join(root, "test_many.py"), "w") as fh:
        fh.write(TRIVIAL.format(n=1000))
    with open(os.path.join(root, "test_double.py"), "w") as fh:  # the marginal cost: 2N against N
        fh.write(TRIVIAL.format(n=2 * n))
    with open(os.path.join(root, "pytest.ini"), "w") as fh:
        fh.write("[pytest]\n")


def _pytest(
    root: str, out: str, *args: str, env_extra: dict[str, str] | None = None, python: str = sys.executable
) -> float:
    env = dict(os.environ, BENCH_OUT=out, **(env_extra or {}))
    cmd = [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly", *args]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"pytest failed ({' '.join(args)}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return elapsed


def _read(out: str, key: str) -> list:
    try:
        with open(os.path.join(out, key)) as fh:
            return [json.loads(line) for line in fh]
    finally:
        if os.path.exists(os.path.join(out, key)):
            os.remove(os.path.join(out, key))


def _ratio(ratios: list[float]) -> str:
    """Median of the per-round ratios, with their range: the noise is part of the result."""
    return f"{statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f})"


def _compile_bytecode() -> None:
    """Write the plugin's bytecode cache once. An installed wheel has it; an editable install under
    PYTHONDONTWRITEBYTECODE=1 (set on the project's VM) would recompile every module in every run,
    which measures the compiler, and only in the sandboxed runs, which load the engine."""
    import pytest_sandlock

    package = os.path.dirname(pytest_sandlock.__file__)
    subprocess.run([sys.executable, "-m", "compileall", "-q", package], check=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tests", type=int, default=200)
    parser.add_argument("--forked-python", help="an interpreter with pytest-forked (a reference row)")
    args = parser.parse_args()
    n = args.tests
    root = tempfile.mkdtemp(prefix="sandlock-bench-")
    out = tempfile.mkdtemp(prefix="sandlock-bench-out-")
    _write_suite(root, n)
    _compile_bytecode()
    strict = "--sandlock-strict"
    rows: list[tuple[str, str, str, str]] = []

    plain_t: list[float] = []
    strict_t: list[float] = []
    forks: list[float] = []
    plain_p: list[float] = []  # median time of one test's runtest protocol, per run
    strict_p: list[float] = []
    floor_t: dict[str, list[float]] = {"fork": [], "naive": []}
    floor_p: dict[str, list[float]] = {"fork": [], "naive": []}
    forked_t: list[float] = []  # pytest-forked, when --forked-python is given
    forked_p: list[float] = []
    plain_x, strict_x = [], []
    plain_2n: list[float] = []
    strict_2n: list[float] = []
    work: dict[str, dict[str, list[float]]] = {
        k: {"plain": [], "box": []} for k in ("connect", "true", "writes")
    }
    for _ in range(args.rounds):
        plain_t.append(_pytest(root, out, "test_trivial.py", env_extra={"BENCH_FORK": "1"}))
        round_forks = _read(out, "fork")
        plain_p.extend(_read(out, "protocol"))
        strict_t.append(_pytest(root, out, "test_trivial.py", strict, env_extra={"BENCH_FORK": "1"}))
        round_forks += _read(out, "fork")
        strict_p.extend(_read(out, "protocol"))
        plain_2n.append(_pytest(root, out, "test_double.py"))
        strict_2n.append(_pytest(root, out, "test_double.py", strict))
        for floor in floor_t:
            env = {"BENCH_FLOOR": floor, "BENCH_FORK": "1"}
            floor_t[floor].append(_pytest(root, out, "test_trivial.py", env_extra=env))
            round_forks += _read(out, "fork")
            floor_p[floor].extend(_read(out, "protocol"))
        forks.append(statistics.median(round_forks))
        if args.forked_python:
            # No bare-fork fixture here: pytest-forked sets session fixtures up in every child.
            env = {"BENCH_PROTOCOL": "1"}
            forked_t.append(
                _pytest(root, out, "test_trivial.py", "--forked", env_extra=env, python=args.forked_python)
            )
            forked_p.extend(_read(out, "protocol"))
        for mode, extra in (("plain", ()), ("box", (strict,))):
            _pytest(root, out, "test_work.py", *extra)
            for key in work:
                work[key][mode].extend(_read(out, key))
        plain_x.append(_pytest(root, out, "test_trivial.py", "-n", "2"))
        strict_x.append(_pytest(root, out, "test_trivial.py", "-n", "2", strict))
    _read(out, "memory")

    def per_test_vs_fork(runs: list[float]) -> list[float]:
        """Per round: (run - plain run) / n, in units of that round's bare fork."""
        return [(r - p) / n / f for r, p, f in zip(runs, plain_t, forks)]

    fork = statistics.median(forks)
    rows.append(
        (
            f"{n} trivial tests, whole run",
            f"{statistics.median(plain_t):.2f} s",
            f"{statistics.median(strict_t):.2f} s",
            _ratio([b / p for b, p in zip(strict_t, plain_t)]),
        )
    )
    extra = statistics.median([(b - p) / n for b, p in zip(strict_t, plain_t)])
    rows.append(
        (
            "extra cost per sandboxed test vs bare fork",
            f"{fork * 1e3:.2f} ms (fork)",
            f"{extra * 1e3:.2f} ms",
            _ratio(per_test_vs_fork(strict_t)),
        )
    )
    # What one more sandboxed test adds to a run: the 2N-test runs against the N-test ones, so that a
    # run's one-off costs (imports, the first test, the end of the session) cancel out, while every
    # per-test cost is in, outside the runtest protocol as well.
    marginal = [((s2 - s1) - (p2 - p1)) / n for s1, s2, p1, p2 in zip(strict_t, strict_2n, plain_t, plain_2n)]
    rows.append(
        (
            f"  same, marginal (runs of {2 * n} against {n} tests)",
            "",
            f"{statistics.median(marginal) * 1e3:.2f} ms",
            _ratio([m / f for m, f in zip(marginal, forks)]),
        )
    )
    rows.append(
        (
            "  same, timed inside pytest (runtest protocol)",
            f"{statistics.median(plain_p) * 1e3:.2f} ms (plain)",
            f"{statistics.median(strict_p) * 1e3:.2f} ms",
            _ratio([(b - p) / f for b, p, f in zip(strict_p, plain_p, forks)]),
        )
    )
    for floor, label in (
        ("fork", "  floor: fork+waitpid in each test's call"),
        ("naive", "  floor: each test's call in a bare forked child"),
    ):
        cost = statistics.median([(r - p) / n for r, p in zip(floor_t[floor], plain_t)])
        rows.append((label, "", f"{cost * 1e3:.2f} ms", _ratio(per_test_vs_fork(floor_t[floor]))))
        inside = statistics.median(floor_p[floor])
        ratios = [(b - p) / f for b, p, f in zip(floor_p[floor], plain_p, forks)]
        rows.append(("    the same floor, timed inside pytest", "", f"{inside * 1e3:.2f} ms", _ratio(ratios)))
    if forked_t:
        cost = statistics.median([(r - p) / n for r, p in zip(forked_t, plain_t)])
        rows.append(
            (
                "  reference: pytest-forked, no sandbox",
                "",
                f"{cost * 1e3:.2f} ms",
                _ratio(per_test_vs_fork(forked_t)),
            )
        )
        ratios = [(b - p) / f for b, p, f in zip(forked_p, plain_p, forks)]
        inside = statistics.median(forked_p)
        rows.append(("    the same, timed inside pytest", "", f"{inside * 1e3:.2f} ms", _ratio(ratios)))
    for key, label, scale, unit in (
        ("connect", "connect to loopback (300x)", 1e6, "us"),
        ("true", 'subprocess.run(["/bin/true"]) (50x)', 1e6, "us"),
        ("writes", "open+write+close in tmp_path (1000x)", 1e6, "us"),
    ):
        pl, bx = work[key]["plain"], work[key]["box"]
        rows.append(
            (
                label,
                f"{statistics.median(pl) * scale:.1f} {unit}",
                f"{statistics.median(bx) * scale:.1f} {unit}",
                _ratio([b / p for b, p in zip(bx, pl)]),
            )
        )
    rows.append(
        (
            f"{n} trivial tests with -n 2",
            f"{statistics.median(plain_x):.2f} s",
            f"{statistics.median(strict_x):.2f} s",
            _ratio([b / p for b, p in zip(strict_x, plain_x)]),
        )
    )

    loaded, unloaded = [], []
    for _ in range(args.rounds):
        loaded.append(_pytest(root, out, "test_many.py"))
        unloaded.append(_pytest(root, out, "test_many.py", "-p", "no:sandlock"))
    rows.append(
        (
            "1,000 unsandboxed tests: plugin loaded vs -p no:sandlock",
            f"{statistics.median(unloaded):.2f} s",
            f"{statistics.median(loaded):.2f} s",
            f"{statistics.median(loaded) / statistics.median(unloaded):.2f}x",
        )
    )
    plain_mem = _read(out, "memory")[-1]
    rows.append(
        (
            "1,000 unsandboxed tests: pytest RSS before/after",
            f"{plain_mem['rss_kb'][0] / 1024:.1f} MiB",
            f"{plain_mem['rss_kb'][1] / 1024:.1f} MiB",
            f"+{(plain_mem['rss_kb'][1] - plain_mem['rss_kb'][0]) / 1024:.1f} MiB",
        )
    )
    _pytest(root, out, "test_many.py", strict)
    mem = _read(out, "memory")[-1]
    rows.append(
        (
            "1,000 sandboxed tests: pytest RSS before/after",
            f"{mem['rss_kb'][0] / 1024:.1f} MiB",
            f"{mem['rss_kb'][1] / 1024:.1f} MiB",
            f"+{(mem['rss_kb'][1] - mem['rss_kb'][0]) / 1024:.1f} MiB",
        )
    )
    rows.append(
        (
            "1,000 sandboxed tests: open fds before/after",
            str(mem["fds"][0]),
            str(mem["fds"][1]),
            f"+{mem['fds'][1] - mem['fds'][0]}",
        )
    )

    print(f"{'measurement':50} {'plain':>16} {'sandboxed':>12} {'ratio (range over rounds)':>26}")
    for name, p, b, r in rows:
        print(f"{name:50} {p:>16} {b:>12} {r:>26}")


if __name__ == "__main__":
    main()
