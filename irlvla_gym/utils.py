"""Process-level helpers: thread limits, atomic file writes, the cache directory."""

from __future__ import annotations

import importlib
import os
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Mapping


def limit_torch_threads(num_threads: int | None = None) -> None:
    """One torch/BLAS thread per worker process by default: on a busy 2-core box, two threads can be 50x slower.

    Honours ``IRLVLA_NUM_THREADS``; torch is only touched if it is already imported (keeps start-up light).
    """
    n = int(num_threads or os.environ.get("IRLVLA_NUM_THREADS", 1))
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(var, str(n))

    if "torch" in sys.modules:
        torch = sys.modules["torch"]
        if torch.get_num_threads() != n:
            torch.set_num_threads(n)


@contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb"):
    """Write to a temp file beside ``path`` and rename it into place on success: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def cache_dir() -> Path:
    """The irlvla cache root: ``$IRLVLA_CACHE`` or ``~/.cache/irlvla_gym`` (scene stores, vocabularies, obs caches)."""
    return Path(os.environ.get("IRLVLA_CACHE") or Path.home() / ".cache" / "irlvla_gym")


def lazy_exports(package: str, exports: Mapping[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for a package whose public names load on first use (PEP 562), so that importing the
    package stays light (no torch, shapely, scipy until a name is used).

    Args:
        package: the package's name, for the error message.
        exports: public name -> module that defines it (absolute, e.g. ``"reward_models.reward_fn"``).
    """

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        sys.modules[package].__dict__[name] = value  # later lookups skip __getattr__
        return value

    def __dir__() -> list[str]:
        return sorted(set(sys.modules[package].__dict__) | set(exports))

    return __getattr__, __dir__
