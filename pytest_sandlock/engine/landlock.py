"""Landlock rulesets for the sandbox, through raw system calls.

Landlock is the kernel-enforced half of the file-system and TCP policy: once a process has called
``landlock_restrict_self`` it can never regain access, whatever the code under test does, and the same
holds for every process it forks or executes.

Why ctypes and not the PyPI ``landlock`` package: that package is an alpha, it knows only file-system
rules (no TCP port rules, no scoping of abstract unix sockets and signals), and it hides the ABI level.
We need best effort per ABI level (handle exactly what this kernel knows, and say what it cannot
enforce), and we need to create the ruleset file descriptor once, in the pytest process, and apply it
in every forked child. Three system calls and three small structs are less code than working around
a wrapper, and add no dependency.

How a ruleset is used:

* the parent calls :func:`get_ruleset` (cached per :class:`LandlockSpec`);
* the forked child sets no_new_privs, then applies it (:func:`restrict_self`, or the same syscall
  from the launcher's prepared list), and closes its copies of every cached ruleset descriptor
  (:func:`cached_fds`), so code under test cannot add rules to rulesets that later tests will use.
  Ruleset descriptors are close-on-exec (the kernel sets it), so they never reach an executed program.

Landlock restricts the calling thread only: call :func:`restrict_self` in a freshly forked child,
before it starts threads. It restricts new opens: descriptors inherited from the parent keep their
access.

Limits of ``fs_deny`` (Landlock only grants, it cannot subtract): a denied path under a rule is
enforced by granting the rule on every sibling along the path instead of on the covering directory,
so the denied subtree gets no rule. Consequences:

* entries created later directly in a directory along that path are neither readable nor writable
  until the next ruleset, and entries there cannot be created, removed or renamed (the directory
  itself has no write rule);
* the directories along the path stay listable when every denied path under them is a file; when a
  denied path is a directory they are not listable (a READ_DIR rule on them would cover the denied
  directory too). The import system lists sys.path directories, so denying a directory inside the
  Python installation stops a new interpreter from starting (a forked child still imports, from the
  directory listings it inherited);
* the same inode reached through another path (a hard link, a bind mount) is not denied;
* a denied path that does not exist when the ruleset is built is not denied (it is noted).
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
import threading
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple, TypedDict

from .errors import KernelFeatureError, PolicyError, SandboxError
from .syscalls import prctl, raw_syscall

__all__ = [
    "LandlockInfo",
    "LandlockSpec",
    "Ruleset",
    "abi_version",
    "build_ruleset",
    "clear_cache",
    "describe",
    "errata",
    "get_ruleset",
    "handled_fs_rights",
    "handled_net_rights",
    "restrict_self",
    "scopes",
    "set_no_new_privs",
]

# --- kernel ABI (include/uapi/linux/landlock.h), x86-64 syscall numbers ----------------------------

SYS_LANDLOCK_CREATE_RULESET = 444
SYS_LANDLOCK_ADD_RULE = 445
SYS_LANDLOCK_RESTRICT_SELF = 446

LANDLOCK_CREATE_RULESET_VERSION = 1 << 0
LANDLOCK_CREATE_RULESET_ERRATA = 1 << 1

LANDLOCK_RULE_PATH_BENEATH = 1
LANDLOCK_RULE_NET_PORT = 2

ACCESS_FS_EXECUTE = 1 << 0
ACCESS_FS_WRITE_FILE = 1 << 1
ACCESS_FS_READ_FILE = 1 << 2
ACCESS_FS_READ_DIR = 1 << 3
ACCESS_FS_REMOVE_DIR = 1 << 4
ACCESS_FS_REMOVE_FILE = 1 << 5
ACCESS_FS_MAKE_CHAR = 1 << 6
ACCESS_FS_MAKE_DIR = 1 << 7
ACCESS_FS_MAKE_REG = 1 << 8
ACCESS_FS_MAKE_SOCK = 1 << 9
ACCESS_FS_MAKE_FIFO = 1 << 10
ACCESS_FS_MAKE_BLOCK = 1 << 11
ACCESS_FS_MAKE_SYM = 1 << 12
ACCESS_FS_REFER = 1 << 13
ACCESS_FS_TRUNCATE = 1 << 14
ACCESS_FS_IOCTL_DEV = 1 << 15

ACCESS_NET_BIND_TCP = 1 << 0
ACCESS_NET_CONNECT_TCP = 1 << 1

SCOPE_ABSTRACT_UNIX_SOCKET = 1 << 0
SCOPE_SIGNAL = 1 << 1

PR_SET_NO_NEW_PRIVS = 38

# (name, bit, first ABI that knows it). The names are what `describe()` reports.
_FS_RIGHTS: Tuple[Tuple[str, int, int], ...] = (
    ("EXECUTE", ACCESS_FS_EXECUTE, 1),
    ("WRITE_FILE", ACCESS_FS_WRITE_FILE, 1),
    ("READ_FILE", ACCESS_FS_READ_FILE, 1),
    ("READ_DIR", ACCESS_FS_READ_DIR, 1),
    ("REMOVE_DIR", ACCESS_FS_REMOVE_DIR, 1),
    ("REMOVE_FILE", ACCESS_FS_REMOVE_FILE, 1),
    ("MAKE_CHAR", ACCESS_FS_MAKE_CHAR, 1),
    ("MAKE_DIR", ACCESS_FS_MAKE_DIR, 1),
    ("MAKE_REG", ACCESS_FS_MAKE_REG, 1),
    ("MAKE_SOCK", ACCESS_FS_MAKE_SOCK, 1),
    ("MAKE_FIFO", ACCESS_FS_MAKE_FIFO, 1),
    ("MAKE_BLOCK", ACCESS_FS_MAKE_BLOCK, 1),
    ("MAKE_SYM", ACCESS_FS_MAKE_SYM, 1),
    ("REFER", ACCESS_FS_REFER, 2),
    ("TRUNCATE", ACCESS_FS_TRUNCATE, 3),
    ("IOCTL_DEV", ACCESS_FS_IOCTL_DEV, 5),
)
_NET_RIGHTS: Tuple[Tuple[str, int, int], ...] = (
    ("BIND_TCP", ACCESS_NET_BIND_TCP, 4),
    ("CONNECT_TCP", ACCESS_NET_CONNECT_TCP, 4),
)
_SCOPES: Tuple[Tuple[str, int, int], ...] = (
    ("ABSTRACT_UNIX_SOCKET", SCOPE_ABSTRACT_UNIX_SOCKET, 6),
    ("SIGNAL", SCOPE_SIGNAL, 6),
)

# The only rights the kernel accepts in a rule on a non-directory (anything else: EINVAL).
_FILE_RIGHTS = (
    ACCESS_FS_EXECUTE | ACCESS_FS_WRITE_FILE | ACCESS_FS_READ_FILE | ACCESS_FS_TRUNCATE | ACCESS_FS_IOCTL_DEV
)
# IOCTL_DEV is part of reading: we do not aim to restrict ioctls, and terminals must keep working.
_READ_RIGHTS = ACCESS_FS_READ_FILE | ACCESS_FS_READ_DIR | ACCESS_FS_EXECUTE | ACCESS_FS_IOCTL_DEV
_WRITE_RIGHTS = (
    _READ_RIGHTS
    | ACCESS_FS_WRITE_FILE
    | ACCESS_FS_REMOVE_DIR
    | ACCESS_FS_REMOVE_FILE
    | ACCESS_FS_MAKE_CHAR
    | ACCESS_FS_MAKE_DIR
    | ACCESS_FS_MAKE_REG
    | ACCESS_FS_MAKE_SOCK
    | ACCESS_FS_MAKE_FIFO
    | ACCESS_FS_MAKE_BLOCK
    | ACCESS_FS_MAKE_SYM
    | ACCESS_FS_REFER
    | ACCESS_FS_TRUNCATE
)


class _RulesetAttr(ctypes.Structure):
    # Grew with the ABI: handled_access_net since ABI 4, scoped since ABI 6 (see _ruleset_attr_size).
    _fields_ = [
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    ]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1  # __attribute__((packed)) in the uapi header: 12 bytes, not 16
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


class _NetPortAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("port", ctypes.c_uint64)]


# --- what the kernel supports ---------------------------------------------------------------------

_abi_cache: Optional[int] = None
_unavailable_reason = ""


def abi_version() -> int:
    """Landlock ABI level of the running kernel; 0 when Landlock is missing or disabled. Cached."""
    global _abi_cache, _unavailable_reason
    if _abi_cache is None:
        try:
            _abi_cache = raw_syscall(SYS_LANDLOCK_CREATE_RULESET, 0, 0, LANDLOCK_CREATE_RULESET_VERSION)
        except OSError as exc:
            # ENOSYS: not built in; EOPNOTSUPP: built but not enabled at boot (lsm=). Anything else
            # (a seccomp filter of a container runtime, say) equally means we cannot use it.
            _abi_cache = 0
            _unavailable_reason = f"landlock_create_ruleset: {errno.errorcode.get(exc.errno or 0, '?')}"
    return _abi_cache


def errata() -> int:
    """Bit mask of Landlock errata fixed in the running kernel (0 when unknown or unavailable)."""
    if abi_version() == 0:
        return 0
    try:
        return raw_syscall(SYS_LANDLOCK_CREATE_RULESET, 0, 0, LANDLOCK_CREATE_RULESET_ERRATA)
    except OSError:  # kernels before 6.15 do not know the flag
        return 0


def _mask(table: Tuple[Tuple[str, int, int], ...], abi: int) -> int:
    result = 0
    for _name, bit, since in table:
        if abi >= since:
            result |= bit
    return result


def _names(table: Tuple[Tuple[str, int, int], ...], mask: int) -> List[str]:
    return [name for name, bit, _since in table if mask & bit]


def handled_fs_rights(abi: int) -> int:
    """Every file-system access right that Landlock ABI ``abi`` knows."""
    return _mask(_FS_RIGHTS, abi)


def handled_net_rights(abi: int) -> int:
    """Every network access right that Landlock ABI ``abi`` knows."""
    return _mask(_NET_RIGHTS, abi)


def scopes(abi: int) -> int:
    """Every scope flag that Landlock ABI ``abi`` knows."""
    return _mask(_SCOPES, abi)


class LandlockInfo(TypedDict):
    """What :func:`describe` returns (a plain dict at run time)."""

    abi: int
    available: bool
    reason: str  # why Landlock is unavailable, when describing this kernel
    errata: int  # bit mask of fixed errata of this kernel (0 when an explicit ABI is described)
    fs: List[str]  # handled file-system rights
    net: List[str]  # handled network rights
    scopes: List[str]  # available scopes
    missing: List[str]  # rights and scopes this module knows but this ABI lacks


def describe(abi: Optional[int] = None) -> LandlockInfo:
    """What Landlock enforces at ABI ``abi`` (default: this kernel's), for ``pytest_sandlock check``."""
    kernel = abi is None
    level = abi_version() if abi is None else abi
    all_known = 1 << 62  # larger than any ABI: lists everything this module knows
    return {
        "abi": level,
        "available": level > 0,
        "reason": _unavailable_reason if kernel and level == 0 else "",
        "errata": errata() if kernel else 0,
        "fs": _names(_FS_RIGHTS, handled_fs_rights(level)),
        "net": _names(_NET_RIGHTS, handled_net_rights(level)),
        "scopes": _names(_SCOPES, scopes(level)),
        "missing": (
            _names(_FS_RIGHTS, handled_fs_rights(all_known) & ~handled_fs_rights(level))
            + _names(_NET_RIGHTS, handled_net_rights(all_known) & ~handled_net_rights(level))
            + _names(_SCOPES, scopes(all_known) & ~scopes(level))
        ),
    }


# --- the spec and the ruleset ---------------------------------------------------------------------


@dataclass(frozen=True)
class LandlockSpec:
    """What one sandbox may touch. Hashable: it is the cache key of :func:`get_ruleset`.

    ``fs_read`` None means the whole file system is readable and executable. ``tcp_*_ports`` None
    means that kind of TCP operation is not restricted; an empty frozenset means none is allowed.
    """

    fs_read: Optional[Tuple[str, ...]] = None
    fs_write: Tuple[str, ...] = ()
    fs_deny: Tuple[str, ...] = ()
    tcp_connect_ports: Optional[frozenset[int]] = None
    tcp_bind_ports: Optional[frozenset[int]] = None
    scope_abstract_unix: bool = True
    scope_signal: bool = True


class Ruleset:
    """A Landlock ruleset file descriptor, built in the pytest process, applied in forked children."""

    def __init__(self, fd: int, abi: int, notes: List[str], rule_count: int = 0) -> None:
        self.fd = fd
        self.abi = abi
        self.notes = notes  # what this ABI (or this file system) could not enforce
        self.rule_count = rule_count
        self.owner_pid = os.getpid()  # only the creating process closes it for real (see restrict_self)

    @property
    def closed(self) -> bool:
        return self.fd < 0

    def close(self) -> None:
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)

    def __repr__(self) -> str:
        return f"Ruleset(fd={self.fd}, abi={self.abi}, rules={self.rule_count}, notes={self.notes!r})"


