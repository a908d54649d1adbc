"""Run httpx's own test suite plain and under ``--sandlock-strict``; compare outcomes and wall time.

Used by the ``compat-httpx`` tox environment (never by ``.ci/run``; it downloads httpx's sdist from PyPI):

    tox -e compat-httpx                 # or: python tests/compat/run_httpx_suite.py [WORKDIR]

httpx's tests talk to a uvicorn server that a session fixture starts in a thread of the pytest process on
127.0.0.1:8000, plus many in-process transports. Tests written to reach an address off this machine carry
httpx's own ``network`` marker (``http://10.255.255.1/`` for a connect timeout, ``http://example.com``
through a proxy); they are deselected in every mode with ``-m "not network"``, so no mode sends traffic
beyond loopback. (A strict run of the whole suite with that deselection records no denial at all: no other
test reaches beyond loopback.) The uvicorn port is fixed, so the suite cannot run under xdist, with or
without the sandbox: it runs serially.

Exit status 0 when every test has the same outcome in both modes, except tests that strict mode failed
with a denied destination beyond loopback (listed).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
import xml.etree.ElementTree as ET

HTTPX = "httpx==0.28.1"
DESELECT = ["-m", "not network"]
# pytest-asyncio (in the test extra) is not used by httpx, whose filterwarnings=error turns its configuration
# warning into an error; httpx_sandbox_conf grants the one test that writes into its cwd that directory.
COMMON = ["-p", "no:cacheprovider", "-p", "no:benchmark", "-p", "no:asyncio", "-p", "httpx_sandbox_conf"]
COMMON += ["-q", *DESELECT]


def fetch_sdist(workdir: str) -> str:
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", HTTPX, "-d", workdir],
        check=True,
    )
    archive = next(f for f in os.listdir(workdir) if f.startswith("httpx-") and f.endswith(".tar.gz"))
    with tarfile.open(os.path.join(workdir, archive)) as tar:
        tar.extractall(workdir, filter="data")
    return os.path.join(workdir, archive[: -len(".tar.gz")])


def outcomes(junit: str) -> dict[str, tuple[str, str]]:
    """nodeid -> (outcome, failure text) from a JUnit XML file."""
    result = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        nodeid = f"{case.get('classname')}::{case.get('name')}"
        outcome, text = "passed", ""
        for tag, name in (("skipped", "skipped"), ("error", "error"), ("failure", "failed")):
            for child in case.iter(tag):
                outcome, text = name, f"{child.get('message', '')}\n{child.text or ''}"
        result[nodeid] = (outcome, text)
    return result


def denied_beyond_loopback(text: str) -> bool:
    """A strict failure that names a denied destination off loopback."""
    return "sandlock strict: the test was denied" in text and any(
        "not in net policy" in line and " 127." not in line and "[::1]" not in line
        for line in text.splitlines()
    )


def counts(result: dict[str, tuple[str, str]]) -> dict[str, int]:
    return {k: sum(1 for v, _ in result.values() if v == k) for k in ("passed", "failed", "skipped", "error")}


def run(source: str, label: str, extra: list[str]) -> tuple[dict[str, tuple[str, str]], float]:
    junit = os.path.join(os.path.dirname(source), f"{label}.xml")
    started = time.monotonic()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [os.path.dirname(os.path.abspath(__file__)), env.get("PYTHONPATH")])
    )
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", *COMMON, f"--junitxml={junit}", *extra],
        cwd=source,
        env=env,
        capture_output=True,
        text=True,
    )
    elapsed = time.monotonic() - started
    last = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr[-2000:]
    print(f"{label}: {last} (wall {elapsed:.1f}s)")
    return outcomes(junit), elapsed


def main() -> int:
    workdir = sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="sandlock-httpx-")
    source = fetch_sdist(workdir)
    plain, plain_time = run(source, "plain", [])
    strict, strict_time = run(source, "strict", ["--sandlock-strict"])
    differing = {
        n for n in set(plain) | set(strict) if plain.get(n, ("absent",))[0] != strict.get(n, ("absent",))[0]
    }
    beyond = sorted(n for n in differing if n in strict and denied_beyond_loopback(strict[n][1]))
    unexplained = sorted(differing - set(beyond))
    summary = {
        "plain": counts(plain),
        "strict": counts(strict),
        "plain_seconds": round(plain_time, 1),
        "strict_seconds": round(strict_time, 1),
        "strict_over_plain": round(strict_time / plain_time, 2) if plain_time else None,
        "strict_failed_beyond_loopback": beyond,
        "unexplained_differences": unexplained,
    }
    print(json.dumps(summary, indent=1))
    return 1 if unexplained else 0


if __name__ == "__main__":
    sys.exit(main())
