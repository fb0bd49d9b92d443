"""Small helpers shared by the baselines: instruction-length groups, seeding, JSON files."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

import numpy as np


def length_groups(instruction_ids: np.ndarray | None, n: int) -> list[np.ndarray]:
    """Row indices grouped by instruction length (number of non-zero token ids), each group sorted.

    The VLA encoder trims trailing instruction padding to the longest instruction *of the batch*, and the diffusion
    head cross-attends to every fused token (padding outputs included), so a diffusion plan depends on which scenes
    share its batch. Encoding each group of equal length separately gives every scene exactly the tokens it gets
    when encoded alone (as the leaderboard does), which keeps DPPO's likelihood ratios exact and its training and
    evaluation consistent. Without instructions: one group of all rows.
    """
    if instruction_ids is None:
        return [np.arange(n)]
    lengths = (np.asarray(instruction_ids).reshape(n, -1) != 0).sum(axis=1)
    return [np.flatnonzero(lengths == value) for value in np.unique(lengths)]


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
    return json.loads(Path(path).read_text())


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