@dataclass(frozen=True)
class _Rule:
    path: str
    access: int
    follow: bool  # follow a final symlink: yes for the spec's own paths, no for enumerated entries


def _ruleset_attr_size(abi: int) -> int:
    # Pass the struct size this ABI knows, so an older kernel never sees fields it would reject.
    if abi >= 6:
        return ctypes.sizeof(_RulesetAttr)
    if abi >= 4:
        return 16
    return 8


def _is_within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _resolve(path: str) -> str:
    return os.path.realpath(os.fspath(path))


# --- file-system rules ----------------------------------------------------------------------------


def _plan_fs_rules(spec: LandlockSpec, notes: List[str]) -> List[_Rule]:
    """Turn the spec's paths into path-beneath rules, splitting rules around denied paths."""
    denies = _existing_denies(spec.fs_deny, notes)
    roots: List[Tuple[str, int]] = [
        (p, _READ_RIGHTS) for p in (("/",) if spec.fs_read is None else spec.fs_read)
    ]
    roots += [(p, _WRITE_RIGHTS) for p in spec.fs_write]
    rules: List[_Rule] = []
    for given, access in roots:
        root = _resolve(given)
        if not os.path.exists(root):
            notes.append(f"{given}: does not exist, no rule")
            continue
        covering = [d for d in denies if _is_within(root, d)]
        if covering:
            notes.append(f"{given}: inside denied {covering[0]}, no rule")
            continue
        inner = [d for d in denies if _is_within(d, root)]
        if inner:
            _split_rule(root, access, inner, rules, notes)
        else:
            rules.append(_Rule(root, access, follow=True))
    return rules


