"""How a sandboxed test's exceptions and warnings cross from the child back to the pytest process.

The child sends plain data (:func:`exception_data`): the exception pickled when it pickles, and its
class, args and attributes each on their own. The pytest process rebuilds it through a restricted
unpickler (:class:`ExceptionUnpickler`), which resolves nothing but builtin data types and exception
or warning classes this process has imported already, since the child is untrusted; an exception that
does not pickle back becomes one of the same class (:func:`same_class_stand_in`). pytest's own outcome
exceptions (skip, fail, xfail, exit) claim to live in ``builtins`` and so travel as fields.
"""

from __future__ import annotations

import io
import pickle
import sys
from typing import Any, Callable, Optional

import pytest


def try_pickle(obj: object) -> Optional[bytes]:
    try:
        return pickle.dumps(obj)
    except Exception:
        return None


def exception_data(exc: BaseException) -> dict[str, Any]:
    """An exception as plain data for the pytest process (see ``rebuild_exception_value``)."""
    return {
        "pickled": try_pickle(exc),
        "type": f"{type(exc).__module__}.{type(exc).__qualname__}",
        "text": safe_str(exc),
        # For an exception that does not pickle back (an __init__ that takes other arguments than
        # its args, an attribute that does not pickle): its class, args and attributes, each sent on
        # its own, so that the pytest process can still make one of its class.
        "class": [type(exc).__module__, type(exc).__qualname__],
        "args": try_pickle(exc.args),
        "state": {k: try_pickle(v) for k, v in getattr(exc, "__dict__", {}).items() if isinstance(k, str)},
    }


def _outcome_classes() -> tuple[tuple[str, type[BaseException]], ...]:
    return (
        ("skip", pytest.skip.Exception),
        ("fail", pytest.fail.Exception),
        ("xfail", pytest.xfail.Exception),
        ("exit", pytest.exit.Exception),
    )


def outcome_exception(exc: BaseException) -> Optional[dict[str, Any]]:
    """pytest's outcome exceptions claim ``__module__ = "builtins"`` and so do not pickle: send fields."""
    for kind, cls in _outcome_classes():
        if type(exc) is cls:
            return {
                "kind": kind,
                "msg": getattr(exc, "msg", None),
                "pytrace": bool(getattr(exc, "pytrace", True)),
                "allow_module_level": bool(getattr(exc, "allow_module_level", False)),
                "use_item_location": bool(getattr(exc, "_use_item_location", False)),
                "returncode": getattr(exc, "returncode", None),
            }
    return None


def rebuild_outcome(data: dict[str, Any]) -> Optional[BaseException]:
    kind, msg = data.get("kind"), data.get("msg")
    msg = msg if isinstance(msg, str) else None
    if kind == "skip":
        return pytest.skip.Exception(
            msg,
            bool(data.get("pytrace", True)),
            bool(data.get("allow_module_level")),
            _use_item_location=bool(data.get("use_item_location")),
        )
    if kind == "fail":
        return pytest.fail.Exception(msg, bool(data.get("pytrace", True)))
    if kind == "xfail":
        return pytest.xfail.Exception(msg)
    if kind == "exit":
        code = data.get("returncode")
        return pytest.exit.Exception(msg or "unknown reason", code if isinstance(code, int) else None)
    return None


def safe_str(obj: object) -> str:
    try:
        return str(obj)
    except Exception as exc:
        return f"<unprintable {type(obj).__name__}: {type(exc).__name__}>"


class ExceptionUnpickler(pickle.Unpickler):
    """Rebuilds exceptions and warnings from the child without letting it run code here.

    The child is untrusted: a plain ``pickle.loads`` would let a test call anything in the pytest process
    (``__reduce__`` returning ``os.system``). Only builtin data types and exception/warning classes of
    modules this process has already imported are resolved; nothing is imported on the child's behalf.
    """

    _BUILTIN_DATA = frozenset(
        ("builtins", n)
        for n in ("set", "frozenset", "list", "dict", "tuple", "bytearray", "bytes", "complex")
    )

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._BUILTIN_DATA:
            return super().find_class(module, name)
        if (module, name) == ("builtins", "getattr"):  # how protocol 4 names a bound classmethod
            return _constructor_getattr
        found: Any = _known_exception_class(module, name)
        if found is None and "." in name:
            found = _exception_constructor(module, name)
        if found is None:
            raise pickle.UnpicklingError(f"{module}.{name} is not an exception class")
        return found


