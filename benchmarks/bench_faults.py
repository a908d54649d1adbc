"""Page faults per test: what the time of a sandboxed test is mostly made of on this machine.

    python benchmarks/bench_faults.py [--tests 300] [--runs 3]

After a fork, every page the pytest process or the child writes for the first time costs a fault
(a copy while the other still maps the page: ~2.2 us on the project's VM). The counts, unlike the
times, barely move between runs, so they show a change of a few pages that no timing can resolve.
For N trivial tests, plain, in a bare forked child (bench_plugin.py's "naive" floor) and under
--sandlock-strict, this prints the medians over runs of:

- the pytest process's minor faults per test (median over the tests of its runtest protocol);
- the children's minor faults per test (all children's faults, reaped by the end, over N).

Never part of the test run.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile

from bench_plugin import CONFTEST, TRIVIAL

FAULTS = """
import resource as _resource

_faults = []

@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_protocol(item, nextitem):
    before = _resource.getrusage(_resource.RUSAGE_SELF).ru_minflt
    yield
    _faults.append(_resource.getrusage(_resource.RUSAGE_SELF).ru_minflt - before)

def pytest_sessionfinish(session):
    import sys
    children = _resource.getrusage(_resource.RUSAGE_CHILDREN).ru_minflt
    parent = statistics.median(_faults[20:] or _faults)
    sys.stderr.write(f"FAULTS {parent} {children / max(1, len(_faults)):.1f}\\n")
"""


def _run(suite: str, env_extra: dict[str, str], *args: str) -> tuple[float, float]:
    env = dict(os.environ, BENCH_OUT=os.path.join(suite, "out"), **env_extra)
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly", *args]
    proc = subprocess.run([*cmd, "test_trivial.py"], cwd=suite, env=env, capture_output=True, text=True)
    found = re.search(r"FAULTS ([\d.]+) ([\d.]+)", proc.stderr)
    if proc.returncode != 0 or found is None:
        raise SystemExit(f"pytest failed ({args}):\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return float(found.group(1)), float(found.group(2))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tests", type=int, default=300)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    suite = tempfile.mkdtemp(prefix="sandlock-faults-")
    os.mkdir(os.path.join(suite, "out"))
    with open(os.path.join(suite, "conftest.py"), "w") as fh:
        fh.write(CONFTEST + FAULTS)
    with open(os.path.join(suite, "test_trivial.py"), "w") as fh:
        fh.write(TRIVIAL.format(n=args.tests))
    with open(os.path.join(suite, "pytest.ini"), "w") as fh:
        fh.write("[pytest]\n")
    variants = {
        "plain": ({}, ()),
        "call in a bare forked child (naive floor)": ({"BENCH_FLOOR": "naive"}, ()),
        "--sandlock-strict": ({}, ("--sandlock-strict",)),
    }
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
    for _ in range(args.runs):
        for name, (env, extra) in variants.items():
            results[name].append(_run(suite, env, *extra))
    title = f"faults per test (median of {args.runs} runs)"
    print(f"{title:45} {'pytest process':>15} {'children':>10}")
    for name, rows in results.items():
        parent = statistics.median(r[0] for r in rows)
        children = statistics.median(r[1] for r in rows)
        print(f"{name:45} {parent:>15.0f} {children:>10.0f}")


if __name__ == "__main__":
    main()