def _existing_denies(paths: Tuple[str, ...], notes: List[str]) -> List[str]:
    denies: List[str] = []
    for given in paths:
        resolved = _resolve(given)
        if os.path.lexists(resolved):
            denies.append(resolved)
        else:
            notes.append(f"{given}: denied path does not exist, not denied if created later")
    return denies


def _split_rule(directory: str, access: int, denies: List[str], rules: List[_Rule], notes: List[str]) -> None:
    """Grant ``access`` on every entry of ``directory`` except the ones leading to ``denies``.

    ``denies`` are resolved paths strictly below ``directory``. Recurses one level per path component.
    """
    # A READ_DIR rule on this directory covers every directory below it. That is harmless when every
    # denied path below is a file (READ_DIR means nothing on a file), and keeps imports working: the
    # import system lists directories on sys.path.
    if access & ACCESS_FS_READ_DIR and not any(os.path.isdir(d) for d in denies):
        rules.append(_Rule(directory, ACCESS_FS_READ_DIR, follow=True))
    by_entry: Dict[str, List[str]] = {}
    for denied in denies:
        first = denied[len(directory.rstrip("/")) + 1 :].split("/", 1)[0]
        by_entry.setdefault(first, []).append(denied)
    try:
        names = os.listdir(directory)
    except OSError as exc:
        # Cannot enumerate: grant nothing here. Safe (deny wins), only narrower than asked.
        notes.append(f"{directory}: cannot list ({exc.strerror}), its entries get no rule")
        return
    for name in names:
        path = os.path.join(directory, name)
        below = by_entry.get(name)
        if below is None:
            rules.append(_Rule(path, access, follow=False))
        elif path in below:
            continue  # the denied entry itself: no rule at all
        elif os.path.isdir(path) and not os.path.islink(path):
            _split_rule(path, access, below, rules, notes)


