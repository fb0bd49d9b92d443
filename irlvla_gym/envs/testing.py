"""Helpers for testing the envs (used by tests/envs; handy for env-using code too)."""

from __future__ import annotations

from typing import Any

import numpy as np

SMALL_OBS = {"bev_size": (64, 64), "instruction_length": 16}
"""Small BEV (SB3's NatureCNN needs >= 36 px) and short instructions."""


def small_kwargs(scenes: Any, **extra: Any) -> dict[str, Any]:
    """Env kwargs with the small observation config."""
    return {"scenes": scenes, "obs_config": SMALL_OBS, **extra}


def rollout(env: Any, seed: int, actions: Any = None, steps: int = 3) -> list:
    """Observations, rewards and infos of a few steps (reset after each episode end)."""
    out = []
    obs, info = env.reset(seed=seed)
    out.append((obs, info.get("token")))
    for i in range(steps):
        a = env.action_space.sample() if actions is None else actions[i]
        obs, r, te, tr, info = env.step(a)
        out.append((obs, r, te, tr, info["rewards"]))
        if te or tr:
            obs, info = env.reset()
            out.append((obs, info.get("token")))
    return out


def assert_same(a, b, path: str = "") -> None:
    """Exact equality of nested tuples / dicts / arrays / scalars; a failure names the ``path`` to the entry."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), f"{path}: keys differ {sorted(set(a) ^ set(b))}"
        for k in a:
            assert_same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), f"{path}: lengths {len(a)} != {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{path}[{i}]")
    elif isinstance(a, np.ndarray):
        np.testing.assert_array_equal(a, b, err_msg=path)
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"
