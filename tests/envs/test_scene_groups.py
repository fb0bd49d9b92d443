"""Scene groups of the native vector env (``scene_group_size``): G consecutive envs plan the same scene each
episode, drawn by the group's first env (for group-relative reward baselines)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import irlvla_gym  # noqa: F401
from irlvla_gym.envs.testing import small_kwargs


def _vec(synthetic, n=6, g=3, env_id="IRLVLA-Navsim-v2"):
    return gym.make_vec(env_id, num_envs=n, vectorization_mode="vector_entry_point", scene_group_size=g,
                        **small_kwargs(synthetic))


def test_groups_share_the_scene_drawn_by_their_first_env(synthetic):
    grouped, plain = _vec(synthetic), _vec(synthetic, g=1)
    _, info = grouped.reset(seed=4)
    _, plain_info = plain.reset(seed=4)
    index = np.asarray(info["scene_index"])
    np.testing.assert_array_equal(index, np.repeat(np.asarray(plain_info["scene_index"])[[0, 3]], 3))
    for _ in range(3):
        actions = np.random.default_rng(0).uniform(-0.2, 0.2, (6, 24)).astype(np.float32)
        grouped.step(actions)
        plain.step(actions)
        rows = grouped.unwrapped.state.scene_index.reshape(2, 3)
        assert (rows == rows[:, :1]).all()
        np.testing.assert_array_equal(rows[:, 0], plain.unwrapped.state.scene_index[[0, 3]])
    grouped.close()
    plain.close()


def test_group_arguments_are_checked(synthetic):
    with pytest.raises(ValueError, match="divide num_envs"):
        _vec(synthetic, n=6, g=4)
    with pytest.raises(ValueError, match="plan-once"):
        _vec(synthetic, env_id="IRLVLA-Navsim-ClosedLoop-v2")
    env = _vec(synthetic)
    env.reset(seed=0)
    with pytest.raises(RuntimeError, match="reset whole groups"):
        env.reset(options={"reset_mask": np.array([False, True, True, True, True, True])})
