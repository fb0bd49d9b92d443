"""IRLVLA-Navsim-v2: checkers, determinism, reward parity with the scorer, action types, rewards, rendering."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest

import irlvla_gym  # noqa: F401  (registers the ids)
from irlvla_gym.envs.testing import assert_same, rollout, small_kwargs
from irlvla_gym.envs.navsim_env import NavsimEnv


def test_gymnasium_check_env(synthetic):
    from gymnasium.utils.env_checker import check_env

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(NavsimEnv(**small_kwargs(synthetic)), skip_render_check=True)
        check_env(NavsimEnv(**small_kwargs(synthetic, action_type="vocabulary")), skip_render_check=True)


def test_sb3_check_env(synthetic):
    from stable_baselines3.common.env_checker import check_env

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(NavsimEnv(**small_kwargs(synthetic)), warn=True)


def test_spaces_default_obs(synthetic):
    env = NavsimEnv(scenes=synthetic)
    assert set(env.observation_space.spaces) == {"bev", "ego", "instruction"}
    assert env.observation_space["bev"].shape == (8, 128, 128)
    assert env.action_space == gym.spaces.Box(-1, 1, (24,), np.float32)


def test_determinism_same_seed(synthetic):
    a = NavsimEnv(**small_kwargs(synthetic))
    b = NavsimEnv(**small_kwargs(synthetic))
    acts = [np.clip(np.random.default_rng(i).normal(0, 0.2, 24), -1, 1).astype(np.float32) for i in range(4)]
    assert_same(rollout(a, 7, acts, 4), rollout(b, 7, acts, 4))
    tokens = [NavsimEnv(**small_kwargs(synthetic)).reset(seed=s)[1]["token"] for s in range(6)]
    assert len(set(tokens)) > 1  # the seed picks the scene


def test_reward_matches_score_plans(synthetic):
    from irlvla_gym.metrics import score_plans

    for traffic in ("log", "idm"):
        env = NavsimEnv(**small_kwargs(synthetic, traffic=traffic))
        for i, scene in enumerate(synthetic[:2]):
            env.reset(options={"scene_index": i})
            action = np.clip(env.unwrapped.expert_action() + 0.05, -1, 1)
            _, reward, terminated, truncated, info = env.step(action)
            direct = score_plans(scene, info["plan"], traffic=traffic, human_filter=True,
                                 reference_progress=env.reference_progress)
            assert terminated and not truncated
            assert reward == pytest.approx(float(direct.epdms[0]), abs=1e-12)
            for name, value in direct.take(0).items():
                assert info["rewards"][name] == pytest.approx(value, abs=1e-12)
            assert info["token"] == scene.token and info["instruction"]


def test_expert_scores_high_and_stay_scores_low(synthetic):
    env = NavsimEnv(**small_kwargs(synthetic))
    env.reset(options={"token": synthetic[0].token})
    _, expert_reward, *_ = env.step(env.expert_action())
    env.reset(options={"token": synthetic[0].token})
    _, stay_reward, *_, info = env.step(np.zeros(24, np.float32))
    assert expert_reward > 0.9
    assert stay_reward < expert_reward and info["rewards"]["ep"] < 0.5


def test_vocabulary_action(synthetic):
    env = gym.make("IRLVLA-Navsim-v2", **small_kwargs(synthetic, action_type="vocabulary"))
    assert env.action_space == gym.spaces.Discrete(256)
    env.reset(seed=0)
    _, r, te, _, info = env.step(5)
    np.testing.assert_allclose(info["plan"], env.unwrapped.action_kind.vocabulary[5])
    assert te and 0.0 <= r <= 1.0 and not info["invalid_action"]
    _, r, *_, info = env.step(999)
    assert r == 0.0 and info["invalid_action"]


def test_custom_callable_reward(synthetic):
    seen = []

    def reward(scene, plan):
        seen.append((scene.token, plan.shape))
        return float(plan[-1, 0])

    env = NavsimEnv(**small_kwargs(synthetic, reward=reward))
    env.reset(options={"scene_index": 1})
    _, r, *_, info = env.step(env.expert_action())
    assert r == pytest.approx(synthetic[1].ego.future[-1, 0], abs=1e-3)
    assert info["rewards"] == {"custom": r} and seen == [(synthetic[1].token, (8, 3))]


def test_rwm_reward_uses_the_shipped_reward_model(synthetic, tmp_path):
    env = NavsimEnv(**small_kwargs(synthetic, reward="rwm"))
    env.reset(seed=0)
    _, reward, terminated, _, info = env.step(np.zeros(24, np.float32))
    assert terminated and np.isfinite(reward) and 0.0 <= reward <= 1.0
    assert info["rewards"] == {"custom": reward}
    with pytest.raises((FileNotFoundError, ValueError), match="missing-ckpt"):
        NavsimEnv(**small_kwargs(synthetic, reward=f"rwm:{tmp_path / 'missing-ckpt'}"))


@pytest.mark.parametrize("bad", [np.full(24, np.nan), np.r_[np.inf, np.zeros(23)], np.full(24, -np.inf)])
def test_nan_inf_action_zero_scored(synthetic, bad):
    env = NavsimEnv(**small_kwargs(synthetic))
    env.reset(seed=0)
    obs, r, te, tr, info = env.step(bad.astype(np.float32))
    assert r == 0.0 and te and info["invalid_action"]
    assert all(v == 0.0 for v in info["rewards"].values())
    assert env.observation_space.contains(obs)


def test_out_of_range_action_clipped(synthetic):
    env = NavsimEnv(**small_kwargs(synthetic))
    env.reset(seed=0)
    big = np.full(24, 3.0, np.float32)
    _, r1, *_, info1 = env.step(big)
    env.reset(seed=0)
    _, r2, *_, info2 = env.step(np.ones(24, np.float32))
    assert info1["clipped_action"] and not info2["clipped_action"] and r1 == r2


def test_scene_selection_options(synthetic):
    env = NavsimEnv(**small_kwargs(synthetic))
    assert env.reset(options={"scene_index": 2})[1]["token"] == synthetic[2].token
    assert env.reset(options={"token": synthetic[1].token})[1]["scene_index"] == 1
    with pytest.raises(KeyError):
        env.reset(options={"token": "nope"})
    with pytest.raises(IndexError):
        env.reset(options={"scene_index": 3})


def test_split_source_lazy_and_pool():
    from irlvla_gym.scenes.source import SceneSource

    src = SceneSource("synthetic-val", num_scenes=5)
    assert len(src) == 5 and src.token(3) == "synthetic-val-00003"
    assert src.load(3).token == "synthetic-val-00003"
    with pytest.raises(ValueError, match="neither"):
        SceneSource("no-such-split")


def test_store_source(tmp_path, synthetic):
    from irlvla_gym.scenes.store import build_store

    build_store(iter(synthetic), tmp_path / "store", split="t", source="synthetic", progress=False)
    env = NavsimEnv(**small_kwargs(str(tmp_path / "store")))
    obs, info = env.reset(options={"scene_index": 1})
    assert info["token"] == synthetic[1].token


def test_render_rgb_array_and_human(synthetic, monkeypatch):
    env = NavsimEnv(**small_kwargs(synthetic, render_mode="rgb_array", render_size=(96, 128)))
    env.reset(seed=0)
    frame0 = env.render()
    env.step(env.expert_action())
    frame = env.render()
    assert frame.shape == (96, 128, 3) and frame.dtype == np.uint8 and not np.array_equal(frame, frame0)
    import matplotlib

    matplotlib.use("Agg")
    human = NavsimEnv(**small_kwargs(synthetic, render_mode="human"))
    human.reset(seed=0)
    assert human.render() is None
    human.close()


def test_record_video(tmp_path, synthetic):
    pytest.importorskip("moviepy")
    from gymnasium.wrappers import RecordVideo

    env = RecordVideo(gym.make("IRLVLA-Navsim-v2", render_mode="rgb_array", **small_kwargs(synthetic)),
                      str(tmp_path / "videos"), episode_trigger=lambda e: True, disable_logger=True)
    env.reset(seed=0)
    env.step(env.action_space.sample())
    env.close()
    assert list((tmp_path / "videos").glob("*.mp4"))
