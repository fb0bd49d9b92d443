"""Restricted unpickling for third-party dataset pickles (data-formats.md, section 5).

Only the classes on an allow-list are resolved; any other global (``os.system``, ``builtins.eval``, a class with a
malicious ``__reduce__``) is refused with :class:`UnsafePickleError` *before* anything is called, so nothing is
executed. numpy < 2 writes ``numpy.core.*`` names and numpy >= 2 writes ``numpy._core.*``: both spellings resolve to
the installed numpy.
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


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle asked for a global that is not on the allow-list; nothing from it was executed."""


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
        return {"int": int, "bytes": bytes, "set": set, "frozenset": frozenset}[name]
    return getattr(importlib.import_module(module), name)


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


def loads(data: bytes, allowlist: frozenset = SCENARIONET_ALLOWLIST, source: str = "<bytes>"):
    """Unpickle bytes with the given allow-list."""
    return RestrictedUnpickler(io.BytesIO(data), allowlist, source).load()


def load_pickle(path: str | os.PathLike, allowlist: frozenset = SCENARIONET_ALLOWLIST):
    """Unpickle a file with the given allow-list; errors name the file.

    Raises:
        FileNotFoundError: the file does not exist.
        UnsafePickleError: the pickle references a global outside the allow-list.
        ValueError: the file is not a readable pickle (truncated, wrong format).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    with open(path, "rb") as fh:
        try:
            return RestrictedUnpickler(fh, allowlist, str(path)).load()
        except UnsafePickleError:
            raise
        except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, IndexError, TypeError) as exc:
            raise ValueError(f"{path}: not a readable pickle ({type(exc).__name__}: {exc})") from None
