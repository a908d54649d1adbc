"""The unpickler of what a sandboxed test sends back: it must not let the child run code in the pytest
process. Pure data in, no kernel involved; the child's side is simulated by pickles it could send."""

from __future__ import annotations

import abc
import io
import os
import pickle

import pytest

from pytest_sandlock.exception_transport import ExceptionUnpickler


def _load(data: bytes) -> object:
    return ExceptionUnpickler(io.BytesIO(data)).load()


class Registry(Exception, metaclass=abc.ABCMeta):
    """An exception class with a metaclass whose methods change state (``register``)."""


class Rebuilt(ValueError):
    """Pickles through a classmethod constructor, as pydantic's ValidationError does."""

    __slots__ = ("code",)

    def __init__(self, *, code: int) -> None:
        super().__init__(f"code {code}")
        self.code = code

    @classmethod
    def rebuild(cls, code: int) -> Rebuilt:
        return cls(code=code)

    def __reduce__(self) -> tuple[object, tuple[int]]:
        return (type(self).rebuild, (self.code,))


class _Sends:
    def __init__(self, reduce: tuple[object, tuple[object, ...]]) -> None:
        self._reduce = reduce

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return self._reduce


def test_a_function_outside_exception_classes_is_refused(tmp_path) -> None:
    marker = tmp_path / "ran"
    with pytest.raises(pickle.UnpicklingError):
        _load(pickle.dumps(_Sends((os.system, (f"touch {marker}",)))))
    assert not marker.exists()


@pytest.mark.parametrize("method", ["register", "mro", "__subclasses__"])
def test_only_an_exception_class_own_classmethods_are_reached(method: str) -> None:
    """A method of the metaclass (ABCMeta.register would make KeyError a Registry) or of ``type`` is
    not an exception's constructor: refused, and nothing changed."""
    args: tuple[object, ...] = (KeyError,) if method == "register" else ()
    with pytest.raises(pickle.UnpicklingError):
        _load(pickle.dumps(_Sends((getattr(Registry, method), args))))
    assert not issubclass(KeyError, Registry)


def test_an_exception_pickled_through_its_classmethod_comes_back_as_itself() -> None:
    exc = _load(pickle.dumps(Rebuilt(code=7)))
    assert type(exc) is Rebuilt and exc.code == 7 and exc.args == ("code 7",)


def test_a_stand_in_keeps_the_class_it_was_made_of() -> None:
    """The child's attributes are set on the stand-in one by one; ``__class__`` and ``__dict__`` among
    them would let the child swap what the pytest process raises (Swapped has Plain's layout, so the
    assignment itself would work)."""
    from pytest_sandlock.exception_transport import same_class_stand_in

    info = {
        "class": [__name__, "Plain"],
        "args": pickle.dumps(("text",)),
        "text": "text",
        "state": {
            "__class__": pickle.dumps(Swapped),
            "__dict__": pickle.dumps({}),
            "note": pickle.dumps("x"),
        },
    }
    exc = same_class_stand_in(info)
    assert type(exc) is Plain and exc.args == ("text",) and exc.note == "x"  # type: ignore[attr-defined]


class Plain(ValueError):
    pass


class Swapped(ValueError):
    pass
