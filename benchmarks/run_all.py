"""Every benchmark, one command:

    python benchmarks/run_all.py [--quick] [--no-references]

1. ``bench_plugin.py``: whole pytest runs, the six measurements of the performance issue, with
   pytest-forked (installed once into a virtualenv that sees this pytest) as a reference row;
2. ``bench_engine.py``: the engine alone (connect, /bin/true, file writes, ``Sandbox.call``);
   ``bench_machine.py``: what a write fault after a fork costs here (copy vs reuse);
   ``bench_faults.py``: page faults per test of the pytest process and of the children;
3. ``bench_vs_sandlock.py``: supervised connect and launch against the sandlock wheel. The wheel is
   installed (once) into a virtualenv under ``~/.cache/pytest-sandlock-bench``. Where a reference
   is not installable (no network, another architecture), its table runs without it and says why.

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
FORKED_VERSION = "1.7.5"  # pytest-forked: fork-per-test isolation without a sandbox, as a reference
CACHE = os.path.join(os.path.expanduser("~"), ".cache", "pytest-sandlock-bench")


def _reference_python(requirement: str, module: str, system_site_packages: bool) -> tuple[Optional[str], str]:
    """(an interpreter in a cached virtualenv that has ``requirement``, or None; what happened).

    ``system_site_packages``: the virtualenv also sees this interpreter's packages (pytest and this
    plugin), for a pytest plugin measured in the same pytest."""
    name = requirement.replace("==", "-")
    env_dir = os.path.join(CACHE, name + ("-system" if system_site_packages else ""))
    python = os.path.join(env_dir, "bin", "python")
    check = [python, "-c", f"import {module}"]
    if os.path.exists(python) and subprocess.run(check, capture_output=True).returncode == 0:
        return python, f"{requirement} from {env_dir}"
    try:
        venv.create(env_dir, with_pip=True, clear=True, system_site_packages=system_site_packages)
    except Exception as exc:  # noqa: BLE001 - reported, the other tables still run
        return None, f"could not create a virtualenv: {exc}"
    pip = subprocess.run(
        [python, "-m", "pip", "install", "-q", requirement],
        capture_output=True,
        text=True,
    )
    if pip.returncode != 0 or subprocess.run(check, capture_output=True).returncode != 0:
        tail = (pip.stderr or pip.stdout).strip().splitlines()[-1:] or ["import failed"]
        return None, f"{requirement} is not installable here: {tail[0]}"
    return python, f"{requirement} installed into {env_dir}"


def _reference_args(option: str, requirement: str, module: str, system_site_packages: bool) -> list[str]:
    """``[option, interpreter]`` for a benchmark script, or [] (saying why) when not installable."""
    python, note = _reference_python(requirement, module, system_site_packages)
    print(f"\n{note}")
    return [option, python] if python is not None else []


def _run(title: str, argv: list[str]) -> int:
    print(f"\n## {title}\n$ {' '.join(argv)}", flush=True)
    return subprocess.run([sys.executable, *argv], cwd=os.path.dirname(HERE)).returncode


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer rounds: a smoke check")
    parser.add_argument(
        "--no-references", action="store_true", help="skip installing pytest-forked and the sandlock wheel"
    )
    args = parser.parse_args()
    plugin_rounds, engine_rounds = ("2", "3") if args.quick else ("5", "9")
    failed = 0
    plugin = [os.path.join(HERE, "bench_plugin.py"), "--rounds", plugin_rounds]
    if not args.no_references:
        plugin += _reference_args(
            "--forked-python", f"pytest-forked=={FORKED_VERSION}", "pytest_forked", True
        )
    failed |= _run("pytest runs (the six measurements)", plugin)
    failed |= _run("engine", [os.path.join(HERE, "bench_engine.py"), "--rounds", engine_rounds])
    failed |= _run("the machine: page faults after a fork", [os.path.join(HERE, "bench_machine.py")])
    faults = [os.path.join(HERE, "bench_faults.py"), "--runs", "1" if args.quick else "3"]
    failed |= _run("page faults per test", faults)
    vs = [os.path.join(HERE, "bench_vs_sandlock.py"), "--rounds", engine_rounds]
    if not args.no_references:
        vs += _reference_args("--sandlock-python", f"sandlock=={SANDLOCK_VERSION}", "sandlock", False)
    failed |= _run("against the sandlock wheel", vs)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
