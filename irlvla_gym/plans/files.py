"""Plan files: ``token -> (8, 3)`` poses, the format ``irlvla score`` reads and ``irlvla bc --target-plans`` trains on.

A ``.json`` object ``{token: [[x, y, yaw] x 8], ...}`` (optionally wrapped as ``{"plans": {...}}``) or an ``.npz``
whose keys are tokens with (8, 3) arrays, or the pair of arrays ``tokens`` (N,) and ``plans`` (N, 8, 3) (what
:func:`save_plans` writes). Poses are at t = 0.5 .. 4 s in the scene's t0 ego frame (rear axle, x forward, y left;
m, rad). Files are data only: ``.npz`` files are read without pickles.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

MAX_PLAN_SPEED = 50.0
"""[m/s] fastest implied speed between consecutive poses (origin included) a plan may have; faster is an error."""
PLAN_DT = 0.5


def load_plans(path: str | Path) -> dict[str, object]:
    """Token -> raw plan (anything array-like; checked later by :func:`check_plan`) from a .json or .npz file.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: not a .json / .npz file, or unreadable as one.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"plans file {path} not found")
    suffix = path.suffix.lower()
    if suffix == ".json":
        try:
            data = json.loads(path.read_text())
        except (ValueError, UnicodeDecodeError) as exc:
            raise ValueError(f"{path}: not valid JSON ({exc})") from None
        if isinstance(data, Mapping) and set(data) == {"plans"} and isinstance(data["plans"], Mapping):
            data = data["plans"]
        if not isinstance(data, Mapping):
            raise ValueError(f"{path}: expected a JSON object mapping token -> 8x3 poses")
        return {str(k): v for k, v in data.items()}
    if suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in npz.files}
        except (OSError, ValueError) as exc:
            raise ValueError(f"{path}: not a readable .npz without pickles ({exc})") from None
        if set(arrays) == {"tokens", "plans"}:
            tokens, plans = arrays["tokens"], arrays["plans"]
            if tokens.ndim != 1 or len(plans) != len(tokens):
                raise ValueError(f"{path}: 'tokens' (N,) and 'plans' (N, 8, 3) must have the same length")
            return {str(t): plans[i] for i, t in enumerate(tokens.tolist())}
        return dict(arrays)
    raise ValueError(f"{path}: plans must be a .json or .npz file")


def check_plan(raw: object) -> tuple[np.ndarray | None, str]:
    """Validate one plan. Returns ``(plan (8, 3) float64, "")`` or ``(None, reason)``."""
    try:
        plan = np.asarray(raw, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        return None, f"not a numeric array ({exc})"
    if plan.shape != (8, 3):
        return None, f"wrong shape {plan.shape}, expected (8, 3) poses [x, y, yaw] at t = 0.5 .. 4 s"
    if not np.all(np.isfinite(plan)):
        bad = np.argwhere(~np.isfinite(plan))[0]
        return None, f"non-finite value at pose {bad[0]}, column {'xy'[bad[1]] if bad[1] < 2 else 'yaw'}"
    steps = np.linalg.norm(np.diff(np.vstack([np.zeros(2), plan[:, :2]]), axis=0), axis=1) / PLAN_DT
    if steps.max() > MAX_PLAN_SPEED:
        k = int(np.argmax(steps))
        return None, (f"absurd speed {steps[k]:.1f} m/s between poses {k - 1 if k else 'origin'} and {k} "
                      f"(limit {MAX_PLAN_SPEED:g} m/s; wrong units or frame?)")
    return plan, ""


def save_plans(path: str | Path, tokens: Sequence[str], plans: np.ndarray) -> Path:
    """Write a plan file (``.npz``: ``tokens`` (N,) str, ``plans`` (N, 8, 3) float64) atomically; returns the path."""
    from irlvla_gym.utils import atomic_write

    plans = np.asarray(plans, np.float64)
    if plans.shape != (len(tokens), 8, 3):
        raise ValueError(f"plans must be ({len(tokens)}, 8, 3) for {len(tokens)} tokens, got {plans.shape}")
    path = Path(path)
    if path.suffix.lower() != ".npz":
        raise ValueError(f"{path}: save_plans writes .npz files")
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as fh:
        np.savez(fh, tokens=np.asarray(list(tokens), dtype=str), plans=plans)
    return path


def plans_for_tokens(path: str | Path, tokens: Sequence[str]) -> np.ndarray:
    """(N, 8, 3) float64 plans of ``tokens``, in their order, from a plan file.

    Raises:
        ValueError: a token has no plan in the file or its plan is invalid (:func:`check_plan`), naming the file,
            the token and the reason (the first few of each).
    """
    raw = load_plans(path)
    out = np.empty((len(tokens), 8, 3))
    missing, bad = [], []
    for i, token in enumerate(tokens):
        if str(token) not in raw:
            missing.append(str(token))
            continue
        plan, reason = check_plan(raw[str(token)])
        if plan is None:
            bad.append(f"{token}: {reason}")
        else:
            out[i] = plan
    if missing or bad:
        parts = ([f"{len(missing)} token(s) without a plan (e.g. {missing[:3]})"] if missing else []) + \
            ([f"{len(bad)} invalid plan(s) ({'; '.join(bad[:3])})"] if bad else [])
        raise ValueError(f"{path}: {' and '.join(parts)}")
    return out


__all__ = ["MAX_PLAN_SPEED", "PLAN_DT", "check_plan", "load_plans", "plans_for_tokens", "save_plans"]
