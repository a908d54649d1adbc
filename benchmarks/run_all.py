"""Every benchmark, one command:

    python benchmarks/run_all.py [--quick] [--no-sandlock]

1. ``bench_plugin.py``: whole pytest runs, the six measurements of the performance issue;
2. ``bench_engine.py``: the engine alone (connect, /bin/true, file writes, ``Sandbox.call``);
   ``bench_machine.py``: what a write fault after a fork costs here (copy vs reuse);
3. ``bench_vs_sandlock.py``: supervised connect and launch against the sandlock wheel. The wheel is
   installed (once) into a virtualenv under ``~/.cache/pytest-sandlock-bench``; where it is not
   installable (no network, another architecture), that table runs without the sandlock rows and
   says why.

Each script measures its variants side by side, round by round, and prints its own table.
``--quick`` runs fewer rounds (a smoke check, not numbers to quote). Never part of the test run.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import venv
from typing import Optional

HERE = os.path.dirname(os.path.abspath(__file__))
SANDLOCK_VERSION = "0.9.0"
CACHE = os.path.join(os.path.expanduser("~"), ".cache", "pytest-sandlock-bench")


def _sandlock_python() -> tuple[Optional[str], str]:
    """(interpreter with the sandlock wheel, or None; what happened)."""
    env_dir = os.path.join(CACHE, f"sandlock-{SANDLOCK_VERSION}")
    python = os.path.join(env_dir, "bin", "python")
    check = [python, "-c", "import sandlock"]
    if os.path.exists(python) and subprocess.run(check, capture_output=True).returncode == 0:
        return python, f"sandlock {SANDLOCK_VERSION} from {env_dir}"
    try:
        venv.create(env_dir, with_pip=True, clear=True)
    except Exception as exc:  # noqa: BLE001 - reported, the other tables still run
        return None, f"could not create a virtualenv: {exc}"
    pip = subprocess.run(
        [python, "-m", "pip", "install", "-q", f"sandlock=={SANDLOCK_VERSION}"],
        capture_output=True,
        text=True,
    )
    if pip.returncode != 0 or subprocess.run(check, capture_output=True).returncode != 0:
        tail = (pip.stderr or pip.stdout).strip().splitlines()[-1:] or ["import failed"]
        return None, f"sandlock {SANDLOCK_VERSION} is not installable here: {tail[0]}"
    return python, f"sandlock {SANDLOCK_VERSION} installed into {env_dir}"


def _run(title: str, argv: list[str]) -> int:
    print(f"\n## {title}\n$ {' '.join(argv)}", flush=True)
    return subprocess.run([sys.executable, *argv], cwd=os.path.dirname(HERE)).returncode


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer rounds: a smoke check")
    parser.add_argument("--no-sandlock", action="store_true", help="skip installing the sandlock wheel")
    args = parser.parse_args()
    plugin_rounds, engine_rounds = ("2", "3") if args.quick else ("5", "9")
    failed = 0
    failed |= _run(
        "pytest runs (the six measurements)",
        [os.path.join(HERE, "bench_plugin.py"), "--rounds", plugin_rounds],
    )
    failed |= _run("engine", [os.path.join(HERE, "bench_engine.py"), "--rounds", engine_rounds])
    failed |= _run("the machine: page faults after a fork", [os.path.join(HERE, "bench_machine.py")])
    vs = [os.path.join(HERE, "bench_vs_sandlock.py"), "--rounds", engine_rounds]
    if args.no_sandlock:
        print("\n(sandlock comparison skipped: --no-sandlock)")
    else:
        python, note = _sandlock_python()
        print(f"\n{note}")
        if python is not None:
            vs += ["--sandlock-python", python]
    failed |= _run("against the sandlock wheel", vs)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