def _add_path_rule(ruleset_fd: int, rule: _Rule, handled: int, notes: List[str]) -> bool:
    """Add one path-beneath rule; False when the path vanished or cannot carry a rule."""
    flags = os.O_PATH | os.O_CLOEXEC | (0 if rule.follow else os.O_NOFOLLOW)
    try:
        fd = os.open(rule.path, flags)
    except FileNotFoundError:
        return False  # removed since it was listed
    except OSError as exc:
        notes.append(f"{rule.path}: cannot open ({exc.strerror}), no rule")
        return False
    try:
        mode = os.fstat(fd).st_mode  # the inode actually added, so the type cannot race
        if stat.S_ISLNK(mode):
            return False  # a rule on a symlink inode never matches: accesses resolve it first
        access = rule.access & handled
        if not stat.S_ISDIR(mode):
            access &= _FILE_RIGHTS  # the kernel rejects directory rights on anything else
        if not access:
            return False
        attr = _PathBeneathAttr(allowed_access=access, parent_fd=fd)
        try:
            raw_syscall(SYS_LANDLOCK_ADD_RULE, ruleset_fd, LANDLOCK_RULE_PATH_BENEATH, ctypes.addressof(attr))
        except OSError as exc:
            if exc.errno != errno.EBADFD:
                raise OSError(exc.errno, f"landlock_add_rule({rule.path!r}): {exc.strerror}") from None
            # EBADFD: an internal file system (nsfs, pipefs) that cannot carry rules.
            notes.append(f"{rule.path}: file system cannot carry Landlock rules")
            return False
        return True
    finally:
        os.close(fd)