def _exception_constructor(module: str, name: str) -> Any:
    """``module.Class.method`` for ``_constructor_of``."""
    owner_name, _, method = name.rpartition(".")
    cls = _known_exception_class(module, owner_name)
    return None if cls is None else _constructor_of(cls, method)


def _constructor_getattr(owner: Any, name: Any) -> Any:
    """``getattr`` for the unpickler: only what ``_constructor_of`` allows."""
    if isinstance(owner, type) and issubclass(owner, BaseException) and isinstance(name, str):
        found = _constructor_of(owner, name)
        if found is not None:
            return found
    raise pickle.UnpicklingError(f"getattr({owner!r}, {name!r}) is not an exception's constructor")


def _constructor_of(cls: type[BaseException], method: str) -> Any:
    """``cls.method`` if it is a classmethod that an exception class of ``cls``'s MRO defines itself:
    an alternative constructor, which some exceptions pickle through (pydantic's
    ``ValidationError.from_exception_data``). Not the metaclass's methods (``register``, ``mro``), not
    a private name; None otherwise."""
    if method.startswith("_"):
        return None
    for klass in cls.__mro__:
        if isinstance(klass, type) and issubclass(klass, BaseException) and method in vars(klass):
            defined = vars(klass)[method]
            if isinstance(defined, classmethod) or type(defined).__name__ == "classmethod_descriptor":
                return getattr(cls, method)
            return None
    return None


def _known_exception_class(module: str, name: str) -> Optional[type[BaseException]]:
    """The exception (or warning) class ``module.name``, if this process has imported it already."""
    obj: Any = sys.modules.get(module)
    for part in name.split("."):
        if obj is None or part.startswith("__"):
            return None
        obj = getattr(obj, part, None)
    return obj if isinstance(obj, type) and issubclass(obj, BaseException) else None


def _new_exception(cls: type[BaseException], args: tuple[Any, ...]) -> Optional[BaseException]:
    """An instance of ``cls`` without its ``__init__``: its own ``__new__``, else (a ``__new__`` that
    wants other arguments) the one of its nearest builtin exception base, which allocates the same
    object; None if neither can (a C type with its own layout)."""
    makers: list[Callable[..., Any]] = [cls.__new__]
    makers += [b.__new__ for b in cls.__mro__[1:] if b.__module__ == "builtins"]
    for make in makers[:2]:
        try:
            exc = make(cls, *args)
            exc.args = args
            return exc
        except Exception:  # noqa: BLE001 - not this way: try the next one
            continue
    return None


def same_class_stand_in(info: dict[str, Any]) -> Optional[BaseException]:
    """An exception of the child's exception's class, for one that does not pickle back: made by the
    class's ``__new__`` (its ``__init__`` may want other arguments; the unpickler would call both),
    given the child's ``args`` and what of its attributes is plain data. xfail(raises=...) and
    ``except`` clauses in hooks then see the class the test raised, not a stand-in of another."""
    names = info.get("class")
    if not (isinstance(names, list) and len(names) == 2 and all(isinstance(n, str) for n in names)):
        return None
    cls = _known_exception_class(names[0], names[1])
    if cls is None:
        return None
    args = try_unpickle(info.get("args"), UNRESTORED)
    if not isinstance(args, tuple):
        args = (info.get("text", ""),)
    exc = _new_exception(cls, args)
    if exc is None:
        return None
    state = info.get("state")
    for key, pickled in state.items() if isinstance(state, dict) else ():
        value = try_unpickle(pickled, UNRESTORED)  # each attribute alone: one lock loses only itself
        if isinstance(key, str) and key not in ("__class__", "__dict__") and value is not UNRESTORED:
            try:
                object.__setattr__(exc, key, value)
            except Exception:  # noqa: BLE001 - a slot or a read-only attribute: left out
                pass
    return exc


UNRESTORED = object()


def try_unpickle(data: Optional[bytes], default: Any = None) -> Any:
    if not isinstance(data, bytes):
        return default
    try:
        return ExceptionUnpickler(io.BytesIO(data)).load()
    except Exception:
        return default


def rebuild_exception_value(info: dict[str, Any]) -> Optional[BaseException]:
    """``exception_data`` back as an exception: itself through the restricted unpickler, else one of
    its class (``same_class_stand_in``); None if neither can be made."""
    exc = try_unpickle(info.get("pickled"))
    if not isinstance(exc, BaseException):
        exc = same_class_stand_in(info)
    return exc if isinstance(exc, BaseException) else None
