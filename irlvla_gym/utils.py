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
    """Write to a temp file beside ``path`` and rename it into place on success: readers never see half a file.

    The file gets the mode an ``open(path, "w")`` would give (0o666 less the umask), not mkstemp's 0o600."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
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


def read_json(path: str | os.PathLike) -> Any:
    """The JSON document in ``path``; a truncated or malformed file raises ValueError naming the file and the
    position (a bare ``JSONDecodeError`` names neither), a missing one FileNotFoundError naming it."""
    import json

    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file") from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not a JSON text file ({exc.reason})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}); "
                         "the file may be truncated or damaged") from None


def current_umask() -> int:
    """The process's file-creation mask: from /proc on Linux (no change to process state), elsewhere by setting it
    and putting it back (the only portable way; another thread could create a file in between)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def json_differences(old: Any, new: Any, where: str = "") -> list[str]:
    """Dotted field names where two JSON values differ, each with both values (``"train.lr (recorded 0.1, now
    0.2)"``): what a run directory's record of its config says against a rerun's."""
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        return [d for k in sorted(set(old) | set(new), key=str)
                for d in json_differences(old.get(k), new.get(k), f"{where}{k}.")]
    return [] if old == new else [f"{where.rstrip('.')} (recorded {old!r}, now {new!r})"]


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


def save_through_hub_mixin(model: Any, save_directory: str | os.PathLike, context: tuple[str, Any],
                           model_card: bool, hub_kwargs: Mapping[str, Any]) -> Path:
    """The ``save_pretrained`` of a model on huggingface_hub's ``PyTorchModelHubMixin`` (the VLA network, the reward
    world model and its ensemble): ``context`` = (attribute, value) set on ``model`` for its ``_save_pretrained`` hook
    during the save (what the mixin's signature cannot pass: safetensors metadata, extra config entries); with
    ``model_card`` or any Hub argument the mixin's own save (model card, ``push_to_hub``), else exactly the hook's
    files. Returns the directory."""
    from huggingface_hub import PyTorchModelHubMixin

    directory = Path(save_directory)
    name, value = context
    setattr(model, name, value)
    try:
        if model_card or hub_kwargs:
            PyTorchModelHubMixin.save_pretrained(model, directory, **hub_kwargs)
        else:
            directory.mkdir(parents=True, exist_ok=True)
            model._save_pretrained(directory)  # noqa: SLF001 - the mixin's documented per-framework hook
    finally:
        delattr(model, name)
    return directory
