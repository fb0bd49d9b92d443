"""Restricted unpickling for third-party dataset pickles (data-formats.md, section 5).

Only the classes on an allow-list are resolved; any other global (``os.system``, ``builtins.eval``, a class with a
malicious ``__reduce__``) is refused with :class:`UnsafePickleError` *before* anything is called, so nothing is
executed. numpy < 2 writes ``numpy.core.*`` names and numpy >= 2 writes ``numpy._core.*``: both spellings resolve to
the installed numpy.

Resources are bounded too, so a tiny hostile file cannot exhaust memory or the stack: allow-listed constructors that
allocate check the size first (an array from ``_reconstruct`` or ``ndarray(shape)`` at most :data:`MAX_ARRAY_BYTES`,
``bytes(n)`` at most :data:`MAX_ARRAY_BYTES`), and the loaded object's container nesting is at most
:data:`MAX_DEPTH` deep (checked iteratively). Every failure is an exception naming the file
(:class:`UnsafePickleError` for refusals, ``ValueError`` for unreadable or oversized content).
"""

from __future__ import annotations

import collections
import importlib
import io
import os
import pickle
from pathlib import Path

import numpy as np

_NUMPY_CORE = "numpy._core" if hasattr(np, "_core") else "numpy.core"

# (module, name) pairs as they appear in the pickle stream, numpy.core spelling (numpy._core resolves to the same).
# Beyond data-formats.md section 5 both lists allow ``_codecs.encode``: pickle protocols <= 2 have no bytes opcode, so
# numpy's raw array data is written as ``_codecs.encode(str, 'latin1')``. It can only run text codecs (torch's
# weights-only loader allows it too), and the plain containers ``bytes``/``set``/``frozenset`` (spelled
# ``__builtin__.*`` by protocol 2; protocol >= 4 has opcodes for them); without these every protocol-2 pickle of
# numpy data would be refused.
NAVSIM_ALLOWLIST = frozenset({
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("_codecs", "encode"),
    ("builtins", "bytes"),
    ("builtins", "set"),
    ("builtins", "frozenset"),
})
# ScenarioNet adds what a ``defaultdict(int)`` in WOMD metadata needs.
SCENARIONET_ALLOWLIST = NAVSIM_ALLOWLIST | {("collections", "defaultdict"), ("builtins", "int")}


MAX_ARRAY_BYTES = 1 << 30
"""Largest allocation (bytes) one allow-listed constructor may make: 1 GiB (a NAVSIM log or ScenarioNet scenario holds
arrays of a few MB)."""
MAX_DEPTH = 64
"""Deepest container nesting accepted (real files nest < 10 levels)."""


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle asked for a global that is not on the allow-list, or for an allocation beyond the bounds; nothing
    from it was executed."""


def _check_alloc(nbytes: int, what: str) -> None:
    if nbytes > MAX_ARRAY_BYTES:
        raise UnsafePickleError(f"refused {what}: {nbytes:,} bytes exceeds the {MAX_ARRAY_BYTES:,}-byte bound "
                                "(MAX_ARRAY_BYTES)")


def _shape_bytes(shape, dtype) -> int:
    dims = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
    if any(not isinstance(d, (int, np.integer)) or d < 0 for d in dims):
        raise UnsafePickleError(f"refused array shape {dims!r}: not a tuple of non-negative integers")
    size = 1
    for d in dims:
        size *= int(d)
    return size * max(np.dtype(dtype).itemsize, 1)


class _BoundedNdarray(np.ndarray):
    """What the allow-listed ``numpy.ndarray`` resolves to: calling it (``ndarray(shape, dtype)``) checks the size
    first and returns a plain ndarray; as ``_reconstruct``'s subtype it stands for ``np.ndarray``."""

    def __new__(cls, shape, dtype=float, *args, **kwargs):
        _check_alloc(_shape_bytes(shape, dtype), "numpy.ndarray(shape)")
        return np.ndarray(shape, dtype, *args, **kwargs)


def _bounded_reconstruct(reconstruct):
    def build(subtype, shape, dtype, *args):
        if subtype is _BoundedNdarray:
            subtype = np.ndarray
        _check_alloc(_shape_bytes(shape, dtype if isinstance(dtype, (str, np.dtype, type)) else np.uint8),
                     "numpy array")
        return reconstruct(subtype, shape, dtype, *args)
    return build


