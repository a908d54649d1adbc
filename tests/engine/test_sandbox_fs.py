"""Filesystem enforcement of ``Sandbox``: the write ceiling, fs_deny, fs_read narrowing, live deny_path.

Each denial (EACCES, nothing written) is paired with the same operation succeeding where the rule
does not apply, so a sandbox that enforced nothing would fail every test here.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from pathlib import Path

import pytest
from sandbox_helpers import only, outcomes

from pytest_sandlock.engine.channel import client
from pytest_sandlock.engine.errors import PolicyError
from pytest_sandlock.engine.policy import Policy, SyscallCategory
from pytest_sandlock.engine.sandbox import Sandbox

NET = ["127.0.0.1"]


def write_file(path: str, text: str = "data") -> object:
    """Inside the sandbox: create/overwrite ``path``; "written" or the errno."""
    try:
        with open(path, "w") as fh:
            fh.write(text)
        return "written"
    except OSError as exc:
        return exc.errno


def read_file(path: str) -> object:
    try:
        with open(path) as fh:
            return fh.read()
    except OSError as exc:
        return exc.errno


def _probe_name(directory: Path) -> Path:
    return directory / f".sandlock-probe-{os.getpid()}-{os.urandom(4).hex()}"


# --------------------------------------------------------------------------------------------- write ceiling


def test_tmp_path_is_writable_by_default(tmp_path: Path) -> None:
    assert os.path.realpath(tmp_path).startswith(os.path.realpath(tempfile.gettempdir()) + os.sep)
    target = tmp_path / "out.txt"
    result = Sandbox(Policy(net=NET)).call(write_file, str(target), "hello")
    assert result.value == "written"
    assert target.read_text() == "hello"
    event = only(result.events, path=str(target))
    assert event.category is SyscallCategory.FILE and event.denied is False


def _pseudo_terminal() -> object:
    """Inside the sandbox: a new pty, a line through it, a window size set on it; what came out."""
    import fcntl
    import struct
    import termios

    try:
        master, slave = os.openpty()
    except OSError as exc:
        return exc.errno
    try:
        os.write(master, b"hi\n")
        line = os.read(slave, 10)
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
        size = struct.unpack("HHHH", fcntl.ioctl(master, termios.TIOCGWINSZ, b"\0" * 8))[:2]
        return line, size, os.ttyname(slave).startswith("/dev/pts/")
    finally:
        os.close(master)
        os.close(slave)


def test_a_pseudo_terminal_can_be_opened() -> None:
    """os.openpty(), pty.fork() and pexpect open /dev/ptmx and then /dev/pts/N for writing: both are
    always writable, as a terminal is (found running pexpect's suite: EACCES on /dev/ptmx). The
    control is a device that is not always writable: /dev/urandom is refused."""
    result = Sandbox(Policy(net=NET)).call(_pseudo_terminal)
    assert result.value == (b"hi\n", (24, 80), True)
    assert result.denials == []
    control = Sandbox(Policy(net=NET)).call(write_file, "/dev/urandom")
    assert control.value == errno.EACCES
    assert only(control.denials, path="/dev/urandom").reason == "outside the writable paths"


def test_write_into_repo_denied_with_event(tmp_path: Path, repo_dir: Path) -> None:
    target = _probe_name(repo_dir)
    try:
        result = Sandbox(Policy(net=NET)).call(write_file, str(target))
        assert result.value == errno.EACCES
        assert not target.exists()
        event = only(result.events, path=str(target))
        assert event.category is SyscallCategory.FILE
        assert event.syscall in ("open", "openat", "creat")
        assert (event.denied, event.errno) == (True, errno.EACCES)
        assert event.reason == "outside the writable paths"
        # positive control, same sandbox: tmp_path is writable
        assert Sandbox(Policy(net=NET)).call(write_file, str(tmp_path / "ok")).value == "written"
    finally:
        target.unlink(missing_ok=True)


def test_existing_repo_file_cannot_be_modified(repo_dir: Path) -> None:
    victim = repo_dir / "pyproject.toml"
    before = victim.read_bytes()

    def body() -> list[object]:
        out = [read_file(str(victim))[:9]]  # reading is fine
        out.append(write_file(str(victim), "clobbered"))
        try:
            os.truncate(victim, 0)
            out.append("truncated")
        except OSError as exc:
            out.append(exc.errno)
        try:
            with open(victim, "a") as fh:
                fh.write("x")
            out.append("appended")
        except OSError as exc:
            out.append(exc.errno)
        return out

    result = Sandbox(Policy(net=NET)).call(body)
    assert result.value == [before.decode()[:9], errno.EACCES, errno.EACCES, errno.EACCES]
    assert victim.read_bytes() == before
    assert all(
        e.denied and e.path == str(victim) for e in result.events if e.category is SyscallCategory.FILE
    )
    assert len(result.denials) == 3


def test_outcome_and_event_agree_for_every_open_mode(repo_dir: Path) -> None:
    """Write-opens are continued at once and recorded after (Landlock decides); an open that only
    *might* write (O_CREAT with read access, on a file that exists) is decided first. In every case
    the errno the test sees and the event recorded must tell the same story."""
    victim = str(repo_dir / "pyproject.toml")
    modes = {
        "rdonly": os.O_RDONLY,
        "rdonly|creat": os.O_RDONLY | os.O_CREAT,
        "wronly": os.O_WRONLY,
        "rdwr": os.O_RDWR,
        "wronly|append": os.O_WRONLY | os.O_APPEND,
    }

    def body() -> dict[str, object]:
        out: dict[str, object] = {}
        for name, flags in modes.items():
            try:
                os.close(os.open(victim, flags))
                out[name] = "opened"
            except OSError as exc:
                out[name] = exc.errno
        return out

    result = Sandbox(Policy(net=NET)).call(body)
    assert result.value == {
        "rdonly": "opened",
        "rdonly|creat": errno.EACCES,
        "wronly": errno.EACCES,
        "rdwr": errno.EACCES,
        "wronly|append": errno.EACCES,
    }
    opens = [e for e in result.events if e.category is SyscallCategory.FILE and e.path == victim]
    assert [(e.denied, e.errno) for e in opens] == [(True, errno.EACCES)] * 4


def test_path_mutations_outside_writable_set_denied(tmp_path: Path, repo_dir: Path) -> None:
    existing = repo_dir / "pyproject.toml"

    def body(base: str) -> dict[str, object]:
        newdir = os.path.join(base, f".probe-dir-{os.getpid()}")
        return outcomes(
            {
                "mkdir": lambda: os.mkdir(newdir),
                "symlink": lambda: os.symlink("/etc/hostname", newdir + ".lnk"),
                "rename": lambda: os.rename(str(existing), os.path.join(base, "moved")),
                "unlink": lambda: os.unlink(str(existing)),
                "chmod": lambda: os.chmod(str(existing), 0o600),
            }
        )

    mode = existing.stat().st_mode
    result = Sandbox(Policy(net=NET)).call(body, str(repo_dir))
    assert result.value == dict.fromkeys(("mkdir", "symlink", "rename", "unlink", "chmod"), errno.EACCES)
    assert existing.exists() and existing.stat().st_mode == mode
    assert not any(p.name.startswith(f".probe-dir-{result.events[0].pid}") for p in repo_dir.iterdir())
    denied_paths = {e.path for e in result.denials}
    assert str(existing) in denied_paths
    # positive control: mkdir and symlink in tmp_path work (rename/unlink/chmod would touch the repo)
    ok = Sandbox(Policy(net=NET)).call(body, str(tmp_path)).value
    assert ok["mkdir"] == "done" and ok["symlink"] == "done"


def _lookup_failures(base: str) -> dict[str, object]:
    """Inside the sandbox: calls outside the writable paths that fail before any permission check,
    then two that reach Landlock (the controls). Each gives "done" or the errno the code saw."""
    missing = os.path.join(base, "no-such-dir")
    a_file = os.path.join(base, "a-file")
    calls = {
        "create under a missing dir": lambda: os.open(
            os.path.join(missing, "clock.txt"), os.O_RDWR | os.O_CREAT
        ),
        "write a missing file": lambda: os.open(os.path.join(base, "missing"), os.O_WRONLY),
        "create under a file": lambda: os.open(os.path.join(a_file, "x"), os.O_WRONLY | os.O_CREAT),
        "mkdir an existing dir": lambda: os.mkdir(base),
        "makedirs exist_ok": lambda: os.makedirs(base, exist_ok=True),
        "unlink a missing file": lambda: os.unlink(os.path.join(base, "missing")),
        "control: create": lambda: os.open(os.path.join(base, "new"), os.O_WRONLY | os.O_CREAT),
        "control: mkdir": lambda: os.mkdir(os.path.join(base, "newdir")),
    }
    return outcomes(calls)


@pytest.mark.parametrize(
    "decided_by",
    ["landlock", "supervisor (policy_fn)", "supervisor (fs_deny)"],
    ids=["landlock", "fn", "deny"],
)
def test_what_fails_before_permission_checks_is_no_denial(outside_dir: Path, decided_by: str) -> None:
    """A write outside the writable paths that the kernel refuses during its path walk anyway (a
    missing parent directory, an existing name for mkdir) fails as it would with no sandbox and is
    recorded with that errno, not as a denial: strict mode must not fail a test for it. Found by
    running werkzeug's suite: libuuid tries to create /var/lib/libuuid/clock.txt, which does not
    exist, and carries on. The controls in the same sandbox are real denials."""
    (outside_dir / "a-file").write_text("x")
    policy = Policy(net=NET)
    policy_fn = None
    if decided_by == "supervisor (policy_fn)":
        policy_fn = lambda event, ctx: None  # noqa: E731 - allow-all: the supervisor decides first
    elif decided_by == "supervisor (fs_deny)":
        policy = Policy(net=NET, fs_deny=[str(outside_dir / "denied")])
    result = Sandbox(policy, policy_fn).call(_lookup_failures, str(outside_dir))
    assert result.value == {
        "create under a missing dir": errno.ENOENT,
        "write a missing file": errno.ENOENT,
        "create under a file": errno.ENOTDIR,
        "mkdir an existing dir": errno.EEXIST,
        "makedirs exist_ok": "done",
        "unlink a missing file": errno.ENOENT,
        "control: create": errno.EACCES,
        "control: mkdir": errno.EACCES,
    }
    assert sorted(e.path for e in result.denials) == [str(outside_dir / "new"), str(outside_dir / "newdir")]
    assert not (outside_dir / "new").exists() and not (outside_dir / "newdir").exists()
    missing = only(result.events, path=str(outside_dir / "no-such-dir" / "clock.txt"))
    assert (missing.denied, missing.errno) == (False, errno.ENOENT)
    assert missing.reason is not None and missing.reason.startswith("no such file or directory")
    existing = [e for e in result.events if e.syscall in ("mkdir", "mkdirat") and e.path == str(outside_dir)]
    assert existing and all((e.denied, e.errno) == (False, errno.EEXIST) for e in existing)


def test_fs_write_adds_a_writable_dir(outside_dir: Path) -> None:
    target = outside_dir / "granted.txt"
    denied = Sandbox(Policy(net=NET)).call(write_file, str(target))
    assert denied.value == errno.EACCES
    assert not target.exists()
    granted = Sandbox(Policy(net=NET, fs_write=[outside_dir])).call(write_file, str(target), "granted")
    assert granted.value == "written"
    assert target.read_text() == "granted"


def test_a_writable_directory_made_again_stays_writable(outside_dir: Path) -> None:
    """A Landlock rule holds the inode it was given: a granted directory that a fixture removes and
    makes again between tests (a cleaned build/) must stay writable, not turn into a silent EACCES
    that the supervisor records as allowed. Control: a sibling never granted stays refused."""
    build = outside_dir / "build"
    build.mkdir()
    box = Sandbox(Policy(net=NET, fs_write=[build]))
    assert box.call(write_file, str(build / "a.txt")).value == "written"
    shutil.rmtree(build)
    build.mkdir()
    again = box.call(write_file, str(build / "b.txt"))
    assert again.value == "written" and (build / "b.txt").read_text() == "data"
    assert again.denials == []
    assert box.call(write_file, str(outside_dir / "sibling.txt")).value == errno.EACCES


def test_a_ruleset_built_again_reaches_every_sandbox_that_shares_it(outside_dir: Path) -> None:
    """Sandboxes whose rules are the same share one cached ruleset. When one of them has it built
    again (its granted directory was made anew), the old one is closed: the others must take the
    new one, not fail on the closed one."""
    build = outside_dir / "build"
    build.mkdir()
    watching = Sandbox(Policy(net=NET, fs_write=[build]))
    sharing = Sandbox(Policy(net=NET), extra_fs_write=[str(build)])
    assert watching.ruleset is sharing.ruleset
    shutil.rmtree(build)
    build.mkdir()
    assert watching.call(write_file, str(build / "a.txt")).value == "written"
    assert sharing.call(write_file, str(build / "b.txt")).value == "written"
    # control: the new ruleset still confines them both
    assert sharing.call(write_file, str(outside_dir / "sibling.txt")).value == errno.EACCES
    assert not (outside_dir / "sibling.txt").exists()


def test_a_missing_writable_directory_is_made_or_refused_clearly(outside_dir: Path) -> None:
    """Landlock cannot grant a path that does not exist. Written "build/" (a directory), it is made
    when the sandbox is built, and again if it is gone; written without the slash, building the
    sandbox fails with a message that says so (it used to be a silent EACCES in the test)."""
    made = outside_dir / "made"
    box = Sandbox(Policy(net=NET, fs_write=[f"{made}/"]))
    assert made.is_dir()
    assert box.call(write_file, str(made / "x.txt")).value == "written"
    shutil.rmtree(made)
    assert box.call(write_file, str(made / "y.txt")).value == "written"  # made again for the run
    with pytest.raises(PolicyError, match=r"fs_write .*/missing: does not exist.*'.*/missing/'"):
        Sandbox(Policy(net=NET, fs_write=[outside_dir / "missing"]))
    assert not (outside_dir / "missing").exists()


def test_symlink_from_tmp_into_repo_does_not_escape(tmp_path: Path, repo_dir: Path) -> None:
    target = _probe_name(repo_dir)
    link = tmp_path / "link"
    link.symlink_to(target)
    try:
        result = Sandbox(Policy(net=NET)).call(write_file, str(link))
        assert result.value == errno.EACCES
        assert not target.exists()
        assert only(result.events, denied=True).errno == errno.EACCES
        # control: a symlink to a tmp_path file is followed fine
        (tmp_path / "link2").symlink_to(tmp_path / "real")
        assert Sandbox(Policy(net=NET)).call(write_file, str(tmp_path / "link2")).value == "written"
        assert (tmp_path / "real").read_text() == "data"
    finally:
        target.unlink(missing_ok=True)


# --------------------------------------------------------------------------------------------- fs_deny


def test_fs_deny_file_inside_readable_dir(outside_dir: Path) -> None:
    (outside_dir / "secret.txt").write_text("top secret")
    (outside_dir / "public.txt").write_text("public")
    policy = Policy(net=NET, fs_deny=[outside_dir / "secret.txt"])
    box = Sandbox(policy)
    result = box.call(lambda: [read_file(str(outside_dir / n)) for n in ("secret.txt", "public.txt")])
    assert result.value == [errno.EACCES, "public"]
    # positive control: without fs_deny the secret is readable
    assert Sandbox(Policy(net=NET)).call(read_file, str(outside_dir / "secret.txt")).value == "top secret"


def test_fs_deny_directory_inside_writable_tmp(tmp_path: Path) -> None:
    # Documented Landlock limit (landlock.py): new entries directly in a directory along the denied
    # path cannot be created, so the positive controls write an existing sibling and a sibling subdir.
    private = tmp_path / "private"
    private.mkdir()
    (private / "key").write_text("k")
    (tmp_path / "sibling").write_text("s")
    (tmp_path / "subdir").mkdir()
    box = Sandbox(Policy(net=NET, fs_deny=[private]))

    def body() -> dict[str, object]:
        out: dict[str, object] = {
            "read_key": read_file(str(private / "key")),
            "read_sibling": read_file(str(tmp_path / "sibling")),
            "write_key": write_file(str(private / "key"), "overwritten"),
            "write_new": write_file(str(private / "new")),
            "write_sibling": write_file(str(tmp_path / "sibling"), "s2"),
            "create_in_subdir": write_file(str(tmp_path / "subdir" / "new")),
        }
        try:
            out["list"] = sorted(os.listdir(private))
        except OSError as exc:
            out["list"] = exc.errno
        return out

    result = box.call(body)
    assert result.value == {
        "read_key": errno.EACCES,
        "read_sibling": "s",
        "write_key": errno.EACCES,
        "write_new": errno.EACCES,
        "write_sibling": "written",
        "create_in_subdir": "written",
        "list": errno.EACCES,
    }
    assert (tmp_path / "sibling").read_text() == "s2"
    assert (private / "key").read_text() == "k"
    assert not (private / "new").exists()
    assert {e.path for e in result.denials} >= {str(private / "key"), str(private / "new")}


def test_fs_deny_of_a_file_not_yet_created_is_enforced_by_the_supervisor(tmp_path: Path) -> None:
    """Landlock has no rule for a path that does not exist (the ruleset says so in its notes): a
    write-open creating it must still be refused, by the supervisor deciding before the call runs."""
    future = tmp_path / "later.txt"
    box = Sandbox(Policy(net=NET, fs_deny=[future]))
    assert any("not denied if created later" in note for note in box.notes)

    def body() -> dict[str, object]:
        return {
            "denied": write_file(str(future)),
            "below, no parent": write_file(str(future / "x")),  # the kernel's path walk fails first
            "sibling": write_file(str(tmp_path / "other.txt")),  # positive control, same directory
        }

    result = box.call(body)
    assert result.value == {"denied": errno.EACCES, "below, no parent": errno.ENOENT, "sibling": "written"}
    assert not future.exists()
    event = only(result.denials, path=str(future))
    assert (event.errno, event.reason) == (errno.EACCES, "under a denied path")
    # The reason names the rule that would have refused it, not the write ceiling (tmp_path is writable).
    below = only(result.events, path=str(future / "x"))
    assert (below.denied, below.errno) == (False, errno.ENOENT)
    assert below.reason == (
        "no such file or directory: the kernel refuses it before any permission check (under a denied path)"
    )


# --------------------------------------------------------------------------------------------- fs_read


def test_fs_read_narrowing(outside_dir: Path) -> None:
    allowed, other = outside_dir / "a", outside_dir / "b"
    allowed.mkdir()
    other.mkdir()
    (allowed / "f").write_text("in a")
    (other / "f").write_text("in b")

    def body() -> list[object]:
        import json  # an import still works: the interpreter stays readable

        return [read_file(str(allowed / "f")), read_file(str(other / "f")), json.dumps(1)]

    narrowed = Sandbox(Policy(net=NET, fs_read=[allowed])).call(body)
    assert narrowed.value == ["in a", errno.EACCES, "1"]
    # positive control: fs_read omitted means everything is readable
    assert Sandbox(Policy(net=NET)).call(body).value == ["in a", "in b", "1"]


# --------------------------------------------------------------------------------------------- live deny_path


def test_live_deny_path_and_allow_path(tmp_path: Path) -> None:
    target = tmp_path / "dyn.txt"

    def body() -> list[object]:
        live = client()
        assert live is not None
        out = [write_file(str(target), "one")]
        live.deny_path(str(tmp_path))
        out.append(write_file(str(target), "two"))
        live.allow_path(str(tmp_path))
        out.append(write_file(str(target), "three"))
        return out

    result = Sandbox(Policy(net=NET)).call(body)
    assert result.value == ["written", errno.EACCES, "written"]
    assert target.read_text() == "three"
    assert [e.denied for e in result.events if e.path == str(target)] == [False, True, False]
