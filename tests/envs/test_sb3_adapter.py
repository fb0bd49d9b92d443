"""SB3 adapter (irlvla_gym.envs.sb3) vs SB3's DummyVecEnv of single envs, and a short PPO run on it."""

from __future__ import annotations

import functools

import gymnasium as gym
import numpy as np
import pytest

import irlvla_gym  # noqa: F401
from irlvla_gym.envs.testing import assert_same, small_kwargs


_same = assert_same  # exact equality of nested obs / infos, failures name the entry


@pytest.mark.parametrize("env_id", ["IRLVLA-Navsim-v2", "IRLVLA-Navsim-ClosedLoop-v2"])
def test_batched_vec_env_equals_dummy_vec_env(env_id, synthetic):
    from stable_baselines3.common.vec_env import DummyVecEnv

    from irlvla_gym.envs.sb3 import BatchedVecEnv

    kwargs = small_kwargs(synthetic)
    ours = BatchedVecEnv(env_id, 3, **kwargs)
    dummy = DummyVecEnv([functools.partial(gym.make, env_id, **kwargs) for _ in range(3)])
    ours.seed(7)
    dummy.seed(7)
    _same(ours.reset(), dummy.reset(), "reset obs")
    for a, b in zip(ours.reset_infos, dummy.reset_infos):
        _same(a, b, "reset info")
    rng = np.random.default_rng(0)
    for step in range(8):
        actions = rng.uniform(-1, 1, (3, 24)).astype(np.float32)
        if step == 2:
            actions[1] = np.inf
        o1, r1, d1, i1 = ours.step(actions)
        o2, r2, d2, i2 = dummy.step(actions)
        _same(o1, o2, f"obs {step}")
        assert r1.dtype == r2.dtype
        np.testing.assert_array_equal(r1, r2)
        np.testing.assert_array_equal(d1, d2)
        for k, (a, b) in enumerate(zip(i1, i2)):
            if d1[k]:  # built-in episode statistics (SB3 Monitor's keys); the plan-once episode is one step long
                episode = a.pop("episode")
                assert episode["l"] >= 1 and set(episode) == {"r", "l", "t"}
                if env_id == "IRLVLA-Navsim-v2":
                    assert episode["l"] == 1 and episode["r"] == pytest.approx(float(r1[k]), abs=1e-6)
            assert "episode" not in a
            _same(a, b, f"info {step}")
        for a, b in zip(ours.reset_infos, dummy.reset_infos):
            _same(a, b, f"reset info {step}")
    assert ours.get_attr("num_scenes") == [3, 3, 3]
    ours.close()
    dummy.close()


def test_ppo_on_batched_vec_env_and_processes(synthetic):
    import torch
    from stable_baselines3 import PPO

    from irlvla_gym.envs.sb3 import make_vec_env

    torch.set_num_threads(1)
    venv = make_vec_env("IRLVLA-Navsim-v2", 4, **small_kwargs(synthetic))
    model = PPO("MultiInputPolicy", venv, n_steps=4, batch_size=8, n_epochs=1, seed=0, device="cpu",
                policy_kwargs={"net_arch": [16]})
    model.learn(total_timesteps=16)
    # episode statistics are built in (issue ecosystem): rollout/ep_rew_mean without a VecMonitor
    assert len(model.ep_info_buffer) == 16 and all(e["l"] == 1 for e in model.ep_info_buffer)
    venv.close()
    # Two worker processes of two envs each: same numbers as one process of four.
    one = make_vec_env("IRLVLA-Navsim-ClosedLoop-v2", 4, **small_kwargs(synthetic))
    two = make_vec_env("IRLVLA-Navsim-ClosedLoop-v2", 4, processes=2, **small_kwargs(synthetic))
    try:
        one.seed(3)
        two.seed(3)
        _same(one.reset(), two.reset())
        actions = np.random.default_rng(1).uniform(-0.3, 0.3, (4, 24)).astype(np.float32)
        for _ in range(3):
            o1, r1, d1, _ = one.step(actions)
            o2, r2, d2, _ = two.step(actions)
            _same(o1, o2)
            np.testing.assert_array_equal(r1, r2)
    finally:
        one.close()
        two.close()
