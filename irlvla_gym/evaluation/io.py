"""Small I/O helpers of the evaluation tools (atomic writes through :func:`irlvla_gym.utils.atomic_write`)."""

from __future__ import annotations

import os

from irlvla_gym.utils import atomic_write


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically; readers never see half a file. Parents are created."""
    with atomic_write(path, "w") as fh:
        fh.write(text)
