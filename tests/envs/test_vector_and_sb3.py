"""Vector envs (gymnasium Sync/Async, SB3 Dummy/Subproc) and a short SB3 PPO run on each env."""

from __future__ import annotations

import functools

import gymnasium as gym
import numpy as np
import pytest

import irlvla_gym  # noqa: F401
from irlvla_gym.envs.testing import small_kwargs

ENV_IDS = ["IRLVLA-Navsim-v2", "IRLVLA-Navsim-ClosedLoop-v2"]


def make(env_id: str, scenes, **extra):
    return gym.make(env_id, **small_kwargs(scenes, **extra))


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_sync_vector_env_with_nan_actions(env_id, synthetic):
    # SAME_STEP autoreset: the plan-once env ends every step; NEXT_STEP would spend every other step on resets.
    envs = gym.vector.SyncVectorEnv([functools.partial(make, env_id, synthetic) for _ in range(3)],
                                    autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    obs, infos = envs.reset(seed=0)
    assert obs["bev"].shape == (3, 8, 64, 64)
    for _ in range(3):
        actions = envs.action_space.sample()
        actions[0] = np.nan  # an invalid action never crashes the vector env
        actions[1] *= 4.0  # out of range: clipped
        obs, rewards, te, tr, infos = envs.step(actions)
        step_info = infos["final_info"] if "final_info" in infos and te[0] | tr[0] else infos  # ended: reset info
        assert rewards[0] == 0.0 and step_info["invalid_action"][0]
        assert np.all(np.isfinite(rewards))
    envs.close()


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_async_vector_env(env_id, synthetic):
    envs = gym.vector.AsyncVectorEnv([functools.partial(make, env_id, synthetic) for _ in range(2)])
    try:
        envs.reset(seed=1)
        for _ in range(2):
            _, rewards, *_ = envs.step(envs.action_space.sample())
            assert rewards.shape == (2,)
    finally:
        envs.close()


def test_make_vec(synthetic):
    envs = gym.make_vec("IRLVLA-Navsim-v2", num_envs=2, vectorization_mode="sync", **small_kwargs(synthetic))
    envs.reset(seed=0)
    envs.step(envs.action_space.sample())
    envs.close()


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_sb3_dummy_and_subproc(env_id, synthetic):
    from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

    for vec_cls, kwargs in ((DummyVecEnv, {}), (SubprocVecEnv, {"start_method": "fork"})):
        venv = vec_cls([functools.partial(make, env_id, synthetic) for _ in range(2)], **kwargs)
        try:
            venv.seed(0)
            venv.reset()
            for _ in range(2):
                actions = np.stack([venv.action_space.sample() for _ in range(2)])
                actions[1] = np.inf
                _, rewards, dones, infos = venv.step(actions)
                assert rewards[1] == 0.0 and infos[1]["invalid_action"]
        finally:
            venv.close()


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_short_ppo_run(env_id, synthetic):
    import torch
    from stable_baselines3 import PPO

    torch.set_num_threads(1)
    env = make(env_id, synthetic)
    model = PPO("MultiInputPolicy", env, n_steps=16, batch_size=8, n_epochs=1, seed=0, device="cpu",
                policy_kwargs={"net_arch": [16]})
    model.learn(total_timesteps=16)
    action, _ = model.predict(env.reset(seed=0)[0], deterministic=True)
    assert env.action_space.contains(action)


def test_short_ppo_run_vocabulary(synthetic):
    import torch
    from stable_baselines3 import PPO

    torch.set_num_threads(1)
    env = make("IRLVLA-Navsim-v2", synthetic, action_type="vocabulary", obs_keys=("ego", "instruction"))
    PPO("MultiInputPolicy", env, n_steps=8, batch_size=8, n_epochs=1, seed=0, device="cpu").learn(8)
