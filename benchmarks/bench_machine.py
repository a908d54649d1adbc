"""What a fork costs on this machine, independent of the sandbox:

    python benchmarks/bench_machine.py [--pages 2000] [--rounds 5]

Every sandboxed test forks the pytest process; afterwards both processes fault on each page they
write. A page still shared with a live child is copied ("copy" fault); once the child is gone the
fault only makes the page writable again ("reuse" fault). On a virtual machine with expensive page
table updates these two numbers explain most of the per-test cost above a bare fork. Never part of
the test run.
"""

from __future__ import annotations

import argparse
import mmap
import os
import signal
import statistics
import time


def _touch(buf: mmap.mmap, pages: int) -> float:
    start = time.perf_counter()
    for i in range(pages):
        buf[i * mmap.PAGESIZE] = 1
    return (time.perf_counter() - start) / pages


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pages", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    buf = mmap.mmap(-1, mmap.PAGESIZE * args.pages, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    _touch(buf, args.pages)
    reuse, copy = [], []
    for _ in range(args.rounds):
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
        reuse.append(_touch(buf, args.pages))  # the child is gone: no copy
        pid = os.fork()
        if pid == 0:
            time.sleep(60)
            os._exit(0)
        copy.append(_touch(buf, args.pages))  # the child still maps every page: copy-on-write
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    print(f"{'write fault after fork':40} {'us per page':>12}")
    print(f"{'page shared with a live child (copy)':40} {statistics.median(copy) * 1e6:>12.2f}")
    print(f"{'child already gone (reuse)':40} {statistics.median(reuse) * 1e6:>12.2f}")


if __name__ == "__main__":
    main()