def _bounded_bytes(*args):
    if args and isinstance(args[0], (int, np.integer)):
        _check_alloc(int(args[0]), "bytes(n)")
    return bytes(*args)


def check_depth(obj, source: str, limit: int = MAX_DEPTH) -> None:
    """Raise ValueError naming ``source`` when containers (dict, list, tuple, set) nest deeper than ``limit``.
    Iterative, so a 200,000-deep list is refused instead of overflowing the stack."""
    stack = [(obj, 1)]
    seen: set[int] = set()
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            raise ValueError(f"{source}: containers nest deeper than {limit} levels (MAX_DEPTH); refused")
        if isinstance(item, dict):
            children = list(item.values())
        elif isinstance(item, (list, tuple, set, frozenset)):
            children = list(item)
        else:
            continue
        if id(item) in seen:
            continue
        seen.add(id(item))
        stack.extend((child, depth + 1) for child in children
                     if isinstance(child, (dict, list, tuple, set, frozenset)))


def _canonical(module: str) -> str:
    """Map both numpy spellings (numpy.core.x / numpy._core.x) onto 'numpy.core.x', and Python 2's '__builtin__'
    onto 'builtins', for allow-list lookups."""
    if module == "__builtin__":
        return "builtins"
    if module.startswith("numpy._core"):
        return "numpy.core" + module[len("numpy._core"):]
    return module


def _resolve(module: str, name: str):
    module = _canonical(module)
    if module.startswith("numpy.core"):
        module = _NUMPY_CORE + module[len("numpy.core"):]
    if module == "collections" and name == "defaultdict":
        return collections.defaultdict
    if module == "builtins":
        return {"int": int, "bytes": _bounded_bytes, "set": set, "frozenset": frozenset}[name]
    target = getattr(importlib.import_module(module), name)
    if name == "_reconstruct":
        return _bounded_reconstruct(target)
    if target is np.ndarray:
        return _BoundedNdarray
    return target


class RestrictedUnpickler(pickle.Unpickler):
    """An Unpickler whose ``find_class`` only returns allow-listed globals."""

    def __init__(self, file, allowlist: frozenset, source: str = "<stream>"):
        super().__init__(file)
        self._allow = allowlist
        self._source = source

    def find_class(self, module: str, name: str):
        if (_canonical(module), name) not in self._allow:
            raise UnsafePickleError(
                f"{self._source}: refused to load global {module}.{name}: not on the allow-list for this data format "
                "(the file may be malicious or of an unsupported kind); nothing was executed")
        return _resolve(module, name)


_UNREADABLE = (pickle.UnpicklingError, EOFError, AttributeError, ImportError, IndexError, TypeError, KeyError,
               LookupError, MemoryError, OverflowError, RecursionError, ValueError)
"""What a malformed pickle raises inside the unpickler (unknown codec: LookupError; ...)."""


def _load(fh, allowlist: frozenset, source: str):
    try:
        obj = RestrictedUnpickler(fh, allowlist, source).load()
    except UnsafePickleError as exc:
        text = str(exc)
        raise UnsafePickleError(text if text.startswith(source) else f"{source}: {text}") from None
    except _UNREADABLE as exc:
        raise ValueError(f"{source}: not a readable pickle ({type(exc).__name__}: {str(exc)[:200]})") from None
    check_depth(obj, source)
    return obj


def loads(data: bytes, allowlist: frozenset = SCENARIONET_ALLOWLIST, source: str = "<bytes>"):
    """Unpickle bytes with the given allow-list (errors as :func:`load_pickle`)."""
    return _load(io.BytesIO(data), allowlist, source)


def load_pickle(path: str | os.PathLike, allowlist: frozenset = SCENARIONET_ALLOWLIST):
    """Unpickle a file with the given allow-list; errors name the file.

    Raises:
        FileNotFoundError: the file does not exist.
        UnsafePickleError: the pickle references a global outside the allow-list, or an allocation beyond
            :data:`MAX_ARRAY_BYTES`.
        ValueError: the file is not a readable pickle (truncated, wrong format, unknown codec, nesting deeper than
            :data:`MAX_DEPTH`).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    with open(path, "rb") as fh:
        return _load(fh, allowlist, str(path))
