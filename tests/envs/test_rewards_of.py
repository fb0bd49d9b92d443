"""``rewards_of``: the reward other plans would earn on the current scenes, without stepping (the plan-once env's
native vector env, its SB3 adapters); the seam of the self-critical reward baseline (baselines.envs)."""

from __future__ import annotations

import numpy as np
import pytest

import irlvla_gym  # noqa: F401
from irlvla_gym.envs.testing import small_kwargs


def _const_reward(scene, plan):
    return float(np.abs(plan[-1, 0]) / 100.0)


@pytest.mark.parametrize("reward", ["epdms", _const_reward])
def test_rewards_of_equals_the_step_reward_and_changes_nothing(reward, synthetic):
    from irlvla_gym.envs.sb3 import BatchedVecEnv

    env = BatchedVecEnv("IRLVLA-Navsim-v2", 3, **{**small_kwargs(synthetic), "reward": reward})
    env.seed(3)
    obs = env.reset()
    rng = np.random.default_rng(0)
    actions = rng.uniform(-0.3, 0.3, (3, 24)).astype(np.float32)
    actions[1] = np.nan  # invalid: 0, as the step pays
    other = rng.uniform(-0.3, 0.3, (3, 24)).astype(np.float32)
    tokens = [b.scene.token for b in env.venv.unwrapped.envs_bundles]
    first = env.rewards_of(other)
    again = env.rewards_of(actions)
    assert [b.scene.token for b in env.venv.unwrapped.envs_bundles] == tokens  # nothing stepped
    np.testing.assert_array_equal(env.rewards_of(other), first)
    _, paid, _, _ = env.step(actions)
    np.testing.assert_allclose(again, paid, rtol=0, atol=1e-6)
    assert again[1] == 0.0 and obs is not None
    env.close()


def test_rewards_of_in_worker_processes_equals_in_process(synthetic):
    from irlvla_gym.envs.sb3 import BatchedVecEnv, MultiProcessVecEnv

    kwargs = small_kwargs(synthetic)
    local, procs = BatchedVecEnv("IRLVLA-Navsim-v2", 4, **kwargs), MultiProcessVecEnv("IRLVLA-Navsim-v2", 4, 2,
                                                                                       **kwargs)
    local.seed(5)
    procs.seed(5)
    local.reset()
    procs.reset()
    actions = np.random.default_rng(1).uniform(-0.3, 0.3, (4, 24)).astype(np.float32)
    np.testing.assert_array_equal(procs.rewards_of(actions), local.rewards_of(actions))
    local.close()
    procs.close()


def test_the_closed_loop_cannot_score_without_stepping(synthetic):
    import gymnasium as gym

    venv = gym.make_vec("IRLVLA-Navsim-ClosedLoop-v2", num_envs=2, vectorization_mode="vector_entry_point",
                        **small_kwargs(synthetic))
    venv.reset(seed=0)
    with pytest.raises(NotImplementedError, match="without stepping"):
        venv.unwrapped.rewards_of(np.zeros((2, 24), np.float32))
    venv.close()
