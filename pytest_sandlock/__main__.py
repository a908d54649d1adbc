"""Command line: ``python -m pytest_sandlock check`` and ``python -m pytest_sandlock run -- CMD...``."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Optional

from .engine.capabilities import probe
from .engine.errors import SandboxError
from .engine.policy import Policy
from .engine.sandbox import Sandbox


def _check(args: argparse.Namespace) -> int:
    caps = probe()
    if args.json:
        print(json.dumps(caps.to_dict(), indent=2))
        return 0 if caps.usable else 1
    ll = caps.landlock
    print(f"architecture:          {caps.arch}")
    print(f"Landlock ABI:          {caps.landlock_abi}")
    print(f"  filesystem rights:   {', '.join(ll.get('fs', [])) or 'none'}")
    print(f"  network rights:      {', '.join(ll.get('net', [])) or 'none'}")
    print(f"  scopes:              {', '.join(ll.get('scopes', [])) or 'none'}")
    print(f"seccomp listener:      {'yes' if caps.seccomp_listener else 'NO'}")
    print(f"  WAIT_KILLABLE_RECV:  {'yes' if caps.wait_killable_recv else 'no'}")
    print(f"  sync wake-up:        {'yes' if caps.sync_wakeup else 'no'}")
    print(f"pidfd_getfd:           {'yes' if caps.pidfd_getfd else 'NO'}")
    print(f"PIDFD_THREAD:          {'yes' if caps.pidfd_thread else 'no'}")
    print(f"child memory readable: {'yes' if caps.child_memory else 'NO'}")
    for note in caps.notes:
        print(f"note: {note}")
    for warning in caps.warnings:
        print(f"warning: {warning}")
    for problem in caps.problems:
        print(f"error: {problem}")
    print("sandboxing: " + ("available" if caps.usable else "NOT available"))
    return 0 if caps.usable else 1


def _run(args: argparse.Namespace) -> int:
    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        print("pytest-sandlock run: no command given (usage: run [options] -- CMD...)", file=sys.stderr)
        return 2
    try:
        policy = Policy(
            net=args.net if args.net is not None else None,
            fs_read=args.fs_read,
            fs_write=args.fs_write or (),
            fs_deny=args.fs_deny or (),
            timeout=args.timeout,
        )
        sandbox = Sandbox(policy, audit=args.audit)
        if args.verbose:
            for note in sandbox.notes:
                print(f"sandlock: not enforced: {note}", file=sys.stderr)
        result = sandbox.run(command)
    except SandboxError as exc:
        print(f"pytest-sandlock run: {exc}", file=sys.stderr)
        return 2
    sys.stdout.buffer.write(result.stdout)
    sys.stdout.flush()
    sys.stderr.buffer.write(result.stderr)
    if args.json:
        json.dump(
            {"returncode": result.returncode, "events": [e.to_dict() for e in result.events]}, sys.stderr
        )
        sys.stderr.write("\n")
    else:
        for event in result.events:
            if event.denied or args.verbose:
                print(f"sandlock: {event.describe()}", file=sys.stderr)
        if result.timed_out:
            print(f"sandlock: timed out after {args.timeout}s; the process tree was killed", file=sys.stderr)
    return result.returncode if result.returncode >= 0 else 128 - result.returncode


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pytest_sandlock", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    check = sub.add_parser(
        "check", help="print what this kernel enforces; non-zero if sandboxing cannot work"
    )
    check.add_argument("--json", action="store_true")
    run = sub.add_parser("run", help="run a command confined and report its denied events on stderr")
    run.add_argument(
        "--net",
        action="append",
        metavar="RULE",
        help="allowed destination (repeatable); "
        "without any --net the network is unrestricted; --net none means no network",
    )
    run.add_argument("--fs-read", action="append", metavar="PATH")
    run.add_argument("--fs-write", action="append", metavar="PATH")
    run.add_argument("--fs-deny", action="append", metavar="PATH")
    run.add_argument("--timeout", type=float, metavar="SECONDS")
    run.add_argument("--audit", action="store_true", help="deny nothing, record everything")
    run.add_argument("--json", action="store_true", help="print every event as JSON on stderr")
    run.add_argument("-v", "--verbose", action="store_true", help="print every event, not just denials")
    run.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    if args.cmd == "run" and args.net is not None and args.net == ["none"]:
        args.net = []
    return _check(args) if args.cmd == "check" else _run(args)


if __name__ == "__main__":
    sys.exit(main())