# --- network rules and scopes ---------------------------------------------------------------------


def _net_handled(spec: LandlockSpec, abi: int, notes: List[str]) -> int:
    wanted = 0
    if spec.tcp_connect_ports is not None:
        wanted |= ACCESS_NET_CONNECT_TCP
    if spec.tcp_bind_ports is not None:
        wanted |= ACCESS_NET_BIND_TCP
    if wanted and not handled_net_rights(abi):
        notes.append(f"TCP port rules need Landlock ABI 4 (kernel has {abi}): TCP not restricted by Landlock")
    return wanted & handled_net_rights(abi)


def _port_rules(spec: LandlockSpec, handled_net: int) -> Dict[int, int]:
    """Allowed access per port: one rule per port, carrying connect and/or bind."""
    rules: Dict[int, int] = {}
    for ports, right in (
        (spec.tcp_connect_ports, ACCESS_NET_CONNECT_TCP),
        (spec.tcp_bind_ports, ACCESS_NET_BIND_TCP),
    ):
        if ports is None or not handled_net & right:
            continue
        for port in ports:
            if not 0 <= port <= 65535:
                raise PolicyError(f"TCP port out of range: {port!r}")
            rules[port] = rules.get(port, 0) | right
    return rules


def _add_port_rule(ruleset_fd: int, port: int, access: int) -> None:
    attr = _NetPortAttr(allowed_access=access, port=port)
    try:
        raw_syscall(SYS_LANDLOCK_ADD_RULE, ruleset_fd, LANDLOCK_RULE_NET_PORT, ctypes.addressof(attr))
    except OSError as exc:
        raise OSError(exc.errno, f"landlock_add_rule(port {port}): {exc.strerror}") from None


def _scoped(spec: LandlockSpec, abi: int, notes: List[str]) -> int:
    wanted = (SCOPE_ABSTRACT_UNIX_SOCKET if spec.scope_abstract_unix else 0) | (
        SCOPE_SIGNAL if spec.scope_signal else 0
    )
    if wanted and not scopes(abi):
        notes.append(f"signal and abstract unix socket scoping need Landlock ABI 6 (kernel has {abi})")
    return wanted & scopes(abi)


def _fs_notes(abi: int) -> List[str]:
    notes = []
    if abi < 2:
        notes.append("Landlock ABI 1: renaming or linking across directories is always denied")
    if abi < 3:
        notes.append("truncate needs Landlock ABI 3: truncating read-only files is not prevented")
    return notes


# --- building, caching, applying ------------------------------------------------------------------


def _create_ruleset(abi: int, handled_fs: int, handled_net: int, scoped: int) -> int:
    attr = _RulesetAttr(handled_access_fs=handled_fs, handled_access_net=handled_net, scoped=scoped)
    try:
        return raw_syscall(SYS_LANDLOCK_CREATE_RULESET, ctypes.addressof(attr), _ruleset_attr_size(abi))
    except OSError as exc:
        raise OSError(exc.errno, f"landlock_create_ruleset: {exc.strerror}") from None


def build_ruleset(spec: LandlockSpec) -> Ruleset:
    """Create a ruleset for ``spec`` at this kernel's ABI (best effort); the caller owns its fd."""
    abi = abi_version()
    if abi == 0:
        raise KernelFeatureError(f"Landlock is not available on this kernel ({_unavailable_reason})")
    notes = _fs_notes(abi)
    handled_fs = handled_fs_rights(abi)
    handled_net = _net_handled(spec, abi, notes)
    port_rules = _port_rules(spec, handled_net)  # validates ports before any fd exists
    fd = _create_ruleset(abi, handled_fs, handled_net, _scoped(spec, abi, notes))
    ruleset = Ruleset(fd, abi, notes)
    try:
        for rule in _plan_fs_rules(spec, notes):
            ruleset.rule_count += _add_path_rule(fd, rule, handled_fs, notes)
        for port, access in sorted(port_rules.items()):
            _add_port_rule(fd, port, access)
            ruleset.rule_count += 1
    except BaseException:
        ruleset.close()
        raise
    return ruleset


