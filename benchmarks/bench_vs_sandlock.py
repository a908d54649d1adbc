"""Supervised connect and command launch: plain vs pytest-sandlock vs the sandlock wheel, in one run.

    python -m venv /tmp/sl && /tmp/sl/bin/pip install sandlock==0.9.0
    python benchmarks/bench_vs_sandlock.py --sandlock-python /tmp/sl/bin/python [--rounds 5]

The same Python loop (300 connects to a loopback listener, timed inside the confined process) runs
unconfined, under ``pytest_sandlock.Sandbox.run`` and under ``sandlock.Sandbox.run``; each round
runs all three, and medians are reported with ratios to plain. Without ``--sandlock-python`` the
sandlock column is skipped. Loopback only.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pytest_sandlock.engine.policy import Policy  # noqa: E402
from pytest_sandlock.engine.sandbox import Sandbox  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_engine import _listener  # noqa: E402

LOOP = """
import socket, sys, time
port, n = int(sys.argv[1]), int(sys.argv[2])
t = time.perf_counter()
for _ in range(n):
    s = socket.socket()
    s.connect(("127.0.0.1", port))
    s.close()
print((time.perf_counter() - t) / n * 1e6)
"""

# With a policy_fn sandlock supervises every connect (without one, an allow-list of host:port
# is left to Landlock's port rules and the destination address is not checked per connect).
SANDLOCK_RUNNER = """
import sys, time, sandlock
port, python, loop, n, with_fn = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5] == "1"
kw = {"policy_fn": (lambda event, ctx: None)} if with_fn else {}
box = sandlock.Sandbox(net_allow=[f"127.0.0.1:{port}"], fs_readable=["/"], fs_writable=["/tmp"], **kw)
result = box.run([python, "-c", loop, port, n])
sys.stdout.write(result.stdout.decode())
sys.stderr.write(result.stderr.decode())
t = time.perf_counter()
for _ in range(20):
    box.run(["/bin/echo", "hi"])
sys.stderr.write("LAUNCH %f\\n" % ((time.perf_counter() - t) / 20))
"""


def _timed(fn: object) -> float:
    start = time.perf_counter()
    fn()  # type: ignore[operator]
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--connects", type=int, default=300)
    parser.add_argument("--sandlock-python", help="an interpreter with the sandlock wheel installed")
    args = parser.parse_args()
    port = _listener()
    argv = [sys.executable, "-c", LOOP, str(port), str(args.connects)]
    ours = Sandbox(Policy(net=[f"127.0.0.1:{port}"]))
    connect: dict[str, list[float]] = {
        "plain": [],
        "pytest-sandlock": [],
        "sandlock 0.9 (rules only)": [],
        "sandlock 0.9 (with policy_fn)": [],
    }
    launch: dict[str, list[float]] = {"plain": [], "pytest-sandlock": [], "sandlock 0.9": []}
    echo = ["/bin/echo", "hi"]
    for _ in range(args.rounds):
        connect["plain"].append(float(subprocess.run(argv, capture_output=True, check=True).stdout))
        result = ours.run(argv)
        connect["pytest-sandlock"].append(float(result.stdout))
        launch["plain"].append(_timed(lambda: subprocess.run(echo, capture_output=True)))
        launch["pytest-sandlock"].append(_timed(lambda: ours.run(echo)))
        if args.sandlock_python:
            runner = [args.sandlock_python, "-c", SANDLOCK_RUNNER, str(port), sys.executable, LOOP]
            for with_fn, key in (("0", "sandlock 0.9 (rules only)"), ("1", "sandlock 0.9 (with policy_fn)")):
                out = subprocess.run([*runner, str(args.connects), with_fn], capture_output=True, text=True)
                if out.returncode == 0 and out.stdout.strip():
                    connect[key].append(float(out.stdout))
                    for line in out.stderr.splitlines():
                        if line.startswith("LAUNCH ") and with_fn == "0":
                            launch["sandlock 0.9"].append(float(line.split()[1]))
                else:
                    print("sandlock run failed:", out.stderr[-500:], file=sys.stderr)
    print(f"{'supervised connect (us per connect)':40} {'median':>9} {'vs plain':>9}")
    base = statistics.median(connect["plain"])
    for name, values in connect.items():
        if values:
            print(f"{name:40} {statistics.median(values):>9.1f} {statistics.median(values) / base:>8.2f}x")
    print(f"{'launch /bin/echo (ms, incl. sandbox setup)':40} {'median':>9} {'vs plain':>9}")
    base = statistics.median(launch["plain"])
    for name, values in launch.items():
        if values:
            print(
                f"{name:40} {statistics.median(values) * 1e3:>9.2f} {statistics.median(values) / base:>8.2f}x"
            )


if __name__ == "__main__":
    main()
