"""pyseccomp, imported without the two subprocesses its import starts.

pyseccomp finds libc and libseccomp with ``ctypes.util.find_library``, which on Linux runs
``ldconfig -p`` in a subprocess for each: about 2 ms of a sandboxed session's start, spent to learn
two names that are the libraries' ABI. While pyseccomp imports, ``find_library`` first tries to load
those sonames (``libc.so.6``, ``libseccomp.so.2``) and answers with the name if it loads; any other
name, or a soname that does not load (musl, another libseccomp ABI), gets the real look-up. The
answer is the one ``ldconfig`` gives wherever the soname loads, and the original function is back
once the import is done.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from typing import Optional

_SONAMES = {"c": "libc.so.6", "seccomp": "libseccomp.so.2"}
_find_library = ctypes.util.find_library


def _soname_first(name: str) -> Optional[str]:
    soname = _SONAMES.get(name)
    if soname is not None:
        try:
            ctypes.CDLL(soname)
        except OSError:
            pass
        else:
            return soname
    return _find_library(name)


ctypes.util.find_library = _soname_first
try:
    import pyseccomp
finally:
    ctypes.util.find_library = _find_library

__all__ = ["pyseccomp"]
