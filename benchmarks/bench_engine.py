"""Engine micro-benchmarks, each measured side by side with its unsandboxed twin in one run.

    python benchmarks/bench_engine.py [--rounds 9]

Prints medians over rounds (each round interleaves the sandboxed and the plain variant, because
these machines are noisy) and the median of the per-round ratios sandboxed / plain, with their
range. Never part of the test run.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pytest_sandlock.engine.policy import Policy  # noqa: E402
from pytest_sandlock.engine.sandbox import Sandbox  # noqa: E402


def _listener() -> int:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1024)

    def accept() -> None:
        while True:
            conn, _ = srv.accept()
            conn.close()

    threading.Thread(target=accept, daemon=True).start()
    return int(srv.getsockname()[1])


def connects(port: int, n: int) -> float:
    """Seconds per socket+connect+close to a loopback listener."""
    start = time.perf_counter()
    for _ in range(n):
        s = socket.socket()
        s.connect(("127.0.0.1", port))
        s.close()
    return (time.perf_counter() - start) / n


def true_launches(n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        subprocess.run(["/bin/true"], check=True)
    return (time.perf_counter() - start) / n


def file_writes(directory: str, n: int) -> float:
    start = time.perf_counter()
    for i in range(n):
        with open(os.path.join(directory, f"f{i % 50}"), "w") as fh:
            fh.write("x")
    return (time.perf_counter() - start) / n


def bare_fork(n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
    return (time.perf_counter() - start) / n


def sandbox_calls(box: Sandbox, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        box.call(int)
    return (time.perf_counter() - start) / n


def _median_pair(
    rounds: int, plain: Callable[[], float], boxed: Callable[[], float]
) -> tuple[float, float, list[float]]:
    """Medians of both variants and the per-round ratios (each round runs them back to back)."""
    p, b = [], []
    for _ in range(rounds):
        p.append(plain())
        b.append(boxed())
    return statistics.median(p), statistics.median(b), [y / x for x, y in zip(p, b)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    port = _listener()
    box = Sandbox(Policy(net=["127.0.0.1"]))
    tmp = tempfile.mkdtemp()
    rows: list[tuple[str, float, float, str, list[float]]] = []

    plain, boxed, ratios = _median_pair(
        args.rounds, lambda: connects(port, 300), lambda: box.call(connects, port, 300).value
    )
    rows.append(("connect 127.0.0.1 (300x)", plain * 1e6, boxed * 1e6, "us", ratios))
    plain, boxed, ratios = _median_pair(
        args.rounds, lambda: true_launches(50), lambda: box.call(true_launches, 50).value
    )
    rows.append(('subprocess.run(["/bin/true"]) (50x)', plain * 1e6, boxed * 1e6, "us", ratios))
    plain, boxed, ratios = _median_pair(
        args.rounds, lambda: file_writes(tmp, 1000), lambda: box.call(file_writes, tmp, 1000).value
    )
    rows.append(("open+write+close in temp dir (1000x)", plain * 1e6, boxed * 1e6, "us", ratios))
    plain, boxed, ratios = _median_pair(args.rounds, lambda: bare_fork(100), lambda: sandbox_calls(box, 100))
    rows.append(("Sandbox.call(int) vs bare fork+waitpid (100x)", plain * 1e3, boxed * 1e3, "ms", ratios))

    print(f"{'measurement':48} {'plain':>10} {'sandboxed':>10} {'ratio (range over rounds)':>26}")
    for name, p, b, unit, ratios in rows:
        spread = f"{statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f})"
        print(f"{name:48} {p:>8.1f}{unit} {b:>8.1f}{unit} {spread:>26}")


if __name__ == "__main__":
    main()
