"""A/B two commits of the plugin on the per-test cost, side by side in one run.

    python benchmarks/ab_commits.py COMMIT_A COMMIT_B [--rounds 8] [--tests 300]

Checks both commits out as git worktrees (in a temp dir), then runs the same generated suite of
trivial tests under ``--sandlock-strict`` with each, alternating A and B round by round (these
machines are noisy), and prints each side's median time of one test's runtest protocol and the
median of the per-round B/A ratios with their range; then each side's whole-run wall and CPU time
and the median per-round differences, for what a session pays once. This is how each change in BENCHMARKS.md
("What each optimisation bought") was measured. Never part of the test run.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from bench_plugin import PROTOCOL_TIMER, TRIVIAL

# The suite's conftest and tests are bench_plugin.py's (this directory is first on sys.path).
CONFTEST = (
    "import statistics, sys, time\nimport pytest\n"
    + PROTOCOL_TIMER
    + """
def pytest_sessionfinish(session):
    sys.stderr.write(f"PROTOCOL {statistics.median(_protocol[20:] or _protocol) * 1e3:.4f} ms\\n")
"""
)


def _repo() -> str:
    here = os.path.dirname(os.path.abspath(__file__))
    return subprocess.run(
        ["git", "-C", here, "rev-parse", "--show-toplevel"], capture_output=True, text=True, check=True
    ).stdout.strip()


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _run(suite: str, tree: str) -> tuple[float, float, float]:
    """(median ms of one test's runtest protocol, whole run's wall time and CPU time in ms, the
    latter of pytest and all its children) of one strict run. CPU time does not count the time a
    busy host takes the vCPU away, so it is the steadier measure of a session's one-off costs."""
    env = dict(os.environ, PYTHONPATH=tree)  # the worktree's package shadows the installed one
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--sandlock-strict"]
    start, cpu = time.perf_counter(), _children_cpu()
    proc = subprocess.run(cmd, cwd=suite, env=env, capture_output=True, text=True)
    wall = (time.perf_counter() - start) * 1e3
    cpu = (_children_cpu() - cpu) * 1e3
    found = re.search(r"PROTOCOL ([\d.]+) ms", proc.stderr)
    if proc.returncode != 0 or found is None:
        raise SystemExit(f"pytest failed with {tree}:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return float(found.group(1)), wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("a")
    parser.add_argument("b")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--tests", type=int, default=300)
    args = parser.parse_args()
    repo = _repo()
    work = tempfile.mkdtemp(prefix="sandlock-ab-")
    suite = os.path.join(work, "suite")
    os.mkdir(suite)
    with open(os.path.join(suite, "conftest.py"), "w") as fh:
        fh.write(CONFTEST)
    with open(os.path.join(suite, "test_trivial.py"), "w") as fh:
        fh.write(TRIVIAL.format(n=args.tests))
    with open(os.path.join(suite, "pytest.ini"), "w") as fh:
        fh.write("[pytest]\n")
    trees = {name: os.path.join(work, name) for name in ("A", "B")}
    try:
        for name, commit in (("A", args.a), ("B", args.b)):
            subprocess.run(
                ["git", "-C", repo, "worktree", "add", "--detach", trees[name], commit],
                check=True,
                capture_output=True,
            )
            # Bytecode written once, as an installed wheel has it (see bench_plugin.py).
            subprocess.run([sys.executable, "-m", "compileall", "-q", trees[name]], check=True)
        times: dict[str, list[float]] = {"A": [], "B": []}
        walls: dict[str, list[float]] = {"A": [], "B": []}
        cpus: dict[str, list[float]] = {"A": [], "B": []}
        for round_no in range(args.rounds):
            for name in ("A", "B") if round_no % 2 == 0 else ("B", "A"):
                protocol, wall, cpu = _run(suite, trees[name])
                times[name].append(protocol)
                walls[name].append(wall)
                cpus[name].append(cpu)
        ratios = [b / a for a, b in zip(times["A"], times["B"])]
        print(f"A {args.a}: {statistics.median(times['A']):.3f} ms per test (runtest protocol, median)")
        print(f"B {args.b}: {statistics.median(times['B']):.3f} ms per test")
        print(f"B/A: {statistics.median(ratios):.3f}x (range {min(ratios):.3f}-{max(ratios):.3f})")
        # The whole run also carries what a session pays once (imports, probes, exit): B - A per round.
        for label, runs in (("wall", walls), ("CPU", cpus)):
            deltas = [b - a for a, b in zip(runs["A"], runs["B"])]
            print(
                f"whole run, {label}: A {statistics.median(runs['A']):.1f} ms, "
                f"B {statistics.median(runs['B']):.1f} ms; B - A {statistics.median(deltas):+.1f} ms "
                f"(range {min(deltas):+.1f} to {max(deltas):+.1f})"
            )
    finally:
        for tree in trees.values():
            subprocess.run(["git", "-C", repo, "worktree", "remove", "--force", tree], capture_output=True)
        subprocess.run(["git", "-C", repo, "worktree", "prune"], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