_cache: Dict[LandlockSpec, Ruleset] = {}
_cache_lock = threading.Lock()  # xdist workers run a second thread
# Per cached spec: the (device, inode) of each watched path when its ruleset was built.
_identities: Dict[LandlockSpec, Dict[str, Optional[Tuple[int, int]]]] = {}


def _identity(path: str) -> Optional[Tuple[int, int]]:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def get_ruleset(spec: LandlockSpec, watch: Tuple[str, ...] = ()) -> Ruleset:
    """The ruleset for ``spec``, built once per distinct spec in this process, and again when a
    ``watch`` path is no longer the file it was: a path-beneath rule holds the inode it was given,
    so a directory removed and made again (a fixture cleaning ``build/``) would lose its access."""
    with _cache_lock:
        ruleset = _cache.get(spec)
        known = _identities.get(spec, {})
        stale = any(path in known and _identity(path) != known[path] for path in watch)
        if ruleset is None or stale or ruleset.closed or ruleset.owner_pid != os.getpid():
            if ruleset is not None and stale and ruleset.owner_pid == os.getpid():
                ruleset.close()
            ruleset = build_ruleset(spec)
            _cache[spec] = ruleset
            _identities[spec] = {path: _identity(path) for path in watch}
        return ruleset


def clear_cache() -> None:
    """Close every cached ruleset (in the process that built them)."""
    with _cache_lock:
        for ruleset in _cache.values():
            if ruleset.owner_pid == os.getpid():
                ruleset.close()
        _cache.clear()
        _identities.clear()


def set_no_new_privs() -> None:
    """prctl(PR_SET_NO_NEW_PRIVS, 1): required before restrict_self without CAP_SYS_ADMIN."""
    try:
        prctl(PR_SET_NO_NEW_PRIVS, 1)
    except OSError as exc:
        raise OSError(exc.errno, f"prctl(PR_SET_NO_NEW_PRIVS): {exc.strerror}") from None


def restrict_self(ruleset: Ruleset) -> None:
    """Confine the calling thread (and its future children) with ``ruleset``. Irreversible.

    In a forked child this then closes the child's copies of every cached ruleset descriptor: the
    kernel lets any holder add rules to a ruleset, and the parent reuses them for later tests. (The
    launcher does not call this: its child makes the same syscall from a list prepared in the
    parent, and closes ``cached_fds()`` by number.)
    """
    if ruleset.closed:
        raise SandboxError("restrict_self: the Landlock ruleset is closed")
    try:
        raw_syscall(SYS_LANDLOCK_RESTRICT_SELF, ruleset.fd, 0)
    except OSError as exc:
        raise restrict_error(exc) from None
    if ruleset.owner_pid != os.getpid():
        _close_inherited(ruleset)


def cached_fds() -> tuple[int, ...]:
    """The descriptors of every cached ruleset of this process: a forked child must close them all
    before running untrusted code (see ``restrict_self``)."""
    pid = os.getpid()
    return tuple(r.fd for r in list(_cache.values()) if r.owner_pid == pid and not r.closed)


def restrict_error(exc: OSError) -> Exception:
    """The exception a failed ``landlock_restrict_self`` raises, with what the errno means here."""
    code = exc.errno
    if code in (errno.ENOSYS, errno.EOPNOTSUPP):
        return KernelFeatureError(f"landlock_restrict_self: Landlock is not available ({exc.strerror})")
    if code == errno.EPERM:
        return OSError(
            code, "landlock_restrict_self: no_new_privs is not set (call set_no_new_privs() first)"
        )
    if code == errno.E2BIG:
        return OSError(
            code, "landlock_restrict_self: too many nested Landlock domains (the kernel allows 16)"
        )
    return OSError(code, f"landlock_restrict_self: {exc.strerror}")


def _close_inherited(applied: Ruleset) -> None:
    # No lock: called in a freshly forked single-threaded child, where the lock may be held forever.
    for ruleset in [applied, *_cache.values()]:
        if ruleset.owner_pid != os.getpid() and not ruleset.closed:
            ruleset.close()
