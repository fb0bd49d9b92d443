"""Small helpers shared by the baselines: instruction-length groups, seeding, JSON files."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

import numpy as np

from irlvla_gym.obs.instruction import instruction_length_groups

length_groups = instruction_length_groups
"""Row indices grouped by instruction length (:func:`irlvla_gym.obs.instruction.instruction_length_groups`, moved
down there so the leaderboard's VLA agent uses it too). It keeps every scene's tokens exactly as when encoded alone,
which keeps DPPO's likelihood ratios exact and its training and evaluation consistent."""


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch."""
    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def run_dir_of(out: str | Path, variant: str, seed: int) -> Path:
    """The folder of one training run: ``<out>/<variant>/seed<seed>``."""
    return Path(out) / variant / f"seed{seed}"


def write_json(path: str | Path, data: Any) -> Path:
    """Write ``data`` as indented JSON atomically (readers never see half a file)."""
    from irlvla_gym.utils import atomic_write

    path = Path(path)
    with atomic_write(path, "w") as fh:
        json.dump(data, fh, indent=2, default=_json_default)
    return path


def read_json(path: str | Path) -> Any:
    """The JSON document in ``path``; errors name the file (:func:`irlvla_gym.utils.read_json`)."""
    from irlvla_gym.utils import read_json as read

    return read(path)


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (Path, os.PathLike)):
        return str(value)
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def save_figure(fig, path: str | Path, title: str | None = None, dpi: int = 100) -> Path:
    """Finish a matplotlib figure (optional suptitle, tight layout), write it as PNG (parent folders created) and
    close it; returns the path."""
    import matplotlib.pyplot as plt

    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path
