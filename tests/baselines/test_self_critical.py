"""The self-critical reward baseline (``reward_baseline: mean-plan``, baselines.envs.SelfCriticalReward): PPO is paid
reward(sample) - reward(mean plan) on the same scene; the curve and the TensorBoard scores keep what the env paid."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from baselines.config import load_config
from baselines.runner import run_dir_of, train_run

from .conftest import tiny_overrides


def _native(num_envs=3, **kwargs):
    from irlvla_gym.envs.sb3 import BatchedVecEnv
    from irlvla_gym.scenes.synthetic import generate_scene

    scenes = [generate_scene(seed, split="synthetic-train") for seed in range(3)]
    return BatchedVecEnv("IRLVLA-Navsim-v2", num_envs, scenes=scenes, obs_keys=("ego",), **kwargs)


def test_paid_reward_is_the_step_reward_minus_the_mean_plans_reward():
    from baselines.envs import SelfCriticalReward

    plain, wrapped = _native(), SelfCriticalReward(_native())
    rng = np.random.default_rng(0)
    means = rng.uniform(-0.2, 0.2, (3, 24)).astype(np.float32)
    wrapped.mean_actions = lambda obs: means * 3  # partly outside the box: clipped like SB3's sampled actions
    plain.seed(1)
    wrapped.seed(1)
    plain.reset()
    wrapped.reset()
    for _ in range(3):
        actions = rng.uniform(-0.3, 0.3, (3, 24)).astype(np.float32)
        baseline = plain.rewards_of(np.clip(means * 3, -1, 1))
        _, paid, _, _ = plain.step(actions)
        _, relative, dones, infos = wrapped.step(actions)
        np.testing.assert_allclose(relative, paid - baseline, rtol=0, atol=1e-6)
        assert [i["raw_reward"] for i in infos] == pytest.approx(paid.tolist())
        assert [i["baseline_reward"] for i in infos] == pytest.approx(baseline.tolist())
        assert dones.all()
    wrapped.mean_actions = lambda obs: np.zeros((3, 24))
    wrapped.step(np.zeros((3, 24), np.float32))
    _, zero, _, _ = wrapped.step(np.zeros((3, 24), np.float32))  # the mean itself: paid exactly its own baseline
    np.testing.assert_array_equal(zero, 0.0)


def test_errors_name_what_is_missing():
    from stable_baselines3.common.vec_env import DummyVecEnv

    from baselines.envs import SelfCriticalReward
    import gymnasium as gym

    with pytest.raises(ValueError, match="rewards_of"):
        SelfCriticalReward(DummyVecEnv([lambda: gym.make("IRLVLA-Navsim-v2", num_scenes=2, obs_keys=("ego",))]))
    env = SelfCriticalReward(_native())
    env.reset()
    with pytest.raises(RuntimeError, match="mean_actions"):
        env.step(np.zeros((3, 24), np.float32))
    with pytest.raises(ValueError, match="reward_baseline must be"):
        load_config("ppo-vla-rwm", "quick", [{"reward_baseline": "critic"}])
    with pytest.raises(ValueError, match="algorithm 'ppo' only"):
        load_config("dppo-vla-rwm", "quick", [{"reward_baseline": "mean-plan"}])


def test_ppo_run_with_the_mean_plan_baseline(tmp_path, checkpoints, monkeypatch):
    """A tiny ppo-vla-rwm run pays relative rewards: the policy's recorded rollout means are scored (no extra
    forward pass), the curve keeps the env's own rewards."""
    from irlvla_gym.policies import VLAPolicy

    predicted = []
    real_predict = VLAPolicy.predict
    def counted_predict(self, *args, **kwargs):
        predicted.append(1)
        return real_predict(self, *args, **kwargs)

    monkeypatch.setattr(VLAPolicy, "predict", counted_predict)
    cfg = load_config("ppo-vla-rwm", "quick", tiny_overrides("ppo-vla-rwm", checkpoints,
                                                             reward_baseline="mean-plan", hooks=[]))
    metrics = train_run(cfg, 0, tmp_path, progress=False, evaluate=False)
    assert metrics["steps"] == 64
    rows = list(csv.DictReader((run_dir_of(tmp_path, "ppo-vla-rwm", 0) / "curve.csv").open()))
    assert len(rows) == 2 and all(float(r["reward_mean"]) > 0.01 for r in rows)  # paid, not differences (~1e-4)
    assert not predicted  # every baseline used the rollout forward's means


def test_group_relative_reward_is_the_leave_one_out_difference():
    from baselines.envs import GroupRelativeReward

    env = GroupRelativeReward(_native(4, scene_group_size=2), 2)
    env.seed(0)
    env.reset()
    actions = np.random.default_rng(2).uniform(-0.3, 0.3, (4, 24)).astype(np.float32)
    _, relative, _, infos = env.step(actions)
    paid = np.array([i["raw_reward"] for i in infos]).reshape(2, 2)
    np.testing.assert_allclose(relative.reshape(2, 2), paid - paid[:, ::-1], atol=1e-6)
    assert [i["scene_index"] for i in infos][::2] == [i["scene_index"] for i in infos][1::2]
    ungrouped = GroupRelativeReward(_native(4), 2)
    ungrouped.seed(0)
    ungrouped.reset()
    with pytest.raises(RuntimeError, match="different scenes"):
        for _ in range(5):  # 3 scenes: some step draws two different scenes in a group
            ungrouped.step(actions)
    with pytest.raises(ValueError, match="scene_group_size"):
        load_config("ppo-vla-rwm", "quick", [{"reward_baseline": "group"}])
    with pytest.raises(ValueError, match="scene_group_size"):
        load_config("ppo-vla-rwm", "quick", [{"scene_group_size": 4}])
    cfg = load_config("ppo-vla-rwm", "quick", [{"reward_baseline": "group", "scene_group_size": 4}])
    assert cfg.scene_group_size == 4
